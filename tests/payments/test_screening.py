"""Screening: each rule rejects with its code, and only what it should."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.payments.models import BlockedAccount, CurrencyLimit, Payment, VelocityLimit
from services.payments.processing import advance
from tests.payments.conftest import LedgerAdmin
from tests.payments.test_processing import create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env")]


@pytest.fixture
def pair(ledger_admin: LedgerAdmin) -> tuple[str, str]:
    return ledger_admin.funded(1_000_000), ledger_admin.account()


def run(source: str, destination: str, amount: int, currency: str = "EUR") -> Payment:
    payment = create(source, destination, amount, currency)
    advance(payment.id)
    payment.refresh_from_db()
    return payment


def test_a_blocked_source_or_destination_is_rejected_before_the_ledger_is_touched(pair, ledger_admin: LedgerAdmin):
    source, destination = pair
    BlockedAccount.objects.create(account=source, reason="sanctions hit")

    payment = run(source, destination, 100)

    assert (payment.status, payment.failure_code) == ("rejected", "account_blocked")
    assert "source account" in payment.failure_message
    assert payment.ledger_transaction == ""
    assert ledger_admin.transaction_by_reference(payment.id) == []
    assert [h["status"] for h in payment.status_history] == ["created", "screening", "rejected"]
    rejected = OutboxEvent.objects.get(topic="audit", payload__action="payments.payment.rejected")
    assert rejected.payload["outcome"] == "failure"
    assert rejected.payload["metadata"]["code"] == "account_blocked"
    assert OutboxEvent.objects.filter(topic="events", payload__type="payment.rejected").count() == 1

    BlockedAccount.objects.all().delete()
    BlockedAccount.objects.create(account=destination)
    assert run(source, destination, 100).failure_code == "account_blocked"
    BlockedAccount.objects.all().delete()
    assert run(source, destination, 100).status == "settled"


def test_the_currency_limit_caps_one_payment_in_its_currency_only(pair, ledger_admin: LedgerAdmin):
    source, destination = pair
    CurrencyLimit.objects.create(currency="EUR", max_amount=5_000)
    CurrencyLimit.objects.create(currency="USD", max_amount=10)

    over = run(source, destination, 5_001)
    at = run(source, destination, 5_000)

    assert (over.status, over.failure_code) == ("rejected", "amount_limit_exceeded")
    assert at.status == "settled"
    CurrencyLimit.objects.filter(currency="EUR").update(enabled=False)
    assert run(source, destination, 9_000).status == "settled"


def test_velocity_by_count_counts_what_passed_screening_in_the_window(pair):
    source, destination = pair
    VelocityLimit.objects.create(name="3 a day", max_count=3)

    results = [run(source, destination, 10) for _ in range(4)]

    assert [p.status for p in results] == ["settled", "settled", "settled", "rejected"]
    assert results[3].failure_code == "velocity_limit_exceeded"
    # rejected payments do not count, older ones fall out of the window
    Payment.objects.filter(id=results[0].id).update(created_at=timezone.now() - dt.timedelta(hours=25))
    assert run(source, destination, 10).status == "settled"
    assert run(source, destination, 10).status == "rejected"
    # another source account has its own count
    other = create(destination, source, 5)
    assert advance(other.id).status in ("settled", "failed")  # screening passed (funds are another matter)


def test_velocity_by_amount_includes_this_payment_and_only_its_currency(pair):
    source, destination = pair
    VelocityLimit.objects.create(name="EUR 1000 a day", currency="EUR", max_amount=1_000)

    assert run(source, destination, 600).status == "settled"
    refused = run(source, destination, 500)
    assert (refused.status, refused.failure_code) == ("rejected", "velocity_limit_exceeded")
    assert "1100" in refused.failure_message
    assert run(source, destination, 400).status == "settled"  # exactly 1000
    assert run(source, destination, 1).status == "rejected"
    VelocityLimit.objects.update(enabled=False)
    assert run(source, destination, 1).status == "settled"


def test_rules_apply_in_order_blocked_first(pair):
    source, destination = pair
    BlockedAccount.objects.create(account=source)
    CurrencyLimit.objects.create(currency="EUR", max_amount=1)
    assert run(source, destination, 100).failure_code == "account_blocked"
