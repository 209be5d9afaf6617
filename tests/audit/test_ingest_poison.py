"""One poisoned event never stops an audit batch: it is parked in its place, the others are chained.

Poison of every kind among good events, in both forms the sequencer receives (the relay's compact
``[id, service, service_seq, payload text]`` and an expanded dict): malformed shapes, values PostgreSQL refuses,
values beyond what the verifiers accept, and errors nobody foresaw (a constraint and a trigger added to the real
table for the test, so PostgreSQL itself refuses one row). Afterwards every service's sequence is gapless and
``audit_verify --strict-services`` passes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client

from portal.audit.chain import IngestDeferred, ingest
from portal.audit.chain_check import verify_log
from portal.audit.models import AuditEvent, AuditRejected
from portal.audit.parked import PARKED_ACTION, PARKED_RAW_BYTES, AuditEventsParked
from tests.audit.test_chain import make_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _heads_file(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"


def relayed(service: str, n: int, payload: str | None = None, **extra: Any) -> list[Any]:
    """An event as the outbox relay sends it: [id, service, service_seq, payload JSON text]."""
    event = make_event(service, n, **extra)
    body = {k: v for k, v in event.items() if k not in ("id", "service", "service_seq")}
    text = json.dumps(body, ensure_ascii=False) if payload is None else payload
    return [event["id"], service, n, text]


def chained() -> dict[tuple[str, int], AuditEvent]:
    return {(e.service, e.service_seq): e for e in AuditEvent.objects.all()}


def assert_gapless_and_verified() -> None:
    report = verify_log()
    assert report.ok, report.problems
    assert report.service_missing == {}, report.service_gaps


POISON = {
    "not-json": lambda n: relayed("ledger", n, payload='{"action": "ledger.x", '),
    "not-an-object": lambda n: relayed("ledger", n, payload="[1, 2, 3]"),
    "outcome": lambda n: relayed("ledger", n, outcome="maybe"),
    "no-actor": lambda n: {**make_event("ledger", n), "actor": None},
    "nul-in-metadata": lambda n: relayed("ledger", n, metadata={"note": "a\x00b"}),
    "nul-in-actor": lambda n: make_event("ledger", n, actor={"type": "user", "id": "u\x00", "display": "x"}),
    "lone-surrogate": lambda n: make_event("ledger", n, actor={"type": "user", "id": "\ud800", "display": "x"}),
    "nan": lambda n: relayed("ledger", n, payload=json.dumps({**make_event("ledger", n), "metadata": {"x": "NaN"}})
                             .replace('"NaN"', "NaN")),
    "deep-nesting": lambda n: relayed("ledger", n, payload='{"metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "huge-number": lambda n: make_event("ledger", n, metadata={"n": 10**5000}),
    "far-future": lambda n: relayed("ledger", n, occurred_at="2999-01-01T00:00:00.000000Z"),
    "before-2000": lambda n: relayed("ledger", n, occurred_at="1970-01-01T00:00:00Z"),
    "not-a-time": lambda n: relayed("ledger", n, occurred_at="yesterday"),
    "over-1MiB": lambda n: relayed("ledger", n, metadata={"blob": "x" * (1 << 20)}),
    "action-too-long": lambda n: relayed("ledger", n, action="a" * 201),
    "id-too-long": lambda n: make_event("ledger", n, id="evt_" + "x" * 100),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(POISON))
def test_a_poisoned_event_is_parked_in_its_place_and_the_others_are_chained(kind):
    # given 20 ledger events whose 8th is poisoned, and events of another service around it
    events: list[Any] = []
    for n in range(1, 21):
        events.append(POISON[kind](n) if n == 8 else relayed("ledger", n))
        events.append(make_event("payments", n))

    # when they arrive in one batch
    began = time.monotonic()
    result = ingest(events)
    seconds = time.monotonic() - began

    # then the 39 good ones are chained and the poisoned one is parked in its place, at once
    assert (result.inserted, result.duplicates, result.rejected) == (40, 0, 0)
    assert [(p["service"], p["service_seq"]) for p in result.parked] == [("ledger", 8)]
    assert seconds < 10
    rows = chained()
    assert len(rows) == 40
    parked = rows[("ledger", 8)]
    assert (parked.action, parked.outcome, parked.actor_id) == (PARKED_ACTION, "failure", "audit_ingest")
    assert parked.metadata["code"] == "processing_error"
    assert parked.metadata["reason"]
    assert parked.metadata["attempts"] == 1  # refused on arrival: no retry would change that
    assert all(rows[("ledger", n)].action == "ledger.transaction.created" for n in range(1, 21) if n != 8)
    # and every service's sequence is gapless: the chain verifies, strictly
    assert_gapless_and_verified()


def test_the_placeholder_keeps_a_digest_and_the_bounded_bytes_of_what_arrived():
    # given a relayed event whose payload is 200 KB of text that is not JSON
    payload = "{" + "é" * 100_000
    ingest([relayed("ledger", 1), relayed("ledger", 2, payload=payload), relayed("ledger", 3)])

    # then its placeholder holds the SHA-256 and size of every byte, and the first bytes themselves
    meta = AuditEvent.objects.get(service="ledger", service_seq=2).metadata
    raw = payload.encode()
    assert meta["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert (meta["raw_bytes"], meta["raw_truncated"]) == (len(raw), True)
    assert base64.b64decode(meta["raw_base64"]) == raw[:PARKED_RAW_BYTES]
    assert "not JSON" in meta["reason"]
    assert AuditEvent.objects.get(service="ledger", service_seq=2).event_id == "evt_ledger_2"


def test_a_redelivered_batch_with_a_parked_event_changes_nothing():
    # given a batch with a poisoned event, chained once
    batch = [relayed("ledger", 1), relayed("ledger", 2, outcome="maybe"), relayed("ledger", 3)]
    ingest(batch)

    # when it is delivered again (at least once: the relay or the dashboard's retry)
    again = ingest(batch)

    # then every event is a duplicate, nothing more is parked
    assert (again.inserted, again.duplicates, again.parked, again.rejected) == (0, 3, [], 0)
    assert AuditEvent.objects.count() == 3


def test_items_that_claim_no_place_are_kept_aside_with_their_bytes():
    # given items naming no usable place: no service, a service_seq beyond bigint or below 1, not even a dict
    events = [
        make_event("ledger", 1),
        {"id": "evt_nowhere", "action": "x"},
        make_event("ledger", 2**63),
        make_event("ledger", 0),
        "just a string",
        ["evt_x", "ledger", "two", "{}"],
        make_event("ledger", 2),
    ]

    # when they arrive
    result = ingest(events)

    # then the good ones are chained, the others in audit_rejected with why (none lost, no gap made)
    assert (result.inserted, result.rejected, result.parked) == (2, 5, [])
    reasons = list(AuditRejected.objects.order_by("id").values_list("reason", flat=True))
    assert "service_seq is out of range (1 to 2^63-1)" in reasons
    assert "event is not a JSON object" in reasons
    assert_gapless_and_verified()


def rogue_ddl(sql: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.fixture
def refused_by_postgres():
    """PostgreSQL itself refuses two rows the sequencer cannot foresee: a CHECK constraint (object id
    ``txn_refused``) and a trigger raising an exception (object id ``txn_raises``)."""
    rogue_ddl("ALTER TABLE audit_event ADD CONSTRAINT test_refused CHECK (object_id <> 'txn_refused')")
    rogue_ddl(
        "CREATE FUNCTION test_raises() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.object_id = 'txn_raises' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$"
    )
    rogue_ddl("CREATE TRIGGER test_raises BEFORE INSERT ON audit_event FOR EACH ROW EXECUTE FUNCTION test_raises()")
    yield
    rogue_ddl("DROP TRIGGER test_raises ON audit_event")
    rogue_ddl("DROP FUNCTION test_raises()")
    rogue_ddl("ALTER TABLE audit_event DROP CONSTRAINT test_refused")


def test_an_error_nobody_foresaw_splits_the_batch_retries_the_event_then_parks_it(refused_by_postgres, settings):
    # given 200 events, of which two are refused by PostgreSQL for reasons the sequencer cannot check
    settings.AUDIT_INGEST_ATTEMPTS = 3
    events = [make_event("ledger", n) for n in range(1, 201)]
    events[56] = make_event("ledger", 57, object={"type": "transaction", "id": "txn_refused"})
    events[143] = make_event("ledger", 144, object={"type": "transaction", "id": "txn_raises"})

    # when they arrive in one batch
    began = time.monotonic()
    result = ingest(events)
    seconds = time.monotonic() - began

    # then the batch was split down to each of them, each was tried three times and parked in its place
    assert result.inserted == 200
    assert sorted((p["service_seq"], p["attempts"]) for p in result.parked) == [(57, 3), (144, 3)]
    rows = chained()
    assert rows[("ledger", 57)].action == rows[("ledger", 144)].action == PARKED_ACTION
    assert "test_refused" in rows[("ledger", 57)].metadata["reason"]
    assert "refused by a trigger" in rows[("ledger", 144)].metadata["reason"]
    assert sum(r.action == "ledger.transaction.created" for r in rows.values()) == 198
    # the seqs follow the batch's order (halves in order), and the rest was not held up for long
    assert [r.service_seq for r in AuditEvent.objects.order_by("seq")] == list(range(1, 201))
    assert seconds < 15
    assert_gapless_and_verified()


def test_the_task_fails_json_safe_after_chaining_so_the_dashboard_shows_the_park():
    from workers.audit import ingest as ingest_task

    # given a batch with one poisoned event, run as the audit worker runs it
    outcome = ingest_task.apply(args=[[relayed("ledger", 1), relayed("ledger", 2, outcome="?"), relayed("ledger", 3)]])

    # then the task failed with AuditEventsParked, a message only (JSON-safe), after chaining everything
    assert outcome.state == "FAILURE"
    error = outcome.result
    assert type(error) is AuditEventsParked
    assert json.loads(json.dumps(error.args)) == list(error.args)
    assert "1 event(s) parked" in str(error)
    assert "ledger#2 evt_ledger_2" in str(error)
    assert AuditEvent.objects.count() == 3


def test_parked_and_rejected_events_are_counted_on_the_metrics_endpoint():
    # given two parked ledger events, one parked payments event and one item kept aside
    ingest([relayed("ledger", 1, outcome="x"), relayed("ledger", 2, outcome="y"), relayed("payments", 1, payload="")])
    ingest([{"no": "place"}])

    # when /metrics is scraped
    text = Client().get("/metrics").content.decode()

    # then they are counted
    assert 'atrium_audit_events_parked_total{service="ledger"} 2.0' in text
    assert 'atrium_audit_events_parked_total{service="payments"} 1.0' in text
    assert "atrium_audit_events_rejected_total 1.0" in text


def test_the_database_away_defers_the_whole_batch_and_parks_nothing():
    import psycopg

    from tests.harness import current_test_database_url

    # given the sequencer's database connection cut by the server (as a failover or restart would)
    ingest([make_event("ledger", 1)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with psycopg.connect(current_test_database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])

    # when a batch arrives
    try:
        with pytest.raises(IngestDeferred, match="unavailable"):
            ingest([make_event("ledger", 2), make_event("ledger", 3)])
    finally:
        connection.close()

    # then nothing of it was parked or chained: the task retries the whole message later
    assert AuditEvent.objects.count() == 1
    assert not AuditEvent.objects.filter(action=PARKED_ACTION).exists()


def test_a_tampered_sequencer_stamp_neither_parks_events_nor_breaks_verification():
    from tests.audit.test_verify import rogue, run_command

    # given a sequencer whose last batch stamp was rewritten to a time no datetime holds
    ingest([make_event("ledger", 1)])
    rogue("UPDATE audit_chain_state SET updated_at = 'infinity'")

    # when more events arrive, and the log is verified
    result = ingest([make_event("ledger", 2), make_event("ledger", 3)])
    code, output = run_command()

    # then they are chained as usual, and the verification runs to its end
    assert (result.inserted, result.parked) == (2, [])
    assert code == 0, output
    assert output.strip().endswith("OK")
