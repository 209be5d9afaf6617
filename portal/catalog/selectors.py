"""Catalog reads: a service or team by slug (with what their status needs) and health by hour (the API); the
services, teams, instances and checks the admin pages show.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from portal.catalog import queries
from portal.catalog.errors import ServiceNotFound, TeamNotFound
from portal.catalog.health import uptime_detail
from portal.catalog.models import HealthCheck, HealthHour, HealthStatus, Instance, InstanceStatus, Service, Team
from portal.catalog.systems import ServiceGroup, groups

HOUR = dt.timedelta(hours=1)
HOURS_WINDOW_MAX = dt.timedelta(days=31)


def service_queryset() -> QuerySet[Service]:
    """Services with what the API shows of them (team, dependencies, instances) in three queries."""
    return Service.objects.select_related("owner").prefetch_related("dependencies", "instances")


def service_get(*, slug: str) -> Service:
    service = service_queryset().filter(slug=slug).first()
    if service is None:
        raise ServiceNotFound(f"No service {slug!r} in the catalog.")
    return service


def instance_queryset(*, slug: str) -> QuerySet[Instance]:
    """The instances of the service ``slug``, gone ones included."""
    return Instance.objects.filter(service__slug=slug)


def health_check_queryset(*, slug: str) -> QuerySet[HealthCheck]:
    """The single health checks of the service ``slug``."""
    return HealthCheck.objects.filter(service__slug=slug)


def service_id_get(*, slug: str) -> int:
    """The id of ``slug`` (404 ``service_not_found`` if it is not in the catalog)."""
    found = Service.objects.filter(slug=slug).values_list("id", flat=True).first()
    if found is None:
        raise ServiceNotFound(f"No service {slug!r} in the catalog.")
    return found


def team_queryset() -> QuerySet[Team]:
    """Teams with their services and those services' instances (what each service's status needs)."""
    services = Service.objects.prefetch_related("instances").order_by("slug")
    return Team.objects.prefetch_related(Prefetch("services", queryset=services))


def team_get(*, slug: str) -> Team:
    team = team_queryset().filter(slug=slug).first()
    if team is None:
        raise TeamNotFound(f"No team {slug!r} in the catalog.")
    return team


@dataclass
class HourCounts:
    hour: dt.datetime
    passing: int = 0
    warning: int = 0
    critical: int = 0
    latency_ms_total: int = 0
    latency_count: int = 0

    @property
    def checks(self) -> int:
        return self.passing + self.warning + self.critical

    @property
    def latency_ms_mean(self) -> float | None:
        return round(self.latency_ms_total / self.latency_count, 1) if self.latency_count else None


def hours_window(since: dt.datetime, until: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The whole UTC hours covering ``[since, until)``: from the start of ``since``'s hour to the end of
    ``until``'s (``until`` itself when it falls on the hour)."""
    start = since.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    end = until.astimezone(dt.UTC)
    floor = end.replace(minute=0, second=0, microsecond=0)
    return start, floor if floor == end else floor + HOUR


def health_hours(*, service_id: int, since: dt.datetime, until: dt.datetime) -> list[HourCounts]:
    """The service's checks by hour over the whole hours covering ``[since, until)``, oldest first; hours
    without a check are left out.

    Checks older than ``CATALOG_HEALTH_RAW_DAYS`` are only in the hourly roll-ups, newer ones only single, and
    the hour the roll-up cut through is in both: counts of the two are added up, so every hour is complete.
    """
    start, end = hours_window(since, until)
    hours: dict[dt.datetime, HourCounts] = {}
    rolled = HealthHour.objects.filter(service_id=service_id, hour__gte=start, hour__lt=end).values_list(
        "hour", "passing", "warning", "critical", "latency_ms_total", "latency_count"
    )
    raw = (
        HealthCheck.objects.filter(service_id=service_id, checked_at__gte=start, checked_at__lt=end)
        .annotate(hour=TruncHour("checked_at", tzinfo=dt.UTC))  # date_trunc('hour', ...) in the database
        .values("hour")
        .order_by("hour")
        .annotate(
            passing=Count("id", filter=Q(status=HealthStatus.PASSING)),
            warning=Count("id", filter=Q(status=HealthStatus.WARNING)),
            critical=Count("id", filter=Q(status=HealthStatus.CRITICAL)),
            latency_ms_total=Sum("latency_ms", default=0),
            latency_count=Count("latency_ms"),
        )
        .values_list("hour", "passing", "warning", "critical", "latency_ms_total", "latency_count")
    )
    for rows in (rolled, raw):
        for hour, passing, warning, critical, latency_total, latency_count in rows:
            counts = hours.setdefault(hour, HourCounts(hour))
            counts.passing += passing
            counts.warning += warning
            counts.critical += critical
            counts.latency_ms_total += int(latency_total)
            counts.latency_count += latency_count
    return [hours[hour] for hour in sorted(hours)]


# --- what the admin pages read


def service_list(
    *, slugs: Collection[str] | None = None, owner: str | None = "", lifecycle: str = "", tier: str = ""
) -> QuerySet[Service]:
    """Services, optionally only those of ``slugs``, a team's (``owner``: its slug; None: the services no team
    owns), a lifecycle's and a tier's (``1`` to ``3``; any other value: none)."""
    services = Service.objects.all() if slugs is None else Service.objects.filter(slug__in=slugs)
    if owner is None:
        services = services.filter(owner__isnull=True)
    elif owner:
        services = services.filter(owner__slug=owner)
    if lifecycle:
        services = services.filter(lifecycle=lifecycle)
    if tier:
        services = services.filter(tier=int(tier)) if tier in ("1", "2", "3") else services.none()
    return services


def service_count() -> int:
    return Service.objects.count()


def services_with_instances(services: QuerySet[Service] | None = None) -> list[Service]:
    """``services`` (default: every one) by slug, each with its team, its current instances (latest heartbeat
    first) as ``current_instances``, its latest gone one as ``latest_gone`` and ``gone_count``: three queries."""
    gone = InstanceStatus.GONE
    listed = (
        (Service.objects.all() if services is None else services)
        .select_related("owner")
        .annotate(gone_count=Count("instances", filter=Q(instances__status=gone)))
        .prefetch_related(
            Prefetch(
                "instances",
                queryset=Instance.objects.exclude(status=gone).order_by("-last_heartbeat", "instance"),
                to_attr="current_instances",
            ),
            Prefetch(
                "instances",
                queryset=Instance.objects.filter(status=gone).order_by("-last_heartbeat")[:1],
                to_attr="latest_gone",
            ),
        )
    )
    return list(listed.order_by("slug"))


def team_list() -> list[Team]:
    """Every team, by name."""
    return list(Team.objects.order_by("name"))


def instances_gone(service: Service, *, limit: int) -> list[Instance]:
    """The service's latest ``limit`` gone instances, latest heartbeat first."""
    return list(service.instances.filter(status=InstanceStatus.GONE).order_by("-last_heartbeat")[:limit])


def health_checks_recent(service: Service, *, limit: int) -> list[HealthCheck]:
    """The service's latest ``limit`` single checks, newest first."""
    return list(service.health_checks.order_by("-checked_at")[:limit])


def health_slots(
    service: Service, *, width: dt.timedelta, start: dt.datetime, end: dt.datetime
) -> list[tuple[Any, ...]]:
    """``(slot start, passing, warning, critical, latency total, latency count)`` per slot of ``width`` from
    ``start`` to ``end`` holding a single check of the service (one query)."""
    return queries.health_slots(service_id=service.id, width=width, start=start, end=end)


def health_hours_rolled(service: Service, *, start: dt.datetime, end: dt.datetime) -> list[HealthHour]:
    """The service's hourly roll-ups from ``start`` to ``end``."""
    return list(HealthHour.objects.filter(service=service, hour__gte=start, hour__lt=end))


# --- services (groups of processes)


def service_groups(
    *, now: dt.datetime | None = None, with_uptime: bool = True, slugs: Collection[str] | None = None
) -> list[ServiceGroup]:
    """Every service (processes grouped by the service they are part of), by slug, each with its processes by
    role and their statuses, its own status (``critical`` when its API is down, ``degraded`` when another of its
    processes is) and its API's uptime over 24 h, 7 d and 30 d with the time observed. ``slugs``: only those
    services. Five queries (three without uptime) whatever the number of services.

    This is what the portal's home and other pages read to show the services and their health."""
    now = now or timezone.now()
    entries = Service.objects.all() if slugs is None else Service.objects.filter(part_of__in=slugs)
    listed = services_with_instances(entries)
    figures = uptime_detail([s for s in listed if s.role == "web"], now=now) if with_uptime else {}
    return groups(listed, now=now, uptime=figures)


def service_group_get(*, slug: str, now: dt.datetime | None = None) -> ServiceGroup:
    """One service by slug (404 ``service_not_found`` if no process is part of it)."""
    found = service_groups(now=now, slugs=[slug])
    if not found:
        raise ServiceNotFound(f"No service {slug!r} in the catalog.")
    return found[0]


def part_of_get(*, slug: str) -> str:
    """The service ``slug`` is part of: the entry's ``part_of``, or ``slug`` itself when it names a service
    (processes are part of it) or nothing at all."""
    found = Service.objects.filter(slug=slug).values_list("part_of", flat=True).first()
    return found or slug
