"""Payments API shapes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from services.kit.serializers import AmountField, AmountInputField, CurrencyField, CurrencyInputField, StrictSerializer
from services.payments.models import Payment, PaymentStatus


class PaymentCreateSerializer(StrictSerializer):
    """The request body. ``amount`` and ``currency`` are checked by the service (``invalid_amount``,
    ``unsupported_currency``), so any JSON value reaches it; the rest is shape only."""

    amount = AmountInputField()
    currency = CurrencyInputField()
    source_account = serializers.CharField(max_length=40)
    destination_account = serializers.CharField(max_length=40)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    # Its limits (keys, key and value lengths) are the kit's, checked by the service (422 invalid_metadata).
    metadata = serializers.DictField(required=False, default=dict)


_CREATE_KEYS = frozenset(PaymentCreateSerializer._declared_fields)
_CREATE_REQUIRED = frozenset({"amount", "currency", "source_account", "destination_account"})


def _plain(value: Any, max_length: int, *, blank: bool = False) -> bool:
    """A string DRF's CharField would keep unchanged: no surrounding whitespace, no NUL, no surrogate."""
    return (
        type(value) is str
        and len(value) <= max_length
        and (blank or value != "")
        and value == value.strip()
        and "\x00" not in value
        and (value.isascii() or not any("\ud800" <= c <= "\udfff" for c in value))
    )


def create_input_fast(data: Any) -> dict[str, Any] | None:
    """The validated data of a well-formed create request without DRF's per-field machinery (building the
    serializer's fields costs more than the rest of the request's validation), or None: then
    :class:`PaymentCreateSerializer` validates it and reports errors in its usual shape. Accepts only what the
    serializer would accept unchanged (a test holds them equal)."""
    if type(data) is not dict or not _CREATE_REQUIRED <= data.keys() <= _CREATE_KEYS:
        return None
    if not _plain(data["source_account"], 40) or not _plain(data["destination_account"], 40):
        return None
    description = data.get("description", "")
    metadata = data.get("metadata", {})
    if not _plain(description, 500, blank=True) or type(metadata) is not dict:
        return None
    if not all(type(k) is str for k in metadata):
        return None
    return {
        "amount": data["amount"],
        "currency": data["currency"],
        "source_account": data["source_account"],
        "destination_account": data["destination_account"],
        "description": description,
        "metadata": dict(metadata),
    }


class ReviewDecisionSerializer(StrictSerializer):
    """The optional body of an approve or a reject: why (kept in the audit trail; a rejection's
    ``failure_message``)."""

    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class StatusChangeSerializer(serializers.Serializer):
    status = serializers.CharField()
    at = serializers.CharField()


class PaymentSerializer(serializers.ModelSerializer):
    amount = AmountField()
    currency = CurrencyField()
    ledger_transaction = serializers.SerializerMethodField()
    status_history = StatusChangeSerializer(many=True)

    class Meta:
        model = Payment
        fields = [
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
        ]
        read_only_fields = fields

    def get_ledger_transaction(self, obj: Payment) -> str | None:
        return obj.ledger_transaction or None


class CurrencyTotalSerializer(serializers.Serializer):
    currency = serializers.CharField(help_text="ISO 4217 code.")
    count = serializers.IntegerField()
    amount = serializers.IntegerField(help_text="The sum, in the currency's minor units.")


class StatusTotalSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PaymentStatus.choices)
    count = serializers.IntegerField(help_text="Payments in this status, every currency.")
    amounts = CurrencyTotalSerializer(many=True, help_text="Count and sum per currency (only those seen).")


class PaymentStatsSerializer(serializers.Serializer):
    """Payments created in the window, by their status now."""

    window = serializers.ChoiceField(choices=["1h", "24h"])
    since = serializers.DateTimeField(help_text="Start of the window (included).")
    until = serializers.DateTimeField(help_text="End of the window (excluded): when the stats were read.")
    count = serializers.IntegerField(help_text="Payments created in the window.")
    statuses = StatusTotalSerializer(many=True, help_text="Every status, in life-cycle order, zeros included.")
