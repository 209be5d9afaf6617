"""Job dashboard retention (the hourly ``portal.jobs_prune``): old tasks, events, minute counts and departed
workers go, in batches of their own transactions and within a time budget; recent rows and the totals stay."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.jobs.models import Job, JobEvent, JobMinute, JobState, JobTotal, Worker, WorkerStatus
from portal.jobs.retention import jobs_prune
from workers.beat import BEAT_SCHEDULE

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)


def _job(task_id: str, age: dt.timedelta, now: dt.datetime) -> Job:
    seen = now - age
    JobEvent.objects.create(stream_id=f"{task_id}-e", task_id=task_id, state="queued", at=seen)
    return Job.objects.create(task_id=task_id, name="portal.ping", state=JobState.SUCCEEDED, seen_at=seen,
                              last_event_at=seen)  # fmt: skip


def _minute(age: dt.timedelta, now: dt.datetime) -> JobMinute:
    return JobMinute.objects.create(minute=(now - age).replace(second=0, microsecond=0), name="portal.ping")


def test_rows_past_their_retention_go_and_recent_rows_and_totals_stay(settings):
    settings.JOBS_RETENTION_DAYS, settings.JOBS_AGGREGATE_DAYS = 30, 400
    now = timezone.now()
    _job("old", 31 * DAY, now)
    _job("recent", 29 * DAY, now)
    _minute(401 * DAY, now)
    kept_minute = _minute(31 * DAY, now)  # chart counts outlive the tasks
    JobTotal.objects.create(name="portal.ping", succeeded=10)
    Worker.objects.create(hostname="gone@h", last_heartbeat=now - 31 * DAY, status=WorkerStatus.OFFLINE)
    Worker.objects.create(hostname="lost@h", last_heartbeat=now - 31 * DAY, status=WorkerStatus.LOST)
    Worker.objects.create(hostname="idle@h", last_heartbeat=now - 31 * DAY)  # online: the monitor decides, not us
    Worker.objects.create(hostname="left@h", last_heartbeat=now - DAY, status=WorkerStatus.OFFLINE)

    result = jobs_prune(now=now)

    assert result == {"jobs": 1, "events": 1, "links": 0, "minutes": 1, "workers": 2, "complete": True}
    assert list(Job.objects.values_list("task_id", flat=True)) == ["recent"]
    assert list(JobEvent.objects.values_list("task_id", flat=True)) == ["recent"]
    assert list(JobMinute.objects.all()) == [kept_minute]
    assert JobTotal.objects.get().succeeded == 10
    assert set(Worker.objects.values_list("hostname", flat=True)) == {"idle@h", "left@h"}
    assert jobs_prune(now=now) == {"jobs": 0, "events": 0, "links": 0, "minutes": 0, "workers": 0, "complete": True}


def test_rows_are_deleted_in_batches_each_its_own_transaction(settings):
    settings.JOBS_PRUNE_BATCH = 2
    now = timezone.now()
    for index in range(5):
        _job(f"old-{index}", 40 * DAY, now)

    with CaptureQueriesContext(connection) as queries:
        result = jobs_prune(now=now)

    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().startswith("DELETE FROM jobs_job")]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert all("LIMIT 2" in sql for sql in deletes)
    savepoints = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) >= 3 + 3  # one per batch (a savepoint inside the test's own transaction)
    assert (result["jobs"], result["events"]) == (5, 5)
    assert not Job.objects.exists()


def test_a_run_out_of_time_stops_and_the_next_carries_on(settings):
    now = timezone.now()
    _job("old", 40 * DAY, now)
    settings.JOBS_PRUNE_SECONDS = 0

    stopped = jobs_prune(now=now)

    assert stopped["complete"] is False
    assert Job.objects.count() == 1
    settings.JOBS_PRUNE_SECONDS = 60
    assert jobs_prune(now=now)["jobs"] == 1


def test_the_prune_task_runs_hourly_from_beat_and_the_defaults_are_the_documented_ones():
    from workers.celery import app
    from workers.portal import jobs_prune as task

    assert BEAT_SCHEDULE["portal.jobs_prune"] == {"task": "portal.jobs_prune", "schedule": 3600.0}
    assert app.tasks["portal.jobs_prune"].name == task.name == "portal.jobs_prune"
    assert (django_settings.JOBS_RETENTION_DAYS, django_settings.JOBS_AGGREGATE_DAYS) == (30, 400)
    assert (django_settings.JOBS_PRUNE_BATCH, django_settings.JOBS_RETRY_MAX) == (5_000, 500)
    assert django_settings.JOBS_PRUNE_SECONDS < django_settings.CELERY_TASK_SOFT_TIME_LIMIT


def test_the_prune_task_prunes():
    from workers.portal import jobs_prune as task

    _job("old", 40 * DAY, timezone.now())

    result = task.apply().get()

    assert result["jobs"] == 1
    assert not Job.objects.exists()
