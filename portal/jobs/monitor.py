"""The job monitor: reads the tracking stream with a consumer group, records each batch, acknowledges it after.

``manage.py jobs_monitor`` runs :class:`Monitor` (one process is enough; a second waits its turn on each batch).
At start it creates the consumer group if it is missing (from the stream's first entry: nothing already in the
stream is skipped), reads back what it had read but not acknowledged when it last stopped, and takes over what
another consumer left pending for longer than ``JOBS_MONITOR_CLAIM_SECONDS``. Then it reads new entries, up to
``JOBS_MONITOR_BATCH`` (20) at a time — each entry is one process's batch of up to ``JOBS_TRACKING_BATCH`` events
— records them in one transaction (:func:`portal.jobs.recorder.record`) and
acknowledges them; after a batch that was not full it waits ``JOBS_MONITOR_GATHER_SECONDS`` (0.5) for the next
to gather (fewer, larger transactions: far less work per event). A monitor that stops between the commit and the
acknowledgement reads the batch again and records nothing twice.

A poisoned entry or event never blocks the others: :func:`~portal.jobs.recorder.record` isolates it (splitting
the batch), retries it a bounded number of times and parks it in ``jobs_deadletter``; the monitor acknowledges it
with the rest and goes on. Only the database being away keeps a batch pending (read again after a backoff).

Every few seconds it also marks workers that stopped heartbeating without saying goodbye ``lost``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from portal.jobs.models import Worker, WorkerStatus
from portal.jobs.recorder import Recorded, record
from services.kit.logs import get_logger

log = get_logger(__name__)

GROUP = "jobs-monitor"


def stream() -> str:
    return settings.JOBS_STREAM


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.JOBS_REDIS_URL or settings.REDIS_URL, socket_timeout=10)


def group_ensure(client: redis.Redis) -> None:
    """The consumer group, created from the stream's beginning if it does not exist."""
    try:
        client.xgroup_create(stream(), GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def workers_mark_lost(*, now: dt.datetime | None = None) -> int:
    """Online workers silent for three heartbeat intervals become ``lost``; return how many."""
    now = now or timezone.now()
    silent = now - dt.timedelta(seconds=3 * float(settings.JOBS_WORKER_HEARTBEAT_SECONDS))
    lost = Worker.objects.filter(status=WorkerStatus.ONLINE, last_heartbeat__lt=silent).update(status=WorkerStatus.LOST)
    if lost:
        log.warning("jobs.workers_lost", count=lost)
    return lost


class Monitor:
    """One consumer of the tracking stream."""

    def __init__(
        self, *, consumer: str | None = None, batch: int | None = None, block_ms: int = 1000, client: Any = None
    ) -> None:
        self.consumer = consumer or settings.JOBS_MONITOR_CONSUMER or f"{socket.gethostname()}"
        self.batch = batch or int(settings.JOBS_MONITOR_BATCH)
        self.block_ms = block_ms
        self.gather = float(settings.JOBS_MONITOR_GATHER_SECONDS)
        self.client = client or redis_client()
        self.backlog = True  # read our own pending entries first
        self.recorded = Recorded()
        self._last_claim = 0.0
        self._last_lost = 0.0

    def _read(self) -> list[tuple[Any, dict[Any, Any]]]:
        if self.backlog:  # what this consumer read before and did not acknowledge
            reply = self.client.xreadgroup(GROUP, self.consumer, {stream(): "0"}, count=self.batch)
            entries = reply[0][1] if reply else []
            # An entry trimmed away while pending comes back without fields: acknowledge it, say so.
            gone = [sid for sid, fields in entries if not fields]
            if gone:
                self.client.xack(stream(), GROUP, *gone)
                log.error("jobs.monitor_pending_trimmed", count=len(gone))
            if entries:
                return [(sid, fields) for sid, fields in entries if fields]
            self.backlog = False
        reply = self.client.xreadgroup(GROUP, self.consumer, {stream(): ">"}, count=self.batch, block=self.block_ms)
        return reply[0][1] if reply else []

    def _claim(self) -> list[tuple[Any, dict[Any, Any]]]:
        """Entries another consumer read and never acknowledged (it crashed, or was renamed)."""
        idle_ms = int(float(settings.JOBS_MONITOR_CLAIM_SECONDS) * 1000)
        reply = self.client.xautoclaim(stream(), GROUP, self.consumer, min_idle_time=idle_ms, count=self.batch)
        entries = [(sid, fields) for sid, fields in reply[1] if fields]
        if entries:
            log.warning("jobs.monitor_claimed", count=len(entries))
        return entries

    def step(self) -> int:
        """Read, record and acknowledge one batch; return how many entries it held."""
        now = time.monotonic()
        entries: list[tuple[Any, dict[Any, Any]]] = []
        try:
            if now - self._last_claim > 30:
                self._last_claim = now
                entries = self._claim()
            if not entries:
                entries = self._read()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream and its group are gone: Redis restarted without persistence, or was flushed. Processes
            # append to a new stream (XADD makes it); the group is made again from its first entry, so what they
            # wrote since is recorded (docs/deploy.md, "What Atrium keeps in Redis").
            log.warning("jobs.monitor_group_recreated", stream=stream())
            group_ensure(self.client)
            self.backlog = False
            return 0
        if entries:
            done = record(entries)
            self.client.xack(stream(), GROUP, *[sid for sid, _ in entries])
            self.recorded.events += done.events
            self.recorded.new += done.new
            self.recorded.jobs += done.jobs
            self.recorded.parked += done.parked
        if now - self._last_lost > 5:
            self._last_lost = now
            workers_mark_lost()
        return len(entries)

    def run(self, stop: threading.Event) -> None:
        group_ensure(self.client)
        log.info("jobs.monitor_started", consumer=self.consumer, stream=stream(), pid=os.getpid())
        backoff = 0.5
        while not stop.is_set():
            try:
                close_old_connections()
                if self.step() < self.batch:
                    # Not a full batch: let the next one gather for a moment. Fewer, larger transactions cost the
                    # database and this process far less per event; the dashboard is behind by at most this long.
                    stop.wait(self.gather)
                backoff = 0.5
            except (redis.RedisError, OSError) as exc:
                log.warning("jobs.monitor_redis_failed", error=str(exc)[:300], retry_in=backoff)
                stop.wait(backoff)
                backoff = min(10.0, backoff * 2)
            except Exception as exc:  # the database away, most likely: the batch stays pending and comes back
                log.error("jobs.monitor_failed", error=f"{type(exc).__name__}: {exc}"[:500], retry_in=backoff)
                from django.db import connection

                connection.close()
                self.backlog = True
                stop.wait(backoff)
                backoff = min(10.0, backoff * 2)
        log.info("jobs.monitor_stopped", consumer=self.consumer, **vars(self.recorded))
