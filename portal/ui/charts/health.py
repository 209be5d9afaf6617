"""A service's health history as server-rendered SVG (the catalog's service page): a stacked bar per time slot
and the mean latency as a line."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from portal.ui.charts.common import (
    CHART_H,
    CHART_W,
    FONT,
    PLOT_BOTTOM,
    PLOT_LEFT,
    PLOT_RIGHT,
    PLOT_TOP,
    STATUS_STYLE,
    nice_ceiling,
    time_axis,
)


@dataclass
class HealthBucket:
    """The checks of one service in one time slot (from single checks, hourly roll-ups, or both)."""

    start: dt.datetime
    end: dt.datetime
    passing: int = 0
    warning: int = 0
    critical: int = 0
    latency_total: int = 0
    latency_count: int = 0
    rolled_up: bool = False  # counts from hourly roll-ups are included
    hour: dt.datetime | None = None  # a slot shorter than an hour showing its whole hour's roll-up

    @property
    def total(self) -> int:
        return self.passing + self.warning + self.critical

    @property
    def latency_ms(self) -> float | None:
        return self.latency_total / self.latency_count if self.latency_count else None

    @property
    def status(self) -> str:
        if self.critical:
            return "critical"
        if self.warning:
            return "warning"
        return "passing" if self.passing else "unknown"


LATENCY_COLOUR = "#1f4e9c"


def health_chart_svg(buckets: list[HealthBucket], *, label_every: int = 12) -> SafeString:
    """A stacked bar per time slot (share of passing / warning / critical checks; grey: no check) and the
    mean latency as a line against the right-hand axis."""
    if not buckets:
        return mark_safe("")
    plot_w = CHART_W - PLOT_LEFT - PLOT_RIGHT
    plot_h = CHART_H - PLOT_TOP - PLOT_BOTTOM
    step = plot_w / len(buckets)
    bar_w = max(step - (1.5 if step > 4 else 0.5), 1)
    base = PLOT_TOP + plot_h
    latencies = [b.latency_ms for b in buckets if b.latency_ms is not None]
    top_latency = nice_ceiling(max(latencies)) if latencies else 0
    parts: list[str] = [
        f'<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{plot_w}" height="{plot_h}" fill="#fcfcfc" stroke="#e3e3e3"/>',
    ]
    for fraction in (0.5, 1.0):
        y = base - plot_h * fraction
        parts.append(
            f'<line x1="{PLOT_LEFT}" y1="{y:.1f}" x2="{PLOT_LEFT + plot_w}" y2="{y:.1f}" stroke="#ececec"/>'
            f'<text x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#666">'
            f"{int(fraction * 100)}%</text>"
        )
    points: list[str] = []
    for index, bucket in enumerate(buckets):
        x = PLOT_LEFT + index * step
        when = f"{bucket.start:%Y-%m-%d %H:%M}\u2013{bucket.end:%H:%M} UTC"
        if not bucket.total:
            parts.append(
                f'<g class="bucket bucket-empty"><title>{when}: no checks</title>'
                f'<rect x="{x:.1f}" y="{base - 4:.1f}" width="{bar_w:.1f}" height="4" fill="#d5d5d5"/></g>'
            )
            continue
        rolled = " (includes hourly roll-ups)" if bucket.rolled_up else ""
        if bucket.hour is not None:
            end = bucket.hour + dt.timedelta(hours=1)
            when, rolled = f"{bucket.hour:%Y-%m-%d %H:%M}\u2013{end:%H:%M} UTC", " (the hour's roll-up)"
        latency = f", mean latency {bucket.latency_ms:.0f} ms" if bucket.latency_ms is not None else ""
        title = (
            f"{when}{rolled}: {bucket.status}; {bucket.passing} passing, {bucket.warning} warning, "
            f"{bucket.critical} critical{latency}"
        )
        segments: list[str] = []
        y = base
        for count, status in ((bucket.passing, "passing"), (bucket.warning, "warning"), (bucket.critical, "critical")):
            if not count:
                continue
            h = plot_h * count / bucket.total
            y -= h
            segments.append(
                f'<rect x="{x:.1f}" y="{y:.2f}" width="{bar_w:.1f}" height="{h:.2f}" fill="{STATUS_STYLE[status][1]}"/>'
            )
        parts.append(
            f'<g class="bucket bucket-{bucket.status}" data-status="{bucket.status}">'
            f"<title>{escape(title)}</title>{''.join(segments)}</g>"
        )
        if bucket.latency_ms is not None and top_latency:
            ly = base - plot_h * min(bucket.latency_ms / top_latency, 1.0)
            points.append(f"{x + bar_w / 2:.1f},{ly:.1f}")
    if len(points) > 1:
        parts.append(
            f'<polyline class="latency" points="{" ".join(points)}" fill="none" stroke="{LATENCY_COLOUR}" '
            f'stroke-width="1.4" stroke-linejoin="round" opacity="0.85"/>'
        )
    elif points:
        px, py = points[0].split(",")
        parts.append(f'<circle class="latency" cx="{px}" cy="{py}" r="2.5" fill="{LATENCY_COLOUR}"/>')
    if top_latency:
        right = PLOT_LEFT + plot_w + 6
        parts.append(
            f'<text x="{right}" y="{PLOT_TOP + 9}" font-size="10" fill="{LATENCY_COLOUR}">{top_latency} ms</text>'
            f'<text x="{right}" y="{base}" font-size="10" fill="{LATENCY_COLOUR}">0 ms</text>'
            f'<text x="{right}" y="{PLOT_TOP + plot_h / 2 + 4:.0f}" font-size="10" fill="{LATENCY_COLOUR}">'
            "latency</text>"
        )
    parts += time_axis([b.start for b in buckets], buckets[-1].end, step=step, base=base, label_every=label_every)
    summary = (
        f"Health checks from {buckets[0].start:%Y-%m-%d %H:%M} to {buckets[-1].end:%Y-%m-%d %H:%M} UTC, "
        f"{len(buckets)} slots"
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="catalog-health-chart" role="img" '
        f'aria-labelledby="catalog-health-chart-title" width="{CHART_W}" height="{CHART_H}" '
        f'viewBox="0 0 {CHART_W} {CHART_H}" style="{FONT}">'
        f'<title id="catalog-health-chart-title">{escape(summary)}</title>{"".join(parts)}</svg>'
    )
    return mark_safe(svg)  # noqa: S308 - only numbers, times and escaped text in it
