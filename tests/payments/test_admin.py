"""The payments admin's pages read through the payments selectors."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from services.payments.admin import (
    BlockedAccountAdmin,
    CurrencyLimitAdmin,
    IdempotencyKeyAdmin,
    PaymentAdmin,
    VelocityLimitAdmin,
)
from services.payments.models import BlockedAccount, CurrencyLimit, IdempotencyKey, Payment, VelocityLimit

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough password"


@pytest.fixture
def admin_client(settings) -> Client:
    settings.ATRIUM_OUTBOX_RELAY = "off"
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    client = Client()
    response = client.post("/admin/login/", {"username": "ops", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302, response.content.decode()[:2000]
    return client


@pytest.fixture
def rows() -> Payment:
    """One row of each model the admin shows."""
    payment = Payment.objects.create(
        client_id="cli_admin", amount=100, currency="EUR", source_account="acc_a", destination_account="acc_b"
    )
    soon = timezone.now() + dt.timedelta(hours=1)
    IdempotencyKey.objects.create(
        key="admin-key",
        client_id="cli_admin",
        request_hash="0" * 64,
        locked_until=soon,
        expires_at=soon,
        payment=payment,
    )
    CurrencyLimit.objects.create(currency="EUR", max_amount=1_000_000)
    VelocityLimit.objects.create(name="daily", max_count=100)
    BlockedAccount.objects.create(account="acc_blocked")
    return payment


ADMINS = [
    (PaymentAdmin, Payment, "payment"),
    (IdempotencyKeyAdmin, IdempotencyKey, "idempotencykey"),
    (CurrencyLimitAdmin, CurrencyLimit, "currencylimit"),
    (VelocityLimitAdmin, VelocityLimit, "velocitylimit"),
    (BlockedAccountAdmin, BlockedAccount, "blockedaccount"),
]


@pytest.mark.parametrize(("admin_class", "model", "path"), ADMINS)
def test_each_changelist_lists_the_rows(admin_client: Client, rows: Payment, admin_class, model, path):
    # when the changelist is opened
    response = admin_client.get(f"/admin/payments/{path}/")

    # then it lists the one row
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


@pytest.mark.parametrize(("admin_class", "model", "path"), ADMINS)
def test_each_changelist_shows_what_its_selector_returns(
    admin_client: Client, rows: Payment, monkeypatch: pytest.MonkeyPatch, admin_class, model, path
):
    # given a selector that returns nothing (the row exists in the database)
    monkeypatch.setattr(admin_class, "selector", lambda: model.objects.none())

    # when the changelist is opened
    response = admin_client.get(f"/admin/payments/{path}/")

    # then it lists no row: the page read through the selector, not the model's manager
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


def test_the_payment_page_opens(admin_client: Client, rows: Payment):
    assert admin_client.get(f"/admin/payments/payment/{rows.id}/change/").status_code == 200
