"""Reads behind the job dashboard's API and pages: filtered task lists with keyset pages, a task's timeline and
relatives, failures grouped by exception, throughput and runtime statistics, live queues and workers.

Lists are ordered newest first by ``(seen_at, id)`` and paged by keyset (services/kit/pagination.py), never
by offset, so a page costs the same at the millionth row as at the first; each filter has an index that leads
with its column and continues with the order.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from celery import schedules
from django.conf import settings
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, QuerySet
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from portal.jobs import queries
from portal.jobs.models import (
    Job,
    JobEvent,
    JobLink,
    JobMinute,
    JobState,
    JobTotal,
    LinkKind,
    Worker,
    WorkerStatus,
)
from services.kit.pagination import KeysetPage, keyset_page
from services.kit.queues import route_task

PAGE_SIZE_MAX = 200
JOBS_ORDER = ("-seen_at", "-id")  # newest first; the id makes each row's place unique


@dataclass(frozen=True)
class TaskFilters:
    """What a task list can be narrowed by (all optional, combined with AND)."""

    state: str = ""
    queue: str = ""
    service: str = ""
    name: str = ""
    since: dt.datetime | None = None  # seen at or after
    until: dt.datetime | None = None  # seen before
    request_id: str = ""  # jobs published under it, and batch jobs that carried it (linked)
    object_id: str = ""  # batch jobs that carried it (pay_…, txn_…)
    q: str = ""  # a task id, or its beginning
    exception_type: str = ""
    worker: str = ""
    # Leave out housekeeping tasks (the task list's default; see ``housekeeping_hidden``). Not a query parameter
    # of its own: the lists' ``housekeeping=1`` shows them.
    hide_housekeeping: bool = False

    def as_query(self) -> dict[str, str]:
        """The filters as query-string parameters (for links that keep them)."""
        out = {}
        for key, value in self.__dict__.items():
            if value and key != "hide_housekeeping":
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
        # Published under it (jobs_job_request), or a batch job that carried it (jobs_link's primary key).
        linked = JobLink.objects.filter(value=filters.request_id, kind=LinkKind.REQUEST).values("task_id")
        qs = qs.filter(Q(request_id=filters.request_id) | Q(task_id__in=linked)).annotate(
            linked=ExpressionWrapper(~Q(request_id=filters.request_id), output_field=BooleanField())
        )
    if filters.object_id:
        carried = JobLink.objects.filter(value=filters.object_id, kind=LinkKind.OBJECT).values("task_id")
        qs = qs.filter(task_id__in=carried)
    if filters.q:
        qs = qs.filter(task_id__startswith=filters.q.strip().lower())
    if filters.exception_type:
        qs = qs.filter(exception_type=filters.exception_type)
    if filters.worker:
        qs = qs.filter(worker=filters.worker)
    if filters.hide_housekeeping:
        qs = qs.filter(housekeeping=False)
    return qs.order_by(*JOBS_ORDER)


def housekeeping_hidden(filters: TaskFilters, *, shown: bool) -> TaskFilters:
    """The task list's filters with housekeeping tasks left out, unless ``shown`` (``?housekeeping=1``) or the
    filters name a task, a task id, a request or an object (asking for one shows it, whatever it is)."""
    explicit = filters.name or filters.q or filters.request_id or filters.object_id
    return replace(filters, hide_housekeeping=not shown and not explicit)


def jobs_page(qs: QuerySet[Job], *, cursor: str | None = None, limit: int = 50) -> KeysetPage:
    """One page of ``qs``, newest first, at ``cursor`` (the kit's keyset pages; None: the first page).
    Tracebacks, args and payloads are left out (a list does not show them)."""
    limit = max(1, min(limit, PAGE_SIZE_MAX))
    return keyset_page(
        qs.defer("traceback", "payload", "args", "kwargs", "result"), ordering=JOBS_ORDER, cursor=cursor, limit=limit
    )


def job_get(task_id: str) -> Job | None:
    return Job.objects.filter(task_id=task_id).first()


def job_task_id(pk: int) -> str | None:
    """The task id of the job row ``pk`` (None if there is none)."""
    return Job.objects.filter(pk=pk).values_list("task_id", flat=True).first()


def job_timeline(task_id: str) -> list[JobEvent]:
    """Every recorded event of the task, oldest first."""
    return list(JobEvent.objects.filter(task_id=task_id).order_by("at", "id"))


@dataclass
class Carried:
    """What a batch job carried: the request ids and object ids it reported (the first ``JOBS_LINKS_MAX`` of each
    kind are kept) and how many it reported in all."""

    request_ids: list[str]
    object_ids: list[str]
    requests_total: int
    objects_total: int

    @property
    def requests_more(self) -> int:
        return max(0, self.requests_total - len(self.request_ids))

    @property
    def objects_more(self) -> int:
        return max(0, self.objects_total - len(self.object_ids))


def job_carried(job: Job, *, limit: int = 1000) -> Carried:
    """The ids ``job`` carried, in the order it reported them (at most ``limit`` of each kind)."""
    rows = JobLink.objects.filter(task_id=job.task_id).order_by("kind", "at", "value").values_list("kind", "value")
    request_ids: list[str] = []
    object_ids: list[str] = []
    for kind, value in rows[: 2 * limit]:
        target = request_ids if kind == LinkKind.REQUEST else object_ids
        if len(target) < limit:
            target.append(value)
    return Carried(
        request_ids=request_ids,
        object_ids=object_ids,
        requests_total=max(job.carried_requests, len(request_ids)),
        objects_total=max(job.carried_objects, len(object_ids)),
    )


def jobs_carrying(value: str, *, limit: int = 200, kind: str = "") -> list[Job]:
    """The batch jobs that carried ``value`` (a request id or an object id; only that ``kind`` of link if given),
    oldest first."""
    links = JobLink.objects.filter(value=value)
    if kind:
        links = links.filter(kind=kind)
    task_ids = links.values("task_id")
    return list(
        Job.objects.filter(task_id__in=task_ids)
        .defer("traceback", "payload", "args", "kwargs")
        .order_by("seen_at")[:limit]
    )


# What a trace reads of a job: no traceback, args, payload or result.
TRACE_DEFERRED = ("traceback", "payload", "args", "kwargs", "result")


def jobs_for_requests(*, request_ids: Sequence[str], limit: int) -> tuple[list[Job], set[str], bool]:
    """The jobs published under any of ``request_ids`` and the batch jobs that carried one of them, oldest first:
    at most ``limit``; the task ids of the carrying ones (linked, not published under them); whether there were
    more. Two index lookups (``jobs_job_request``, then ``jobs_link``'s key and the task id's), not an ``OR`` the
    planner would answer with a scan."""
    ids = [r for r in dict.fromkeys(request_ids) if r]
    if not ids or limit <= 0:
        return [], set(), False
    direct = list(Job.objects.filter(request_id__in=ids).defer(*TRACE_DEFERRED).order_by("seen_at", "id")[: limit + 1])
    linked_ids = set(
        JobLink.objects.filter(value__in=ids, kind=LinkKind.REQUEST).values_list("task_id", flat=True)[: limit + 1]
    )
    linked_ids -= {j.task_id for j in direct}
    linked = (
        list(Job.objects.filter(task_id__in=linked_ids).defer(*TRACE_DEFERRED).order_by("seen_at", "id"))
        if linked_ids
        else []
    )
    rows = sorted([*direct, *linked], key=lambda j: (j.seen_at, j.id))
    return rows[:limit], {j.task_id for j in linked}, len(rows) > limit


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


# --- the periodic schedule -------------------------------------------------------------------------------------

_UNITS = ((86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second"))
_DAYS = {"0": "Sunday", "1": "Monday", "2": "Tuesday", "3": "Wednesday", "4": "Thursday", "5": "Friday",
         "6": "Saturday", "7": "Sunday"}  # fmt: skip


def schedule_definition(schedule: Any) -> dict[str, Any]:
    """A Celery schedule as plain data, comparable with what a database periodic task holds."""
    if isinstance(schedule, schedules.crontab):
        fields = ("_orig_minute", "_orig_hour", "_orig_day_of_month", "_orig_month_of_year", "_orig_day_of_week")
        return {"crontab": [str(getattr(schedule, f)) for f in fields]}
    if isinstance(schedule, schedules.schedule):
        return {"every": schedule.run_every.total_seconds()}
    return {"other": repr(schedule)}


def periodic_definition(task: PeriodicTask) -> dict[str, Any]:
    """What a database periodic task sends and when: task, schedule, args, kwargs, queue."""
    if task.interval is not None:
        spec: dict[str, Any] = {"every": dt.timedelta(**{task.interval.period: task.interval.every}).total_seconds()}
    elif task.crontab is not None:
        c = task.crontab
        spec = {"crontab": [c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week]}
    else:
        spec = {"other": str(task.scheduler)}
    try:
        args, kwargs = json.loads(task.args or "[]"), json.loads(task.kwargs or "{}")
    except ValueError:
        args, kwargs = task.args, task.kwargs
    return {"task": task.task, "schedule": spec, "args": args, "kwargs": kwargs, "queue": task.queue or None}


def _every_words(seconds: float) -> str:
    for size, unit in _UNITS:
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds:g} seconds"


def schedule_words(task: PeriodicTask) -> str:
    """The schedule in words: "every 30 seconds", "daily at 03:00 UTC", "hourly at :15", "once at …"."""
    if task.interval is not None:
        return _every_words(dt.timedelta(**{task.interval.period: task.interval.every}).total_seconds())
    if task.crontab is not None:
        c = task.crontab
        zone = str(c.timezone)
        if c.day_of_month == "*" and c.month_of_year == "*":
            if c.minute.isdigit() and c.hour.isdigit():
                at = f"{int(c.hour):02d}:{int(c.minute):02d} {zone}"
                if c.day_of_week == "*":
                    return f"daily at {at}"
                days = [_DAYS.get(d.strip()) for d in c.day_of_week.split(",")]
                if all(days):
                    return f"every {', '.join(d for d in days if d)} at {at}"
            if c.minute.isdigit() and c.hour == "*" and c.day_of_week == "*":
                return f"hourly at :{int(c.minute):02d}"
        return f"cron {c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week} ({zone})"
    if task.clocked is not None:
        return f"once at {task.clocked.clocked_time.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
    if task.solar is not None:
        return f"at {task.solar.get_event_display().lower()} ({task.solar.latitude}, {task.solar.longitude})"
    return "no schedule"


def periodic_next_run(task: PeriodicTask, now: dt.datetime) -> dt.datetime | None:
    """When beat will send it next (None when paused, or a one-off already sent). Estimated from beat's
    ``last_run_at``, which beat writes back every few minutes: a time already past rolls forward by the
    schedule, as beat would send it."""
    if not task.enabled or task.scheduler is None:
        return None
    schedule = task.schedule
    if task.clocked is not None:
        return task.clocked.clocked_time
    last = task.last_run_at or task.date_changed or now
    if task.start_time and task.start_time > now:
        return task.start_time
    if isinstance(schedule, schedules.crontab):
        start, delta, _ = schedule.remaining_delta(last)
        upcoming = start + delta
        if upcoming <= now:
            start, delta, _ = schedule.remaining_delta(now)
            upcoming = start + delta
        return upcoming
    if not isinstance(schedule, schedules.schedule):  # solar
        return now + schedule.remaining_estimate(last)
    every = schedule.run_every
    upcoming = last + every
    if upcoming <= now and every.total_seconds() > 0:
        upcoming += every * (int((now - upcoming) / every) + 1)
    return upcoming


@dataclass
class PeriodicRow:
    task: PeriodicTask
    words: str  # the schedule in words
    queue: str  # its queue option, or the queue its name routes to
    next_run: dt.datetime | None
    last_run: Job | None  # the latest job it sent (beat, or "run now" from the dashboard), as the monitor recorded it
    housekeeping: bool | None  # as its last run's worker said (None: never seen run)


def schedule_list(*, now: dt.datetime | None = None, housekeeping: bool = True) -> list[PeriodicRow]:
    """Every periodic task of the database schedule, by name, with its last recorded run (three queries: the
    tasks; each one's newest job id, a ``LIMIT 1`` per task on ``jobs_job_periodic_seen``; those jobs).
    ``housekeeping=False`` leaves out those whose last run was a housekeeping task."""
    now = now or timezone.now()
    tasks = list(PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked").order_by("name"))
    ids = queries.periodic_last_jobs([t.name for t in tasks]) if tasks else []
    last = {j.periodic: j for j in Job.objects.filter(id__in=ids).defer("traceback", "payload", "args", "kwargs")}
    rows = []
    for task in tasks:
        job = last.get(task.name)
        routed = route_task(task.task, (), {}, {"queue": task.queue}) or {}
        row = PeriodicRow(
            task=task,
            words=schedule_words(task),
            queue=task.queue or routed.get("queue", ""),
            next_run=periodic_next_run(task, now),
            last_run=job,
            housekeeping=None if job is None else job.housekeeping,
        )
        if housekeeping or not row.housekeeping:
            rows.append(row)
    return rows
