"""Screening: the rules edited in the payments admin, applied to payments (one or a worker's batch).

Rules, in this order (the first that fails decides the ``failure_code``):

* ``account_blocked`` — the source or the destination account is in *Blocked accounts*;
* ``amount_limit_exceeded`` — the amount is above the *Currency limit* of its currency;
* ``velocity_limit_exceeded`` — with this payment, the source account would exceed a *Velocity limit*
  (count and/or sum over its rolling window) counting the payments that passed screening
  (``processing`` or ``settled``) created in that window.

The caller runs :func:`screen_many` inside the transaction that moves the payments on, holding a
transaction advisory lock per source account (:func:`accounts_lock`), so two payments from one account are
never both counted as the last one under a limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from services.payments import queries
from services.payments.models import BlockedAccount, CurrencyLimit, Payment, PaymentStatus, VelocityLimit

PASSED = (PaymentStatus.REVIEW, PaymentStatus.PROCESSING, PaymentStatus.SETTLED)


@dataclass
class Verdict:
    passed: bool
    code: str = ""
    message: str = ""


def _lock_key(account: str) -> int:
    return int.from_bytes(hashlib.sha256(f"payments-screening:{account}".encode()).digest()[:8], "big", signed=True)


def accounts_lock(accounts: Iterable[str]) -> None:
    """Serialize screening per source account until the transaction ends: one transaction advisory lock per
    account, always taken in the same order (two batches never deadlock)."""
    keys = sorted({_lock_key(a) for a in accounts})
    if keys:
        with connection.cursor() as cursor:
            cursor.execute(queries.ACCOUNTS_LOCK_SQL, [keys])


def screen(payment: Payment) -> Verdict:
    """Apply every enabled rule to ``payment`` (inside the caller's transaction)."""
    return screen_many([payment])[payment.id]


def screen_many(payments: list[Payment]) -> dict[str, Verdict]:
    """Apply every enabled rule to each payment, in creation order, as if one after the other: a payment that
    passes counts towards the velocity of the ones after it. The rules are read once; the velocity totals come
    from one grouped query per rule. Run inside the caller's transaction, holding :func:`accounts_lock` of
    every source account."""
    if not payments:
        return {}
    ordered = sorted(payments, key=lambda p: (p.created_at, p.id))
    accounts = {a for p in ordered for a in (p.source_account, p.destination_account)}
    blocked = set(BlockedAccount.objects.filter(account__in=accounts).values_list("account", flat=True))
    currencies = {p.currency for p in ordered}
    limits = {
        row.currency: row.max_amount for row in CurrencyLimit.objects.filter(currency__in=currencies, enabled=True)
    }
    rules = list(VelocityLimit.objects.filter(enabled=True).filter(Q(currency="") | Q(currency__in=currencies)))
    now = timezone.now()
    sources = sorted({p.source_account for p in ordered})
    # (rule id, source account) → [count, total] of the payments that passed screening in the rule's window
    totals: dict[tuple[int, str], list[int]] = {}
    for rule in rules:
        recent = Payment.objects.filter(
            source_account__in=sources, status__in=PASSED, created_at__gte=now - dt.timedelta(hours=rule.window_hours)
        )
        if rule.currency:
            recent = recent.filter(currency=rule.currency)
        for row in recent.values("source_account").annotate(count=Count("id"), total=Sum("amount")):
            totals[(rule.id, row["source_account"])] = [row["count"], row["total"] or 0]
    verdicts: dict[str, Verdict] = {}
    for payment in ordered:
        verdict = _verdict(payment, blocked, limits, rules, totals)
        verdicts[payment.id] = verdict
        if verdict.passed:
            for rule in rules:
                if (not rule.currency or rule.currency == payment.currency) and payment.created_at >= now - (
                    dt.timedelta(hours=rule.window_hours)
                ):
                    counted = totals.setdefault((rule.id, payment.source_account), [0, 0])
                    counted[0] += 1
                    counted[1] += payment.amount
    return verdicts


def _verdict(
    payment: Payment,
    blocked: set[str],
    limits: dict[str, int],
    rules: list[VelocityLimit],
    totals: dict[tuple[int, str], list[int]],
) -> Verdict:
    for account, side in ((payment.source_account, "source"), (payment.destination_account, "destination")):
        if account in blocked:
            return Verdict(False, "account_blocked", f"The {side} account {account} is blocked.")
    limit = limits.get(payment.currency)
    if limit is not None and payment.amount > limit:
        return Verdict(
            False,
            "amount_limit_exceeded",
            f"{payment.amount} {payment.currency} is above the limit of {limit} per payment.",
        )
    for rule in rules:
        if rule.currency and rule.currency != payment.currency:
            continue
        before = totals.get((rule.id, payment.source_account), [0, 0])
        count, total = before[0] + 1, before[1] + payment.amount
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
