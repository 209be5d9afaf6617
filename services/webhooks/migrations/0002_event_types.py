"""The event-type catalog's first entries: what payments and the ledger publish (their domain events' ``data``
is the object as its API returns it: services/payments/bodies.py ``payment_body``, the ledger's
``TransactionSerializer``). Self-contained: a migration never imports the code that may change after it."""

from __future__ import annotations

import copy
from typing import Any

from django.db import migrations

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
INSTANT = {"type": "string", "format": "date-time"}
INSTANT_OR_NULL = {"type": ["string", "null"], "format": "date-time"}

PAYMENT_SCHEMA: dict[str, Any] = {
    "$schema": SCHEMA_DRAFT,
    "title": "Payment",
    "description": "The payment as GET /api/v1/payments/{id} of the payments service returns it.",
    "type": "object",
    "required": [
        "id",
        "status",
        "amount",
        "currency",
        "source_account",
        "destination_account",
        "description",
        "metadata",
        "ledger_transaction",
        "failure_code",
        "failure_message",
        "status_history",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "id": {"type": "string", "pattern": "^pay_"},
        "status": {"type": "string"},
        "amount": {"type": "integer", "minimum": 1, "description": "In the currency's minor units."},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "source_account": {"type": "string"},
        "destination_account": {"type": "string"},
        "description": {"type": "string"},
        "metadata": {"type": "object"},
        "ledger_transaction": {"type": ["string", "null"], "description": "The ledger's hold (txn_…)."},
        "failure_code": {"type": "string"},
        "failure_message": {"type": "string"},
        "status_history": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["status", "at"],
                "properties": {"status": {"type": "string"}, "at": INSTANT},
            },
        },
        "created_at": INSTANT,
        "updated_at": INSTANT,
    },
}

PAYMENT_EXAMPLE: dict[str, Any] = {
    "id": "pay_01kbq3z4m7x9c2v5b8n1q4w7e0",
    "status": "created",
    "amount": 1250,
    "currency": "EUR",
    "source_account": "acc_01kbq3y8a2s5d8f1g4h7j0k3m6",
    "destination_account": "acc_01kbq3y9b3t6e9g2h5j8k1m4n7",
    "description": "Invoice 2026-1042",
    "metadata": {"order": "1042"},
    "ledger_transaction": None,
    "failure_code": "",
    "failure_message": "",
    "status_history": [{"status": "created", "at": "2026-12-05T09:30:00.123456Z"}],
    "created_at": "2026-12-05T09:30:00.123456Z",
    "updated_at": "2026-12-05T09:30:00.123456Z",
}

TRANSACTION_SCHEMA: dict[str, Any] = {
    "$schema": SCHEMA_DRAFT,
    "title": "Ledger transaction",
    "description": "The transaction as GET /api/v1/transactions/{id} of the ledger returns it.",
    "type": "object",
    "required": [
        "id",
        "reference",
        "status",
        "currency",
        "postings",
        "description",
        "metadata",
        "request_id",
        "created_at",
        "posted_at",
        "voided_at",
        "expires_at",
    ],
    "properties": {
        "id": {"type": "string", "pattern": "^txn_"},
        "reference": {"type": "string"},
        "status": {"type": "string"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "postings": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["account", "direction", "amount"],
                "properties": {
                    "account": {"type": "string"},
                    "direction": {"enum": ["debit", "credit"]},
                    "amount": {"type": "integer", "minimum": 1},
                },
            },
        },
        "description": {"type": "string"},
        "metadata": {"type": "object"},
        "request_id": {"type": "string"},
        "created_at": INSTANT,
        "posted_at": INSTANT_OR_NULL,
        "voided_at": INSTANT_OR_NULL,
        "expires_at": INSTANT_OR_NULL,
    },
}

TRANSACTION_EXAMPLE: dict[str, Any] = {
    "id": "txn_01kbq3z5n8y0d3w6c9p2r5x8f1",
    "reference": "pay_01kbq3z4m7x9c2v5b8n1q4w7e0",
    "status": "posted",
    "currency": "EUR",
    "postings": [
        {"account": "acc_01kbq3y8a2s5d8f1g4h7j0k3m6", "direction": "debit", "amount": 1250},
        {"account": "acc_01kbq3y9b3t6e9g2h5j8k1m4n7", "direction": "credit", "amount": 1250},
    ],
    "description": "Payment pay_01kbq3z4m7x9c2v5b8n1q4w7e0",
    "metadata": {},
    "request_id": "req_5f2c1d9e8a7b",
    "created_at": "2026-12-05T09:30:00.201000Z",
    "posted_at": "2026-12-05T09:30:00.348000Z",
    "voided_at": None,
    "expires_at": None,
}

PAYMENT_TYPES = {
    "created": "A payment was accepted (status created); screening and processing follow.",
    "settled": "A payment was settled: its ledger transaction is posted and the money has moved.",
    "failed": "A payment failed after it was accepted (the ledger refused it, or processing gave up): "
    "failure_code says why.",
    "rejected": "A payment was rejected by screening (a limit, a blocked account): failure_code says which rule.",
    "canceled": "A payment was canceled before processing.",
}
TRANSACTION_TYPES = {
    "posted": "A ledger transaction was posted (booked directly, or a pending hold committed).",
    "voided": "A pending ledger transaction was voided (released) before it was posted.",
}


def _history(status: str) -> list[dict[str, str]]:
    steps = {
        "created": ["created"],
        "settled": ["created", "screening", "processing", "settled"],
        "failed": ["created", "screening", "processing", "failed"],
        "rejected": ["created", "screening", "rejected"],
        "canceled": ["created", "canceled"],
    }[status]
    return [{"status": step, "at": f"2026-12-05T09:30:00.{100000 + 50000 * i}Z"} for i, step in enumerate(steps)]


def _payment(status: str) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = copy.deepcopy(PAYMENT_SCHEMA)
    schema["title"] = f"Payment ({status})"
    schema["properties"]["status"] = {"const": status}
    example = copy.deepcopy(PAYMENT_EXAMPLE)
    example["status"] = status
    example["status_history"] = _history(status)
    example["updated_at"] = example["status_history"][-1]["at"]
    if status in ("settled", "failed"):
        example["ledger_transaction"] = TRANSACTION_EXAMPLE["id"]
    if status == "failed":
        example["failure_code"] = "insufficient_funds"
        example["failure_message"] = "The source account's available balance is below the amount."
    if status == "rejected":
        example["failure_code"] = "amount_limit_exceeded"
        example["failure_message"] = "1250 EUR is above the limit of 1000 per payment."
    return schema, example


def _transaction(status: str) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = copy.deepcopy(TRANSACTION_SCHEMA)
    schema["title"] = f"Ledger transaction ({status})"
    schema["properties"]["status"] = {"const": status}
    example = copy.deepcopy(TRANSACTION_EXAMPLE)
    example["status"] = status
    if status == "voided":
        example["posted_at"] = None
        example["voided_at"] = "2026-12-05T09:30:01.020000Z"
    return schema, example


def event_types() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    types = [(f"payment.{status}", text, *_payment(status)) for status, text in PAYMENT_TYPES.items()]
    types += [
        (f"ledger.transaction.{status}", text, *_transaction(status)) for status, text in TRANSACTION_TYPES.items()
    ]
    return types


def seed(apps: Any, schema_editor: Any) -> None:
    EventType = apps.get_model("webhooks", "EventType")
    for name, description, schema, example in event_types():
        EventType.objects.update_or_create(
            name=name, defaults={"description": description, "schema": schema, "example": example}
        )


def unseed(apps: Any, schema_editor: Any) -> None:
    EventType = apps.get_model("webhooks", "EventType")
    EventType.objects.filter(name__in=[name for name, *_ in event_types()]).delete()


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
