"""The job dashboard's schedule: every periodic task of django-celery-beat's database schedule, its schedule in
words, queue, last run (the job it sent, as the monitor recorded it) and next run; run-now, pause and resume."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from django.urls import reverse
from django.utils import timezone

from portal.jobs import selectors
from portal.jobs.pages.common import task_url
from portal.ui.text import ago


@dataclass(frozen=True)
class ScheduleRow:
    row: selectors.PeriodicRow
    name: str
    task: str
    words: str
    queue: str
    enabled: bool
    housekeeping: bool | None
    last_url: str  # the last run's task page ("" when none was recorded)
    last_state: str
    last_ago: str
    next_in: str  # "in 12 s", "due now", "paused"
    admin_url: str  # the periodic task in the admin (schedule, args, expiry...)
    run_url: str
    pause_url: str
    resume_url: str


@dataclass
class SchedulePage:
    rows: list[ScheduleRow]
    housekeeping: bool  # shown
    hidden: int  # housekeeping tasks left out
    toggle_url: str
    now: dt.datetime


def _in(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    if seconds <= 1:
        return "due now"
    if seconds < 120:
        return f"in {seconds:.0f} s"
    if seconds < 7200:
        return f"in {seconds // 60:.0f} min"
    return f"in {seconds // 3600:.0f} h {(seconds % 3600) // 60:.0f} min"


def schedule_page(*, params: Mapping[str, str], now: dt.datetime | None = None) -> SchedulePage:
    """Every periodic task by name; ``housekeeping=0`` leaves out those whose runs are housekeeping."""
    now = now or timezone.now()
    shown = params.get("housekeeping", "1") not in ("0", "false", "no", "off")
    every = selectors.schedule_list(now=now)
    rows = []
    for r in every:
        if not shown and r.housekeeping:
            continue
        name = r.task.name
        job = r.last_run
        rows.append(
            ScheduleRow(
                row=r,
                name=name,
                task=r.task.task,
                words=r.words,
                queue=r.queue,
                enabled=r.task.enabled,
                housekeeping=r.housekeeping,
                last_url=task_url(job.task_id) if job else "",
                last_state=job.state if job else "",
                last_ago=ago(job.seen_at, now) if job else "",
                next_in=_in(r.next_run, now) if r.task.enabled else "paused",
                admin_url=reverse("admin:django_celery_beat_periodictask_change", args=[r.task.pk]),
                run_url=reverse("jobs_pages:schedule_run", args=[name]),
                pause_url=reverse("jobs_pages:schedule_pause", args=[name]),
                resume_url=reverse("jobs_pages:schedule_resume", args=[name]),
            )
        )
    return SchedulePage(
        rows=rows,
        housekeeping=shown,
        hidden=len(every) - len(rows),
        toggle_url="?housekeeping=0" if shown else "?",
        now=now,
    )
