"""Payments counters that the workers bump and the web processes export (``/metrics``), kept in Redis: the
worker that parks a payment is not the process Prometheus scrapes.

``atrium_payments_processing_errors_total`` counts unexpected errors met by a payment processed alone;
``atrium_payments_parked_total`` the payments given up on (``failed`` with ``processing_error``);
``atrium_payments_leases_lost_total`` the payments a worker found its lease on taken over by another.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from django.conf import settings
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from services.kit.logs import get_logger

log = get_logger(__name__)

KEY = "atrium:payments:counters"
COUNTERS = {
    "processing_errors": "Unexpected errors met by a payment processed alone (each is retried, then parked).",
    "parked": "Payments parked as failed with processing_error after repeated unexpected errors.",
    "leases_lost": "Payments whose lease a worker found taken over by another (it had stalled past the lease): "
    "it stopped touching them.",
}


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


def incr(name: str, amount: int = 1) -> None:
    """Add ``amount`` to a counter (a Redis outage loses the count, never the work: it is logged)."""
    try:
        client = _client()
        client.hincrby(KEY, name, amount)
        client.close()
    except redis.RedisError as exc:
        log.warning("payments.counter_lost", counter=name, error=str(exc))


class ProcessingCollector(Collector):
    """The counters above, read from Redis at each scrape."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            client = _client()
            values = client.hgetall(KEY)
            client.close()
        except redis.RedisError:
            return
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(
                f"atrium_payments_{name}", help_text, value=int(values.get(name.encode(), 0) or 0)
            )
