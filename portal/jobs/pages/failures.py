"""The job dashboard's failures: failed tasks grouped by exception type and task name, and what a "retry all" of a
group would publish again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from portal.jobs import selectors
from portal.jobs.models import JobState
from portal.jobs.pages.common import Choice, choices, form_time, known_choices, task_url, tasks_url
from portal.jobs.services import retry_max
from portal.ui.text import ago

FAILURE_WINDOWS: dict[str, dt.timedelta | None] = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "all": None,
}


@dataclass(frozen=True)
class FailureGroup:
    exception_type: str
    name: str
    count: int
    last_seen: dt.datetime
    last_seen_ago: str
    example_url: str
    tasks_url: str
    retry_url: str


@dataclass
class FailuresPage:
    window: str
    windows: list[Choice]
    queue: str
    queues: list[Choice]
    groups: list[FailureGroup]
    retry_max: int
    now: dt.datetime

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups)


def window_since(window: str, now: dt.datetime) -> dt.datetime | None:
    span = FAILURE_WINDOWS.get(window)
    return (now - span).replace(second=0, microsecond=0) if span else None


def failures_page(*, params: Mapping[str, str], now: dt.datetime | None = None) -> FailuresPage:
    """Failed tasks in the window (``range``: 1h, 24h, 7d, all; default 24h), optionally of one ``queue``,
    grouped by exception type and task name, the biggest group first."""
    now = now or timezone.now()
    window = params.get("range", "24h")
    window = window if window in FAILURE_WINDOWS else "24h"
    queue = params.get("queue", "")
    since = window_since(window, now)
    since_text = form_time(since)
    groups = []
    for g in selectors.failures_grouped(selectors.TaskFilters(since=since, queue=queue)):
        where = {"exception_type": g["exception_type"], "name": g["name"], "range": window, "queue": queue}
        groups.append(
            FailureGroup(
                exception_type=g["exception_type"],
                name=g["name"],
                count=g["count"],
                last_seen=g["last_seen"],
                last_seen_ago=ago(g["last_seen"], now),
                example_url=task_url(g["example_task_id"]),
                tasks_url=tasks_url(
                    state=JobState.FAILED,
                    exception_type=g["exception_type"],
                    name=g["name"],
                    since=since_text,
                    queue=queue,
                ),
                retry_url=reverse("jobs_pages:failures_retry") + f"?{urlencode({k: v for k, v in where.items() if v})}",
            )
        )
    known, _, _ = known_choices()
    return FailuresPage(
        window=window,
        windows=[
            Choice(w, w, w == window, f"?{urlencode({k: v for k, v in {'range': w, 'queue': queue}.items() if v})}")
            for w in FAILURE_WINDOWS
        ],
        queue=queue,
        queues=choices(known, queue, "every queue"),
        groups=groups,
        retry_max=retry_max(),
        now=now,
    )


@dataclass
class GroupRetry:
    exception_type: str
    name: str
    window: str
    queue: str
    task_ids: list[str]  # what a retry now would publish again (at most retry_max)
    more: bool  # more than retry_max are waiting
    already: int  # failed tasks of the group already re-run from the dashboard (left out), up to retry_max
    retry_max: int


def failure_group_retry(*, params: Mapping[str, str], now: dt.datetime | None = None) -> GroupRetry:
    """The failed tasks of one group (``exception_type`` and ``name``, in ``range`` and ``queue``) that a "retry
    all" would publish again: newest first, at most ``JOBS_RETRY_MAX``, leaving out those already re-run."""
    now = now or timezone.now()
    window = params.get("range", "24h")
    window = window if window in FAILURE_WINDOWS else "24h"
    exception_type, name, queue = params.get("exception_type", ""), params.get("name", ""), params.get("queue", "")
    limit = retry_max()
    ids, already = selectors.failure_group_pending(
        selectors.TaskFilters(state=JobState.FAILED, name=name, queue=queue, since=window_since(window, now)),
        exception_type=exception_type,
        limit=limit,
    )
    return GroupRetry(
        exception_type=exception_type,
        name=name,
        window=window,
        queue=queue,
        task_ids=ids[:limit],
        more=len(ids) > limit,
        already=already,
        retry_max=limit,
    )
