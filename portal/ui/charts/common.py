"""What the charts share: the font, the status colours, a plot's size and margins, and a time axis."""

from __future__ import annotations

import datetime as dt

FONT = "font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
# Status → (fill, stroke, symbol). The symbol goes next to the word, never instead of it.
STATUS_STYLE: dict[str, tuple[str, str, str]] = {
    "passing": ("#e8f5e9", "#2e7d32", "\u2714"),
    "warning": ("#fff4d6", "#b58100", "\u25b2"),
    "degraded": ("#fff4d6", "#b58100", "\u25b2"),  # a service one of whose processes is down
    "critical": ("#fdecea", "#ba2121", "\u2716"),
    "unknown": ("#f3f3f3", "#757575", "?"),
}
CHART_W, CHART_H = 960, 190
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 44, 64, 12, 30


def nice_ceiling(value: float) -> int:
    for step in (10, 20, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000):
        if value <= step:
            return step
    return int(value) + 1


def time_label(moment: dt.datetime, span: dt.timedelta) -> str:
    if span <= dt.timedelta(days=1):
        return moment.strftime("%H:%M")
    return moment.strftime("%b %d")


def time_axis(starts: list[dt.datetime], end: dt.datetime, *, step: float, base: float, label_every: int) -> list[str]:
    """Ticks and time labels under a plot of ``len(starts)`` slots ``step`` wide (``end``: the last one's end)."""
    span = end - starts[0]
    parts = []
    for index in range(0, len(starts) + 1, max(label_every, 1)):
        x = PLOT_LEFT + index * step
        moment = starts[index] if index < len(starts) else end
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#999"/>'
            f'<text x="{x:.1f}" y="{base + 16}" font-size="10" text-anchor="middle" fill="#555">'
            f"{time_label(moment, span)}</text>"
        )
    return parts
