"""No escalation: managing machine clients needs identity:manage, and a client only manages clients within its own
current grants. Every refusal is audited. Portal users keep their role rules."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from portal.identity import services
from portal.identity.errors import GrantEscalation
from portal.identity.models import MachineClient
from services.kit.models import OutboxEvent
from tests.portal.factories import ClientWithSecret, machine_client, superuser, user_with_role
from tests.portal.helpers import CLIENTS_URL
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


def _post(api: Client, url: str, body: dict | None = None):
    return api.post(url, json.dumps(body) if body is not None else None, content_type="application/json")


def _refusals() -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if r.payload["action"] == "portal.client.refused"]


def _manager(mint_token, *, audiences: list[str], scopes: list[str]) -> tuple[ClientWithSecret, Client]:
    made = machine_client(audiences=audiences, scopes=scopes)
    return made, Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(made, 'portal')}")


def test_portal_write_alone_does_not_manage_clients(mint_token):
    # given the probe's case: a client with portal:write, wanting a new client for the ledger
    writer, api = _manager(mint_token, audiences=["portal"], scopes=["portal:read", "portal:write"])

    # when it tries to create, rotate and revoke
    victim = machine_client()
    created = _post(api, CLIENTS_URL, {"name": "minted", "allowed_audiences": ["ledger"]})
    rotated = _post(api, f"{CLIENTS_URL}/{victim.id}/rotate-secret")
    revoked = _post(api, f"{CLIENTS_URL}/{victim.id}/revoke")

    # then each is refused for the missing scope, audited, and nothing changed
    for response in (created, rotated, revoked):
        assert "identity:manage" in assert_problem(response, 403, "insufficient_scope")["detail"]
    assert not MachineClient.objects.filter(name="minted").exists()
    assert MachineClient.objects.get(pk=victim.id).is_active
    assert MachineClient.objects.get(pk=victim.id).secret_generation == 0
    refusals = _refusals()
    assert [(e["metadata"]["code"], e["metadata"]["operation"]) for e in refusals] == [
        ("insufficient_scope", "create"),
        ("insufficient_scope", "rotate_secret"),
        ("insufficient_scope", "revoke"),
    ]
    assert {(e["outcome"], e["actor"]["id"]) for e in refusals} == {("failure", writer.id)}
    assert [e["object"]["id"] for e in refusals] == ["", victim.id, victim.id]


@pytest.mark.parametrize(
    ("grants", "beyond"),
    [
        pytest.param({"allowed_audiences": ["payments"], "allowed_scopes": []}, "payments", id="another-audience"),
        pytest.param({"allowed_audiences": ["ledger"], "allowed_scopes": ["ledger:write"]}, "ledger:write", id="scope"),
        pytest.param(
            {"allowed_audiences": ["portal"], "allowed_scopes": ["audit:read"]}, "audit:read", id="portal-scope"
        ),
        pytest.param(
            {"allowed_audiences": ["portal", "ledger"], "allowed_scopes": ["identity:manage", "jobs:write"]},
            "jobs:write",
            id="a-manager-broader-than-itself",
        ),
    ],
)
def test_a_manager_cannot_create_a_client_broader_than_itself(mint_token, grants, beyond):
    # given a manager holding the portal and ledger:read only
    manager, api = _manager(mint_token, audiences=["portal", "ledger"], scopes=["identity:manage", "ledger:read"])

    # when it asks for a client with something it does not hold
    response = _post(api, CLIENTS_URL, {"name": "broader", **grants})

    # then the escalation is refused, named, audited, and nothing was created
    body = assert_problem(response, 403, "grant_escalation")
    assert beyond in body["detail"]
    assert not MachineClient.objects.filter(name="broader").exists()
    (refusal,) = _refusals()
    assert refusal["metadata"]["code"] == "grant_escalation"
    assert refusal["metadata"]["operation"] == "create"
    assert beyond in refusal["metadata"]["audiences_beyond"] + refusal["metadata"]["scopes_beyond"]
    assert refusal["actor"]["id"] == manager.id


def test_a_manager_creates_clients_within_its_grants_including_other_managers(mint_token):
    _, api = _manager(mint_token, audiences=["portal", "ledger"], scopes=["identity:manage", "ledger:read"])

    narrower = _post(api, CLIENTS_URL, {"name": "reader", "allowed_audiences": ["ledger"], "allowed_scopes": []})
    same = _post(
        api,
        CLIENTS_URL,
        {"name": "deputy", "allowed_audiences": ["portal", "ledger"], "allowed_scopes": ["identity:manage"]},
    )

    assert narrower.status_code == 201, narrower.content
    assert same.status_code == 201, same.content
    assert not _refusals()


def test_a_manager_cannot_rotate_revoke_or_unlock_a_broader_client(mint_token):
    # given a narrow manager and a client with more than it holds (taking its secret would be an escalation)
    _, api = _manager(mint_token, audiences=["portal", "ledger"], scopes=["identity:manage", "ledger:read"])
    broader = machine_client(audiences=["ledger"], scopes=["ledger:read", "ledger:write"])
    narrower = machine_client(audiences=["ledger"], scopes=["ledger:read"])

    # then what it may not touch is refused and audited, and what it may is done
    for action in ("rotate-secret", "revoke", "unlock"):
        assert_problem(_post(api, f"{CLIENTS_URL}/{broader.id}/{action}"), 403, "grant_escalation")
    row = MachineClient.objects.get(pk=broader.id)
    assert (row.is_active, row.secret_generation) == (True, 0)
    assert [e["metadata"]["operation"] for e in _refusals()] == ["rotate_secret", "revoke", "unlock"]
    assert _post(api, f"{CLIENTS_URL}/{narrower.id}/rotate-secret").status_code == 200
    assert _post(api, f"{CLIENTS_URL}/{narrower.id}/revoke").status_code == 200


def test_grants_narrowed_since_the_token_was_issued_count(mint_token):
    # given a manager whose token still carries identity:manage
    manager, api = _manager(mint_token, audiences=["portal", "ledger"], scopes=["identity:manage", "ledger:read"])

    # when an operator takes ledger away from it, it cannot create a ledger client any more
    MachineClient.objects.filter(pk=manager.id).update(allowed_audiences=["portal"], allowed_scopes=["identity:manage"])
    assert_problem(_post(api, CLIENTS_URL, {"name": "x", "allowed_audiences": ["ledger"]}), 403, "grant_escalation")

    # and when identity:manage itself is taken away, it manages nothing
    MachineClient.objects.filter(pk=manager.id).update(allowed_scopes=[])
    body = assert_problem(
        _post(api, CLIENTS_URL, {"name": "y", "allowed_audiences": ["portal"]}), 403, "insufficient_scope"
    )
    assert "identity:manage" in body["detail"]
    assert [e["metadata"]["code"] for e in _refusals()] == ["grant_escalation", "insufficient_scope"]


def test_the_service_layer_refuses_escalation_whoever_calls_it():
    manager = machine_client(audiences=["portal"], scopes=["identity:manage"])

    with pytest.raises(GrantEscalation):
        services.client_create(name="sneaky", audiences=["ledger"], scopes=[], by_client=manager.id)
    revoked_manager = machine_client(audiences=["portal"], scopes=["identity:manage"], revoked=True)
    with pytest.raises(Exception, match="revoked") as refused:
        services.client_create(name="ghost", audiences=["portal"], scopes=[], by_client=revoked_manager.id)

    assert refused.value.code == "client_revoked"
    assert not MachineClient.objects.filter(name__in=["sneaky", "ghost"]).exists()
    assert [e["metadata"]["code"] for e in _refusals()] == ["grant_escalation", "client_revoked"]


def test_people_keep_their_role_rules(client):
    # an operator and an admin may create any client; a viewer's refusal is audited too
    for who in (user_with_role("operator"), superuser()):
        client.force_login(who)
        response = _post(client, CLIENTS_URL, {"name": f"by-{who.username}", "allowed_audiences": ["payments"]})
        assert response.status_code == 201, response.content
    client.force_login(user_with_role("viewer"))
    assert_problem(_post(client, CLIENTS_URL, {"name": "no", "allowed_audiences": ["ledger"]}), 403, "role_required")
    (refusal,) = _refusals()
    assert (refusal["metadata"]["code"], refusal["actor"]["type"]) == ("role_required", "user")


def test_the_demo_client_manages_clients_and_the_service_clients_do_not(tmp_path, mint_token):
    # given what `make up` creates
    path = tmp_path / "dev-credentials.json"
    call_command("demo_setup", credentials=str(path), url=["portal=http://x"], stdout=StringIO())
    saved = json.loads(path.read_text())
    demo = MachineClient.objects.get(pk=saved["client"]["client_id"])
    assert "identity:manage" in demo.allowed_scopes
    for service, own in saved["services"].items():
        row = MachineClient.objects.get(pk=own["client_id"])
        assert "identity:manage" not in row.allowed_scopes, service
        assert "portal:write" not in row.allowed_scopes, service

    # then the demo client creates a client, and the payments service's own client cannot
    demo_api = Client(
        HTTP_AUTHORIZATION=f"Bearer {mint_token(ClientWithSecret(demo, saved['client']['client_secret']), 'portal')}"
    )
    assert _post(demo_api, CLIENTS_URL, {"name": "made-by-demo", "allowed_audiences": ["ledger"]}).status_code == 201
    payments = ClientWithSecret(
        MachineClient.objects.get(name="payments-service"), saved["services"]["payments"]["client_secret"]
    )
    payments_api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(payments, 'portal')}")
    assert_problem(
        _post(payments_api, CLIENTS_URL, {"name": "made-by-payments", "allowed_audiences": ["ledger"]}),
        403,
        "insufficient_scope",
    )
