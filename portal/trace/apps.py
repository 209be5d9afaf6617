from __future__ import annotations

from django.apps import AppConfig


class TraceConfig(AppConfig):
    """One timeline of everything recorded for a request id, an object id or a job: no tables of its own."""

    name = "portal.trace"
    label = "trace"
    verbose_name = "Trace"
