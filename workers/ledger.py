"""Ledger tasks (queue ``ledger``), run with ``DJANGO_SETTINGS_MODULE=services.ledger.settings``."""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge

from services.kit.logs import get_logger
from services.kit.metrics import REGISTRY
from services.ledger import selectors, services
from workers.celery import app
from workers.diagnostics import ping_task

log = get_logger(__name__)

ping = ping_task("ledger")

INTEGRITY_MISMATCHES = Gauge(
    "atrium_ledger_integrity_mismatches",
    "Accounts whose stored totals differ from their postings, plus currencies that do not sum to zero.",
    **({"registry": REGISTRY} if REGISTRY is not None else {}),
)


@app.task(name="ledger.integrity_check")
def integrity_check() -> dict[str, Any]:
    """Recompute every balance from postings and the per-currency zero sum; shout on any mismatch."""
    report = selectors.integrity_report()
    problems = len(report["account_mismatches"]) + len(report["unbalanced_currencies"])
    INTEGRITY_MISMATCHES.set(problems)
    if report["ok"]:
        log.info("ledger.integrity_ok")
    else:
        log.error("ledger.integrity_violated", problems=problems, report=report)
    return report


@app.task(name="ledger.expire_pending")
def expire_pending(limit: int = 500) -> int:
    """Void pending transactions past their ``expires_at``."""
    return services.transactions_expire(limit=limit)
