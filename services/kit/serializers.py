"""Serializer building blocks shared by every service."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from services.kit.schema import AMOUNT_SCHEMA, CURRENCY_SCHEMA


@extend_schema_field(AMOUNT_SCHEMA)
class AmountField(serializers.IntegerField):
    """An amount: an integer of minor units, at least 1 (documented as ``AMOUNT_SCHEMA``)."""


@extend_schema_field(AMOUNT_SCHEMA)
class AmountInputField(serializers.JSONField):
    """An amount in a request, documented as ``AMOUNT_SCHEMA`` but taking any JSON value, so that the service
    refuses a wrong one with its own code (``invalid_amount``)."""


@extend_schema_field({"type": "integer", "format": "int64", "example": 1250})
class MinorUnitsField(serializers.IntegerField):
    """A signed sum of minor units (a balance, a total); its ``help_text`` says which."""


@extend_schema_field(CURRENCY_SCHEMA)
class CurrencyField(serializers.RegexField):
    """An ISO 4217 currency code (``CURRENCY_SCHEMA``); the shape only, a service decides which it takes."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("error_messages", {"invalid": "Use an ISO 4217 code such as EUR."})
        super().__init__(r"^[A-Z]{3}$", **kwargs)


@extend_schema_field(CURRENCY_SCHEMA)
class CurrencyInputField(serializers.JSONField):
    """A currency in a request, documented as ``CURRENCY_SCHEMA`` but taking any JSON value, so that the service
    refuses a wrong one with its own code (``unsupported_currency``)."""


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses unknown fields instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail("Unknown field.", code="unknown_field")] for name in unknown}
                )
        return super().to_internal_value(data)


class ProblemFieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True)
    pointer = serializers.CharField()
    code = serializers.CharField()
    detail = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """An RFC 9457 problem document (``application/problem+json``), as every Atrium error is answered."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="Stable and machine-readable, e.g. job_not_found.")
    instance = serializers.CharField(required=False)
    request_id = serializers.CharField(required=False)
    errors = ProblemFieldErrorSerializer(many=True, required=False, help_text="validation_error: one per field.")
