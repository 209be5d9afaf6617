"""Payments API shapes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from services.kit.serializers import StrictSerializer
from services.payments.models import Payment


class PaymentCreateSerializer(StrictSerializer):
    """The request body. ``amount`` and ``currency`` are checked by the service (``invalid_amount``,
    ``unsupported_currency``), so any JSON value reaches it; the rest is shape only."""

    amount = serializers.JSONField()
    currency = serializers.JSONField()
    source_account = serializers.CharField(max_length=40)
    destination_account = serializers.CharField(max_length=40)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    metadata = serializers.DictField(required=False, default=dict)

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 50:
            raise serializers.ValidationError("At most 50 keys.", code="too_many_keys")
        return value


class StatusChangeSerializer(serializers.Serializer):
    status = serializers.CharField()
    at = serializers.CharField()


class PaymentSerializer(serializers.ModelSerializer):
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


def payment_body(payment: Payment) -> dict[str, Any]:
    """The payment as the API returns it, as plain JSON data (what an idempotent replay sends again)."""
    import json

    from rest_framework.utils.encoders import JSONEncoder

    return json.loads(json.dumps(PaymentSerializer(payment).data, cls=JSONEncoder))
