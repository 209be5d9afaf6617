"""The catalog overview: every service (not process) with its status, its processes by role and theirs, its
API's uptime with the time observed; filtered by team, lifecycle, tier and status."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.utils import timezone
from django.utils.http import urlencode

from portal.catalog import selectors
from portal.catalog.health import UPTIME_WINDOWS
from portal.catalog.models import Lifecycle
from portal.catalog.pages.common import NO_TEAM, ObservedUptime, service_url, uptime_figures
from portal.catalog.systems import SERVICE_STATUSES, Process, ServiceGroup


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


@dataclass(frozen=True)
class ProcessRow:
    process: Process
    url: str


@dataclass
class ServiceGroupRow:
    group: ServiceGroup
    url: str
    roles: list[tuple[str, list[ProcessRow]]]
    uptime: list[ObservedUptime]

    @property
    def status(self) -> str:
        return self.group.status

    @property
    def processes(self) -> int:
        return len(self.group.processes)

    @property
    def processes_down(self) -> int:
        return sum(1 for p in self.group.processes if p.status == "critical")


@dataclass
class OverviewPage:
    rows: list[ServiceGroupRow]
    registered: int  # services in the catalog, before any filter
    matching: int  # after the team / lifecycle / tier filters, before the status filter
    processes: int  # of the services listed
    counts: list[StatusCount]
    teams: list[Choice]
    lifecycles: list[Choice]
    tiers: list[Choice]
    status: str
    filtered: bool
    now: dt.datetime
    windows: list[str] = field(default_factory=lambda: list(UPTIME_WINDOWS))


def _row(group: ServiceGroup) -> ServiceGroupRow:
    return ServiceGroupRow(
        group=group,
        url=service_url(group.slug),
        roles=[(role, [ProcessRow(p, service_url(p.slug)) for p in listed]) for role, listed in group.by_role()],
        uptime=uptime_figures(group.uptime),
    )


def _keep(group: ServiceGroup, *, team: str, lifecycle: str, tier: str) -> bool:
    if team == NO_TEAM and group.team is not None:
        return False
    if team and team != NO_TEAM and (group.team is None or group.team.slug != team):
        return False
    if lifecycle and group.lifecycle != lifecycle:
        return False
    return not tier or str(group.tier) == tier


def overview_page(*, params: Mapping[str, str], now: dt.datetime | None = None) -> OverviewPage:
    """Every service, optionally only a team's (``team``, ``none`` for no team), a lifecycle, a tier, and
    then a status (``critical``, ``degraded``, ``passing``, ``unknown``)."""
    now = now or timezone.now()
    team, lifecycle = params.get("team", ""), params.get("lifecycle", "")
    tier, status = params.get("tier", ""), params.get("status", "")
    every = selectors.service_groups(now=now)
    groups = [g for g in every if _keep(g, team=team, lifecycle=lifecycle, tier=tier)]
    by_status = Counter(g.status for g in groups)
    kept = {k: v for k, v in params.items() if k in ("team", "lifecycle", "tier") and v}
    counts = [
        StatusCount(s, by_status[s], "?" + urlencode(kept if s == status else {**kept, "status": s}), s == status)
        for s in SERVICE_STATUSES
    ]
    teams = [Choice("", "every team", not team), Choice(NO_TEAM, "(no team)", team == NO_TEAM)]
    teams += [Choice(t.slug, t.name, t.slug == team) for t in selectors.team_list()]
    shown = [g for g in groups if g.status == status] if status else groups
    return OverviewPage(
        rows=[_row(g) for g in shown],
        registered=len(every),
        matching=len(groups),
        processes=sum(len(g.processes) for g in shown),
        counts=counts,
        teams=teams,
        lifecycles=[Choice("", "every lifecycle", not lifecycle)]
        + [Choice(v, v, v == lifecycle) for v in Lifecycle.values],
        tiers=[Choice("", "every tier", not tier)] + [Choice(str(t), f"tier {t}", str(t) == tier) for t in (1, 2, 3)],
        status=status,
        filtered=bool(kept or status),
        now=now,
    )
