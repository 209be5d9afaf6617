"""Reads behind the job dashboard's API and pages: filtered task lists with keyset pages, a task's timeline and
relatives, failures grouped by exception, throughput and runtime statistics, live queues and workers.

Lists are ordered newest first by ``(seen_at, id)`` and paged by keyset (``after`` the last row's cursor), never
by offset, so a page costs the same at the millionth row as at the first; each filter has an index that leads
with its column and continues with the order.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from portal.jobs import queries
from portal.jobs.models import Job, JobEvent, JobMinute, JobState, JobTotal, Worker, WorkerStatus
from services.kit.errors import DomainError

PAGE_SIZE_MAX = 200


class InvalidCursor(DomainError):
    code = "invalid_cursor"
    status = 400
    title = "Invalid cursor"


@dataclass(frozen=True)
class TaskFilters:
    """What a task list can be narrowed by (all optional, combined with AND)."""

    state: str = ""
    queue: str = ""
    service: str = ""
    name: str = ""
    since: dt.datetime | None = None  # seen at or after
    until: dt.datetime | None = None  # seen before
    request_id: str = ""
    q: str = ""  # a task id, or its beginning
    exception_type: str = ""
    worker: str = ""

    def as_query(self) -> dict[str, str]:
        """The filters as query-string parameters (for links that keep them)."""
        out = {}
        for key, value in self.__dict__.items():
            if value:
                out[key] = value.isoformat() if isinstance(value, dt.datetime) else str(value)
        return out


def jobs_filter(filters: TaskFilters) -> QuerySet[Job]:
    qs = Job.objects.all()
    if filters.state:
        qs = qs.filter(state=filters.state)
    if filters.queue:
        qs = qs.filter(queue=filters.queue)
    if filters.service:
        qs = qs.filter(service=filters.service)
    if filters.name:
        qs = qs.filter(name=filters.name)
    if filters.since:
        qs = qs.filter(seen_at__gte=filters.since)
    if filters.until:
        qs = qs.filter(seen_at__lt=filters.until)
    if filters.request_id:
        qs = qs.filter(request_id=filters.request_id)
    if filters.q:
        qs = qs.filter(task_id__startswith=filters.q.strip().lower())
    if filters.exception_type:
        qs = qs.filter(exception_type=filters.exception_type)
    if filters.worker:
        qs = qs.filter(worker=filters.worker)
    return qs.order_by("-seen_at", "-id")


def cursor_encode(job: Job) -> str:
    raw = json.dumps([job.seen_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSOR_MAX_CHARS = 200
_PK_MAX = 2**63 - 1


def cursor_decode(cursor: str) -> tuple[dt.datetime, int]:
    """The ``(seen_at, id)`` a cursor from :func:`cursor_encode` holds; :class:`InvalidCursor` for anything else
    (also a naive time or an id out of range, which the query would otherwise fail on)."""
    try:
        if len(cursor) > CURSOR_MAX_CHARS:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        seen_at, pk = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when, pk = dt.datetime.fromisoformat(seen_at), int(pk)
        if when.tzinfo is None or not 0 < pk <= _PK_MAX:
            raise ValueError("naive time or id out of range")
        return when, pk
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidCursor("The cursor is not one this list gave out.") from exc


def jobs_page(qs: QuerySet[Job], *, after: str | None = None, limit: int = 50) -> tuple[list[Job], str | None]:
    """One page of ``qs`` (ordered newest first) after the cursor ``after``; and the next page's cursor (None at
    the end). Tracebacks, args and payloads are left out (a list does not show them)."""
    limit = max(1, min(limit, PAGE_SIZE_MAX))
    if after:
        seen_at, pk = cursor_decode(after)
        qs = qs.filter(Q(seen_at__lt=seen_at) | Q(seen_at=seen_at, id__lt=pk))
    rows = list(qs.defer("traceback", "payload", "args", "kwargs", "result")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (cursor_encode(rows[-1]) if more and rows else None)


def jobs_page_before(qs: QuerySet[Job], *, before: str, limit: int) -> tuple[list[Job], bool]:
    """The page of ``qs`` just newer than the cursor ``before`` (newest first), and whether newer ones remain.

    The same keyset as :func:`~portal.jobs.selectors.jobs_page`, read the other way along the same index."""
    seen_at, pk = cursor_decode(before)
    newer = (
        qs.filter(Q(seen_at__gt=seen_at) | Q(seen_at=seen_at, id__gt=pk))
        .order_by("seen_at", "id")
        .defer("traceback", "payload", "args", "kwargs", "result")
    )
    rows = list(newer[: limit + 1])
    more = len(rows) > limit
    return list(reversed(rows[:limit])), more


def job_get(task_id: str) -> Job | None:
    return Job.objects.filter(task_id=task_id).first()


def job_task_id(pk: int) -> str | None:
    """The task id of the job row ``pk`` (None if there is none)."""
    return Job.objects.filter(pk=pk).values_list("task_id", flat=True).first()


def job_timeline(task_id: str) -> list[JobEvent]:
    """Every recorded event of the task, oldest first."""
    return list(JobEvent.objects.filter(task_id=task_id).order_by("at", "id"))


@dataclass
class Relatives:
    parent: Job | None
    children: list[Job]  # tasks it published (their parent_id)
    retried_as: list[Job]  # re-runs of it from the dashboard
    retry_of: Job | None  # what it re-runs


def job_relatives(job: Job, *, limit: int = 50) -> Relatives:
    lookups = [t for t in (job.parent_id, job.retry_of) if t]
    found = {j.task_id: j for j in Job.objects.filter(task_id__in=lookups)} if lookups else {}
    return Relatives(
        parent=found.get(job.parent_id),
        children=list(Job.objects.filter(parent_id=job.task_id).order_by("seen_at")[:limit]),
        retried_as=list(Job.objects.filter(retry_of=job.task_id).order_by("seen_at")[:limit]),
        retry_of=found.get(job.retry_of),
    )


def failures_grouped(filters: TaskFilters, *, limit: int = 50) -> list[dict[str, Any]]:
    """Failed tasks grouped by exception type (and task name): how many, the latest, an example."""
    qs = jobs_filter(TaskFilters(**{**filters.__dict__, "state": JobState.FAILED}))
    sql, params = qs.order_by().values("exception_type", "name", "seen_at", "task_id").query.sql_with_params()
    return [
        {"exception_type": e or "", "name": n, "count": c, "last_seen": last, "example_task_id": example}
        for e, n, c, last, example in queries.failures_grouped(sql, params, limit=limit)
    ]


def failure_group_pending(filters: TaskFilters, *, exception_type: str, limit: int) -> tuple[list[str], int]:
    """The failed tasks matching ``filters`` with ``exception_type`` (also when it is "") not yet re-run from the
    dashboard, newest first (at most ``limit + 1``: one more says more are waiting); and how many of them were
    re-run already (counted up to ``limit``)."""
    failed = jobs_filter(filters).filter(exception_type=exception_type)  # jobs_filter skips empty values
    rerun = Exists(Job.objects.filter(retry_of=OuterRef("task_id")))
    ids = list(failed.filter(~rerun).values_list("task_id", flat=True)[: limit + 1])
    already = failed.filter(rerun)[:limit].count()
    return ids, already


def throughput(
    *, since: dt.datetime, until: dt.datetime | None = None, bucket_minutes: int = 1, queue: str = ""
) -> list[dict[str, Any]]:
    """Per bucket and queue: succeeded, failed, retried and started counts (from the per-minute counts)."""
    until = until or timezone.now()
    rows = queries.throughput(since=since, until=until, bucket_seconds=bucket_minutes * 60, queue=queue)
    return [
        {
            "bucket": bucket,
            "queue": q,
            "succeeded": int(s),
            "failed": int(f),
            "retried": int(r),
            "started": int(st),
            "queued": int(qd),
        }
        for bucket, q, s, f, r, st, qd in rows
    ]


def task_stats(*, since: dt.datetime, group_by: str = "queue") -> list[dict[str, Any]]:
    """Per queue (or task ``name``) over the window: counts by state and p50/p95 runtime of finished tasks."""
    states = [s.value for s in JobState]
    rows = []
    for key, total, *rest in queries.task_stats(since=since, group_by=group_by):
        by_state = dict(zip(states, rest[: len(states)], strict=True))
        p50, p95 = rest[len(states) :]
        rows.append(
            {
                group_by: key,
                "total": total,
                "states": by_state,
                "runtime_ms_p50": None if p50 is None else round(p50, 3),
                "runtime_ms_p95": None if p95 is None else round(p95, 3),
            }
        )
    return rows


def queues_live() -> list[dict[str, Any]]:
    """Every known queue's depth and the age of its oldest message, read from the broker now."""
    from services.kit.queues import QUEUES

    broker = settings.CELERY_BROKER_URL
    out = []
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        return [{"name": q, "depth": None, "oldest_age_seconds": None} for q in QUEUES]
    import redis

    client = redis.Redis.from_url(broker, socket_timeout=2, socket_connect_timeout=2)
    now = timezone.now().timestamp()
    try:
        for name in QUEUES:
            # kombu's Redis transport: a list per queue (and per priority), new messages pushed on the left.
            keys = [name, *[f"{name}\x06\x16{p}" for p in range(1, 10)]]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
                pipe.lindex(key, -1)
            replies = pipe.execute()
            depth = sum(int(n) for n in replies[0::2])
            oldest = [_published_at(raw) for raw in replies[1::2] if raw]
            stamps = [s for s in oldest if s is not None]
            out.append(
                {
                    "name": name,
                    "depth": depth,
                    "oldest_age_seconds": round(now - min(stamps), 3) if stamps else (0.0 if not depth else None),
                }
            )
    finally:
        client.close()
    return out


def _published_at(raw: bytes) -> float | None:
    try:
        message = json.loads(raw)
        stamp = message.get("headers", {}).get("atrium_published_at")
        return float(stamp) if stamp is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def workers_list() -> list[dict[str, Any]]:
    """Every worker seen, with its liveness and its in-flight tasks (received or started on it)."""
    workers = list(Worker.objects.order_by("hostname"))
    in_flight: dict[str, list[Job]] = {}
    hostnames = [w.hostname for w in workers if w.status != WorkerStatus.OFFLINE]
    if hostnames:
        for job in (
            Job.objects.filter(worker__in=hostnames, state__in=[JobState.RECEIVED, JobState.STARTED])
            .defer("traceback", "payload", "args", "kwargs", "result")
            .order_by("-seen_at")[:1000]
        ):
            in_flight.setdefault(job.worker, []).append(job)
    return [{"worker": w, "in_flight": in_flight.get(w.hostname, [])} for w in workers]


def job_names_seen() -> list[tuple[str, str, str]]:
    """Every ``(service, queue, name)`` a task was counted under (one query on the per-name totals, a small table;
    never ``DISTINCT`` over the jobs)."""
    return list(JobTotal.objects.order_by().values_list("service", "queue", "name").distinct())


def job_minutes_since(since: dt.datetime) -> QuerySet[JobMinute]:
    return JobMinute.objects.filter(minute__gte=since)
