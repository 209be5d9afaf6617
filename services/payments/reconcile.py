"""Reconciliation: payments against the ledger, both ways (beat ``payments.reconcile``).

For the payments created in the window (``PAYMENTS_RECONCILE_WINDOW_HOURS``, ending a minute ago, so
payments still being worked on are left alone) and every ledger transaction with a payment reference
(``pay_…``) created since the window began:

* ``settled_without_posting`` — a settled payment has no ledger transaction, or it is not posted;
* ``amount_mismatch`` — its posted transaction moves another amount, currency or pair of accounts;
* ``posting_without_settlement`` — a posted transaction's payment is not settled (and no longer in flight);
* ``posting_without_payment`` — a posted (or pending) transaction whose reference is no payment at all;
* ``hold_not_released`` — a pending hold of a payment that ended without settling (failed, rejected, canceled),
  older than the sweeper's delay. Reconciliation **voids** these holds (one batch call to the ledger), records
  each release (``payments.reconciliation.hold_voided``) and marks the payment's hold voided.

Each mismatch is an audit event (``payments.reconciliation.mismatch``, outcome ``failure``); each run is
one more (``payments.reconciliation.completed``), and the counts by kind are published for ``/metrics``
(``atrium_payments_reconciliation_mismatches``) through Redis, as the ledger's integrity check does.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.kit.audit import audit_record
from services.kit.logs import get_logger
from services.payments.ledger import ledger
from services.payments.models import HoldStatus, Payment, PaymentStatus

log = get_logger(__name__)

STATE_KEY = "atrium:payments:reconciliation"
KINDS = (
    "settled_without_posting",
    "amount_mismatch",
    "posting_without_settlement",
    "posting_without_payment",
    "hold_not_released",
)
AUDITED_MAX = 100  # mismatch events per run (the summary event carries the counts of all)
ACTOR = {"type": "system", "id": "payments-reconciliation", "display": "payments reconciliation"}
OPEN = (PaymentStatus.CREATED, PaymentStatus.SCREENING, PaymentStatus.PROCESSING)


@dataclass
class Mismatch:
    kind: str
    payment: str
    ledger_transaction: str
    detail: str


@dataclass
class Report:
    since: str
    until: str
    payments: int = 0
    ledger_transactions: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    holds_voided: int = 0  # hold_not_released mismatches whose hold reconciliation voided

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        for mismatch in self.mismatches:
            counts[mismatch.kind] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "payments": self.payments,
            "ledger_transactions": self.ledger_transactions,
            "mismatches": self.counts(),
            "holds_voided": self.holds_voided,
            "first": [asdict(m) for m in self.mismatches[:20]],
        }


def _moves(txn: dict[str, Any]) -> tuple[int, str, str, str]:
    """(amount, currency, debited account, credited account) of a two-posting transfer."""
    debits = [p for p in txn.get("postings", []) if p.get("direction") == "debit"]
    credits = [p for p in txn.get("postings", []) if p.get("direction") == "credit"]
    amount = sum(int(p.get("amount", 0)) for p in debits)
    source = debits[0]["account"] if len(debits) == 1 else "?"
    destination = credits[0]["account"] if len(credits) == 1 else "?"
    return amount, str(txn.get("currency", "")), source, destination


def _payments(ids: set[str], since: dt.datetime, until: dt.datetime) -> dict[str, Payment]:
    found = {p.id: p for p in Payment.objects.filter(created_at__gte=since, created_at__lt=until)}
    missing = sorted(ids - set(found))
    for start in range(0, len(missing), 1000):
        found.update((p.id, p) for p in Payment.objects.filter(id__in=missing[start : start + 1000]))
    return found


def reconcile(
    *, window_hours: int | None = None, since: dt.datetime | None = None, now: dt.datetime | None = None
) -> Report:
    """Compare (see the module docstring); record the mismatches; return the report.

    The window ends a minute before ``now`` and starts ``window_hours`` before that, or at ``since``.
    """
    now = now or timezone.now()
    until = now - dt.timedelta(minutes=1)
    since = since or until - dt.timedelta(hours=window_hours or settings.PAYMENTS_RECONCILE_WINDOW_HOURS)
    stale = now - dt.timedelta(seconds=settings.PAYMENTS_STALE_SECONDS)
    txns = {
        t["reference"]: t
        for t in ledger().transactions(reference_prefix="pay_", created_after=since, created_before=now)
    }
    payments = _payments(set(txns), since, until)
    report = Report(since=since.isoformat(), until=until.isoformat(), ledger_transactions=len(txns))
    out = report.mismatches
    for payment in payments.values():
        if payment.created_at >= until or (payment.status in OPEN and payment.updated_at >= stale):
            continue  # still being worked on
        report.payments += 1
        txn = txns.get(payment.id)
        txn_id = txn["id"] if txn else payment.ledger_transaction
        if payment.status == PaymentStatus.SETTLED:
            if txn is None or txn.get("status") != "posted":
                state = "no ledger transaction" if txn is None else f"its ledger transaction is {txn.get('status')}"
                out.append(Mismatch("settled_without_posting", payment.id, txn_id, f"settled, but {state}"))
            elif _moves(txn) != (
                payment.amount,
                payment.currency,
                payment.source_account,
                payment.destination_account,
            ):
                amount, currency, source, destination = _moves(txn)
                out.append(
                    Mismatch(
                        "amount_mismatch",
                        payment.id,
                        txn_id,
                        f"payment {payment.amount} {payment.currency} {payment.source_account}→"
                        f"{payment.destination_account}, ledger {amount} {currency} {source}→{destination}",
                    )
                )
        elif txn is not None and txn.get("status") == "posted":
            out.append(
                Mismatch(
                    "posting_without_settlement",
                    payment.id,
                    txn_id,
                    f"the ledger posted it, the payment is {payment.status}",
                )
            )
        elif (
            txn is not None
            and txn.get("status") == "pending"
            and payment.status not in OPEN
            and payment.updated_at < stale
        ):
            out.append(
                Mismatch("hold_not_released", payment.id, txn_id, f"the payment is {payment.status}, its hold pending")
            )
    for reference, txn in txns.items():
        if reference not in payments and txn.get("status") in ("posted", "pending"):
            out.append(
                Mismatch(
                    "posting_without_payment",
                    reference,
                    txn["id"],
                    f"a {txn.get('status')} ledger transaction for a payment that does not exist",
                )
            )
    report.holds_voided = _holds_void([m for m in out if m.kind == "hold_not_released"], payments)
    _record(report)
    return report


def _holds_void(mismatches: list[Mismatch], payments: dict[str, Payment]) -> int:
    """Void the holds of payments that ended without settling; audit each release; return how many."""
    if not mismatches:
        return 0
    results = ledger().settle_many([m.ledger_transaction for m in mismatches], post=False)
    voided = [m for m, item in zip(mismatches, results, strict=True) if item.get("status") == "voided"]
    for mismatch, item in zip(mismatches, results, strict=True):
        if item.get("status") != "voided":
            log.error(
                "payments.reconciliation_void_refused",
                payment_id=mismatch.payment,
                ledger_transaction=mismatch.ledger_transaction,
                code=item.get("code"),
            )
    with transaction.atomic():
        Payment.objects.filter(id__in=[m.payment for m in voided], hold_status=HoldStatus.PENDING).update(
            hold_status=HoldStatus.VOIDED, next_attempt_at=None, updated_at=timezone.now()
        )
        for mismatch in voided:
            payment = payments[mismatch.payment]
            audit_record(
                "payments.reconciliation.hold_voided",
                object_type="payment",
                object_id=mismatch.payment,
                changes={"hold_status": ["pending", "voided"]},
                metadata={
                    "ledger_transaction": mismatch.ledger_transaction,
                    "payment_status": str(payment.status),
                    "code": payment.failure_code,
                },
                actor=ACTOR,
            )
    if voided:
        log.warning("payments.reconciliation_holds_voided", count=len(voided))
    return len(voided)


def _record(report: Report) -> None:
    counts = report.counts()
    with transaction.atomic():
        for mismatch in report.mismatches[:AUDITED_MAX]:
            audit_record(
                "payments.reconciliation.mismatch",
                outcome="failure",
                object_type="payment",
                object_id=mismatch.payment,
                metadata={
                    "code": mismatch.kind,
                    "ledger_transaction": mismatch.ledger_transaction,
                    "detail": mismatch.detail,
                },
                actor=ACTOR,
            )
        audit_record(
            "payments.reconciliation.completed",
            outcome="failure" if report.mismatches else "success",
            object_type="reconciliation",
            object_id=report.until,
            metadata={k: v for k, v in report.as_dict().items() if k != "first"},
            actor=ACTOR,
        )
    state = {"mismatches": counts, "checked_at": time.time()}
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.set(STATE_KEY, json.dumps(state))
        client.close()
    except redis.RedisError as exc:
        log.warning("payments.reconciliation_state_unpublished", error=str(exc))
    if report.mismatches:
        log.error("payments.reconciliation_mismatches", **counts)
    else:
        log.info("payments.reconciliation_ok", payments=report.payments, ledger_transactions=report.ledger_transactions)


class ReconciliationCollector(Collector):
    """``atrium_payments_reconciliation_mismatches{kind}`` and the time of the last run."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
            raw = client.get(STATE_KEY)
            client.close()
        except redis.RedisError:
            return
        if not raw:
            return
        state = json.loads(raw)
        family = GaugeMetricFamily(
            "atrium_payments_reconciliation_mismatches",
            "Mismatches between payments and the ledger found by the last reconciliation, by kind.",
            labels=["kind"],
        )
        for kind, count in state["mismatches"].items():
            family.add_metric([kind], count)
        yield family
        yield GaugeMetricFamily(
            "atrium_payments_reconciliation_checked_timestamp_seconds",
            "When the last reconciliation ran (Unix time).",
            value=state["checked_at"],
        )
