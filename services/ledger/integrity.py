"""The last integrity check's outcome, shared between the worker that runs it and the
web process whose ``/metrics`` Prometheus scrapes (through Redis)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.kit.logs import get_logger
from services.ledger import selectors

log = get_logger(__name__)

STATE_KEY = "atrium:ledger:integrity"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


def integrity_check_run() -> dict[str, Any]:
    """Run the integrity report, publish its outcome, and log loudly when the books are wrong."""
    report = selectors.integrity_report()
    problems = len(report["account_mismatches"]) + len(report["unbalanced_currencies"])
    state = {"problems": problems, "checked_at": time.time()}
    try:
        client = _redis()
        client.set(STATE_KEY, json.dumps(state))
        client.close()
    except redis.RedisError as exc:
        log.warning("ledger.integrity_state_unpublished", error=str(exc))
    if problems:
        log.error("ledger.integrity_violated", problems=problems, report=report)
    else:
        log.info("ledger.integrity_ok")
    return {**report, "problems": problems}


class IntegrityCollector(Collector):
    """Exports the last check as ``atrium_ledger_integrity_problems`` and its timestamp."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            client = _redis()
            raw = client.get(STATE_KEY)
            client.close()
        except redis.RedisError:
            return
        if not raw:
            return
        state = json.loads(raw)
        yield GaugeMetricFamily(
            "atrium_ledger_integrity_problems",
            "Accounts whose totals differ from their postings plus currencies not summing to zero, at the last check.",
            value=state["problems"],
        )
        yield GaugeMetricFamily(
            "atrium_ledger_integrity_checked_timestamp_seconds",
            "When the last integrity check ran (Unix time).",
            value=state["checked_at"],
        )
