"""Payments: creating, canceling, and moving a payment from one status to the next.

Every status change is :func:`transition`: one transaction that locks the payment, checks it is still in
the status the caller expects (a compare-and-set, so a cancel and a worker, or two workers, never both
win), records the change in ``status_history``, and writes the ``payment.<status>`` domain event (topic
``events``) and the audit event (``payments.payment.<status>``) to the outbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_record
from services.kit.context import request_id_var
from services.kit.logs import get_logger
from services.kit.outbox import isoformat, outbox_put
from services.payments import idempotency
from services.payments.api.serializers import payment_body
from services.payments.errors import (
    AccountNotFound,
    CurrencyMismatch,
    InvalidAmount,
    PaymentNotCancelable,
    PaymentNotFound,
    SameAccount,
    UnsupportedCurrency,
)
from services.payments.ledger import ledger
from services.payments.models import CANCELABLE, MAX_AMOUNT, Payment, PaymentStatus

log = get_logger(__name__)

WORKER = {"type": "system", "id": "payments-worker", "display": "payments worker"}
FAILURE_STATUSES = frozenset({PaymentStatus.REJECTED, PaymentStatus.FAILED})


def _check_amount(amount: Any) -> int:
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise InvalidAmount("amount must be a positive integer in the currency's minor units (at most 2^63-1).")
    return amount


def _check_currency(currency: Any) -> str:
    if not isinstance(currency, str) or currency not in settings.PAYMENTS_CURRENCIES:
        supported = ", ".join(settings.PAYMENTS_CURRENCIES)
        raise UnsupportedCurrency(f"currency must be one of {supported}.")
    return currency


def _check_accounts(source: str, destination: str, currency: str) -> None:
    """Both accounts exist in the ledger, in the payment's currency (the ledger is asked; 503 if away)."""
    if source == destination:
        raise SameAccount("source_account and destination_account must differ.")
    gateway = ledger()
    for field, account_id in (("source_account", source), ("destination_account", destination)):
        account = gateway.account(account_id)
        if account is None:
            raise AccountNotFound(f"{field} {account_id} is not a ledger account.", extra={"field": field})
        if account.get("currency") != currency:
            raise CurrencyMismatch(
                f"{field} {account_id} holds {account.get('currency')}, the payment is in {currency}.",
                extra={"field": field},
            )


def domain_event(payment: Payment, event_type: str) -> dict[str, Any]:
    """The ``payment.<status>`` event: what a subscriber (webhooks) needs without calling back."""
    return {
        "type": event_type,
        "occurred_at": isoformat(payment.updated_at),
        "data": payment_body(payment),
    }


def _record(payment: Payment, previous: str | None, *, actor: dict[str, str] | None) -> None:
    """The domain event and the audit event of the payment's current status (in the caller's transaction)."""
    status = payment.status
    outbox_put("events", domain_event(payment, f"payment.{status}"))
    metadata: dict[str, Any] = {
        "amount": payment.amount,
        "currency": payment.currency,
        "source_account": payment.source_account,
        "destination_account": payment.destination_account,
    }
    if payment.ledger_transaction:
        metadata["ledger_transaction"] = payment.ledger_transaction
    if payment.failure_code:
        metadata["code"] = payment.failure_code
        metadata["detail"] = payment.failure_message
    audit_record(
        f"payments.payment.{status}",
        outcome="failure" if status in FAILURE_STATUSES else "success",
        object_type="payment",
        object_id=payment.id,
        changes={"status": [previous, status]},
        metadata=metadata,
        actor=actor,
    )


def payment_create(
    *,
    client_id: str,
    amount: Any,
    currency: Any,
    source_account: str,
    destination_account: str,
    description: str = "",
    metadata: dict[str, Any] | None = None,
    claim: idempotency.Claim | None = None,
) -> tuple[Payment, dict[str, Any]]:
    """Validate, create the payment (status ``created``) and queue its processing; return it and its body.

    With ``claim``, the response is saved with the key in the same transaction.
    """
    amount = _check_amount(amount)
    currency = _check_currency(currency)
    _check_accounts(source_account, destination_account, currency)
    now = timezone.now()
    with transaction.atomic():
        payment = Payment.objects.create(
            client_id=client_id,
            amount=amount,
            currency=currency,
            source_account=source_account,
            destination_account=destination_account,
            description=description,
            metadata=metadata or {},
            status=PaymentStatus.CREATED,
            status_history=[{"status": PaymentStatus.CREATED, "at": isoformat(now)}],
            request_id=request_id_var.get() or "",
            created_at=now,
            updated_at=now,
        )
        _record(payment, None, actor=None)
        body = payment_body(payment)
        if claim is not None:
            idempotency.finish(claim, status=201, body=body, payment_id=payment.id)
        transaction.on_commit(lambda: enqueue([payment.id]))
    log.info("payments.created", payment_id=payment.id, amount=amount, currency=currency)
    return payment, body


def enqueue(payment_ids: Iterable[str], *, countdown: float | None = None) -> int:
    """Send ``payments.process`` for each payment; a broker outage is logged (the sweeper resumes them)."""
    from workers.celery import app

    sent = 0
    for payment_id in payment_ids:
        try:
            app.send_task(
                "payments.process",
                args=[payment_id],
                countdown=countdown,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
            )
            sent += 1
        except Exception as exc:  # the row is committed; the sweeper will find it
            log.warning("payments.enqueue_failed", payment_id=payment_id, error=f"{type(exc).__name__}: {exc}")
            break
    return sent


def transition(
    payment_id: str,
    expected: Iterable[str],
    to: str,
    *,
    actor: dict[str, str] | None = WORKER,
    **fields: Any,
) -> Payment | None:
    """Move the payment from one of ``expected`` to ``to`` (setting ``fields``) with its events; return it,
    or None if it is no longer in an expected status (someone else moved it: nothing is changed)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(id=payment_id).first()
        if payment is None or payment.status not in set(expected):
            return None
        _apply(payment, to, fields, actor=actor)
        return payment


def _apply(payment: Payment, to: str, fields: dict[str, Any], *, actor: dict[str, str] | None = WORKER) -> None:
    """Set the new status (and ``fields``), save, and write its events (caller holds the row lock)."""
    previous = payment.status
    now = timezone.now()
    payment.status = to
    payment.status_history = [*payment.status_history, {"status": to, "at": isoformat(now)}]
    payment.updated_at = now
    for name, value in fields.items():
        setattr(payment, name, value)
    payment.save()
    _record(payment, previous, actor=actor)


def payment_get(payment_id: str) -> Payment:
    payment = Payment.objects.filter(id=payment_id).first()
    if payment is None:
        raise PaymentNotFound(f"No payment {payment_id}.")
    return payment


def payment_cancel(*, payment_id: str) -> Payment:
    """Cancel a payment still ``created`` or ``screening``; later → ``payment_not_cancelable`` (409)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(id=payment_id).first()
        if payment is None:
            raise PaymentNotFound(f"No payment {payment_id}.")
        if payment.status not in CANCELABLE:
            raise PaymentNotCancelable(
                f"Payment {payment_id} is {payment.status}; only created or screening payments can be canceled.",
                extra={"payment_status": payment.status},
            )
        _apply(payment, PaymentStatus.CANCELED, {"lease_until": None, "next_attempt_at": None}, actor=None)
    log.info("payments.canceled", payment_id=payment_id)
    return payment


def hold_expiry(payment: Payment) -> dt.datetime:
    """When the ledger voids the payment's hold by itself if nobody posted or voided it (deterministic, so a
    retried hold request is the same request)."""
    from services.payments.ledger import HOLD_LIFETIME

    return payment.created_at + HOLD_LIFETIME
