"""What the job dashboard's pages show: the overview (charts, queues, workers, the last hour by state), the task
list (filters, keyset pages both ways), a task's page, and failures grouped (the views only render these; the
templates only lay them out).

Every read goes through :mod:`portal.jobs.selectors`; what is here is only what the pages need on top: the
query string ↔ :class:`~portal.jobs.selectors.TaskFilters`, a keyset page *before* a cursor (the "newer" link,
the same index read backwards), the chart slots, and the known task names (from the per-name totals, a small
table, never ``DISTINCT`` over the jobs). No page counts the jobs table: a list shows "more", not a total.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from portal.catalog import svg
from portal.catalog.pages import ago
from portal.jobs import selectors
from portal.jobs.models import FINAL_STATES, Job, JobEvent, JobState, JobTotal
from portal.jobs.services import RETRYABLE_STATES, retry_max
from services.kit.timestamps import timestamp_parse

PAGE_SIZE = 50
STATES = [s.value for s in JobState]
# Chart windows: slot length, number of slots, a time label every so many slots.
CHART_WINDOWS: dict[str, tuple[dt.timedelta, int, int]] = {
    "1h": (dt.timedelta(minutes=1), 60, 10),
    "24h": (dt.timedelta(minutes=15), 96, 8),
}
WINDOW_LABELS = {"1h": "last hour, per minute", "24h": "last day, per 15 minutes"}
FAILURE_WINDOWS: dict[str, dt.timedelta | None] = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "all": None,
}
FORM_TIME = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends and shows (UTC here)
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
QUEUE_AGE_WARNING_SECONDS = 60
CHART_WIDTH, CHART_HEIGHT = 1180, 200  # drawn at the width of the page's module, so text keeps its size


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


# ------------------------------------------------------------------------------------------- overview


@dataclass(frozen=True)
class StateCell:
    state: str
    count: int
    url: str


@dataclass
class QueueStats:
    queue: str
    total: int
    cells: list[StateCell]
    runtime_p50: str
    runtime_p95: str
    url: str


@dataclass(frozen=True)
class QueueLive:
    name: str
    depth: int | None
    oldest_age: str
    level: str  # "ok", "waiting" (something is old), "unknown"
    url: str


@dataclass
class WorkerRow:
    worker: Any  # portal.jobs.models.Worker
    heartbeat_ago: str
    in_flight: list[Job]
    tasks_url: str

    @property
    def status(self) -> str:
        return str(self.worker.status)


@dataclass
class OverviewPage:
    window: str
    windows: list[Choice]
    window_label: str
    throughput_chart: SafeString
    failures_chart: SafeString
    charted: bool  # any task counted in the window
    queues: list[QueueLive]
    queues_error: str
    workers: list[WorkerRow]
    states: list[StateCell]  # the last hour, every queue
    by_queue: list[QueueStats]
    hour_since: dt.datetime
    now: dt.datetime
    tasks_url: str = field(default_factory=lambda: tasks_url())


def _slots(window: str, now: dt.datetime) -> tuple[list[dt.datetime], dt.datetime, dt.timedelta, int]:
    width, count, label_every = CHART_WINDOWS[window]
    seconds = width.total_seconds()
    # the same epoch-aligned buckets as selectors.throughput; the slot holding "now" is the last
    end = dt.datetime.fromtimestamp((math.floor(now.timestamp() / seconds) + 1) * seconds, tz=dt.UTC)
    start = end - count * width
    return [start + i * width for i in range(count)], end, width, label_every


def charts(*, window: str, now: dt.datetime) -> tuple[SafeString, SafeString, bool]:
    """Succeeded and failed tasks per slot, a line per queue (from the per-minute counts: one query)."""
    starts, end, width, label_every = _slots(window, now)
    rows = selectors.throughput(since=starts[0], until=end, bucket_minutes=int(width.total_seconds() // 60))
    queues = sorted({r["queue"] for r in rows})
    index = {s: i for i, s in enumerate(starts)}
    succeeded = {q: [0.0] * len(starts) for q in queues}
    failed = {q: [0.0] * len(starts) for q in queues}
    for r in rows:
        i = index.get(r["bucket"].astimezone(dt.UTC))
        if i is None:
            continue
        succeeded[r["queue"]][i] += r["succeeded"]
        failed[r["queue"]][i] += r["failed"]
    per = "minute" if width == dt.timedelta(minutes=1) else "15 minutes"
    span = WINDOW_LABELS[window]

    def chart(counts: dict[str, list[float]], chart_id: str, what: str) -> SafeString:
        series = [svg.Series(q or "(no queue)", counts[q]) for q in queues]
        if not series:
            series = [svg.Series("no tasks", [0.0] * len(starts), colour="#9e9e9e")]
        return svg.series_chart_svg(
            starts,
            end,
            series,
            chart_id=chart_id,
            title=f"Tasks {what} per {per}, by queue ({span})",
            label_every=label_every,
            width=CHART_WIDTH,
            height=CHART_HEIGHT,
        )

    return (
        chart(succeeded, "jobs-throughput-chart", "succeeded"),
        chart(failed, "jobs-failures-chart", "failed"),
        bool(rows),
    )


def queues_now() -> tuple[list[QueueLive], str]:
    """Every queue's depth and oldest message's age, from the broker now; and what went wrong, if it did."""
    try:
        found = selectors.queues_live()
    except Exception as exc:  # the broker away must not take the page down with it
        return [], f"The broker did not answer ({type(exc).__name__}): queue depths are unknown."
    rows = []
    for q in found:
        oldest = q["oldest_age_seconds"]
        level = "unknown" if q["depth"] is None else "waiting" if (oldest or 0) >= QUEUE_AGE_WARNING_SECONDS else "ok"
        rows.append(
            QueueLive(q["name"], q["depth"], age(oldest) if q["depth"] else "", level, tasks_url(queue=q["name"]))
        )
    return rows, ""


def workers_now(*, now: dt.datetime) -> list[WorkerRow]:
    return [
        WorkerRow(
            w["worker"], ago(w["worker"].last_heartbeat, now), w["in_flight"], tasks_url(worker=w["worker"].hostname)
        )
        for w in selectors.workers_list()
    ]


def overview_page(*, window: str = "1h", now: dt.datetime | None = None) -> OverviewPage:
    """Charts over ``window`` (``1h`` or ``24h``), queues and workers now, and the last hour by queue and state."""
    now = now or timezone.now()
    window = window if window in CHART_WINDOWS else "1h"
    throughput_chart, failures_chart, charted = charts(window=window, now=now)
    queues, queues_error = queues_now()
    since = (now - dt.timedelta(hours=1)).replace(second=0, microsecond=0)
    since_text = form_time(since)
    by_queue, totals = [], dict.fromkeys(STATES, 0)
    for row in selectors.task_stats(since=since, group_by="queue"):
        queue = row["queue"]
        cells = [StateCell(s, row["states"][s], tasks_url(queue=queue, state=s, since=since_text)) for s in STATES]
        for cell in cells:
            totals[cell.state] += cell.count
        by_queue.append(
            QueueStats(
                queue=queue,
                total=row["total"],
                cells=cells,
                runtime_p50=duration(row["runtime_ms_p50"]),
                runtime_p95=duration(row["runtime_ms_p95"]),
                url=tasks_url(queue=queue, since=since_text),
            )
        )
    return OverviewPage(
        window=window,
        windows=[Choice(w, WINDOW_LABELS[w], w == window, f"?{urlencode({'range': w})}") for w in CHART_WINDOWS],
        window_label=WINDOW_LABELS[window],
        throughput_chart=throughput_chart,
        failures_chart=failures_chart,
        charted=charted,
        queues=queues,
        queues_error=queues_error,
        workers=workers_now(now=now),
        states=[StateCell(s, totals[s], tasks_url(state=s, since=since_text)) for s in STATES],
        by_queue=by_queue,
        hour_since=since,
        now=now,
    )


# ------------------------------------------------------------------------------------------ task list


@dataclass(frozen=True)
class TaskRow:
    job: Job
    url: str
    seen_ago: str
    runtime: str


@dataclass
class TaskListPage:
    filters: selectors.TaskFilters
    form: dict[str, str]  # the form's current values
    errors: list[str]
    states: list[Choice]
    queues: list[Choice]
    services: list[Choice]
    names: list[Choice]
    rows: list[TaskRow]
    older_url: str  # the next page (older tasks), empty at the end
    newer_url: str  # the page before (newer tasks), empty on the first page
    newest_url: str
    first_page: bool
    filtered: bool
    now: dt.datetime


FILTER_KEYS = ("state", "queue", "service", "name", "since", "until", "request_id", "q", "exception_type", "worker")


def task_filters(params: Mapping[str, str]) -> tuple[selectors.TaskFilters, list[str]]:
    """The list's filters from a query string, and what was wrong with it (a wrong value is left out)."""
    errors = []
    values: dict[str, Any] = {k: params.get(k, "").strip() for k in FILTER_KEYS}
    if values["state"] and values["state"] not in STATES:
        errors.append(f"Unknown state {values['state']!r}: showing every state.")
        values["state"] = ""
    for key in ("since", "until"):
        if values[key]:
            try:
                values[key] = timestamp_parse(values[key])  # (``datetime-local`` sends no zone: UTC)
            except ValueError:
                errors.append(f"{key.title()} {values[key]!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC).")
                values[key] = None
        else:
            values[key] = None
    return selectors.TaskFilters(**values), errors


def known_choices() -> tuple[list[str], list[str], list[str]]:
    """Every queue, service and task name seen (one query on the per-name totals) and the configured queues."""
    from workers.routing import QUEUES

    seen = list(JobTotal.objects.order_by().values_list("service", "queue", "name").distinct())
    services = sorted({s for s, _, _ in seen if s})
    queues = sorted({q for _, q, _ in seen if q} | set(QUEUES))
    names = sorted({n for _, _, n in seen if n})
    return queues, services, names


def _choices(values: list[str], selected: str, every: str) -> list[Choice]:
    if selected and selected not in values:
        values = sorted([*values, selected])
    return [Choice("", every, not selected), *[Choice(v, v, v == selected) for v in values]]


def task_list_page(*, params: Mapping[str, str], now: dt.datetime | None = None) -> TaskListPage:
    """A page of tasks, newest first: the first one, the one ``after`` a cursor (older) or ``before`` one
    (newer). Raises :class:`~services.kit.pagination.InvalidCursor` for a cursor it did not give out."""
    now = now or timezone.now()
    filters, errors = task_filters(params)
    qs = selectors.jobs_filter(filters)
    after, before = params.get("after", ""), params.get("before", "")
    keep = filters.as_query()
    for key in ("since", "until"):  # as the form shows them
        if key in keep:
            keep[key] = form_time(getattr(filters, key))
    found = selectors.jobs_page(qs, cursor=after or before or None, limit=PAGE_SIZE)
    if before and not after and found.previous is None:
        before = ""  # nothing newer: this is the first page
        found = selectors.jobs_page(qs, limit=PAGE_SIZE)
    rows, older_cursor, newer_cursor = found.rows, found.next, found.previous
    first_page = not after and not before
    queues, services, names = known_choices()
    form = {k: keep.get(k, "") for k in FILTER_KEYS}
    return TaskListPage(
        filters=filters,
        form=form,
        errors=errors,
        states=_choices(STATES, filters.state, "every state"),
        queues=_choices(queues, filters.queue, "every queue"),
        services=_choices(services, filters.service, "every service"),
        names=_choices(names, filters.name, "every task"),
        rows=[TaskRow(j, task_url(j.task_id), ago(j.seen_at, now), duration(j.runtime_ms)) for j in rows],
        older_url=f"?{urlencode({**keep, 'after': older_cursor})}" if older_cursor else "",
        newer_url=f"?{urlencode({**keep, 'before': newer_cursor})}" if newer_cursor else "",
        newest_url=f"?{urlencode(keep)}" if keep else "?",
        first_page=first_page,
        filtered=bool(keep),
        now=now,
    )


# ------------------------------------------------------------------------------------------ task page


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
    )


# ------------------------------------------------------------------------------------------- failures


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
        queues=_choices(known, queue, "every queue"),
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
    failed = selectors.jobs_filter(
        selectors.TaskFilters(state=JobState.FAILED, name=name, queue=queue, since=window_since(window, now))
    ).filter(exception_type=exception_type)  # also when it is "" (jobs_filter skips empty values)
    rerun = Exists(Job.objects.filter(retry_of=OuterRef("task_id")))
    ids = list(failed.filter(~rerun).values_list("task_id", flat=True)[: limit + 1])
    already = failed.filter(rerun)[:limit].count()
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
