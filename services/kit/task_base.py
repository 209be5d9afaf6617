"""The base class of every Atrium task: request-id context, retry defaults, late acks, JSON-safe exceptions."""

from __future__ import annotations

import json
import pickle
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from services.kit.context import request_id_clean, request_id_new, request_id_var, task_id_var
from services.kit.telemetry import task_span_annotate, telemetry_enabled


class TaskFailed(Exception):
    """Raised instead of an exception that could not cross Celery's result backend as it is (its ``args`` are not
    JSON, or it cannot be rebuilt from them, e.g. an ``__init__`` with other parameters): without it Celery
    stores an ``UnpickleableExceptionWrapper``. Names the original type; the original is its ``__cause__``, so
    the traceback keeps both."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(error_type, message)
        self.error_type = error_type
        self.message = message

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


def exception_portable(exc: BaseException) -> bool:
    """Whether ``exc`` survives Celery's result backend: JSON args, and rebuilt from them as the same type."""
    try:
        json.dumps(exc.args)
        clone = pickle.loads(pickle.dumps(exc))  # noqa: S301  (our own exception, just made)
    except Exception:
        return False
    return type(clone) is type(exc) and clone.args == exc.args


class AtriumTask(Task):
    """Every task runs with the request id it was published under (or a fresh one) and its task id
    in the logging context, acknowledges late and is redelivered if its worker dies. An exception it raises
    reaches the result backend and the job dashboard as it is when it can, else as :class:`TaskFailed`."""

    acks_late = True
    reject_on_worker_lost = True
    # Defaults for tasks that opt into autoretry_for: exponential backoff with jitter.
    max_retries = 5
    retry_backoff = True
    retry_backoff_max = 600
    retry_jitter = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        header = self.request.get("request_id") or (self.request.headers or {}).get("request_id")
        request_token = request_id_var.set(request_id_clean(header) or request_id_new())
        task_token = task_id_var.set(self.request.id)
        if telemetry_enabled():  # the task's span started before its ids were known
            task_span_annotate(request_id=request_id_var.get(), task_id=self.request.id)
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            if exception_portable(exc):
                raise
            raise TaskFailed(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)[:2000]) from exc
        finally:
            task_id_var.reset(task_token)
            request_id_var.reset(request_token)
