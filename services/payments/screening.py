"""Screening: the rules edited in the payments admin, applied to one payment.

Rules, in this order (the first that fails decides the ``failure_code``):

* ``account_blocked`` — the source or the destination account is in *Blocked accounts*;
* ``amount_limit_exceeded`` — the amount is above the *Currency limit* of its currency;
* ``velocity_limit_exceeded`` — with this payment, the source account would exceed a *Velocity limit*
  (count and/or sum over its rolling window) counting the payments that passed screening
  (``processing`` or ``settled``) created in that window.

The caller runs :func:`screen` inside the transaction that moves the payment on, holding a transaction
advisory lock per source account, so two payments from one account are never both counted as the last
one under a limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from services.payments.models import BlockedAccount, CurrencyLimit, Payment, PaymentStatus, VelocityLimit

PASSED = (PaymentStatus.PROCESSING, PaymentStatus.SETTLED)


@dataclass
class Verdict:
    passed: bool
    code: str = ""
    message: str = ""


def account_lock(account: str) -> None:
    """Serialize screening per source account until the transaction ends."""
    key = int.from_bytes(hashlib.sha256(f"payments-screening:{account}".encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def screen(payment: Payment) -> Verdict:
    """Apply every enabled rule to ``payment`` (inside the caller's transaction)."""
    blocked = BlockedAccount.objects.filter(account__in=[payment.source_account, payment.destination_account])
    for row in blocked[:1]:
        side = "source" if row.account == payment.source_account else "destination"
        return Verdict(False, "account_blocked", f"The {side} account {row.account} is blocked.")
    limit = CurrencyLimit.objects.filter(currency=payment.currency, enabled=True).first()
    if limit is not None and payment.amount > limit.max_amount:
        return Verdict(
            False,
            "amount_limit_exceeded",
            f"{payment.amount} {payment.currency} is above the limit of {limit.max_amount} per payment.",
        )
    now = timezone.now()
    for rule in VelocityLimit.objects.filter(enabled=True).filter(Q(currency="") | Q(currency=payment.currency)):
        since = now - dt.timedelta(hours=rule.window_hours)
        recent = Payment.objects.filter(
            source_account=payment.source_account, status__in=PASSED, created_at__gte=since
        ).exclude(id=payment.id)
        if rule.currency:
            recent = recent.filter(currency=rule.currency)
        totals = recent.aggregate(count=Count("id"), total=Sum("amount"))
        count, total = totals["count"] + 1, (totals["total"] or 0) + payment.amount
        if rule.max_count is not None and count > rule.max_count:
            return Verdict(
                False,
                "velocity_limit_exceeded",
                f"{rule.name}: this would be payment {count} from {payment.source_account} in {rule.window_hours} h "
                f"(at most {rule.max_count}).",
            )
        if rule.max_amount is not None and total > rule.max_amount:
            return Verdict(
                False,
                "velocity_limit_exceeded",
                f"{rule.name}: {total} {rule.currency} from {payment.source_account} in {rule.window_hours} h "
                f"(at most {rule.max_amount}).",
            )
    return Verdict(True)
