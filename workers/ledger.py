"""Ledger tasks (queue ``ledger``), run with ``DJANGO_SETTINGS_MODULE=services.ledger.settings``."""

from __future__ import annotations

from typing import Any

from services.ledger.integrity import integrity_check_run
from services.ledger.services import settlement
from workers.celery import app
from workers.diagnostics import noop_task, ping_task, probe_task
from workers.outbox import outbox_purge_task, outbox_relay_task

ping = ping_task("ledger")
probe = probe_task("ledger")
noop = noop_task("ledger")
outbox_relay = outbox_relay_task("ledger")
outbox_purge = outbox_purge_task("ledger")


@app.task(name="ledger.integrity_check")
def integrity_check() -> dict[str, Any]:
    """Recompute every balance from postings and the per-currency zero sum; shout on any mismatch."""
    return integrity_check_run()


@app.task(name="ledger.expire_pending", housekeeping=True)
def expire_pending(limit: int = 500) -> int:
    """Void pending transactions past their ``expires_at``."""
    return settlement.transactions_expire(limit=limit)
