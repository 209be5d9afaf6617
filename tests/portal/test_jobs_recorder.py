"""Recording the tracking stream: each event once (a batch read again counts nothing twice), a task's state from
events in any order, retries, per-minute counts and totals, worker heartbeats, goodbyes and lost workers."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from typing import Any

import pytest
from django.utils import timezone

from portal.jobs.models import DeadLetter, Job, JobEvent, JobMinute, JobTotal, Worker, WorkerStatus
from portal.jobs.monitor import workers_mark_lost
from portal.jobs.recorder import LATENCY_BOUNDS, RUNTIME_BOUNDS, record

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 1, 12, 0, 10, tzinfo=dt.UTC).timestamp()  # 10 s into a minute (in the past)
_seq = itertools.count(1)
TASK = {"task_id": "t-1", "name": "payments.process", "queue": "payments", "service": "payments"}


def _entry(state: str, at: float, **data: Any) -> tuple[bytes, dict[bytes, bytes]]:
    event = {"state": state, "at": at, **data}
    return f"{int(at * 1000)}-{next(_seq)}".encode(), {b"e": json.dumps(event).encode()}


def _life(*, at: float = T0, task: dict[str, Any] = TASK, wait: float = 0.3, runtime_ms: float = 42.0) -> list:
    """A task's whole life: published, received, started after ``wait`` seconds, succeeded."""
    return [
        _entry("queued", at, **task, args=[1], kwargs={}, payload={"args": [1], "kwargs": {}}, retries=0),
        _entry("received", at + 0.1, **task, worker="w1@h"),
        _entry("started", at + wait, **task, worker="w1@h", retries=0),
        _entry("succeeded", at + wait + runtime_ms / 1000, **task, worker="w1@h", runtime_ms=runtime_ms,
               result={"ok": True}),
    ]  # fmt: skip


def test_a_batch_recorded_twice_is_counted_once():
    batch = _life()

    first = record(batch)
    again = record(batch)  # the monitor crashed after the commit, before acknowledging

    assert (first.events, first.new, first.jobs) == (4, 4, 1)
    assert (again.events, again.new, again.jobs) == (4, 0, 0)
    assert JobEvent.objects.count() == 4
    job = Job.objects.get()
    assert (job.state, job.worker, job.result) == ("succeeded", "w1@h", '{"ok": true}')
    (minute,) = JobMinute.objects.all()
    assert (minute.queued, minute.started, minute.succeeded, minute.runtime_count) == (1, 1, 1, 1)
    (total,) = JobTotal.objects.all()
    assert total.succeeded == 1
    assert sum(total.runtime_buckets) == 1
    assert sum(total.latency_buckets) == 1


def test_events_arriving_out_of_order_end_in_the_latest_state_with_every_timestamp():
    queued, received, started, succeeded = _life()

    # the worker's events reach the stream before the publisher's (separate processes, separate buffers)
    record([succeeded])
    record([started, received])
    record([queued])

    job = Job.objects.get()
    assert job.state == "succeeded"
    assert job.seen_at == job.queued_at == dt.datetime.fromtimestamp(T0, tz=dt.UTC)
    assert job.queued_at < job.received_at < job.started_at < job.finished_at
    assert job.args == [1]
    assert job.payload == {"args": [1], "kwargs": {}}
    assert [e.state for e in JobEvent.objects.filter(task_id="t-1")] == ["queued", "received", "started", "succeeded"]


def test_a_task_retried_by_celery_runs_again_under_the_same_id_and_ends_in_its_last_run_state():
    task = {**TASK, "worker": "w1@h"}
    record(
        [
            _entry("queued", T0, **TASK, retries=0),
            _entry("started", T0 + 0.1, **task, retries=0),
            _entry("retried", T0 + 0.2, **task, runtime_ms=100.0, reason="Timeout", exception_type="TimeoutError"),
            _entry("queued", T0 + 0.21, **TASK, retries=1),  # the retry re-publishes the same task id
        ]
    )
    assert Job.objects.get().state == "queued"

    record([_entry("started", T0 + 5, **task, retries=1), _entry("failed", T0 + 5.5, **task, runtime_ms=500.0,
            exception_type="TimeoutError", exception_message="again", traceback="Traceback ...")])  # fmt: skip

    job = Job.objects.get()
    assert (job.state, job.retries, job.exception_type, job.runtime_ms) == ("failed", 1, "TimeoutError", 500.0)
    total = JobTotal.objects.get()
    assert (total.retried, total.failed, total.succeeded) == (1, 1, 0)
    assert sum(total.runtime_buckets) == 2  # both runs
    assert sum(total.latency_buckets) == 1  # the wait of the first run only


def test_a_failed_task_seen_again_by_a_late_started_event_keeps_its_final_state():
    record([_entry("queued", T0, **TASK), _entry("failed", T0 + 2, **TASK, exception_type="E")])

    record([_entry("started", T0 + 1, **TASK, worker="w1@h", retries=0)])  # older than the failure

    assert Job.objects.get().state == "failed"


def test_a_retry_from_the_dashboard_is_a_new_task_linked_to_the_original():
    record(_life())

    record([_entry("queued", T0 + 60, **{**TASK, "task_id": "t-2"}, retry_of="t-1")])

    assert Job.objects.get(task_id="t-2").retry_of == "t-1"


def test_minutes_and_totals_count_each_state_and_put_runtimes_and_waits_in_their_buckets():
    other = {**TASK, "task_id": "t-2"}
    record([*_life(wait=0.3, runtime_ms=42.0), *_life(at=T0 + 60, task=other, wait=2.0, runtime_ms=7000.0)])

    minutes = {m.minute: m for m in JobMinute.objects.all()}
    assert len(minutes) == 2
    first = minutes[dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)]
    assert (first.queued, first.started, first.succeeded, first.failed) == (1, 1, 1, 0)
    assert first.runtime_ms_total == 42.0
    total = JobTotal.objects.get()
    assert (total.service, total.queue, total.name, total.succeeded) == ("payments", "payments", "payments.process", 2)
    assert len(total.runtime_buckets) == len(RUNTIME_BOUNDS) + 1
    assert total.runtime_buckets[RUNTIME_BOUNDS.index(0.05)] == 1  # 42 ms ≤ 50 ms
    assert total.runtime_buckets[RUNTIME_BOUNDS.index(10.0)] == 1  # 7 s ≤ 10 s
    assert total.runtime_seconds_sum == pytest.approx(7.042)
    assert total.latency_buckets[LATENCY_BOUNDS.index(0.5)] == 1  # waited 0.3 s
    assert total.latency_buckets[LATENCY_BOUNDS.index(2.5)] == 1  # waited 2 s
    assert total.latency_seconds_sum == pytest.approx(2.3)


def test_worker_heartbeats_keep_the_latest_and_a_goodbye_marks_it_offline():
    beat = {"worker": "w1@h", "service": "portal", "queues": ["portal"], "pool": "prefork", "concurrency": 2}
    record([_entry("worker-heartbeat", T0, **beat, active=1, processed=10)])
    record([_entry("worker-heartbeat", T0 - 5, **beat, active=9, processed=1)])  # late: older than what we have

    worker = Worker.objects.get()
    assert (worker.status, worker.active, worker.processed, worker.queues) == ("online", 1, 10, ["portal"])

    record([_entry("worker-offline", T0 + 5, **beat)])

    worker.refresh_from_db()
    assert worker.status == WorkerStatus.OFFLINE
    assert worker.stopped_at == dt.datetime.fromtimestamp(T0 + 5, tz=dt.UTC)


def test_workers_silent_for_three_heartbeats_are_marked_lost(settings):
    settings.JOBS_WORKER_HEARTBEAT_SECONDS = 5
    now = timezone.now()
    Worker.objects.create(hostname="alive@h", last_heartbeat=now - dt.timedelta(seconds=10))
    Worker.objects.create(hostname="silent@h", last_heartbeat=now - dt.timedelta(seconds=16))
    Worker.objects.create(hostname="gone@h", last_heartbeat=now - dt.timedelta(hours=1), status=WorkerStatus.OFFLINE)

    assert workers_mark_lost(now=now) == 1

    assert dict(Worker.objects.values_list("hostname", "status")) == {
        "alive@h": "online",
        "silent@h": "lost",
        "gone@h": "offline",
    }


def test_entries_that_are_not_events_are_parked_not_recorded():
    result = record([(b"1-1", {b"e": b"not json"}), (b"1-2", {b"x": b"{}"}), (b"1-3", {b"e": b'{"no": "state"}'})])

    assert (result.events, result.new, result.parked) == (0, 0, 3)
    assert not Job.objects.exists()
    assert sorted(DeadLetter.objects.values_list("stream_id", flat=True)) == ["1-1", "1-2", "1-3"]


def test_a_batch_entry_is_recorded_once_even_when_read_twice():
    at = time.time()
    events = [
        {"state": "queued", "task_id": "batch-1", "name": "ledger.probe", "queue": "ledger", "at": at},
        {"state": "started", "task_id": "batch-1", "worker": "ledger@h", "at": at + 0.01},
        {"state": "succeeded", "task_id": "batch-1", "runtime_ms": 3.0, "at": at + 0.02},
    ]
    entry = (b"1700000000000-7", {b"b": json.dumps(events).encode()})

    first = record([entry])
    again = record([entry])

    assert (first.events, first.new) == (3, 3)
    assert (again.events, again.new) == (3, 0)
    job = Job.objects.get(task_id="batch-1")
    assert (job.state, job.queue, job.worker) == ("succeeded", "ledger", "ledger@h")
    keys = sorted(JobEvent.objects.filter(task_id="batch-1").values_list("stream_id", flat=True))
    assert keys == ["1700000000000-7/0", "1700000000000-7/1", "1700000000000-7/2"]


def test_a_task_finished_before_its_publisher_reported_it_still_ends_succeeded():
    # given a worker that received, ran and finished the task, recorded before the publisher's event arrived
    at = time.time()
    record(
        [
            _entry("received", at + 0.001, task_id="fast", name="ledger.noop", queue="ledger"),
            _entry("started", at + 0.002, task_id="fast"),
            _entry("succeeded", at + 0.003, task_id="fast", runtime_ms=0.1),
        ]
    )
    # when the publisher's "queued" arrives last — even stamped later than the rest (another host's clock)
    record([_entry("queued", at + 0.01, task_id="fast", name="ledger.noop", queue="ledger")])

    # then the job is succeeded, and was queued
    job = Job.objects.get(task_id="fast")
    assert job.state == "succeeded"
    assert job.queued_at is not None
