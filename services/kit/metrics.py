"""Prometheus metrics for every process: request counts and latency by view and status.

With several gunicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory shared by the workers and ``/metrics`` aggregates them. Collectors that read their values at scrape time
(the job dashboard's queue depths, the audit head, the ledger's integrity) are registered with
:func:`collector_register` and served either way.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True) if not os.environ.get("PROMETHEUS_MULTIPROC_DIR") else None
# Scrape-time collectors, for the registry built per scrape in multiprocess mode (they read the database or Redis,
# so any one process reports them in full: nothing to aggregate).
_SCRAPE_COLLECTORS: list[Collector] = []

_kwargs = {"registry": REGISTRY} if REGISTRY is not None else {}

HTTP_REQUESTS = Counter(
    "atrium_http_requests",
    "HTTP requests handled, by view and status.",
    ["service", "method", "view", "status"],
    **_kwargs,
)
HTTP_LATENCY = Histogram(
    "atrium_http_request_duration_seconds",
    "Time from request in to response out, by view.",
    ["service", "method", "view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    **_kwargs,
)


def collector_register(collector: Collector) -> None:
    """Serve ``collector`` (one that reads its values when scraped) at ``/metrics``, with or without
    ``PROMETHEUS_MULTIPROC_DIR``."""
    if REGISTRY is not None:
        REGISTRY.register(collector)
    else:
        _SCRAPE_COLLECTORS.append(collector)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of this process's (or worker group's) metrics."""
    if REGISTRY is None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for collector in _SCRAPE_COLLECTORS:
            registry.register(collector)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
