"""The catalog overview: every service with its status, filtered by team, lifecycle, tier and status."""

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
from portal.catalog.pages.common import NO_TEAM, STATUS_ORDER, ServiceRow, service_rows


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
    services = selectors.service_list(owner=None if team == NO_TEAM else team, lifecycle=lifecycle, tier=tier)
    rows = service_rows(services=services, now=now)
    registered = selectors.service_count() if team or lifecycle or tier else len(rows)
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
    teams += [Choice(t.slug, t.name, t.slug == team) for t in selectors.team_list()]
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
