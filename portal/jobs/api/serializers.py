"""Job dashboard API shapes. A task's raw ``payload`` (what a retry sends again) is never in any of them: only
the redacted ``args`` and ``kwargs`` are shown, and every serializer names its fields."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from portal.jobs.models import FINAL_STATES, Job, JobEvent, JobState, Worker
from portal.jobs.selectors import PAGE_SIZE_MAX
from portal.jobs.services import RETRYABLE_STATES
from services.kit.serializers import StrictSerializer
from services.kit.timestamps import UTCTimestampField

# What a list row shows: no args, result or traceback (jobs_page leaves them out of the query).
SUMMARY_FIELDS = [
    "task_id", "name", "service", "queue", "state", "worker", "request_id", "parent_id", "root_id", "retry_of",
    "eta", "retries", "seen_at", "queued_at", "received_at", "started_at", "finished_at", "runtime_ms",
    "exception_type", "exception_message", "carried_requests", "carried_objects", "housekeeping", "periodic",
]  # fmt: skip
STATS_WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}
THROUGHPUT_BUCKETS_MAX = 10_000


class PageQuerySerializer(serializers.Serializer):
    cursor = serializers.CharField(required=False, help_text="The `next` link's cursor; absent: the first page.")
    limit = serializers.IntegerField(
        required=False, default=50, min_value=1, max_value=PAGE_SIZE_MAX, help_text="Rows per page (1 to 200)."
    )
    housekeeping = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Include housekeeping tasks (health polls, relays, sweeps, retention), left out by default "
        "unless name, q, request_id or object_id is given.",
    )


class JobSummarySerializer(serializers.ModelSerializer):
    linked = serializers.SerializerMethodField(
        help_text="With ?request_id=: true when the job was not published under that request but carried it "
        "(a batch job, e.g. payments.drain, that processed its items)."
    )

    class Meta:
        model = Job
        fields = [*SUMMARY_FIELDS, "linked"]
        read_only_fields = fields

    def get_linked(self, obj: Job) -> bool:
        return bool(getattr(obj, "linked", False))


class CarriedSerializer(serializers.Serializer):
    request_ids = serializers.ListField(child=serializers.CharField(), help_text="The first 1,000 reported.")
    object_ids = serializers.ListField(child=serializers.CharField(), help_text="The first 1,000 reported.")
    requests_total = serializers.IntegerField(help_text="How many request ids it reported in all.")
    objects_total = serializers.IntegerField(help_text="How many object ids it reported in all.")


@extend_schema_serializer(many=False)
class JobPageSerializer(serializers.Serializer):
    """One page of tasks, newest first; ``next`` is null on the last page."""

    next = serializers.URLField(allow_null=True, help_text="The next page (same filters), or null at the end.")
    previous = serializers.URLField(
        allow_null=True, help_text="Always null: pages go forward only (start again without a cursor)."
    )
    results = JobSummarySerializer(many=True)


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["state", "at", "worker", "detail"]
        read_only_fields = fields


class JobRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["task_id", "name", "state", "seen_at", "finished_at"]
        read_only_fields = fields


class RelativesSerializer(serializers.Serializer):
    parent = JobRefSerializer(allow_null=True, help_text="The task that published this one.")
    children = JobRefSerializer(many=True, help_text="Tasks this one published (at most 50).")
    retry_of = JobRefSerializer(allow_null=True, help_text="The task this one re-runs (a retry from here).")
    retried_as = JobRefSerializer(many=True, help_text="Re-runs of this task from here (at most 50).")


class JobDetailSerializer(serializers.ModelSerializer):
    args = serializers.JSONField(help_text="Redacted (sensitive keys hidden) and capped; never the raw args.")
    kwargs = serializers.JSONField(help_text="Redacted and capped, like args.")
    retryable = serializers.SerializerMethodField(help_text="Whether POST .../retry would publish it again.")
    revocable = serializers.SerializerMethodField(help_text="Whether POST .../revoke applies (it has not ended).")
    timeline = serializers.SerializerMethodField(help_text="Every recorded event, oldest first.")
    relatives = serializers.SerializerMethodField()
    carried = serializers.SerializerMethodField(help_text="The request ids and object ids a batch job carried.")

    class Meta:
        model = Job
        fields = [
            *SUMMARY_FIELDS, "last_event_at", "args", "kwargs", "result", "traceback", "retryable", "revocable",
            "timeline", "relatives", "carried",
        ]  # fmt: skip
        read_only_fields = fields

    def get_retryable(self, obj: Job) -> bool:
        return obj.state in RETRYABLE_STATES and obj.payload is not None

    def get_revocable(self, obj: Job) -> bool:
        return obj.state not in FINAL_STATES

    @extend_schema_field(JobEventSerializer(many=True))
    def get_timeline(self, obj: Job) -> list[dict[str, Any]]:
        return JobEventSerializer(self.context["timeline"], many=True).data

    @extend_schema_field(RelativesSerializer)
    def get_relatives(self, obj: Job) -> dict[str, Any]:
        return RelativesSerializer(self.context["relatives"]).data

    @extend_schema_field(CarriedSerializer)
    def get_carried(self, obj: Job) -> dict[str, Any]:
        carried = self.context["carried"]
        return {
            "request_ids": carried.request_ids,
            "object_ids": carried.object_ids,
            "requests_total": carried.requests_total,
            "objects_total": carried.objects_total,
        }


class RetriedSerializer(serializers.Serializer):
    task_id = serializers.CharField(help_text="The new task's id (it appears here once the monitor records it).")
    retry_of = serializers.CharField(help_text="The task it re-runs.")


class RevokeInputSerializer(StrictSerializer):
    terminate = serializers.BooleanField(
        required=False, default=False, help_text="Also stop it if it is running (SIGTERM to its process)."
    )


class RevokedSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    terminate = serializers.BooleanField()


class BulkRetryInputSerializer(StrictSerializer):
    """The list's filters, as a JSON body: which failed tasks to retry (at least one filter besides state)."""

    # Not an enum: a second set of choices named "state" would collide with the tasks' in the OpenAPI document.
    state = serializers.CharField(required=False, help_text="Only `failed` (failed tasks are retried in bulk).")
    queue = serializers.CharField(required=False)
    service = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    since = UTCTimestampField(required=False, help_text="First seen at or after (ISO 8601).")
    until = UTCTimestampField(required=False, help_text="First seen before (ISO 8601).")
    request_id = serializers.CharField(required=False)
    q = serializers.CharField(required=False, help_text="A task id, or its beginning.")
    exception_type = serializers.CharField(required=False)
    worker = serializers.CharField(required=False)

    def validate_state(self, value: str) -> str:
        if value != JobState.FAILED:
            raise serializers.ValidationError("Only failed tasks are retried in bulk.", code="invalid_choice")
        return value


class BulkRetriedSerializer(serializers.Serializer):
    retried = serializers.DictField(child=serializers.CharField(), help_text="Original task id → new task id.")
    skipped = serializers.DictField(child=serializers.CharField(), help_text="Task id → why it was not retried.")


class StatsQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=list(STATS_WINDOWS), required=False, default="1h")
    group_by = serializers.ChoiceField(choices=["queue", "name"], required=False, default="queue")


class StatsRowSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The queue, or the task name (per group_by).")
    total = serializers.IntegerField(help_text="Tasks first seen in the window.")
    states = serializers.DictField(child=serializers.IntegerField(), help_text="State → how many are in it now.")
    runtime_ms_p50 = serializers.FloatField(allow_null=True)
    runtime_ms_p95 = serializers.FloatField(allow_null=True)


class StatsSerializer(serializers.Serializer):
    window = serializers.CharField()
    group_by = serializers.CharField()
    since = serializers.DateTimeField()
    results = StatsRowSerializer(many=True)


class ThroughputQuerySerializer(serializers.Serializer):
    """``GET throughput`` query: the last hour by minute by default."""

    since = UTCTimestampField(required=False, help_text="ISO 8601; default: an hour before until.")
    until = UTCTimestampField(required=False, help_text="ISO 8601; default: now.")
    bucket_minutes = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1440)
    queue = serializers.CharField(required=False, default="", allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or until - dt.timedelta(hours=1)
        if since >= until:
            raise serializers.ValidationError({"until": "Must be after since."}, code="window_empty")
        if (until - since) / dt.timedelta(minutes=attrs["bucket_minutes"]) > THROUGHPUT_BUCKETS_MAX:
            raise serializers.ValidationError(
                {"bucket_minutes": f"At most {THROUGHPUT_BUCKETS_MAX:,} buckets: widen them or shorten the window."},
                code="too_many_buckets",
            )
        return {**attrs, "since": since, "until": until}


class ThroughputBucketSerializer(serializers.Serializer):
    bucket = serializers.DateTimeField(help_text="The bucket's start.")
    queue = serializers.CharField()
    queued = serializers.IntegerField()
    started = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    retried = serializers.IntegerField()


class ThroughputSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    bucket_minutes = serializers.IntegerField()
    results = ThroughputBucketSerializer(many=True)


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    depth = serializers.IntegerField(allow_null=True, help_text="Messages waiting (null: the broker cannot tell).")
    oldest_age_seconds = serializers.FloatField(
        allow_null=True, help_text="Age of the oldest waiting message (0 when empty; null: unknown)."
    )


class QueuesSerializer(serializers.Serializer):
    results = QueueSerializer(many=True)


class WorkerSerializer(serializers.ModelSerializer):
    in_flight = serializers.SerializerMethodField(
        help_text="Ids of the tasks received or started on it and not finished, latest first."
    )

    class Meta:
        model = Worker
        fields = [
            "hostname", "service", "queues", "pid", "pool", "concurrency", "active", "reserved", "processed",
            "sw_version", "started_at", "last_heartbeat", "status", "stopped_at", "in_flight",
        ]  # fmt: skip
        read_only_fields = fields

    def get_in_flight(self, obj: Worker) -> list[str]:
        return self.context["in_flight"].get(obj.hostname, [])


class WorkersSerializer(serializers.Serializer):
    results = WorkerSerializer(many=True)


class FailuresQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, default=50, min_value=1, max_value=PAGE_SIZE_MAX, help_text="Groups (1 to 200)."
    )


class FailureGroupSerializer(serializers.Serializer):
    exception_type = serializers.CharField()
    name = serializers.CharField()
    count = serializers.IntegerField()
    last_seen = serializers.DateTimeField()
    example_task_id = serializers.CharField(help_text="The latest failed task of the group.")


@extend_schema_serializer(many=False)
class FailuresSerializer(serializers.Serializer):
    results = FailureGroupSerializer(many=True)


class PeriodicLastRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["task_id", "state", "seen_at", "finished_at", "runtime_ms", "exception_type"]
        read_only_fields = fields


class PeriodicSerializer(serializers.Serializer):
    """A periodic task of the database schedule (``PeriodicRow``)."""

    name = serializers.CharField(source="task.name", help_text="The schedule entry's name.")
    task = serializers.CharField(source="task.task", help_text="The task it sends (payments.sweep).")
    schedule = serializers.CharField(source="words", help_text='In words: "every 15 seconds", "daily at 03:00 UTC".')
    queue = serializers.CharField(help_text="Its queue (an explicit option, or the one its name routes to).")
    enabled = serializers.BooleanField(source="task.enabled", help_text="False: paused, beat does not send it.")
    housekeeping = serializers.BooleanField(
        allow_null=True, help_text="Whether its task is housekeeping, as its last run said (null: never seen run)."
    )
    last_run = PeriodicLastRunSerializer(
        allow_null=True, help_text="The newest task it sent (by beat, or run now), as the job monitor recorded it."
    )
    next_run = serializers.DateTimeField(allow_null=True, help_text="When beat sends it next (null when paused).")
    last_sent_at = serializers.DateTimeField(
        source="task.last_run_at", allow_null=True, help_text="When beat last sent it, as beat wrote back."
    )
    total_run_count = serializers.IntegerField(source="task.total_run_count", help_text="Sends counted by beat.")


@extend_schema_serializer(many=False)
class PeriodicListSerializer(serializers.Serializer):
    results = PeriodicSerializer(many=True)


class ScheduleQuerySerializer(serializers.Serializer):
    housekeeping = serializers.BooleanField(
        required=False, default=True, help_text="false: leave out the periodic tasks whose task is housekeeping."
    )


class PeriodicRunSerializer(serializers.Serializer):
    task_id = serializers.CharField(help_text="The task sent now (it appears once the monitor records it).")
    periodic = serializers.CharField(help_text="The periodic task it was sent for.")


class PeriodicEnabledSerializer(serializers.Serializer):
    name = serializers.CharField()
    enabled = serializers.BooleanField(help_text="False: paused.")
