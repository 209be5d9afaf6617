"""Batches carry many requests: each item keeps its own request id, and the job says what it carried.

A task that processes items created by several requests (the payments drain, an event consumer) must not stamp
its own request id on what it does for them. Two parts of the kit make that the default:

- :func:`acting_for` (a context manager) makes an item's request id the current one while the task works on it:
  the audit events, log lines and outgoing calls made inside carry it, and the task's own id stays beside it
  (audit events get ``metadata.task_id``, see :mod:`services.kit.audit`). Set-based code that writes many items
  at once passes each item's id explicitly instead (``audit_event(request_id=...)``).
- :func:`carried` reports the request ids and object ids a task processed: the tracking stream takes them to the
  job monitor, which links the job to each (``jobs_link``), so ``GET /api/v1/jobs/tasks?request_id=X`` and the
  trace find the batch job that carried X. The first :data:`LINKS_MAX` distinct ids of each kind are sent per task;
  the totals count every distinct id reported. Outside a task (no task id in the context) it does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from services.kit.context import request_id_clean, request_id_var, task_id_var
from services.kit.tracking import tracker

LINKS_MAX = 1000  # ids of each kind linked per task; the rest are counted
ID_MAX_CHARS = 200


@dataclass
class _Carried:
    requests: set[str] = field(default_factory=set)
    objects: set[str] = field(default_factory=set)
    requests_sent: int = 0
    objects_sent: int = 0


_by_task: dict[str, _Carried] = {}
_lock = threading.Lock()


def _fresh(seen: set[str], values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        if isinstance(value, str) and value and len(value) <= ID_MAX_CHARS and value not in seen:
            seen.add(value)
            out.append(value)
    return out


def carried(*, request_ids: Iterable[str] = (), object_ids: Iterable[str] = ()) -> None:
    """Report that the running task processed items of these requests and these objects (call it per batch;
    repeats are counted once). Empty, over-long and non-string ids are skipped."""
    task_id = task_id_var.get()
    if not task_id:
        return
    with _lock:
        state = _by_task.setdefault(task_id, _Carried())
        new_requests = _fresh(state.requests, request_ids)
        new_objects = _fresh(state.objects, object_ids)
        if not new_requests and not new_objects:
            return
        send_requests = new_requests[: max(0, LINKS_MAX - state.requests_sent)]
        send_objects = new_objects[: max(0, LINKS_MAX - state.objects_sent)]
        state.requests_sent += len(send_requests)
        state.objects_sent += len(send_objects)
        event: dict[str, Any] = {
            "state": "carried",
            "task_id": task_id,
            "request_ids": send_requests,
            "object_ids": send_objects,
            "requests_total": len(state.requests),
            "objects_total": len(state.objects),
        }
    tracker.emit(event)


@contextmanager
def acting_for(request_id: str | None, *, object_id: str = "") -> Iterator[str]:
    """Work on one item of a batch under the request id it was created with (kept as is when that is missing or
    not a valid id); the running task records it as carried. Yields the request id in effect."""
    item_request = request_id_clean(request_id)
    if item_request is None:
        yield request_id_var.get() or ""
        return
    carried(request_ids=[item_request], object_ids=[object_id] if object_id else ())
    token = request_id_var.set(item_request)
    try:
        yield item_request
    finally:
        request_id_var.reset(token)


@signals.task_postrun.connect
def _forget(task_id: str | None = None, **kwargs: Any) -> None:
    """A task's run is over (success, failure or retry): its carried ids are reported; free them."""
    if task_id:
        with _lock:
            _by_task.pop(task_id, None)
