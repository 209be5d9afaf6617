"""Hostile tests, one per hardening rule, against real processes (slow: `make test` runs them in CI).

Each rule is proved with more than one case, and with cases other than the ones that revealed it: several
kinds of poisoned item, several spellings of an inside address, several kinds of malformed body.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


# ----------------------------------------------------------------------------------------------------------
# 1. Poison isolation: one item never stops a batch


# 1b. audit ingest and the job monitor (helpers: tests/e2e/hostile_audit_jobs.py)


def test_poisoned_audit_events_are_parked_in_place_and_every_good_one_is_chained(harness, live_portal, tmp_path):
    import time

    import httpx

    from portal.jobs.models import Job
    from tests.e2e import hostile_audit_jobs as h
    from tests.harness import current_test_database_url, wait_until
    from workers.celery import app

    heads = str(tmp_path / "heads.jsonl")
    with app.connection_for_write() as conn:  # no stale batches other tests' relays left on the shared broker
        conn.default_channel.queue_purge("audit")
    with h.tracking_stream() as stream, h.refusing_database():
        # given a portal audit worker and a job monitor on this test's database, and the ledger's outbox relay
        env = {"AUDIT_HEADS_PATH": heads, "JOBS_STREAM": stream}
        harness.worker("audit", database_url=current_test_database_url(), env=env)
        h.tracking_monitor(harness, stream)
        ledger_db = harness.service_database("ledger")
        h.ledger_relay(harness, ledger_db)

        # when the ledger commits 200 audit events, seven poisoned, together (relayed as one batch), and a hostile
        # publisher sends the audit queue a batch of its own: values no outbox could hold, among good events
        began = time.monotonic()
        h.outbox_fill(ledger_db, 200)
        intruder, poisoned = h.intruder_batch()
        app.send_task("audit.ingest", args=[intruder])

        # then every place is taken, in the usual time: 193 + 2 good events chained, 7 + 5 parked in place
        chained = wait_until(lambda: len(p := h.places()) >= 207 and p, 60, "every audit event in its place")
        assert time.monotonic() - began < 30
        assert len(chained) == 207
        parked = {place for place, action in chained.items() if action == "audit.event.parked"}
        assert parked == {("ledger", n) for n in h.OUTBOX_POISON} | {("intruder", n) for n in poisoned}
        ((refused,),) = h.sql(
            current_test_database_url(),
            "SELECT metadata FROM audit_event WHERE service = 'ledger' AND service_seq = 177",
        )
        assert refused["attempts"] == 3  # isolated by splitting, tried three times, then parked
        assert "hostile_refused" in refused["reason"]
        # and the chain verifies, every service's sequence complete
        verified, _ = h.audit_verify(heads, "--strict-services")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.strip().endswith("OK")
        # and the parks are visible: failed audit.ingest tasks among the dashboard's failures, counted on /metrics
        failures = wait_until(
            lambda: list(Job.objects.filter(name="audit.ingest", state="failed", exception_type="AuditEventsParked")),
            30,
            "the parks among the dashboard's failures",
        )
        assert any("7 event(s) parked" in job.exception_message for job in failures)
        assert not any("UnpickleableExceptionWrapper" in job.exception_message + job.traceback for job in failures)
        metrics = httpx.get(f"{live_portal.url}/metrics", timeout=10).text
        assert 'atrium_audit_events_parked_total{service="ledger"} 7.0' in metrics
        assert 'atrium_audit_events_parked_total{service="intruder"} 5.0' in metrics


def test_poisoned_tracking_entries_are_parked_and_the_live_monitor_records_every_good_task(harness, live_portal):
    import time

    import httpx
    import redis
    from django.conf import settings

    from portal.jobs.models import DeadLetter, Job, JobState
    from tests.e2e import hostile_audit_jobs as h
    from tests.harness import wait_until
    from workers.celery import app

    with h.tracking_stream() as stream, h.refusing_database():
        # given a ledger worker whose tracking feeds a live job monitor
        harness.worker("ledger", env={"JOBS_STREAM": stream})
        monitor = h.tracking_monitor(harness, stream)
        client = redis.Redis.from_url(settings.REDIS_URL)

        # when 30 tasks run while a buggy or hostile producer writes nine kinds of poison to the same stream
        poison = h.tracking_poison(time.time())
        ids = []
        for n in range(30):
            ids.append(app.send_task("ledger.probe").id)
            if n % 3 == 0 and poison:
                client.xadd(stream, poison.pop(0))

        # then every task is recorded in its final state, in the usual time
        wait_until(
            lambda: Job.objects.filter(task_id__in=ids, state=JobState.SUCCEEDED).count() == 30,
            60,
            "every probe recorded as succeeded",
        )
        # and each poisoned item is parked (kept, with why), acknowledged and counted; the monitor goes on
        parked = wait_until(lambda: len(found := list(DeadLetter.objects.all())) >= 9 and found, 30, "nine parks")
        assert len(parked) == 9
        assert any("hostile_refused" in p.reason and p.attempts == 3 for p in parked)
        wait_until(lambda: client.xpending(stream, "jobs-monitor")["pending"] == 0, 10, "every entry acknowledged")
        assert monitor.proc is not None
        assert monitor.proc.poll() is None
        assert not Job.objects.filter(task_id__in=[f"p{n}" for n in range(1, 7)]).exists()
        metrics = httpx.get(f"{live_portal.url}/metrics", timeout=10).text
        assert "atrium_jobs_monitor_parked_total 9.0" in metrics


# ----------------------------------------------------------------------------------------------------------
# 2. Identity: revocation and least privilege


# ----------------------------------------------------------------------------------------------------------
# 3. SSRF: one outbound-request guard in the kit


# ----------------------------------------------------------------------------------------------------------
# 4. The audit verifier cannot be stalled
# (helpers: tests/e2e/hostile_audit_jobs.py; every kind is also a unit test in tests/audit/test_verify_bounds.py)

FORGED_ROWS = [
    "seq-and-service-seq-999999999",
    "service-seq-2^62",
    "seq-negative",
    "occurred-far-future",
    "recorded-far-future",
    "over-1MiB",
    "gap",
]


@pytest.mark.parametrize("kind", FORGED_ROWS)
def test_a_forged_row_is_reported_at_its_seq_by_the_command_within_seconds(kind, settings, tmp_path):
    import json

    from tests.audit.test_verify import build_log
    from tests.e2e import hostile_audit_jobs as h

    # given a signed log of 30 events in a real database, and a rogue DBA's forgery (triggers disabled)
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"
    build_log()
    forge, reasons = h.FORGERIES[kind]
    seq = forge()

    # when manage.py audit_verify runs in its own process, bounded by a timeout (a stall fails, never hangs)
    done, seconds = h.audit_verify(settings.AUDIT_HEADS_PATH, "--json", timeout=60)

    # then it fails within seconds, its first problem at the forged row's seq, with a reason that fits
    assert done.returncode == 1, done.stdout + done.stderr
    first = json.loads(done.stdout.strip().splitlines()[-1])["first_problem"]
    assert first["seq"] == seq, first
    assert first["reason"] in reasons, first
    assert seconds < 30


# ----------------------------------------------------------------------------------------------------------
# 5. Bounded input, the same in every service


# ----------------------------------------------------------------------------------------------------------
# 6. Throttled logins


# ----------------------------------------------------------------------------------------------------------
# 7. The dev runner keeps going when one process dies


# ----------------------------------------------------------------------------------------------------------
# 8. Fuzzing: see tests/e2e/test_fuzz.py
