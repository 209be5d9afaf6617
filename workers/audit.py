"""Audit tasks (queue ``audit``), run with ``DJANGO_SETTINGS_MODULE=portal.settings``."""

from __future__ import annotations

from typing import Any

from portal.audit.chain import ingest as chain_ingest
from portal.audit.heads import head_sign
from workers.celery import app
from workers.diagnostics import ping_task

ping = ping_task("audit")


@app.task(name="audit.ingest", bind=True, max_retries=None, acks_late=True)
def ingest(self: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Chain a batch of events from a service's outbox (idempotent on event id)."""
    result = chain_ingest(events)
    return {
        "inserted": result.inserted,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
    }


@app.task(name="audit.sign_head")
def sign_head() -> dict[str, Any] | None:
    """Sign the tree head if the log grew since the last one."""
    head = head_sign()
    return None if head is None else {"tree_size": head.tree_size, "root_hash": head.root_hash}
