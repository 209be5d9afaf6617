"""The ledger admin's pages read through the ledger's selectors, and render the ledger's rows."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from services.ledger.admin import AccountAdmin, PostingAdmin, TransactionAdmin
from services.ledger.models import Account, Posting, Transaction
from tests.ledger.conftest import LedgerAPI

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


def test_the_changelists_and_a_transaction_with_its_postings_render(admin_client: Client, api: LedgerAPI, funded):
    # given a funded customer (one transaction, two postings)
    _world, customer = funded
    txn = Transaction.objects.get(reference="fund-customer")

    # when the admin lists accounts, transactions and postings, and opens the transaction
    pages = {name: admin_client.get(f"/admin/ledger/{name}/") for name in ("account", "transaction", "posting")}
    detail = admin_client.get(f"/admin/ledger/transaction/{txn.id}/change/")

    # then every page shows the rows, and the transaction its two postings
    assert {name: r.status_code for name, r in pages.items()} == {"account": 200, "transaction": 200, "posting": 200}
    assert customer["id"] in pages["account"].content.decode()
    assert txn.id in pages["transaction"].content.decode()
    assert pages["posting"].content.decode().count(txn.id) >= 2
    assert detail.status_code == 200
    assert detail.content.decode().count(customer["id"]) >= 1


@pytest.mark.parametrize(
    ("admin_class", "model", "path"),
    [
        (AccountAdmin, Account, "account"),
        (TransactionAdmin, Transaction, "transaction"),
        (PostingAdmin, Posting, "posting"),
    ],
)
def test_each_changelist_shows_what_its_selector_returns(
    admin_client: Client, api: LedgerAPI, funded, monkeypatch: pytest.MonkeyPatch, admin_class, model, path
):
    # given a selector that returns nothing (the rows exist in the database)
    assert model.objects.exists()
    monkeypatch.setattr(admin_class, "selector", lambda: model.objects.none())

    # when the changelist is opened
    response = admin_client.get(f"/admin/ledger/{path}/")

    # then it lists no row: the page read through the selector, not the model's manager
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
