"""The periodic schedule with real processes: beat (``celery -A workers beat``, the portal's settings and this
run's test database) sends a periodic task every second from django-celery-beat's database schedule, a portal
worker runs it, the job monitor records each run with its periodic task's name and as housekeeping (the worker
says so from the task's definition). Paused, beat stops sending it — nothing more is recorded — and resumed, it
sends it again. The code's schedule (``workers/beat.py``), paused before beat starts, stays paused through beat's
start-up sync: none of its tasks is sent.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from portal.jobs import selectors, services
from portal.jobs.models import Job, JobState
from tests.harness import AtriumProcess, ProcessHarness, base_env, current_test_database_url, wait_until
from workers.beat import BEAT_SCHEDULE

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NAME = "e2e.ping"
# Beat reads a changed schedule on its next tick; with a 1 s task it ticks every second (at most 5 s,
# beat_max_loop_interval): a send already due may still go out, and its run be recorded, within this.
PAUSE_TAKES_S = 6.0


def _runs() -> list[Job]:
    return list(Job.objects.filter(periodic=NAME).order_by("seen_at"))


def test_beat_sends_from_the_database_schedule_stops_when_paused_and_starts_again_when_resumed(
    harness: ProcessHarness, stream: str
):
    # given the code's schedule synced and paused by an operator, and one task every second added in the admin
    services.schedule_sync(entries=BEAT_SCHEDULE)
    for name in BEAT_SCHEDULE:
        services.periodic_pause(name=name)
    PeriodicTask.objects.create(
        name=NAME, task="portal.ping", kwargs='{"message": "e2e"}',
        interval=IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS),
    )  # fmt: skip
    database = current_test_database_url()
    harness.worker("portal", database_url=database, env={"JOBS_STREAM": stream})
    harness.jobs_monitor(stream)
    beat = AtriumProcess(
        name="beat",
        cmd=[str(Path(sys.executable).parent / "celery"), "-A", "workers", "beat", "-l", "info"],
        env=base_env("portal", database, JOBS_STREAM=stream),
        log_path=harness.log_dir / f"beat-{uuid.uuid4().hex[:6]}.log",
    )
    harness.processes.append(beat)
    beat.start()

    # when beat runs, it sends the task every second; the worker runs it, the monitor records each run
    runs = wait_until(
        lambda: len(r := [j for j in _runs() if j.state == JobState.SUCCEEDED]) >= 3 and r, 45, "three runs"
    )
    assert all((j.name, j.queue, j.housekeeping) == ("portal.ping", "portal", True) for j in runs), runs
    (row,) = [r for r in selectors.schedule_list() if r.task.name == NAME]
    assert row.last_run is not None
    assert row.last_run.seen_at >= runs[-1].seen_at
    assert row.words == "every second"
    # and none of the paused code tasks was sent: the pause survived beat's start-up sync
    assert not Job.objects.filter(periodic__in=list(BEAT_SCHEDULE)).exists()
    assert not PeriodicTask.objects.filter(name__in=list(BEAT_SCHEDULE), enabled=True).exists()

    # when an operator pauses it
    services.periodic_pause(name=NAME)
    paused_at = timezone.now()
    time.sleep(PAUSE_TAKES_S)
    settled = len(_runs())
    time.sleep(5)

    # then beat sends it no more: nothing published after the pause took effect, nothing new recorded
    assert len(_runs()) == settled, [(j.seen_at, j.state) for j in _runs()]
    late = [j for j in _runs() if (j.seen_at - paused_at).total_seconds() > PAUSE_TAKES_S]
    assert late == []
    assert beat.proc is not None
    assert beat.proc.poll() is None

    # and resumed, it is sent again
    services.periodic_resume(name=NAME)
    resumed_at = timezone.now()
    wait_until(
        lambda: any(j.seen_at > resumed_at and j.state == JobState.SUCCEEDED for j in _runs()), 20, "a run after resume"
    )
