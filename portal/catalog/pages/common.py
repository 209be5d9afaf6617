"""What the catalog pages share: a row per service with its derived status, instances and uptime; a dependency
seen from one end; statuses worst first; links."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.db.models import QuerySet
from django.urls import reverse

from portal.catalog import selectors
from portal.catalog.graph import Edge
from portal.catalog.health import UPTIME_WINDOWS, uptime
from portal.catalog.models import Instance, InstanceStatus, Service
from portal.catalog.status import UNKNOWN, instance_status, service_status
from portal.ui.charts.graph import DRIFT_LABELS
from portal.ui.text import ago

# Worst first: how statuses are counted, listed and summed up (a team is as bad as its worst service).
STATUS_ORDER = ("critical", "warning", "passing", UNKNOWN)
_WORST = {"critical": 3, "warning": 2, "passing": 1, UNKNOWN: 0}
NO_TEAM = "none"


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


def service_rows(
    *, services: QuerySet[Service] | None = None, now: dt.datetime, with_uptime: bool = True
) -> list[ServiceRow]:
    """A row per service (by slug) with its derived status, instance counts and uptime: four queries
    (two without uptime), whatever the number of services."""
    listed = selectors.services_with_instances(services)
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
