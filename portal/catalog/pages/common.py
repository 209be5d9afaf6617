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
from portal.catalog.health import UPTIME_WINDOWS, Uptime, uptime_detail
from portal.catalog.models import Instance, InstanceStatus, Service
from portal.catalog.status import UNKNOWN, instance_status, service_status
from portal.ui.charts.graph import DRIFT_LABELS
from portal.ui.text import ago

# Worst first: how statuses are counted, listed and summed up (a team is as bad as its worst service).
STATUS_ORDER = ("critical", "warning", "passing", UNKNOWN)
_WORST = {"critical": 3, "degraded": 2, "warning": 2, "passing": 1, UNKNOWN: 0}
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


def duration_text(seconds: float) -> str:
    """``5 minutes``, ``3.5 hours``, ``12 days``: how long, in the largest unit that reads well."""
    if seconds < 90:
        return f"{int(seconds)} second{'s' if int(seconds) != 1 else ''}"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 1.5 * size or unit == "minute":
            value = seconds / size
            text = f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}{'' if text == '1' else 's'}"
    return f"{int(seconds)} seconds"  # pragma: no cover


_WINDOW_WORDS = {"24h": "24 hours", "7d": "7 days", "30d": "30 days"}


@dataclass(frozen=True)
class ObservedUptime:
    """A window's honest uptime: the share of the observed time that was up, and how much time was observed
    (``100 % of the 5 minutes observed in the last 30 days``)."""

    figure: Uptime

    @property
    def window(self) -> str:
        return self.figure.window

    @property
    def percent(self) -> float | None:
        return self.figure.percent

    @property
    def text(self) -> str:
        return UptimeFigure(self.window, self.percent).text

    @property
    def level(self) -> str:
        return UptimeFigure(self.window, self.percent).level

    @property
    def observed(self) -> str:
        """``of the 5 minutes observed in the last 30 days`` (or that nothing was)."""
        words = _WINDOW_WORDS.get(self.window, self.window)
        if self.figure.observed_seconds <= 0:
            return f"nothing observed in the last {words}"
        if self.figure.coverage >= 99.95:
            return f"of the last {words}, all observed"
        return f"of the {duration_text(self.figure.observed_seconds)} observed in the last {words}"

    @property
    def sentence(self) -> str:
        if self.percent is None:
            return f"Uptime unknown: {self.observed}."
        return f"{self.text} {self.observed}"


def uptime_figures(figures: dict[str, Uptime]) -> list[ObservedUptime]:
    """Every window's uptime (nothing observed where ``figures`` has none)."""
    return [
        ObservedUptime(figures.get(w) or Uptime(w, window.total_seconds(), 0.0, 0.0))
        for w, window in UPTIME_WINDOWS.items()
    ]


@dataclass
class ServiceRow:
    service: Service
    status: str
    instances: list[Instance]  # not gone, latest heartbeat first
    live: int  # of those, heartbeating
    gone: int
    uptime: list[ObservedUptime]
    url: str
    last_checked_ago: str


def service_rows(
    *, services: QuerySet[Service] | None = None, now: dt.datetime, with_uptime: bool = True
) -> list[ServiceRow]:
    """A row per service (by slug) with its derived status, instance counts and uptime: four queries
    (two without uptime), whatever the number of services."""
    listed = selectors.services_with_instances(services)
    figures = uptime_detail(listed, now=now) if with_uptime and listed else {}
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
                uptime=uptime_figures(figures.get(s.id, {})),
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
