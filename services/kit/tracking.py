"""Task tracking: every task's life cycle, from every process, appended to a Redis stream the job monitor reads.

Celery signals in each process describe what happened — published (``queued``), ``received``, ``started``,
``retried`` (with the reason), ``succeeded`` (runtime, a result summary), ``failed`` (exception, traceback),
``revoked``, ``rejected`` — and each worker's main process adds a heartbeat every
``JOBS_WORKER_HEARTBEAT_SECONDS`` (pool, active and reserved tasks, version) and says goodbye when it stops.

Recording must not slow the workers: a signal handler only appends a small dict to an in-process buffer. A
background thread (one per process, started again in a forked child) sends the buffer every
``JOBS_TRACKING_FLUSH_SECONDS`` (0.1 s), or as soon as it holds ``JOBS_TRACKING_BATCH`` events, as one stream
entry holding the whole batch (a JSON list) — one command and one round trip per batch. While Redis is away
the buffer is kept (at most ``JOBS_TRACKING_BUFFER_MAX`` events, the oldest dropped first, counted in the log)
and sent when it is back; a worker shutting down sends what it holds.

The stream (``JOBS_STREAM``) is durable for the monitor: it reads with a consumer group and acknowledges a batch
only after committing it, so a monitor that stops or crashes resumes where it was. It is trimmed to about
``JOBS_STREAM_MAXLEN`` entries (batches): a monitor away long enough for that many to pass loses the oldest.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import traceback as tb
from typing import Any

from celery import signals

from services.kit.background import BackgroundThread
from services.kit.logs import get_logger
from services.kit.queues import QUEUE_SERVICES
from services.kit.redaction import redact

log = get_logger(__name__)

ARGS_MAX_CHARS = 2_000  # what the dashboard shows of args/kwargs (redacted)
PAYLOAD_MAX_CHARS = 64_000  # the raw args kept for a retry from the dashboard
RESULT_MAX_CHARS = 500
TRACEBACK_MAX_CHARS = 20_000


def _setting(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


def _now() -> float:
    return time.time()


class Tracker(BackgroundThread):
    """The per-process buffer of tracking events and the thread that sends it."""

    def __init__(self) -> None:
        super().__init__(name="jobs-tracking")
        self.after_fork()

    def after_fork(self) -> None:
        self.buffer: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.dropped = 0
        self.sent = 0
        self._redis: Any = None

    # --- producing ------------------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        if not _setting("JOBS_TRACKING", True):
            return
        event.setdefault("at", _now())
        with self.lock:
            self.buffer.append(event)
            size = len(self.buffer)
        self.start()
        if size >= int(_setting("JOBS_TRACKING_BATCH", 500)):
            self.wake.set()

    # --- sending --------------------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                _setting("JOBS_REDIS_URL", "") or _setting("REDIS_URL", ""), socket_timeout=5, socket_connect_timeout=2
            )
        return self._redis

    def run(self) -> None:
        backoff = 0.0
        while not self.halt.is_set():
            self.wake.wait(max(backoff, float(_setting("JOBS_TRACKING_FLUSH_SECONDS", 0.1))))
            self.wake.clear()
            try:
                self.flush()
                backoff = 0.0
            except Exception as exc:  # Redis away: keep the events, try again later
                backoff = min(5.0, max(0.2, backoff * 2))
                log.warning("jobs.tracking_send_failed", error=str(exc)[:300], pending=len(self.buffer))

    def flush(self) -> int:
        """Send what the buffer holds now (raises if Redis refuses; the events are then kept)."""
        with self.lock:
            batch, self.buffer = self.buffer, []
        if not batch:
            return 0
        stream = _setting("JOBS_STREAM", "atrium:jobs:events")
        maxlen = int(_setting("JOBS_STREAM_MAXLEN", 500_000))
        size = max(1, int(_setting("JOBS_TRACKING_BATCH", 500)))
        try:
            # One stream entry per batch of events: one command, one entry to store and acknowledge.
            pipe = self._client().pipeline(transaction=False)
            for start in range(0, len(batch), size):
                body = json.dumps(batch[start : start + size], separators=(",", ":"), default=str)
                pipe.xadd(stream, {"b": body}, maxlen=maxlen, approximate=True)
            pipe.execute()
        except BaseException:
            with self.lock:
                self.buffer[:0] = batch
                limit = int(_setting("JOBS_TRACKING_BUFFER_MAX", 100_000))
                if len(self.buffer) > limit:
                    over = len(self.buffer) - limit
                    del self.buffer[:over]
                    self.dropped += over
                    log.error("jobs.tracking_dropped", dropped=over, total_dropped=self.dropped)
            raise
        self.sent += len(batch)
        return len(batch)

    def close(self, timeout: float = 3.0) -> None:
        """Send what is left (a stopping process), trying for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.buffer and time.monotonic() < deadline:
            try:
                self.flush()
            except Exception:
                time.sleep(0.1)


tracker = Tracker()
atexit.register(tracker.close)


# --- what the events carry -------------------------------------------------------------------------------------


def _capped(value: Any, limit: int) -> Any:
    """``value`` as JSON if it fits in ``limit`` characters, else a truncated string of it."""
    try:
        text = json.dumps(value, default=repr, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= limit:
        return json.loads(text)
    return text[: limit - 1] + "…"


def _shown(args: Any, kwargs: Any) -> tuple[Any, Any]:
    return _capped(redact(list(args or [])), ARGS_MAX_CHARS), _capped(redact(dict(kwargs or {})), ARGS_MAX_CHARS)


def _payload(args: Any, kwargs: Any) -> dict[str, Any] | None:
    """The raw args, kept (not shown) so the dashboard can run the task again; None when too large."""
    try:
        text = json.dumps({"args": list(args or []), "kwargs": dict(kwargs or {})}, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return json.loads(text) if len(text) <= PAYLOAD_MAX_CHARS else None


def _service_of(queue: str) -> str:
    return QUEUE_SERVICES.get(queue, "")


def _request_queue(request: Any) -> str:
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") or info.get("queue") or ""


def _housekeeping(task: Any) -> bool:
    """Whether a task is marked housekeeping in its definition (``housekeeping=True`` on its decorator)."""
    return getattr(task, "housekeeping", False) is True


def _registered(name: str) -> Any:
    """The task ``name`` if this process registered it, else None."""
    from celery import current_app

    return current_app.tasks.get(name)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else value.isoformat()


# --- signals ---------------------------------------------------------------------------------------------------

_started: dict[str, float] = {}  # task id → perf counter at start, in the process running it


@signals.before_task_publish.connect
def _stamp(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """When the message was published: the queue's oldest-message age reads it from the broker."""
    if headers is not None:
        headers["atrium_published_at"] = _now()  # a retry carries its first publish's headers: stamp anew


@signals.after_task_publish.connect
def _published(
    sender: str | None = None,
    body: Any = None,
    routing_key: str | None = None,
    headers: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Published (only once the broker took it: a failed publish is no job)."""
    if headers is None or "id" not in headers:
        return
    args, task_kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) and len(body) >= 2 else ((), {})
    shown_args, shown_kwargs = _shown(args, task_kwargs)
    queue = routing_key or ""
    from services.kit.context import request_id_var

    tracker.emit(
        {
            "state": "queued",
            # when the publish began: a fast worker can receive and finish the task before this handler runs
            "at": headers.get("atrium_published_at") or _now(),
            "task_id": headers["id"],
            "name": sender or headers.get("task", ""),
            "queue": queue,
            "service": _service_of(queue),
            "args": shown_args,
            "kwargs": shown_kwargs,
            "payload": _payload(args, task_kwargs),
            "request_id": headers.get("request_id") or request_id_var.get() or "",
            "parent_id": headers.get("parent_id") or "",
            "root_id": headers.get("root_id") or "",
            "retry_of": headers.get("atrium_retry_of") or "",
            "eta": headers.get("eta"),
            "retries": headers.get("retries") or 0,
            # django-celery-beat names the schedule entry in a header (beat's sends, and "run now" from the dashboard)
            "periodic": str(headers.get("periodic_task_name") or "")[:200],
            "housekeeping": _housekeeping(_registered(sender or headers.get("task", ""))),
        }
    )


@signals.task_received.connect
def _received(request: Any = None, **kwargs: Any) -> None:
    if request is None:
        return
    queue = _request_queue(request)
    tracker.emit(
        {
            "state": "received",
            "task_id": request.id,
            "name": request.name,
            "queue": queue,
            "service": _service_of(queue),
            "worker": request.hostname or "",
            "eta": _iso(getattr(request, "eta", None)),
            "housekeeping": _housekeeping(getattr(request, "task", None)),
        }
    )


@signals.task_prerun.connect
def _prerun(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **kw: Any) -> None:
    if task is None or task_id is None or getattr(task.request, "is_eager", False):
        return
    _started[task_id] = time.perf_counter()
    queue = _request_queue(task.request)
    headers = task.request.headers or {}
    tracker.emit(
        {
            "state": "started",
            "task_id": task_id,
            "name": task.name,
            "queue": queue,
            "service": _service_of(queue),
            "worker": task.request.hostname or "",
            "pid": os.getpid(),
            "retries": task.request.retries or 0,
            "request_id": task.request.get("request_id") or headers.get("request_id") or "",
            "parent_id": task.request.parent_id or "",
            "root_id": task.request.root_id or "",
            "housekeeping": _housekeeping(task),
        }
    )


def _runtime_ms(task_id: str) -> float | None:
    started = _started.pop(task_id, None)
    return None if started is None else round((time.perf_counter() - started) * 1000, 3)


@signals.task_postrun.connect
def _postrun(
    task_id: str | None = None, task: Any = None, retval: Any = None, state: str | None = None, **kw: Any
) -> None:
    if task is None or task_id is None or getattr(task.request, "is_eager", False) or state != "SUCCESS":
        _started.pop(task_id or "", None)  # failures and retries were reported by their own signals
        return
    tracker.emit(
        {
            "state": "succeeded",
            "task_id": task_id,
            "name": task.name,
            "worker": task.request.hostname or "",
            "runtime_ms": _runtime_ms(task_id),
            "result": _capped(retval, RESULT_MAX_CHARS) if retval is not None else None,
        }
    )


def _exception_type(exc: Any) -> str:
    """The exception's class name; for the base task's ``TaskFailed``, the class it stands for."""
    error_type = getattr(exc, "error_type", None)
    if isinstance(error_type, str) and error_type:
        return error_type.rpartition(".")[2]
    return type(exc).__name__


@signals.task_retry.connect
def _retried(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **kw: Any) -> None:
    if request is None or getattr(request, "is_eager", False):
        return
    tracker.emit(
        {
            "state": "retried",
            "task_id": request.id,
            "name": getattr(sender, "name", "") or "",
            "worker": request.hostname or "",
            "runtime_ms": _runtime_ms(request.id),
            "reason": str(reason)[:1000],
            "exception_type": _exception_type(getattr(einfo, "exception", None) or reason),
        }
    )


@signals.task_failure.connect
def _failed(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, einfo: Any = None, **kw: Any
) -> None:
    request = getattr(sender, "request", None)
    if task_id is None or getattr(request, "is_eager", False):
        return
    trace = str(getattr(einfo, "traceback", "") or "")
    if not trace and exception is not None:
        trace = "".join(tb.format_exception(exception))
    tracker.emit(
        {
            "state": "failed",
            "task_id": task_id,
            "name": getattr(sender, "name", "") or "",
            "worker": getattr(request, "hostname", "") or "",
            "runtime_ms": _runtime_ms(task_id),
            "exception_type": _exception_type(exception) if exception is not None else "",
            "exception_message": str(exception)[:2000] if exception is not None else "",
            "traceback": trace[-TRACEBACK_MAX_CHARS:],
        }
    )


@signals.task_revoked.connect
def _revoked(
    sender: Any = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **kw: Any,
) -> None:
    if request is None:
        return
    # ``request`` is the task's context here (not a worker Request): its name is the sender's.
    tracker.emit(
        {
            "state": "revoked",
            "task_id": request.id,
            "name": getattr(sender, "name", "") or getattr(request, "task", "") or "",
            "worker": getattr(request, "hostname", "") or "",
            "terminated": bool(terminated),
            "expired": bool(expired),
        }
    )


@signals.task_rejected.connect
def _rejected(message: Any = None, exc: Any = None, **kw: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    if "id" in headers:
        tracker.emit(
            {"state": "rejected", "task_id": headers["id"], "name": headers.get("task", ""), "reason": str(exc)[:1000]}
        )


@signals.task_unknown.connect
def _unknown(name: str | None = None, id: str | None = None, message: Any = None, exc: Any = None, **kw: Any) -> None:
    if id:
        tracker.emit({"state": "rejected", "task_id": id, "name": name or "", "reason": f"unknown task: {exc}"[:1000]})


# --- workers ---------------------------------------------------------------------------------------------------


class _Heart(BackgroundThread):
    """A worker's heartbeat into the stream, from its main process."""

    def __init__(self, consumer: Any) -> None:
        super().__init__(name="jobs-worker-heartbeat")
        self.consumer = consumer
        self.started_at = _now()

    def beat(self, state: str = "worker-heartbeat") -> None:
        from celery import __version__ as celery_version
        from celery.worker import state as worker_state
        from django.conf import settings

        controller = getattr(self.consumer, "controller", None)
        pool = getattr(controller, "pool", None)
        tracker.emit(
            {
                "state": state,
                "worker": self.consumer.hostname,
                "service": settings.ATRIUM_SERVICE,
                "queues": sorted(q.name for q in self.consumer.task_consumer.queues)
                if self.consumer.task_consumer
                else [],
                "pid": os.getpid(),
                "pool": type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else "",
                "concurrency": getattr(pool, "limit", None) or getattr(controller, "concurrency", None),
                "active": len(worker_state.active_requests),
                "reserved": len(worker_state.reserved_requests),
                "processed": sum(worker_state.total_count.values()),
                "sw_version": f"celery {celery_version}; atrium {settings.SPECTACULAR_SETTINGS['VERSION']}",
                "started_at": self.started_at,
            }
        )

    def run(self) -> None:
        while not self.halt.wait(float(_setting("JOBS_WORKER_HEARTBEAT_SECONDS", 5))):
            try:
                self.beat()
            except Exception as exc:
                log.warning("jobs.worker_heartbeat_failed", error=str(exc)[:300])


_heart: _Heart | None = None


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **kwargs: Any) -> None:
    global _heart
    if sender is None or not _setting("JOBS_TRACKING", True):
        return
    _heart = _Heart(sender)
    _heart.beat()
    _heart.start()


@signals.worker_shutdown.connect
def _worker_shutdown(**kwargs: Any) -> None:
    if _heart is not None:
        _heart.stop(timeout=1.0)
        try:
            _heart.beat("worker-offline")
        except Exception as exc:
            log.warning("jobs.worker_offline_failed", error=str(exc)[:300])
    tracker.close()


@signals.worker_process_shutdown.connect
def _child_shutdown(**kwargs: Any) -> None:
    tracker.close()
