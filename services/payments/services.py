"""Payments: creating, canceling, and moving a payment from one status to the next.

Every status change — a worker's batch (:func:`transition_many`) or a cancel (:func:`payment_cancel`) — is
one transaction that locks the payments, checks each is still in the status the caller expects (a
compare-and-set, so a cancel and a worker, or two workers, never both win), records the change in
``status_history``, and writes the audit event (``payments.payment.<status>``) of each to the outbox, and the
``payment.<status>`` domain event (topic ``events``, for the webhooks service) of each public status: created,
settled, failed, rejected, canceled (not the internal screening, review and processing).

A payment the risk service marked for review waits in ``review`` for an operator: :func:`payment_review_decide`
approves it (``review → processing``, then the ledger as usual: the drain is kicked) or rejects it (``review →
rejected``, ``risk_review_rejected``), writing besides the transition's events the decision's own audit event
(``payments.payment.review_approved`` / ``payments.payment.review_rejected``) with the actor — the person in the
admin, the machine client in the API — and the reason given.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_context, audit_event
from services.kit.background import BackgroundThread
from services.kit.context import request_id_var
from services.kit.db import Pipeline, WriteTransaction
from services.kit.db import execute as db_execute
from services.kit.logs import get_logger
from services.kit.metadata import metadata_check
from services.kit.outbox import isoformat, outbox_put_many
from services.kit.telemetry import trace_parent
from services.payments import idempotency, queries
from services.payments.bodies import payment_body
from services.payments.errors import (
    AccountNotFound,
    AmountTooLarge,
    CurrencyMismatch,
    InvalidAmount,
    InvalidMetadata,
    PaymentNotCancelable,
    PaymentNotFound,
    PaymentNotInReview,
    SameAccount,
    UnsupportedCurrency,
)
from services.payments.ledger import ledger
from services.payments.models import CANCELABLE, MAX_AMOUNT, PUBLIC_STATUSES, Payment, PaymentStatus

log = get_logger(__name__)

WORKER = {"type": "system", "id": "payments-worker", "display": "payments worker"}
# The outbox topic of the domain events (relayed to ``webhooks.ingest``: ``ATRIUM_OUTBOX_TOPICS``).
EVENTS_TOPIC = "events"
FAILURE_STATUSES = frozenset({PaymentStatus.REJECTED, PaymentStatus.FAILED})


def _check_amount(amount: Any) -> int:
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise InvalidAmount("amount must be a positive integer in the currency's minor units (at most 2^63-1).")
    return amount


def max_amount(currency: str) -> int:
    """The largest amount a payment in ``currency`` may be created with (``PAYMENTS_MAX_AMOUNT(S)``)."""
    return settings.PAYMENTS_MAX_AMOUNTS.get(currency, settings.PAYMENTS_MAX_AMOUNT)


def _check_amount_limit(amount: int, currency: str) -> None:
    limit = max_amount(currency)
    if amount > limit:
        raise AmountTooLarge(
            f"amount {amount} is above the largest payment allowed in {currency} ({limit} minor units).",
            extra={"max_amount": limit},
        )


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


def domain_event(payment: Payment, event_type: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``payment.<status>`` event the webhooks service turns into a message (``docs/webhooks-events.md``):
    the payment as the API returns it (``data``), the accounts it touches (``channels``: an endpoint may
    subscribe to one account's payments), and the request that caused it (``request_id``; ``task_id``: the job
    that wrote it, when a worker did)."""
    event: dict[str, Any] = {
        "type": event_type,
        "occurred_at": isoformat(payment.updated_at),
        "data": payment_body(payment),
        "channels": [payment.source_account, payment.destination_account],
        "request_id": context["request_id"] if context is not None else (payment.request_id or ""),
    }
    if context is not None and context.get("task_id"):
        event["task_id"] = context["task_id"]
    return event


def _events(
    payment: Payment, previous: str | None, context: dict[str, Any], *, own_request: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """The domain event and the audit event of the payment's current status, as outbox ``(topic, payload)``.
    ``own_request``: the worker moved it (in a batch): the events carry the request id the payment was created
    with, not the batch's, and the batch job's id beside it. The internal steps (``screening``, ``processing``)
    are audited but have no domain event: only :data:`PUBLIC_STATUSES` are published to the webhooks service."""
    if own_request and payment.request_id:
        context = {**context, "request_id": payment.request_id}
    status = str(payment.status)
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
    audit = audit_event(
        f"payments.payment.{status}",
        outcome="failure" if status in FAILURE_STATUSES else "success",
        object_type="payment",
        object_id=payment.id,
        changes={"status": [previous, status]},
        metadata=metadata,
        context=context,
    )
    if status not in PUBLIC_STATUSES:
        return [("audit", audit)]
    return [(EVENTS_TOPIC, domain_event(payment, f"payment.{status}", context)), ("audit", audit)]


def _record(payment: Payment, previous: str | None, *, actor: dict[str, str] | None) -> None:
    """The domain event and the audit event of the payment's current status (in the caller's transaction)."""
    outbox_put_many(_events(payment, previous, audit_context(actor=actor)))


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
    _check_amount_limit(amount, currency)
    metadata = metadata_check(metadata or {}, error=InvalidMetadata)
    _check_accounts(source_account, destination_account, currency)
    now = timezone.now()
    payment = Payment(
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
        trace_parent=trace_parent(),  # "" unless OpenTelemetry is on
        created_at=now,
        updated_at=now,
    )
    body = payment_body(payment)
    # One round trip for the whole write: BEGIN, the payment, its two events (and the saved response of its
    # idempotency key), COMMIT.
    with WriteTransaction() as tx:
        pipeline = Pipeline()
        tx.begin(pipeline)
        pipeline.add(
            queries.INSERT_SQL,
            [
                *(str(v) if isinstance(v, str) else v for v in (getattr(payment, n) for n in queries.INSERT_COLUMNS)),
                json.dumps(payment.metadata, separators=(",", ":"), ensure_ascii=False),
                json.dumps(payment.status_history, separators=(",", ":")),
            ],
        )
        outbox_put_many(_events(payment, None, audit_context()), pipeline=pipeline, tx=tx)
        saved = idempotency.finish_queue(pipeline, claim, status=201, body=body, payment_id=payment.id)
        if saved is None:
            tx.commit(pipeline)
            pipeline.run()
        else:
            pipeline.run()
            idempotency.finish_check(pipeline, saved)  # raises (rolling back) if the claim was taken over
        tx.on_commit(kick)
    log.info("payments.created", payment_id=payment.id, amount=amount, currency=currency)
    return payment, body


class _Kicker(BackgroundThread):
    """Wakes the payments workers after new work was committed: at most one ``payments.drain`` message per
    ``PAYMENTS_KICK_DELAY`` seconds from this process, however many payments it created meanwhile.

    One thread per process waits for kicks; when one comes it waits the delay, then sends unless a drain is
    running already. A kick that comes before the send is covered by it (the send follows the kick's commit,
    so the drain it starts claims after the payment was committed and cannot miss it); a kick after the send
    starts the next round. A broker outage is logged: the sweeper finds the payments.
    """

    def __init__(self) -> None:
        super().__init__(name="payments-kick")
        atexit.register(self._flush)

    def __call__(self) -> None:
        if settings.PAYMENTS_KICK_DELAY <= 0:
            drain_send()
            return
        self.start()  # (a forked child starts its own thread)
        self.wake.set()

    def run(self) -> None:
        from django.db import connection

        while True:
            if not self.wake.wait(timeout=60.0):
                connection.close()  # this thread's connection: not kept open while nothing happens
                continue
            if self.halt.is_set():
                connection.close()
                return
            time.sleep(settings.PAYMENTS_KICK_DELAY)
            self.wake.clear()
            if not self._drain_running():
                drain_send()

    def _flush(self) -> None:
        """At process exit (a recycled web worker), send the kick still waiting for its delay."""
        if self.is_alive() and self.wake.is_set() and not self.halt.is_set():
            drain_send()

    @staticmethod
    def _drain_running() -> bool:
        """A drain holding its slot claims at least once more after now, and so sees every payment committed
        before now: no message is needed (under load one always is running). If in doubt, False."""
        from django.db import connection

        try:
            return queries.drain_running()
        except Exception as exc:
            log.warning("payments.kick_check_failed", error=f"{type(exc).__name__}: {exc}")
            connection.close()
            return False


kick = _Kicker()


def drain_send(*, countdown: float | None = None) -> bool:
    """Send one ``payments.drain`` (the workers claim whatever is due); False if the broker refused."""
    from services.kit.celery_app import app

    try:
        app.send_task(
            "payments.drain",
            countdown=countdown,
            ignore_result=True,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
        )
    except Exception as exc:  # the rows are committed; the sweeper will find them
        log.warning("payments.kick_failed", error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def process_send(payment_id: str, *, countdown: float | None = None) -> bool:
    """Send ``payments.process`` for one payment (processed alone: it met an unexpected error in a batch);
    False if the broker refused (the sweeper sends it again)."""
    from services.kit.celery_app import app

    try:
        app.send_task(
            "payments.process",
            args=[payment_id],
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
        )
    except Exception as exc:
        log.warning("payments.process_send_failed", payment_id=payment_id, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def payment_park_raw(
    *,
    payment_id: str,
    failure_code: str,
    failure_message: str,
    processing_errors: int,
    next_attempt_at: None = None,
) -> bool:
    """Fail an open payment whose row the usual transition cannot handle (e.g. a column a DBA corrupted), with its
    audit and domain events built from the columns read back; False if it was not open."""
    now = timezone.now()
    with transaction.atomic():
        rows = db_execute(
            queries.PARK_SQL,
            {
                "code": failure_code,
                "message": failure_message,
                "errors": processing_errors,
                "now": now,
                "at": isoformat(now),
                "id": payment_id,
            },
        )
        if not rows:
            return False
        amount, currency, source, destination, description, metadata, txn, hold_status, history, created, rid = rows[0]
        # (Django's cursor hands jsonb back as text: decoded, so the event's data is the API's JSON, not strings)
        metadata, history = _json_value(metadata), _json_value(history)
        data = {
            "id": payment_id,
            "status": PaymentStatus.FAILED.value,
            "amount": amount,
            "currency": currency,
            "source_account": source,
            "destination_account": destination,
            "description": description,
            "metadata": metadata,
            "ledger_transaction": txn or None,
            "failure_code": failure_code,
            "failure_message": failure_message,
            "status_history": history,
            "created_at": isoformat(created),
            "updated_at": isoformat(now),
        }
        context = audit_context(actor=WORKER)
        audit = audit_event(
            "payments.payment.failed",
            request_id=rid,
            outcome="failure",
            object_type="payment",
            object_id=payment_id,
            changes={"status": [None, "failed"]},
            metadata={
                "amount": amount,
                "currency": currency,
                "source_account": source,
                "destination_account": destination,
                "ledger_transaction": txn,
                "hold_status": hold_status,
                "code": failure_code,
                "detail": failure_message,
                "repaired": True,
            },
            context=context,
        )
        event = {
            "type": "payment.failed",
            "occurred_at": isoformat(now),
            "data": data,
            "channels": [source, destination],
            "request_id": audit["request_id"],
        }
        if context.get("task_id"):
            event["task_id"] = context["task_id"]
        outbox_put_many([(EVENTS_TOPIC, event), ("audit", audit)])
    return True


def _json_value(value: Any) -> Any:
    """A jsonb column read through Django's cursor (text) as its JSON value; the text itself if not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


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


def transition_many(
    changes: dict[str, dict[str, Any]],
    expected: Iterable[str],
    to: str,
    *,
    actor: dict[str, str] | None = WORKER,
    known: dict[str, Payment] | None = None,
    owner: str | None = None,
) -> list[Payment]:
    """Move many payments from one of ``expected`` to ``to`` in one transaction: lock them (in id order), keep
    those still in an expected status, set each one's fields (``changes``: payment id → fields), write them
    with one UPDATE and their events with one INSERT. Return the payments moved (the others were moved by
    someone else meanwhile and are left as they are). Call inside ``transaction.atomic()`` to join a larger
    transaction (screening does).

    ``known`` are the payments as the caller loaded them (a worker holding their leases): only their status
    is read again under the lock, and one whose status changed since is left alone. With ``owner`` (the worker's
    lease, see :mod:`services.payments.processing`), a payment whose lease another worker has taken over since is
    left alone too: a worker that lost a lease never writes that payment.

    This is the worker's path: each payment's events carry the request id it was created with (the batch job's
    own id is kept beside it as ``task_id``), so that request id finds every step of its payment.
    """
    if not changes:
        return []
    expected = {str(s) for s in expected}
    with transaction.atomic(savepoint=False):
        if known is None:
            locked = Payment.objects.select_for_update().filter(id__in=list(changes), status__in=expected)
            if owner is not None:
                locked = locked.filter(lease_owner=owner)
            payments = list(locked.order_by("id"))
        else:
            rows = db_execute(queries.LOCK_SQL, [sorted(changes)])
            payments = [
                known[payment_id]
                for payment_id, status, lease_owner in rows
                if status in expected
                and str(known[payment_id].status) == status
                and (owner is None or lease_owner == owner)
            ]
        if not payments:
            return []
        now = timezone.now()
        step = {"status": to, "at": isoformat(now)}
        context = audit_context(actor=actor)
        events: list[tuple[str, dict[str, Any]]] = []
        for payment in payments:
            previous = str(payment.status)
            payment.status = to
            payment.status_history = [*payment.status_history, step]
            payment.updated_at = now
            for name, value in changes[payment.id].items():
                setattr(payment, name, value)
            events.extend(_events(payment, previous, context, own_request=True))
        queries.rows_write(payments)
        outbox_put_many(events)
    return payments


def payment_cancel(*, payment_id: str) -> Payment:
    """Cancel a payment still ``created``, ``screening`` or ``review``; later → ``payment_not_cancelable`` (409)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(id=payment_id).first()
        if payment is None:
            raise PaymentNotFound(f"No payment {payment_id}.")
        if payment.status not in CANCELABLE:
            raise PaymentNotCancelable(
                f"Payment {payment_id} is {payment.status}; only created, screening or review payments can be "
                "canceled.",
                extra={"payment_status": payment.status},
            )
        _apply(payment, PaymentStatus.CANCELED, {"lease_until": None, "next_attempt_at": None}, actor=None)
    log.info("payments.canceled", payment_id=payment_id)
    return payment


REVIEW_DECISIONS = {
    "approve": (PaymentStatus.PROCESSING, "review_approved"),
    "reject": (PaymentStatus.REJECTED, "review_rejected"),
}
REVIEW_REASON_MAX = 500


def payment_review_decide(*, payment_id: str, decision: str, reason: str = "") -> Payment:
    """An operator's decision on a payment in ``review``: ``approve`` → ``processing`` (the workers hold and settle
    it: the drain is kicked), ``reject`` → ``rejected`` with ``risk_review_rejected`` (the reason, if any, as its
    ``failure_message``). One transaction: the row locked, compare-and-set on ``review``, the transition's audit and
    domain events and the decision's audit event, all with the actor of the current request (audit_context).
    Not in review (already decided, canceled, never reviewed) → ``payment_not_in_review`` (409, with its status);
    unknown → ``payment_not_found``."""
    to, verb = REVIEW_DECISIONS[decision]
    reason = (reason or "").strip()[:REVIEW_REASON_MAX]
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(id=payment_id).first()
        if payment is None:
            raise PaymentNotFound(f"No payment {payment_id}.")
        if payment.status != PaymentStatus.REVIEW:
            raise PaymentNotInReview(
                f"Payment {payment_id} is {payment.status}, not waiting for review: only a payment in review can be "
                f"{'approved' if decision == 'approve' else 'rejected'}.",
                extra={"payment_status": payment.status},
            )
        fields: dict[str, Any] = {"next_attempt_at": None}
        if to == PaymentStatus.REJECTED:
            fields["failure_code"] = "risk_review_rejected"
            fields["failure_message"] = (
                f"Rejected in review: {reason}" if reason else "Rejected by an operator in review."
            )[:500]
        context = audit_context()
        decided = audit_event(
            f"payments.payment.{verb}",
            object_type="payment",
            object_id=payment.id,
            changes={"status": [PaymentStatus.REVIEW.value, to.value]},
            metadata={
                "reason": reason,
                "risk_decision": payment.risk_decision,
                "risk_score": payment.risk_score,
                "risk_assessment_id": payment.risk_assessment_id,
                "risk_reasons": list(payment.risk_reasons or []),
                "amount": payment.amount,
                "currency": payment.currency,
            },
            context=context,
        )
        _apply(payment, to, fields, actor=context["actor"])
        outbox_put_many([("audit", decided)])
        if to == PaymentStatus.PROCESSING:
            transaction.on_commit(kick)
    log.info(f"payments.{verb}", payment_id=payment_id)
    return payment


def hold_expiry(payment: Payment) -> dt.datetime:
    """When the ledger voids the payment's hold by itself if nobody posted or voided it (deterministic, so a
    retried hold request is the same request)."""
    from services.payments.ledger import HOLD_LIFETIME

    return payment.created_at + HOLD_LIFETIME
