"""Services, not processes: every process registers naming the service it is part of and its role; a service's
status comes from its processes' (critical when its API is down, degraded when another process is); the v2 API and
the pages show services with their processes; existing rows are migrated by their slugs."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from portal.catalog import selectors
from portal.catalog.models import HealthHour, Instance, Service
from portal.catalog.systems import Process, group_status
from tests.portal.factories import machine_client, user_with_role
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

HEARTBEAT_SECONDS = 10


class Registrar:
    """A service's own machine client, registering its processes as their agents do."""

    def __init__(self, mint_token: Any, name: str) -> None:
        self.client_id = f"cli_{name}"
        machine = machine_client(audiences=["portal"], scopes=["catalog:register", "portal:read"])
        token = mint_token(machine, "portal", scope="catalog:register portal:read")
        self.api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def put(self, slug: str, **manifest: Any) -> Any:
        body = {"display_name": slug.title(), **manifest}
        return self.api.put(f"/api/v1/catalog/services/{slug}", json.dumps(body), content_type="application/json")

    def beat(self, slug: str, instance: str = "") -> None:
        path = f"/api/v1/catalog/services/{slug}/instances/{instance or 'h:' + slug}/heartbeat"
        assert self.api.post(path, "{}", content_type="application/json").status_code in (200, 201)


def _silence(slug: str, seconds: float = 5 * HEARTBEAT_SECONDS) -> None:
    """``slug``'s instances stopped heartbeating ``seconds`` ago: down."""
    Instance.objects.filter(service__slug=slug).update(last_heartbeat=timezone.now() - dt.timedelta(seconds=seconds))


@pytest.fixture
def ledger(mint_token, settings) -> Registrar:
    """The ledger's web process, its worker and its relay, registered and heartbeating; beat, a portal process."""
    settings.CATALOG_HEARTBEAT_SECONDS = HEARTBEAT_SECONDS
    ledger = Registrar(mint_token, "ledger")
    assert ledger.put("ledger", part_of="ledger", role="web", base_url="https://ledger.example").status_code == 201
    assert ledger.put("worker-ledger", part_of="ledger", role="worker", queues=["ledger"]).status_code == 201
    assert ledger.put("relay-ledger", part_of="ledger", role="relay").status_code == 201
    for slug in ("ledger", "worker-ledger", "relay-ledger"):
        ledger.beat(slug)
    portal = Registrar(mint_token, "portal")
    assert portal.put("beat", part_of="portal", role="beat").status_code == 201
    portal.beat("beat")
    return ledger


# --------------------------------------------------------------------------------- registration


def test_each_process_names_its_service_and_role_and_a_service_groups_them(ledger):
    found = {g.slug: g for g in selectors.service_groups()}

    assert sorted(found) == ["ledger", "portal"]
    assert [(p.slug, p.role) for p in found["ledger"].processes] == [
        ("ledger", "web"),
        ("worker-ledger", "worker"),
        ("relay-ledger", "relay"),
    ]
    assert [(role, [p.slug for p in listed]) for role, listed in found["ledger"].by_role()] == [
        ("web", ["ledger"]),
        ("worker", ["worker-ledger"]),
        ("relay", ["relay-ledger"]),
    ]
    assert found["ledger"].queues == ["ledger"]
    assert [p.slug for p in found["portal"].processes] == ["beat"]  # the portal's web process is not registered here
    assert Service.objects.get(slug="worker-ledger").part_of == "ledger"


def test_a_registration_without_part_of_is_a_service_of_its_own(mint_token):
    vendor = Registrar(mint_token, "vendor")

    assert vendor.put("fraud-engine", base_url="https://fraud.example").status_code == 201

    entry = Service.objects.get(slug="fraud-engine")
    assert (entry.part_of, entry.role) == ("fraud-engine", "web")
    assert [g.slug for g in selectors.service_groups()] == ["fraud-engine"]


@pytest.mark.parametrize(
    ("manifest", "field", "code"),
    [
        ({"role": "janitor"}, "role", "invalid_choice"),
        ({"part_of": "Not A Slug"}, "part_of", "invalid"),
        ({"part_of": ""}, "part_of", "blank"),
        ({"role": None}, "role", "null"),
    ],
)
def test_a_bad_part_of_or_role_is_a_problem_and_nothing_is_stored(mint_token, manifest, field, code):
    vendor = Registrar(mint_token, "vendor")

    body = assert_problem(vendor.put("fraud-engine", **manifest), 400, "validation_error")

    assert [(e["field"], e["code"]) for e in body["errors"]] == [(field, code)]
    assert not Service.objects.exists()


# ------------------------------------------------------------------------------------------ status


def _status(*processes: tuple[str, str]) -> str:
    return group_status(
        [Process(entry=Service(slug=f"{role}-{n}", role=role), status=s) for n, (role, s) in enumerate(processes)]
    )[0]


def test_a_service_is_degraded_when_a_process_is_down_and_critical_when_its_api_is():
    assert _status(("web", "passing"), ("worker", "passing"), ("relay", "passing")) == "passing"
    assert _status(("web", "passing"), ("worker", "critical"), ("relay", "passing")) == "degraded"
    assert _status(("web", "passing"), ("beat", "warning")) == "degraded"
    assert _status(("web", "warning"), ("worker", "passing")) == "degraded"  # a slow API: not down
    assert _status(("web", "critical"), ("worker", "passing")) == "critical"
    assert _status(("web", "critical"), ("worker", "critical")) == "critical"
    # without an API: critical only when every process is down
    assert _status(("worker", "critical"), ("relay", "passing")) == "degraded"
    assert _status(("worker", "critical"), ("relay", "critical")) == "critical"
    # never heard from: unknown, and it does not count against the others
    assert _status(("web", "unknown"), ("worker", "unknown")) == "unknown"
    assert _status(("web", "passing"), ("worker", "unknown")) == "passing"


def test_a_stopped_worker_degrades_its_service_and_a_stopped_api_makes_it_critical(ledger):
    assert selectors.service_group_get(slug="ledger").status == "passing"

    _silence("worker-ledger")
    degraded = selectors.service_group_get(slug="ledger")
    _silence("ledger")
    critical = selectors.service_group_get(slug="ledger")

    assert (degraded.status, degraded.reason) == ("degraded", "down: worker-ledger")
    assert critical.status == "critical"
    assert critical.reason == "its API is down (ledger)"
    assert selectors.service_group_get(slug="portal").status == "passing"  # beat is the portal's, still beating


# --------------------------------------------------------------------------------------------- API


def test_the_v2_api_lists_services_with_their_processes_and_status(ledger):
    _silence("relay-ledger")

    listed = ledger.api.get("/api/v2/catalog/services").json()
    one = ledger.api.get("/api/v2/catalog/services/ledger").json()

    assert [s["slug"] for s in listed] == ["ledger", "portal"]
    assert one == listed[0]
    assert one["status"] == "degraded"
    assert one["reason"] == "down: relay-ledger"
    assert one["base_url"] == "https://ledger.example"
    assert [(p["slug"], p["role"], p["status"]) for p in one["processes"]] == [
        ("ledger", "web", "passing"),
        ("worker-ledger", "worker", "passing"),
        ("relay-ledger", "relay", "critical"),
    ]
    assert one["processes"][0]["instances_heartbeating"] == 1
    assert one["uptime"]["30d"] == {
        "percent": None,
        "observed_seconds": 0.0,
        "window_seconds": 30 * 86400.0,
        "coverage": 0.0,
    }
    # v1 is unchanged but for two more fields: its services are the processes
    v1 = ledger.api.get("/api/v1/catalog/services/worker-ledger").json()
    assert (v1["part_of"], v1["role"], v1["status"]) == ("ledger", "worker", "passing")


def test_the_v2_api_refuses_an_unknown_service_and_a_bad_parameter(ledger):
    assert_problem(ledger.api.get("/api/v2/catalog/services/nope"), 404, "service_not_found")
    body = assert_problem(ledger.api.get("/api/v2/catalog/graph", {"resources": "maybe"}), 400, "validation_error")
    assert [e["field"] for e in body["errors"]] == ["resources"]
    assert_problem(Client().get("/api/v2/catalog/services"), 401, "not_authenticated")


def test_the_v2_graph_joins_processes_into_services_and_shows_resources_on_demand(ledger, mint_token):
    payments = Registrar(mint_token, "payments")
    payments.put("payments", part_of="payments", role="web", dependencies=[{"service": "ledger"}])
    payments.put(
        "worker-payments",
        part_of="payments",
        role="worker",
        dependencies=[{"service": "ledger"}, {"service": "payments"}, {"resource": "postgres"}],
    )
    ledger.put("worker-ledger", dependencies=[{"service": "ledger"}, {"resource": "redis"}])

    folded = ledger.api.get("/api/v2/catalog/graph").json()
    shown = ledger.api.get("/api/v2/catalog/graph", {"resources": "true"}).json()

    nodes = {n["id"]: n for n in folded["nodes"]}
    assert sorted(nodes) == ["ledger", "payments", "portal"]
    assert nodes["payments"]["resources"] == ["postgres"]
    assert nodes["ledger"]["resources"] == ["redis"]
    assert [(e["from"], e["to"], e["kind"]) for e in folded["edges"]] == [("payments", "ledger", "service")]
    assert {(e["from"], e["to"]) for e in shown["edges"] if e["kind"] == "resource"} == {
        ("ledger", "redis"),
        ("payments", "postgres"),
    }
    assert {n["id"] for n in shown["nodes"] if n["kind"] == "resource"} == {"postgres", "redis"}


# ------------------------------------------------------------------------------------------- pages


def test_the_overview_lists_services_with_their_processes_by_role(ledger, client):
    _silence("worker-ledger")
    client.force_login(user_with_role("viewer"))

    page = client.get("/admin/catalog/overview/").content.decode()

    assert re.findall(r'<tr id="service-([a-z-]+)"', page) == ["ledger", "portal"]
    row = re.search(r'id="service-ledger".*?</tr>', page, re.S).group(0)
    assert 'class="catalog-row-degraded"' in row
    assert "down: worker-ledger" in row
    assert re.findall(r'data-role="(\w+)"', row) == ["web", "worker", "relay"]
    assert re.search(r'id="process-worker-ledger" class="catalog-process catalog-process-critical"', row)
    assert 'id="process-beat"' not in row
    assert 'id="count-degraded"' in page


def test_a_process_page_shows_the_service_it_is_part_of_and_links_to_its_tools(ledger, client):
    client.force_login(user_with_role("auditor"))

    page = client.get("/admin/catalog/services/worker-ledger/").content.decode()

    group = re.search(r'id="service-group".*?id="service-tools".*?</p>', page, re.S).group(0)
    assert 'Part of the service <a href="/admin/catalog/services/ledger/"' in group
    assert '<strong>worker-ledger</strong> <span class="catalog-quiet">(this page)</span>' in group
    assert 'href="https://ledger.example/admin/" data-tool="Admin"' in group
    assert 'href="https://ledger.example/api/docs" data-tool="API docs"' in group
    assert 'href="/admin/jobs/tasks/?queue=ledger" data-tool="Tasks: ledger queue"' in group
    assert 'href="/admin/audit/auditevent/?service=ledger" data-tool="Audit events"' in group
    # the links lead somewhere real
    assert client.get("/admin/jobs/tasks/?queue=ledger").status_code == 200
    assert client.get("/admin/audit/auditevent/?service=ledger").status_code == 200
    # a viewer may not read the audit trail: no link to it
    client.force_login(user_with_role("viewer"))
    page = client.get("/admin/catalog/services/worker-ledger/").content.decode()
    assert 'data-tool="Tasks: ledger queue"' in page
    assert 'data-tool="Audit events"' not in page


# --------------------------------------------------------------------------------------- migration


@pytest.mark.parametrize(
    ("slug", "queues", "expected"),
    [
        ("portal", [], ("portal", "web")),
        ("worker-ledger", ["ledger"], ("ledger", "worker")),
        ("worker-audit", ["audit"], ("portal", "worker")),
        ("worker-audit-portal", [], ("portal", "worker")),
        ("relay-payments", [], ("payments", "relay")),
        ("beat", [], ("portal", "beat")),
        ("jobs-monitor", [], ("portal", "monitor")),
        ("worker-mystery", [], ("worker-mystery", "worker")),
        ("fraud-engine", [], ("fraud-engine", "web")),
    ],
)
def test_existing_entries_are_migrated_by_the_slugs_the_agents_used(slug, queues, expected):
    migration = importlib.import_module("portal.catalog.migrations.0006_service_part_of_role")

    assert migration.part_and_role(slug, queues) == expected


def test_a_service_none_of_whose_processes_bears_its_name_has_a_page_too(mint_token, client):
    billing = Registrar(mint_token, "billing")
    billing.put("billing-api", part_of="billing", role="web", base_url="https://billing.example")
    billing.put("billing-worker", part_of="billing", role="worker", queues=["billing"])
    client.force_login(user_with_role("viewer"))

    page = client.get("/admin/catalog/services/billing/")
    overview = client.get("/admin/catalog/overview/").content.decode()

    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-service="billing"' in body
    assert 'id="group-process-billing-api" data-role="web"' in body
    assert 'href="https://billing.example/admin/" data-tool="Admin"' in body
    assert '<a href="/admin/catalog/services/billing/"><strong>billing</strong></a>' in overview
    assert client.get("/admin/catalog/services/nothing-here/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_entries_their_service_and_role(migrations_restored):
    """Run 0006 and 0007 over rows committed as they were before them (real migrations of real tables)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("catalog", "0005_health_check_error_class")])
    old = executor.loader.project_state([("catalog", "0005_health_check_error_class")]).apps
    OldService = old.get_model("catalog", "Service")
    for slug, queues in (("ledger", []), ("worker-ledger", ["ledger"]), ("relay-ledger", []), ("beat", [])):
        OldService.objects.create(slug=slug, display_name=slug, queues=queues)
    OldService.objects.create(slug="worker-audit", display_name="w", queues=["audit"])
    OldService.objects.create(slug="jobs-monitor", display_name="m")
    # an hour rolled up before covered time was kept: 3 passing and 1 critical check, 15 s apart
    old.get_model("catalog", "HealthHour").objects.create(
        service=OldService.objects.get(slug="ledger"), hour=timezone.now().replace(minute=0), passing=3, critical=1
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert dict(Service.objects.values_list("slug", "part_of")) == {
        "ledger": "ledger",
        "worker-ledger": "ledger",
        "relay-ledger": "ledger",
        "beat": "portal",
        "worker-audit": "portal",
        "jobs-monitor": "portal",
    }
    (hour,) = HealthHour.objects.all()
    assert (hour.covered_seconds, hour.up_seconds) == (60.0, 45.0)  # one check interval per check
    assert dict(Service.objects.values_list("slug", "role")) == {
        "ledger": "web",
        "worker-ledger": "worker",
        "relay-ledger": "relay",
        "beat": "beat",
        "worker-audit": "worker",
        "jobs-monitor": "monitor",
    }
