"""The service catalog with real processes: the portal, ledger and payments under gunicorn and a payments worker
register themselves from the manifests in their code, heartbeat, and report who called them.

Heartbeats are every second here (``CATALOG_HEARTBEAT_SECONDS=1``, which the portal tells every instance), so
"critical within three heartbeat intervals" is a few seconds of wall time.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import override_settings
from django.utils import timezone

from devtools.infra import free_port
from portal.catalog.health import health_poll, instances_mark
from portal.catalog.models import HealthCheck, Instance, Service
from portal.identity import services as identity
from tests.e2e.payments_stack import payments_stack
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HEARTBEAT = 1  # seconds


@dataclasses.dataclass
class Catalog:
    """The test's portal, and a reader of its catalog API (a client with ``portal:read``)."""

    portal: AtriumProcess
    http: httpx.Client
    env: dict[str, str]

    def service(self, slug: str) -> dict[str, Any] | None:
        response = self.http.get(f"/api/v1/catalog/services/{slug}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()

    def graph(self) -> dict[str, Any]:
        response = self.http.get("/api/v1/catalog/graph")
        assert response.status_code == 200, response.text
        return response.json()


def _client(name: str, audiences: list[str], scopes: list[str]) -> tuple[str, str]:
    client, secret = identity.client_create(name=f"{name}-{uuid.uuid4().hex[:6]}", audiences=audiences, scopes=scopes)
    return client.id, secret


@pytest.fixture
def catalog(django_db_setup: None, transactional_db: None, harness: ProcessHarness) -> Iterator[Catalog]:
    """A portal of this test's own (its machine client exists before it starts, so it registers itself too)."""
    portal_id, portal_secret = _client("portal-service", ["portal"], ["catalog:register"])
    reader_id, reader_secret = _client("catalog-reader", ["portal"], ["portal:read"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    portal = harness.web(
        "portal",
        database_url=current_test_database_url(),
        port=port,
        env={
            "CATALOG_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "PORTAL_CLIENT_ID": portal_id,
            "PORTAL_CLIENT_SECRET": portal_secret,
            "ATRIUM_PORTAL_URL": url,
            "ATRIUM_TOKEN_URL": f"{url}/api/v1/auth/token",
        },
    )
    token = httpx.post(
        f"{portal.url}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": reader_id,
            "client_secret": reader_secret,
            "audience": "portal",
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    env = {
        "ATRIUM_PORTAL_URL": portal.url or "",
        "ATRIUM_CATALOG_HEARTBEAT_SECONDS": str(HEARTBEAT),
    }
    with httpx.Client(
        base_url=portal.url or "", timeout=10, headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    ) as http:
        yield Catalog(portal, http, env)


def service_credentials(service: str) -> dict[str, str]:
    """The env of a service's own machine client allowed to register in the catalog."""
    client_id, secret = _client(f"{service}-service", ["portal"], ["catalog:register"])
    return {f"{service.upper()}_CLIENT_ID": client_id, f"{service.upper()}_CLIENT_SECRET": secret}


def restart(harness: ProcessHarness, process: AtriumProcess) -> AtriumProcess:
    """The same command on the same port, as a supervisor restarts a crashed server."""
    again = AtriumProcess(
        name=process.name,
        cmd=process.cmd,
        env=process.env,
        log_path=process.log_path.with_name(f"restarted-{process.log_path.name}"),
        url=process.url,
    )
    harness.processes.append(again)
    return again.start().wait_ready()


def live_instances(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in body["instances"] if i["status"] == "passing"]


@override_settings(CATALOG_HEARTBEAT_SECONDS=HEARTBEAT)
def test_services_register_heartbeat_go_critical_when_stopped_and_recover(catalog: Catalog, harness: ProcessHarness):
    common = {**catalog.env, "JWT_JWKS_URL": f"{catalog.portal.url}/.well-known/jwks.json"}
    common["ATRIUM_TOKEN_URL"] = f"{catalog.portal.url}/api/v1/auth/token"
    ledger = harness.web("ledger", env={**common, **service_credentials("ledger")})
    payments = harness.web("payments", env={**common, **service_credentials("payments"), "LEDGER_URL": ledger.url})

    # Every process registered from its manifest and heartbeats: the portal too.
    for slug, process in (("ledger", ledger), ("payments", payments), ("portal", catalog.portal)):
        body = wait_until(
            lambda slug=slug: (b := catalog.service(slug)) and live_instances(b) and b, 30, f"{slug} registered"
        )
        assert body["base_url"] == process.url
        assert body["health_url"] == f"{process.url}/health/ready"
        assert body["team"] == ("platform" if slug == "portal" else "payments-core")
        assert (body["part_of"], body["role"]) == (slug, "web")  # from the manifest in its code
        (instance,) = live_instances(body)
        assert instance["pid"] == process.proc.pid  # the gunicorn master: the server is the instance
    ledger_row = Service.objects.get(slug="ledger")
    beats = Instance.objects.get(service=ledger_row).heartbeats
    wait_until(lambda: Instance.objects.get(service=ledger_row).heartbeats >= beats + 2, 10, "two more heartbeats")
    assert health_poll(services=list(Service.objects.filter(slug__in=["ledger", "payments"])))["passing"] == 2
    assert catalog.service("ledger")["status"] == "passing"

    # When the ledger stops, it reads critical within three heartbeat intervals (no job has to run first).
    ledger.stop()
    stopped = time.monotonic()
    body = wait_until(lambda: (b := catalog.service("ledger"))["status"] == "critical" and b, 10, "ledger critical")
    took = time.monotonic() - stopped
    print(f"ledger critical {took:.2f} s after it stopped")
    assert took <= 3 * HEARTBEAT + 1.0, f"critical only after {took:.1f} s"
    assert [i["status"] for i in body["instances"]] == ["critical"]
    assert catalog.service("payments")["status"] == "passing"
    # The beat task's pass records it, and the health check finds the port closed.
    assert instances_mark()["critical"] == 1
    outage = health_poll(services=[Service.objects.get(slug="ledger")])
    assert outage["critical"] == 1
    assert catalog.service("ledger")["status"] == "critical"

    # Restarted, it registers a new instance and is passing again; the old one is history.
    ledger = restart(harness, ledger)
    body = wait_until(
        lambda: (b := catalog.service("ledger")) and len(live_instances(b)) == 1 and len(b["instances"]) == 2 and b,
        30,
        "the restarted ledger's instance",
    )
    assert health_poll(services=[Service.objects.get(slug="ledger")])["passing"] == 1
    body = catalog.service("ledger")
    assert body["status"] == "passing"
    old = [i for i in body["instances"] if i["pid"] != ledger.proc.pid]
    assert len(old) == 1
    assert old[0]["status"] in ("critical", "gone")

    # Its history shows the outage, and uptime reflects it: over the time the checks covered, the critical
    # check's span (until the next check, at most 3 check intervals) is down.
    checks = list(HealthCheck.objects.filter(service__slug="ledger").order_by("checked_at"))
    assert [c.status for c in checks] == ["passing", "critical", "passing"]
    grace = 3 * Service.objects.get(slug="ledger").health_interval_seconds
    down = min((checks[2].checked_at - checks[1].checked_at).total_seconds(), grace)
    observed = body["uptime_observed_seconds"]["24h"]
    assert down < observed <= (timezone.now() - checks[0].checked_at).total_seconds() + 1
    uptime = body["uptime"]["24h"]
    assert uptime == pytest.approx(100 * (observed - down) / observed, abs=1)  # observed is rounded to 0.1 s
    assert 0 < uptime < 100
    assert body["uptime"]["7d"] == uptime


@override_settings(CATALOG_HEARTBEAT_SECONDS=HEARTBEAT)
def test_payments_calling_ledger_is_observed_and_an_unused_declaration_is_flagged(
    catalog: Catalog, harness: ProcessHarness
):
    stack = payments_stack(harness, catalog.portal, extra_env={**catalog.env, **service_credentials("ledger")})
    for slug in ("ledger", "payments", "worker-payments"):
        wait_until(lambda slug=slug: (b := catalog.service(slug)) and live_instances(b), 30, f"{slug} registered")
    worker = catalog.service("worker-payments")
    assert worker["queues"] == ["payments"]
    assert worker["health_url"] is None  # no HTTP: its heartbeats are its health
    # the worker names the service it is part of: payments is one service of several processes (API v2)
    assert (worker["part_of"], worker["role"]) == ("payments", "worker")
    service = catalog.http.get("/api/v2/catalog/services/payments").json()
    roles = {(p["slug"], p["role"]) for p in service["processes"]}
    assert {("payments", "web"), ("worker-payments", "worker")} <= roles
    assert service["status"] in ("passing", "degraded")

    def edge(source: str, target: str) -> dict[str, Any] | None:
        edges = [e for e in catalog.graph()["edges"] if (e["from"], e["to"]) == (source, target)]
        return edges[0] if edges else None

    declared = edge("payments", "ledger")
    assert declared is not None
    assert declared["declared"] is True
    assert declared["observed"] is False
    assert declared["drift"] == "declared_not_observed"

    # A payment: the payments worker holds and settles in the ledger with the payments service's token.
    payment = stack.pay(stack.funded(10_000), stack.account(), 1_000)
    stack.wait_until(lambda: stack.statuses().get("settled") == 1, 30, f"payment {payment['id']} settled")
    observed = wait_until(lambda: (e := edge("payments", "ledger")) and e["observed"] and e, 15, "observed edge")
    assert observed["declared"] is True
    assert observed["drift"] is None
    assert observed["calls"] >= 2  # the holds batch and the settle batch (and the account lookups)
    between_services = catalog.http.get("/api/v2/catalog/graph").json()["edges"]
    assert ("payments", "ledger") in {(e["from"], e["to"]) for e in between_services if e["observed"]}
    assert not [e for e in between_services if e["from"].startswith("worker-")]  # processes are folded in
    # The ledger's calls to the portal (its own registration) are observed too, and declared in its manifest.
    assert wait_until(lambda: (e := edge("ledger", "portal")) and e["observed"] and e, 15, "ledger → portal")[
        "declared"
    ]

    # A service that declares a dependency it never uses is flagged; the edge is there, not observed.
    reporter_id, reporter_secret = _client("reports-service", ["portal"], ["catalog:register"])
    token = httpx.post(
        f"{catalog.portal.url}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": reporter_id,
            "client_secret": reporter_secret,
            "audience": "portal",
        },
        timeout=10,
    ).json()["access_token"]
    response = httpx.put(
        f"{catalog.portal.url}/api/v1/catalog/services/reports",
        json={"display_name": "Reports", "dependencies": [{"service": "ledger"}, {"service": "payments"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    unused = edge("reports", "ledger")
    assert unused["declared"] is True
    assert unused["observed"] is False
    assert unused["drift"] == "declared_not_observed"


def test_a_service_starts_and_serves_while_the_portal_does_not_answer(harness: ProcessHarness, transactional_db: None):
    # given a portal address where nothing listens
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "ATRIUM_PORTAL_URL": nowhere,
        "ATRIUM_TOKEN_URL": f"{nowhere}/api/v1/auth/token",
        "LEDGER_CLIENT_ID": "cli_ledger",
        "LEDGER_CLIENT_SECRET": "secret",
    }

    # when the ledger starts, it is ready as usual (harness.web waits for /health/ready)
    ledger = harness.web("ledger", env=env)

    # and its agent keeps trying in the background, saying so in the log
    def failures() -> list[dict[str, Any]]:
        return [r for r in ledger.log_records() if r.get("event") == "catalog.agent_failed"]

    failed = wait_until(failures, 15, "the agent's first failure")
    assert failed[0]["slug"] == "ledger"
    assert "Token endpoint unreachable" in failed[0]["error"]
    assert httpx.get(f"{ledger.url}/health/live", timeout=5).status_code == 200
