"""Ledger data: accounts with running balances, transactions, and their postings.

What must never break is enforced by PostgreSQL: non-negative balance columns,
the overdraft rule (check constraint), unique references, and triggers that make
postings and transactions append-only (migration 0002).
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

from services.kit.ids import id_new

MAX_AMOUNT = 2**63 - 1


class NormalBalance(models.TextChoices):
    DEBIT = "debit"
    CREDIT = "credit"


class AccountStatus(models.TextChoices):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


class Direction(models.TextChoices):
    DEBIT = "debit"
    CREDIT = "credit"


class TransactionStatus(models.TextChoices):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"


def _account_id() -> str:
    return id_new("acc")


def _transaction_id() -> str:
    return id_new("txn")


class Account(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=_account_id, editable=False)
    code = models.CharField(max_length=100, unique=True, null=True, blank=True)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3)
    normal_balance = models.CharField(max_length=6, choices=NormalBalance.choices)
    status = models.CharField(max_length=6, choices=AccountStatus.choices, default=AccountStatus.OPEN)
    overdraft_limit = models.BigIntegerField(default=0)
    allow_negative = models.BooleanField(default=False)
    debits_posted = models.BigIntegerField(default=0)
    credits_posted = models.BigIntegerField(default=0)
    debits_pending = models.BigIntegerField(default=0)
    credits_pending = models.BigIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(currency__regex=r"^[A-Z]{3}$"), name="account_currency_iso4217"),
            models.CheckConstraint(condition=Q(overdraft_limit__gte=0), name="account_overdraft_nonnegative"),
            models.CheckConstraint(
                condition=Q(debits_posted__gte=0)
                & Q(credits_posted__gte=0)
                & Q(debits_pending__gte=0)
                & Q(credits_pending__gte=0),
                name="account_totals_nonnegative",
            ),
            # The overdraft rule, in the database: available (pending debits counted) never below zero.
            models.CheckConstraint(
                condition=Q(allow_negative=True)
                | Q(
                    normal_balance="credit",
                    overdraft_limit__gte=F("debits_posted") + F("debits_pending") - F("credits_posted"),
                )
                | Q(
                    normal_balance="debit",
                    overdraft_limit__gte=F("credits_posted") + F("credits_pending") - F("debits_posted"),
                ),
                name="account_available_within_limit",
            ),
        ]
        indexes = [models.Index(fields=["currency", "status"], name="account_currency_status")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def balance(self) -> int:
        if self.normal_balance == NormalBalance.CREDIT:
            return self.credits_posted - self.debits_posted
        return self.debits_posted - self.credits_posted

    @property
    def available(self) -> int:
        if self.normal_balance == NormalBalance.CREDIT:
            return self.balance - self.debits_pending + self.overdraft_limit
        return self.balance - self.credits_pending + self.overdraft_limit


class Transaction(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=_transaction_id, editable=False)
    reference = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=7, choices=TransactionStatus.choices)
    metadata = models.JSONField(default=dict, blank=True)
    # SHA-256 of the request's canonical content: same reference + same content is a replay.
    content_hash = models.CharField(max_length=64, editable=False)
    # The request that asked for it: a batch item's own request id (a payment's), else the call's X-Request-ID.
    # db_default: rows inserted without the column (code older than migration 0003) still get one.
    request_id = models.CharField(max_length=128, blank=True, default="", db_default="")
    created_at = models.DateTimeField()
    posted_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="pending", posted_at__isnull=True, voided_at__isnull=True)
                | Q(status="posted", posted_at__isnull=False, voided_at__isnull=True)
                | Q(status="voided", posted_at__isnull=True, voided_at__isnull=False),
                name="transaction_status_timestamps",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="txn_pending_expiry", condition=Q(status="pending")),
            models.Index(fields=["created_at"], name="txn_created_at"),
            models.Index(fields=["request_id"], name="txn_request_id", condition=~Q(request_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.id})"


class Posting(models.Model):
    id = models.BigAutoField(primary_key=True)
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings")
    direction = models.CharField(max_length=6, choices=Direction.choices)
    amount = models.BigIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="posting_amount_positive")]
        indexes = [models.Index(fields=["account", "-id"], name="posting_account_newest")]

    def __str__(self) -> str:
        return f"{self.direction} {self.amount} {self.account_id}"
