"""Payments reads for the API and the admin: payments, idempotency keys, screening rules, stats."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from services.payments.errors import InvalidStatsWindow, PaymentNotFound
from services.payments.models import (
    BlockedAccount,
    CurrencyLimit,
    IdempotencyKey,
    Payment,
    PaymentStatus,
    VelocityLimit,
)


def payment_get(payment_id: str) -> Payment:
    """One payment, or ``payment_not_found`` (404)."""
    payment = Payment.objects.filter(id=payment_id).first()
    if payment is None:
        raise PaymentNotFound(f"No payment {payment_id}.")
    return payment


def payment_list() -> QuerySet[Payment]:
    return Payment.objects.all()


def idempotency_key_list() -> QuerySet[IdempotencyKey]:
    return IdempotencyKey.objects.all()


def currency_limit_list() -> QuerySet[CurrencyLimit]:
    return CurrencyLimit.objects.all()


def velocity_limit_list() -> QuerySet[VelocityLimit]:
    return VelocityLimit.objects.all()


def blocked_account_list() -> QuerySet[BlockedAccount]:
    return BlockedAccount.objects.all()


# The windows ``GET /api/v1/payments/stats`` answers for (the portal's home shows both).
STATS_WINDOWS: dict[str, dt.timedelta] = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(hours=24)}


@dataclass(frozen=True)
class CurrencyTotal:
    currency: str
    count: int
    amount: int  # minor units


@dataclass(frozen=True)
class StatusTotal:
    status: str
    count: int
    amounts: list[CurrencyTotal]  # by currency code


@dataclass(frozen=True)
class PaymentStats:
    window: str
    since: dt.datetime
    until: dt.datetime
    count: int
    statuses: list[StatusTotal]  # every status, in life-cycle order, zero counts included


def payment_stats(*, window: str, now: dt.datetime | None = None) -> PaymentStats:
    """The payments created in the last ``window`` (``1h`` or ``24h``, else ``invalid_window``), counted and
    summed per status and currency: one grouped query over the ``payment_created`` index range."""
    if window not in STATS_WINDOWS:
        raise InvalidStatsWindow(
            f"window must be one of {', '.join(STATS_WINDOWS)}.", extra={"windows": list(STATS_WINDOWS)}
        )
    until = now or timezone.now()
    since = until - STATS_WINDOWS[window]
    rows = (
        Payment.objects.filter(created_at__gte=since, created_at__lt=until)
        .order_by()
        .values_list("status", "currency")
        .annotate(n=Count("id"), total=Sum("amount"))
    )
    by_status: dict[str, list[CurrencyTotal]] = {s: [] for s in PaymentStatus.values}
    for status, currency, n, total in rows:
        by_status.setdefault(status, []).append(CurrencyTotal(currency, n, int(total)))
    statuses = [
        StatusTotal(s, sum(c.count for c in amounts), sorted(amounts, key=lambda c: c.currency))
        for s, amounts in by_status.items()
    ]
    return PaymentStats(
        window=window, since=since, until=until, count=sum(s.count for s in statuses), statuses=statuses
    )
