"""Catalog API shapes: the manifest a service registers with, and what the catalog answers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from portal.catalog.models import (
    HEALTH_ERRORS,
    SLUG_REGEX,
    HealthCheck,
    Instance,
    InstanceStatus,
    Lifecycle,
    Role,
    Service,
    Team,
)
from portal.catalog.selectors import HOURS_WINDOW_MAX
from portal.catalog.status import STATUSES, instance_status, service_status
from portal.catalog.systems import SERVICE_STATUSES
from services.kit.serializers import StrictSerializer
from services.kit.timestamps import UTCTimestampField


class TeamInputSerializer(StrictSerializer):
    slug = serializers.RegexField(SLUG_REGEX, max_length=50)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    contact = serializers.CharField(max_length=200, required=False, allow_blank=True)
    on_call = serializers.CharField(max_length=200, required=False, allow_blank=True)


class DependencyInputSerializer(StrictSerializer):
    """Another service by slug, or a resource (``queue:payments``, ``postgres``): exactly one of the two."""

    service = serializers.RegexField(SLUG_REGEX, max_length=50, required=False)
    resource = serializers.CharField(max_length=200, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("service")) == bool(attrs.get("resource")):
            raise serializers.ValidationError("Give either service or resource.", code="service_or_resource")
        return attrs


class ManifestSerializer(StrictSerializer):
    """What ``PUT /api/v1/catalog/services/{slug}`` accepts (and ``catalog_import`` reads from YAML)."""

    display_name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    part_of = serializers.RegexField(
        SLUG_REGEX,
        max_length=50,
        required=False,
        help_text="The slug of the service this process belongs to; default: its own slug (a service of its own).",
    )
    role = serializers.ChoiceField(
        choices=Role.choices, required=False, help_text="What the process does for its service; default web."
    )
    team = TeamInputSerializer(required=False)
    tier = serializers.IntegerField(min_value=1, max_value=3, required=False)
    lifecycle = serializers.ChoiceField(choices=Lifecycle.choices, required=False)
    repository_url = serializers.URLField(required=False, allow_blank=True)
    docs_url = serializers.URLField(required=False, allow_blank=True)
    base_url = serializers.URLField(required=False, allow_blank=True)
    health_url = serializers.URLField(required=False, allow_blank=True)
    openapi_url = serializers.URLField(required=False, allow_blank=True)
    version = serializers.CharField(max_length=100, required=False, allow_blank=True)
    queues = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=50)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), required=False, max_length=50)
    health_interval_seconds = serializers.IntegerField(min_value=5, max_value=3600, required=False)
    dependencies = serializers.ListField(child=DependencyInputSerializer(), required=False, max_length=100)


class HeartbeatInputSerializer(StrictSerializer):
    host = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    # The column is a PostgreSQL integer: a larger pid was a 500 (found by the schema fuzzer), now a 400.
    pid = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, allow_null=True, default=None)
    version = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    started_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class CallsInputSerializer(StrictSerializer):
    callers = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=10**12),
        allow_empty=True,
        help_text="Calling machine client id → calls received since the last report.",
    )

    def validate_callers(self, value: dict[str, int]) -> dict[str, int]:
        if len(value) > 1000:
            raise serializers.ValidationError("At most 1,000 callers per report.", code="too_many_callers")
        if any(not key or len(key) > 200 for key in value):
            raise serializers.ValidationError("Caller ids are 1 to 200 characters.", code="invalid_caller")
        return value


# The graph's edge, for the OpenAPI document ("from" is a Python keyword, so not a class attribute).
_GRAPH_EDGE = type(
    inline_serializer(
        "CatalogGraphEdge",
        {
            "from": serializers.CharField(),
            "to": serializers.CharField(),
            "kind": serializers.ChoiceField(choices=["service", "resource"]),
            "declared": serializers.BooleanField(),
            "observed": serializers.BooleanField(),
            "calls": serializers.IntegerField(),
            "last_seen": serializers.DateTimeField(allow_null=True),
            "drift": serializers.ChoiceField(
                choices=["declared_not_observed", "observed_not_declared"], allow_null=True
            ),
        },
    )
)


def graph_edge() -> serializers.Serializer:
    """The graph's edge (one class: the schema has one component however many times it is used)."""
    return _GRAPH_EDGE()


def _now(context: dict[str, Any]) -> dt.datetime:
    """The moment statuses are derived at: one per response (the view's), so they agree with each other."""
    return context.get("now") or timezone.now()


def _enum(values: Iterable[str]) -> dict[str, Any]:
    """An enum schema given as is: three different sets (service, instance, health check) are all called
    ``status``, and as choice fields they would collide on one ``StatusEnum`` component."""
    return {"type": "string", "enum": list(values)}


class InstanceSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField(
        help_text="Derived on read: critical as soon as three heartbeats are missed, gone once marked so."
    )

    class Meta:
        model = Instance
        fields = [
            "instance",
            "host",
            "pid",
            "version",
            "started_at",
            "first_heartbeat",
            "last_heartbeat",
            "heartbeats",
            "status",
        ]
        read_only_fields = fields

    @extend_schema_field(_enum(InstanceStatus.values))
    def get_status(self, obj: Instance) -> str:
        return instance_status(obj, now=_now(self.context))


class DependencySerializer(serializers.Serializer):
    service = serializers.CharField(source="target_slug", allow_blank=True)
    resource = serializers.CharField(allow_blank=True)
    registered = serializers.SerializerMethodField(help_text="Whether the service depended on is in the catalog.")

    def get_registered(self, obj: Any) -> bool | None:
        return obj.target_id is not None if obj.target_slug else None


class OptionalURLField(serializers.URLField):
    """A URL a service may not have: ``null`` in the API when it has none (``""`` is no URI)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str | None:
        return value or None


class ServiceSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(source="owner", slug_field="slug", read_only=True)
    repository_url = OptionalURLField()
    docs_url = OptionalURLField()
    base_url = OptionalURLField()
    health_url = OptionalURLField()
    openapi_url = OptionalURLField()
    dependencies = DependencySerializer(many=True, read_only=True)
    instances = InstanceSerializer(many=True, read_only=True)
    status = serializers.SerializerMethodField(
        help_text="Derived on read: the worse of its latest health check and its instances' heartbeats "
        "(unknown: nothing heard from it yet)."
    )
    uptime = serializers.SerializerMethodField(
        help_text="Per window (24h, 7d, 30d): the percentage of the time its health checks observed that was up "
        "(null: nothing observed). Time no check covered is unknown, not up: see uptime_observed_seconds."
    )
    uptime_observed_seconds = serializers.SerializerMethodField(
        help_text="Per window (24h, 7d, 30d): the seconds its health checks observed (each check covers the time to "
        "the next, at most CATALOG_UPTIME_GAP_INTERVALS check intervals)."
    )

    @extend_schema_field(
        inline_serializer("Uptime", {w: serializers.FloatField(allow_null=True) for w in ("24h", "7d", "30d")})
    )
    def get_uptime(self, obj: Service) -> dict[str, float | None]:
        return {w: u.percent for w, u in self.context.get("uptime", {}).get(obj.id, {}).items()}

    @extend_schema_field(
        inline_serializer("UptimeObserved", {w: serializers.FloatField() for w in ("24h", "7d", "30d")})
    )
    def get_uptime_observed_seconds(self, obj: Service) -> dict[str, float]:
        return {w: round(u.observed_seconds, 1) for w, u in self.context.get("uptime", {}).get(obj.id, {}).items()}

    @extend_schema_field(_enum(STATUSES))
    def get_status(self, obj: Service) -> str:
        return service_status(obj, obj.instances.all(), now=_now(self.context))

    class Meta:
        model = Service
        fields = [
            "slug",
            "display_name",
            "description",
            "part_of",
            "role",
            "team",
            "tier",
            "lifecycle",
            "repository_url",
            "docs_url",
            "base_url",
            "health_url",
            "openapi_url",
            "version",
            "queues",
            "tags",
            "health_interval_seconds",
            "status",
            "health_status",
            "last_checked_at",
            "uptime",
            "uptime_observed_seconds",
            "registered_by",
            "dependencies",
            "instances",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class TeamServiceSerializer(serializers.Serializer):
    slug = serializers.CharField()
    status = extend_schema_field(_enum(STATUSES))(serializers.CharField())


class TeamSerializer(serializers.ModelSerializer):
    services = serializers.SerializerMethodField(help_text="The services it owns, each with its derived status.")

    class Meta:
        model = Team
        fields = ["slug", "name", "contact", "on_call", "services", "created_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field(TeamServiceSerializer(many=True))
    def get_services(self, obj: Team) -> list[dict[str, str]]:
        now = _now(self.context)
        return [{"slug": s.slug, "status": service_status(s, s.instances.all(), now=now)} for s in obj.services.all()]


class HealthCheckSerializer(serializers.ModelSerializer):
    error = serializers.SerializerMethodField(
        help_text="What failed (null: nothing): the outbound guard's error class. Nothing of the answer's body, "
        "nor an exception's text, is kept."
    )

    class Meta:
        model = HealthCheck
        fields = ["checked_at", "status", "http_status", "latency_ms", "error"]
        read_only_fields = fields

    @extend_schema_field({**_enum(HEALTH_ERRORS), "nullable": True})
    def get_error(self, obj: HealthCheck) -> str | None:
        return obj.error or None


class HealthWindowSerializer(serializers.Serializer):
    """``GET .../health/hours`` query: a window of at most 31 days, the last 24 hours by default."""

    since = UTCTimestampField(required=False, help_text="ISO 8601; default: 24 hours before until.")
    until = UTCTimestampField(required=False, help_text="ISO 8601; default: now.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or until - dt.timedelta(hours=24)
        if since >= until:
            raise serializers.ValidationError({"until": "Must be after since."}, code="window_empty")
        if until - since > HOURS_WINDOW_MAX:
            raise serializers.ValidationError({"since": "The window is at most 31 days."}, code="window_too_long")
        return {"since": since, "until": until}


class HealthHourSerializer(serializers.Serializer):
    hour = serializers.DateTimeField(help_text="The hour's start (UTC).")
    checks = serializers.IntegerField()
    passing = serializers.IntegerField()
    warning = serializers.IntegerField()
    critical = serializers.IntegerField()
    latency_ms_mean = serializers.FloatField(
        allow_null=True, help_text="Mean latency of the checks that measured one (null: none did)."
    )


class HealthHoursSerializer(serializers.Serializer):
    service = serializers.CharField()
    since = serializers.DateTimeField(help_text="Start of the first hour in the window (UTC).")
    until = serializers.DateTimeField(help_text="End of the last hour in the window (UTC, exclusive).")
    hours = HealthHourSerializer(many=True, help_text="Hours with at least one check, oldest first.")


# --- /api/v2/catalog: services (processes grouped by the service they are part of)


_UPTIME_WINDOW = type(
    inline_serializer(
        "CatalogUptimeWindow",
        {
            "percent": serializers.FloatField(
                allow_null=True, help_text="Up over the observed time, in per cent (null: nothing observed)."
            ),
            "observed_seconds": serializers.FloatField(help_text="The time health checks covered in the window."),
            "window_seconds": serializers.FloatField(help_text="The window's length."),
            "coverage": serializers.FloatField(help_text="observed_seconds over window_seconds, in per cent."),
        },
    )
)


def uptime_window() -> serializers.Serializer:
    return _UPTIME_WINDOW()


class ProcessSerializer(serializers.Serializer):
    """One process of a service (a catalog entry of ``/api/v1/catalog/services``)."""

    slug = serializers.CharField(help_text="Its catalog entry, e.g. worker-ledger.")
    role = serializers.ChoiceField(choices=Role.choices)
    display_name = serializers.CharField(source="entry.display_name")
    version = serializers.CharField(source="entry.version")
    queues = serializers.SerializerMethodField(help_text="The queues it consumes (a worker's).")
    status = extend_schema_field(_enum(STATUSES))(
        serializers.CharField(help_text="Derived on read from its health check and its instances' heartbeats.")
    )
    instances = serializers.SerializerMethodField(help_text="Its instances that are not gone.")
    instances_heartbeating = serializers.IntegerField(source="live", help_text="Of those, heartbeating.")

    def get_instances(self, obj: Any) -> int:
        return len(obj.instances)

    def get_queues(self, obj: Any) -> list[str]:
        return list(obj.entry.queues)


class ServiceGroupSerializer(serializers.Serializer):
    """A service: its processes by role, its status (critical when its API is down, degraded when another of its
    processes is) and its API's uptime over the time checks observed."""

    slug = serializers.CharField(help_text="The service's slug: what its processes name as part_of.")
    display_name = serializers.CharField()
    description = serializers.CharField()
    team = serializers.SerializerMethodField(help_text="The owning team's slug (null: none).")
    tier = serializers.IntegerField(help_text="1 (most critical) to 3: the most critical of its processes'.")
    lifecycle = serializers.CharField()
    status = extend_schema_field(_enum(SERVICE_STATUSES))(
        serializers.CharField(
            help_text="critical: its API (a web process) is down, or it has none and every process is; degraded: "
            "another process is down or warning; passing: every process heard from passes; unknown: nothing heard.",
        )
    )
    reason = serializers.CharField(help_text="Why, in words (e.g. 'down: worker-ledger').")
    base_url = serializers.SerializerMethodField(help_text="Its API's base URL (null: no web process).")
    queues = serializers.ListField(child=serializers.CharField(), help_text="The queues its workers consume.")
    processes = ProcessSerializer(many=True, help_text="Web first, then workers, relay, beat, monitor.")
    uptime = serializers.SerializerMethodField(help_text="Its API's uptime per window (24h, 7d, 30d).")

    def get_team(self, obj: Any) -> str | None:
        return obj.team.slug if obj.team else None

    def get_base_url(self, obj: Any) -> str | None:
        return (obj.web.base_url or None) if obj.web else None

    @extend_schema_field(inline_serializer("CatalogServiceUptime", {w: uptime_window() for w in ("24h", "7d", "30d")}))
    def get_uptime(self, obj: Any) -> dict[str, Any]:
        return {w: u.as_dict() for w, u in obj.uptime.items()}
