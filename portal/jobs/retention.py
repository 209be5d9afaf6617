"""How long the job dashboard keeps what it recorded (the hourly beat task ``portal.jobs_prune``).

Tasks (:class:`~portal.jobs.models.Job`, by when first seen), their events (by when they happened) and their links
to what they carried (by when reported) are kept
``JOBS_RETENTION_DAYS`` (30); the per-minute counts behind the charts ``JOBS_AGGREGATE_DAYS`` (400); workers that
said goodbye or were lost, ``JOBS_RETENTION_DAYS`` after their last heartbeat. The totals behind the Prometheus
counters are never pruned (a counter must not go down).

Rows go in batches of ``JOBS_PRUNE_BATCH`` (5,000), each its own short transaction, oldest first along an index, so
the monitor writing new rows is never held up for long; a run stops after ``JOBS_PRUNE_SECONDS`` and the next one
carries on where it stopped.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.jobs import queries
from portal.jobs.models import Worker, WorkerStatus
from services.kit.logs import get_logger

log = get_logger(__name__)

# (what, table, time column): each time column leads an index, so each batch reads only what it deletes.
_JOBS = ("jobs", "jobs_job", "seen_at")
_EVENTS = ("events", "jobs_event", "at")
_MINUTES = ("minutes", "jobs_minute", "minute")
_LINKS = ("links", "jobs_link", "at")


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def jobs_prune(now: dt.datetime | None = None) -> dict[str, Any]:
    """Delete what is older than the retention (see the module's docstring); return how many rows of each kind,
    and whether everything due went (``complete``: false when the run ran out of time)."""
    now = now or timezone.now()
    kept = dt.timedelta(days=float(_setting("JOBS_RETENTION_DAYS", 30)))
    aggregates_kept = dt.timedelta(days=float(_setting("JOBS_AGGREGATE_DAYS", 400)))
    batch = max(1, int(_setting("JOBS_PRUNE_BATCH", 5_000)))
    deadline = time.monotonic() + float(_setting("JOBS_PRUNE_SECONDS", 240))
    out: dict[str, Any] = {"jobs": 0, "events": 0, "links": 0, "minutes": 0, "workers": 0, "complete": True}
    for what, table, column, before in (
        (*_JOBS, now - kept),
        (*_EVENTS, now - kept),
        (*_LINKS, now - kept),
        (*_MINUTES, now - aggregates_kept),
    ):
        while True:
            if time.monotonic() >= deadline:
                out["complete"] = False
                break
            deleted = queries.batch_delete(table, column, before=before, batch=batch)
            out[what] += deleted
            if deleted < batch:
                break
    # A few rows at most (one per worker that ever ran): one statement.
    gone = Worker.objects.filter(status__in=[WorkerStatus.OFFLINE, WorkerStatus.LOST], last_heartbeat__lt=now - kept)
    out["workers"], _ = gone.delete()
    log.info("jobs.pruned", **out)
    return out
