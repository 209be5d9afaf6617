"""Payments carried out in batches against the live ledger: one claim, mixed outcomes, screening in order,
drains that share the work, the debounced kick, and the event body built by hand."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg
import psycopg.conninfo
import pytest
import redis
from django.db import connection
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.payments import processing, queries, services
from services.payments.api.serializers import PaymentSerializer
from services.payments.bodies import payment_body
from services.payments.models import BlockedAccount, HoldStatus, Payment, VelocityLimit
from tests.payments.conftest import LedgerAdmin
from tests.payments.test_processing import create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env")]


def test_one_claim_carries_a_mixed_batch_each_payment_to_its_own_end(ledger_admin: LedgerAdmin):
    rich, poor, blocked = ledger_admin.funded(100_000), ledger_admin.funded(10), ledger_admin.funded(100_000)
    destination = ledger_admin.account()
    BlockedAccount.objects.create(account=blocked)
    good = [create(rich, destination, 100 + i) for i in range(5)]
    refused = create(poor, destination, 500)  # the ledger says insufficient_funds
    rejected = create(blocked, destination, 100)  # screening says account_blocked
    canceled = create(rich, destination, 100)
    services.payment_cancel(payment_id=canceled.id)

    ids = processing.claim(limit=50)

    assert set(ids) == {p.id for p in [*good, refused, rejected]}  # the canceled one has nothing left to do
    result = processing.run(ids)
    assert result.statuses == {
        **{p.id: "settled" for p in good},
        refused.id: "failed",
        rejected.id: "rejected",
    }
    assert Payment.objects.get(id=refused.id).failure_code == "insufficient_funds"
    assert Payment.objects.get(id=rejected.id).failure_code == "account_blocked"
    assert Payment.objects.get(id=canceled.id).status == "canceled"
    assert ledger_admin.balance(destination)["balance"] == sum(100 + i for i in range(5))
    for payment in good:
        (txn,) = ledger_admin.transaction_by_reference(payment.id)
        stored = Payment.objects.get(id=payment.id)
        assert (txn["status"], txn["id"], stored.hold_status) == ("posted", stored.ledger_transaction, "posted")
        assert [h["status"] for h in stored.status_history] == ["created", "screening", "processing", "settled"]
        assert stored.lease_until is None
        # each payment's own events, one per status, in the order it went through them
        actions = [
            e.payload["action"]
            for e in OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
            if e.payload["object"]["id"] == payment.id
        ]
        assert actions == [f"payments.payment.{s}" for s in ("created", "screening", "processing", "settled")]
        settled = OutboxEvent.objects.get(topic="events", payload__type="payment.settled", payload__data__id=payment.id)
        assert settled.payload["data"] == payment_body(stored)
    # nothing left to claim; running the same ids again changes nothing and calls the ledger for nothing new
    assert processing.claim(limit=50) == []
    again = processing.run([p.id for p in good])
    assert again.changed == 0
    assert all(len(ledger_admin.transaction_by_reference(p.id)) == 1 for p in good)


def test_screening_a_batch_counts_the_payments_before_each_one_as_if_one_after_the_other(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(1_000_000), ledger_admin.account()
    VelocityLimit.objects.create(name="three a day", window_hours=24, max_count=3)
    VelocityLimit.objects.create(name="eur volume", currency="EUR", window_hours=24, max_amount=1_000)
    first = create(source, destination, 300)
    processing.advance(first.id)  # already through: counts for the batch after it
    batch = [create(source, destination, amount) for amount in (300, 300, 300, 50)]

    processing.run(processing.claim(limit=50))

    by_id = {p.id: (p.status, p.failure_code) for p in Payment.objects.filter(id__in=[b.id for b in batch])}
    # rules by name: "eur volume" (sum ≤ 1,000) before "three a day" (count ≤ 3)
    assert by_id[batch[0].id] == ("settled", "")  # 2nd payment, 600
    assert by_id[batch[1].id] == ("settled", "")  # 3rd, 900
    assert by_id[batch[2].id] == ("rejected", "velocity_limit_exceeded")  # would be 1,200
    assert "eur volume" in Payment.objects.get(id=batch[2].id).failure_message
    # the rejected one does not count: 950 is under the sum limit, but this would be the 4th payment
    assert by_id[batch[3].id] == ("rejected", "velocity_limit_exceeded")
    assert "three a day" in Payment.objects.get(id=batch[3].id).failure_message


def test_claims_skip_leased_payments_and_retries_not_yet_due(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    free, leased, waiting, due = (create(source, destination, 10) for _ in range(4))
    now = timezone.now()
    Payment.objects.filter(id=leased.id).update(lease_until=now + dt.timedelta(minutes=1))
    Payment.objects.filter(id=waiting.id).update(next_attempt_at=now + dt.timedelta(minutes=1))
    Payment.objects.filter(id=due.id).update(next_attempt_at=now - dt.timedelta(seconds=1))

    assert sorted(processing.claim(limit=10)) == sorted([free.id, due.id])
    assert processing.claim(limit=10) == []  # now leased by the first claim
    # an explicit claim ignores the retry time, never a lease
    assert processing.claim(ids=[waiting.id, leased.id]) == [waiting.id]


def test_two_claims_at_once_never_share_a_payment(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    for _ in range(40):
        create(source, destination, 10)
    claimed: list[list[str]] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            barrier.wait()
            claimed.append(processing.claim(limit=15))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 40


def test_a_drain_settles_everything_due_and_a_drain_without_a_slot_returns_at_once(ledger_admin: LedgerAdmin, settings):
    source, destination = ledger_admin.funded(100_000), ledger_admin.account()
    settings.PAYMENTS_BATCH = 7
    settings.PAYMENTS_DRAINERS = 1
    payments = [create(source, destination, 10) for _ in range(20)]

    # the only slot is taken (another worker's drain): this one leaves the work to it
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, 0)", [queries.DRAIN_LOCK])
    holder = threading.Thread(target=lambda: (processing.drain(), connection.close()))
    try:
        holder.start()
        holder.join()
        assert Payment.objects.filter(status="created").count() == 20
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, 0)", [queries.DRAIN_LOCK])

    counts = processing.drain()

    assert counts["busy"] is False
    assert counts["batches"] == 3  # 7 + 7 + 6
    assert set(Payment.objects.filter(id__in=[p.id for p in payments]).values_list("status", flat=True)) == {"settled"}
    assert ledger_admin.balance(destination)["balance"] == 200


def test_a_failed_payment_whose_hold_could_not_be_voided_waits_and_is_voided_later(ledger_admin: LedgerAdmin, settings):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 400)
    Payment.objects.filter(id=payment.id).update(status="processing")
    payment.refresh_from_db()
    hold = processing.hold_place(payment)
    Payment.objects.filter(id=payment.id).update(status="failed", hold_status="pending", ledger_transaction=hold["id"])
    settings.PAYMENTS_RETRY_BASE_SECONDS = 30
    live = settings.LEDGER_URL
    from devtools.infra import free_port
    from services.payments.ledger import ledger_reset

    settings.LEDGER_URL = f"http://127.0.0.1:{free_port()}"
    ledger_reset()
    try:
        result = processing.run(processing.claim(limit=10))
        assert payment.id in result.waits
        stored = Payment.objects.get(id=payment.id)
        assert (stored.hold_status, stored.attempts) == ("pending", 1)
        assert stored.next_attempt_at > timezone.now()
        assert processing.claim(limit=10) == []  # not before its retry is due
    finally:
        settings.LEDGER_URL = live
        ledger_reset()
    Payment.objects.filter(id=payment.id).update(next_attempt_at=timezone.now())
    processing.run(processing.claim(limit=10))
    assert Payment.objects.get(id=payment.id).hold_status == HoldStatus.VOIDED
    assert ledger_admin.balance(source)["available"] == 10_000


def test_many_payments_created_at_once_wake_the_workers_with_one_message(settings, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    settings.PAYMENTS_KICK_DELAY = 0.3
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = broker.llen("payments")

    for _ in range(10):
        create(source, destination, 10)
    time.sleep(0.6)
    assert broker.llen("payments") - before == 1
    # a payment after the kick went out gets a kick of its own
    create(source, destination, 10)
    time.sleep(0.6)
    assert broker.llen("payments") - before == 2


def test_no_message_is_sent_while_a_drain_is_running_it_claims_once_more_anyway(settings, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    settings.PAYMENTS_KICK_DELAY = 0.2
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = broker.llen("payments")
    slot_holder = psycopg.connect(_database_url(), autocommit=True)  # another worker's drain, mid-run
    try:
        slot_holder.execute("SELECT pg_advisory_lock(%s, 1)", [queries.DRAIN_LOCK])
        assert queries.drain_running()

        payment = create(source, destination, 10)
        time.sleep(0.5)
        assert broker.llen("payments") == before
        # that drain lets go of its slot (explicitly: a closed connection's backend drops its locks only as it
        # exits, a moment after the close returns)
        slot_holder.execute("SELECT pg_advisory_unlock(%s, 1)", [queries.DRAIN_LOCK])
    finally:
        slot_holder.close()
    assert not queries.drain_running()
    # what that drain does after letting go of its slot: one more claim, which finds the payment
    assert processing.claim() == [payment.id]


def _database_url() -> str:
    params = connection.get_connection_params()
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if k not in ("cursor_factory", "context")})


def test_the_event_body_is_what_the_api_serializer_gives(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment, _ = services.payment_create(
        client_id="cli_merchant",
        amount=1234,
        currency="EUR",
        source_account=source,
        destination_account=destination,
        description="rent é",
        metadata={"order": {"id": 7, "lines": [1, 2]}, "note": None},
    )
    processing.advance(payment.id)
    payment.refresh_from_db()
    Payment.objects.filter(id=payment.id).update(created_at=payment.created_at.replace(microsecond=0))
    for stored in (Payment.objects.get(id=payment.id), payment):
        assert payment_body(stored) == dict(PaymentSerializer(stored).data)


def test_a_batch_gives_each_payment_s_events_the_request_id_it_was_created_with_and_the_job_beside_it(
    ledger_admin: LedgerAdmin, monkeypatch: pytest.MonkeyPatch
):
    from services.kit import carry
    from services.kit.context import request_id_var, task_id_var

    source, destination = ledger_admin.funded(100_000), ledger_admin.account()
    rich, blocked = source, ledger_admin.funded(100_000)
    BlockedAccount.objects.create(account=blocked)
    payments = {}
    for rid, account in (("acc-rid-1", rich), ("acc-rid-2", rich), ("acc-rid-3", blocked)):
        token = request_id_var.set(rid)
        try:
            payments[rid] = create(account, destination, 100)
        finally:
            request_id_var.reset(token)
    tracked: list[dict] = []
    monkeypatch.setattr(carry.tracker, "emit", tracked.append)

    # The drain, as its task runs it: its own request id and task id in the context.
    tokens = request_id_var.set("req_drain_own"), task_id_var.set("task-drain-42")
    try:
        result = processing.run(processing.claim(limit=50))
    finally:
        request_id_var.reset(tokens[0])
        task_id_var.reset(tokens[1])

    assert result.statuses == {
        payments["acc-rid-1"].id: "settled",
        payments["acc-rid-2"].id: "settled",
        payments["acc-rid-3"].id: "rejected",
    }
    for rid, payment in payments.items():
        audit = [
            e.payload
            for e in OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
            if e.payload["object"]["id"] == payment.id
        ]
        assert [e["request_id"] for e in audit] == [rid] * len(audit)  # created, screening, ... each its own
        assert [e["metadata"].get("task_id") for e in audit] == [None] + ["task-drain-42"] * (len(audit) - 1)
        domain = [e.payload for e in OutboxEvent.objects.filter(topic="events", payload__data__id=payment.id)]
        assert {e["request_id"] for e in domain} == {rid}
    reported = [e for e in tracked if e.get("state") == "carried"]  # (the tracker also gets tasks sent meanwhile)
    assert sorted(r for e in reported for r in e["request_ids"]) == ["acc-rid-1", "acc-rid-2", "acc-rid-3"]
    objects = {o for e in reported for o in e["object_ids"]}
    assert {p.id for p in payments.values()} <= objects
    assert {Payment.objects.get(id=payments["acc-rid-1"].id).ledger_transaction} <= objects
    assert {e["task_id"] for e in reported} == {"task-drain-42"}
