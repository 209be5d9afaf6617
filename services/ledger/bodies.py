"""A transaction as plain JSON data: what the API returns for it and what every ``ledger.transaction.*`` domain
event carries. Below the API and the writes, so both use it."""

from __future__ import annotations

import datetime as dt
from datetime import datetime
from typing import Any

from services.ledger.models import Posting, Transaction


def iso(value: datetime | None) -> str | None:
    """DRF's DateTimeField output: ISO 8601 in UTC with a trailing Z."""
    if value is None:
        return None
    text = value.astimezone(dt.UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def postings_of(txn: Transaction) -> list[Posting]:
    """The transaction's postings: those the write kept on it (``postings_list``), else read (in id order)."""
    postings = getattr(txn, "postings_list", None)
    if postings is None:
        postings = sorted(txn.postings.all(), key=lambda p: p.id)
    return postings


def transaction_body(txn: Transaction) -> dict[str, Any]:
    """The transaction as the API returns it (``api.serializers.TransactionSerializer``'s fields and formats),
    built by hand: the hot path of every write and of every domain event."""
    return {
        "id": txn.id,
        "reference": txn.reference,
        "status": txn.status,
        "currency": txn.currency,
        "postings": [{"account": p.account_id, "direction": p.direction, "amount": p.amount} for p in postings_of(txn)],
        "description": txn.description,
        "metadata": txn.metadata,
        "request_id": txn.request_id,
        "created_at": iso(txn.created_at),
        "posted_at": iso(txn.posted_at),
        "voided_at": iso(txn.voided_at),
        "expires_at": iso(txn.expires_at),
    }
