"""The trace: one timeline of everything recorded for an id, across services, read through the audit and jobs
apps' selectors (this app has no tables).

An id is, in this order: a job's task id (the job, the request it was published under, and what it carried);
an object id (``pay_…``, ``txn_…``, ``acc_…``, a catalog slug: any id an audit event names as its object, or a
batch job reported carrying) — resolved to the request ids that touched it; else a request id. The timeline holds
the audit events of those requests (every service's), the jobs published under them and the batch jobs that
carried them, ordered by time with the gap since the previous entry; the objects touched, with their last known
status; what is still pending; and the webhook messages of the payments and transactions touched, with their
deliveries and attempts, read from the webhooks service (:mod:`portal.trace.webhooks`; the trace renders without
them, saying why, when webhooks is away). Everything is bounded (:data:`MAX_EVENTS`, :data:`MAX_JOBS`,
:data:`MAX_REQUESTS`), with a flag saying so when a bound cut something off.

The API (``portal.trace.api``) and the admin page (``portal.trace.views``) both call :func:`trace_of`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Any

from portal.audit import selectors as audit
from portal.audit.models import AuditEvent
from portal.identity.roles import ROLE_ADMIN, ROLE_AUDITOR, ROLE_OPERATOR, user_roles
from portal.jobs import selectors as jobs
from portal.jobs.models import FINAL_STATES, Job, LinkKind
from portal.trace.errors import TraceIdInvalid, TraceNotFound
from portal.trace.webhooks import WebhookReport, webhook_messages
from services.kit.auth import ClientPrincipal

MAX_EVENTS = 1000  # audit events in one trace
MAX_JOBS = 200  # jobs in one trace
MAX_REQUESTS = 100  # request ids an object or a batch job resolves to
MAX_ID_LENGTH = 200  # the longest object id an audit event keeps
# The characters of every id Atrium makes or accepts (request ids: services.kit.context; object ids, slugs, task
# ids), up to the longest object id an audit event keeps.
ID_PATTERN = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_ID_LENGTH}}}")
# The roles that see audit events in a trace, payloads included; a viewer sees the jobs only.
FULL_ROLES = (ROLE_ADMIN, ROLE_OPERATOR, ROLE_AUDITOR)
AUDIT_SCOPE = "audit:read"
# The object type of the trace's own lookup records (``trace.viewed``, object id = the id looked up): never what an
# id resolves to, or tracing a request id would make it an "object" of the next lookup.
LOOKUP_OBJECT_TYPE = "trace"
# An object's last status that is not final: payments on their way (or waiting for review), ledger holds not yet
# posted or voided.
PENDING_STATUSES = frozenset({"created", "screening", "review", "processing", "pending"})


@dataclass(frozen=True)
class TraceViewer:
    """What a caller may see of a trace: audit events and their payloads (changes, metadata, actor), or only jobs."""

    audit: bool


def trace_viewer(user: Any) -> TraceViewer:
    """Admins, operators and auditors (machine clients with ``audit:read``) see audit events; viewers see jobs."""
    if isinstance(user, ClientPrincipal):
        return TraceViewer(audit=AUDIT_SCOPE in user.scopes)
    return TraceViewer(audit=bool(set(user_roles(user)) & set(FULL_ROLES)))


@dataclass(frozen=True)
class TraceEntry:
    """One step of the timeline: an audit event (``kind="audit"``) or a job (``kind="job"``)."""

    kind: str
    at: dt.datetime
    service: str
    title: str  # the audit action, or the task name
    object_type: str
    object_id: str
    outcome: str  # the audit outcome (success, failure), or the job's state
    request_id: str
    pending: bool
    gap_ms: float | None = None  # since the previous entry (None for the first)
    # audit events
    event_id: str = ""
    seq: int | None = None
    actor: str = ""
    changes: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    # jobs
    task_id: str = ""
    queue: str = ""
    state: str = ""
    queue_wait_ms: float | None = None  # started - queued
    runtime_ms: float | None = None
    retries: int | None = None
    finished_at: dt.datetime | None = None
    linked: bool = False  # a batch job that carried the request, rather than one published under it


@dataclass(frozen=True)
class TraceObject:
    """An object the trace touched, with its last known status (from its latest event's ``changes.status``)."""

    type: str
    id: str
    status: str
    pending: bool
    last_at: dt.datetime | None


@dataclass
class Trace:
    query: str
    kind: str  # request, object or job
    request_ids: list[str]
    entries: list[TraceEntry]
    objects: list[TraceObject]
    audit_visible: bool
    events: int  # audit events in the timeline
    jobs: int
    pending: bool  # a job not finished, or an object whose last status is not final
    truncated: dict[str, bool] = field(default_factory=dict)  # events, jobs, request_ids
    # the webhook messages of the payments and transactions touched, from the webhooks service (or why not)
    webhooks: WebhookReport = field(default_factory=lambda: WebhookReport(state="none"))

    @property
    def started_at(self) -> dt.datetime | None:
        return self.entries[0].at if self.entries else None

    @property
    def ended_at(self) -> dt.datetime | None:
        return self.entries[-1].at if self.entries else None

    @property
    def duration_ms(self) -> float | None:
        if not self.entries:
            return None
        return _ms(self.entries[-1].at - self.entries[0].at)


def trace_id_clean(value: str) -> str:
    """``value`` stripped, or :class:`TraceIdInvalid` when it cannot be an id."""
    value = (value or "").strip()
    if not ID_PATTERN.fullmatch(value):
        shown = value if len(value) <= 40 else f"{value[:40]}… ({len(value)} characters)"
        raise TraceIdInvalid(f"{shown!r} is not an id: 1 to {MAX_ID_LENGTH} characters from A-Z a-z 0-9 . _ : -")
    return value


def _ms(delta: dt.timedelta) -> float:
    return round(delta.total_seconds() * 1000, 3)


def _status_after(changes: Any) -> str:
    """``changes.status``'s new value (``[before, after]``, or a bare value), else ""."""
    if not isinstance(changes, dict) or "status" not in changes:
        return ""
    value = changes["status"]
    if isinstance(value, list) and len(value) == 2:
        value = value[1]
    return value if isinstance(value, str) else ""


def _job_pending(job: Job) -> bool:
    return job.state not in FINAL_STATES


def _audit_entry(event: AuditEvent, *, pending: bool) -> TraceEntry:
    return TraceEntry(
        kind="audit",
        at=event.occurred_at,
        service=event.service,
        title=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        outcome=event.outcome,
        request_id=event.request_id,
        pending=pending,
        event_id=event.event_id,
        seq=event.seq,
        actor=event.actor_display or event.actor_id,
        changes=event.changes if isinstance(event.changes, dict) else {},
        metadata=event.metadata if isinstance(event.metadata, dict) else {},
    )


def _job_entry(job: Job, *, linked: bool) -> TraceEntry:
    wait = _ms(job.started_at - job.queued_at) if job.started_at and job.queued_at else None
    return TraceEntry(
        kind="job",
        at=job.queued_at or job.seen_at,
        service=job.service,
        title=job.name,
        object_type="",
        object_id="",
        outcome=job.state,
        request_id=job.request_id,
        pending=_job_pending(job),
        task_id=job.task_id,
        queue=job.queue,
        state=job.state,
        queue_wait_ms=wait,
        runtime_ms=job.runtime_ms,
        retries=job.retries,
        finished_at=job.finished_at,
        linked=linked,
    )


def _objects(events: list[AuditEvent], carried: list[str]) -> list[TraceObject]:
    """Each object the events name (and the object ids batch jobs carried), with its latest event's status."""
    latest: dict[tuple[str, str], AuditEvent] = {}
    status: dict[tuple[str, str], str] = {}
    for event in events:  # oldest first: the last one seen is the latest
        if not event.object_id:
            continue
        key = (event.object_type, event.object_id)
        latest[key] = event
        found = _status_after(event.changes)
        if found:
            status[key] = found
    named = {object_id for _, object_id in latest}
    out = [
        TraceObject(
            type=key[0],
            id=key[1],
            status=status.get(key, ""),
            pending=status.get(key, "") in PENDING_STATUSES,
            last_at=event.occurred_at,
        )
        for key, event in latest.items()
    ]
    out.extend(
        TraceObject(type="", id=object_id, status="", pending=False, last_at=None)
        for object_id in dict.fromkeys(carried)
        if object_id not in named
    )
    return out


def trace_of(value: str, *, viewer: TraceViewer) -> Trace:
    """The timeline of ``value`` (a request id, an object id or a task id) as ``viewer`` may see it.

    :class:`TraceIdInvalid` for what cannot be an id; :class:`TraceNotFound` when nothing was recorded for it.
    """
    value = trace_id_clean(value)
    truncated = {"events": False, "jobs": False, "request_ids": False}
    request_ids: list[str] = []
    extra_jobs: dict[str, Job] = {}  # the job itself, or the batch jobs that carried the object
    object_seqs: list[int] = []  # the object's own events (also those without a request id)
    carried_objects: list[str] = []

    job = jobs.job_get(value) if len(value) <= 64 else None
    if job is not None:
        kind = "job"
        extra_jobs[job.task_id] = job
        carried = jobs.job_carried(job, limit=MAX_REQUESTS)
        request_ids = list(dict.fromkeys([r for r in [job.request_id, *carried.request_ids] if r]))
        carried_objects = carried.object_ids
        truncated["request_ids"] = carried.requests_more > 0 or len(request_ids) > MAX_REQUESTS
    else:
        latest = audit.object_events_latest(object_id=value, limit=MAX_EVENTS, exclude_types={LOOKUP_OBJECT_TYPE})
        carrying = jobs.jobs_carrying(value, limit=MAX_JOBS, kind=LinkKind.OBJECT)
        if latest or carrying:
            kind = "object"
            object_seqs = [seq for seq, _ in latest]
            newest_first = list(dict.fromkeys(r for _, r in latest if r))
            truncated["request_ids"] = len(newest_first) > MAX_REQUESTS
            # the newest requests that touched it, listed oldest first
            request_ids = list(reversed(newest_first[:MAX_REQUESTS]))
            extra_jobs.update((j.task_id, j) for j in carrying)
            carried_objects = [value]
        else:
            kind = "request"
            request_ids = [value]
    request_ids = request_ids[:MAX_REQUESTS]

    # audit events: the requests', and the object's own (by seq) — read to resolve statuses even for a viewer
    events, truncated["events"] = audit.events_for_requests(request_ids=request_ids, limit=MAX_EVENTS)
    have = {e.seq for e in events}
    missing = [s for s in object_seqs if s not in have]
    if missing:
        events = sorted([*events, *audit.events_by_seq(seqs=missing)], key=lambda e: (e.occurred_at, e.seq))
        truncated["events"] = truncated["events"] or len(events) > MAX_EVENTS
        events = events[:MAX_EVENTS]

    found_jobs, linked_ids, truncated["jobs"] = jobs.jobs_for_requests(request_ids=request_ids, limit=MAX_JOBS)
    by_task = {j.task_id: j for j in found_jobs}
    for task_id, extra in extra_jobs.items():
        if task_id not in by_task:
            by_task[task_id] = extra
            if kind == "object":  # a batch job that carried the object (the job itself, for a task id, is not)
                linked_ids.add(task_id)
    if len(by_task) > MAX_JOBS:
        truncated["jobs"] = True
    job_rows = sorted(by_task.values(), key=lambda j: (j.seen_at, j.id))[:MAX_JOBS]

    if kind == "request" and not events and not job_rows:
        raise TraceNotFound(f"Nothing is recorded for {value!r}: no audit event, no job, no batch that carried it.")

    objects = _objects(events, carried_objects)
    pending_objects = {(o.type, o.id) for o in objects if o.pending}
    last_seq: dict[tuple[str, str], int] = {}
    for event in events:
        if event.object_id:
            last_seq[(event.object_type, event.object_id)] = event.seq

    entries: list[TraceEntry] = []
    if viewer.audit:
        entries.extend(
            _audit_entry(
                e,
                pending=(e.object_type, e.object_id) in pending_objects
                and last_seq.get((e.object_type, e.object_id)) == e.seq,
            )
            for e in events
        )
    entries.extend(_job_entry(j, linked=j.task_id in linked_ids) for j in job_rows)
    entries.sort(key=lambda e: (e.at, 0 if e.kind == "audit" else 1, e.seq or 0, e.task_id))
    timed: list[TraceEntry] = []
    previous: dt.datetime | None = None
    for entry in entries:
        gap = _ms(entry.at - previous) if previous is not None else None
        timed.append(replace(entry, gap_ms=gap))
        previous = entry.at

    if not viewer.audit:
        # a viewer learns which objects were touched (ids jobs carry anyway), not their audited statuses
        objects = [TraceObject(type=o.type, id=o.id, status="", pending=False, last_at=None) for o in objects]
    pending = any(e.pending for e in timed if e.kind == "job") or bool(pending_objects and viewer.audit)
    # (ids, types, states and status codes of the deliveries, never payloads: a viewer sees them as the webhooks
    # admin shows them to one)
    webhooks = webhook_messages([o.id for o in objects])
    return Trace(
        query=value,
        kind=kind,
        request_ids=request_ids,
        entries=timed,
        objects=objects,
        audit_visible=viewer.audit,
        events=len(events) if viewer.audit else 0,
        jobs=len(job_rows),
        pending=pending,
        truncated=truncated if viewer.audit else {**truncated, "events": False},
        webhooks=webhooks,
    )
