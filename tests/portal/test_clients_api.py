"""Portal API /api/v1/identity/clients and /api/v1/me: users by role (session), clients by scope (JWT)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from portal.identity.models import MachineClient
from portal.identity.services import secret_hash
from tests.portal.factories import machine_client, superuser, user_with_role
from tests.portal.helpers import CLIENTS_URL
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

NEW_CLIENT = {"name": "reconciler", "allowed_audiences": ["ledger"], "allowed_scopes": ["ledger:read"]}


def _post(client: Client, url: str, body: dict | None = None, **headers: str):
    return client.post(url, json.dumps(body) if body is not None else None, content_type="application/json", **headers)


def _logged_in(role: str) -> Client:
    browser = Client()
    browser.force_login(user_with_role(role))
    return browser


def test_viewer_can_list_machine_clients(client):
    # given a viewer and an existing client
    existing = machine_client(name="ledger-reader")
    client.force_login(user_with_role("viewer"))

    # when they list clients
    response = client.get(CLIENTS_URL)

    # then they see it, without anything secret
    assert response.status_code == 200, response.content
    (listed,) = response.json()["results"]
    assert listed["client_id"] == existing.id
    assert listed["name"] == "ledger-reader"
    assert listed["secret_last4"] == existing.secret[-4:]
    assert "client_secret" not in listed
    assert "secret_hash" not in listed


def test_viewer_cannot_create_a_machine_client(client):
    # given a viewer
    client.force_login(user_with_role("viewer"))

    # when they try to create a client
    response = _post(client, CLIENTS_URL, NEW_CLIENT)

    # then their role does not allow it and nothing was created
    assert_problem(response, 403, "role_required")
    assert not MachineClient.objects.filter(name="reconciler").exists()


def test_viewer_cannot_rotate_or_revoke(client):
    existing = machine_client()
    client.force_login(user_with_role("viewer"))

    assert_problem(_post(client, f"{CLIENTS_URL}/{existing.id}/rotate-secret"), 403, "role_required")
    assert_problem(_post(client, f"{CLIENTS_URL}/{existing.id}/revoke"), 403, "role_required")

    assert MachineClient.objects.get(pk=existing.id).secret_hash == secret_hash(existing.secret)
    assert MachineClient.objects.get(pk=existing.id).is_active


def test_operator_creates_a_client_and_sees_its_secret_only_once(client, request_token):
    # given an operator
    operator = user_with_role("operator")
    client.force_login(operator)

    # when they create a client
    response = _post(client, CLIENTS_URL, NEW_CLIENT)

    # then the secret is in the (non-cacheable) creation response
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    created = response.json()
    secret = created["client_secret"]
    assert secret.startswith("cs_")
    assert created["allowed_audiences"] == ["ledger"]
    assert created["allowed_scopes"] == ["ledger:read"]
    assert created["token_ttl_seconds"] == 900
    assert created["is_active"] is True
    # and the database holds only its hash, and who created it
    row = MachineClient.objects.get(pk=created["client_id"])
    assert row.secret_hash == secret_hash(secret)
    assert row.created_by == operator
    # and the secret works at the token endpoint
    token_body = {"grant_type": "client_credentials", "client_id": row.id, "client_secret": secret}
    assert request_token({**token_body, "audience": "ledger"}).status_code == 200

    # when the client is read again
    again = client.get(f"{CLIENTS_URL}/{row.id}")

    # then the secret is nowhere in it
    assert again.status_code == 200
    assert "client_secret" not in again.json()
    assert secret not in again.content.decode()
    assert again.json()["secret_last4"] == secret[-4:]


def test_operator_create_with_a_scope_outside_the_audiences_is_refused(client):
    client.force_login(user_with_role("operator"))

    response = _post(client, CLIENTS_URL, {**NEW_CLIENT, "allowed_scopes": ["payments:read"]})

    body = assert_problem(response, 400, "invalid_client_configuration")
    assert "payments:read" in body["detail"]
    assert not MachineClient.objects.filter(name="reconciler").exists()


def test_create_with_an_unknown_field_is_refused(client):
    client.force_login(user_with_role("operator"))

    response = _post(client, CLIENTS_URL, {**NEW_CLIENT, "secret_hash": "0" * 64})

    body = assert_problem(response, 400, "validation_error")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("secret_hash", "unknown_field")]


def test_anonymous_caller_gets_401_not_authenticated(client):
    # when nobody is logged in and no token is sent
    response = client.get(CLIENTS_URL)

    # then it is 401 (the JWT authenticator comes first, so a Bearer challenge is offered)
    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="portal"'


def test_client_token_with_portal_read_lists_but_cannot_create(mint_token):
    # given a machine client holding only portal:read, with a token for the portal
    reader = machine_client(audiences=["portal"], scopes=["portal:read", "portal:write"])
    token = mint_token(reader, "portal", scope="portal:read")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    # when it lists clients
    listing = api.get(CLIENTS_URL)

    # then it may
    assert listing.status_code == 200, listing.content
    assert [c["client_id"] for c in listing.json()["results"]] == [reader.id]

    # when it tries to create one
    created = _post(api, CLIENTS_URL, NEW_CLIENT)

    # then the token lacks identity:manage
    body = assert_problem(created, 403, "insufficient_scope")
    assert "identity:manage" in body["detail"]
    assert not MachineClient.objects.filter(name="reconciler").exists()


def test_client_token_with_identity_manage_creates_a_client_within_its_grants_without_a_creator(mint_token):
    manager = machine_client(audiences=["portal", "ledger"], scopes=["identity:manage", "ledger:read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(manager, 'portal')}")

    response = _post(api, CLIENTS_URL, NEW_CLIENT)

    assert response.status_code == 201, response.content
    assert MachineClient.objects.get(pk=response.json()["client_id"]).created_by is None


def test_token_for_another_audience_is_refused_by_the_portal(mint_token):
    # given a valid token minted for the ledger
    machine = machine_client(audiences=["ledger", "portal"], scopes=["ledger:read", "portal:read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'ledger')}")

    # then the portal does not accept it
    assert_problem(api.get(CLIENTS_URL), 403, "invalid_audience")


def test_garbage_bearer_token_gets_401_invalid_token():
    assert_problem(Client(HTTP_AUTHORIZATION="Bearer not-a-jwt").get(CLIENTS_URL), 401, "invalid_token")


def test_rotate_secret_replaces_the_old_secret(client, request_token):
    # given an operator and a client whose secret works
    machine = machine_client()
    assert request_token(machine.token_request("ledger")).status_code == 200
    client.force_login(user_with_role("operator"))

    # when the operator rotates the secret with no grace period
    response = _post(client, f"{CLIENTS_URL}/{machine.id}/rotate-secret", {"grace_seconds": 0})

    # then a new secret is returned once
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    new_secret = response.json()["client_secret"]
    assert new_secret != machine.secret
    assert response.json()["secret_last4"] == new_secret[-4:]
    assert MachineClient.objects.get(pk=machine.id).secret_rotated_at is not None
    # and only the new secret works
    assert_problem(request_token(machine.token_request("ledger")), 401, "invalid_client")
    new = request_token({**machine.token_request("ledger"), "client_secret": new_secret})
    assert new.status_code == 200, new.content


def test_after_a_rotation_the_old_secret_works_for_the_grace_period_only(client, request_token, settings):
    settings.ATRIUM_CLIENT_SECRET_GRACE_SECONDS = 600
    machine = machine_client()
    client.force_login(user_with_role("operator"))

    response = _post(client, f"{CLIENTS_URL}/{machine.id}/rotate-secret")

    assert response.status_code == 200, response.content
    new_secret = response.json()["client_secret"]
    assert response.json()["previous_secret_valid_until"] is not None
    # both secrets work during the grace period (the processes can be given the new one without an outage)
    assert request_token(machine.token_request("ledger")).status_code == 200
    assert request_token({**machine.token_request("ledger"), "client_secret": new_secret}).status_code == 200
    # and once it is over, only the new one
    MachineClient.objects.filter(pk=machine.id).update(previous_secret_valid_until=timezone.now())
    assert_problem(request_token(machine.token_request("ledger")), 401, "invalid_client")
    assert request_token({**machine.token_request("ledger"), "client_secret": new_secret}).status_code == 200
    # a second rotation ends the first secret's grace at once: only the one just replaced keeps one
    third = _post(client, f"{CLIENTS_URL}/{machine.id}/rotate-secret").json()["client_secret"]
    assert request_token({**machine.token_request("ledger"), "client_secret": new_secret}).status_code == 200
    assert request_token({**machine.token_request("ledger"), "client_secret": third}).status_code == 200
    assert_problem(request_token(machine.token_request("ledger")), 401, "invalid_client")
    # a revoked client gets nothing, whichever secret
    _post(client, f"{CLIENTS_URL}/{machine.id}/revoke")
    assert_problem(
        request_token({**machine.token_request("ledger"), "client_secret": new_secret}), 401, "invalid_client"
    )


def test_a_bad_grace_period_is_a_field_error(client):
    machine = machine_client()
    client.force_login(user_with_role("operator"))

    response = _post(client, f"{CLIENTS_URL}/{machine.id}/rotate-secret", {"grace_seconds": -1})

    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["field"] == "grace_seconds"
    assert MachineClient.objects.get(pk=machine.id).secret_rotated_at is None


def test_revoked_client_can_no_longer_get_tokens(client, request_token):
    # given a working client
    machine = machine_client()
    client.force_login(user_with_role("operator"))

    # when an operator revokes it
    response = _post(client, f"{CLIENTS_URL}/{machine.id}/revoke")

    # then it is inactive, with the time of revocation, and the token endpoint refuses it
    assert response.status_code == 200, response.content
    assert response.json()["is_active"] is False
    assert response.json()["revoked_at"] is not None
    row = MachineClient.objects.get(pk=machine.id)
    assert not row.is_active
    assert row.revoked_at is not None
    assert_problem(request_token(machine.token_request("ledger")), 401, "invalid_client")


@pytest.mark.parametrize("path", ["/api/v1/identity/clients", "/api/v1/identity/clients/{id}"])
def test_routes_have_one_spelling_and_the_slashed_one_redirects_to_it(client, path):
    # given a client and a viewer
    existing = machine_client()
    client.force_login(user_with_role("viewer"))
    url = path.format(id=existing.id)

    # when the route is called as it is spelled, and with a trailing slash
    response = client.get(url)
    slashed = client.get(f"{url}/?limit=5")

    # then the first reaches the API and the second is sent there, query string kept
    assert response.status_code == 200, response.content
    assert existing.id in response.content.decode()
    assert (slashed.status_code, slashed["Location"]) == (308, f"{url}?limit=5")


@pytest.mark.parametrize(
    ("client_id", "detail"),
    [
        pytest.param("not-an-id", "No machine client with that id.", id="malformed"),
        pytest.param("acc_00000000000000000000000000", "No machine client with that id.", id="other-prefix"),
        pytest.param("cli_00000000000000000000000000", "Not found", id="well-formed-but-absent"),
    ],
)
def test_unknown_or_malformed_client_id_is_404(client, client_id, detail):
    # given a viewer
    client.force_login(user_with_role("viewer"))

    # when they ask for a client that does not exist
    response = client.get(f"{CLIENTS_URL}/{client_id}")

    # then the view (not the catch-all route) answers with a problem document
    body = assert_problem(response, 404, "not_found")
    assert body["detail"] == detail
    assert body["instance"] == f"{CLIENTS_URL}/{client_id}"


def test_machine_clients_cannot_be_deleted_through_the_api(client):
    existing = machine_client()
    client.force_login(superuser())

    response = client.delete(f"{CLIENTS_URL}/{existing.id}")

    assert_problem(response, 405, "method_not_allowed")
    assert MachineClient.objects.filter(pk=existing.id).exists()


def test_me_for_a_user_lists_their_roles(client):
    user = user_with_role("operator", username="olivia")
    client.force_login(user)

    response = client.get("/api/v1/me")

    assert response.status_code == 200
    assert response.json() == {
        "kind": "user",
        "id": str(user.pk),
        "name": "olivia",
        "roles": ["operator"],
        "scopes": [],
    }


def test_me_for_a_client_token_lists_its_scopes(mint_token):
    machine = machine_client(name="dashboard", audiences=["portal"], scopes=["portal:read", "jobs:read", "audit:read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal')}")

    response = api.get("/api/v1/me")

    assert response.status_code == 200
    assert response.json() == {
        "kind": "client",
        "id": machine.id,
        "name": "dashboard",
        "roles": [],
        "scopes": ["audit:read", "jobs:read", "portal:read"],
    }


def test_me_for_nobody_is_401(client):
    assert_problem(client.get("/api/v1/me"), 401, "not_authenticated")
