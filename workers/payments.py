"""Payments tasks (queue ``payments``), run with ``DJANGO_SETTINGS_MODULE=services.payments.settings``."""

from __future__ import annotations

import json
from typing import Any

from services.kit.http import UpstreamUnavailable
from services.kit.logs import get_logger
from services.payments import idempotency
from services.payments.errors import PaymentParked, PaymentProcessingError
from services.payments.models import PUBLIC_STATUSES
from services.payments.processing import advance
from services.payments.processing import drain as drain_run
from services.payments.processing import sweep as sweep_run
from services.payments.reconcile import reconcile as reconcile_run
from workers.celery import app
from workers.diagnostics import noop_task, ping_task, probe_task
from workers.outbox import outbox_purge_task, outbox_relay_task

log = get_logger(__name__)

ping = ping_task("payments")
probe = probe_task("payments")
noop = noop_task("payments")
outbox_relay = outbox_relay_task("payments")
outbox_purge = outbox_purge_task("payments")


@app.task(name="payments.process", bind=True, acks_late=True, max_retries=None)
def process(self: Any, payment_id: str) -> dict[str, Any]:
    """Take one payment as far as it goes, alone; while the ledger is away, retry after the computed backoff.

    Drains hand it the payments that met an unexpected error in a batch. An unexpected error here is retried
    after a backoff (the retry's reason is the error); at ``PAYMENTS_PROCESSING_ATTEMPTS`` the payment is parked
    and the task fails with :class:`PaymentParked`, so the job dashboard's failures show it.

    Idempotent and safe to run concurrently or again after a worker was killed (see
    ``services.payments.processing``). Attempts and errors are counted on the payment, not here.
    """
    outcome = advance(payment_id)
    if outcome.parked:
        raise PaymentParked(payment_id, outcome.error)
    if outcome.retry_in is not None:
        reason = PaymentProcessingError(payment_id, outcome.error) if outcome.error else None
        raise self.retry(countdown=outcome.retry_in, exc=reason)
    return {"payment": payment_id, "status": outcome.status, "busy": outcome.busy}


@app.task(name="payments.drain", acks_late=True, ignore_result=True)
def drain() -> dict[str, Any]:
    """Claim and carry out due payments in batches until none is due (see ``services.payments.processing``).

    Sent by the payments web processes after creating payments (debounced), by drains that stopped with work
    left, and for the earliest retry of payments waiting for the ledger. Any number may be sent: at most
    ``PAYMENTS_DRAINERS`` work at once; the others return at once.
    """
    return drain_run()


@app.task(name="payments.sweep", housekeeping=True)
def sweep() -> dict[str, int]:
    """Resume payments whose work was lost; release the holds of payments that ended without settling."""
    return sweep_run()


@app.task(
    name="payments.reconcile",
    autoretry_for=(UpstreamUnavailable,),
    retry_backoff=2,
    retry_backoff_max=10,
    retry_jitter=True,
    max_retries=12,
)
def reconcile() -> dict[str, Any]:
    """Check payments against the ledger both ways; mismatches become audit events and a metric.

    While the ledger cannot be reached (or this process's circuit breaker for it is still open after an
    outage) nothing is recorded and the task is tried again with backoff, about two minutes in all."""
    return reconcile_run().as_dict()


@app.task(name="payments.idempotency_purge", housekeeping=True)
def idempotency_purge() -> int:
    """Delete idempotency keys past their 24 h."""
    return idempotency.purge()


@app.task(name="payments.domain_event", acks_late=True, ignore_result=True)
def domain_event(events: list[Any]) -> int:
    """Retired: the payments' domain events are relayed to ``webhooks.ingest`` now (``ATRIUM_OUTBOX_TOPICS``).

    Only messages a relay published here before that switch still arrive; they are forwarded to the webhooks
    service as one ``webhooks.ingest`` task, in the contract's shape (the public types only, with their
    ``channels``), so an upgrade loses none. A malformed item is forwarded as it is: the ingest isolates it.
    Returns how many were forwarded.
    """
    forwarded = [item for item in (_upgraded(item) for item in events) if item is not None]
    if forwarded:
        app.send_task("webhooks.ingest", args=[forwarded])
    log.info("payments.domain_event_forwarded", received=len(events), forwarded=len(forwarded))
    return len(forwarded)


def _upgraded(item: Any) -> Any:
    """A relayed ``[id, service, seq, payload]`` of before the switch in today's shape; None for an internal step
    (``payment.screening``, ``payment.processing``: never published now)."""
    try:
        payload = json.loads(item[3])
        data = payload["data"]
    except Exception:
        return item
    if payload.get("type") not in {f"payment.{status}" for status in PUBLIC_STATUSES}:
        return None
    payload.setdefault("channels", [data.get("source_account"), data.get("destination_account")])
    payload.setdefault("request_id", "")
    return [*item[:3], json.dumps(payload, separators=(",", ":"), ensure_ascii=False)]
