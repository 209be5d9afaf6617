"""Periodic tasks run by ``celery -A workers beat``."""

from __future__ import annotations

BEAT_SCHEDULE = {
    # Proves beat → broker → portal worker keeps working; later issues add
    # health polling, outbox sweeps and reconciliation here.
    "portal.ping.beat": {"task": "portal.ping", "schedule": 300.0, "kwargs": {"message": "beat"}},
}
