"""Ledger API shapes: input serializers check shape; the services decide meaning."""

from __future__ import annotations

import datetime as dt
import re
from datetime import datetime
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from services.kit.context import request_id_clean
from services.kit.serializers import AmountField, AmountInputField, CurrencyField, MinorUnitsField, StrictSerializer
from services.ledger.bodies import postings_of, transaction_body
from services.ledger.models import MAX_AMOUNT, Account, AccountStatus, Direction, NormalBalance, Posting, Transaction
from services.ledger.services.transactions import PostingInput, TransactionInput

CURRENCY = r"^[A-Z]{3}$"


class AccountSerializer(serializers.ModelSerializer):
    currency = CurrencyField(read_only=True)
    overdraft_limit = MinorUnitsField(read_only=True, help_text="How far below zero the available balance may go.")
    debits_posted = MinorUnitsField(read_only=True, help_text="Posted debits, ever.")
    credits_posted = MinorUnitsField(read_only=True, help_text="Posted credits, ever.")
    debits_pending = MinorUnitsField(read_only=True, help_text="Debits held by pending transactions.")
    credits_pending = MinorUnitsField(read_only=True, help_text="Credits held by pending transactions.")
    balance = MinorUnitsField(
        read_only=True,
        help_text="Posted balance on the account's normal side (credits minus debits for a credit-normal account).",
    )
    available = MinorUnitsField(
        read_only=True, help_text="What can be spent: the balance less pending debits (or credits)."
    )

    class Meta:
        model = Account
        fields = [
            "id",
            "code",
            "name",
            "currency",
            "normal_balance",
            "status",
            "overdraft_limit",
            "allow_negative",
            "debits_posted",
            "credits_posted",
            "debits_pending",
            "credits_pending",
            "balance",
            "available",
            "metadata",
            "created_at",
        ]
        read_only_fields = fields


class AccountCreateSerializer(StrictSerializer):
    code = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True)
    name = serializers.CharField(max_length=200)
    currency = CurrencyField()
    normal_balance = serializers.ChoiceField(choices=NormalBalance.choices)
    overdraft_limit = serializers.IntegerField(
        min_value=0, max_value=MAX_AMOUNT, default=0, help_text="In minor units; 0 (the default) allows none."
    )
    allow_negative = serializers.BooleanField(default=False)
    metadata = serializers.DictField(default=dict)


class AccountUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    metadata = serializers.DictField(required=False)
    status = serializers.ChoiceField(choices=AccountStatus.choices, required=False)


class PostingSerializer(serializers.ModelSerializer):
    account = serializers.CharField(source="account_id")
    amount = AmountField()

    class Meta:
        model = Posting
        fields = ["account", "direction", "amount"]


class AccountPostingSerializer(serializers.ModelSerializer):
    transaction = serializers.CharField(source="transaction_id")
    reference = serializers.CharField(source="transaction.reference")
    status = serializers.CharField(source="transaction.status")
    amount = AmountField()

    class Meta:
        model = Posting
        fields = ["id", "transaction", "reference", "status", "direction", "amount", "created_at"]


class TransactionSerializer(serializers.ModelSerializer):
    postings = serializers.SerializerMethodField()
    currency = CurrencyField(read_only=True)

    class Meta:
        model = Transaction
        fields = [
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
        ]
        read_only_fields = fields

    @extend_schema_field(PostingSerializer(many=True))
    def get_postings(self, obj: Transaction) -> list[dict[str, Any]]:
        return [{"account": p.account_id, "direction": p.direction, "amount": p.amount} for p in postings_of(obj)]

    def to_representation(self, obj: Transaction) -> dict[str, Any]:
        # The hot path of every write: built directly (same fields and formats as the
        # declared ModelSerializer, which still drives the OpenAPI schema) at a tenth of the cost.
        return transaction_body(obj)


class PostingInputSerializer(StrictSerializer):
    account = serializers.CharField(max_length=40)
    direction = serializers.ChoiceField(choices=Direction.choices)
    # Any JSON value: the service refuses non-integers, ≤ 0 and > 2^63-1 with code invalid_amount.
    amount = AmountInputField()


class TransactionInputSerializer(StrictSerializer):
    reference = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    pending = serializers.BooleanField(default=False)
    currency = CurrencyField(required=False)
    postings = serializers.ListField(child=PostingInputSerializer(), allow_empty=True, max_length=100)
    metadata = serializers.DictField(default=dict)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def to_input(self) -> TransactionInput:
        data = self.validated_data
        return transaction_input(data)


REQUEST_ID_RULE = "1 to 128 characters among A-Z a-z 0-9 . _ : - (the X-Request-ID rule)"


class StringField(serializers.CharField):
    """A string and nothing else: DRF's CharField would take the number 7 as "7"."""

    default_error_messages = {"invalid": "Not a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "pattern": r"^[A-Za-z0-9._:\-]{1,128}$", "maxLength": 128})
class RequestIdField(serializers.CharField):
    """An item's own request id: what ``X-Request-ID`` accepts (``request_id_clean``), nothing trimmed or coerced;
    one error when it is not one (the value is not echoed)."""

    default_error_messages = {"invalid": f"Not a request id: use {REQUEST_ID_RULE}."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 128)
        kwargs.setdefault(
            "help_text",
            "The request this item belongs to, stored on its transaction and audit events instead of the call's "
            f"X-Request-ID: {REQUEST_ID_RULE}.",
        )
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or request_id_clean(data) is None:
            self.fail("invalid")
        return data


class BatchItemInputSerializer(TransactionInputSerializer):
    """A transaction of ``transactions/batch``: a single transaction's fields and the item's own request id."""

    request_id = RequestIdField(required=False)


_FAST_KEYS = frozenset({"reference", "description", "pending", "currency", "postings", "metadata", "expires_at"})
_BATCH_FAST_KEYS = _FAST_KEYS | {"request_id"}
# An ISO 8601 instant with an explicit offset: what DRF's DateTimeField accepts and reads the same way.
_INSTANT_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_POSTING_KEYS = frozenset({"account", "direction", "amount"})
_DIRECTIONS = frozenset(Direction.values)
_CURRENCY_RE = re.compile(CURRENCY)


def _plain(value: Any, max_length: int, *, blank: bool = False) -> bool:
    return isinstance(value, str) and len(value) <= max_length and (blank or value != "") and value == value.strip()


def transaction_input_fast(raw: Any, *, batch_item: bool = False) -> TransactionInput | None:
    """The common, well-formed item without DRF's per-field machinery (a batch's main CPU cost).

    Accepts only input :class:`TransactionInputSerializer` (``batch_item``: :class:`BatchItemInputSerializer`,
    which also takes ``request_id``) would accept unchanged; anything else returns ``None`` so the serializer
    handles it and reports errors in its usual shape.
    """
    if not isinstance(raw, dict) or not raw.keys() <= (_BATCH_FAST_KEYS if batch_item else _FAST_KEYS):
        return None
    request_id = raw.get("request_id", "")
    if request_id != "" and (type(request_id) is not str or request_id_clean(request_id) is None):
        return None
    if "request_id" in raw and request_id == "":
        return None
    reference, postings = raw.get("reference"), raw.get("postings")
    description, pending = raw.get("description", ""), raw.get("pending", False)
    currency, metadata = raw.get("currency"), raw.get("metadata", {})
    if not _plain(reference, 200) or not _plain(description, 10**9, blank=True) or type(pending) is not bool:
        return None
    if currency is not None and not (isinstance(currency, str) and _CURRENCY_RE.match(currency)):
        return None
    if "currency" in raw and currency is None:
        return None
    if not isinstance(metadata, dict) or not isinstance(postings, list) or len(postings) > 100:
        return None
    expires_at = raw.get("expires_at")
    if expires_at is not None:
        if not isinstance(expires_at, str) or not _INSTANT_RE.fullmatch(expires_at):
            return None
        try:
            expires_at = datetime.fromisoformat(expires_at).astimezone(dt.UTC)
        except (ValueError, OverflowError):
            return None
    parsed = []
    for posting in postings:
        if not isinstance(posting, dict) or posting.keys() != _POSTING_KEYS:
            return None
        account, direction = posting["account"], posting["direction"]
        if not _plain(account, 40) or type(direction) is not str or direction not in _DIRECTIONS:
            return None
        parsed.append(PostingInput(account, direction, posting["amount"]))
    return TransactionInput(
        reference=reference,
        description=description,
        pending=pending,
        currency=currency,
        metadata=metadata,
        postings=parsed,
        expires_at=expires_at,
        request_id=request_id,
    )


def transaction_input(data: dict[str, Any]) -> TransactionInput:
    return TransactionInput(
        reference=data["reference"],
        description=data.get("description", ""),
        pending=data.get("pending", False),
        currency=data.get("currency"),
        metadata=data.get("metadata") or {},
        expires_at=data.get("expires_at"),
        postings=[PostingInput(p["account"], p["direction"], p["amount"]) for p in data["postings"]],
        request_id=data.get("request_id", ""),
    )


@extend_schema_field(BatchItemInputSerializer(many=True))
class BatchItemsField(serializers.ListField):
    """The items of ``transactions/batch``: objects, each validated on its own by the view (a malformed one is
    that item's ``validation_error``); documented as :class:`BatchItemInputSerializer`."""


class BatchInputSerializer(StrictSerializer):
    transactions = BatchItemsField(child=serializers.DictField(), min_length=1, max_length=1000)
    atomic = serializers.BooleanField(default=False)


class SettleItemSerializer(StrictSerializer):
    id = StringField(max_length=40)
    request_id = RequestIdField(required=False)


_SETTLE_ITEM_SCHEMA = {
    "oneOf": [
        {"type": "string", "maxLength": 40, "description": "A transaction id."},
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "maxLength": 40},
                "request_id": {"type": "string", "pattern": r"^[A-Za-z0-9._:\-]{1,128}$"},
            },
            "required": ["id"],
            "additionalProperties": False,
            "description": "A transaction id and the request it is settled for (its audit event carries it).",
        },
    ]
}


_JSON_KINDS = {int: "a number", float: "a number", bool: "a boolean", list: "an array", type(None): "null"}


@extend_schema_field(_SETTLE_ITEM_SCHEMA)
class SettleItemField(serializers.Field):
    """One item of ``transactions/batch/settle``: a transaction id, or ``{"id", "request_id"}``; validated as
    ``(id, request id or "")``."""

    default_error_messages = {
        "invalid": "Each item is a transaction id (a string) or an object with id and request_id, not {kind}.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plain = StringField(max_length=40)
        self.item = SettleItemSerializer()

    def to_internal_value(self, data: Any) -> tuple[str, str]:
        if isinstance(data, str):
            return self.plain.run_validation(data), ""
        if isinstance(data, dict):
            item = self.item.run_validation(data)
            return item["id"], item.get("request_id", "")
        self.fail("invalid", kind=_JSON_KINDS.get(type(data), "that"))
        raise AssertionError("unreachable")  # fail() raises

    def to_representation(self, value: Any) -> Any:
        return value


class SettleBatchInputSerializer(StrictSerializer):
    action = serializers.ChoiceField(choices=["post", "void"])
    transactions = serializers.ListField(child=SettleItemField(), min_length=1, max_length=1000)


class SettleResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["posted", "voided", "error"])
    id = serializers.CharField(required=False)
    code = serializers.CharField(required=False)
    detail = serializers.CharField(required=False)


class BatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "exists", "error"])
    id = serializers.CharField(required=False)
    code = serializers.CharField(required=False)
    detail = serializers.CharField(required=False)


class BalanceSerializer(serializers.Serializer):
    account = serializers.CharField(source="account.id")
    as_of = serializers.DateTimeField()
    debits_posted = MinorUnitsField(help_text="Posted debits up to as_of.")
    credits_posted = MinorUnitsField(help_text="Posted credits up to as_of.")
    debits_pending = MinorUnitsField(help_text="Debits held by transactions pending at as_of.")
    credits_pending = MinorUnitsField(help_text="Credits held by transactions pending at as_of.")
    balance = MinorUnitsField(help_text="Posted balance at as_of, on the account's normal side.")
    available = MinorUnitsField(help_text="What could be spent at as_of.")
