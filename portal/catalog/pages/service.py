"""A service's page in the catalog: its instances, links, recent checks, health history (and its chart) and
dependencies both ways."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass

from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from portal.catalog import selectors
from portal.catalog.errors import ServiceNotFound
from portal.catalog.graph import Edge, graph
from portal.catalog.health import uptime_detail
from portal.catalog.models import HealthCheck, Instance, InstanceStatus, Service
from portal.catalog.pages.common import (
    DependencyRow,
    ObservedUptime,
    ServiceRow,
    safe_link,
    service_rows,
    service_url,
    uptime_figures,
)
from portal.catalog.status import UNKNOWN, instance_status
from portal.catalog.systems import ServiceGroup
from portal.ui.charts.health import HealthBucket, health_chart_svg
from portal.ui.text import ago

GONE_SHOWN = 20
RECENT_CHECKS = 20
# Health history: slot length, number of slots, a time label every so many slots.
CHART_RANGES: dict[str, tuple[dt.timedelta, int, int]] = {
    "24h": (dt.timedelta(minutes=15), 96, 12),
    "7d": (dt.timedelta(hours=2), 84, 12),
    "30d": (dt.timedelta(hours=6), 120, 20),
}
_EPOCH = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)  # a Monday at midnight: slots line up with hours and days


@dataclass(frozen=True)
class InstanceRow:
    instance: Instance
    status: str
    heartbeat_ago: str


@dataclass(frozen=True)
class Link:
    label: str
    url: str
    permission: str = ""  # a portal page that needs it (the page shows the link to those holding it)


@dataclass
class HealthHistory:
    window: str
    windows: list[str]
    buckets: list[HealthBucket]
    chart: SafeString
    passing: int
    warning: int
    critical: int

    @property
    def total(self) -> int:
        return self.passing + self.warning + self.critical


@dataclass(frozen=True)
class GroupProcess:
    slug: str
    role: str
    status: str
    live: int
    instances: int
    url: str
    current: bool  # the page's own


@dataclass
class GroupSection:
    """The service a process is part of: its status and why, its processes by role, and where to go next."""

    group: ServiceGroup
    url: str
    processes: list[GroupProcess]
    tools: list[Link]
    uptime: list[ObservedUptime]


@dataclass
class ServicePage:
    row: ServiceRow
    group: GroupSection
    links: list[Link]
    instances: list[InstanceRow]
    gone_hidden: int
    checks: list[HealthCheck]
    history: HealthHistory
    outgoing: list[DependencyRow]
    incoming: list[DependencyRow]
    now: dt.datetime

    @property
    def drift(self) -> int:
        return sum(1 for d in [*self.outgoing, *self.incoming] if d.edge.drift)


def _links(service: Service) -> list[Link]:
    base = safe_link(service.base_url)
    candidates = [
        ("Base URL", base),
        ("API docs", f"{base.rstrip('/')}/api/docs" if base else ""),
        ("OpenAPI schema", service.openapi_url),
        ("Health URL", service.health_url),
        ("Documentation", service.docs_url),
        ("Repository", service.repository_url),
    ]
    return [Link(label, url) for label, url in candidates if safe_link(url)]


def _tools(group: ServiceGroup) -> list[Link]:
    """Where a service's people go next: its admin and API docs (on its API's base URL), its tasks in the job
    dashboard (one link per queue its workers consume) and its events in the audit trail (its source)."""
    web = group.web
    base = safe_link(web.base_url).rstrip("/") if web else ""
    links = [Link("Admin", f"{base}/admin/"), Link("API docs", f"{base}/api/docs")] if base else []
    tasks = reverse("jobs_pages:tasks")
    links += [
        Link(f"Tasks: {queue} queue", f"{tasks}?{urlencode({'queue': queue})}", "jobs.view_job")
        for queue in group.queues
    ]
    events = reverse("admin:audit_auditevent_changelist")
    links.append(Link("Audit events", f"{events}?{urlencode({'service': group.slug})}", "audit.view_auditevent"))
    return links


def group_section(group: ServiceGroup, *, current: str) -> GroupSection:
    return GroupSection(
        group=group,
        url=service_url(group.slug),
        processes=[
            GroupProcess(
                slug=p.slug,
                role=p.role,
                status=p.status,
                live=p.live,
                instances=len(p.instances),
                url=service_url(p.slug),
                current=p.slug == current,
            )
            for p in group.processes
        ],
        tools=_tools(group),
        uptime=uptime_figures(group.uptime),
    )


def health_history(service: Service, *, window: str, now: dt.datetime) -> HealthHistory:
    """The service's checks in ``window`` (``24h``, ``7d``, ``30d``) in fixed slots, from the single checks
    and the hourly roll-ups of older ones (two queries), and the chart of them."""
    width, slots, label_every = CHART_RANGES[window]
    end = _EPOCH + (math.floor((now - _EPOCH) / width) + 1) * width  # the slot holding "now" is the last
    start = end - slots * width
    buckets = [HealthBucket(start + i * width, start + (i + 1) * width) for i in range(slots)]
    totals = Counter[str]()
    for slot, passing, warning, critical, latency_total, latency_count in selectors.health_slots(
        service, width=width, start=start, end=end
    ):
        b = buckets[(slot - start) // width]
        b.passing, b.warning, b.critical = b.passing + passing, b.warning + warning, b.critical + critical
        b.latency_total += int(latency_total)
        b.latency_count += latency_count
        totals.update(passing=passing, warning=warning, critical=critical)
    hour = dt.timedelta(hours=1)
    for rolled in selectors.health_hours_rolled(service, start=start, end=end):
        totals.update(passing=rolled.passing, warning=rolled.warning, critical=rolled.critical)
        first = (rolled.hour - start) // width
        # a slot of an hour or more adds the hour up; shorter slots each show the whole hour, marked so
        targets = [first] if width >= hour else range(first, min(first + hour // width, slots))
        for index in targets:
            b = buckets[index]
            b.passing, b.warning, b.critical = (
                b.passing + rolled.passing,
                b.warning + rolled.warning,
                b.critical + rolled.critical,
            )
            b.latency_total += rolled.latency_ms_total
            b.latency_count += rolled.latency_count
            b.rolled_up = width >= hour
            b.hour = None if width >= hour else rolled.hour
    return HealthHistory(
        window=window,
        windows=list(CHART_RANGES),
        buckets=buckets,
        chart=health_chart_svg(buckets, label_every=label_every),
        passing=totals["passing"],
        warning=totals["warning"],
        critical=totals["critical"],
    )


def service_page(*, slug: str, window: str = "24h", now: dt.datetime | None = None) -> ServicePage:
    """Everything a service's page shows (:class:`~portal.catalog.errors.ServiceNotFound` for an unknown slug)."""
    now = now or timezone.now()
    window = window if window in CHART_RANGES else "24h"
    groups = selectors.service_groups(now=now, slugs=[selectors.part_of_get(slug=slug)])
    if not groups:
        raise ServiceNotFound(f"No service {slug!r} in the catalog.")
    group = groups[0]
    if group.slug == slug and not any(p.slug == slug for p in group.processes):
        # a service none of whose processes is named like it: its page is its API's (or its first process's)
        slug = (group.web or group.processes[0].entry).slug
    edges = [e for e in graph(now=now).edges if slug in (e.source, e.target)]
    involved = {slug} | {e.source for e in edges} | {e.target for e in edges if e.kind == "service"}
    rows = {r.service.slug: r for r in service_rows(services=selectors.service_list(slugs=involved), now=now)}
    if slug not in rows:
        raise ServiceNotFound(f"No service {slug!r} in the catalog.")
    row = rows[slug]
    # the others' uptime is not shown: computed for this one only
    row.uptime = uptime_figures(uptime_detail([row.service], now=now).get(row.service.id, {}))
    service = row.service
    gone = selectors.instances_gone(service, limit=GONE_SHOWN)
    instances = [InstanceRow(i, instance_status(i, now=now), ago(i.last_heartbeat, now)) for i in row.instances]
    instances += [InstanceRow(i, InstanceStatus.GONE, ago(i.last_heartbeat, now)) for i in gone]

    def other_end(edge: Edge, other: str) -> DependencyRow:
        known = rows.get(other) if edge.kind == "service" else None
        return DependencyRow(
            other=other,
            other_url=service_url(other) if known else "",
            other_status=known.status if known else (UNKNOWN if edge.kind == "service" else ""),
            kind=edge.kind,
            registered=known is not None or edge.kind != "service",
            edge=edge,
        )

    return ServicePage(
        row=row,
        group=group_section(group, current=slug),
        links=_links(service),
        instances=instances,
        gone_hidden=max(row.gone - len(gone), 0),
        checks=selectors.health_checks_recent(service, limit=RECENT_CHECKS),
        history=health_history(service, window=window, now=now),
        outgoing=[other_end(e, e.target) for e in edges if e.source == slug],
        incoming=[other_end(e, e.source) for e in edges if e.target == slug and e.source != slug],
        now=now,
    )
