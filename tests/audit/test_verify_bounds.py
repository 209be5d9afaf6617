"""audit_verify cannot be stalled: its time follows the rows present, and absurd values are tampering at once.

A rogue DBA (triggers disabled) inserts rows whose numbers, timestamps or sizes the sequencer never writes.
Most of them are appended *consistently*: linked to the last event, hashed, with the sequencer's state and
Merkle nodes moved on to include them — so the chain and the heads cannot tell (nothing signed covers them
yet), and only the value checks can. Each is reported at its own seq, with its reason, within seconds; every
test has a hard timeout, so a check that loops over a range of numbers fails instead of hanging.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from portal.audit import standalone_verifier as verifier
from portal.audit.chain import frontier_append
from portal.audit.chain_check import verify_log
from portal.audit.models import AuditArchive, AuditChainState, AuditEvent
from tests.audit.test_verify import build_log, first, rogue, run_command

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

COLUMNS = (
    "seq, event_id, service, service_seq, occurred_at, recorded_at, actor_type, actor_id, actor_display, action, "
    "outcome, object_type, object_id, request_id, source_ip, user_agent, changes, metadata, canonical, leaf_hash, "
    "hash, prev_hash"
)


@pytest.fixture(autouse=True)
def _heads_file(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"


def insert(seq: int, body: dict[str, Any], prev_hash: bytes) -> bytes:
    """Insert ``body`` as the row at ``seq``, its columns what its JSON says and its hashes its own; return its
    chain hash. (Timestamps in the JSON that PostgreSQL cannot read go into the columns as -infinity.)"""
    data = verifier.canonical({**body, "seq": seq})
    digest = verifier.chain_hash(data, prev_hash)
    actor, obj = body["actor"], body["object"]

    def moment(value: str) -> str:
        return value if verifier.parse_timestamp(value) is not None else "-infinity"

    rogue(
        f"INSERT INTO audit_event ({COLUMNS}) VALUES "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s)",
        [
            seq, body["id"], body["service"], body["service_seq"], moment(body["occurred_at"]),
            moment(body["recorded_at"]), actor["type"], actor["id"], actor["display"], body["action"],
            body["outcome"], obj["type"], obj["id"], body["request_id"], body["source_ip"], body["user_agent"],
            json.dumps(body["changes"]), json.dumps(body["metadata"]), data.decode(), verifier.leaf_hash(data),
            digest, prev_hash,
        ],
    )  # fmt: skip
    return digest


def append_consistently(**fields: Any) -> int:
    """Append an event copied from the last one with ``fields`` changed, and move the sequencer's state and the
    stored Merkle nodes on to include it, as the sequencer would have: only its values give it away."""
    last = AuditEvent.objects.order_by("-seq").first()
    seq = last.seq + 1
    body = {**json.loads(last.canonical), "id": f"evt_forged_{seq}", "service_seq": last.service_seq + 1, **fields}
    data = verifier.canonical({**body, "seq": seq})
    digest = insert(seq, body, bytes(last.hash))
    state = AuditChainState.objects.get()
    frontier = dict(state.frontier)
    nodes = frontier_append(frontier, state.size, verifier.leaf_hash(data))
    with transaction.atomic(), connection.cursor() as cursor:
        for table in ("audit_chain_state", "audit_node"):
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cursor.execute(
            "UPDATE audit_chain_state SET size = %s, last_hash = %s, frontier = %s::jsonb WHERE id = 1",
            [seq, digest, json.dumps(frontier)],
        )
        for level, index, node in nodes:
            cursor.execute("INSERT INTO audit_node (level, index, hash) VALUES (%s, %s, %s)", [level, index, node])
        for table in ("audit_chain_state", "audit_node"):
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    return seq


def timed_verify() -> tuple[Any, float]:
    began = time.monotonic()
    report = verify_log()
    return report, time.monotonic() - began


def test_a_consistent_append_verifies_so_the_value_checks_below_are_what_finds_the_others():
    # given a log with one more event appended exactly as the sequencer would (state and nodes moved on)
    build_log()
    seq = append_consistently()

    # when verified; then nothing is wrong (nothing signed covers it yet: see the Limits in chain_check.py)
    report = verify_log()
    assert seq == 31
    assert report.ok, report.problems


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"service_seq": 999_999_999}, "sequence jumps from 10 to 999999999"),
        ({"service_seq": 2**62}, "cannot be in flight"),
        ({"service_seq": -3}, "sequence number -3 is below 1"),
        ({"service_seq": 0}, "sequence number 0 is below 1"),
        ({"occurred_at": "2999-01-01T00:00:00.000000Z"}, "after its recorded_at"),
        ({"occurred_at": "1970-01-01T00:00:00.000000Z"}, "occurred_at 1970-01-01T00:00:00.000000Z is before 2000"),
        ({"recorded_at": "2099-06-01T00:00:00.000000Z"}, "is in the future"),
        ({"recorded_at": "1999-12-31T23:59:59.000000Z"}, "is before 2000"),
        ({"recorded_at": "2026-01-01T00:00:00.000000Z"}, "is before the previous event's"),
        ({"metadata": {"blob": "x" * (verifier.EVENT_MAX_BYTES + 1)}}, "more than the 1048576 the sequencer writes"),
    ],
    ids=[
        "service-seq-999999999",
        "service-seq-2^62",
        "service-seq-negative",
        "service-seq-zero",
        "occurred-far-future",
        "occurred-far-past",
        "recorded-future",
        "recorded-before-2000",
        "recorded-back-in-time",
        "over-1MiB",
    ],
)
def test_an_absurd_value_appended_consistently_is_out_of_range_at_its_seq(fields, words):
    # given a log with an event appended consistently, holding a value the sequencer never writes
    build_log()
    seq = append_consistently(**fields)

    # when verified
    report, seconds = timed_verify()

    # then it is reported at its seq, as out of range, saying why — at once
    assert first(report) == (seq, "out of range"), report.problems
    assert words in report.first.detail
    assert seconds < 10


def test_a_row_forged_at_seq_999999999_is_reported_there_at_once_by_the_command():
    # given the probe's forgery: one row at seq 999,999,999 with service_seq 999,999,999
    build_log()
    last = AuditEvent.objects.order_by("-seq").first()
    body = {**json.loads(last.canonical), "id": "evt_forged", "service_seq": 999_999_999}
    insert(999_999_999, body, bytes(last.hash))

    # when the command runs
    began = time.monotonic()
    code, output = run_command("--json")
    seconds = time.monotonic() - began

    # then it fails at once, at seq 999,999,999: beyond what the sequencer recorded, and out of range
    summary = json.loads(output.strip().splitlines()[-1])
    assert code == 1
    assert summary["first_problem"]["seq"] == 999_999_999, summary
    assert seconds < 10
    report = verify_log()
    found = {(p.seq, p.reason) for p in report.problems}
    assert {(999_999_999, "inserted"), (999_999_999, "out of range")} <= found
    assert not any(p.reason == "missing" for p in report.problems)  # nothing counted 999,999,968 rows missing


@pytest.mark.parametrize("seq", [2**62, 2**63 - 1])
def test_rows_at_the_largest_seqs_cost_nothing_more(seq):
    # given a row far beyond the log (up to the largest bigint), and its column check unsealed
    build_log()
    last = AuditEvent.objects.order_by("-seq").first()
    insert(seq, {**json.loads(last.canonical), "id": "evt_far", "service_seq": 11}, bytes(last.hash))

    # when verified, comparing every row's columns as well
    began = time.monotonic()
    code, output = run_command("--all-columns")
    seconds = time.monotonic() - began

    # then it is the first problem, at its seq, found at once; 31 rows compared (rows, not seqs)
    assert code == 1
    assert f"FAIL at seq {seq}: inserted" in output
    assert "compared with the JSON: 31 rows" in output
    assert seconds < 10


@pytest.mark.parametrize("seq", [0, -5, -(2**63)])
def test_a_row_below_seq_1_is_out_of_range(seq):
    # given a row slipped in below the start of the log, where the stream never reads
    build_log()
    template = AuditEvent.objects.get(seq=3)
    insert(seq, {**json.loads(template.canonical), "id": "evt_below", "service_seq": 11}, bytes(32))

    # when verified
    report, seconds = timed_verify()

    # then it is reported at its seq
    assert first(report) == (seq, "out of range")
    assert seconds < 10


def test_a_service_sequence_gap_wider_than_can_be_in_flight_is_tampering_a_narrower_one_a_warning(settings):
    # given at most 5 events in flight per service, and a ledger sequence with a gap of 3 and one of 6
    settings.AUDIT_VERIFY_SERVICE_GAP_MAX = 5
    from portal.audit.chain import ingest
    from tests.audit.test_chain import make_event

    ingest([make_event("ledger", n) for n in (1, 2, 6, 13)])

    # when verified
    report = verify_log()

    # then the wide gap is out of range at the row after it (seq 4), the narrow one a warning
    assert first(report) == (4, "out of range")
    assert "sequence jumps from 6 to 13" in report.first.detail
    assert report.service_gaps == {"ledger": [3, 4, 5]}
    assert report.service_missing == {"ledger": 3}


def test_a_service_sequence_number_held_twice_is_inserted_at_the_later_row():
    # given a DBA who drops the unique index on (service, service_seq) and appends a second ledger number 4
    build_log()
    rogue("ALTER TABLE audit_event DROP CONSTRAINT audit_event_service_seq_unique")
    try:
        seq = append_consistently(service="ledger", service_seq=4)

        # when verified
        report = verify_log()

        # then the later row is inserted: it claims a place that seq 10 holds
        assert first(report) == (seq, "inserted")
        assert "holds ledger sequence number 4, as seq 10 does" in report.first.detail
    finally:
        rogue("DELETE FROM audit_event WHERE event_id LIKE 'evt_forged_%%'")
        rogue("ALTER TABLE audit_event ADD CONSTRAINT audit_event_service_seq_unique UNIQUE (service, service_seq)")


def test_events_recorded_after_the_signed_head_covering_them_are_out_of_range(monkeypatch):
    # given ten events under a head whose signed timestamp is a day before they were recorded (only the key's
    # holder can sign one; the rows and the head each look right on their own)
    from portal.audit import heads as heads_module
    from portal.audit.chain import ingest
    from portal.audit.heads import head_sign
    from tests.audit.test_chain import make_event

    ingest([make_event("ledger", n) for n in range(1, 11)])
    real_now = heads_module.timezone.now
    monkeypatch.setattr(heads_module.timezone, "now", lambda: real_now() - dt.timedelta(days=1))
    head_sign()
    monkeypatch.setattr(heads_module.timezone, "now", real_now)

    # when verified
    report = verify_log()

    # then each of them is out of range, from the first
    assert first(report) == (1, "out of range")
    assert "is after the head at tree size 10 covering it was signed" in report.first.detail
    assert [p.seq for p in report.problems] == list(range(1, 11))


# --- the standalone verifier, on archive files ---------------------------------------------------------------


@pytest.fixture
def archived(settings, tmp_path) -> list[dict]:
    """The lines of an archive file of seqs 1-10 (the live log goes on to 20)."""
    from tests.audit.test_archive import archive, archive_lines, grow

    settings.AUDIT_ARCHIVE_DIR = str(tmp_path / "archive")
    grow(10)
    grow(20)
    archive("--upto", "10")
    return archive_lines(Path(AuditArchive.objects.get().path))


def rechained(lines: list[dict], index: int, **fields: Any) -> list[dict]:
    """``lines`` with the event on line ``index`` changed and every hash from there recomputed (the heads and
    the proofs left as they were: what cannot be forged without the signing key)."""
    out = [dict(line) for line in lines]
    body = {**json.loads(out[index]["canonical"]), **fields}
    out[index]["canonical"] = verifier.canonical(body).decode()
    prev = bytes.fromhex(out[index]["prev_hash"])
    for line in out[index:]:
        if "end" in line:
            break
        data = line["canonical"].encode()
        line.update(prev_hash=prev.hex(), leaf_hash=verifier.leaf_hash(data).hex())
        prev = verifier.chain_hash(data, prev)
        line["hash"] = prev.hex()
    return out


def write(path: Path, lines: list[dict], raw_tail: bytes = b"") -> Path:
    import gzip

    with gzip.open(path, "wb") as handle:
        for line in lines:
            handle.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        handle.write(raw_tail)
    return path


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"service_seq": 0}, "service_seq 0 is out of range"),
        ({"service_seq": 2**64}, "service_seq 18446744073709551616 is out of range"),
        ({"recorded_at": "2099-01-01T00:00:00.000000Z"}, "is after the head at tree size 10 covering it was signed"),
        ({"recorded_at": "2026-11-29T00:00:00.000000Z"}, "is before the previous event's"),
        ({"occurred_at": "1900-01-01T00:00:00.000000Z"}, "occurred_at '1900-01-01T00:00:00.000000Z' is not a time"),
        ({"action": "a" * 300}, "action is 300 characters long"),
    ],
    ids=["service-seq-zero", "service-seq-2^64", "recorded-future", "recorded-back", "occurred-1900", "long-field"],
)
def test_the_standalone_verifier_reports_an_absurd_value_in_an_archive_at_its_seq(archived, tmp_path, fields, words):
    # given an archive whose event 4 holds a value the sequencer never writes, the chain re-hashed around it
    lines = archived
    forged = write(tmp_path / "forged.jsonl.gz", rechained(lines, 4, **fields))

    # when the standalone verifier checks it
    problems = verifier.check_archive(forged, verifier_key()).problems

    # then it says so at that seq (besides the head that no longer matches)
    assert any(p.startswith("seq 4: ") and words in p and "(out of range)" in p for p in problems), problems


def test_an_archive_line_with_an_absurd_seq_or_size_is_reported_at_once_not_parsed(archived, tmp_path):
    lines = archived

    # a seq of 999,999,999 in place of 4: missing at 4, at once
    jumped = [dict(line) for line in lines]
    jumped[4]["seq"] = 999_999_999
    problems = verifier.check_archive(write(tmp_path / "jump.jsonl.gz", jumped), verifier_key()).problems
    assert problems[0] == "seq 4: missing (the next line is seq 999999999)"

    # a seq of 5,000 digits: a malformed line, not a crash
    write(tmp_path / "digits.jsonl.gz", lines[:4], b'{"seq":' + b"9" * 5000 + b"}\n")
    problems = verifier.check_archive(tmp_path / "digits.jsonl.gz", verifier_key()).problems
    assert problems[0].startswith("seq 4: its line is malformed (ValueError")

    # a line longer than any the archiver writes: reported without being read whole
    write(tmp_path / "long.jsonl.gz", lines[:4], b'{"seq":4,"canonical":"' + b"x" * (3 << 20) + b'"}\n')
    began = time.monotonic()
    problems = verifier.check_archive(tmp_path / "long.jsonl.gz", verifier_key()).problems
    assert problems[0] == "seq 4: its line is longer than any the archiver writes (out of range)"
    assert time.monotonic() - began < 10

    # a covering head with a tree size beyond 2^63-1: a malformed header
    header = {**lines[0], "head": {**lines[0]["head"], "tree_size": 2**80}}
    problems = verifier.check_archive(write(tmp_path / "head.jsonl.gz", [header, *lines[1:]]), verifier_key()).problems
    assert problems[0] == (
        "the header is malformed (ValueError: '1208925819614629174706176 is not a count from 0 to 2^63-1')"
    )


def test_the_standalone_verifier_run_alone_fails_at_the_forged_seq_within_seconds(archived, tmp_path):
    import shutil
    import subprocess
    import sys

    # given the verifier copied alone, and an archive whose event 6 claims service_seq -7
    lines = archived
    forged = write(tmp_path / "forged.jsonl.gz", rechained(lines, 6, service_seq=-7))
    key = tmp_path / "key.pem"
    key.write_bytes(verifier_key())
    alone = tmp_path / "auditor"
    alone.mkdir()
    shutil.copy(Path(verifier.__file__), alone / "standalone_verifier.py")

    # when run as an outside auditor would, with a time limit
    done = subprocess.run(
        [sys.executable, "standalone_verifier.py", "--public-key", str(key), "--archive", str(forged)],
        cwd=alone,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then it fails, naming seq 6 and the value (and the head the re-hashed chain no longer matches)
    assert done.returncode == 1
    assert (
        "FAIL: forged.jsonl.gz: seq 6: its service_seq -7 is out of range (1 to 2^63-1) (out of range)" in done.stdout
    )
    assert "head at tree size 10 does not match the archived events (forged head)" in done.stdout
    assert "Traceback" not in done.stderr


def verifier_key() -> bytes:
    from portal.audit.heads import public_key_pem

    return public_key_pem()


@pytest.mark.parametrize("moment", ["infinity", "-infinity", "20000-01-01T00:00:00Z"])
def test_a_time_no_datetime_holds_is_out_of_range_even_at_the_midpoint_of_a_split_stream(monkeypatch, moment):
    from portal.audit import chain_check as verify_module

    # given a log streamed in two processes (from 10 events on), whose midpoint row's recorded_at is rewritten
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_EVENTS", 10)
    build_log()
    rogue("UPDATE audit_event SET recorded_at = %s WHERE seq = 15", [moment])

    # when the command runs (its own snapshot: the split is tried)
    code, output = run_command()

    # then it does not break down: seq 15 is reported, out of range (and its column disagrees with its JSON)
    assert code == 1
    assert "FAIL at seq 15: out of range" in output
