"""Health: polling every service's health URL, and marking instances that stopped heartbeating.

:func:`health_poll` is what the beat task ``portal.catalog_health`` runs every few seconds. It picks the
services whose check is due (each has its own ``health_interval_seconds``), polls their health URLs at once
in a bounded thread pool (``CATALOG_HEALTH_CONCURRENCY``), each with its own timeout
(``CATALOG_HEALTH_TIMEOUT``), so a service that accepts the connection and never answers costs its own check
its timeout and delays no other. Each result is stored (:class:`~portal.catalog.models.HealthCheck`):

* ``passing`` — a 2xx answer within ``CATALOG_HEALTH_SLOW_MS``;
* ``warning`` — a 2xx answer slower than that, or a 3xx/4xx other than 429;
* ``critical`` — 429, 5xx, a timeout, a refused or broken connection.

:func:`instances_mark` turns an instance that missed three heartbeats ``critical`` and one silent for
``CATALOG_INSTANCE_GONE_SECONDS`` ``gone``; a heartbeat makes it ``passing`` again. Nothing is deleted.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.catalog.models import HealthCheck, HealthStatus, Instance, InstanceStatus, Service
from services.kit.logs import get_logger

log = get_logger(__name__)


@dataclass
class Probe:
    slug: str
    status: str
    http_status: int | None
    latency_ms: int | None
    detail: str


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def probe(slug: str, url: str, client: httpx.Client) -> Probe:
    """One check of ``url`` (never raises: a failure is a ``critical`` result)."""
    started = time.monotonic()
    try:
        response = client.get(url)
    except httpx.TimeoutException:
        elapsed = int((time.monotonic() - started) * 1000)
        return Probe(slug, HealthStatus.CRITICAL, None, elapsed, "timed out")
    except httpx.HTTPError as exc:
        return Probe(slug, HealthStatus.CRITICAL, None, None, f"{type(exc).__name__}: {exc}"[:500])
    latency = int((time.monotonic() - started) * 1000)
    code = response.status_code
    if 200 <= code < 300:
        slow = latency > _setting("CATALOG_HEALTH_SLOW_MS", 1000)
        return Probe(
            slug, HealthStatus.WARNING if slow else HealthStatus.PASSING, code, latency, "slow" if slow else ""
        )
    status = HealthStatus.CRITICAL if code == 429 or code >= 500 else HealthStatus.WARNING
    return Probe(slug, status, code, latency, response.text[:200])


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
    timeout = _setting("CATALOG_HEALTH_TIMEOUT", 3.0)
    workers = max(1, min(len(targets), int(_setting("CATALOG_HEALTH_CONCURRENCY", 8))))
    started = time.monotonic()
    with (
        httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False) as client,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="catalog-health") as pool,
    ):
        results = list(pool.map(lambda s: probe(s.slug, s.health_url, client), targets))
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
                    detail=r.detail,
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
    if gone_count or critical_count:
        log.warning("catalog.instances_marked", critical=critical_count, gone=gone_count)
    return {"critical": critical_count, "gone": gone_count}
