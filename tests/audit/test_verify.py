"""audit_verify finds tampering done as a rogue DBA would do it (triggers disabled), at the right seq.

Each test builds a small log (30 events from three services, signed heads at 10 and 30, the heads file
in a temporary directory), tampers with it directly in SQL, and checks the first problem's seq and reason.
The tests commit for real (``transaction=True``): the verifier reads from a second connection.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from portal.audit import chain_check as verify_module
from portal.audit import standalone_verifier as verifier
from portal.audit.chain import ingest
from portal.audit.chain_check import VerifyReport, verify_log
from portal.audit.heads import head_sign, heads_file_read
from portal.audit.models import AuditEvent
from services.kit.models import OutboxEvent
from tests.audit.test_chain import make_event

pytestmark = pytest.mark.django_db(transaction=True)

SERVICES = ("ledger", "payments", "portal")
AUDIT_TABLES = ("audit_event", "audit_node", "audit_head", "audit_chain_state")
EVENT_COLUMNS = (
    "service, occurred_at, recorded_at, actor_type, actor_id, actor_display, action, outcome, object_type, "
    "object_id, request_id, source_ip, user_agent, changes, metadata"
)


@pytest.fixture(autouse=True)
def _heads_file(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"


def build_log(count: int = 30) -> None:
    """Events from three services (each service's sequence complete), signed heads at 10 and at the end."""
    events = [make_event(SERVICES[n % 3], n // 3 + 1, id=f"evt_{n}") for n in range(count)]
    ingest(events[:10])
    head_sign()
    ingest(events[10:])
    head_sign()


def rogue(sql: str, params: list | None = None) -> None:
    """Run ``sql`` with the append-only triggers disabled, as the tables' owner could, and commit."""
    with transaction.atomic(), connection.cursor() as cursor:
        for table in AUDIT_TABLES:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cursor.execute(sql, params or [])
        for table in AUDIT_TABLES:
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def forge(seq: int, template_seq: int, prev_hash: bytes, **fields: Any) -> bytes:
    """Insert an event at ``seq`` copied from ``template_seq`` with ``fields`` changed, its own hashes consistent.

    Return its chain hash.
    """
    template = AuditEvent.objects.get(seq=template_seq)
    body = {**json.loads(template.canonical), "seq": seq, **fields}
    data = verifier.canonical(body)
    digest = verifier.chain_hash(data, prev_hash)
    rogue(
        "INSERT INTO audit_event (seq, event_id, service_seq, canonical, leaf_hash, hash, prev_hash, "
        f"{EVENT_COLUMNS}) SELECT %s, %s, %s, %s, %s, %s, %s, {EVENT_COLUMNS} FROM audit_event WHERE seq = %s",
        [
            seq,
            body["id"],
            body["service_seq"],
            data.decode(),
            verifier.leaf_hash(data),
            digest,
            prev_hash,
            template_seq,
        ],
    )
    return digest


def renumber(after: int, by: int) -> None:
    """Shift every seq above ``after`` by ``by`` (through a free range: the primary key is checked per row)."""
    rogue("UPDATE audit_event SET seq = seq + 1000000 WHERE seq > %s", [after])
    rogue("UPDATE audit_event SET seq = seq - 1000000 + %s WHERE seq > 1000000", [by])


def first(report: VerifyReport) -> tuple[int, str]:
    assert report.first is not None, "expected a problem"
    return report.first.seq, report.first.reason


def run_command(*args: str) -> tuple[int, str]:
    """``manage.py audit_verify`` in process: (exit status, stdout)."""
    out = io.StringIO()
    try:
        call_command("audit_verify", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


def verified_events() -> list[dict]:
    return [e.payload for e in OutboxEvent.objects.filter(payload__action="audit.log.verified")]


def test_an_untouched_log_verifies_and_the_check_is_itself_audited():
    # given a log of 30 events with two signed heads
    build_log()

    # when the command runs, in text and in JSON
    code, output = run_command()
    json_code, json_output = run_command("--json")

    # then both pass, say what was checked, and each run left an audit event
    assert code == 0, output
    assert "checked 30 events and 2 signed heads" in output
    assert "events/s" in output
    assert output.strip().endswith("OK")
    assert json_code == 0
    summary = json.loads(json_output.strip().splitlines()[-1])
    assert (summary["ok"], summary["events"], summary["heads"], summary["first_problem"]) == (True, 30, 2, None)
    runs = verified_events()
    assert len(runs) == 2
    assert {r["outcome"] for r in runs} == {"success"}
    assert runs[0]["actor"]["id"] == "audit_verify"
    assert runs[0]["object"] == {"type": "audit_log", "id": "portal"}
    assert runs[0]["metadata"]["events"] == 30


def test_an_empty_log_verifies():
    # given no events and no heads; when verified; then there is nothing wrong
    report = verify_log()

    assert (report.ok, report.events, report.heads) == (True, 0, 0)


@pytest.mark.django_db  # no real commits: verified inside the test's transaction
def test_inside_a_transaction_the_column_check_runs_on_the_same_connection():
    # given a log, changed (uncommitted) in the test's own transaction
    build_log()
    rogue("UPDATE audit_event SET outcome = 'failure' WHERE seq = 3")

    # when verified in that transaction (a second connection would not see the change)
    report = verify_log()

    # then the change is found
    assert first(report) == (3, "modified")


def test_one_changed_column_is_found_as_modified_at_its_seq():
    # given a log whose event 17 has its action column changed (its hashed JSON left as it was)
    build_log()
    rogue("UPDATE audit_event SET action = 'ledger.transaction.voided' WHERE seq = 17")

    # when the command runs
    code, output = run_command()

    # then it fails at seq 17 as modified, exit status 1, and the failed run is audited
    assert code == 1
    assert "FAIL at seq 17: modified" in output
    assert "columns disagree" in output
    assert [r["outcome"] for r in verified_events()] == ["failure"]


def test_sealed_rows_are_not_parsed_again_unless_all_columns_is_asked_for():
    # given a log written by the sequencer in two batches, each sealed
    build_log()

    # when verified normally and with --all-columns
    sealed = verify_log()
    code, output = run_command("--all-columns")

    # then the untouched rows' columns are trusted by their seals, and --all-columns compares all 30
    assert (sealed.ok, sealed.columns_compared) == (True, 0)
    assert code == 0, output
    assert "search columns compared with the JSON: 30 rows" in output


def test_a_changed_column_unseals_only_its_own_row():
    # given a log whose event 12 has its action column changed (a new row version: a new transaction id)
    build_log()
    rogue("UPDATE audit_event SET action = 'ledger.nothing.happened' WHERE seq = 12")

    # when verified
    report = verify_log()

    # then that row alone is compared field by field, and found
    assert first(report) == (12, "modified")
    assert report.columns_compared == 1


def test_rows_re_sealed_by_hand_are_found_by_the_seal_and_the_columns():
    # given a rogue DBA who rewrites a column of events 1-10 and points their seal at the new transaction id
    build_log()
    rogue("UPDATE audit_event SET actor_display = 'someone else' WHERE seq BETWEEN 1 AND 10")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_seal DISABLE TRIGGER USER")
        cursor.execute(
            "UPDATE audit_seal SET row_xmin = (SELECT xmin::text::bigint FROM audit_event WHERE seq = 1) "
            "WHERE first_seq = 1"
        )
        cursor.execute("ALTER TABLE audit_seal ENABLE TRIGGER USER")

    # when verified
    report = verify_log()

    # then the seal does not verify (its MAC needs the signing key) and every row of it is compared and found
    assert first(report)[0] == 1
    found = [(p.seq, p.reason, p.detail) for p in report.problems]
    assert (1, "forged seal", "the seal of seqs 1-10 does not verify") in found
    assert [seq for seq, reason, detail in found if "columns disagree" in detail] == list(range(1, 11))


@pytest.fixture
def halves(monkeypatch) -> list[bool]:
    """Stream even this small log in two processes; record whether each attempt stood (True) or fell back."""
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_EVENTS", 10)
    attempts: list[bool] = []
    original = verify_module._stream_halves

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        attempts.append(result is not None)
        return result

    monkeypatch.setattr(verify_module, "_stream_halves", spy)
    return attempts


def test_two_processes_streaming_a_half_each_reach_the_same_result(halves):
    # given an untouched log of 30 events; when verified with the halves in two processes
    build_log()
    report = verify_log()

    # then the split stood and the result is the whole log's
    assert halves == [True]
    assert (report.ok, report.events, report.heads, report.columns_compared) == (True, 30, 2, 0)


def test_a_problem_in_the_second_half_is_found_by_streaming_the_whole_log_again(halves):
    # given event 25 (in the second process's half) deleted
    build_log()
    rogue("DELETE FROM audit_event WHERE seq = 25")

    # when verified
    report = verify_log()

    # then the split result was dropped and the sequential stream says exactly what is wrong
    assert halves == [False]
    assert first(report) == (25, "missing")


def test_a_false_claim_at_the_midpoint_is_not_trusted(halves):
    # given the stored Merkle node the second half would start from (size 15: level 3, index 0) changed
    build_log()
    rogue("UPDATE audit_node SET hash = %s WHERE level = 3 AND index = 0", [bytes(32)])

    # when verified
    report = verify_log()

    # then the first half, recomputed, does not end on that claim: the log is streamed whole instead (and the
    # events themselves are intact; the node is not on the final frontier, proofs through it would fail)
    assert halves == [False]
    assert (report.ok, report.events) == (True, 30)


def test_a_rewritten_canonical_text_is_found_as_modified():
    # given a log whose event 5 has its canonical JSON (and the matching column) rewritten, not re-hashed
    build_log()
    body = json.loads(AuditEvent.objects.get(seq=5).canonical)
    body["metadata"] = {"n": 999}
    rogue(
        "UPDATE audit_event SET canonical = %s, metadata = %s::jsonb WHERE seq = 5",
        [verifier.canonical(body).decode(), json.dumps(body["metadata"])],
    )

    # when verified
    report = verify_log()

    # then seq 5 is modified: its hashes no longer match it
    assert first(report) == (5, "modified")
    assert "hashes" in report.first.detail


def test_an_event_rewritten_and_re_hashed_is_found_by_its_successor_and_the_head():
    # given a log whose event 5 is rewritten with its own hash and leaf recomputed (consistent by itself)
    build_log()
    row = AuditEvent.objects.get(seq=5)
    body = {**json.loads(row.canonical), "metadata": {"n": 999}}
    data = verifier.canonical(body)
    rogue(
        "UPDATE audit_event SET canonical = %s, metadata = %s::jsonb, leaf_hash = %s, hash = %s WHERE seq = 5",
        [data.decode(), '{"n": 999}', verifier.leaf_hash(data), verifier.chain_hash(data, bytes(row.prev_hash))],
    )

    # when verified
    report = verify_log()

    # then seq 5 is modified (seq 6 links to its old hash) and the head at 10 no longer matches
    assert first(report) == (5, "modified")
    assert "re-hashed" in report.first.detail
    assert (10, "forged head") in {(p.seq, p.reason) for p in report.problems}


def test_a_canonical_text_that_is_not_json_is_found_without_crashing():
    # given a log whose event 8 holds text that is not JSON at all
    build_log()
    rogue("UPDATE audit_event SET canonical = 'not json' WHERE seq = 8")

    # when verified (PostgreSQL cannot even cast it: the column check narrows down to the row)
    report = verify_log()

    # then seq 8 is modified
    assert first(report) == (8, "modified")


def test_a_deleted_event_is_found_as_missing_at_its_seq():
    # given a log whose event 12 is deleted
    build_log()
    rogue("DELETE FROM audit_event WHERE seq = 12")

    # when verified, directly and by the command
    report = verify_log()
    code, output = run_command()

    # then seq 12 is missing
    assert first(report) == (12, "missing")
    assert code == 1
    assert "FAIL at seq 12: missing" in output


def test_a_deleted_event_with_the_rest_renumbered_is_found_as_missing():
    # given a log whose event 12 is deleted and the later ones renumbered down to close the gap
    build_log()
    rogue("DELETE FROM audit_event WHERE seq = 12")
    renumber(after=12, by=-1)

    # when verified
    report = verify_log()

    # then seq 12 is reported missing (it holds the event chained as 13)
    assert first(report) == (12, "missing")
    assert "renumbered" in report.first.detail


def test_the_last_event_deleted_is_found_as_missing():
    # given a log whose last event (30, covered by the last signed head) is deleted
    build_log()
    rogue("DELETE FROM audit_event WHERE seq = 30")

    # when verified
    report = verify_log()

    # then seq 30 is missing: the signed head and the sequencer both counted 30 events
    assert first(report) == (30, "missing")
    assert not any(p.reason == "forged head" for p in report.problems)


def test_an_event_replaced_by_one_that_links_nowhere_is_found_as_modified():
    # given a log whose event 15 is replaced by a forged one, hashing correctly but linked to nothing
    build_log()
    rogue("DELETE FROM audit_event WHERE seq = 15")
    forge(15, template_seq=14, prev_hash=b"\x07" * 32, id="evt_forged", service_seq=99)

    # when verified
    report = verify_log()

    # then seq 15 is modified: it neither links to seq 14 nor is seq 16 linked to it
    assert first(report) == (15, "modified")
    assert "replaced" in report.first.detail


def test_an_event_slipped_in_with_the_rest_renumbered_is_found_as_inserted():
    # given a log into which a forged event is slipped at seq 21, linked correctly to seq 20 and hashing
    # correctly, the later events renumbered up
    build_log()
    renumber(after=20, by=1)
    forge(21, template_seq=20, prev_hash=bytes(AuditEvent.objects.get(seq=20).hash), id="evt_forged", service_seq=99)

    # when verified
    report = verify_log()

    # then seq 21 is inserted
    assert first(report) == (21, "inserted")


def test_an_event_appended_behind_the_sequencers_back_is_found_as_inserted():
    # given a log with a forged event appended as seq 31, linked to seq 30 with consistent hashes
    build_log()
    forge(31, template_seq=30, prev_hash=bytes(AuditEvent.objects.get(seq=30).hash), id="evt_forged", service_seq=99)

    # when verified
    report = verify_log()

    # then seq 31 is inserted: the sequencer only ever recorded 30 events
    assert first(report) == (31, "inserted")


def test_a_head_forged_in_the_database_is_found():
    # given a log whose signed head at 10 has another root hash in the database
    build_log()
    rogue("UPDATE audit_head SET root_hash = %s WHERE tree_size = 10", ["00" * 32])

    # when verified
    report = verify_log()

    # then the head at 10 is forged (bad signature, differs from the file, does not match the tree)
    assert first(report) == (10, "forged head")
    details = " ".join(p.detail for p in report.problems)
    assert "invalid signature" in details
    assert "differs between database and file" in details
    assert "does not match the recomputed tree" in details


def test_a_head_re_signed_with_another_key_in_both_places_fails_its_signature(settings):
    # given a log whose head at 10 is replaced, in the database and in the file, by one signed with another key
    build_log()
    other = ed25519.Ed25519PrivateKey.generate()
    heads = heads_file_read()
    forged = {**next(h for h in heads if h["tree_size"] == 10), "timestamp": "2030-01-01T00:00:00.000000Z"}
    forged["signature"] = base64.b64encode(other.sign(verifier.head_message(forged))).decode()
    lines = [json.dumps(forged if h["tree_size"] == 10 else h, sort_keys=True) for h in heads]
    with open(settings.AUDIT_HEADS_PATH, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    rogue(
        "UPDATE audit_head SET timestamp = %s, signature = %s WHERE tree_size = 10",
        [forged["timestamp"], forged["signature"]],
    )

    # when verified
    report = verify_log()

    # then the head at 10 is forged: its signature is not the audit key's
    assert first(report) == (10, "forged head")
    assert "invalid signature" in report.first.detail


def test_a_forged_line_appended_to_the_heads_file_is_found(settings):
    # given a log whose heads file gets an extra line: a head at 20 with a made-up root and a copied signature
    build_log()
    real = heads_file_read()[0]
    with open(settings.AUDIT_HEADS_PATH, "a") as handle:
        handle.write(json.dumps({**real, "tree_size": 20, "root_hash": "ab" * 32}, sort_keys=True) + "\n")

    # when verified by the command
    code, output = run_command()

    # then it fails at 20: a forged head
    assert code == 1
    assert "FAIL at seq 20: forged head" in output


def test_a_head_deleted_from_the_database_is_reported_missing():
    # given a log whose signed head at 10 is deleted from the database (the file still has it)
    build_log()
    rogue("DELETE FROM audit_head WHERE tree_size = 10")

    # when verified
    report = verify_log()

    # then the head at 10 is missing from the database
    assert first(report) == (10, "head missing")


def test_a_tampered_merkle_node_is_found():
    # given an untouched event log but a stored Merkle node (the one proofs of events 17-24 use) changed
    build_log()
    rogue("UPDATE audit_node SET hash = %s WHERE level = 3 AND index = 2", [bytes(32)])

    # when verified
    report = verify_log()

    # then the node is reported (at the last seq it covers)
    assert first(report) == (24, "modified")
    assert "Merkle node" in report.first.detail


def test_service_sequence_gaps_are_warnings_unless_strict():
    # given a log where the ledger's event 3 has not arrived (yet)
    ingest([make_event("ledger", n) for n in (1, 2, 4, 5)])

    # when verified, without and with --strict-services
    report = verify_log()
    code, output = run_command()
    strict_code, strict_output = run_command("--strict-services")

    # then the gap is a warning, a failure only when strict
    assert report.ok
    assert report.service_gaps == {"ledger": [3]}
    assert code == 0
    assert "warning: ledger sequence has 1 gap(s): 3" in output
    assert strict_code == 1
    assert "FAIL" in strict_output


def test_a_run_that_cannot_verify_is_audited_as_a_failure(monkeypatch):
    # given a verification that breaks down (the database goes away, say)
    def broken(**kwargs: Any) -> VerifyReport:
        raise DatabaseError("connection lost")

    monkeypatch.setattr("portal.audit.management.commands.audit_verify.verify_log", broken)

    # when the command runs
    code, _ = run_command()

    # then it exits 1 and the run is audited as a failure, with the error
    assert code == 1
    (run,) = verified_events()
    assert run["outcome"] == "failure"
    assert "connection lost" in run["metadata"]["error"]


def test_the_triggers_refuse_update_delete_and_truncate():
    # given a log, with the append-only triggers in place
    build_log(3)

    # when anyone updates or deletes a row, or truncates the table (without the test-only setting)
    for sql in (
        "UPDATE audit_event SET action = 'x.y' WHERE seq = 1",
        "DELETE FROM audit_event WHERE seq = 1",
        "UPDATE audit_head SET root_hash = 'x'",
        "DELETE FROM audit_node",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
            c.execute(sql)

    def truncate() -> None:
        with transaction.atomic(), connection.cursor() as c:
            c.execute("SET LOCAL atrium.audit_truncate = off")
            c.execute("TRUNCATE audit_event CASCADE")

    with pytest.raises(DatabaseError, match="append-only"):
        truncate()

    # then every statement was refused and the log is intact
    assert AuditEvent.objects.count() == 3
    assert verify_log().ok
