"""Webhooks API shapes: input serializers check shape; the services decide meaning (SSRF, event types, secrets)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from services.kit.serializers import StrictSerializer
from services.kit.timestamps import UTCTimestampField
from services.webhooks.models import EVENT_PATTERN_REGEX, Attempt, Delivery, Endpoint, EventType, Message, Recovery

MAX_PATTERNS = 100
MAX_CHANNELS = 100
CHANNEL_MAX_LENGTH = 128


class StringField(serializers.CharField):
    """A string and nothing else: DRF's CharField would take the number 7 as "7"."""

    default_error_messages = {"invalid": "Not a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _patterns(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.RegexField(EVENT_PATTERN_REGEX, max_length=100),
        allow_empty=False,
        max_length=MAX_PATTERNS,
        help_text="Event types this endpoint receives: exact names (`payment.settled`), a prefix wildcard "
        "(`payment.*`: every type below `payment`) or `*` (everything). Each must match a known type.",
        **kwargs,
    )


def _channels(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=StringField(max_length=CHANNEL_MAX_LENGTH, min_length=1),
        max_length=MAX_CHANNELS,
        help_text="Only messages on one of these channels (e.g. a ledger account id: a merchant gets only its own "
        "payments); empty: every channel.",
        **kwargs,
    )


_RATE_LIMIT_HELP = "Messages per second at most; null: no limit."
_IN_FLIGHT_HELP = "Requests to this endpoint at once at most (1 to 1000)."
_ORDERED_HELP = "Deliver in creation order: the next message waits until the previous one succeeded or failed."
_SECRET_HELP = "`whsec_` + base64 of 24 to 64 random bytes; omitted: one is generated (32 bytes)."
_V1A_HELP = "Also sign with Ed25519 (`v1a`); the public key is at `GET /api/v1/endpoints/{id}/public-key`."


class EndpointCreateSerializer(StrictSerializer):
    url = StringField(max_length=2048, help_text="Where messages are POSTed: http(s), a public address.")
    description = StringField(max_length=500, required=False, allow_blank=True, default="")
    event_types = _patterns()
    channels = _channels(required=False, default=list)
    rate_limit = serializers.IntegerField(
        min_value=1, max_value=100_000, required=False, allow_null=True, default=None, help_text=_RATE_LIMIT_HELP
    )
    max_in_flight = serializers.IntegerField(
        min_value=1, max_value=1000, required=False, default=10, help_text=_IN_FLIGHT_HELP
    )
    ordered = serializers.BooleanField(required=False, default=False, help_text=_ORDERED_HELP)
    metadata = serializers.DictField(required=False, default=dict)
    secret = StringField(max_length=200, required=False, help_text=_SECRET_HELP)
    v1a = serializers.BooleanField(required=False, default=False, help_text=_V1A_HELP)


class EndpointUpdateSerializer(StrictSerializer):
    url = StringField(max_length=2048, required=False)
    description = StringField(max_length=500, required=False, allow_blank=True)
    event_types = _patterns(required=False)
    channels = _channels(required=False)
    rate_limit = serializers.IntegerField(
        min_value=1, max_value=100_000, required=False, allow_null=True, help_text=_RATE_LIMIT_HELP
    )
    max_in_flight = serializers.IntegerField(min_value=1, max_value=1000, required=False, help_text=_IN_FLIGHT_HELP)
    ordered = serializers.BooleanField(required=False, help_text=_ORDERED_HELP)
    metadata = serializers.DictField(required=False)
    v1a = serializers.BooleanField(required=False, help_text=_V1A_HELP)


class EndpointDisableSerializer(StrictSerializer):
    reason = StringField(max_length=200, required=False, default="manual", help_text="Shown on the endpoint.")


class SecretRotateSerializer(StrictSerializer):
    secret = StringField(max_length=200, required=False, help_text=_SECRET_HELP)
    overlap_seconds = serializers.IntegerField(
        min_value=0,
        max_value=30 * 86400,
        required=False,
        help_text="How long deliveries keep a signature under the old secret too (default 86400: 24 h).",
    )


class EndpointStatsSerializer(serializers.Serializer):
    attempts = serializers.IntegerField(help_text="Attempts in the last 24 h.")
    succeeded = serializers.IntegerField(help_text="Of which succeeded (2xx in time).")
    success_rate = serializers.FloatField(
        allow_null=True, help_text="succeeded / attempts, 0 to 1; null without attempts in the last 24 h."
    )


class EndpointSerializer(serializers.ModelSerializer):
    stats = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "channels",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "rate_limit",
            "max_in_flight",
            "ordered",
            "metadata",
            "v1a",
            "previous_secret_expires_at",
            "last_success_at",
            "first_failure_at",
            "last_error",
            "last_status",
            "stats",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(EndpointStatsSerializer)
    def get_stats(self, obj: Endpoint) -> dict[str, Any]:
        stats = (self.context.get("stats") or {}).get(obj.id)
        attempts, succeeded = stats if stats is not None else (0, 0)
        return {
            "attempts": attempts,
            "succeeded": succeeded,
            "success_rate": round(succeeded / attempts, 4) if attempts else None,
        }


class SecretSerializer(serializers.Serializer):
    endpoint = serializers.CharField()
    secret = serializers.CharField(help_text="`whsec_` + base64: verify signatures with it.")
    previous_secret = serializers.CharField(
        allow_null=True, help_text="The secret before the last rotation, while deliveries are still signed with it."
    )
    previous_secret_expires_at = serializers.DateTimeField(allow_null=True)


class PublicKeySerializer(serializers.Serializer):
    endpoint = serializers.CharField()
    public_key = serializers.CharField(help_text="`whpk_` + base64 of the raw 32-byte Ed25519 public key.")


class EventTypeSerializer(serializers.ModelSerializer):
    schema = serializers.JSONField(help_text="A JSON Schema (draft 2020-12) of the message's `data`.")
    example = serializers.JSONField(help_text="An example of the message's `data`.")

    class Meta:
        model = EventType
        fields = ["name", "description", "schema", "example", "archived", "created_at"]
        read_only_fields = fields


class MessageCreateSerializer(StrictSerializer):
    type = StringField(max_length=100, help_text="A known event type (`GET /api/v1/event-types`).")
    data = serializers.JSONField(help_text="The payload; must be valid against the type's schema.")
    channels = _channels(required=False, default=list)
    event_id = StringField(
        max_length=64,
        required=False,
        help_text="Your id of the event: the same id again creates nothing new (answers the first message).",
    )
    occurred_at = UTCTimestampField(required=False, help_text="The body's `timestamp`; default now.")


class DeliverySerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint_id")

    class Meta:
        model = Delivery
        fields = [
            "endpoint",
            "state",
            "attempts",
            "next_attempt_at",
            "last_status",
            "last_error",
            "succeeded_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class MessageSerializer(serializers.ModelSerializer):
    data = serializers.JSONField(source="payload", help_text="The payload, as delivered in the body's `data`.")
    timestamp = serializers.DateTimeField(source="occurred_at", help_text="The body's `timestamp`.")

    class Meta:
        model = Message
        fields = [
            "id",
            "event_id",
            "type",
            "channels",
            "data",
            "timestamp",
            "source",
            "request_id",
            "object_id",
            "created_at",
        ]
        read_only_fields = fields


class MessageDetailSerializer(MessageSerializer):
    deliveries = serializers.SerializerMethodField()

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "deliveries"]
        read_only_fields = fields

    @extend_schema_field(DeliverySerializer(many=True))
    def get_deliveries(self, obj: Message) -> list[dict[str, Any]]:
        return DeliverySerializer(sorted(obj.deliveries.all(), key=lambda d: d.id), many=True).data


class ResendSerializer(StrictSerializer):
    endpoint = StringField(max_length=40, help_text="The endpoint to send the message to again.")


class AttemptSerializer(serializers.ModelSerializer):
    message = serializers.CharField(source="message_id")
    endpoint = serializers.CharField(source="endpoint_id")

    class Meta:
        model = Attempt
        fields = [
            "id",
            "message",
            "endpoint",
            "number",
            "at",
            "duration_ms",
            "status_code",
            "response_body",
            "error",
            "trigger",
            "request_id",
        ]
        read_only_fields = fields


class RecoverSerializer(StrictSerializer):
    since = UTCTimestampField(help_text="Recover the messages created at or after this instant.")
    until = UTCTimestampField(required=False, allow_null=True, help_text="And before this one; default now.")


class RecoverySerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint_id")

    class Meta:
        model = Recovery
        fields = [
            "id",
            "endpoint",
            "since",
            "until",
            "state",
            "recovered",
            "requested_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
