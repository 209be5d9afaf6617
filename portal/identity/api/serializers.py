from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from portal.identity.models import MachineClient
from services.kit.serializers import StrictSerializer


class TokenRequestSerializer(StrictSerializer):
    grant_type = serializers.CharField(max_length=64)
    client_id = serializers.CharField(max_length=64, required=False)
    client_secret = serializers.CharField(max_length=256, required=False, trim_whitespace=False)
    audience = serializers.CharField(max_length=64)
    scope = serializers.CharField(max_length=1000, required=False, allow_blank=True)


class TokenResponseSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()
    scope = serializers.CharField()


class MachineClientSerializer(serializers.ModelSerializer):
    client_id = serializers.CharField(source="id", read_only=True)

    class Meta:
        model = MachineClient
        fields = [
            "client_id",
            "name",
            "description",
            "allowed_audiences",
            "allowed_scopes",
            "token_ttl_seconds",
            "is_active",
            "secret_last4",
            "created_at",
            "updated_at",
            "secret_rotated_at",
            "previous_secret_valid_until",
            "revoked_at",
            "last_used_at",
        ]
        read_only_fields = fields


def _audience_choices() -> list[str]:
    return list(settings.ATRIUM_AUDIENCE_SCOPES)


def _scope_choices() -> list[str]:
    return sorted({s for scopes in settings.ATRIUM_AUDIENCE_SCOPES.values() for s in scopes})


class RotateSecretSerializer(StrictSerializer):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=7 * 86_400,
        required=False,
        help_text="How long the old secret still obtains tokens (default: ATRIUM_CLIENT_SECRET_GRACE_SECONDS).",
    )


class MachineClientCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    allowed_audiences = serializers.ListField(child=serializers.ChoiceField(choices=_audience_choices()), min_length=1)
    allowed_scopes = serializers.ListField(child=serializers.ChoiceField(choices=_scope_choices()), default=list)
    token_ttl_seconds = serializers.IntegerField(min_value=60, max_value=3600, default=900)


class MachineClientWithSecretSerializer(MachineClientSerializer):
    client_secret = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(MachineClientSerializer.Meta):
        fields = [*MachineClientSerializer.Meta.fields, "client_secret"]
        read_only_fields = fields
