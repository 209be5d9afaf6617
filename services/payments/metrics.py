"""Payments counters that the workers bump and the web processes export (``/metrics``), kept in Redis: the
worker that parks a payment is not the process Prometheus scrapes.

``atrium_payments_processing_errors_total`` counts unexpected errors met by a payment processed alone;
``atrium_payments_parked_total`` the payments given up on (``failed`` with ``processing_error``);
``atrium_payments_leases_lost_total`` the payments a worker found its lease on taken over by another.

Risk screening (:mod:`services.payments.risk`): ``atrium_payments_risk_call_seconds`` (histogram of the calls to
the risk service, by ``outcome``: ok, unavailable, failed, refused), ``atrium_payments_risk_decisions_total``
(payments assessed, by ``decision``) and ``atrium_payments_risk_fallbacks_total`` (payments screened while risk
was away, by the ``fallback`` applied: hold, allow, deny).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from django.conf import settings
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
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


# Labelled counters: Redis field "<name>:<label value>".
LABELLED = {
    "risk_decisions": ("decision", ("allow", "review", "deny"), "Payments the risk service assessed, by decision."),
    "risk_fallbacks": (
        "fallback",
        ("hold", "allow", "deny"),
        "Payments screened while the risk service was away, by the PAYMENTS_RISK_FALLBACK applied.",
    ),
}
RISK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RISK_OUTCOMES = ("ok", "unavailable", "failed", "refused")


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


def incr_many(amounts: dict[str, int]) -> None:
    """Add to several counters in one round trip (e.g. ``{"risk_decisions:allow": 180, …}``)."""
    amounts = {name: n for name, n in amounts.items() if n}
    if not amounts:
        return
    try:
        client = _client()
        pipe = client.pipeline(transaction=False)
        for name, amount in amounts.items():
            pipe.hincrby(KEY, name, amount)
        pipe.execute()
        client.close()
    except redis.RedisError as exc:
        log.warning("payments.counter_lost", counter=",".join(sorted(amounts)), error=str(exc))


def observe_risk_call(seconds: float, outcome: str) -> None:
    """Record one call to the risk service (its duration, every try included) in the latency histogram."""
    bucket = next((str(b) for b in RISK_BUCKETS if seconds <= b), "+Inf")
    try:
        client = _client()
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(KEY, f"risk_seconds_bucket:{outcome}:{bucket}", 1)
        pipe.hincrbyfloat(KEY, f"risk_seconds_sum:{outcome}", seconds)
        pipe.execute()
        client.close()
    except redis.RedisError as exc:
        log.warning("payments.counter_lost", counter="risk_seconds", error=str(exc))


def _risk_families(values: dict[bytes, bytes]) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
    for name, (label, known, help_text) in LABELLED.items():
        family = CounterMetricFamily(f"atrium_payments_{name}", help_text, labels=[label])
        for value in known:
            family.add_metric([value], int(values.get(f"{name}:{value}".encode(), 0) or 0))
        yield family
    histogram = HistogramMetricFamily(
        "atrium_payments_risk_call_seconds",
        "Calls to the risk service (every try of one call), by outcome: ok, unavailable (risk away: the fallback "
        "applies), failed (500 or a malformed answer), refused (a 4xx for the batch).",
        labels=["outcome"],
    )
    for outcome in RISK_OUTCOMES:
        running, buckets = 0, []
        for bound in (*RISK_BUCKETS, "+Inf"):
            running += int(values.get(f"risk_seconds_bucket:{outcome}:{bound}".encode(), 0) or 0)
            buckets.append((str(bound) if bound == "+Inf" else repr(float(bound)), running))
        total = float(values.get(f"risk_seconds_sum:{outcome}".encode(), 0) or 0)
        histogram.add_metric([outcome], buckets, total)
    yield histogram


class ProcessingCollector(Collector):
    """The counters above, read from Redis at each scrape."""

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
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
        yield from _risk_families(values)
