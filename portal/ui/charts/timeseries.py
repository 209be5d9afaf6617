"""Time-series line charts as server-rendered SVG (the job dashboard's throughput and failures): a line per
series over fixed time slots, told apart by colour and dash."""

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
    nice_ceiling,
    time_axis,
)


@dataclass(frozen=True)
class Series:
    """One line of a time-series chart: a value per slot (the slots are the chart's)."""

    label: str
    values: list[float]
    colour: str = ""  # default: the next of SERIES_STYLES
    dash: str = ""

    @property
    def total(self) -> float:
        return sum(self.values)


# Colour and dash together, so that lines stay apart for people who cannot tell the colours apart.
SERIES_STYLES: tuple[tuple[str, str], ...] = (
    ("#1f4e9c", ""),
    ("#d9480f", "6 3"),
    ("#2e7d32", "2 3"),
    ("#8e24aa", "9 3 2 3"),
    ("#b58100", ""),
    ("#00838f", "6 3"),
    ("#5c6f8a", "2 3"),
    ("#c2185b", "9 3 2 3"),
)
SERIES_LEGEND_H = 24


def _count_ceiling(value: float) -> int:
    """A round top for a count axis whose half is a whole number too."""
    for step in (2, 4, 6, 8, 10):
        if value <= step:
            return step
    return nice_ceiling(value)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def series_chart_svg(
    starts: list[dt.datetime],
    end: dt.datetime,
    series: list[Series],
    *,
    chart_id: str,
    title: str,
    unit: str = "",
    label_every: int = 10,
    width: int = CHART_W,
    height: int = CHART_H,
) -> SafeString:
    """A line per series over fixed time slots (``starts``, the last ending at ``end``), a legend naming each
    line with its total, and a hover target per slot whose tooltip lists every series' value in it."""
    if not starts:
        return mark_safe("")
    styled = [
        Series(s.label, s.values, s.colour or SERIES_STYLES[i % len(SERIES_STYLES)][0],
               s.dash or SERIES_STYLES[i % len(SERIES_STYLES)][1])
        for i, s in enumerate(series)
    ]  # fmt: skip
    top_margin = PLOT_TOP + SERIES_LEGEND_H
    plot_w = width - PLOT_LEFT - PLOT_RIGHT
    plot_h = height - top_margin - PLOT_BOTTOM
    step = plot_w / len(starts)
    base = top_margin + plot_h
    peak = max((v for s in styled for v in s.values), default=0)
    top = _count_ceiling(peak) if peak > 0 else 1
    e = escape
    parts: list[str] = []
    x = float(PLOT_LEFT)
    for s in styled:  # the legend, on one line above the plot
        label = f"{s.label} ({_number(s.total)}{unit and ' ' + unit})"
        dashes = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(
            f'<g class="legend-item" data-series="{e(s.label)}" transform="translate({x:.1f} {PLOT_TOP})">'
            f'<line x1="0" y1="7" x2="24" y2="7" stroke="{s.colour}" stroke-width="2.2"{dashes}/>'
            f'<text x="30" y="11" font-size="11.5" fill="#1f2933">{e(label)}</text></g>'
        )
        x += 30 + 6.8 * len(label) + 22
    parts.append(
        f'<rect x="{PLOT_LEFT}" y="{top_margin}" width="{plot_w}" height="{plot_h}" fill="#fcfcfc" stroke="#e3e3e3"/>'
    )
    for fraction in (0.5, 1.0):
        y = base - plot_h * fraction
        parts.append(
            f'<line x1="{PLOT_LEFT}" y1="{y:.1f}" x2="{PLOT_LEFT + plot_w}" y2="{y:.1f}" stroke="#ececec"/>'
            f'<text x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#666">'
            f"{_number(top * fraction)}</text>"
        )
    parts.append(f'<text x="{PLOT_LEFT - 6}" y="{base + 4:.1f}" font-size="10" text-anchor="end" fill="#666">0</text>')
    for s in styled:
        points = [
            f"{PLOT_LEFT + (i + 0.5) * step:.1f},{base - plot_h * min(v / top, 1.0):.1f}"
            for i, v in enumerate(s.values)
        ]
        dashes = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(
            f'<polyline class="series" data-series="{e(s.label)}" points="{" ".join(points)}" fill="none" '
            f'stroke="{s.colour}" stroke-width="1.8" stroke-linejoin="round"{dashes}><title>{e(s.label)}</title>'
            "</polyline>"
        )
    span = end - starts[0]
    for i, start in enumerate(starts):
        slot_end = starts[i + 1] if i + 1 < len(starts) else end
        when = f"{start:%H:%M}\u2013{slot_end:%H:%M} UTC" if span <= dt.timedelta(days=1) else f"{start:%b %d %H:%M}"
        values = ", ".join(f"{s.label} {_number(s.values[i])}" for s in styled) or "nothing"
        parts.append(
            f'<rect class="slot" x="{PLOT_LEFT + i * step:.1f}" y="{top_margin}" width="{step:.2f}" '
            f'height="{plot_h}" fill="transparent"><title>{e(f"{when}: {values}")}</title></rect>'
        )
    parts += time_axis(starts, end, step=step, base=base, label_every=label_every)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{e(chart_id)}" class="series-chart" role="img" '
        f'aria-labelledby="{e(chart_id)}-title" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="{FONT}">'
        f'<title id="{e(chart_id)}-title">{e(title)}</title>{"".join(parts)}</svg>'
    )
    return mark_safe(svg)  # noqa: S308 - only numbers, times and escaped text in it
