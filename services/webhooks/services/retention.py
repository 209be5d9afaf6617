"""Attempt retention: attempts older than ``WEBHOOKS_ATTEMPT_RETENTION_DAYS`` are deleted, a batch at a time (the
BRIN index on ``at`` finds them; each batch its own transaction, so the purge never holds many locks or a long
transaction). Run hourly by beat (``webhooks.attempts_purge``)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from services.kit.logs import get_logger
from services.webhooks import queries

log = get_logger(__name__)


def attempts_purge(*, days: int | None = None, batch: int = 10_000, max_batches: int = 1000) -> int:
    """Delete attempts older than ``days`` (the setting by default); return how many went."""
    days = int(settings.WEBHOOKS_ATTEMPT_RETENTION_DAYS) if days is None else days
    cutoff = timezone.now() - dt.timedelta(days=days)
    removed = 0
    for _ in range(max_batches):
        with transaction.atomic():
            deleted = queries.attempts_purge_batch(cutoff, batch)
        removed += deleted
        if deleted < batch:
            break
    log.info("webhooks.attempts_purged", rows=removed, retention_days=days)
    return removed
