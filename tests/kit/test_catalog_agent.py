"""The catalog agent every process runs, against a real local HTTP server standing in for the portal: it retries
while the portal is away, registers, heartbeats at the interval the portal gives, reports who called it (and keeps
the counts when a report fails), and registers again when the portal lost the service. And the call counting in
JWT authentication that feeds it."""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.kit import catalog
from services.kit.catalog import CallCounter, CatalogAgent, agent_start, calls_received
from services.kit.http import ClientCredentials
from tests.servers import LocalServer, Seen, json_reply

pytestmark = pytest.mark.urls("tests.kit.urls")

MANIFEST = {"display_name": "Ledger", "dependencies": [{"service": "portal"}]}


class FakePortal:
    """Token endpoint and catalog API: answers 503 to the first ``down`` catalog calls, then as the portal does."""

    def __init__(self, local_server: Callable[..., LocalServer], *, down: int = 0, interval: float = 0.05) -> None:
        self.down = down
        self.interval = interval
        self.lost_service = False
        self.refuse_calls = 0
        self.lock = threading.Lock()
        self.server = local_server(self.respond)
        self.url = self.server.url

    def respond(self, seen: Seen) -> Any:
        if seen.path == "/token":
            return json_reply(200, {"access_token": "tok", "expires_in": 900})
        with self.lock:
            if self.down > 0:
                self.down -= 1
                return json_reply(503, {"code": "unavailable"})
            if seen.path.endswith("/heartbeat") and self.lost_service:
                self.lost_service = False
                return json_reply(404, {"code": "service_not_found"})
            if seen.path.endswith("/calls") and self.refuse_calls > 0:
                self.refuse_calls -= 1
                return json_reply(503, {"code": "unavailable"})
        if seen.method == "PUT":
            return json_reply(200, {"slug": "ledger", "version": "1.2.3"})
        if seen.path.endswith("/heartbeat"):
            return json_reply(200, {"heartbeat_interval_seconds": self.interval})
        return json_reply(200, {"callers": 1})

    def requests(self, suffix: str = "", method: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.server.calls()
            if s.path.endswith(suffix) and s.path != "/token" and (method is None or s.method == method)
        ]


@pytest.fixture
def portal(local_server: Callable[..., LocalServer]) -> Callable[..., FakePortal]:
    return lambda **kw: FakePortal(local_server, **kw)


@pytest.fixture
def agents() -> Iterator[Callable[..., CatalogAgent]]:
    started: list[CatalogAgent] = []
    calls_received.take()

    def start(portal: FakePortal, **kwargs: Any) -> CatalogAgent:
        agent = CatalogAgent(
            slug="ledger",
            manifest=MANIFEST,
            instance="host-1:42",
            portal_url=portal.url,
            credentials=ClientCredentials(token_url=f"{portal.url}/token", client_id="cli_ledger", client_secret="s"),
            pid=42,
            interval=0.05,
            **kwargs,
        )
        started.append(agent)
        agent.start()
        return agent

    yield start
    for agent in started:
        agent.stop(report=False)
    calls_received.take()


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def test_registers_from_its_manifest_then_heartbeats_its_instance(portal, agents):
    fake = portal()
    agent = agents(fake)

    wait_for(lambda: agent.beats >= 3)
    (put,) = fake.requests(method="PUT")
    assert put.path == "/api/v1/catalog/services/ledger"
    assert json.loads(put.body) == MANIFEST
    assert put.headers["authorization"] == "Bearer tok"
    beat = fake.requests("/heartbeat")[0]
    assert beat.path == "/api/v1/catalog/services/ledger/instances/host-1%3A42/heartbeat"
    body = json.loads(beat.body)
    assert body["pid"] == 42
    assert body["started_at"].endswith("Z")


def test_keeps_trying_while_the_portal_is_away_with_growing_waits(portal, agents, monkeypatch):
    monkeypatch.setattr(catalog, "BACKOFF_MAX_SECONDS", 0.4)
    fake = portal(down=4)
    agent = agents(fake)

    # the process is not held up: the agent is a thread; it registers once the portal answers
    assert agent.registered.wait(10)
    assert len(fake.requests(method="PUT")) == 5  # four refused, then accepted
    wait_for(lambda: agent.beats >= 1)


def test_heartbeats_at_the_interval_the_portal_answers(portal, agents):
    fake = portal(interval=0.5)
    agent = agents(fake)
    wait_for(lambda: agent.beats >= 1)
    time.sleep(1.2)
    assert 2 <= agent.beats <= 4
    assert agent.interval == 0.5


def test_registers_again_when_the_portal_lost_the_service(portal, agents):
    fake = portal()
    agent = agents(fake)
    wait_for(lambda: agent.beats >= 1)
    fake.lost_service = True
    wait_for(lambda: len(fake.requests(method="PUT")) == 2)
    wait_for(lambda: agent.registered.is_set() and agent.beats >= 3)


def test_reports_the_calls_it_received_and_keeps_them_when_a_report_fails(portal, agents):
    fake = portal()
    fake.refuse_calls = 1
    calls_received.add("cli_payments", 3)
    calls_received.add("cli_reports")
    agent = agents(fake)

    wait_for(lambda: len(fake.requests("/calls")) >= 2)
    refused, sent = fake.requests("/calls")[:2]
    # refused once, then sent again whole
    assert json.loads(refused.body) == json.loads(sent.body) == {"callers": {"cli_payments": 3, "cli_reports": 1}}
    time.sleep(0.2)
    assert len(fake.requests("/calls")) == 2  # nothing new to report: no report
    calls_received.add("cli_payments", 2)
    wait_for(lambda: len(fake.requests("/calls")) == 3)
    assert json.loads(fake.requests("/calls")[-1].body) == {"callers": {"cli_payments": 2}}
    agent.stop()


def test_the_last_calls_are_reported_when_the_process_stops(portal, agents):
    fake = portal(interval=60)
    agent = agents(fake)
    wait_for(lambda: agent.beats >= 1)
    calls_received.add("cli_payments", 7)
    agent.stop()
    assert json.loads(fake.requests("/calls")[-1].body) == {"callers": {"cli_payments": 7}}
    assert not agent.is_alive()


def test_call_counter_is_bounded_and_gives_back_failed_reports():
    counter = CallCounter(limit=2)
    counter.add("a")
    counter.add("b")
    counter.add("c")  # a third caller is not remembered
    counter.add("a", 2)
    taken = counter.take()
    assert taken == {"a": 3, "b": 1}
    assert counter.take() == {}
    counter.give_back(taken)
    assert counter.take() == taken


def test_authentication_counts_each_calling_client_but_not_itself(client, jwks_server, signing_key, settings):
    settings.ATRIUM_CLIENT_ID = "cli_ledger_itself"
    calls_received.take()
    for sub in ("cli_payments", "cli_payments", "cli_reports", "cli_ledger_itself"):
        token = signing_key.mint(sub=sub, scope="ledger:read")
        assert client.get("/api/v1/whoami", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    # a refused token is no call
    client.get("/api/v1/whoami", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert calls_received.take() == {"cli_payments": 2, "cli_reports": 1}


def test_no_agent_without_credentials_or_portal_or_when_switched_off(settings):
    settings.ATRIUM_CLIENT_ID = ""
    settings.ATRIUM_PORTAL_URL = "http://127.0.0.1:1"
    assert agent_start(slug="ledger", manifest=MANIFEST) is None
    settings.ATRIUM_CLIENT_ID, settings.ATRIUM_CLIENT_SECRET = "cli", "secret"
    settings.ATRIUM_PORTAL_URL = ""
    assert agent_start(slug="ledger", manifest=MANIFEST) is None
    settings.ATRIUM_PORTAL_URL = "http://127.0.0.1:1"
    settings.ATRIUM_CATALOG_REGISTER = False
    assert agent_start(slug="ledger", manifest=MANIFEST) is None


def test_web_manifest_adds_the_urls_the_server_binds_to(settings):
    settings.ATRIUM_PUBLIC_URL = ""
    manifest = catalog.web_manifest(["127.0.0.1:8123"])
    assert manifest["display_name"] == "Ledger"
    assert manifest["base_url"] == "http://127.0.0.1:8123"
    assert manifest["health_url"] == "http://127.0.0.1:8123/health/ready"
    assert manifest["openapi_url"] == "http://127.0.0.1:8123/api/schema"
    settings.ATRIUM_PUBLIC_URL = "https://ledger.internal.example"
    assert catalog.web_manifest(["0.0.0.0:8000"])["base_url"] == "https://ledger.internal.example"
    # every address: a name other hosts can use
    settings.ATRIUM_PUBLIC_URL = ""
    assert catalog.web_manifest(["0.0.0.0:8000"])["base_url"].startswith("http://")
    assert "0.0.0.0" not in catalog.web_manifest(["0.0.0.0:8000"])["base_url"]


def test_every_kind_of_process_names_the_service_it_is_part_of_and_its_role(settings, monkeypatch):
    # given: the agent's start captured, not run (what each process's start-up hook would register)
    started: dict[str, dict] = {}

    def capture(*, slug: str, manifest: Any, **kwargs: Any) -> None:
        started[slug] = manifest() if callable(manifest) else manifest

    monkeypatch.setattr(catalog, "agent_start", capture)
    settings.ATRIUM_PUBLIC_URL = ""

    # when: every kind of Procfile process starts (with the ledger's settings, as its worker and relay do)
    catalog.web_agent_start(bind=["127.0.0.1:8001"], master_pid=1, started_at=None)
    catalog.worker_agent_start(["ledger"])
    catalog.relay_agent_start()
    catalog.beat_agent_start()
    catalog.process_agent_start("jobs-monitor", display_name="Job monitor", description="Records task events.")

    # then: each is part of the service whose settings it runs with, in its role
    assert {slug: (m["part_of"], m["role"]) for slug, m in started.items()} == {
        "ledger": ("ledger", "web"),
        "worker-ledger": ("ledger", "worker"),
        "relay-ledger": ("ledger", "relay"),
        "beat": ("ledger", "beat"),
        "jobs-monitor": ("ledger", "monitor"),
    }


@pytest.mark.parametrize(
    ("module", "service"),
    [("portal.manifest", "portal"), ("services.ledger.manifest", "ledger"), ("services.payments.manifest", "payments")],
)
def test_every_services_manifest_names_itself_as_the_service_of_its_web_process(module, service):
    manifest = importlib.import_module(module).MANIFEST

    assert (manifest["part_of"], manifest["role"]) == (service, "web")
