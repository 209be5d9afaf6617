"""What the job dashboard's pages share: links to the task list and a task, times as the filter form shows them,
durations and ages in words, choices for a select, and the known queues, services and task names."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.urls import reverse
from django.utils.http import urlencode

from portal.jobs import selectors
from portal.jobs.models import JobState
from services.kit.queues import QUEUES

STATES = [s.value for s in JobState]
FORM_TIME = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends and shows (UTC here)


def tasks_url(**params: str) -> str:
    """The task list, filtered by ``params`` (empty ones left out)."""
    query = {k: v for k, v in params.items() if v}
    return reverse("jobs_pages:tasks") + (f"?{urlencode(query)}" if query else "")


def task_url(task_id: str) -> str:
    return reverse("jobs_pages:task", args=[task_id])


def form_time(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime(FORM_TIME) if moment else ""


def duration(ms: float | None) -> str:
    """``840 ms``, ``2.4 s``, ``3 min 5 s`` (empty for None)."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    return f"{minutes} min {seconds} s"


def age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {(seconds % 3600) // 60:.0f} min"


@dataclass(frozen=True)
class Choice:
    value: str
    label: str
    selected: bool
    url: str = ""


def choices(values: list[str], selected: str, every: str) -> list[Choice]:
    if selected and selected not in values:
        values = sorted([*values, selected])
    return [Choice("", every, not selected), *[Choice(v, v, v == selected) for v in values]]


def known_choices() -> tuple[list[str], list[str], list[str]]:
    """Every queue, service and task name seen (one query on the per-name totals) and the configured queues."""
    seen = selectors.job_names_seen()
    services = sorted({s for s, _, _ in seen if s})
    queues = sorted({q for _, q, _ in seen if q} | set(QUEUES))
    names = sorted({n for _, _, n in seen if n})
    return queues, services, names
