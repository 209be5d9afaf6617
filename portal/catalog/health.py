"""Health: polling every service's health URL, and marking instances that stopped heartbeating.

:func:`health_poll` is what the beat task ``portal.catalog_health`` runs every few seconds. It picks the
services whose check is due (each has its own ``health_interval_seconds``), polls their health URLs at once
in a bounded thread pool (``CATALOG_HEALTH_CONCURRENCY``), each with its own timeout
(``CATALOG_HEALTH_TIMEOUT``), so a service that accepts the connection and never answers costs its own check
its timeout and delays no other. Each result is stored (:class:`~portal.catalog.models.HealthCheck`):

* ``passing`` — a 2xx answer within ``CATALOG_HEALTH_SLOW_MS``;
* ``warning`` — a 2xx answer slower than that, or a 3xx/4xx other than 429 (redirects are not followed);
* ``critical`` — 429, 5xx, a timeout, a refused or broken connection, a TLS or DNS failure, or a URL the
  kit's outbound guard refuses (``blocked``: an address inside the network that is not allow-listed).

Every request goes through the kit's outbound guard (``services/kit/outbound.py``); a check keeps the status
code and the guard's error class, never anything of the answer's body or an exception's text.

:func:`instances_mark` turns an instance that missed three heartbeats ``critical``, and one silent for
``CATALOG_INSTANCE_GONE_SECONDS`` — or replaced by a newer instance on its host (a restart) — ``gone``; a heartbeat
makes it ``passing`` again. Nothing is deleted.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.catalog import queries
from portal.catalog.models import HealthCheck, HealthStatus, Instance, InstanceStatus, Service
from services.kit.logs import get_logger
from services.kit.outbound import BLOCKED, outbound_request

log = get_logger(__name__)


@dataclass
class Probe:
    slug: str
    status: str
    http_status: int | None
    latency_ms: int | None
    error: str  # the guard's error class, or blank


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def probe(slug: str, url: str) -> Probe:
    """One check of ``url`` through the kit's outbound guard (never raises: a failure is a ``critical`` result
    with its error class). Nothing of the answer is read but its status."""
    timeout = _setting("CATALOG_HEALTH_TIMEOUT", 3.0)
    result = outbound_request("GET", url, connect_timeout=timeout, timeout=timeout, max_bytes=0)
    code = result.status_code
    if code is None:
        return Probe(slug, HealthStatus.CRITICAL, None, result.elapsed_ms, result.error or "")
    if 200 <= code < 300:
        slow = (result.elapsed_ms or 0) > _setting("CATALOG_HEALTH_SLOW_MS", 1000)
        return Probe(slug, HealthStatus.WARNING if slow else HealthStatus.PASSING, code, result.elapsed_ms, "")
    status = HealthStatus.CRITICAL if code == 429 or code >= 500 else HealthStatus.WARNING
    return Probe(slug, status, code, result.elapsed_ms, result.error or "")


def due(now: dt.datetime) -> list[Service]:
    """Services with a health URL whose check is due, the longest waiting first (a catalog holds tens or
    hundreds of services: read them all)."""
    waiting = [
        s
        for s in Service.objects.exclude(health_url="")
        if s.last_checked_at is None or s.last_checked_at <= now - dt.timedelta(seconds=s.health_interval_seconds)
    ]
    return sorted(waiting, key=lambda s: s.last_checked_at or dt.datetime.min.replace(tzinfo=dt.UTC))


def health_poll(*, services: list[Service] | None = None) -> dict[str, Any]:
    """Check the due services (or ``services``) at once; store the results; return counts by status."""
    now = timezone.now()
    targets = due(now) if services is None else services
    if not targets:
        return {"checked": 0}
    workers = max(1, min(len(targets), int(_setting("CATALOG_HEALTH_CONCURRENCY", 8))))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="catalog-health") as pool:
        results = list(pool.map(lambda s: probe(s.slug, s.health_url), targets))
    checked_at = timezone.now()
    by_slug = {s.slug: s for s in targets}
    with transaction.atomic():
        HealthCheck.objects.bulk_create(
            [
                HealthCheck(
                    service=by_slug[r.slug],
                    status=r.status,
                    http_status=r.http_status,
                    latency_ms=r.latency_ms,
                    error=r.error,
                    checked_at=checked_at,
                )
                for r in results
            ]
        )
        for result in results:
            Service.objects.filter(id=by_slug[result.slug].id).update(
                health_status=result.status, last_checked_at=checked_at
            )
    counts: dict[str, Any] = {"checked": len(results), "seconds": round(time.monotonic() - started, 3)}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    failing = sorted(r.slug for r in results if r.status == HealthStatus.CRITICAL)
    if failing:
        log.warning("catalog.health_critical", services=failing)
    blocked = sorted(r.slug for r in results if r.error == BLOCKED)
    if blocked:
        # An operator's hint: a service inside the network whose network is not allow-listed lands here too.
        log.warning("catalog.health_blocked", services=blocked, setting="ATRIUM_OUTBOUND_ALLOW_NETWORKS")
    return counts


def instances_mark(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Instances that missed three heartbeats become ``critical``; silent for ``CATALOG_INSTANCE_GONE_SECONDS``,
    ``gone``. Return how many changed to each."""
    now = now or timezone.now()
    interval = _setting("CATALOG_HEARTBEAT_SECONDS", 10)
    gone = Instance.objects.exclude(status=InstanceStatus.GONE).filter(
        last_heartbeat__lt=now - dt.timedelta(seconds=_setting("CATALOG_INSTANCE_GONE_SECONDS", 3600))
    )
    gone_count = gone.update(status=InstanceStatus.GONE)
    critical = Instance.objects.filter(
        status=InstanceStatus.PASSING, last_heartbeat__lt=now - dt.timedelta(seconds=3 * interval)
    )
    critical_count = critical.update(status=InstanceStatus.CRITICAL)
    # A restarted process is a new instance on the same host: the one it replaced is gone, not an outage.
    replaced_count = queries.instances_mark_replaced(before=now - dt.timedelta(seconds=3 * interval))
    if gone_count or critical_count or replaced_count:
        log.warning("catalog.instances_marked", critical=critical_count, gone=gone_count, replaced=replaced_count)
    return {"critical": critical_count, "gone": gone_count + replaced_count}


UPTIME_WINDOWS = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30)}


def uptime_grace() -> float:
    """How many of its check intervals one check covers at most (``CATALOG_UPTIME_GAP_INTERVALS``, 3): a longer
    gap between two checks is unknown time."""
    return _setting("CATALOG_UPTIME_GAP_INTERVALS", 3)


def health_roll_up(*, now: dt.datetime | None = None) -> int:
    """Fold checks older than ``CATALOG_HEALTH_RAW_DAYS`` into hourly counts and covered time (one statement: the
    checks are deleted and counted together, so none is lost or counted twice); return how many hours were
    written."""
    now = now or timezone.now()
    before = now - dt.timedelta(days=_setting("CATALOG_HEALTH_RAW_DAYS", 2))
    return queries.health_roll_up(before=before, now=now, grace=uptime_grace())


@dataclass(frozen=True)
class Uptime:
    """Uptime over one window, honestly: the share of the *observed* time that was up, and how much was observed.

    A check covers the time until its service's next check, at most :func:`uptime_grace` check intervals; time no
    check covers (the portal's poller or the whole stack stopped, a long gap) is unknown, neither up nor down."""

    window: str
    window_seconds: float
    observed_seconds: float
    up_seconds: float

    @property
    def percent(self) -> float | None:
        """Up over observed time, in per cent (None: nothing observed)."""
        if self.observed_seconds <= 0:
            return None
        return round(min(100.0, 100.0 * self.up_seconds / self.observed_seconds), 3)

    @property
    def coverage(self) -> float:
        """The share of the window that checks covered, in per cent."""
        return round(min(100.0, 100.0 * self.observed_seconds / self.window_seconds), 3)

    def as_dict(self) -> dict[str, float | None]:
        return {
            "percent": self.percent,
            "observed_seconds": round(self.observed_seconds, 1),
            "window_seconds": self.window_seconds,
            "coverage": self.coverage,
        }


def uptime_detail(services: list[Service], *, now: dt.datetime | None = None) -> dict[int, dict[str, Uptime]]:
    """Service id → window (``24h``, ``7d``, ``30d``) → its :class:`Uptime`, from the single checks and the hourly
    roll-ups (two queries whatever the number of services)."""
    now = now or timezone.now()
    ids = [s.id for s in services]
    if not ids:
        return {}
    totals = queries.uptime_totals(
        ids=ids, since=[now - w for w in UPTIME_WINDOWS.values()], now=now, grace=uptime_grace()
    )
    out: dict[int, dict[str, Uptime]] = {}
    for service_id, values in totals.items():
        out[service_id] = {
            name: Uptime(name, window.total_seconds(), values[2 * index], values[2 * index + 1])
            for index, (name, window) in enumerate(UPTIME_WINDOWS.items())
        }
    return out


def uptime(services: list[Service], *, now: dt.datetime | None = None) -> dict[int, dict[str, float | None]]:
    """Service id → window → the percentage of the observed time that was up (None: nothing observed)."""
    return {
        service_id: {name: figure.percent for name, figure in windows.items()}
        for service_id, windows in uptime_detail(services, now=now).items()
    }
