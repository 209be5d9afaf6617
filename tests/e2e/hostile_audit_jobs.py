"""Helpers for tests/e2e/test_hostile.py's sections 1b (audit ingest and the job monitor) and 4 (the verifier).

Real processes throughout: a ledger outbox relay and a portal audit worker on the test's database, a hostile
publisher straight to the broker, Celery workers whose tracking feeds a live job monitor, ``manage.py
audit_verify`` in a subprocess with a timeout. PostgreSQL itself refuses one item of each path through a
constraint added for the test (what no validation foresees), besides the kinds of poison refused on arrival.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from devtools.infra import REPO_ROOT
from tests.harness import AtriumProcess, ProcessHarness, base_env, current_test_database_url


def sql(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


# --- audit ingest ---------------------------------------------------------------------------------------------


def audit_body(n: int, **extra: Any) -> dict[str, Any]:
    """An audit event's payload as a service's outbox holds it (id, service and number are the relay's)."""
    return {
        "occurred_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {"type": "client", "id": "cli_e2e", "display": "cli_e2e"},
        "action": "ledger.transaction.created",
        "outcome": "success",
        "object": {"type": "transaction", "id": f"txn_{n}"},
        "request_id": f"req_{n}",
        "source_ip": "127.0.0.1",
        "user_agent": "e2e",
        "changes": {},
        "metadata": {"n": n},
        **extra,
    }


# Poison a service's outbox can hold (jsonb): the relay publishes it like any event; the sequencer refuses it.
OUTBOX_POISON = {
    17: {"outcome": "maybe"},
    40: {"actor": None},
    63: {"occurred_at": "yesterday"},
    88: {"occurred_at": "2999-01-01T00:00:00.000000Z"},
    111: {"metadata": {"blob": "x" * (1 << 20)}},
    150: {"action": "a" * 500},
    177: {"object": {"type": "transaction", "id": "txn_refused"}},  # PostgreSQL refuses it (refusing_database)
}


def outbox_fill(ledger_db: str, count: int) -> None:
    """``count`` audit events in the ledger's outbox, committed together (so relayed as one batch)."""
    import psycopg

    with psycopg.connect(ledger_db) as conn:
        for n in range(1, count + 1):
            conn.execute(
                "INSERT INTO kit_outbox_event (id, topic, payload, created_at, attempts, last_error) "
                "VALUES (%s, 'audit', %s::jsonb, clock_timestamp(), 0, '')",
                [f"evt_hostile_{n:03d}", json.dumps(audit_body(n, **OUTBOX_POISON.get(n, {})))],
            )


def intruder_batch() -> tuple[list[list[Any]], set[int]]:
    """A batch in the relay's shape from a hostile publisher: values no outbox could hold, among good events;
    and the numbers of the poisoned ones."""
    good = json.dumps(audit_body(0))
    batch = [
        ["evt_in_1", "intruder", 1, good],
        ["evt_in_2", "intruder", 2, good.replace('"e2e"', '"a\\u0000b"')],  # a NUL
        ["evt_in_3", "intruder", 3, good.replace('"n": 0', '"n": NaN')],  # NaN
        ["evt_in_4", "intruder", 4, '{"metadata": ' + "[" * 50_000 + "]" * 50_000 + "}"],  # nested too deeply
        ["evt_in_5", "intruder", 5, good.replace('"e2e"', '"\\ud800"')],  # a lone surrogate
        ["evt_in_6", "intruder", 6, "{not json"],
        ["evt_in_7", "intruder", 7, good],
    ]
    return batch, {2, 3, 4, 5, 6}


def ledger_relay(harness: ProcessHarness, ledger_db: str) -> AtriumProcess:
    relay = AtriumProcess(
        name="ledger-relay",
        cmd=[sys.executable, "services/ledger/manage.py", "outbox_relay", "--interval", "0.2"],
        env=base_env("ledger", ledger_db),
        log_path=harness.log_dir / f"ledger-relay-{uuid.uuid4().hex[:6]}.log",
    )
    harness.processes.append(relay)
    return relay.start()


def places() -> dict[tuple[str, int], str]:
    """Every (service, service_seq) chained in the test's database, and its action."""
    rows = sql(current_test_database_url(), "SELECT service, service_seq, action FROM audit_event")
    return {(service, number): action for service, number, action in rows}


def audit_verify(heads: str, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    """``manage.py audit_verify`` on the test's database in a subprocess, bounded by ``timeout``."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", "audit_verify", *args],
        env=base_env("portal", current_test_database_url(), AUDIT_HEADS_PATH=heads),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - began


# --- the job monitor ------------------------------------------------------------------------------------------


def tracking_poison(now: float) -> list[dict[str, Any]]:
    """Stream entries a buggy or hostile producer might write, one unrecordable item each."""
    return [
        {"b": b"{not json"},
        {"b": b'{"state": "queued"}'},
        {"e": b'{"state": "succeeded", "task_id": "p1", "at": "soon"}'},
        {"b": json.dumps([{"state": "started", "task_id": "p2", "at": now, "retries": -4}])},
        {"b": json.dumps([{"state": "queued", "task_id": "p3", "at": now, "name": "a\x00b"}])},
        {"b": json.dumps([{"state": "succeeded", "task_id": "p4", "at": now, "result": "x" * 300_000}])},
        {"b": b'[{"state": "succeeded", "task_id": "p5", "at": 1e300}]'},
        # a valid event PostgreSQL refuses (refusing_database)
        {"b": json.dumps([{"state": "queued", "task_id": "p6", "at": now, "name": "poison.check"}])},
        {"x": b"neither a batch nor an event"},
    ]


@contextlib.contextmanager
def refusing_database() -> Iterator[None]:
    """The test's database refuses an audit event of object ``txn_refused`` and a task named ``poison.check``."""
    url = current_test_database_url()
    sql(url, "ALTER TABLE audit_event ADD CONSTRAINT hostile_refused CHECK (object_id <> 'txn_refused')")
    sql(url, "ALTER TABLE jobs_job ADD CONSTRAINT hostile_refused CHECK (name <> 'poison.check')")
    try:
        yield
    finally:
        sql(url, "ALTER TABLE audit_event DROP CONSTRAINT hostile_refused")
        sql(url, "ALTER TABLE jobs_job DROP CONSTRAINT hostile_refused")


# --- forged rows (section 4) ----------------------------------------------------------------------------------


def _forge_far_row() -> int:
    from portal.audit.models import AuditEvent
    from tests.audit.test_verify_bounds import insert

    last = AuditEvent.objects.order_by("-seq").first()
    body = {**json.loads(last.canonical), "id": "evt_forged", "service_seq": 999_999_999}
    insert(999_999_999, body, bytes(last.hash))
    return 999_999_999


def _forge_below() -> int:
    from portal.audit.models import AuditEvent
    from tests.audit.test_verify_bounds import insert

    template = AuditEvent.objects.get(seq=3)
    insert(-7, {**json.loads(template.canonical), "id": "evt_below", "service_seq": 11}, bytes(32))
    return -7


def _append(**fields: Any) -> Callable[[], int]:
    def forge() -> int:
        from tests.audit.test_verify_bounds import append_consistently

        return append_consistently(**fields)

    return forge


def _delete(seq: int) -> Callable[[], int]:
    def forge() -> int:
        from tests.audit.test_verify import rogue

        rogue("DELETE FROM audit_event WHERE seq = %s", [seq])
        return seq

    return forge


# id → (forge it, returning the seq it must be reported at; the reasons that are right there)
FORGERIES: dict[str, tuple[Callable[[], int], set[str]]] = {
    "seq-and-service-seq-999999999": (_forge_far_row, {"inserted", "out of range"}),
    "service-seq-2^62": (_append(service_seq=2**62), {"out of range"}),
    "seq-negative": (_forge_below, {"out of range"}),
    "occurred-far-future": (_append(occurred_at="2999-01-01T00:00:00.000000Z"), {"out of range"}),
    "recorded-far-future": (_append(recorded_at="2999-01-01T00:00:00.000000Z"), {"out of range"}),
    "over-1MiB": (_append(metadata={"blob": "x" * ((1 << 20) + 1)}), {"out of range"}),
    "gap": (_delete(12), {"missing"}),
}
