"""Audit events of the ledger's mutations, written through the kit's outbox in the write's own transaction.

Batches write all their events with one multi-row INSERT queued on the write path's final pipeline, so
auditing adds no round trip to a transfer. Refusals are recorded with outcome ``failure`` and the error
code; when the refused write rolled back (an atomic batch, post/void), the failure events are written
in their own short transaction right after, through the same outbox.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_event
from services.kit.db import Pipeline, WriteTransaction
from services.kit.ids import id_new
from services.kit.models import OutboxEvent
from services.kit.outbox import outbox_put, relay_kick

_TABLE = OutboxEvent._meta.db_table


def transaction_metadata(txn: Any) -> dict[str, Any]:
    postings = getattr(txn, "postings_list", None)
    if postings is None:
        postings = list(txn.postings.all())
    return {
        "reference": txn.reference,
        "status": txn.status,
        "currency": txn.currency,
        "amount": sum(p.amount for p in postings if p.direction == "debit"),
        "accounts": sorted({getattr(p, "account_id", None) or p.account.id for p in postings}),
    }


def refusal_metadata(error: Any, **extra: Any) -> dict[str, Any]:
    return {"code": getattr(error, "code", "error"), "detail": str(getattr(error, "detail", error)), **extra}


def queue_events(pipeline: Pipeline, tx: WriteTransaction, bodies: list[dict[str, Any]]) -> None:
    """One INSERT of every event body on ``pipeline`` (same transaction); wake the relay after commit."""
    if not bodies:
        return
    now = timezone.now()
    values = ", ".join(["(%s, 'audit', %s::jsonb, %s, 0, '')"] * len(bodies))
    params: list[Any] = []
    for body in bodies:
        params.extend([id_new("evt"), json.dumps(body, separators=(",", ":"), ensure_ascii=False), now])
    pipeline.add(
        f"INSERT INTO {_TABLE} (id, topic, payload, created_at, attempts, last_error) VALUES {values}",  # noqa: S608
        params,
    )
    tx.on_commit(relay_kick)


def copy_events(raw_cursor: Any, tx: WriteTransaction, bodies: list[dict[str, Any]]) -> None:
    """The same rows with COPY (large batches, already on the COPY path); wake the relay after commit."""
    if not bodies:
        return
    now = timezone.now()
    with raw_cursor.copy(f"COPY {_TABLE} (id, topic, payload, created_at, attempts, last_error) FROM STDIN") as copy:
        for body in bodies:
            copy.write_row(
                (id_new("evt"), "audit", json.dumps(body, separators=(",", ":"), ensure_ascii=False), now, 0, "")
            )
    tx.on_commit(relay_kick)


def record_after_rollback(bodies: list[dict[str, Any]]) -> None:
    """Failure events of a write that rolled back: their own transaction, so the refusal is on record."""
    if not bodies:
        return
    with transaction.atomic():
        for body in bodies:
            outbox_put("audit", body)


def created_event(txn: Any, context: dict[str, Any] | None = None, occurred_at: Any = None) -> dict[str, Any]:
    return audit_event(
        "ledger.transaction.created",
        object_type="transaction",
        object_id=txn.id,
        metadata=transaction_metadata(txn),
        context=context,
        occurred_at=occurred_at,
    )


def refused_event(
    action: str,
    error: Any,
    *,
    object_type: str,
    object_id: str = "",
    context: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return audit_event(
        action,
        outcome="failure",
        object_type=object_type,
        object_id=object_id,
        metadata=refusal_metadata(error, **extra),
        context=context,
    )
