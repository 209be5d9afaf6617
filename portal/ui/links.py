"""Links every page may make: to the trace of an id (``/admin/trace/?q=<id>``)."""

from __future__ import annotations

from django.urls import reverse
from django.utils.http import urlencode


def trace_url(value: str) -> str:
    """The trace page of ``value`` (a request id, an object id or a task id); "" for no id."""
    return f"{reverse('trace_pages:trace')}?{urlencode({'q': value})}" if value else ""
