"""Payments data: payment orders, idempotency keys, and the screening rules edited in the admin.

A payment moves ``created → screening → processing → settled``, or ends ``rejected`` (screening),
``failed`` (the ledger refused, or retries ran out) or ``canceled``. With risk screening on (``RISK_URL``), a payment
the risk service marks for review waits in ``review`` (``screening → review``) until an operator approves it
(``review → processing``) or rejects it (``review → rejected``, ``risk_review_rejected``); it may be canceled
meanwhile. ``review`` is not work for the workers: no claim, drain or sweep picks it up (it is not in the
``payment_open`` index's statuses), only a person moves it on. Every transition is one transaction
(compare-and-set on ``status``, see :mod:`services.payments.processing`) that also writes the
``payment.<status>`` domain event and the audit event to the outbox.
"""

from __future__ import annotations

from django.db import models
from django.db.models import JSONField, Q, Value
from django.utils import timezone

from services.kit.ids import id_new

CURRENCY_REGEX = r"^[A-Z]{3}$"
MAX_AMOUNT = 2**63 - 1


class PaymentStatus(models.TextChoices):
    CREATED = "created"
    SCREENING = "screening"
    REVIEW = "review"
    PROCESSING = "processing"
    SETTLED = "settled"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset({PaymentStatus.SETTLED, PaymentStatus.REJECTED, PaymentStatus.FAILED, PaymentStatus.CANCELED})
CANCELABLE = frozenset({PaymentStatus.CREATED, PaymentStatus.SCREENING, PaymentStatus.REVIEW})
# The statuses published as ``payment.<status>`` domain events (the webhooks catalog); screening, review and
# processing are internal steps (audited, never published: a review ends in processing → settled, or rejected,
# which are).
PUBLIC_STATUSES = frozenset({"created", "settled", "failed", "rejected", "canceled"})


class RiskDecision(models.TextChoices):
    """What the risk service decided for the payment ("": not assessed — risk screening off, or risk was away and
    ``PAYMENTS_RISK_FALLBACK`` allowed or denied it)."""

    NONE = "", "not assessed"
    ALLOW = "allow"
    REVIEW = "review"
    DENY = "deny"


class HoldStatus(models.TextChoices):
    """The ledger transaction (``reference = payment id``) as the payment last saw it."""

    NONE = "", "no hold"
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"


def _payment_id() -> str:
    return id_new("pay")


class Payment(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=_payment_id, editable=False)
    client_id = models.CharField(max_length=200, help_text="Who created it (the token's subject).")
    amount = models.BigIntegerField(help_text="In the currency's minor units.")
    currency = models.CharField(max_length=3)
    source_account = models.CharField(max_length=40)
    destination_account = models.CharField(max_length=40)
    description = models.CharField(max_length=500, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=PaymentStatus.choices, default=PaymentStatus.CREATED)
    status_history = models.JSONField(default=list, blank=True, help_text="[{status, at}], oldest first.")
    ledger_transaction = models.CharField(max_length=40, blank=True, default="")
    hold_status = models.CharField(max_length=8, choices=HoldStatus.choices, blank=True, default=HoldStatus.NONE)
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_message = models.CharField(max_length=500, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0, help_text="Processing attempts that met an unavailable ledger.")
    processing_errors = models.PositiveIntegerField(
        default=0,
        db_default=0,
        help_text="Unexpected errors met while processing it; from the first on it is processed alone, and at "
        "PAYMENTS_PROCESSING_ATTEMPTS it is parked (failed, processing_error).",
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When a waiting retry is due.")
    lease_until = models.DateTimeField(null=True, blank=True, help_text="A worker is on it until then.")
    lease_owner = models.CharField(
        max_length=100,
        blank=True,
        default="",
        db_default="",
        help_text="Which worker holds the lease (node:pid:claim): only it may renew the lease or write the payment "
        "while it lasts.",
    )
    risk_decision = models.CharField(
        max_length=8,
        choices=RiskDecision.choices,
        blank=True,
        default="",
        db_default="",
        help_text="The risk service's decision (blank: not assessed).",
    )
    risk_score = models.SmallIntegerField(null=True, blank=True, help_text="The risk score, 0-100.")
    risk_assessment_id = models.CharField(
        max_length=40, blank=True, default="", db_default="", help_text="The risk service's assessment (rsk_…)."
    )
    risk_reasons = models.JSONField(
        default=list, db_default=Value([], JSONField()), blank=True, help_text="The codes of the risk reasons."
    )
    request_id = models.CharField(max_length=128, blank=True, default="")
    trace_parent = models.CharField(
        max_length=55,
        blank=True,
        default="",
        db_default="",
        help_text="The W3C traceparent it was created under, when OpenTelemetry is on (the drain links to it).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "payments_payment"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=~Q(source_account=models.F("destination_account")), name="payment_accounts_differ"
            ),
            models.CheckConstraint(condition=Q(status__in=PaymentStatus.values), name="payment_status_valid"),
        ]
        indexes = [
            models.Index(fields=["created_at", "id"], name="payment_created"),
            models.Index(fields=["status", "created_at"], name="payment_status"),
            models.Index(fields=["source_account", "created_at"], name="payment_source"),
            models.Index(fields=["destination_account", "created_at"], name="payment_destination"),
            # The sweeper's work: payments not yet final, and final ones whose hold still has to be voided. Not
            # review: it waits for a person, never for a worker (the operators' list of payments in review reads
            # payment_status).
            models.Index(
                fields=["updated_at"],
                name="payment_open",
                condition=Q(status__in=["created", "screening", "processing"]) | Q(hold_status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.amount} {self.currency} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class IdempotencyKey(models.Model):
    """A client's ``Idempotency-Key``: in flight while the first request runs, then its saved response."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight"
        DONE = "done"

    client_id = models.CharField(max_length=200)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the method, path and canonical body.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    locked_until = models.DateTimeField(help_text="An in-flight key whose request died is taken over after this.")
    lock_token = models.CharField(max_length=32, blank=True, default="", help_text="Which request holds the claim.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "payments_idempotency_key"
        constraints = [models.UniqueConstraint(fields=["client_id", "key"], name="idempotency_key_unique")]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_key_expires")]

    def __str__(self) -> str:
        return f"{self.client_id}:{self.key} ({self.state})"


class CurrencyLimit(models.Model):
    """Screening: the largest single payment allowed in a currency."""

    currency = models.CharField(max_length=3, unique=True)
    max_amount = models.BigIntegerField(help_text="In minor units.")
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "payments_currency_limit"
        ordering = ["currency"]
        constraints = [models.CheckConstraint(condition=Q(max_amount__gt=0), name="currency_limit_positive")]

    def __str__(self) -> str:
        return f"{self.currency} ≤ {self.max_amount}"


class VelocityLimit(models.Model):
    """Screening: per source account, over a rolling window, at most ``max_count`` payments and/or
    ``max_amount`` in total (this payment included), in one currency or in every currency."""

    name = models.CharField(max_length=100, unique=True)
    currency = models.CharField(max_length=3, blank=True, default="", help_text="Blank: counts every currency.")
    window_hours = models.PositiveIntegerField(default=24)
    max_count = models.PositiveIntegerField(null=True, blank=True)
    max_amount = models.BigIntegerField(null=True, blank=True, help_text="In minor units (one currency only).")
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "payments_velocity_limit"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_count__isnull=False) | Q(max_amount__isnull=False), name="velocity_limit_has_a_limit"
            ),
            models.CheckConstraint(
                condition=Q(max_amount__isnull=True) | ~Q(currency=""), name="velocity_amount_needs_currency"
            ),
            models.CheckConstraint(condition=Q(window_hours__gte=1), name="velocity_window_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class BlockedAccount(models.Model):
    """Screening: payments from or to this ledger account are rejected."""

    account = models.CharField(max_length=40, unique=True)
    reason = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "payments_blocked_account"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.account
