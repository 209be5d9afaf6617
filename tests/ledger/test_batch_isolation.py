"""The ledger's batch paths isolate their items: a refusal or an unexpected error in one item fails that item
alone, never the batch and never the items after it."""

from __future__ import annotations

import pytest

from services.kit.models import OutboxEvent
from services.ledger.errors import BatchRejected
from services.ledger.models import Account
from services.ledger.services import accounts, settlement, transactions
from services.ledger.services.transactions import PostingInput, TransactionInput
from tests.ledger.conftest import LedgerAPI
from tests.ledger.test_settle_batch import hold, settle

pytestmark = pytest.mark.django_db

MAX = 2**63 - 1


def transfer(reference: str, source: str, destination: str, amount: int, **fields) -> TransactionInput:
    return TransactionInput(
        reference=reference,
        postings=[PostingInput(source, "debit", amount), PostingInput(destination, "credit", amount)],
        **fields,
    )


def test_posting_that_would_carry_a_total_past_the_largest_integer_is_that_items_refusal(api: LedgerAPI, funded):
    # given holds into a shop, and one into an account whose posted credits are 10 short of 2^63-1
    _world, customer = funded
    shop, full, void = api.account(name="shop"), api.account(name="full"), api.account(allow_negative=True)
    assert api.transfer(void["id"], full["id"], MAX - 10, reference="fill").status_code == 201
    first = hold(api, customer["id"], shop["id"], 100, "first")
    poisoned = hold(api, customer["id"], full["id"], 50, "poisoned")
    last = hold(api, customer["id"], shop["id"], 100, "last")

    # when they are posted in one call
    response = settle(api, "post", [first, poisoned, last])

    # then the call succeeds item by item: the poisoned one is refused with its own code, the others posted
    assert response.status_code == 200, response.content
    assert [(r["status"], r.get("code")) for r in response.json()["results"]] == [
        ("posted", None),
        ("error", "invalid_amount"),
        ("posted", None),
    ]
    # and the refused item changed no balance: its hold is still pending, and can be voided
    assert api.get(f"accounts/{full['id']}/balance").json()["credits_posted"] == MAX - 10
    assert api.get(f"accounts/{full['id']}/balance").json()["credits_pending"] == 50
    assert api.get(f"accounts/{shop['id']}/balance").json()["balance"] == 200
    assert settle(api, "void", [poisoned]).json()["results"][0]["status"] == "voided"
    assert api.get(f"accounts/{customer['id']}/balance").json()["available"] == 800


def test_an_item_postgresql_refuses_fails_alone_with_processing_error_and_the_rest_is_created(funded):
    # given a batch (through the service layer, which the parser's checks do not guard) where two items carry a
    # character PostgreSQL cannot store: a bug's or a corrupted caller's data, not a business refusal
    world, customer = funded
    items = [
        transfer(f"ok-{n}", world["id"], customer["id"], 10 + n, description="bad\x00" if n in (2, 5) else "")
        for n in range(8)
    ]

    # when the batch is created
    results = transactions.transactions_create(items=items)

    # then the two poisoned items failed alone, the six others were created, each result at its own index
    assert [(r.index, r.status, r.error.code if r.error else None) for r in results] == [
        (n, "error", "processing_error") if n in (2, 5) else (n, "created", None) for n in range(8)
    ]
    expected = 1000 + sum(10 + n for n in range(8) if n not in (2, 5))
    assert Account.objects.get(pk=customer["id"]).balance == expected
    # and each failure is audited as the item's refusal
    refused = OutboxEvent.objects.filter(topic="audit", payload__outcome="failure")
    assert sorted(e.payload["metadata"]["reference"] for e in refused) == ["ok-2", "ok-5"]
    assert {e.payload["metadata"]["code"] for e in refused} == {"processing_error"}


def test_an_atomic_batch_meeting_an_unexpected_error_is_rejected_naming_the_poisoned_item(funded):
    # given an atomic batch whose fourth item cannot be stored, and whose last depends on the first's balance
    world, customer = funded
    shop = accounts.account_create(name="shop", currency="EUR", normal_balance="credit")
    items = [
        transfer("a-0", world["id"], customer["id"], 500),
        transfer("a-1", customer["id"], shop.id, 100),
        transfer("a-2", customer["id"], shop.id, 100),
        transfer("a-3", customer["id"], shop.id, 100, metadata={"note": "nul\x00"}),
        transfer("a-4", customer["id"], shop.id, 1_200),
    ]

    # when it is created all or nothing
    with pytest.raises(BatchRejected) as rejected:
        transactions.transactions_create(items=items, atomic=True)

    # then nothing was applied, and the rejection names the item that raised
    assert rejected.value.extra["results"] == [
        {
            "index": 3,
            "status": "error",
            "code": "processing_error",
            "detail": rejected.value.extra["results"][0]["detail"],
        }
    ]
    assert Account.objects.get(pk=customer["id"]).balance == 1000
    assert Account.objects.get(pk=shop.id).balance == 0


def test_a_settle_batch_with_an_id_postgresql_refuses_settles_the_others(api: LedgerAPI, funded):
    # given holds and, among their ids, two that PostgreSQL cannot even compare (a NUL in the text)
    _world, customer = funded
    shop = api.account(name="shop")
    ids = [hold(api, customer["id"], shop["id"], 100, f"h-{n}") for n in range(4)]
    batch = [ids[0], "txn_\x00bad", ids[1], ids[2], "\x00", ids[3]]

    # when they are posted in one call of the service
    results = settlement.transactions_settle(transaction_ids=batch, post=True)

    # then the two poisoned ids failed alone (audited, the NUL escaped) and every hold was posted
    assert [(r.index, r.status, r.error.code if r.error else None) for r in results] == [
        (0, "posted", None),
        (1, "error", "processing_error"),
        (2, "posted", None),
        (3, "posted", None),
        (4, "error", "processing_error"),
        (5, "posted", None),
    ]
    assert api.get(f"accounts/{shop['id']}/balance").json()["balance"] == 400
    refused = OutboxEvent.objects.filter(topic="audit", payload__outcome="failure")
    assert sorted(e.payload["object"]["id"] for e in refused) == ["\\u0000", "txn_\\u0000bad"]
