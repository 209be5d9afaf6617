"""Four ingest workers, 5,000 events from three services, duplicates included: one chain, no gaps."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import psycopg
import pytest

from devtools.infra import REPO_ROOT
from tests.audit.test_chain import make_event
from tests.harness import base_env
from workers.celery import app

pytestmark = pytest.mark.slow

EVENTS = 5_000
SERVICES = ("ledger", "payments", "portal")


def test_four_ingest_workers_build_one_chain(harness, tmp_path):
    # given four audit workers (separate processes) on one portal database, and no stale tasks that other
    # tests' relays left on the shared test broker
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("audit")
    portal_db = harness.service_database("portal")
    heads = str(tmp_path / "heads.jsonl")
    for _ in range(4):
        harness.worker("audit", database_url=portal_db, env={"AUDIT_HEADS_PATH": heads})

    # when 5,000 events from three services arrive in interleaved batches, some batches twice
    events = [make_event(SERVICES[n % 3], n // 3 + 1, id=f"evt_c_{n}") for n in range(EVENTS)]
    batches = [events[i : i + 50] for i in range(0, EVENTS, 50)]
    rng = random.Random(7)
    sent = batches + rng.sample(batches, 15)
    rng.shuffle(sent)
    began = time.monotonic()
    results = [app.send_task("audit.ingest", args=[batch]) for batch in sent]
    outcomes = [r.get(timeout=120) for r in results]
    elapsed = time.monotonic() - began

    # then every event is chained once, the sequence has no gap, and every service's sequence is complete
    assert sum(o["rejected"] for o in outcomes) == 0, [o for o in outcomes if o["rejected"]][:2]
    assert sum(o["inserted"] for o in outcomes) == EVENTS
    assert sum(o["duplicates"] for o in outcomes) == 15 * 50
    with psycopg.connect(portal_db, autocommit=True) as conn:
        count, low, high, ids = conn.execute(
            "SELECT count(*), min(seq), max(seq), count(DISTINCT event_id) FROM audit_event"
        ).fetchone()
        per_service = dict(conn.execute("SELECT service, count(DISTINCT service_seq) FROM audit_event GROUP BY 1"))
    assert (count, low, high, ids) == (EVENTS, 1, EVENTS, EVENTS)
    assert per_service == {"ledger": 1667, "payments": 1667, "portal": 1666}
    # and the chain and the Merkle tree recompute to what the sequencer recorded (no fork)
    verified = subprocess.run(
        [sys.executable, "manage.py", "audit_verify", "--strict-services"],
        env=base_env("portal", portal_db, AUDIT_HEADS_PATH=heads),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    print(f"4 workers chained {EVENTS} events ({len(sent)} batches, 15 repeated) in {elapsed:.1f} s")
