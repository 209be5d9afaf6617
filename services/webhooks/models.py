"""Webhooks data: the event-type catalog, endpoints, messages, their deliveries (one per message x endpoint),
every delivery attempt, and recoveries of an endpoint's failed messages.

A message is created once per event (idempotent on ``event_id``) with its body built once, the exact bytes every
attempt sends; a delivery is ``pending`` until the dispatcher gets a 2xx (``succeeded``), runs out of attempts
(``failed``) or it is ``canceled``. Endpoint secrets are stored encrypted (:mod:`services.webhooks.secrets`).
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from services.kit.ids import id_new

EVENT_TYPE_REGEX = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
# An endpoint's filter: an exact name, a prefix wildcard (``payment.*``: one or more segments below) or ``*``.
EVENT_PATTERN_REGEX = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$"
MESSAGE_SEQUENCE = "webhooks_message_seq"


class NextVal(models.Func):
    """``nextval('<sequence>')``: the database default of :attr:`Message.seq`."""

    function = "nextval"
    output_field = models.BigIntegerField()

    def __init__(self, sequence: str) -> None:
        super().__init__(models.Value(sequence))


class EventType(models.Model):
    name = models.CharField(
        primary_key=True,
        max_length=100,
        validators=[RegexValidator(EVENT_TYPE_REGEX, "Dot-separated lowercase names, e.g. payment.settled.")],
    )
    description = models.TextField(blank=True, default="")
    schema = models.JSONField(default=dict, blank=True, help_text="A JSON Schema (draft 2020-12) of the data.")
    example = models.JSONField(default=dict, blank=True, help_text="An example of the data.")
    archived = models.BooleanField(default=False, help_text="Archived types are refused for new messages.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "webhooks_event_type"
        ordering = ["name"]
        constraints = [models.CheckConstraint(condition=Q(name__regex=EVENT_TYPE_REGEX), name="event_type_name")]

    def __str__(self) -> str:
        return self.name


def _endpoint_id() -> str:
    return id_new("ep")


class Endpoint(models.Model):
    class DisabledReason:
        """``disabled_reason`` set by the service (an operator's is free text)."""

        GONE = "gone"  # the endpoint answered 410
        FAILING = "failing"  # only failures for WEBHOOKS_DISABLE_AFTER_SECONDS

    id = models.CharField(primary_key=True, max_length=40, default=_endpoint_id, editable=False)
    url = models.CharField(max_length=2048)
    description = models.CharField(max_length=500, blank=True, default="")
    event_types = ArrayField(
        models.CharField(max_length=100), help_text="Patterns: exact names, prefix.* wildcards, or * (non-empty)."
    )
    channels = ArrayField(
        models.CharField(max_length=128), default=list, blank=True, help_text="Only these channels (empty: all)."
    )
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    rate_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Messages per second (empty: no limit).")
    max_in_flight = models.PositiveSmallIntegerField(default=10, help_text="Requests sent at once, at most.")
    ordered = models.BooleanField(default=False, help_text="Deliver in creation order, one at a time.")
    metadata = models.JSONField(default=dict, blank=True)
    secret = models.TextField(help_text="The whsec_ secret, encrypted (Fernet token).")
    previous_secret = models.TextField(blank=True, default="", help_text="The rotated-out secret, encrypted.")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    signing_key = models.TextField(blank=True, default="", help_text="The Ed25519 private key (hex), encrypted.")
    v1a = models.BooleanField(default=False, help_text="Also sign with Ed25519 (v1a).")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    last_success_at = models.DateTimeField(null=True, blank=True)
    first_failure_at = models.DateTimeField(
        null=True, blank=True, help_text="The first failure after the last success (empty: none since)."
    )
    last_error = models.CharField(max_length=300, blank=True, default="")
    last_status = models.IntegerField(null=True, blank=True)

    class Meta:
        db_table = "webhooks_endpoint"
        ordering = ["-created_at", "-id"]
        permissions = [("read_secret", "Can read an endpoint's signing secret")]
        constraints = [
            models.CheckConstraint(condition=Q(event_types__len__gt=0), name="endpoint_event_types_nonempty"),
            models.CheckConstraint(condition=Q(max_in_flight__gte=1), name="endpoint_max_in_flight_positive"),
            models.CheckConstraint(
                condition=Q(rate_limit__isnull=True) | Q(rate_limit__gte=1), name="endpoint_rate_limit_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["created_at", "id"], name="endpoint_created"),
            GinIndex(fields=["event_types"], name="endpoint_event_types"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.url}"


def _message_id() -> str:
    return id_new("msg")


class Message(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=_message_id, editable=False)
    seq = models.BigIntegerField(
        unique=True, db_default=NextVal(MESSAGE_SEQUENCE), editable=False, help_text="Creation order."
    )
    event_id = models.CharField(
        max_length=64, unique=True, help_text="The source event's id (or the caller's): a second one creates nothing."
    )
    type = models.CharField(max_length=100)
    channels = ArrayField(models.CharField(max_length=128), default=list, blank=True)
    payload = models.JSONField(default=dict, blank=True, help_text="The data.")
    body = models.TextField(help_text='The exact JSON sent: {"type", "timestamp", "data"}.')
    occurred_at = models.DateTimeField(help_text="The body's timestamp.")
    source = models.CharField(max_length=200, help_text="Who sent it: payments, ledger, or the caller's client id.")
    request_id = models.CharField(max_length=128, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="", help_text="data.id, when a string.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "webhooks_message"
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["type", "seq"], name="message_type"),
            models.Index(fields=["object_id"], name="message_object", condition=~Q(object_id="")),
            models.Index(fields=["request_id"], name="message_request", condition=~Q(request_id="")),
            models.Index(fields=["created_at"], name="message_created"),
            GinIndex(fields=["channels"], name="message_channels"),
        ]
        permissions = [("resend_message", "Can resend a message to an endpoint")]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class AttemptTrigger(models.TextChoices):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    RECOVERY = "recovery"


class Delivery(models.Model):
    """One message to one endpoint: pending until a 2xx, the last attempt, or a cancel."""

    id = models.BigAutoField(primary_key=True)
    # No single-column indexes: delivery_unique (message, endpoint) and delivery_endpoint_state (endpoint, …)
    # lead with these columns (every write of a delivery maintains each index it has).
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    msg_seq = models.BigIntegerField(help_text="The message's seq (ordered endpoints go by it).")
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    leased_until = models.DateTimeField(null=True, blank=True, help_text="A dispatcher is sending it until then.")
    last_status = models.IntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=40, blank=True, default="")
    trigger = models.CharField(
        max_length=10,
        choices=AttemptTrigger.choices,
        default=AttemptTrigger.SCHEDULED,
        help_text="What its next attempt is (manual: a resend; recovery): the dispatcher writes it on the attempt.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    succeeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhooks_delivery"
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["message", "endpoint"], name="delivery_unique"),
            models.CheckConstraint(condition=Q(state__in=DeliveryState.values), name="delivery_state_valid"),
        ]
        indexes = [
            models.Index(fields=["endpoint", "state", "msg_seq"], name="delivery_endpoint_state"),
            # The dispatcher's claim per endpoint: its due deliveries, soonest first.
            models.Index(
                fields=["endpoint", "next_attempt_at"], name="delivery_due_endpoint", condition=Q(state="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} -> {self.endpoint_id} ({self.state})"


class AttemptError(models.TextChoices):
    NONE = "", "none"
    TIMEOUT = "timeout"
    CONNECT = "connect"
    DNS = "dns"
    TLS = "tls"
    SSRF_BLOCKED = "ssrf_blocked"
    STATUS = "status"


class Attempt(models.Model):
    """One HTTP request of a delivery, as it went (kept WEBHOOKS_ATTEMPT_RETENTION_DAYS)."""

    id = models.BigAutoField(primary_key=True)
    # Not indexed: attempts are read by endpoint or message (and time), never by delivery.
    delivery = models.ForeignKey(
        Delivery, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="attempt_log"
    )
    message_id = models.CharField(max_length=40)
    endpoint_id = models.CharField(max_length=40)
    number = models.IntegerField(help_text="1 for the first attempt of the delivery.")
    at = models.DateTimeField(default=timezone.now)
    duration_ms = models.IntegerField(default=0)
    status_code = models.IntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="", help_text="The first 4 KiB of the response.")
    error = models.CharField(max_length=20, choices=AttemptError.choices, blank=True, default="")
    trigger = models.CharField(max_length=10, choices=AttemptTrigger.choices, default=AttemptTrigger.SCHEDULED)
    request_id = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        db_table = "webhooks_attempt"
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["endpoint_id", "at"], name="attempt_endpoint"),
            models.Index(fields=["message_id", "at"], name="attempt_message"),
            BrinIndex(fields=["at"], name="attempt_at"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} -> {self.endpoint_id} #{self.number} {self.status_code or self.error}"


class RecoveryState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def _recovery_id() -> str:
    return id_new("rcv")


class Recovery(models.Model):
    """Resend every failed delivery of an endpoint since a time: a background job, bounded and resumable."""

    id = models.CharField(primary_key=True, max_length=40, default=_recovery_id, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="recoveries")
    since = models.DateTimeField()
    until = models.DateTimeField(null=True, blank=True, help_text="Messages created before this (empty: created_at).")
    state = models.CharField(max_length=10, choices=RecoveryState.choices, default=RecoveryState.QUEUED)
    cursor_seq = models.BigIntegerField(default=0, help_text="Resumes after this message seq.")
    recovered = models.IntegerField(default=0, help_text="Deliveries sent again so far.")
    error = models.CharField(max_length=300, blank=True, default="")
    requested_by = models.JSONField(default=dict, blank=True, help_text="The actor who asked.")
    request_id = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhooks_recovery"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "recoveries"
        constraints = [models.CheckConstraint(condition=Q(state__in=RecoveryState.values), name="recovery_state_valid")]

    def __str__(self) -> str:
        return f"{self.id} {self.endpoint_id} ({self.state})"
