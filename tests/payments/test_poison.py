"""One payment never stops the others: poisoned items in a batch against the live ledger.

Each kind of poison is a different way one item can break a batch: the ledger refuses the item's arithmetic
(an account total past 2^63-1), the ledger (here: a proxy in front of it) refuses the whole call or fails with a
500 or a malformed answer because of one item, and a row our own code cannot handle (a column a DBA corrupted).
In every case the others settle in the same run, and the poisoned one fails alone: with the ledger's code when
the ledger refused it, else — after ``PAYMENTS_PROCESSING_ATTEMPTS`` unexpected errors, processed alone — parked
as ``failed`` with ``processing_error``, its hold voided, audited and counted.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import redis

from services.kit.models import OutboxEvent
from services.payments import metrics, processing
from services.payments.models import HoldStatus, Payment
from tests.payments.conftest import LedgerAdmin
from tests.payments.test_processing import create
from tests.proxy import LedgerProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env", "counters_cleared")]

MAX = 2**63 - 1


def counter(settings, name: str) -> int:
    return int(redis.Redis.from_url(settings.REDIS_URL).hget(metrics.KEY, name) or 0)


def nearly_full(ledger_admin: LedgerAdmin) -> str:
    """An account whose posted credits are 10 short of 2^63-1 (moved in from an account allowed to go negative)."""
    world = ledger_admin.account(allow_negative=True)
    full = ledger_admin.account()
    response = ledger_admin.http.post(
        "/api/v1/transactions",
        json={
            "reference": f"fill-{uuid.uuid4().hex}",
            "postings": [
                {"account": world, "direction": "debit", "amount": MAX - 10},
                {"account": full, "direction": "credit", "amount": MAX - 10},
            ],
        },
    )
    assert response.status_code == 201, response.text
    return full


def audit_actions(payment_id: str) -> list[str]:
    rows = OutboxEvent.objects.filter(topic="audit", payload__object__id=payment_id).order_by("created_at", "id")
    return [r.payload["action"] for r in rows]


def park(payment_id: str, settings) -> processing.Outcome:
    """Run ``payments.process``'s work until the payment is parked (bounded by the setting)."""
    outcome = processing.Outcome("")
    for _ in range(settings.PAYMENTS_PROCESSING_ATTEMPTS):
        outcome = processing.advance(payment_id)
        if outcome.parked:
            break
    return outcome


def test_an_item_the_ledger_refuses_at_posting_fails_alone_with_the_ledgers_code(ledger_admin: LedgerAdmin):
    # given a batch where one payment would carry its destination's total past 2^63-1 when posted
    source, destination, full = ledger_admin.funded(1_000_000), ledger_admin.account(), nearly_full(ledger_admin)
    good = [create(source, destination, 100 + i) for i in range(6)]
    poisoned = create(source, full, 500)

    # when one drain-sized run carries them
    result = processing.run(processing.claim(limit=50))

    # then the others settled, and the poisoned one failed with the ledger's code, its hold voided
    assert {p.id: result.statuses[p.id] for p in good} == {p.id: "settled" for p in good}
    stored = Payment.objects.get(id=poisoned.id)
    assert (stored.status, stored.failure_code, stored.hold_status) == ("failed", "invalid_amount", HoldStatus.VOIDED)
    (hold,) = ledger_admin.transaction_by_reference(poisoned.id)
    assert hold["status"] == "voided"
    assert ledger_admin.balance(full)["credits_pending"] == 0
    assert ledger_admin.balance(source)["available"] == 1_000_000 - sum(100 + i for i in range(6))
    assert result.suspects == {}


def test_a_whole_call_refused_because_of_one_item_is_split_until_that_item_fails_alone(
    ledger_admin: LedgerAdmin, proxy: LedgerProxy
):
    # given a ledger that refuses any hold batch naming two poisoned payments (not an item: the whole call)
    source, destination = ledger_admin.funded(1_000_000), ledger_admin.account()
    payments = [create(source, destination, 100) for _ in range(10)]
    poisoned = {payments[3].id, payments[8].id}
    proxy.refuse_batch_with(poisoned, code="reference_quarantined")

    # when the batch runs
    result = processing.run(processing.claim(limit=50))

    # then the batch was split until each refused payment was alone: it failed with the ledger's code; the eight
    # others settled in the same run
    for payment in payments:
        stored = Payment.objects.get(id=payment.id)
        if payment.id in poisoned:
            assert (stored.status, stored.failure_code) == ("failed", "reference_quarantined")
            assert stored.hold_status == HoldStatus.NONE
        else:
            assert stored.status == "settled", (stored.status, stored.failure_code)
    assert result.suspects == {}
    assert all(status == 422 for _, status in proxy.answered)


@pytest.mark.parametrize("poison", ["fail_posting_of", "garble_posting_of"])
def test_an_item_that_makes_the_ledger_fail_is_isolated_retried_alone_then_parked_with_its_hold_voided(
    ledger_admin: LedgerAdmin, proxy: LedgerProxy, settings, poison: str
):
    # given a batch where posting one payment's hold makes the ledger answer 500, or answer garbage
    source, destination = ledger_admin.funded(1_000_000), ledger_admin.account()
    payments = [create(source, destination, 200) for _ in range(8)]
    poisoned = payments[5]
    getattr(proxy, poison)({poisoned.id})

    # when a drain-sized run carries them
    result = processing.run(processing.claim(limit=50))

    # then every other payment settled in this run; the poisoned one was split out, counted once, and handed to
    # payments.process (drains skip it from now on)
    assert sorted(p.id for p in payments if result.statuses[p.id] == "settled") == sorted(
        p.id for p in payments if p is not poisoned
    )
    assert list(result.suspects) == [poisoned.id]
    suspect = Payment.objects.get(id=poisoned.id)
    # (the ledger failed on its posting: its hold is pending, and kept on the payment)
    assert (suspect.status, suspect.processing_errors, suspect.hold_status) == ("processing", 1, "pending")
    assert suspect.next_attempt_at is not None
    Payment.objects.filter(id=poisoned.id).update(next_attempt_at=None)
    assert processing.claim(limit=50) == []

    # when payments.process tries it alone until the limit
    outcome = park(poisoned.id, settings)

    # then it is parked: failed with processing_error after the allowed attempts, its hold voided, audited, counted
    assert outcome.parked
    stored = Payment.objects.get(id=poisoned.id)
    assert (stored.status, stored.failure_code) == ("failed", "processing_error")
    assert stored.processing_errors == settings.PAYMENTS_PROCESSING_ATTEMPTS
    assert stored.hold_status == HoldStatus.VOIDED
    assert "LedgerItemFailed" in stored.failure_message
    (hold,) = ledger_admin.transaction_by_reference(poisoned.id)
    assert hold["status"] == "voided"
    assert audit_actions(poisoned.id)[-1] == "payments.payment.failed"
    failed_event = OutboxEvent.objects.get(topic="audit", payload__action="payments.payment.failed")
    assert failed_event.payload["metadata"]["code"] == "processing_error"
    assert counter(settings, "parked") == 1
    assert counter(settings, "processing_errors") == settings.PAYMENTS_PROCESSING_ATTEMPTS
    assert ledger_admin.balance(source)["available"] == 1_000_000 - 7 * 200


def test_a_row_our_own_code_cannot_handle_is_parked_through_a_repair_path(ledger_admin: LedgerAdmin, settings):
    # given a batch where one payment's row was corrupted by hand (its history is not a list)
    source, destination = ledger_admin.funded(1_000_000), ledger_admin.account()
    payments = [create(source, destination, 300) for _ in range(5)]
    corrupted = payments[2]
    Payment.objects.filter(id=corrupted.id).update(status_history=5)

    # when a run carries them, and payments.process tries the poisoned one alone
    result = processing.run(processing.claim(limit=50))
    outcome = park(corrupted.id, settings)

    # then the others settled; the corrupted one was parked, its history repaired, its events written anyway
    assert [result.statuses[p.id] for p in payments if p is not corrupted] == ["settled"] * 4
    assert outcome.parked
    stored = Payment.objects.get(id=corrupted.id)
    assert (stored.status, stored.failure_code) == ("failed", "processing_error")
    assert [h["status"] for h in stored.status_history] == ["failed"]
    failed = OutboxEvent.objects.get(topic="audit", payload__action="payments.payment.failed")
    assert failed.payload["metadata"]["repaired"] is True
    assert OutboxEvent.objects.filter(topic="events", payload__type="payment.failed").count() == 1
    assert ledger_admin.transaction_by_reference(corrupted.id) == []  # it never reached the ledger


def queued(broker: redis.Redis, task: str) -> list[list[str]]:
    """The args of every ``task`` message waiting in the broker's ``payments`` queue (kombu's Redis list)."""
    out = []
    for raw in broker.lrange("payments", 0, -1):
        message = json.loads(raw)
        if message["headers"].get("task") == task:
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            out.append(args)
    return out


def test_the_sweeper_hands_a_suspect_whose_message_was_lost_back_to_payments_process(
    ledger_admin: LedgerAdmin, settings
):
    # given a payment that met an unexpected error and whose payments.process message was lost long ago
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 100)
    Payment.objects.filter(id=payment.id).update(processing_errors=1, updated_at="2000-01-01T00:00:00Z")
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("payments")

    # when the sweeper runs
    processing.sweep()

    # then it did not run it in a batch: it sent it to payments.process again, and left its lease free
    assert queued(broker, "payments.process") == [[payment.id]]
    stored = Payment.objects.get(id=payment.id)
    assert (stored.status, stored.lease_until) == ("created", None)


def test_reconciliation_voids_the_holds_of_payments_that_ended_without_settling(ledger_admin: LedgerAdmin):
    import datetime as dt

    from django.utils import timezone

    from services.payments.reconcile import reconcile

    # given two failed payments whose holds are still pending in the ledger (their release was lost)
    since = timezone.now()
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    left = []
    for _ in range(2):
        payment = create(source, destination, 700)
        body = processing.hold_body(payment)
        (item,) = processing.ledger().holds([body])
        Payment.objects.filter(id=payment.id).update(
            status="failed",
            failure_code="insufficient_funds",
            ledger_transaction=item["id"],
            hold_status="pending",
            next_attempt_at=timezone.now() + dt.timedelta(days=7),
            updated_at=timezone.now() - dt.timedelta(hours=1),
        )
        left.append(payment)
    assert ledger_admin.balance(source)["available"] == 10_000 - 1_400

    # when reconciliation runs
    report = reconcile(since=since, now=timezone.now() + dt.timedelta(minutes=2))

    # then it reported them and voided them, each release audited, the money available again
    assert sorted(m.payment for m in report.mismatches if m.kind == "hold_not_released") == sorted(p.id for p in left)
    assert report.holds_voided == 2
    assert ledger_admin.balance(source)["available"] == 10_000
    for payment in left:
        assert Payment.objects.get(id=payment.id).hold_status == HoldStatus.VOIDED
        (hold,) = ledger_admin.transaction_by_reference(payment.id)
        assert hold["status"] == "voided"
        assert "payments.reconciliation.hold_voided" in audit_actions(payment.id)
    again = reconcile(since=since, now=timezone.now() + dt.timedelta(minutes=2))
    assert again.holds_voided == 0
    assert [m for m in again.mismatches if m.kind == "hold_not_released"] == []


def test_a_ledger_failing_on_every_item_is_an_outage_to_wait_out_not_a_reason_to_park_anything(
    ledger_admin: LedgerAdmin, proxy: LedgerProxy, settings
):
    # given a ledger that fails (500) on the posting of every payment of a batch
    source, destination = ledger_admin.funded(1_000_000), ledger_admin.account()
    payments = [create(source, destination, 100) for _ in range(6)]
    proxy.fail_posting_of({p.id for p in payments})

    # when the batch runs
    result = processing.run(processing.claim(limit=50))

    # then nobody is suspected or parked: the batch waits for the ledger as for an outage
    assert result.suspects == {}
    assert set(result.waits) == {p.id for p in payments}
    stored = Payment.objects.filter(id__in=[p.id for p in payments])
    assert {(p.status, p.processing_errors, p.attempts) for p in stored} == {("processing", 0, 1)}
    assert counter(settings, "processing_errors") == 0

    # and once the ledger stops failing, they settle (its 500s never opened the circuit breaker)
    proxy.rules.clear()
    assert processing.ledger().client.breaker.state == "closed"
    Payment.objects.filter(id__in=[p.id for p in payments]).update(next_attempt_at=None)
    processing.run(processing.claim(limit=50))
    assert {p.status for p in Payment.objects.filter(id__in=[p.id for p in payments])} == {"settled"}
