"""``<queue>.ping``: a task every service's worker answers, to prove the wiring end to end; ``<queue>.probe``: a task
that succeeds, fails, retries or sleeps on request (the job dashboard's tests and benchmark, an operator's check)."""

from __future__ import annotations

import socket
import time
from typing import Any

from celery import Task
from django.conf import settings
from django.db import DatabaseError, connection

from services.kit.context import request_id_var
from services.kit.logs import get_logger
from workers.celery import app

log = get_logger(__name__)


def _backend_pid() -> int | None:
    """The PostgreSQL backend serving this worker process (the same from task to task: connections are kept)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])
    except DatabaseError as exc:
        log.warning("ping.database_unavailable", error=str(exc))
        return None


def ping_task(queue: str) -> Task:
    """Register and return the ``<queue>.ping`` task."""

    @app.task(name=f"{queue}.ping", bind=True, housekeeping=True)
    def ping(self: Any, message: str = "ping", database: bool = False) -> dict[str, Any]:
        """Answer who ran it; with ``database``, also which PostgreSQL backend serves this worker process."""
        log.info(f"{queue}.ping", message=message[:200])
        return {
            "message": message[:200],
            "request_id": request_id_var.get(),
            "task_id": self.request.id,
            "hostname": self.request.hostname or socket.gethostname(),
            "service": settings.ATRIUM_SERVICE,
            "database_backend": _backend_pid() if database else None,
        }

    return ping


class ProbeFailed(Exception):
    """What ``<queue>.probe`` raises when asked to fail."""


class ProbeRefused(Exception):
    """What ``<queue>.probe`` raises when asked to fail ``unportable``: an exception that cannot be rebuilt from its
    ``args`` (its ``__init__`` takes other parameters), the shape that Celery turns into an
    ``UnpickleableExceptionWrapper`` unless the base task makes it portable."""

    def __init__(self, code: str, detail: str, status: int) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail, self.status = code, detail, status


def probe_task(queue: str) -> Task:
    """Register and return ``<queue>.probe``: a task that does what it is told, to see the job dashboard (and the
    worker it runs on) deal with every outcome — succeed, fail, retry, or take its time."""

    @app.task(name=f"{queue}.probe", bind=True, max_retries=5)
    def probe(
        self: Any,
        outcome: str = "succeed",
        *,
        fail_times: int = 0,
        fail_until: float | None = None,
        sleep: float = 0.0,
        countdown: float = 0.1,
    ) -> dict[str, Any]:
        """``outcome``: ``succeed``; ``fail`` (raises :class:`ProbeFailed` — until the Unix time ``fail_until``, if
        given: a transient fault that a later re-run gets past); ``unportable`` (raises :class:`ProbeRefused`,
        which cannot cross the result backend as it is); ``retry`` (fails ``fail_times`` times, retrying
        after ``countdown`` seconds, then succeeds). ``sleep`` seconds first (at most 60)."""
        if sleep:
            time.sleep(min(float(sleep), 60.0))
        if outcome == "fail" and (fail_until is None or time.time() < fail_until):
            raise ProbeFailed(f"{queue}.probe was asked to fail")
        if outcome == "unportable":
            raise ProbeRefused("probe_refused", f"{queue}.probe was asked to fail unportably", 422)
        if outcome == "retry" and self.request.retries < fail_times:
            raise self.retry(
                exc=ProbeFailed(f"attempt {self.request.retries + 1} of {fail_times + 1} fails"), countdown=countdown
            )
        return {"outcome": outcome, "retries": self.request.retries, "service": settings.ATRIUM_SERVICE}

    return probe


def noop_task(queue: str) -> Task:
    """Register and return ``<queue>.noop``: does nothing, stores no result (what ``bench/jobs.py`` measures the
    cost of tracking against)."""

    @app.task(name=f"{queue}.noop", ignore_result=True)
    def noop() -> None:
        return None

    return noop
