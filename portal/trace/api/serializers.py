"""The trace's answer (``GET /api/v1/trace/{id}``): output only."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from portal.trace.selectors import MAX_EVENTS, MAX_JOBS, MAX_REQUESTS, Trace, TraceEntry


class TraceObjectRefSerializer(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()


class TraceEntrySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["audit", "job"])
    at = serializers.DateTimeField()
    gap_ms = serializers.FloatField(allow_null=True, help_text="Since the previous entry (null for the first).")
    pending = serializers.BooleanField(help_text="A job not finished, or the last step of an object still on its way.")
    service = serializers.CharField()
    title = serializers.CharField(help_text="The audit action, or the task name.")
    outcome = serializers.CharField(help_text="success or failure (audit), or the job's state.")
    request_id = serializers.CharField()
    object = serializers.SerializerMethodField()
    # audit events
    event_id = serializers.CharField(allow_null=True)
    seq = serializers.IntegerField(allow_null=True)
    actor = serializers.CharField(allow_null=True)
    changes = serializers.DictField(allow_null=True)
    metadata = serializers.DictField(allow_null=True)
    # jobs
    task_id = serializers.CharField(allow_null=True)
    queue = serializers.CharField(allow_null=True)
    state = serializers.CharField(allow_null=True)
    queue_wait_ms = serializers.FloatField(allow_null=True, help_text="started - queued")
    runtime_ms = serializers.FloatField(allow_null=True)
    retries = serializers.IntegerField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    linked = serializers.BooleanField(help_text="A batch job that carried the request, not one published under it.")

    def get_object(self, entry: TraceEntry) -> dict[str, str] | None:
        return {"type": entry.object_type, "id": entry.object_id} if entry.object_id else None

    def to_representation(self, instance: TraceEntry) -> dict[str, Any]:
        data = super().to_representation(instance)
        own = AUDIT_FIELDS if instance.kind == "audit" else JOB_FIELDS
        for name in AUDIT_FIELDS | JOB_FIELDS:
            if name not in own:
                data[name] = None
        return data


AUDIT_FIELDS = frozenset({"event_id", "seq", "actor", "changes", "metadata"})
JOB_FIELDS = frozenset({"task_id", "queue", "state", "queue_wait_ms", "runtime_ms", "retries", "finished_at"})


class TraceObjectSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="The audit object type ('' for an id only a batch job reported).")
    id = serializers.CharField()
    status = serializers.CharField(help_text="From its latest event's changes.status ('' if unknown or hidden).")
    pending = serializers.BooleanField()
    last_at = serializers.DateTimeField(allow_null=True)


class TraceCountsSerializer(serializers.Serializer):
    events = serializers.IntegerField()
    jobs = serializers.IntegerField()


class TraceTruncatedSerializer(serializers.Serializer):
    events = serializers.BooleanField()
    jobs = serializers.BooleanField()
    request_ids = serializers.BooleanField()


class WebhookDeliverySerializer(serializers.Serializer):
    endpoint = serializers.CharField(help_text="The endpoint's id (ep_…).")
    state = serializers.CharField(help_text="pending, succeeded, failed or canceled.")
    attempts = serializers.IntegerField(allow_null=True)
    last_status = serializers.IntegerField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)


class WebhookAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField(allow_null=True)
    at = serializers.DateTimeField(allow_null=True)
    endpoint = serializers.CharField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(help_text="'' on success, or timeout, connect, dns, tls, ssrf_blocked, status.")
    duration_ms = serializers.FloatField(allow_null=True)
    trigger = serializers.CharField(help_text="scheduled, manual or recovery.")


class WebhookMessageSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The message id (msg_…): the webhook-id header of its deliveries.")
    type = serializers.CharField()
    object_id = serializers.CharField()
    request_id = serializers.CharField()
    created_at = serializers.DateTimeField(allow_null=True)
    pending = serializers.BooleanField(help_text="A delivery still to be made or retried.")
    deliveries = WebhookDeliverySerializer(many=True)
    attempts = WebhookAttemptSerializer(many=True)


class TraceWebhooksSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["ok", "unavailable", "none"],
        help_text="ok: read from the webhooks service; unavailable: it could not be read (detail says why); none: "
        "the trace touched no payment or transaction.",
    )
    detail = serializers.CharField()
    truncated = serializers.BooleanField()
    messages = WebhookMessageSerializer(many=True)


class TraceSerializer(serializers.Serializer):
    id = serializers.CharField(source="query")
    kind = serializers.ChoiceField(choices=["request", "object", "job"])
    request_ids = serializers.ListField(child=serializers.CharField())
    audit_visible = serializers.BooleanField(help_text="False for a viewer: the timeline holds jobs only.")
    pending = serializers.BooleanField()
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.FloatField(allow_null=True)
    counts = serializers.SerializerMethodField()
    truncated = TraceTruncatedSerializer()
    limits = serializers.SerializerMethodField()
    objects = TraceObjectSerializer(many=True)
    timeline = TraceEntrySerializer(many=True, source="entries")
    webhooks = TraceWebhooksSerializer(
        help_text="The webhook messages of the payments and transactions touched, with their deliveries and attempts."
    )

    def get_counts(self, trace: Trace) -> dict[str, int]:
        return {"events": trace.events, "jobs": trace.jobs}

    def get_limits(self, trace: Trace) -> dict[str, int]:
        return {"events": MAX_EVENTS, "jobs": MAX_JOBS, "request_ids": MAX_REQUESTS}
