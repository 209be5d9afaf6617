"""Periodic tasks run by ``celery -A workers beat``."""

from __future__ import annotations

BEAT_SCHEDULE = {
    # Proves beat → broker → portal worker keeps working; later issues add
    # health polling, outbox sweeps and reconciliation here.
    "portal.ping.beat": {"task": "portal.ping", "schedule": 300.0, "kwargs": {"message": "beat"}},
    "ledger.integrity_check": {"task": "ledger.integrity_check", "schedule": 600.0},
    "ledger.expire_pending": {"task": "ledger.expire_pending", "schedule": 30.0},
}
