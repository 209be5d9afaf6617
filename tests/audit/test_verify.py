"""audit_verify finds tampering as a rogue DBA would do it (triggers disabled), at the right seq."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from portal.audit import verifier
from portal.audit.chain import ingest
from portal.audit.heads import head_sign, heads_file_read
from portal.audit.models import AuditEvent
from portal.audit.verify import verify_log
from services.kit.models import OutboxEvent
from tests.audit.test_chain import make_event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _heads_file(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"


def build_log(count: int = 30) -> None:
    """Events from three services, with signed heads at 10 and at the end."""
    services = ("ledger", "payments", "portal")
    events = [make_event(services[n % 3], n // 3 + 1, id=f"evt_{n}") for n in range(count)]
    ingest(events[:10])
    head_sign()
    ingest(events[10:])
    head_sign()


def rogue(sql: str, params: list | None = None) -> None:
    """Run ``sql`` with the append-only triggers disabled, as someone with table ownership could."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_event DISABLE TRIGGER USER")
        cursor.execute("ALTER TABLE audit_head DISABLE TRIGGER USER")
        cursor.execute(sql, params or [])
        cursor.execute("ALTER TABLE audit_event ENABLE TRIGGER USER")
        cursor.execute("ALTER TABLE audit_head ENABLE TRIGGER USER")


def run_command() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


def test_an_untouched_log_verifies_and_the_check_is_itself_audited():
    build_log()

    code, output = run_command()

    assert code == 0
    assert "OK" in output
    assert "checked 30 events and 2 signed heads" in output
    event = OutboxEvent.objects.get(payload__action="audit.log.verified")
    assert event.payload["outcome"] == "success"
    assert event.payload["metadata"]["events"] == 30


def test_one_changed_column_is_found_as_modified_at_its_seq():
    build_log()

    # when one field of event 17 is changed in its search column only
    rogue("UPDATE audit_event SET action = 'ledger.transaction.voided' WHERE seq = 17")

    code, output = run_command()
    assert code == 1
    assert "FAIL at seq 17: modified" in output
    assert OutboxEvent.objects.get(payload__action="audit.log.verified").payload["outcome"] == "failure"


def test_a_rewritten_canonical_text_is_found_as_modified():
    build_log()
    row = AuditEvent.objects.get(seq=5)
    body = json.loads(row.canonical)
    body["metadata"] = {"n": 999}
    rogue(
        "UPDATE audit_event SET canonical = %s, metadata = %s::jsonb WHERE seq = 5",
        [verifier.canonical(body).decode(), json.dumps(body["metadata"])],
    )

    report = verify_log()

    assert (report.first.seq, report.first.reason) == (5, "modified")


def test_a_deleted_event_is_found_as_missing_at_its_seq():
    build_log()

    rogue("DELETE FROM audit_event WHERE seq = 12")

    report = verify_log()
    assert (report.first.seq, report.first.reason) == (12, "missing")
    code, output = run_command()
    assert code == 1
    assert "FAIL at seq 12: missing" in output


def test_an_inserted_event_is_found_at_its_seq():
    # given a log, into which a rogue DBA slips an event at seq 21 (renumbering the rest) whose own hashes
    # are consistent and which links correctly to seq 20
    build_log()
    prior = AuditEvent.objects.get(seq=20)
    rogue("UPDATE audit_event SET seq = seq + 1000 WHERE seq > 20")
    rogue("UPDATE audit_event SET seq = seq - 999 WHERE seq > 1000")
    forged = {**json.loads(prior.canonical), "seq": 21, "id": "evt_forged", "service_seq": 999}
    data = verifier.canonical(forged)
    rogue(
        "INSERT INTO audit_event (seq, event_id, service, service_seq, occurred_at, recorded_at, actor_type,"
        " actor_id, actor_display, action, outcome, object_type, object_id, request_id, source_ip, user_agent,"
        " changes, metadata, canonical, leaf_hash, hash, prev_hash) SELECT 21, 'evt_forged', service, 999,"
        " occurred_at, recorded_at, actor_type, actor_id, actor_display, action, outcome, object_type, object_id,"
        " request_id, source_ip, user_agent, changes, metadata, %s, %s, %s, %s FROM audit_event WHERE seq = 20",
        [data.decode(), verifier.leaf_hash(data), verifier.chain_hash(data, bytes(prior.hash)), bytes(prior.hash)],
    )

    report = verify_log()

    assert (report.first.seq, report.first.reason) == (21, "inserted")


def test_a_forged_head_in_the_database_is_found():
    build_log()

    rogue("UPDATE audit_head SET root_hash = %s WHERE tree_size = 10", ["00" * 32])

    report = verify_log()
    assert (report.first.seq, report.first.reason) == (10, "forged head")


def test_a_head_forged_in_both_places_fails_its_signature(settings):
    # given a log whose head at 10 is replaced, in the database and in the file, by one signed with another key
    from cryptography.hazmat.primitives.asymmetric import ed25519

    build_log()
    other = ed25519.Ed25519PrivateKey.generate()
    head = next(h for h in heads_file_read() if h["tree_size"] == 10)
    forged = {**head, "timestamp": "2030-01-01T00:00:00.000000Z"}
    import base64

    forged["signature"] = base64.b64encode(other.sign(verifier.head_message(forged))).decode()
    lines = [json.dumps(forged if h["tree_size"] == 10 else h, sort_keys=True) for h in heads_file_read()]
    with open(settings.AUDIT_HEADS_PATH, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    rogue(
        "UPDATE audit_head SET timestamp = %s, signature = %s WHERE tree_size = 10",
        [forged["timestamp"], forged["signature"]],
    )

    report = verify_log()

    assert (report.first.seq, report.first.reason) == (10, "forged head")
    assert "signature" in report.first.detail


def test_a_head_only_in_the_file_is_reported():
    build_log()
    rogue("DELETE FROM audit_head WHERE tree_size = 10")

    report = verify_log()

    assert (report.first.seq, report.first.reason) == (10, "forged head")


def test_service_sequence_gaps_are_reported():
    ingest([make_event("ledger", n) for n in (1, 2, 4, 5)])

    report = verify_log()

    assert report.ok
    assert report.service_gaps == {"ledger": [3]}
    with pytest.raises(CommandError):
        call_command("audit_verify", "--strict-services", stdout=io.StringIO())


def test_the_triggers_refuse_update_delete_and_truncate():
    build_log(3)
    for sql in (
        "UPDATE audit_event SET action = 'x.y' WHERE seq = 1",
        "DELETE FROM audit_event WHERE seq = 1",
        "UPDATE audit_head SET root_hash = 'x'",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
            c.execute(sql)

    def truncate() -> None:
        with transaction.atomic(), connection.cursor() as c:
            c.execute("SET LOCAL atrium.audit_truncate = off")
            c.execute("TRUNCATE audit_event CASCADE")

    with pytest.raises(DatabaseError, match="append-only"):
        truncate()
    assert AuditEvent.objects.count() == 3
