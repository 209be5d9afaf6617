"""A payment as plain JSON data: what the API returns for it, an idempotent replay sends again and every
``payment.<status>`` event carries. Below the API and the writes, so both use it.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from services.payments.models import Payment


def _instant(value: Any) -> str:
    """DRF's DateTimeField output: ISO 8601 in UTC, ``Z`` for +00:00, microseconds only when there are some."""
    text = value.astimezone(dt.UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def payment_body(payment: Payment) -> dict[str, Any]:
    """The payment as the API returns it (what ``api.serializers.PaymentSerializer`` gives), as plain JSON
    data: what an idempotent replay sends again and what every ``payment.<status>`` event carries. Built by
    hand: the serializer and a JSON round trip cost more than the rest of a status change (a test keeps them
    equal)."""
    return {
        "id": payment.id,
        "status": str(payment.status),
        "amount": payment.amount,
        "currency": payment.currency,
        "source_account": payment.source_account,
        "destination_account": payment.destination_account,
        "description": payment.description,
        "metadata": copy.deepcopy(payment.metadata),
        "ledger_transaction": payment.ledger_transaction or None,
        "failure_code": payment.failure_code,
        "failure_message": payment.failure_message,
        "status_history": [{"status": str(h["status"]), "at": str(h["at"])} for h in payment.status_history],
        "created_at": _instant(payment.created_at),
        "updated_at": _instant(payment.updated_at),
    }
