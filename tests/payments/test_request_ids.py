"""The ledger transaction of a payment, and the ledger's audit events of it, carry the request id the payment was
created with — also when the payments drain books many requests' payments in one batch call (issue #17)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from services.kit.context import request_id_var
from services.kit.models import OutboxEvent
from services.payments import processing
from services.payments.ledger import Ledger
from services.payments.models import HoldStatus, Payment
from tests.harness import AtriumProcess
from tests.payments.conftest import LedgerAdmin
from tests.payments.test_processing import create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env")]

DRAIN = "req_drain_own"  # the drain task's own request id


@contextmanager
def request(request_id: str | None) -> Iterator[None]:
    """Run under ``request_id`` as the current request id (a web request's, or a task's)."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def created_under(request_id: str | None, source: str, destination: str, amount: int) -> Payment:
    with request(request_id):
        payment = create(source, destination, amount)
    assert payment.request_id == (request_id or "")
    return payment


def ledger_audit(live_ledger: AtriumProcess, transaction_id: str) -> list[tuple[str, str, str]]:
    """``(action, outcome, request_id)`` of the live ledger's audit events about ``transaction_id``, oldest first."""
    table = OutboxEvent._meta.db_table
    with psycopg.connect(live_ledger.env["LEDGER_DATABASE_URL"]) as conn:
        rows = conn.execute(
            f"SELECT payload FROM {table} WHERE topic = 'audit' AND payload->'object'->>'id' = %s "
            "ORDER BY created_at, id",
            [transaction_id],
        ).fetchall()
    return [(p["action"], p["outcome"], p["request_id"]) for (p,) in rows]


def test_a_drain_books_each_payment_under_the_request_id_it_was_created_with(
    ledger_admin: LedgerAdmin, live_ledger: AtriumProcess
):
    # given payments created by three requests, and one without a request id (made outside any request)
    source, destination = ledger_admin.funded(100_000), ledger_admin.account()
    payments = [created_under(rid, source, destination, 100) for rid in ("req-pay-1", "req-pay-2", "req_3:x.y")]
    bare = created_under(None, source, destination, 100)

    # when one drain (with its own request id) holds and posts them all in batch calls
    with request(DRAIN):
        counts = processing.drain()

    # then each ledger transaction stores its payment's request id; the bare one the drain's call's
    assert counts["settled"] == 4
    for payment in [*payments, bare]:
        (txn,) = ledger_admin.transaction_by_reference(payment.id)
        expected = payment.request_id or DRAIN
        assert (txn["status"], txn["request_id"]) == ("posted", expected)
        # and the ledger's audit events of it (created, then posted) carry the same id
        assert ledger_audit(live_ledger, txn["id"]) == [
            ("ledger.transaction.created", "success", expected),
            ("ledger.transaction.posted", "success", expected),
        ]
        assert Payment.objects.get(id=payment.id).hold_status == HoldStatus.POSTED


def test_a_released_hold_is_voided_under_its_payments_request_id(ledger_admin: LedgerAdmin, live_ledger: AtriumProcess):
    # given a payment that failed with a pending hold (placed in a call of its own)
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = created_under("req-release", source, destination, 400)
    Payment.objects.filter(id=payment.id).update(status="processing")
    payment.refresh_from_db()
    with request(DRAIN):
        hold = processing.hold_place(payment)
    Payment.objects.filter(id=payment.id).update(status="failed", hold_status="pending", ledger_transaction=hold["id"])

    # when a drain releases it
    with request(DRAIN):
        processing.run(processing.claim(limit=10))

    # then the single hold was created, and the batch void made, for the payment's request
    assert Payment.objects.get(id=payment.id).hold_status == HoldStatus.VOIDED
    assert hold["request_id"] == "req-release"
    assert ledger_audit(live_ledger, hold["id"]) == [
        ("ledger.transaction.created", "success", "req-release"),
        ("ledger.transaction.voided", "success", "req-release"),
    ]
    assert ledger_admin.balance(source)["available"] == 10_000


@pytest.mark.parametrize(("request_id", "sent"), [("req-7", "req-7"), ("", None), ("not a request id", None)])
def test_a_hold_body_carries_the_payments_request_id_only_when_there_is_a_valid_one(request_id, sent):
    body = Ledger.hold_body(
        reference="pay_1",
        amount=100,
        currency="EUR",
        source="acc_a",
        destination="acc_b",
        expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        request_id=request_id,
    )

    assert body.get("request_id") == sent
    assert ("request_id" in body) is (sent is not None)


def test_settle_many_sends_object_items_for_payments_with_a_request_id_and_plain_ids_otherwise(
    ledger_admin: LedgerAdmin, live_ledger: AtriumProcess
):
    # given three holds
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    gateway = Ledger()
    bodies = [
        Ledger.hold_body(
            reference=f"direct-{n}-{source}",
            amount=10,
            currency="EUR",
            source=source,
            destination=destination,
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        )
        for n in range(3)
    ]
    with request(DRAIN):
        ids = [item["id"] for item in gateway.holds(bodies)]

        # when they are posted in one call, two with a request id and one without
        results = gateway.settle_many(ids, post=True, request_ids=["req-s0", "", "req-s2"])

    # then each is posted, its event under its own request id, else the call's
    assert [r["status"] for r in results] == ["posted"] * 3
    posted = [[e for e in ledger_audit(live_ledger, i) if e[0] == "ledger.transaction.posted"] for i in ids]
    assert posted == [
        [("ledger.transaction.posted", "success", "req-s0")],
        [("ledger.transaction.posted", "success", DRAIN)],
        [("ledger.transaction.posted", "success", "req-s2")],
    ]
    with pytest.raises(ValueError, match="one entry per transaction id"):
        gateway.settle_many(ids, post=True, request_ids=["req-s0"])
