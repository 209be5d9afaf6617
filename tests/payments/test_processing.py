"""Carrying payments out against the live ledger: settling, ledger refusals, outages, crashes at every step,
the sweeper, and reconciliation. ``advance`` is what the ``payments.process`` task runs."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from django.utils import timezone

from devtools.infra import free_port
from services.kit.models import OutboxEvent
from services.payments import services
from services.payments.ledger import ledger, ledger_reset
from services.payments.models import HoldStatus, Payment
from services.payments.processing import advance, hold_place, sweep
from services.payments.reconcile import STATE_KEY, ReconciliationCollector, reconcile
from tests.payments.conftest import LedgerAdmin

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env")]


def create(source: str, destination: str, amount: int = 1500, currency: str = "EUR") -> Payment:
    payment, _ = services.payment_create(
        client_id="cli_merchant",
        amount=amount,
        currency=currency,
        source_account=source,
        destination_account=destination,
    )
    return payment


def statuses(payment_id: str) -> list[str]:
    return [h["status"] for h in Payment.objects.get(id=payment_id).status_history]


def events(payment_id: str, topic: str) -> list[str]:
    rows = OutboxEvent.objects.filter(topic=topic).order_by("created_at", "id")
    if topic == "events":
        return [r.payload["type"] for r in rows if r.payload["data"]["id"] == payment_id]
    return [r.payload["action"] for r in rows if r.payload["object"]["id"] == payment_id]


def test_a_payment_settles_the_money_moves_and_every_step_is_an_event(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 1500)

    outcome = advance(payment.id)

    assert outcome.status == "settled"
    payment.refresh_from_db()
    assert statuses(payment.id) == ["created", "screening", "processing", "settled"]
    assert payment.hold_status == HoldStatus.POSTED
    assert payment.lease_until is None
    (txn,) = ledger_admin.transaction_by_reference(payment.id)
    assert (txn["id"], txn["status"]) == (payment.ledger_transaction, "posted")
    assert ledger_admin.balance(source)["balance"] == 8_500
    assert ledger_admin.balance(destination)["balance"] == 1_500
    # the internal steps are audited, never published as domain events (the webhooks catalog has none)
    assert events(payment.id, "events") == ["payment.created", "payment.settled"]
    assert events(payment.id, "audit") == [
        "payments.payment.created",
        "payments.payment.screening",
        "payments.payment.processing",
        "payments.payment.settled",
    ]
    settled = OutboxEvent.objects.filter(topic="audit", payload__action="payments.payment.settled").get()
    assert settled.payload["actor"]["type"] == "system"
    assert settled.payload["changes"] == {"status": ["processing", "settled"]}
    assert settled.payload["metadata"]["ledger_transaction"] == txn["id"]
    # running it again changes nothing
    assert advance(payment.id).status == "settled"
    assert len(ledger_admin.transaction_by_reference(payment.id)) == 1


def test_a_ledger_refusal_fails_the_payment_with_the_ledgers_code_and_moves_nothing(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(100), ledger_admin.account()
    payment = create(source, destination, 1500)

    assert advance(payment.id).status == "failed"

    payment.refresh_from_db()
    assert payment.failure_code == "insufficient_funds"
    assert payment.failure_message
    assert statuses(payment.id) == ["created", "screening", "processing", "failed"]
    assert ledger_admin.transaction_by_reference(payment.id) == []
    assert ledger_admin.balance(source)["balance"] == 100
    failed = OutboxEvent.objects.filter(topic="audit", payload__action="payments.payment.failed").get()
    assert failed.payload["outcome"] == "failure"
    assert failed.payload["metadata"]["code"] == "insufficient_funds"


def test_a_hold_voided_before_posting_fails_the_payment_and_nothing_is_posted(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 1500)
    Payment.objects.filter(id=payment.id).update(status="processing")
    payment.refresh_from_db()
    # the hold exists (a run died after creating it) and was then voided at the ledger
    hold = hold_place(payment)
    ledger_admin.http.post(f"/api/v1/transactions/{hold['id']}/void")

    assert advance(payment.id).status == "failed"

    payment.refresh_from_db()
    assert payment.failure_code == "hold_voided"
    assert payment.hold_status == HoldStatus.VOIDED
    assert ledger_admin.balance(source)["balance"] == 10_000


def test_a_run_that_died_after_each_ledger_call_is_finished_without_a_second_posting(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    gateway = ledger()
    for died_after in ("hold", "post"):
        payment = create(source, destination, 1000)
        Payment.objects.filter(id=payment.id).update(status="processing")
        payment.refresh_from_db()
        hold = hold_place(payment)
        if died_after == "post":
            gateway.post(hold["id"])

        assert advance(payment.id).status == "settled", died_after

        (txn,) = ledger_admin.transaction_by_reference(payment.id)
        assert txn["id"] == hold["id"]
        assert txn["status"] == "posted"
    assert ledger_admin.balance(source)["balance"] == 8_000


def test_while_the_ledger_is_down_the_payment_waits_in_processing_and_settles_when_it_returns(
    ledger_admin: LedgerAdmin, settings
):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 700)
    live = settings.LEDGER_URL
    settings.LEDGER_URL = f"http://127.0.0.1:{free_port()}"
    ledger_reset()

    first = advance(payment.id)
    second = advance(payment.id)

    assert first.status == second.status == "processing"
    assert first.retry_in is not None
    assert second.retry_in is not None
    payment.refresh_from_db()
    assert payment.attempts == 2
    assert payment.next_attempt_at > timezone.now()
    assert payment.lease_until is None
    settings.LEDGER_URL = live
    ledger_reset()
    assert advance(payment.id).status == "settled"
    assert ledger_admin.balance(destination)["balance"] == 700


def test_when_the_attempts_run_out_the_payment_fails(ledger_admin: LedgerAdmin, settings):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 700)
    settings.LEDGER_URL = f"http://127.0.0.1:{free_port()}"
    settings.PAYMENTS_MAX_ATTEMPTS = 2
    ledger_reset()

    assert advance(payment.id).retry_in is not None
    assert advance(payment.id).status == "failed"

    payment.refresh_from_db()
    assert payment.failure_code == "retries_exhausted"
    assert payment.attempts == 2


def test_a_leased_payment_is_left_to_its_worker_until_the_lease_expires(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination)
    Payment.objects.filter(id=payment.id).update(lease_until=timezone.now() + dt.timedelta(seconds=60))

    busy = advance(payment.id)
    assert (busy.status, busy.busy) == ("created", True)

    Payment.objects.filter(id=payment.id).update(lease_until=timezone.now() - dt.timedelta(seconds=1))
    assert advance(payment.id).status == "settled"


def test_many_runs_at_once_post_once(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 250)
    results: list[str] = []

    def run() -> None:
        from django.db import connection

        try:
            results.append(advance(payment.id).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    advance(payment.id)

    assert Payment.objects.get(id=payment.id).status == "settled"
    assert len(ledger_admin.transaction_by_reference(payment.id)) == 1
    assert ledger_admin.balance(source)["balance"] == 9_750
    assert events(payment.id, "events").count("payment.settled") == 1


def test_the_sweeper_resumes_lost_work_and_releases_holds_of_failed_payments(ledger_admin: LedgerAdmin, settings):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    old = timezone.now() - dt.timedelta(minutes=5)
    # lost: created long ago, no worker on it
    lost = create(source, destination, 100)
    Payment.objects.filter(id=lost.id).update(updated_at=old)
    # not lost: waiting for a retry that is due later, or leased
    waiting = create(source, destination, 100)
    Payment.objects.filter(id=waiting.id).update(
        status="processing", updated_at=old, next_attempt_at=timezone.now() + dt.timedelta(minutes=1)
    )
    leased = create(source, destination, 100)
    Payment.objects.filter(id=leased.id).update(updated_at=old, lease_until=timezone.now() + dt.timedelta(minutes=1))
    # failed with its hold still pending (the ledger was away when it failed)
    failed = create(source, destination, 400)
    Payment.objects.filter(id=failed.id).update(status="processing")
    failed.refresh_from_db()
    hold = hold_place(failed)
    Payment.objects.filter(id=failed.id).update(
        status="failed", hold_status="pending", ledger_transaction=hold["id"], updated_at=old
    )
    assert ledger_admin.balance(source)["available"] == 9_600

    counts = sweep()

    # the sweeper carries the lost payment out itself and voids the hold; the others are left alone
    assert counts == {"resumed": 1, "holds_released": 1}
    assert Payment.objects.get(id=lost.id).status == "settled"
    assert Payment.objects.get(id=waiting.id).status == "processing"
    assert Payment.objects.get(id=leased.id).status == "created"
    assert sweep() == {"resumed": 0, "holds_released": 0}
    assert Payment.objects.get(id=failed.id).hold_status == HoldStatus.VOIDED
    assert ledger_admin.balance(source)["available"] == 10_000 - 100
    (voided,) = ledger_admin.transaction_by_reference(failed.id)
    assert voided["status"] == "voided"


def test_reconciliation_finds_nothing_when_books_agree_and_each_kind_of_mismatch_otherwise(
    ledger_admin: LedgerAdmin, settings
):
    import json

    import redis

    since = timezone.now()  # (the live ledger also holds the other tests' payments)
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    good = [create(source, destination, 100) for _ in range(3)]
    for payment in good:
        advance(payment.id)
    later = timezone.now() + dt.timedelta(minutes=2)

    clean = reconcile(since=since, now=later)
    assert clean.mismatches == []
    assert clean.payments == 3
    assert clean.ledger_transactions == 3

    # a settled payment the ledger never posted; a posted transfer for an unknown payment; a posting for a
    # payment that failed; an amount that differs
    ghost = create(source, destination, 50)
    Payment.objects.filter(id=ghost.id).update(status="settled", updated_at=timezone.now() - dt.timedelta(hours=1))
    orphan = f"pay_{uuid.uuid4().hex[:26]}"
    ledger_admin.http.post(
        "/api/v1/transactions",
        json={
            "reference": orphan,
            "postings": [
                {"account": source, "direction": "debit", "amount": 5},
                {"account": destination, "direction": "credit", "amount": 5},
            ],
        },
    )
    Payment.objects.filter(id=good[0].id).update(status="failed")
    Payment.objects.filter(id=good[1].id).update(amount=101)

    report = reconcile(since=since, now=later)

    kinds = sorted((m.kind, m.payment) for m in report.mismatches)
    assert kinds == sorted(
        [
            ("settled_without_posting", ghost.id),
            ("posting_without_payment", orphan),
            ("posting_without_settlement", good[0].id),
            ("amount_mismatch", good[1].id),
        ]
    )
    audited = OutboxEvent.objects.filter(topic="audit", payload__action="payments.reconciliation.mismatch")
    assert sorted(e.payload["metadata"]["code"] for e in audited) == sorted(k for k, _ in kinds)
    assert all(e.payload["outcome"] == "failure" for e in audited)
    summary = OutboxEvent.objects.filter(topic="audit", payload__action="payments.reconciliation.completed")
    assert [e.payload["outcome"] for e in summary.order_by("created_at")] == ["success", "failure"]
    # and the metric Prometheus scrapes
    state = json.loads(redis.Redis.from_url(settings.REDIS_URL).get(STATE_KEY))
    assert state["mismatches"]["amount_mismatch"] == 1
    (family, _) = list(ReconciliationCollector().collect())
    assert {s.labels["kind"]: s.value for s in family.samples}["posting_without_payment"] == 1


def test_reconciliation_is_tried_again_while_the_ledger_cannot_be_reached(settings):
    from celery.exceptions import Retry

    from workers.payments import reconcile as reconcile_task

    settings.LEDGER_URL = f"http://127.0.0.1:{free_port()}"
    ledger_reset()

    # a worker runs it: the unavailable ledger means "again later", not a failed reconciliation
    with pytest.raises(Retry):
        reconcile_task.apply(throw=True)
    assert not OutboxEvent.objects.filter(payload__action="payments.reconciliation.completed").exists()
