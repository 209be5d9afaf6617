"""What the catalog pages show: the queries and rows behind the overview, a service's page, the dependency
graph and the teams (the views only render these; the templates only lay them out).

Every status is derived on read (:func:`~portal.catalog.status.service_status`,
:func:`~portal.catalog.status.instance_status`), never taken from the stored marks. Instances are never
deleted, so a long-lived service collects many ``gone`` ones: the pages read the current instances, a count
of the gone ones, and only the latest gone one (``service_status`` needs to know one exists), so the cost of
a page does not grow with history. The overview is a fixed handful of queries whatever the number of
services (tested).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.db import connection
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from portal.catalog import svg
from portal.catalog.graph import Edge, graph
from portal.catalog.health import UPTIME_WINDOWS, uptime
from portal.catalog.models import HealthCheck, HealthHour, Instance, InstanceStatus, Lifecycle, Service, Team
from portal.catalog.status import UNKNOWN, instance_status, service_status

# Worst first: how statuses are counted, listed and summed up (a team is as bad as its worst service).
STATUS_ORDER = ("critical", "warning", "passing", UNKNOWN)
_WORST = {"critical": 3, "warning": 2, "passing": 1, UNKNOWN: 0}
DRIFT_LABELS = svg.DRIFT_LABELS
NO_TEAM = "none"
GONE_SHOWN = 20
RECENT_CHECKS = 20
# Health history: slot length, number of slots, a time label every so many slots.
CHART_RANGES: dict[str, tuple[dt.timedelta, int, int]] = {
    "24h": (dt.timedelta(minutes=15), 96, 12),
    "7d": (dt.timedelta(hours=2), 84, 12),
    "30d": (dt.timedelta(hours=6), 120, 20),
}
_EPOCH = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)  # a Monday at midnight: slots line up with hours and days


def ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    """``12 s ago``, ``4 min ago``, ``3 h ago``, ``2 d ago`` (empty for None)."""
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def worst(statuses: list[str]) -> str:
    return max(statuses, key=_WORST.__getitem__, default=UNKNOWN)


def service_url(slug: str) -> str:
    return reverse("catalog_pages:service", args=[slug])


def safe_link(url: str) -> str:
    """``url`` if it is http(s) (the only links the pages render), else empty."""
    return url if urlsplit(url).scheme in ("http", "https") else ""


@dataclass(frozen=True)
class UptimeFigure:
    window: str
    percent: float | None

    @property
    def text(self) -> str:
        # rounded down: 99.996 % of checks is not "100.00 %"
        return "\u2014" if self.percent is None else f"{math.floor(self.percent * 100) / 100:.2f} %"

    @property
    def level(self) -> str:
        if self.percent is None:
            return "none"
        return "bad" if self.percent < 95 else "low" if self.percent < 99.9 else "ok"


@dataclass
class ServiceRow:
    service: Service
    status: str
    instances: list[Instance]  # not gone, latest heartbeat first
    live: int  # of those, heartbeating
    gone: int
    uptime: list[UptimeFigure]
    url: str
    last_checked_ago: str


def _with_instances(services: QuerySet[Service]) -> QuerySet[Service]:
    gone = InstanceStatus.GONE
    return (
        services.select_related("owner")
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


def service_rows(
    *, services: QuerySet[Service] | None = None, now: dt.datetime, with_uptime: bool = True
) -> list[ServiceRow]:
    """A row per service (by slug) with its derived status, instance counts and uptime: four queries
    (two without uptime), whatever the number of services."""
    listed = list(_with_instances(Service.objects.all() if services is None else services).order_by("slug"))
    figures = uptime(listed, now=now) if with_uptime and listed else {}
    rows = []
    for s in listed:
        current: list[Instance] = s.current_instances
        rows.append(
            ServiceRow(
                service=s,
                status=service_status(s, [*current, *s.latest_gone], now=now),
                instances=current,
                live=sum(1 for i in current if instance_status(i, now=now) == InstanceStatus.PASSING),
                gone=s.gone_count,
                uptime=[UptimeFigure(w, figures.get(s.id, {}).get(w)) for w in UPTIME_WINDOWS],
                url=service_url(s.slug),
                last_checked_ago=ago(s.last_checked_at, now),
            )
        )
    return rows


# ------------------------------------------------------------------------------------ overview


@dataclass(frozen=True)
class Choice:
    value: str
    label: str
    selected: bool


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int
    query: str  # the query string that shows only this status (or every status, for the selected one)
    selected: bool


@dataclass
class OverviewPage:
    rows: list[ServiceRow]
    registered: int  # services in the catalog, before any filter
    matching: int  # after the team / lifecycle / tier filters, before the status filter
    counts: list[StatusCount]
    teams: list[Choice]
    lifecycles: list[Choice]
    tiers: list[Choice]
    status: str
    filtered: bool
    now: dt.datetime
    windows: list[str] = field(default_factory=lambda: list(UPTIME_WINDOWS))


def overview_page(*, params: Mapping[str, str], now: dt.datetime | None = None) -> OverviewPage:
    """Every service, optionally only a team's (``team``, ``none`` for no team), a lifecycle, a tier, and
    then a status."""
    now = now or timezone.now()
    team, lifecycle = params.get("team", ""), params.get("lifecycle", "")
    tier, status = params.get("tier", ""), params.get("status", "")
    services = Service.objects.all()
    if team == NO_TEAM:
        services = services.filter(owner__isnull=True)
    elif team:
        services = services.filter(owner__slug=team)
    if lifecycle:
        services = services.filter(lifecycle=lifecycle)
    if tier:
        services = services.filter(tier=int(tier)) if tier in ("1", "2", "3") else services.none()
    rows = service_rows(services=services, now=now)
    registered = Service.objects.count() if team or lifecycle or tier else len(rows)
    by_status = Counter(r.status for r in rows)
    kept = {k: v for k, v in params.items() if k in ("team", "lifecycle", "tier") and v}
    counts = [
        StatusCount(
            s,
            by_status[s],
            "?" + urlencode(kept if s == status else {**kept, "status": s}),
            s == status,
        )
        for s in STATUS_ORDER
    ]
    teams = [Choice("", "every team", not team), Choice(NO_TEAM, "(no team)", team == NO_TEAM)]
    teams += [Choice(t.slug, t.name, t.slug == team) for t in Team.objects.order_by("name")]
    return OverviewPage(
        rows=[r for r in rows if r.status == status] if status else rows,
        registered=registered,
        matching=len(rows),
        counts=counts,
        teams=teams,
        lifecycles=[Choice("", "every lifecycle", not lifecycle)]
        + [Choice(v, v, v == lifecycle) for v in Lifecycle.values],
        tiers=[Choice("", "every tier", not tier)] + [Choice(str(t), f"tier {t}", str(t) == tier) for t in (1, 2, 3)],
        status=status,
        filtered=bool(kept or status),
        now=now,
    )


# ------------------------------------------------------------------------------- service page


@dataclass(frozen=True)
class InstanceRow:
    instance: Instance
    status: str
    heartbeat_ago: str


@dataclass(frozen=True)
class DependencyRow:
    """One edge of the service, seen from it: ``other`` is the service (or resource) at the other end."""

    other: str
    other_url: str
    other_status: str  # empty for a resource
    kind: str
    registered: bool
    edge: Edge

    @property
    def drift_label(self) -> str:
        return DRIFT_LABELS.get(self.edge.drift or "", "")


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass
class HealthHistory:
    window: str
    windows: list[str]
    buckets: list[svg.HealthBucket]
    chart: SafeString
    passing: int
    warning: int
    critical: int

    @property
    def total(self) -> int:
        return self.passing + self.warning + self.critical


@dataclass
class ServicePage:
    row: ServiceRow
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


def health_history(service: Service, *, window: str, now: dt.datetime) -> HealthHistory:
    """The service's checks in ``window`` (``24h``, ``7d``, ``30d``) in fixed slots, from the single checks
    and the hourly roll-ups of older ones (two queries), and the chart of them."""
    width, slots, label_every = CHART_RANGES[window]
    end = _EPOCH + (math.floor((now - _EPOCH) / width) + 1) * width  # the slot holding "now" is the last
    start = end - slots * width
    buckets = [svg.HealthBucket(start + i * width, start + (i + 1) * width) for i in range(slots)]
    totals = Counter[str]()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT date_bin(%(width)s, checked_at, %(start)s) AS slot,"
            " count(*) FILTER (WHERE status = 'passing'), count(*) FILTER (WHERE status = 'warning'),"
            " count(*) FILTER (WHERE status = 'critical'), coalesce(sum(latency_ms), 0), count(latency_ms)"
            " FROM catalog_health_check WHERE service_id = %(id)s AND checked_at >= %(start)s"
            " AND checked_at < %(end)s GROUP BY slot",
            {"width": width, "start": start, "end": end, "id": service.id},
        )
        for slot, passing, warning, critical, latency_total, latency_count in cursor.fetchall():
            b = buckets[(slot - start) // width]
            b.passing, b.warning, b.critical = b.passing + passing, b.warning + warning, b.critical + critical
            b.latency_total += int(latency_total)
            b.latency_count += latency_count
            totals.update(passing=passing, warning=warning, critical=critical)
    hour = dt.timedelta(hours=1)
    for rolled in HealthHour.objects.filter(service=service, hour__gte=start, hour__lt=end):
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
        chart=svg.health_chart_svg(buckets, label_every=label_every),
        passing=totals["passing"],
        warning=totals["warning"],
        critical=totals["critical"],
    )


def service_page(*, slug: str, window: str = "24h", now: dt.datetime | None = None) -> ServicePage:
    """Everything a service's page shows (404 for an unknown slug)."""
    now = now or timezone.now()
    window = window if window in CHART_RANGES else "24h"
    edges = [e for e in graph(now=now).edges if slug in (e.source, e.target)]
    involved = {slug} | {e.source for e in edges} | {e.target for e in edges if e.kind == "service"}
    rows = {r.service.slug: r for r in service_rows(services=Service.objects.filter(slug__in=involved), now=now)}
    if slug not in rows:
        raise Http404(f"No service {slug!r} in the catalog.")
    row = rows[slug]
    row.uptime = [  # the others' uptime is not shown: computed for this one only
        UptimeFigure(w, p) for w, p in uptime([row.service], now=now)[row.service.id].items()
    ]
    service = row.service
    gone = list(service.instances.filter(status=InstanceStatus.GONE).order_by("-last_heartbeat")[:GONE_SHOWN])
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
        links=_links(service),
        instances=instances,
        gone_hidden=max(row.gone - len(gone), 0),
        checks=list(service.health_checks.order_by("-checked_at")[:RECENT_CHECKS]),
        history=health_history(service, window=window, now=now),
        outgoing=[other_end(e, e.target) for e in edges if e.source == slug],
        incoming=[other_end(e, e.source) for e in edges if e.target == slug and e.source != slug],
        now=now,
    )


# --------------------------------------------------------------------------------------- graph


@dataclass(frozen=True)
class CriticalRow:
    service: ServiceRow
    dependents: list[ServiceRow]


@dataclass
class GraphPage:
    svg: SafeString
    nodes: int
    edges: int
    critical: list[CriticalRow]
    drift: list[DependencyRow]
    now: dt.datetime


def _resource_id(name: str) -> str:
    return f"resource:{name}"


def graph_page(*, now: dt.datetime | None = None) -> GraphPage:
    """The dependency graph as a picture, with its statuses derived on read, what every critical service
    takes down with it, and the drift edges as a list."""
    now = now or timezone.now()
    found = graph(now=now)
    rows = {r.service.slug: r for r in service_rows(now=now, with_uptime=False)}
    nodes: list[svg.GraphNode] = []
    for n in found.nodes:
        if n["kind"] == "resource":
            nodes.append(svg.GraphNode(_resource_id(n["id"]), "resource", n["id"], status=""))
            continue
        row = rows.get(n["id"])
        detail = f"tier {n['tier']}" + (f" \u00b7 {n['team']}" if n.get("team") else "") if row else ""
        nodes.append(
            svg.GraphNode(
                n["id"],
                "service",
                n["display_name"],
                status=row.status if row else UNKNOWN,
                registered=row is not None,
                url=row.url if row else "",
                detail=detail,
            )
        )
    edges = [dataclasses.replace(e, target=_resource_id(e.target)) if e.kind == "resource" else e for e in found.edges]
    critical = [
        CriticalRow(rows[slug], [rows[d] for d in svg.dependents(slug, nodes, edges) if d in rows])
        for slug, row in rows.items()
        if row.status == "critical"
    ]
    drift = [
        DependencyRow(
            other=e.target,
            other_url=rows[e.target].url if e.target in rows else "",
            other_status=rows[e.target].status if e.target in rows else UNKNOWN,
            kind=e.kind,
            registered=e.target in rows,
            edge=e,
        )
        for e in found.edges
        if e.drift
    ]
    return GraphPage(
        svg=svg.graph_svg(nodes, edges),
        nodes=len(nodes),
        edges=len(edges),
        critical=critical,
        drift=drift,
        now=now,
    )


# --------------------------------------------------------------------------------------- teams


@dataclass
class TeamBlock:
    team: Team | None  # None: the services no team owns
    rows: list[ServiceRow]

    @property
    def status(self) -> str:
        return worst([r.status for r in self.rows])

    @property
    def counts(self) -> list[tuple[str, int]]:
        found = Counter(r.status for r in self.rows)
        return [(s, found[s]) for s in STATUS_ORDER if found[s]]

    @property
    def anchor(self) -> str:
        return f"team-{self.team.slug}" if self.team else f"team-{NO_TEAM}"


def teams_page(*, now: dt.datetime | None = None) -> list[TeamBlock]:
    """Every team (by name) with its services and their statuses; services without a team last."""
    now = now or timezone.now()
    by_owner: dict[int | None, list[ServiceRow]] = {}
    for row in service_rows(now=now, with_uptime=False):
        by_owner.setdefault(row.service.owner_id, []).append(row)
    blocks = [TeamBlock(team, by_owner.get(team.id, [])) for team in Team.objects.order_by("name")]
    if None in by_owner:
        blocks.append(TeamBlock(None, by_owner[None]))
    return blocks
