"""Every Celery task of every service, recorded by the job monitor from the tracking stream.

Each process's Celery signals append a task's life-cycle events to a Redis stream (``services/kit/tracking.py``);
the monitor (``manage.py jobs_monitor``) reads them with a consumer group, writes them here in one transaction
per batch and acknowledges them after the commit. An event is stored once, by its stream entry id
(:class:`JobEvent`), so a batch read again after a crash changes nothing. A :class:`Job` is the task's latest
known state with a timestamp per state; :class:`JobMinute` counts per minute, queue and task name for the
charts (kept longer than jobs); :class:`JobTotal` counts since the beginning, for Prometheus.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q


class JobState(models.TextChoices):
    QUEUED = "queued"
    RECEIVED = "received"
    STARTED = "started"
    RETRIED = "retried"  # failed this time; a retry is scheduled (same task id)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"
    REJECTED = "rejected"


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.REVOKED, JobState.REJECTED)


class Job(models.Model):
    task_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    service = models.CharField(max_length=50, blank=True, default="")
    queue = models.CharField(max_length=100, blank=True, default="")
    state = models.CharField(max_length=10, choices=JobState.choices)
    worker = models.CharField(max_length=200, blank=True, default="", help_text="The worker node (name@host).")
    args = models.JSONField(default=list, blank=True, help_text="Redacted as audit changes are, size-capped.")
    kwargs = models.JSONField(default=dict, blank=True)
    payload = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="The raw args and kwargs (≤ 64 KB), never shown: what a retry from the dashboard sends again.",
    )
    request_id = models.CharField(max_length=100, blank=True, default="")
    parent_id = models.CharField(max_length=64, blank=True, default="")
    root_id = models.CharField(max_length=64, blank=True, default="")
    retry_of = models.CharField(
        max_length=64, blank=True, default="", help_text="The task this one re-runs (a retry from the dashboard)."
    )
    eta = models.DateTimeField(null=True, blank=True)
    retries = models.PositiveIntegerField(default=0)
    seen_at = models.DateTimeField(help_text="When the task was first seen (published, or received).")
    queued_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(help_text="The time of the event that set the state.")
    runtime_ms = models.FloatField(null=True, blank=True)
    result = models.TextField(blank=True, default="", help_text="A summary of the return value (capped).")
    exception_type = models.CharField(max_length=200, blank=True, default="")
    exception_message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    # A batch job (payments.drain) carries items of many requests: how many request ids and object ids it
    # reported (every one, counted past what JobLink keeps: the first JOBS_LINKS_MAX of each kind).
    carried_requests = models.PositiveIntegerField(default=0)
    carried_objects = models.PositiveIntegerField(default=0)
    # Marked in the task's definition (``housekeeping=True`` on its decorator in workers/*.py), reported by the
    # worker that runs it (and by a publisher that has the task registered): the task list hides these by default.
    housekeeping = models.BooleanField(
        default=False,
        db_default=False,
        help_text="A housekeeping task: health polls, relays, sweeps, retention, maintenance.",
    )
    periodic = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        help_text="The periodic task (beat schedule entry) that sent it.",
    )

    class Meta:
        db_table = "jobs_job"
        ordering = ["-seen_at", "-id"]
        constraints = [models.CheckConstraint(condition=Q(state__in=JobState.values), name="jobs_job_state")]
        indexes = [
            # Keyset pages, newest first, overall and within the usual filters.
            models.Index(fields=["-seen_at", "-id"], name="jobs_job_seen"),
            models.Index(fields=["state", "-seen_at", "-id"], name="jobs_job_state_seen"),
            models.Index(fields=["queue", "-seen_at", "-id"], name="jobs_job_queue_seen"),
            models.Index(fields=["name", "-seen_at", "-id"], name="jobs_job_name_seen"),
            models.Index(fields=["service", "-seen_at", "-id"], name="jobs_job_service_seen"),
            models.Index(fields=["request_id"], name="jobs_job_request", condition=~Q(request_id="")),
            models.Index(fields=["root_id"], name="jobs_job_root", condition=~Q(root_id="")),
            models.Index(fields=["parent_id"], name="jobs_job_parent", condition=~Q(parent_id="")),
            models.Index(fields=["retry_of"], name="jobs_job_retry_of", condition=~Q(retry_of="")),
            models.Index(
                fields=["worker", "state"],
                name="jobs_job_in_flight",
                condition=Q(state__in=["received", "started"]),
            ),
            models.Index(fields=["worker", "-seen_at", "-id"], name="jobs_job_worker_seen"),
            models.Index(fields=["exception_type", "-seen_at", "-id"], name="jobs_job_exception_seen"),
            # The task list's default: housekeeping hidden.
            models.Index(fields=["-seen_at", "-id"], name="jobs_job_work_seen", condition=Q(housekeeping=False)),
            # The schedule page: each periodic task's last run.
            models.Index(fields=["periodic", "-seen_at"], name="jobs_job_periodic_seen", condition=~Q(periodic="")),
        ]
        permissions = [
            ("retry_job", "Can retry jobs"),
            ("revoke_job", "Can revoke jobs"),
            ("run_periodic", "Can run a periodic task now"),
            ("pause_periodic", "Can pause and resume periodic tasks"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.task_id} ({self.state})"


class LinkKind(models.TextChoices):
    REQUEST = "request"
    OBJECT = "object"


class JobLink(models.Model):
    """A request id or an object id that a batch job carried (:func:`services.kit.carried.carried`): what lets
    ``?request_id=`` on the jobs API and the trace find the drain that processed a customer's payment.

    Keyed by the id first: looking a request up is one index range; the job's own links read through
    ``jobs_link_task``. Recorded idempotently (a batch of events read again adds nothing)."""

    pk = models.CompositePrimaryKey("value", "task_id")
    value = models.CharField(max_length=200, help_text="The request id or object id carried.")
    task_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=8, choices=LinkKind.choices)
    at = models.DateTimeField(help_text="When the job reported it.")

    class Meta:
        db_table = "jobs_link"
        indexes = [
            models.Index(fields=["task_id", "kind"], name="jobs_link_task"),
            # Retention deletes by age; links arrive in time order, so a BRIN index is enough and costs little.
            BrinIndex(fields=["at"], name="jobs_link_at"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} carried {self.kind} {self.value}"


class JobEvent(models.Model):
    """One life-cycle event of a task, as it came from the tracking stream."""

    stream_id = models.CharField(max_length=40, unique=True, help_text="The Redis stream entry id (dedup key).")
    task_id = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=JobState.choices)
    at = models.DateTimeField()
    worker = models.CharField(max_length=200, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "jobs_event"
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["task_id", "at"], name="jobs_event_task"),
            models.Index(fields=["at"], name="jobs_event_at"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} {self.state} at {self.at:%H:%M:%S.%f}"


class JobMinute(models.Model):
    """What happened in one minute, per service, queue and task name (the charts)."""

    minute = models.DateTimeField()
    service = models.CharField(max_length=50, blank=True, default="")
    queue = models.CharField(max_length=100, blank=True, default="")
    name = models.CharField(max_length=200)
    queued = models.PositiveIntegerField(default=0)
    started = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    retried = models.PositiveIntegerField(default=0)
    revoked = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    runtime_ms_total = models.FloatField(default=0)
    runtime_count = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "jobs_minute"
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(fields=["minute", "service", "queue", "name"], name="jobs_minute_unique")
        ]
        indexes = [models.Index(fields=["minute", "queue"], name="jobs_minute_queue")]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.name}"


class JobTotal(models.Model):
    """Counts since the beginning per task name and queue (never pruned): Prometheus counters and histograms.

    ``runtime_buckets[i]`` / ``latency_buckets[i]`` count observations ≤ the i-th bound of
    :data:`portal.jobs.recorder.RUNTIME_BOUNDS` / ``LATENCY_BOUNDS`` (not cumulative; the exporter sums)."""

    service = models.CharField(max_length=50, blank=True, default="")
    queue = models.CharField(max_length=100, blank=True, default="")
    name = models.CharField(max_length=200)
    succeeded = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    retried = models.PositiveBigIntegerField(default=0)
    revoked = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    runtime_seconds_sum = models.FloatField(default=0)
    runtime_buckets = ArrayField(models.BigIntegerField(), default=list)
    latency_seconds_sum = models.FloatField(default=0)
    latency_buckets = ArrayField(models.BigIntegerField(), default=list)

    class Meta:
        db_table = "jobs_total"
        constraints = [models.UniqueConstraint(fields=["service", "queue", "name"], name="jobs_total_unique")]

    def __str__(self) -> str:
        return f"{self.queue}/{self.name}"


class WorkerStatus(models.TextChoices):
    ONLINE = "online"
    OFFLINE = "offline"  # said goodbye
    LOST = "lost"  # stopped heartbeating without saying goodbye


class Worker(models.Model):
    hostname = models.CharField(max_length=200, unique=True, help_text="The Celery node name (name@host).")
    service = models.CharField(max_length=50, blank=True, default="")
    queues = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    pool = models.CharField(max_length=50, blank=True, default="")
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    active = models.PositiveIntegerField(default=0, help_text="Tasks running at the last heartbeat.")
    reserved = models.PositiveIntegerField(default=0, help_text="Tasks received, waiting for a process.")
    processed = models.PositiveBigIntegerField(default=0, help_text="Tasks this worker has run since it started.")
    sw_version = models.CharField(max_length=100, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField()
    status = models.CharField(max_length=8, choices=WorkerStatus.choices, default=WorkerStatus.ONLINE)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "jobs_worker"
        ordering = ["hostname"]
        constraints = [models.CheckConstraint(condition=Q(status__in=WorkerStatus.values), name="jobs_worker_status")]

    def __str__(self) -> str:
        return self.hostname


class DeadLetter(models.Model):
    """A stream entry, or one event of one, that the job monitor could not record: kept, acknowledged, counted.

    Refused on arrival (malformed JSON, the wrong shape, absurd values, what PostgreSQL cannot store) or failing
    ``JOBS_MONITOR_ATTEMPTS`` times alone after its batch was split down to it. Never pruned: few, and each one
    is a bug or an attack to look at (``atrium_jobs_monitor_parked_total`` counts them).
    """

    stream_id = models.CharField(
        max_length=64, unique=True, help_text="The stream entry id, or <entry id>/<n> for one event of a batch."
    )
    reason = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    raw = models.BinaryField(help_text="What arrived (its first MiB).")
    raw_sha256 = models.CharField(max_length=64, help_text="SHA-256 of every byte that arrived.")
    raw_bytes = models.BigIntegerField(help_text="How many bytes arrived.")
    parked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "jobs_deadletter"
        ordering = ["-id"]
        verbose_name = "unrecorded tracking event"

    def __str__(self) -> str:
        return f"{self.stream_id}: {self.reason[:60]}"


class PeriodicDefault(models.Model):
    """What the code's beat schedule (``workers/beat.py``) last wrote to a periodic task of django-celery-beat's
    database schedule. The sync at beat start updates a task from the code only while the task still holds what
    the code last wrote — an operator's edit in the admin is kept — and never touches ``enabled`` (a pause)."""

    name = models.CharField(max_length=200, unique=True)
    definition = models.JSONField(help_text="task, schedule, args, kwargs, queue as the code defines them")
    synced_at = models.DateTimeField()

    class Meta:
        db_table = "jobs_periodic_default"

    def __str__(self) -> str:
        return self.name
