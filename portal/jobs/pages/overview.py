"""The job dashboard's overview: throughput and failure charts, queues and workers now, the last hour by queue and
state."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from portal.jobs import selectors
from portal.jobs.models import Job
from portal.jobs.pages.common import STATES, Choice, age, duration, form_time, tasks_url
from portal.ui.charts.timeseries import Series, series_chart_svg
from portal.ui.text import ago

# Chart windows: slot length, number of slots, a time label every so many slots.
CHART_WINDOWS: dict[str, tuple[dt.timedelta, int, int]] = {
    "1h": (dt.timedelta(minutes=1), 60, 10),
    "24h": (dt.timedelta(minutes=15), 96, 8),
}
WINDOW_LABELS = {"1h": "last hour, per minute", "24h": "last day, per 15 minutes"}
QUEUE_AGE_WARNING_SECONDS = 60
CHART_WIDTH, CHART_HEIGHT = 1180, 200  # drawn at the width of the page's module, so text keeps its size


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
        series = [Series(q or "(no queue)", counts[q]) for q in queues]
        if not series:
            series = [Series("no tasks", [0.0] * len(starts), colour="#9e9e9e")]
        return series_chart_svg(
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
            QueueLive(
                q["name"],
                q["depth"],
                age(oldest) if q["depth"] else "",
                level,
                tasks_url(queue=q["name"], housekeeping="1"),
            )
        )
    return rows, ""


def workers_now(*, now: dt.datetime) -> list[WorkerRow]:
    return [
        WorkerRow(
            w["worker"],
            ago(w["worker"].last_heartbeat, now),
            w["in_flight"],
            tasks_url(worker=w["worker"].hostname, housekeeping="1"),
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
        cells = [
            StateCell(s, row["states"][s], tasks_url(queue=queue, state=s, since=since_text, housekeeping="1"))
            for s in STATES
        ]
        for cell in cells:
            totals[cell.state] += cell.count
        by_queue.append(
            QueueStats(
                queue=queue,
                total=row["total"],
                cells=cells,
                runtime_p50=duration(row["runtime_ms_p50"]),
                runtime_p95=duration(row["runtime_ms_p95"]),
                url=tasks_url(queue=queue, since=since_text, housekeeping="1"),
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
        states=[StateCell(s, totals[s], tasks_url(state=s, since=since_text, housekeeping="1")) for s in STATES],
        by_queue=by_queue,
        hour_since=since,
        now=now,
    )
