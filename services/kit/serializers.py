"""Serializer building blocks shared by every service."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


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
