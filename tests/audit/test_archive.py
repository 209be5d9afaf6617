"""audit_archive moves a signed prefix to a self-verifying file; the live log stays verifiable after it.

Logs are built as in test_verify (events from three services, signed heads), committed for real: the
verifier reads from a second connection and the deletions go through the append-only trigger's one door.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from portal.audit import standalone_verifier as verifier
from portal.audit.archive import (
    ARCHIVE_LOCK,
    ArchivePlan,
    archive_plan,
    archive_record,
    archive_write,
    archived_upto,
)
from portal.audit.chain import ingest
from portal.audit.chain_check import verify_log
from portal.audit.errors import ArchiveError
from portal.audit.heads import head_sign, public_key_pem
from portal.audit.models import AuditArchive, AuditEvent, AuditHead
from services.kit.models import OutboxEvent
from tests.audit.test_chain import make_event
from tests.audit.test_verify import SERVICES, first, rogue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _paths(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.AUDIT_ARCHIVE_DIR = str(tmp_path / "archive")
    settings.ATRIUM_OUTBOX_RELAY = "off"


def grow(upto: int) -> None:
    """Ingest events up to global seq ``upto`` (three services, each sequence complete) and sign a head there."""
    start = AuditEvent.objects.count() + archived_upto()
    ingest([make_event(SERVICES[n % 3], n // 3 + 1, id=f"evt_{n}") for n in range(start, upto)])
    head_sign()


def archive(*args: str) -> str:
    out = io.StringIO()
    call_command("audit_archive", "--older-than-days", "0", *args, stdout=out)
    return out.getvalue()


def live_seqs() -> list[int]:
    return list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))


def archive_lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def rewrite_archive(path: Path, lines: list[dict]) -> None:
    with gzip.open(path, "wt") as handle:
        for line in lines:
            handle.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")


def test_a_signed_prefix_is_archived_deleted_and_the_rest_still_verifies(tmp_path):
    # given 50 events with signed heads at 10, 30 and 50
    grow(10)
    grow(30)
    grow(50)

    # when the events up to 30 are archived
    output = archive("--upto", "30")

    # then the file holds them with their proofs, they left the live table, and everything verifies
    (row,) = AuditArchive.objects.all()
    assert (row.first_seq, row.last_seq, row.events) == (1, 30, 30)
    assert "archived seqs 1-30 (30 events)" in output
    assert live_seqs() == list(range(31, 51))
    path = Path(row.path)
    assert path.parent == tmp_path / "archive"
    assert path.name == "audit-000000000001-000000000030.jsonl.gz"
    lines = archive_lines(path)
    header, events, end = lines[0], lines[1:-1], lines[-1]
    assert [h["tree_size"] for h in header["heads"]] == [10, 30]
    assert header["head"]["tree_size"] == 30
    assert header["start"]["tree_size"] == 0
    assert [e["seq"] for e in events] == list(range(1, 31))
    assert end["end"] is True
    assert end["events"] == 30
    assert all(len(e["proof"]) == 5 for e in events[:16])  # ⌈log2 30⌉ for the left subtree's leaves
    check = verifier.check_archive(path, public_key_pem())
    assert check.problems == []
    assert check.events == 30
    report = verify_log(archive_files=True)
    assert report.ok, report.problems
    assert (report.archived, report.events) == (30, 20)
    # the archival is itself an audit event, waiting in the portal's outbox
    (archived,) = [e.payload for e in OutboxEvent.objects.filter(payload__action="audit.log.archived")]
    assert archived["object"] == {"type": "audit_archive", "id": "1-30"}
    assert archived["actor"]["type"] == "system"
    assert archived["metadata"]["file_sha256"] == row.file_sha256


def test_archives_follow_each_other_and_an_event_can_be_proven_from_its_file(tmp_path):
    # given two archives, 1-10 then 11-30, and a live log after them
    grow(10)
    grow(30)
    grow(37)
    archive("--upto", "10")
    archive("--upto", "30")

    # then the second starts at the first's head, every file checks, and verification starts at 31
    older, newer = AuditArchive.objects.order_by("first_seq")
    assert (older.first_seq, older.last_seq, newer.first_seq, newer.last_seq) == (1, 10, 11, 30)
    start = archive_lines(Path(newer.path))[0]["start"]
    assert start["tree_size"] == 10
    assert start["head"]["tree_size"] == 10
    checks = verifier.check_archives([Path(newer.path), Path(older.path)], public_key_pem())
    assert [c.problems for c in checks] == [[], []]
    report = verify_log(archive_files=True)
    assert report.ok, report.problems
    assert live_seqs() == list(range(31, 38))

    # and the standalone verifier, as an outside auditor runs it, checks the files and extracts a proof
    key = tmp_path / "audit.pem"
    key.write_bytes(public_key_pem())
    module = [sys.executable, "-m", "portal.audit.standalone_verifier"]
    checked = subprocess.run(
        [*module, "--public-key", str(key), "--archive", older.path, "--archive", newer.path],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK: audit-000000000011-000000000030.jsonl.gz: seqs 11-30, 20 events" in checked.stdout
    extracted = subprocess.run(  # extracting checks nothing: no key needed
        [*module, "--archive", newer.path, "--extract", "17"], capture_output=True, text=True, check=True
    )
    proof = json.loads(extracted.stdout)
    assert proof["event"]["seq"] == 17
    assert verifier.check_proof(proof, public_key_pem()) == []
    keyless = subprocess.run([*module, "--archive", newer.path], capture_output=True, text=True, check=False)
    assert keyless.returncode == 2
    assert "--public-key PEM is required" in keyless.stderr
    assert "GET /api/v1/audit/public-key" in keyless.stderr


def test_a_log_that_does_not_verify_is_not_archived():
    # given a prefix in which a rogue DBA rewrote one event
    grow(30)
    rogue("UPDATE audit_event SET canonical = replace(canonical, 'req_2', 'req_X') WHERE seq = 5")

    # when archival runs, it stops at that event
    with pytest.raises(CommandError, match="seq 5 does not verify"):
        archive()

    # then nothing was archived, written or deleted
    assert not AuditArchive.objects.exists()
    assert live_seqs() == list(range(1, 31))
    assert not list(Path(archive_dir()).glob("*"))


def archive_dir() -> Path:
    from django.conf import settings

    return Path(settings.AUDIT_ARCHIVE_DIR)


def test_retention_picks_the_newest_head_signed_before_the_cut_off():
    grow(10)
    grow(20)
    # heads are append-only: age them as a rogue DBA would (the test's shortcut for "a year ago")
    rogue("UPDATE audit_head SET created_at = now() - interval '400 days' WHERE tree_size = 10")
    rogue("UPDATE audit_head SET created_at = now() - interval '10 days' WHERE tree_size = 20")

    # the default retention (365 days) archives up to the head signed 400 days ago only
    out = io.StringIO()
    call_command("audit_archive", "--dry-run", stdout=out)
    assert "would archive seqs 1-10 (10 events" in out.getvalue()
    assert not AuditArchive.objects.exists()
    assert len(live_seqs()) == 20
    call_command("audit_archive", stdout=io.StringIO())
    assert live_seqs() == list(range(11, 21))
    assert archive_plan(before=AuditHead.objects.get(tree_size=20).created_at) is None


def test_an_interrupted_deletion_is_finished_by_the_next_run_and_verifies_meanwhile():
    # given an archive recorded but whose rows were not deleted yet (the process died in between)
    grow(20)
    grow(25)
    plan = archive_plan(before=AuditHead.objects.get(tree_size=25).created_at)
    assert plan is not None
    assert plan.last_seq == 20
    archive_record(plan, archive_write(plan, archive_dir()))
    assert len(live_seqs()) == 25

    # then verification already starts after the archive, and the next run deletes the leftovers
    report = verify_log()
    assert report.ok, report.problems
    assert report.archived == 20
    archive("--upto", "20")
    assert live_seqs() == list(range(21, 26))


def test_tampering_after_archival_is_found_in_the_live_log_and_in_the_files():
    grow(10)
    grow(30)
    archive("--upto", "10")

    # a rewritten first live event: it no longer links to the archive's last hash... (reported where it is)
    rogue("UPDATE audit_event SET canonical = replace(canonical, 'req_4', 'req_X') WHERE seq = 11")
    assert first(verify_log()) == (11, "modified")
    rogue("UPDATE audit_event SET canonical = replace(canonical, 'req_X', 'req_4') WHERE seq = 11")
    assert verify_log().ok

    # a deleted live event
    rogue("DELETE FROM audit_event WHERE seq = 12")
    assert first(verify_log()) == (12, "missing")


def test_a_changed_merkle_node_at_the_archived_prefix_is_found():
    # given an archive of 1-10: the live tree starts from the stored frontier at 10 (nodes 1/4 and 3/0)
    grow(10)
    grow(20)
    archive("--upto", "10")
    assert verify_log().ok

    # when a rogue DBA changes one of them, verification says the frontier no longer hashes to the head
    rogue("UPDATE audit_node SET hash = sha256(hash) WHERE level = 1 AND index = 4")
    report = verify_log()
    assert first(report) == (10, "modified")
    assert "frontier at the archived prefix" in report.first.detail


def test_a_changed_archive_file_is_found(tmp_path):
    grow(10)
    grow(20)
    archive("--upto", "10")
    row = AuditArchive.objects.get()
    path = Path(row.path)
    lines = archive_lines(path)

    # one event's text changed (hashes left alone): the file check fails at that seq
    lines[3]["canonical"] = lines[3]["canonical"].replace("req_", "reX_")
    copy = tmp_path / "copy" / path.name
    copy.parent.mkdir()
    rewrite_archive(copy, lines)
    problems = verifier.check_archive(copy, public_key_pem()).problems
    assert problems
    assert problems[0].startswith("seq 3: its hashes do not match")
    # and audit_verify --archive-dir, pointed at the changed copy, reports that the file is not the one written
    report = verify_log(archive_files=True, archive_dir=copy.parent)
    assert first(report) == (1, "modified")
    assert "is not the one written" in report.first.detail

    # a truncated file (its end line and last event gone)
    rewrite_archive(copy, archive_lines(path)[:-2])
    problems = verifier.check_archive(copy, public_key_pem()).problems
    assert "no end line: the archive is truncated" in problems

    # a missing file
    report = verify_log(archive_files=True, archive_dir=tmp_path / "elsewhere")
    assert first(report) == (1, "missing")


def test_an_archive_row_not_written_by_the_command_is_found():
    # given a rogue DBA who records an "archive" of 1-20 to hide those rows from verification
    grow(10)
    grow(20)
    grow(30)
    head = AuditHead.objects.get(tree_size=20)
    AuditArchive.objects.create(
        first_seq=1,
        last_seq=20,
        events=20,
        path="/nowhere.jsonl.gz",
        file_sha256="0" * 64,
        file_bytes=0,
        head_root_hash=head.root_hash,
        head_last_hash=head.last_hash,
    )

    # then the missing audit.log.archived event gives it away
    report = verify_log()
    assert first(report) == (20, "inserted")
    assert "no matching audit.log.archived event" in report.first.detail


def test_the_archival_event_once_chained_still_vouches_for_the_archive():
    grow(10)
    grow(20)
    archive("--upto", "10")
    (outbox,) = OutboxEvent.objects.filter(payload__action="audit.log.archived")
    ingest([{**outbox.payload, "id": outbox.id, "service": "portal-ops", "service_seq": 1}])
    OutboxEvent.objects.filter(id=outbox.id).delete()
    head_sign()

    report = verify_log()
    assert report.ok, report.problems
    assert AuditEvent.objects.filter(action="audit.log.archived", seq__gt=10).exists()


def test_deleting_outside_the_archival_command_is_still_refused():
    grow(10)
    grow(20)
    archive("--upto", "10")
    for sql in ("DELETE FROM audit_event", "UPDATE audit_archive SET events = 0", "DELETE FROM audit_archive"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql)


def test_nothing_to_archive_and_bad_options_say_so():
    assert "nothing to archive" in archive()
    grow(5)
    with pytest.raises(CommandError, match="--max-events"):
        archive("--max-events", "0")
    with pytest.raises(ArchiveError):
        archive_write(_plan_without_nodes(), archive_dir())


def _plan_without_nodes() -> ArchivePlan:
    """A plan starting after a prefix whose Merkle nodes are not stored (as after a bad restore)."""
    plan = archive_plan(before=AuditHead.objects.get().created_at + dt.timedelta(seconds=1))
    assert plan is not None
    rogue("DELETE FROM audit_node WHERE level = 2")
    plan.first_seq = 5  # as if 1-4 had been archived
    return plan


def test_the_hourly_task_archives_only_when_enabled(settings):
    from workers.audit import archive as archive_task

    grow(10)
    rogue("UPDATE audit_head SET created_at = now() - interval '400 days'")
    assert archive_task.apply().get() == {"archived": 0, "enabled": False}
    assert len(live_seqs()) == 10

    settings.AUDIT_ARCHIVE_AUTOMATIC = True
    result = archive_task.apply().get()
    assert result["archived"] == 10
    assert live_seqs() == []
    assert verify_log(archive_files=True).ok


def test_two_runs_at_once_do_not_both_archive():
    from django.db import connections

    grow(10)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [ARCHIVE_LOCK])
        with pytest.raises(CommandError, match="another audit_archive run"):
            archive()
    finally:
        with other.cursor() as cursor:  # (closing alone frees it only once the server notices)
            cursor.execute("SELECT pg_advisory_unlock(%s)", [ARCHIVE_LOCK])
        other.close()
    archive()
    assert live_seqs() == []
