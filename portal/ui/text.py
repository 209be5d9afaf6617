"""Times in words, as the admin pages show them."""

from __future__ import annotations

import datetime as dt


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
