"""The ledger's domain events, for the webhooks service: ``ledger.transaction.posted`` when a transaction is
posted (created posted, or a hold posted) and ``ledger.transaction.voided`` when a hold is voided (by a call, a
batch or its expiry). Written to the outbox topic ``events`` (relayed to ``webhooks.ingest``) in the write's own
transaction, beside its audit events (:mod:`services.ledger.services.bulk` writes both with one INSERT or COPY).

Shape (``docs/webhooks-events.md``): ``{"type", "occurred_at", "data": <the transaction as the API returns it>,
"channels": <its posting accounts, distinct, in order of appearance>, "request_id", "task_id"?}``. The request id
is the item's own when a batch item has one (``services/kit/carry.py``), else the call's: always the same as the
change's audit event.
"""

from __future__ import annotations

from typing import Any

from services.ledger.bodies import iso, postings_of, transaction_body
from services.ledger.models import Transaction, TransactionStatus

TOPIC = "events"
POSTED = "ledger.transaction.posted"
VOIDED = "ledger.transaction.voided"


def transaction_event(txn: Transaction, audit: dict[str, Any]) -> dict[str, Any]:
    """The domain event of ``txn``'s current status (posted or voided), with its audit event's request and task
    ids (``audit``: the body written with it)."""
    if txn.status == TransactionStatus.POSTED:
        event_type, at = POSTED, txn.posted_at
    elif txn.status == TransactionStatus.VOIDED:
        event_type, at = VOIDED, txn.voided_at
    else:
        raise ValueError(f"transaction {txn.id} is {txn.status}: no domain event")
    event: dict[str, Any] = {
        "type": event_type,
        "occurred_at": iso(at),
        "data": transaction_body(txn),
        "channels": list(dict.fromkeys(p.account_id for p in postings_of(txn))),
        "request_id": audit.get("request_id") or "",
    }
    task_id = (audit.get("metadata") or {}).get("task_id")
    if task_id:
        event["task_id"] = task_id
    return event
