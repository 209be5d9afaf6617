"""The base class of every Atrium task: request-id context, retry defaults, late acks."""

from __future__ import annotations

from typing import Any

from celery import Task

from services.kit.context import request_id_clean, request_id_new, request_id_var, task_id_var


class AtriumTask(Task):
    """Every task runs with the request id it was published under (or a fresh one) and its task id
    in the logging context, acknowledges late and is redelivered if its worker dies."""

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
        try:
            return super().__call__(*args, **kwargs)
        finally:
            task_id_var.reset(task_token)
            request_id_var.reset(request_token)
