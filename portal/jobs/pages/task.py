"""A task's page in the job dashboard: its timeline, relatives, args, result and traceback, and whether it can be
retried or revoked."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from portal.jobs import selectors
from portal.jobs.models import FINAL_STATES, Job, JobEvent
from portal.jobs.pages.common import duration, tasks_url
from portal.jobs.services import RETRYABLE_STATES
from portal.ui.links import trace_url

CARRIED_SHOWN = 200  # of each kind, on the page (the rest are counted)

# What a timeline event's detail shows, in this order (the rest repeats the task's own columns).
TIMELINE_DETAIL = (
    "reason",
    "exception_type",
    "exception_message",
    "retries",
    "eta",
    "runtime_ms",
    "terminated",
    "expired",
    "result",
)


@dataclass(frozen=True)
class TimelineRow:
    event: JobEvent
    details: list[tuple[str, str]]


@dataclass
class TaskPage:
    job: Job
    timeline: list[TimelineRow]
    relatives: selectors.Relatives
    args: str
    kwargs: str
    result: str
    finished: bool
    retryable: bool
    not_retryable_why: str
    revocable: bool
    audit_url: str
    request_tasks_url: str
    runtime: str
    now: dt.datetime
    carried: selectors.Carried
    trace_url: str  # this task's trace: the job, its request, and every request it carried
    request_trace_url: str


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _pretty_text(text: str) -> str:
    """A stored result: pretty if it is JSON, as it is otherwise."""
    try:
        return pretty(json.loads(text))
    except ValueError:
        return text


def _details(event: JobEvent) -> list[tuple[str, str]]:
    found = []
    detail = event.detail if isinstance(event.detail, dict) else {}
    for key in TIMELINE_DETAIL:
        value = detail.get(key)
        if value in (None, "", False) or (key == "retries" and not value):
            continue
        if key == "runtime_ms":
            value = duration(float(value))
        elif not isinstance(value, str):
            value = json.dumps(value, default=str)
        found.append((key.replace("_", " "), str(value)))
    return found


def audit_events_url(request_id: str) -> str:
    return reverse("admin:audit_auditevent_changelist") + f"?{urlencode({'request_id': request_id})}"


def task_page(*, job: Job, now: dt.datetime | None = None) -> TaskPage:
    """Everything a task's page shows (its timeline, relatives, args, result, traceback)."""
    now = now or timezone.now()
    why = ""
    if job.state not in RETRYABLE_STATES:
        why = f"only failed, revoked or rejected tasks are retried (this one is {job.state})"
    elif job.payload is None:
        why = "its args were too large to keep (or were never seen): run it anew"
    return TaskPage(
        job=job,
        timeline=[TimelineRow(e, _details(e)) for e in selectors.job_timeline(job.task_id)],
        relatives=selectors.job_relatives(job),
        args=pretty(job.args),
        kwargs=pretty(job.kwargs),
        result=_pretty_text(job.result) if job.result else "",
        finished=job.state in FINAL_STATES,
        retryable=not why,
        not_retryable_why=why,
        revocable=job.state not in FINAL_STATES,
        audit_url=audit_events_url(job.request_id) if job.request_id else "",
        request_tasks_url=tasks_url(request_id=job.request_id) if job.request_id else "",
        runtime=duration(job.runtime_ms),
        now=now,
        carried=selectors.job_carried(job, limit=CARRIED_SHOWN),
        trace_url=trace_url(job.task_id),
        request_trace_url=trace_url(job.request_id),
    )
