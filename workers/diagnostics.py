"""``<queue>.ping``: a task every service's worker answers, to prove the wiring end to end."""

from __future__ import annotations

import socket
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

    @app.task(name=f"{queue}.ping", bind=True)
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
