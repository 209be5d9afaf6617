"""Service catalog: services register from their manifest (scope ``catalog:register``) and heartbeat their
instances; refusals are problems with stable codes (field errors for a bad manifest), never 500s."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from portal.catalog.errors import ServiceRegisteredByAnotherClient
from portal.catalog.models import Dependency, Instance, Service
from portal.catalog.services import service_register
from services.kit.models import OutboxEvent
from tests.portal.factories import machine_client, user_with_role
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

URL = "/api/v1/catalog/services"
MANIFEST = {
    "display_name": "Ledger",
    "description": "Double-entry ledger.",
    "team": {"slug": "money", "name": "Money movement", "contact": "#money"},
    "tier": 1,
    "lifecycle": "production",
    "base_url": "http://127.0.0.1:8001",
    "health_url": "http://127.0.0.1:8001/health/ready",
    "openapi_url": "http://127.0.0.1:8001/api/schema",
    "version": "1.4.0",
    "queues": ["ledger"],
    "tags": ["money"],
    "dependencies": [{"resource": "postgres"}, {"service": "portal"}],
}


def _registrar(mint_token: Any, scopes: list[str] | None = None, scope: str = "catalog:register portal:read") -> Client:
    registrar = machine_client(audiences=["portal"], scopes=scopes or ["catalog:register", "portal:read"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(registrar, 'portal', scope=scope)}")


def _put(api: Client, slug: str, body: Any) -> Any:
    return api.put(f"{URL}/{slug}", json.dumps(body), content_type="application/json")


def _audited(slug: str) -> list[str]:
    return [
        e.payload["action"]
        for e in OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
        if e.payload["object"] == {"type": "catalog.service", "id": slug}
    ]


def test_a_service_registers_once_then_updates_only_what_changed(mint_token):
    api = _registrar(mint_token)

    first = _put(api, "ledger", MANIFEST)

    assert first.status_code == 201, first.content
    body = first.json()
    assert (body["slug"], body["team"], body["tier"], body["lifecycle"]) == ("ledger", "money", 1, "production")
    assert body["queues"] == ["ledger"]
    assert {(d["service"], d["resource"]) for d in body["dependencies"]} == {("", "postgres"), ("portal", "")}
    assert body["registered_by"].startswith("cli_")
    # the same manifest at the next start: nothing changes, nothing is audited again
    again = _put(api, "ledger", MANIFEST)
    assert again.status_code == 200
    assert _audited("ledger") == ["catalog.service.registered"]
    # a new version is an update, with what changed
    bumped = _put(api, "ledger", {**MANIFEST, "version": "1.5.0", "dependencies": [{"resource": "postgres"}]})
    assert bumped.status_code == 200
    assert bumped.json()["version"] == "1.5.0"
    assert _audited("ledger") == ["catalog.service.registered", "catalog.service.updated"]
    updated = OutboxEvent.objects.filter(topic="audit", payload__action="catalog.service.updated").get()
    assert updated.payload["changes"]["version"] == ["1.4.0", "1.5.0"]
    assert updated.payload["changes"]["dependencies"] == [["postgres", "portal"], ["postgres"]]
    assert updated.payload["actor"]["type"] == "client"


def test_a_dependency_on_a_service_registered_later_is_linked_when_it_registers(mint_token):
    api = _registrar(mint_token)
    _put(api, "payments", {"display_name": "Payments", "dependencies": [{"service": "ledger"}]})
    (pending,) = Dependency.objects.filter(service__slug="payments")
    assert pending.target is None

    _put(api, "ledger", {"display_name": "Ledger"})

    pending.refresh_from_db()
    assert pending.target == Service.objects.get(slug="ledger")
    listed = api.get(URL).json()
    payments = next(s for s in listed if s["slug"] == "payments")
    assert payments["dependencies"] == [{"service": "ledger", "resource": "", "registered": True}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**MANIFEST, "tier": 5}, "tier"),
        ({**MANIFEST, "lifecycle": "beta"}, "lifecycle"),
        ({**MANIFEST, "queues": "ledger"}, "queues"),
        ({**MANIFEST, "health_url": "not a url"}, "health_url"),
        ({**MANIFEST, "team": {"slug": "Money Team"}}, "team"),
        ({**MANIFEST, "dependencies": [{"service": "x", "resource": "y"}]}, "dependencies"),
        ({**MANIFEST, "surprise": True}, "surprise"),
        ({k: v for k, v in MANIFEST.items() if k != "display_name"}, "display_name"),
    ],
)
def test_a_manifest_with_bad_fields_gets_field_errors_and_registers_nothing(mint_token, body, field):
    response = _put(_registrar(mint_token), "ledger", body)

    problem = assert_problem(response, 400, "validation_error")
    assert field in {e["field"].split(".")[0] for e in problem["errors"]}, problem
    assert not Service.objects.exists()


def test_a_bad_slug_or_body_is_a_problem_not_a_500(mint_token):
    api = _registrar(mint_token)
    assert_problem(_put(api, "Ledger_Service", MANIFEST), 400, "invalid_slug")
    malformed = api.put(f"{URL}/ledger", "{not json", content_type="application/json")
    assert malformed.status_code == 400
    assert not Service.objects.exists()


def test_registration_needs_a_token_with_catalog_register(mint_token):
    # no token, a forged token, a token without the scope
    assert_problem(Client().put(f"{URL}/ledger", "{}", content_type="application/json"), 401, "not_authenticated")
    forged = Client(HTTP_AUTHORIZATION="Bearer eyJhbGciOiJFZERTQSJ9.e30.c2ln")
    assert forged.put(f"{URL}/ledger", json.dumps(MANIFEST), content_type="application/json").status_code == 401
    reader = _registrar(mint_token, scopes=["portal:read"], scope="portal:read")
    body = assert_problem(_put(reader, "ledger", MANIFEST), 403, "insufficient_scope")
    assert "catalog:register" in body["detail"]
    assert not Service.objects.exists()
    # but reading is what portal:read is for
    assert reader.get(URL).status_code == 200


def test_another_client_cannot_take_over_a_registered_service(mint_token):
    owner, other = _registrar(mint_token), _registrar(mint_token)
    _put(owner, "ledger", MANIFEST)

    refused = _put(other, "ledger", {**MANIFEST, "base_url": "http://evil.example"})
    heartbeat = other.post(f"{URL}/ledger/instances/host-1/heartbeat", "{}", content_type="application/json")

    assert_problem(refused, 403, "service_registered_by_another_client")
    assert_problem(heartbeat, 403, "service_registered_by_another_client")
    assert Service.objects.get(slug="ledger").base_url == "http://127.0.0.1:8001"
    assert not Instance.objects.exists()


def test_instances_heartbeat_and_an_unknown_service_is_not_found(mint_token):
    api = _registrar(mint_token)
    _put(api, "ledger", MANIFEST)
    url = f"{URL}/ledger/instances/host-1:4242/heartbeat"
    beat = {"host": "host-1", "pid": 4242, "version": "1.4.0", "started_at": "2026-11-29T09:00:00Z"}

    first = api.post(url, json.dumps(beat), content_type="application/json")
    second = api.post(url, json.dumps(beat), content_type="application/json")

    assert first.status_code == 201, first.content
    assert second.status_code == 200
    assert second.json()["heartbeat_interval_seconds"] == 10
    instance = Instance.objects.get()
    assert (instance.instance, instance.pid, instance.heartbeats, instance.status) == (
        "host-1:4242",
        4242,
        2,
        "passing",
    )
    assert instance.last_heartbeat >= instance.first_heartbeat
    detail = api.get(f"{URL}/ledger").json()
    assert [i["instance"] for i in detail["instances"]] == ["host-1:4242"]
    assert_problem(
        api.post(f"{URL}/nope/instances/x/heartbeat", "{}", content_type="application/json"), 404, "service_not_found"
    )
    assert_problem(api.post(url, json.dumps({"pid": -1}), content_type="application/json"), 400, "validation_error")
    # a pid past the column's integer is refused, not a 500
    too_big = api.post(url, json.dumps({"pid": 11337699365772}), content_type="application/json")
    assert assert_problem(too_big, 400, "validation_error")["errors"][0]["field"] == "pid"


def test_people_read_the_catalog_by_role(mint_token):
    _put(_registrar(mint_token), "ledger", MANIFEST)
    viewer = Client()
    viewer.force_login(user_with_role("viewer"))

    assert [s["slug"] for s in viewer.get(URL).json()] == ["ledger"]
    assert viewer.get(f"{URL}/ledger").json()["display_name"] == "Ledger"
    assert_problem(viewer.get(f"{URL}/nope"), 404, "service_not_found")
    # a viewer may not register
    assert_problem(_put(viewer, "other", MANIFEST), 403, "role_required")


# ------------------------------------------------------------------------------------ first registrations at once


def _register_at_once(slug: str, client_ids: list[str]) -> list[Any]:
    """``service_register`` of ``slug`` by each client in its own thread (its own connection), released together;
    each thread's outcome: its Registration or the exception it raised."""
    barrier = threading.Barrier(len(client_ids))
    outcomes: list[Any] = [None] * len(client_ids)

    def register(i: int, client_id: str) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[i] = service_register(slug=slug, manifest=MANIFEST, client_id=client_id)
        except Exception as error:  # the outcome is what the test reads
            outcomes[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=register, args=(i, c)) for i, c in enumerate(client_ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_instances_of_one_service_registering_at_once_create_it_once(attempt):
    # given four instances of one service (one machine client) starting together, before it was ever registered
    outcomes = _register_at_once(f"racer-{attempt}", ["cli_racer"] * 4)

    # then none failed: one created the service, the others found it with nothing to change; one audit event
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert sorted(o.created for o in outcomes) == [False, False, False, True]
    assert all(o.changed == {} for o in outcomes if not o.created)
    assert Service.objects.filter(slug=f"racer-{attempt}").count() == 1
    assert _audited(f"racer-{attempt}") == ["catalog.service.registered"]


@pytest.mark.django_db(transaction=True)
def test_two_clients_registering_one_new_slug_at_once_one_owns_it_the_other_is_refused():
    # given two machine clients claiming the same new slug at the same moment
    outcomes = _register_at_once("contested", ["cli_first", "cli_second"])

    # then one registered it and the other got the 403 problem (not a database error)
    won = [o for o in outcomes if not isinstance(o, Exception)]
    lost = [o for o in outcomes if isinstance(o, Exception)]
    assert len(won) == 1, outcomes
    assert won[0].created
    assert [type(o) for o in lost] == [ServiceRegisteredByAnotherClient], outcomes
    assert Service.objects.get(slug="contested").registered_by == won[0].service.registered_by
