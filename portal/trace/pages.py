"""What the trace page shows, computed from a :class:`~portal.trace.selectors.Trace` (the template only lays it out):
durations in words, links to each id's own trace, to the audit event's page and to the job's page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from portal.trace.selectors import Trace, TraceEntry, TraceObject
from portal.ui.links import trace_url


def duration(ms: float | None) -> str:
    """``840 ms``, ``2.4 s``, ``3 min 5 s``, ``2 h 4 min`` (empty for None)."""
    if ms is None:
        return ""
    if ms < 0:
        return f"-{duration(-ms)}"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = int(ms // 1000)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60} min"


@dataclass(frozen=True)
class EntryRow:
    entry: TraceEntry
    gap: str
    object_url: str
    request_url: str
    own_url: str  # the audit event's page, or the job's page
    details: list[tuple[str, str, str]]  # (label, value, link or "")


@dataclass(frozen=True)
class ObjectRow:
    object: TraceObject
    url: str


@dataclass
class TracePage:
    trace: Trace
    rows: list[EntryRow]
    objects: list[ObjectRow]
    requests: list[tuple[str, str]]  # (request id, its trace's url)
    duration: str
    truncated: list[str]


def _changes(changes: dict[str, Any] | None) -> str:
    if not changes:
        return ""
    parts = []
    for name, pair in list(changes.items())[:6]:
        before, after = pair if isinstance(pair, list) and len(pair) == 2 else (None, pair)
        shown = json.dumps(after, ensure_ascii=False, default=str) if not isinstance(after, str) else after
        parts.append(f"{name}: {before} → {shown}" if before is not None else f"{name}: {shown}")
    return "; ".join(parts)


def _details(entry: TraceEntry) -> list[tuple[str, str, str]]:
    if entry.kind == "job":
        found = [("queue", entry.queue or "—", "")]
        if entry.queue_wait_ms is not None:
            found.append(("queue wait", duration(entry.queue_wait_ms), ""))
        if entry.runtime_ms is not None:
            found.append(("runtime", duration(entry.runtime_ms), ""))
        if entry.retries:
            found.append(("retries", str(entry.retries), ""))
        if entry.linked:
            found.append(("carried", "a batch job that carried this request", ""))
        return found
    found = [("actor", entry.actor, "")] if entry.actor else []
    changed = _changes(entry.changes)
    if changed:
        found.append(("changes", changed, ""))
    task = (entry.metadata or {}).get("task_id")
    if isinstance(task, str) and task:
        found.append(("task", task, reverse("jobs_pages:task", args=[task])))
    return found


def trace_page(trace: Trace) -> TracePage:
    """Everything the page shows about ``trace``."""
    rows = []
    for entry in trace.entries:
        if entry.kind == "audit":
            own = reverse("admin:audit_auditevent_change", args=[entry.seq]) if entry.seq is not None else ""
        else:
            own = reverse("jobs_pages:task", args=[entry.task_id])
        rows.append(
            EntryRow(
                entry=entry,
                gap="" if entry.gap_ms is None else f"+{duration(entry.gap_ms)}",
                object_url=trace_url(entry.object_id) if entry.object_id != trace.query else "",
                request_url=trace_url(entry.request_id) if entry.request_id != trace.query else "",
                own_url=own,
                details=_details(entry),
            )
        )
    truncated = [name.replace("_", " ") for name, cut in trace.truncated.items() if cut]
    return TracePage(
        trace=trace,
        rows=rows,
        objects=[ObjectRow(o, trace_url(o.id) if o.id != trace.query else "") for o in trace.objects],
        requests=[(r, trace_url(r) if r != trace.query else "") for r in trace.request_ids],
        duration=duration(trace.duration_ms),
        truncated=truncated,
    )
