"""Carrying a payment out (Celery queue ``payments``): screening, the ledger hold, posting, settling.

:func:`advance` is what the ``payments.process`` task runs. It is safe to run any number of times, at any
moment, in any number of workers at once — which is what late acknowledgement, redelivery after a worker
is killed, and the sweeper all amount to:

* a worker first takes a **lease** on the payment (``lease_until``, compare-and-set): while it holds it,
  other runs for the same payment return at once; a lease left by a killed worker simply expires;
* every status change is a compare-and-set transition (:func:`services.payments.services.transition`);
* the ledger writes are idempotent: the hold is created with ``reference = payment id`` and a body that
  is the same on every attempt (a replay returns the same transaction), and posting a hold that is
  already posted is success. So a run that dies after the ledger answered but before the payment was
  saved is finished by the next run, never done twice.

While the ledger is unreachable the payment stays ``processing``; the task is retried with exponential
backoff and full jitter (``next_attempt_at`` records when) up to ``PAYMENTS_MAX_ATTEMPTS`` attempts, after
which the payment fails with ``retries_exhausted``. Any terminal failure after a hold voids the hold; if
the ledger cannot be reached for that either, the sweeper voids it later (``hold_status`` stays
``pending`` until it is done).

:func:`sweep` (beat) resumes payments whose work was lost (no lease, no retry due, untouched for
``PAYMENTS_STALE_SECONDS``) and releases holds of failed payments.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from services.kit.http import UpstreamUnavailable
from services.kit.logs import get_logger
from services.payments import services
from services.payments.ledger import LedgerRefused, ledger
from services.payments.models import HoldStatus, Payment, PaymentStatus
from services.payments.screening import account_lock, screen

log = get_logger(__name__)

OPEN = (PaymentStatus.CREATED, PaymentStatus.SCREENING, PaymentStatus.PROCESSING)


@dataclass
class Outcome:
    """What one :func:`advance` run did: the status it left the payment in, or that it had to wait."""

    status: str
    retry_in: float | None = None  # the ledger was unavailable: run again after this many seconds
    busy: bool = False  # another worker holds the lease


def _lease_take(payment_id: str) -> bool:
    now = timezone.now()
    until = now + dt.timedelta(seconds=settings.PAYMENTS_LEASE_SECONDS)
    return bool(
        Payment.objects.filter(id=payment_id)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(status__in=OPEN) | Q(hold_status=HoldStatus.PENDING))
        .update(lease_until=until)
    )


def _lease_release(payment_id: str) -> None:
    Payment.objects.filter(id=payment_id).update(lease_until=None)


def backoff(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: full jitter over an exponentially growing cap."""
    cap = min(settings.PAYMENTS_RETRY_MAX_SECONDS, settings.PAYMENTS_RETRY_BASE_SECONDS * 2 ** min(attempt, 30))
    return max(0.05, random.uniform(cap / 2, cap))  # noqa: S311  (jitter, not cryptography)


def advance(payment_id: str) -> Outcome:
    """Take the payment as far as it can go now (see the module docstring)."""
    if not _lease_take(payment_id):
        current = Payment.objects.filter(id=payment_id).values_list("status", flat=True).first()
        return Outcome(current or "missing", busy=current in OPEN)
    try:
        while True:
            payment = Payment.objects.get(id=payment_id)
            if payment.status == PaymentStatus.CREATED:
                services.transition(payment.id, [PaymentStatus.CREATED], PaymentStatus.SCREENING)
            elif payment.status == PaymentStatus.SCREENING:
                _screen(payment.id)
            elif payment.status == PaymentStatus.PROCESSING:
                retry_in = _process(payment)
                if retry_in is not None:
                    return Outcome(PaymentStatus.PROCESSING, retry_in=retry_in)
            else:
                if payment.hold_status == HoldStatus.PENDING and payment.status != PaymentStatus.SETTLED:
                    _release_hold(payment)
                return Outcome(payment.status)
    finally:
        _lease_release(payment_id)


def _screen(payment_id: str) -> None:
    """Screening and its verdict in one transaction, serialized per source account."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(id=payment_id).first()
        if payment is None or payment.status != PaymentStatus.SCREENING:
            return
        account_lock(payment.source_account)
        verdict = screen(payment)
        if verdict.passed:
            services._apply(payment, PaymentStatus.PROCESSING, {})
        else:
            services._apply(
                payment,
                PaymentStatus.REJECTED,
                {"failure_code": verdict.code, "failure_message": verdict.message[:500]},
            )
            log.info("payments.rejected", payment_id=payment_id, code=verdict.code)


def _process(payment: Payment) -> float | None:
    """Hold, post, settle. Return None when the payment left ``processing``, or the seconds to wait."""
    gateway = ledger()
    try:
        if payment.hold_status == HoldStatus.NONE or not payment.ledger_transaction:
            _hold_seen(payment, hold_place(payment))
        if payment.hold_status == HoldStatus.PENDING:
            _hold_seen(payment, gateway.post(payment.ledger_transaction))
        if payment.hold_status == HoldStatus.VOIDED:
            raise LedgerRefused("hold_voided", "The ledger hold was voided (expired) before it was posted.", 409)
    except LedgerRefused as refusal:
        services.transition(
            payment.id,
            [PaymentStatus.PROCESSING],
            PaymentStatus.FAILED,
            failure_code=refusal.code,
            failure_message=refusal.detail[:500] or refusal.code,
            hold_status=payment.hold_status,
            ledger_transaction=payment.ledger_transaction,
        )
        log.info("payments.failed", payment_id=payment.id, code=refusal.code)
        return None
    except UpstreamUnavailable as exc:
        return _wait(payment, exc)
    services.transition(
        payment.id,
        [PaymentStatus.PROCESSING],
        PaymentStatus.SETTLED,
        hold_status=HoldStatus.POSTED,
        ledger_transaction=payment.ledger_transaction,
        next_attempt_at=None,
    )
    return None


def hold_place(payment: Payment) -> dict[str, Any]:
    """Ask the ledger for the payment's hold; the request is the same on every attempt (a retry is a replay)."""
    return ledger().hold(
        reference=payment.id,
        amount=payment.amount,
        currency=payment.currency,
        source=payment.source_account,
        destination=payment.destination_account,
        expires_at=services.hold_expiry(payment),
        description=f"payment {payment.id}",
    )


def _hold_seen(payment: Payment, txn: dict[str, Any]) -> None:
    """Record the ledger transaction and its status on the payment (no status change, no event)."""
    status = {"pending": HoldStatus.PENDING, "posted": HoldStatus.POSTED, "voided": HoldStatus.VOIDED}.get(
        txn.get("status", ""), HoldStatus.PENDING
    )
    payment.ledger_transaction, payment.hold_status = txn["id"], status
    Payment.objects.filter(id=payment.id).update(
        ledger_transaction=txn["id"], hold_status=status, updated_at=timezone.now()
    )


def _wait(payment: Payment, exc: Exception) -> float | None:
    """The ledger is unavailable: count the attempt and say when to retry, or fail when they ran out."""
    attempts = payment.attempts + 1
    if attempts >= settings.PAYMENTS_MAX_ATTEMPTS:
        services.transition(
            payment.id,
            [PaymentStatus.PROCESSING],
            PaymentStatus.FAILED,
            failure_code="retries_exhausted",
            failure_message=f"The ledger stayed unavailable for {attempts} attempts: {exc}"[:500],
            attempts=attempts,
            next_attempt_at=None,
        )
        log.warning("payments.retries_exhausted", payment_id=payment.id, attempts=attempts)
        return None
    delay = backoff(attempts - 1)
    now = timezone.now()
    Payment.objects.filter(id=payment.id, status=PaymentStatus.PROCESSING).update(
        attempts=attempts, next_attempt_at=now + dt.timedelta(seconds=delay), updated_at=now
    )
    log.warning("payments.ledger_unavailable", payment_id=payment.id, attempt=attempts, retry_in=round(delay, 2))
    return delay


def _release_hold(payment: Payment) -> bool:
    """Void the hold of a payment that ended without settling; False if the ledger could not be reached."""
    try:
        txn = ledger().void(payment.ledger_transaction)
    except UpstreamUnavailable as exc:
        log.warning("payments.hold_release_waiting", payment_id=payment.id, error=str(exc))
        return False
    except LedgerRefused as refusal:
        # Not pending and not voided: it was posted. Money moved for a payment that did not settle —
        # reconciliation reports it; nothing here may undo a posting.
        log.error("payments.hold_release_refused", payment_id=payment.id, code=refusal.code)
        Payment.objects.filter(id=payment.id).update(hold_status=HoldStatus.POSTED, updated_at=timezone.now())
        return False
    _hold_seen(payment, txn)
    return True


def sweep(*, limit: int = 500) -> dict[str, int]:
    """Resume payments whose work was lost and release the holds of failed ones; return counts."""
    now = timezone.now()
    stale = now - dt.timedelta(seconds=settings.PAYMENTS_STALE_SECONDS)
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    lost = list(
        Payment.objects.filter(free, status__in=OPEN, updated_at__lt=stale)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=stale))
        .order_by("updated_at")
        .values_list("id", flat=True)[:limit]
    )
    holds = list(
        Payment.objects.filter(free, hold_status=HoldStatus.PENDING, updated_at__lt=stale)
        .exclude(status__in=OPEN)
        .values_list("id", flat=True)[:limit]
    )
    if lost:
        # Not again before two stale periods: a payment that only waits in a long queue is sent once more per
        # that time at most, not at every sweep (the duplicates are harmless, but they are work).
        Payment.objects.filter(id__in=lost).update(
            next_attempt_at=now + dt.timedelta(seconds=settings.PAYMENTS_STALE_SECONDS)
        )
    resumed = services.enqueue(lost) if lost else 0
    released = 0
    for payment_id in holds:
        if advance(payment_id).status != "missing":
            released += Payment.objects.filter(id=payment_id, hold_status=HoldStatus.VOIDED).count()
    if lost or holds:
        log.info("payments.swept", resumed=resumed, holds_released=released, holds_waiting=len(holds) - released)
    return {"resumed": resumed, "holds_released": released}
