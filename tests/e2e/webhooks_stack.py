"""The webhooks service as separate processes, for the live and fault tests: its web process (the API) on its own
database, its Celery worker(s) on the ``webhooks`` queue (``webhooks.ingest``), its dispatcher(s)
(``manage.py webhooks_dispatch``), and a source of events.

Two sources:
- the whole payments path (``tests.e2e.payments_stack``): payments and ledger write their domain events to their
  outboxes and their relays publish them to ``webhooks.ingest``;
- ``OutboxSource``: a payments database and the payments outbox relay alone, into whose outbox a test writes
  ``payment.*`` events by SQL (the same row the payments service writes): the real path outbox → relay →
  webhooks worker → dispatcher → HTTP, at any rate, without the cost of making payments.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from portal.identity import services as identity
from tests.harness import AtriumProcess, ProcessHarness
from tests.webhook_events import outbox_write, payment_event  # noqa: F401  (re-exported for the tests)

# Attempts every second or so: a receiver down for 20 s gets every message within seconds of coming back.
QUICK_SCHEDULE = "0,1,1,2,2,3,3,3,3,3,3,3,3,3,3,3"


def webhooks_env(**extra: str) -> dict[str, str]:
    """What every webhooks process of a test gets: loopback receivers allowed, short timeouts, a quick schedule."""
    return {
        "WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.1/32",
        "ATRIUM_OUTBOUND_ALLOW_NETWORKS": "127.0.0.1/32",
        "WEBHOOKS_RETRY_SCHEDULE": QUICK_SCHEDULE,
        "WEBHOOKS_TIMEOUT_SECONDS": "3",
        **extra,
    }


@dataclass
class WebhooksStack:
    harness: ProcessHarness
    web: AtriumProcess
    workers: list[AtriumProcess]
    dispatchers: list[AtriumProcess]
    database_url: str
    env: dict[str, str]
    http: httpx.Client
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)

    def endpoint(
        self,
        name: str,
        url: str,
        *,
        secret: str,
        event_types: list[str],
        channels: list[str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create an endpoint through the API (with the receiver's secret); remember it under ``name``."""
        body = {
            "url": url,
            "description": f"e2e {name}",
            "event_types": event_types,
            "channels": channels or [],
            "secret": secret,
            **fields,
        }
        response = self.http.post("/api/v1/endpoints", json=body)
        assert response.status_code == 201, response.text
        self.endpoints[name] = response.json()
        return self.endpoints[name]

    def sql(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def message_count(self) -> int:
        return self.sql("SELECT count(*) FROM webhooks_message")[0][0]

    def pending(self) -> int:
        return self.sql("SELECT count(*) FROM webhooks_delivery WHERE state = 'pending'")[0][0]

    def dispatcher(self, **env: str) -> AtriumProcess:
        """One more dispatcher process (started; alive after a second)."""
        process = self.harness.command(
            "webhooks",
            "webhooks_dispatch",
            database_url=self.database_url,
            env={**self.env, **env},
            name=f"webhooks-dispatcher-{len(self.dispatchers)}",
        )
        self.dispatchers.append(process)
        return dispatcher_wait(process)


def dispatcher_wait(process: AtriumProcess, settle: float = 4.0) -> AtriumProcess:
    """Wait until the dispatcher logs that it started (an event ending in ``started``), or has stayed alive for
    ``settle`` seconds (Django is up: a bad command or setting would have made it exit by then)."""
    began = time.monotonic()
    while time.monotonic() - began < settle:
        process._check_alive()
        if any(str(r.get("event", "")).endswith("started") for r in process.log_records()):
            return process
        time.sleep(0.1)
    process._check_alive()
    return process


def webhooks_stack(
    harness: ProcessHarness,
    portal: AtriumProcess,
    *,
    workers: int = 1,
    dispatchers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> WebhooksStack:
    """Start the webhooks service's processes on a fresh database (their API client lives in the test's portal
    database, flushed after it)."""
    caller, caller_secret = identity.client_create(
        name=f"e2e-webhooks-{uuid.uuid4().hex[:6]}",
        audiences=["webhooks"],
        scopes=["webhooks:read", "webhooks:write"],
    )
    env = {
        "JWT_JWKS_URL": f"{portal.url}/.well-known/jwks.json",
        "ATRIUM_TOKEN_URL": f"{portal.url}/api/v1/auth/token",
        "ATRIUM_OUTBOX_RELAY": "thread",
        "ATRIUM_OUTBOX_POLL_SECONDS": "1",
        **webhooks_env(),
        **(extra_env or {}),
    }
    web = harness.web("webhooks", env=env)
    database_url = web.env["WEBHOOKS_DATABASE_URL"]
    started = [harness.worker("webhooks", database_url=database_url, env=env) for _ in range(workers)]
    response = httpx.post(
        env["ATRIUM_TOKEN_URL"],
        data={
            "grant_type": "client_credentials",
            "client_id": caller.id,
            "client_secret": caller_secret,
            "audience": "webhooks",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    stack = WebhooksStack(
        harness=harness,
        web=web,
        workers=started,
        dispatchers=[],
        database_url=database_url,
        env=env,
        http=httpx.Client(
            base_url=web.url or "",
            timeout=30,
            headers={"Authorization": f"Bearer {response.json()['access_token']}"},
        ),
    )
    for _ in range(dispatchers):
        stack.dispatcher()
    return stack


@dataclass
class OutboxSource:
    """A payments database and its outbox relay process: events written to the outbox reach ``webhooks.ingest``."""

    database_url: str
    relay: AtriumProcess

    def write(self, events: list[dict[str, Any]]) -> list[str]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return outbox_write(conn, events)

    def unpublished(self) -> int:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM kit_outbox_event e WHERE e.topic = 'events' AND (e.seq IS NULL OR e.seq > "
                "COALESCE((SELECT published_seq FROM kit_outbox_counter c WHERE c.topic = 'events'), 0))"
            ).fetchone()[0]


def outbox_source(harness: ProcessHarness, *, extra_env: dict[str, str] | None = None) -> OutboxSource:
    database_url = harness.service_database("payments")
    relay = harness.command(
        "payments",
        "outbox_relay",
        "--interval",
        "0.1",
        database_url=database_url,
        env=extra_env,
        name="payments-relay",
    )
    time.sleep(1.0)
    relay._check_alive()
    return OutboxSource(database_url, relay)
