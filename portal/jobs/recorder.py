"""Recording a batch of tracking events: each event once, each task's row merged, minutes and totals counted.

:func:`record` runs in one transaction per batch. An event is inserted by its stream entry id with
``ON CONFLICT DO NOTHING``, and only the events that were new change anything else — so a batch recorded again
(the monitor crashed after the commit and before acknowledging) counts nothing twice. Batches are serialized by
a transaction-level advisory lock, so two monitors never merge the same task at once.

One poisoned item never stops a batch. An entry or event that cannot be recorded as it is — not JSON, the wrong
shape, an absurd value (a time before 2000 or more than a day ahead, a negative or oversized count, a runtime
that is not a finite number), something PostgreSQL cannot store (a NUL, a lone surrogate, NaN), more than
``EVENT_MAX_BYTES`` — is refused on arrival. An unexpected error recording a batch splits it in halves, each its
own transaction, down to the failing event, which is tried ``JOBS_MONITOR_ATTEMPTS`` times in all. Either way the
item is parked in ``jobs_deadletter`` (its bytes, their digest, why), logged (``jobs.monitor_parked``) and counted
(``atrium_jobs_monitor_parked_total``); the monitor acknowledges it with the rest. The database being away is no
item's fault: :func:`record` raises, nothing is parked, and the batch stays pending until it is back.

Events of one task come from several processes (the publisher, the worker's main process, the pool process
running it) and can arrive in any order. A task's state is the state of its latest event by time; at the same
instant, the later step of the life cycle wins. A finished task goes back to an earlier state only when Celery
runs it again (a retry: a higher ``retries``; or a redelivery after its worker was lost).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from psycopg.types.json import Jsonb

from portal.jobs import queries
from portal.jobs.models import FINAL_STATES, Job, JobState, Worker, WorkerStatus
from services.kit.batches import batch_isolate
from services.kit.db import database_transient
from services.kit.logs import get_logger

log = get_logger(__name__)

# Seconds; a histogram bucket counts observations ≤ its bound, the last one everything above.
RUNTIME_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

STEP = {
    JobState.QUEUED: 0,
    JobState.RECEIVED: 1,
    JobState.STARTED: 2,
    JobState.RETRIED: 3,
    JobState.SUCCEEDED: 4,
    JobState.FAILED: 4,
    JobState.REVOKED: 4,
    JobState.REJECTED: 4,
}
WORKER_EVENTS = ("worker-heartbeat", "worker-offline")
CARRIED = "carried"  # a batch job's links to the requests and objects it carried (services/kit/carry.py)
LINKS_MAX = 1000  # per event and kind: the kit sends at most that many per task
LINK_MAX_CHARS = 200
LOCK_KEY = 0x6A6F6273  # "jobs"

_JOB_FIELDS = [f.name for f in Job._meta.concrete_fields if f.name not in ("id", "task_id")]


@dataclass
class Event:
    stream_id: str
    data: dict[str, Any]
    at: dt.datetime = field(init=False)

    def __post_init__(self) -> None:
        self.at = dt.datetime.fromtimestamp(float(self.data.get("at") or 0), tz=dt.UTC)

    @property
    def state(self) -> str:
        return str(self.data.get("state", ""))

    def get(self, key: str, default: Any = "") -> Any:
        value = self.data.get(key)
        return default if value is None else value


@dataclass
class Recorded:
    events: int = 0  # in the batch (that could be recorded)
    new: int = 0  # not seen before
    jobs: int = 0
    workers: int = 0
    parked: int = 0  # entries or events parked in jobs_deadletter
    links: int = 0  # new links of batch jobs to what they carried

    def add(self, other: Recorded) -> None:
        self.new += other.new
        self.jobs += other.jobs
        self.workers += other.workers
        self.links += other.links


@dataclass
class Refused:
    """An entry, or one event of one, that cannot be recorded: parked with its bytes and why."""

    stream_id: str
    raw: bytes
    reason: str
    attempts: int = 1


# What an event may hold. The tracking caps what it sends (args 2,000 characters, the raw payload 64 KB, a
# traceback 20,000 characters), so an event is far below EVENT_MAX_BYTES; times are Unix seconds.
EVENT_MAX_BYTES = 256 * 1024
AT_MIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()
AT_AHEAD_SECONDS = 86_400  # a process whose clock runs a day ahead of the portal's sends times that mean nothing
RUNTIME_MS_MAX = 1e10  # about 115 days
_COUNTS = {  # the columns' ranges (integer, bigint)
    "retries": 2**31 - 1,
    "pid": 2**31 - 1,
    "concurrency": 2**31 - 1,
    "active": 2**31 - 1,
    "reserved": 2**31 - 1,
    "processed": 2**63 - 1,
}
DEADLETTER_RAW_BYTES = 1 << 20
# In an entry's JSON text: what may decode to something PostgreSQL cannot store (a NUL, a lone surrogate, NaN or
# Infinity). Only entries holding one of them, or longer than an event may be, get the full check per event.
_SUSPECT = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]|NaN|Infinity")
# A NUL in JSON text written by json.dumps (\\u0000; an escaped backslash before "u0000" is not one).
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _short(value: Any) -> str:
    text = f"a {value.bit_length()}-bit number" if isinstance(value, int) and value.bit_length() > 64 else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _problem(data: Any, now: float, *, deep: bool) -> str | None:
    """Why ``data`` cannot be recorded as an event (None: it can). ``deep``: also serialise it as PostgreSQL
    will store it (its entry's text held something suspect, or was long)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    state = data.get("state")
    if not isinstance(state, str) or (state not in STEP and state not in WORKER_EVENTS and state != CARRIED):
        return f"state {_short(state)} is not one the tracking sends"
    at = data.get("at")
    if not _number(at) or not AT_MIN <= at <= now + AT_AHEAD_SECONDS:  # NaN and infinities fail the comparison
        return f"at {_short(at)} is not a time from 2000 to a day from now"
    if state in STEP or state == CARRIED:
        if not isinstance(data.get("task_id"), str) or not data["task_id"]:
            return "task_id is missing or not a string"
        if state == CARRIED:
            problem = _carried_problem(data)
            if problem:
                return problem
    else:
        if not isinstance(data.get("worker"), str) or not data["worker"]:
            return "worker is missing or not a string"
        if not isinstance(data.get("queues", []), list):
            return "queues is not a list"
    for name, top in _COUNTS.items():
        value = data.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top):
            return f"{name} {_short(value)} is out of range (0 to {top})"
    runtime = data.get("runtime_ms")
    if runtime is not None and (not _number(runtime) or not 0 <= runtime <= RUNTIME_MS_MAX):
        return f"runtime_ms {_short(runtime)} is out of range (0 to {RUNTIME_MS_MAX:.0e})"
    if deep:
        try:
            text = json.dumps(data, ensure_ascii=False, allow_nan=False)
            size = len(text.encode("utf-8"))
        except (ValueError, TypeError, RecursionError, UnicodeEncodeError) as exc:
            return f"cannot be stored: {type(exc).__name__}: {exc}"[:300]
        if _NUL.search(text):
            return "holds a NUL character, which PostgreSQL cannot store"
        if size > EVENT_MAX_BYTES:
            return f"is {size} bytes, more than the {EVENT_MAX_BYTES} an event may be"
    return None


def _carried_problem(data: dict[str, Any]) -> str | None:
    for kind in ("request_ids", "object_ids"):
        ids = data.get(kind, [])
        if not isinstance(ids, list) or len(ids) > LINKS_MAX:
            return f"{kind} is not a list of at most {LINKS_MAX} ids"
        if any(not isinstance(i, str) or not i or len(i) > LINK_MAX_CHARS for i in ids):
            return f"{kind} holds something other than ids of 1 to {LINK_MAX_CHARS} characters"
    for total in ("requests_total", "objects_total"):
        value = data.get(total, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**31 - 1:
            return f"{total} {_short(value)} is out of range (0 to {2**31 - 1})"
    return None


def _bytes(value: Any) -> bytes:
    """What arrived, as bytes (an event as JSON; never raises)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    try:
        return json.dumps(value, ensure_ascii=True, default=repr).encode("ascii")
    except (ValueError, TypeError, RecursionError):
        return repr(value).encode("utf-8", "backslashreplace")


def parse(entries: Iterable[tuple[Any, dict[Any, Any]]]) -> tuple[list[Event], list[Refused]]:
    """Stream entries as events — ``{"b": json list}`` (a process's batch; the n-th event's key is ``<entry
    id>/<n>``) or ``{"e": json object}`` (one event, keyed by the entry id) — and what cannot be recorded."""
    events: list[Event] = []
    refused: list[Refused] = []
    now = time.time()
    for stream_id, fields in entries:
        sid = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
        batch = fields.get(b"b") if b"b" in fields else fields.get("b")
        single = fields.get(b"e") if b"e" in fields else fields.get("e")
        text = batch if batch is not None else single
        if text is None:
            refused.append(Refused(sid, _bytes({_bytes(k).decode("utf-8", "replace"): _bytes(v).decode(
                "utf-8", "replace") for k, v in fields.items()}), "neither a batch (b) nor an event (e)"))  # fmt: skip
            continue
        raw = _bytes(text)
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            refused.append(Refused(sid, raw, f"not JSON ({type(exc).__name__})"))
            continue
        if batch is not None and not isinstance(value, list):
            refused.append(Refused(sid, raw, "a batch (b) that is not a JSON list"))
            continue
        items = [(f"{sid}/{n}", data) for n, data in enumerate(value)] if batch is not None else [(sid, value)]
        deep = len(raw) > EVENT_MAX_BYTES or _SUSPECT.search(raw) is not None
        for key, data in items:
            problem = _problem(data, now, deep=deep)
            if problem is None:
                events.append(Event(key, data))
            else:
                refused.append(Refused(key, _bytes(data), problem))
    return events, refused


# What an event keeps in jobs_event.detail (the timeline): everything but what has columns and the raw payload.
_NOT_DETAIL = {"state", "task_id", "at", "worker", "payload", "args", "kwargs", "traceback"}


def record(entries: Iterable[tuple[Any, dict[Any, Any]]]) -> Recorded:
    """Record a batch of stream entries (one transaction, unless an item fails: see the module's docstring);
    return what it changed. What cannot be recorded is parked. Raises only when the database is away (nothing
    parked then: the whole batch is to be read again)."""
    events, refused = parse(entries)
    result = Recorded(events=len(events))
    refused += _record_isolating(events, result)
    if refused:
        _park(refused)
        result.parked = len(refused)
    return result


def _record_isolating(events: list[Event], result: Recorded) -> list[Refused]:
    """Record ``events``; on an unexpected error, in halves down to the failing event
    (:func:`services.kit.batches.batch_isolate`), which is tried ``JOBS_MONITOR_ATTEMPTS`` times in all; return
    those that still failed."""
    if not events:
        return []

    def run(part: Sequence[Event]) -> list[Refused]:
        result.add(_record_events(list(part)))
        return []

    def alone(event: Event, failure: Exception) -> list[Refused]:
        attempts = int(getattr(settings, "JOBS_MONITOR_ATTEMPTS", 3))
        for attempt in range(2, attempts + 1):
            time.sleep(0.05 * attempt)  # what is transient gets a moment to pass
            try:
                return run([event])
            except Exception as exc:
                if database_transient(exc):
                    raise
                failure = exc
        return [Refused(event.stream_id, _bytes(event.data), f"{type(failure).__name__}: {failure}", attempts)]

    return batch_isolate(
        events,
        run,
        item_error=lambda exc: not database_transient(exc),
        alone=alone,
        merge=lambda left, right: left + right,
        event="jobs.monitor_split",
    )


def _park(refused: list[Refused]) -> None:
    """Keep ``refused`` in jobs_deadletter (once per stream id: a batch read again parks nothing twice)."""
    queries.deadletters_add(
        [
            [r.stream_id[:64] for r in refused],
            [r.reason[:2000].encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\0") for r in refused],
            [r.attempts for r in refused],
            [r.raw[:DEADLETTER_RAW_BYTES] for r in refused],
            [hashlib.sha256(r.raw).hexdigest() for r in refused],
            [len(r.raw) for r in refused],
        ],
    )
    for item in refused[:20]:
        log.error("jobs.monitor_parked", stream_id=item.stream_id, reason=item.reason[:300], attempts=item.attempts)
    if len(refused) > 20:
        log.error("jobs.monitor_parked", count=len(refused) - 20, reason="and more")


def _record_events(events: list[Event]) -> Recorded:
    """Record ``events`` in one transaction."""
    result = Recorded(events=len(events))
    task_events = [e for e in events if e.state in STEP and e.get("task_id")]
    worker_events = [e for e in events if e.state in WORKER_EVENTS and e.get("worker")]
    carried = [e for e in events if e.state == CARRIED and e.get("task_id")]
    # Statements with arrays of thousands of values go through the kit's execute (server-side, binary binding):
    # them into the SQL text in Python would cost more than the statements.
    with transaction.atomic():
        queries.advisory_xact_lock(LOCK_KEY)
        new: list[Event] = []
        if task_events:
            rows = queries.events_add(
                [
                    [e.stream_id for e in task_events],
                    [str(e.get("task_id"))[:64] for e in task_events],
                    [e.state for e in task_events],
                    [e.at for e in task_events],
                    [str(e.get("worker"))[:200] for e in task_events],
                    [Jsonb({k: v for k, v in e.data.items() if k not in _NOT_DETAIL}) for e in task_events],
                ],
            )
            fresh = {row[0] for row in rows}
            new = [e for e in task_events if e.stream_id in fresh]
        result.new = len(new)
        if new:
            jobs = _jobs_merge(new)
            result.jobs = len(jobs)
            _counts_add(new, jobs)
        if worker_events:
            result.workers = _workers_update(worker_events)
        if carried:
            result.links = _links_add(carried)
    return result


def _links_add(events: list[Event]) -> int:
    """Link each job to the requests and objects it carried, and keep its totals (the largest reported: totals
    only grow, so an event recorded twice or late changes nothing). Return how many links were new."""
    task_ids: list[str] = []
    kinds: list[str] = []
    values: list[str] = []
    ats: list[dt.datetime] = []
    totals: dict[str, list[int]] = {}
    for event in events:
        task_id = str(event.get("task_id"))[:64]
        for kind, key in (("request", "request_ids"), ("object", "object_ids")):
            for value in event.get(key, []) or []:
                task_ids.append(task_id)
                kinds.append(kind)
                values.append(value)
                ats.append(event.at)
        pair = totals.setdefault(task_id, [0, 0])
        pair[0] = max(pair[0], int(event.get("requests_total", 0) or 0))
        pair[1] = max(pair[1], int(event.get("objects_total", 0) or 0))
    added = queries.links_add([values, task_ids, kinds, ats]) if values else 0
    queries.carried_totals([list(totals), [p[0] for p in totals.values()], [p[1] for p in totals.values()]])
    return added


# --- jobs ------------------------------------------------------------------------------------------------------


def _jobs_merge(events: list[Event]) -> dict[str, Job]:
    by_task: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_task[str(event.get("task_id"))[:64]].append(event)
    jobs = {j.task_id: j for j in Job.objects.select_for_update().filter(task_id__in=list(by_task))}
    for task_id, task_events in by_task.items():
        job = jobs.get(task_id)
        for event in sorted(task_events, key=lambda e: (e.at, STEP[e.state])):
            new = job is None
            if job is None:
                job = jobs[task_id] = Job(task_id=task_id, state=event.state, seen_at=event.at, last_event_at=event.at)
            _apply(job, event, new=new)
    _jobs_write(list(jobs.values()))
    return jobs


def _jobs_write(jobs: list[Job]) -> None:
    """Insert or overwrite ``jobs`` (merged under their row locks) in one statement."""
    columns = ["task_id", *_JOB_FIELDS]
    casts = [_CASTS[Job._meta.get_field(c).get_internal_type()] for c in columns]
    values = []
    for column, cast in zip(columns, casts, strict=True):
        if cast == "jsonb[]":
            values.append([None if getattr(j, column) is None else Jsonb(getattr(j, column)) for j in jobs])
        else:
            values.append([getattr(j, column) for j in jobs])
    queries.jobs_upsert(columns=columns, casts=casts, values=values)


_CASTS = {
    "CharField": "text[]",
    "TextField": "text[]",
    "JSONField": "jsonb[]",
    "DateTimeField": "timestamptz[]",
    "PositiveIntegerField": "int[]",
    "FloatField": "float8[]",
    "BooleanField": "bool[]",
}


def _later(event: Event, job: Job, *, new: bool = False) -> bool:
    """Whether ``event`` sets the job's state (see the module's docstring); ``new``: the job was made from it."""
    if new:
        return True
    retries = int(event.get("retries", job.retries) or 0)
    if event.state == JobState.QUEUED and job.state != JobState.QUEUED and retries <= job.retries:
        return False  # the publish of an attempt the job is already past (whatever the clocks say)
    if (event.at, STEP[event.state]) < (job.last_event_at, STEP[JobState(job.state)]):
        return False
    if job.state in FINAL_STATES and STEP[event.state] < STEP[JobState.SUCCEEDED]:
        # Run again: a retry (more retries) or a redelivery (received/started again after a lost worker).
        return retries > job.retries or event.state != JobState.QUEUED
    return True


def _apply(job: Job, event: Event, *, new: bool = False) -> None:
    state = event.state
    sets_state = _later(event, job, new=new)  # decided before the event changes the row
    for name, length in (("name", 200), ("queue", 100), ("service", 50)):
        if not getattr(job, name) and event.get(name):
            setattr(job, name, str(event.get(name))[:length])
    if event.get("worker") and state in (JobState.RECEIVED, JobState.STARTED):
        job.worker = str(event.get("worker"))[:200]
    elif event.get("worker") and not job.worker:
        job.worker = str(event.get("worker"))[:200]
    job.seen_at = min(job.seen_at, event.at)
    for name, length in (("request_id", 100), ("parent_id", 64), ("root_id", 64), ("retry_of", 64)):
        if not getattr(job, name) and event.get(name):
            setattr(job, name, str(event.get(name))[:length])
    if event.data.get("housekeeping") is True:
        job.housekeeping = True  # said by the worker running it (or a publisher that knows the task)
    if not job.periodic and isinstance(event.data.get("periodic"), str) and event.data["periodic"]:
        job.periodic = event.data["periodic"][:200]
    if "retries" in event.data:
        job.retries = max(job.retries, int(event.get("retries", 0) or 0))
    if state == JobState.QUEUED:
        job.queued_at = min(filter(None, [job.queued_at, event.at]))
        if event.data.get("eta"):
            job.eta = _datetime(event.get("eta"))
        if event.data.get("args") is not None and not job.args:
            job.args = event.get("args")
        if event.data.get("kwargs") is not None and not job.kwargs:
            job.kwargs = event.get("kwargs")
        if event.data.get("payload") is not None and job.payload is None:
            job.payload = event.get("payload")
    elif state == JobState.RECEIVED:
        job.received_at = max(filter(None, [job.received_at, event.at]))
        if event.data.get("eta") and job.eta is None:
            job.eta = _datetime(event.get("eta"))
    elif state == JobState.STARTED:
        job.started_at = max(filter(None, [job.started_at, event.at]))
    elif state == JobState.RETRIED:
        job.exception_type = str(event.get("exception_type"))[:200]
        job.exception_message = str(event.get("reason"))[:2000]
        if event.data.get("runtime_ms") is not None:
            job.runtime_ms = float(event.get("runtime_ms"))
    else:  # final
        job.finished_at = max(filter(None, [job.finished_at, event.at]))
        if event.data.get("runtime_ms") is not None:
            job.runtime_ms = float(event.get("runtime_ms"))
        if state == JobState.SUCCEEDED:
            result = event.data.get("result")
            job.result = "" if result is None else (result if isinstance(result, str) else json.dumps(result))[:1000]
        elif state == JobState.FAILED:
            job.exception_type = str(event.get("exception_type"))[:200]
            job.exception_message = str(event.get("exception_message"))[:2000]
            job.traceback = str(event.get("traceback"))
        elif state == JobState.REJECTED:
            job.exception_message = str(event.get("reason"))[:2000]
    if sets_state:
        job.state = state
        job.last_event_at = max(job.last_event_at, event.at)


def _datetime(value: Any) -> dt.datetime | None:
    try:
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        parsed = dt.datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):  # not a time, or not one a datetime holds: left out
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# --- counts for charts and metrics -----------------------------------------------------------------------------

_MINUTE_COLUMNS = ("queued", "started", "succeeded", "failed", "retried", "revoked", "rejected")


def _counts_add(events: list[Event], jobs: dict[str, Job]) -> None:
    minutes: dict[tuple[dt.datetime, str, str, str], list[float]] = defaultdict(lambda: [0.0] * 9)
    totals: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in events:
        job = jobs[str(event.get("task_id"))[:64]]
        key = (job.service, job.queue, job.name)
        minute = minutes[(event.at.replace(second=0, microsecond=0), *key)]
        if event.state in _MINUTE_COLUMNS:
            minute[_MINUTE_COLUMNS.index(event.state)] += 1
        total = totals.setdefault(
            key,
            {
                "counts": dict.fromkeys(("succeeded", "failed", "retried", "revoked", "rejected"), 0),
                "runtime": [0.0, [0] * (len(RUNTIME_BOUNDS) + 1)],
                "latency": [0.0, [0] * (len(LATENCY_BOUNDS) + 1)],
            },
        )
        if event.state in total["counts"]:
            total["counts"][event.state] += 1
        runtime_ms = event.data.get("runtime_ms")
        if runtime_ms is not None and event.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.RETRIED):
            minute[7] += float(runtime_ms)
            minute[8] += 1
            _observe(total["runtime"], float(runtime_ms) / 1000, RUNTIME_BOUNDS)
        if event.state == JobState.STARTED and job.queued_at and int(event.get("retries", 0) or 0) == 0:
            ready = max(filter(None, [job.queued_at, job.eta]))
            _observe(total["latency"], max(0.0, (event.at - ready).total_seconds()), LATENCY_BOUNDS)
    rows = sorted(minutes.items())
    queries.minutes_add(
        [
            [k[0] for k, _ in rows],
            [k[1] for k, _ in rows],
            [k[2] for k, _ in rows],
            [k[3] for k, _ in rows],
            *[[int(v[i]) for _, v in rows] for i in range(7)],
            [v[7] for _, v in rows],
            [int(v[8]) for _, v in rows],
        ],
    )
    queries.totals_add(
        [
            [
                service,
                queue,
                name,
                total["counts"]["succeeded"],
                total["counts"]["failed"],
                total["counts"]["retried"],
                total["counts"]["revoked"],
                total["counts"]["rejected"],
                total["runtime"][0],
                total["runtime"][1],
                total["latency"][0],
                total["latency"][1],
            ]
            for (service, queue, name), total in sorted(totals.items())
        ]
    )


def _observe(histogram: list[Any], seconds: float, bounds: tuple[float, ...]) -> None:
    histogram[0] += seconds
    histogram[1][bisect_left(bounds, seconds)] += 1


# --- workers ---------------------------------------------------------------------------------------------------


def _workers_update(events: list[Event]) -> int:
    latest: dict[str, Event] = {}
    for event in events:
        hostname = str(event.get("worker"))[:200]
        if hostname not in latest or event.at >= latest[hostname].at:
            latest[hostname] = event
    existing = {w.hostname: w for w in Worker.objects.select_for_update().filter(hostname__in=list(latest))}
    changed = []
    for hostname, event in latest.items():
        worker = existing.get(hostname) or Worker(hostname=hostname, last_heartbeat=event.at)
        if worker.pk and event.at < worker.last_heartbeat:
            continue
        worker.service = str(event.get("service"))[:50]
        worker.queues = [str(q)[:100] for q in event.get("queues", [])][:50]
        worker.pid = event.get("pid", None)
        worker.pool = str(event.get("pool"))[:50]
        worker.concurrency = event.get("concurrency", None)
        worker.active = int(event.get("active", 0) or 0)
        worker.reserved = int(event.get("reserved", 0) or 0)
        worker.processed = int(event.get("processed", 0) or 0)
        worker.sw_version = str(event.get("sw_version"))[:100]
        worker.started_at = _datetime(event.get("started_at", None)) if event.data.get("started_at") else None
        worker.last_heartbeat = event.at
        offline = event.state == "worker-offline"
        worker.status = WorkerStatus.OFFLINE if offline else WorkerStatus.ONLINE
        worker.stopped_at = event.at if offline else None
        changed.append(worker)
    Worker.objects.bulk_create(
        changed,
        update_conflicts=True,
        unique_fields=["hostname"],
        update_fields=[f.name for f in Worker._meta.concrete_fields if f.name not in ("id", "hostname")],
    )
    return len(changed)
