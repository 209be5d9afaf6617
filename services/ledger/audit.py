"""Audit events of the ledger's mutations, written through the kit's outbox in the write's own transaction.

What is recorded, and where (``services/ledger/services/``: accounts, transactions, settlement):

* ``ledger.account.created`` / ``ledger.account.changed``: ``account_create`` / ``account_update``, in their
  atomic block (``audit_record``); refusals (duplicate code, invalid overdraft limit, not found, closed,
  not empty) with outcome ``failure`` after the rollback.
* ``ledger.transaction.created``: ``_create_batch`` (the one path of every creation, single or batched) builds
  one body per created *or refused* item and :func:`queue_events` writes them all with one INSERT
  on the final write pipeline (before its COMMIT: no extra round trip), or :func:`copy_events` on the COPY
  path of large batches. Idempotent replays (``exists``) are not mutations and are not recorded.
* An atomic batch that is rejected commits nothing, so its events are written after the rollback by
  :func:`record_after_rollback`: **one failure event per item**, each with the item's reference and its own
  code (``insufficient_funds``, ``validation_error``, …) or ``batch_rejected`` for the items that were fine
  but went down with the batch. Per item rather than one batch event, so a search by reference finds it.
* ``ledger.transaction.posted`` / ``ledger.transaction.voided``: ``_settle`` (post, void and expiry, whose voids
  carry ``reason: expired`` and, run by the worker, the ``system`` actor); refusals such as
  ``transaction_not_pending`` after the rollback.

Failure events carry ``metadata.code`` (and ``detail``, and the reference where there is one).

Every event carries a ``request_id``: the call's ``X-Request-ID`` (from :func:`~services.kit.audit.audit_context`,
computed once per batch), or, for a batch item that has its own (``transactions/batch`` and
``transactions/batch/settle`` items: a payment's request id), that one — passed per event as
``request_id=`` (the kit's rule for set-based code, ``services/kit/carry.py``; nothing copied per item).
"""

from __future__ import annotations

from typing import Any

from services.kit.audit import audit_context, audit_event
from services.kit.db import Pipeline, WriteTransaction
from services.kit.outbox import outbox_copy, outbox_put_many
from services.ledger import events

TOPIC = "audit"


def transaction_metadata(txn: Any) -> dict[str, Any]:
    """Reference, status, amount (the sum of the debits), currency and the accounts involved."""
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


def _rows(bodies: list[dict[str, Any]], domain: list[dict[str, Any]] | None) -> list[tuple[str, dict[str, Any]]]:
    rows = [(TOPIC, body) for body in bodies]
    if domain:
        rows.extend((events.TOPIC, event) for event in domain)
    return rows


def queue_events(
    pipeline: Pipeline, tx: WriteTransaction, bodies: list[dict[str, Any]], domain: list[dict[str, Any]] | None = None
) -> list[str]:
    """Queue the INSERT of every event body on ``pipeline`` (the write's transaction, no extra round trip; the
    kit's one array INSERT), with the write's domain events (``domain``, topic ``events``: :mod:`.events`) in
    the same statement; wake the relay once after commit. Return the event ids."""
    return outbox_put_many(_rows(bodies, domain), pipeline=pipeline, tx=tx)


def copy_events(
    raw_cursor: Any, tx: WriteTransaction, bodies: list[dict[str, Any]], domain: list[dict[str, Any]] | None = None
) -> list[str]:
    """The same rows with the kit's COPY (large batches, already on the COPY path); wake the relay after commit."""
    return outbox_copy(raw_cursor, _rows(bodies, domain), tx=tx)


def record_after_rollback(bodies: list[dict[str, Any]]) -> list[str]:
    """Failure events of a write that rolled back (or never reached the write path): committed in a transaction
    of their own (BEGIN, one INSERT, COMMIT: one round trip), so the refusal stays on record. Inside a
    caller's atomic block they join it (and go with it)."""
    if not bodies:
        return []
    with WriteTransaction() as tx:
        pipeline = Pipeline()
        tx.begin(pipeline)
        ids = queue_events(pipeline, tx, bodies)
        tx.commit(pipeline)
        pipeline.run()
    return ids


def created_event(
    txn: Any, context: dict[str, Any] | None = None, occurred_at: Any = None, request_id: str = ""
) -> dict[str, Any]:
    """The creation event of ``txn``; ``request_id`` (when not "") replaces the context's: a batch item's own."""
    return audit_event(
        "ledger.transaction.created",
        object_type="transaction",
        object_id=txn.id,
        metadata=transaction_metadata(txn),
        context=context,
        occurred_at=occurred_at,
        request_id=request_id,
    )


def refused_event(
    action: str,
    error: Any,
    *,
    object_type: str,
    object_id: str = "",
    context: dict[str, Any] | None = None,
    request_id: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A ``failure`` event of ``action`` with the error's code and detail (and ``extra``) as metadata;
    ``request_id`` (when not "") replaces the context's: a batch item's own."""
    return audit_event(
        action,
        outcome="failure",
        object_type=object_type,
        object_id=object_id,
        metadata=refusal_metadata(error, **extra),
        context=context,
        request_id=request_id,
    )


def refused_creations(refusals: list[tuple[str, Any, str]]) -> list[dict[str, Any]]:
    """Failure ``ledger.transaction.created`` bodies for ``(reference, error, request id)`` triples (one shared
    context; an item's own request id, when not "", replaces the call's)."""
    context = audit_context()
    return [
        refused_event(
            "ledger.transaction.created",
            error,
            object_type="transaction",
            context=context,
            request_id=request_id,
            reference=ref,
        )
        for ref, error, request_id in refusals
    ]
