"""Every transaction, and each of its audit events, keeps the id of the request that caused it — also in a batch
of many requests' items (issue #17): an item's own ``request_id`` wins over the call's ``X-Request-ID``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from services.kit.models import OutboxEvent
from services.ledger.models import Transaction
from services.ledger.services import settlement, transactions
from tests.ledger.conftest import LedgerAPI
from tests.ledger.test_batch_isolation import transfer
from tests.ledger.test_settle_batch import hold

pytestmark = pytest.mark.django_db

CALL = "call-7f3a"  # the batch call's own X-Request-ID (the payments drain's, say)


def post(api: LedgerAPI, path: str, body: Any, request_id: str = CALL) -> Any:
    """A POST with the call's ``X-Request-ID``."""
    return api.client.post(
        f"/api/v1/{path}",
        json.dumps(body),
        content_type="application/json",
        HTTP_X_REQUEST_ID=request_id,
        **api.headers,
    )


def item(world: dict[str, Any], customer: dict[str, Any], reference: str, amount: int = 1, **fields: Any) -> dict:
    return {
        "reference": reference,
        "postings": [
            {"account": world["id"], "direction": "debit", "amount": amount},
            {"account": customer["id"], "direction": "credit", "amount": amount},
        ],
        **fields,
    }


def clear() -> None:
    """Forget the fixtures' audit events: a test counts only its own."""
    OutboxEvent.objects.all().delete()


def events(action: str, outcome: str = "success") -> list[dict[str, Any]]:
    rows = OutboxEvent.objects.filter(topic="audit", payload__action=action, payload__outcome=outcome)
    return [row.payload for row in rows.order_by("created_at", "id")]


def request_id_by_object(action: str, outcome: str = "success") -> dict[str, str]:
    return {e["object"]["id"]: e["request_id"] for e in events(action, outcome)}


def request_id_by_reference(action: str, outcome: str = "failure") -> dict[str, str]:
    return {e["metadata"]["reference"]: e["request_id"] for e in events(action, outcome)}


# ------------------------------------------------------------------------------------------- batch create


def test_batch_items_keep_their_own_request_id_and_the_others_take_the_calls(api: LedgerAPI, funded):
    # given a batch of three requests' items, two with their own request id
    world, customer = funded
    clear()
    batch = [
        item(world, customer, "pay-a", request_id="req-a"),
        item(world, customer, "pay-b", request_id="req_b:1.2-x"),
        item(world, customer, "pay-c"),
    ]

    # when it is created in one call
    response = post(api, "transactions/batch", {"transactions": batch})

    # then each transaction stores its item's request id, or the call's
    assert response.status_code == 200, response.content
    ids = [r["id"] for r in response.json()["results"]]
    stored = dict(Transaction.objects.filter(id__in=ids).values_list("reference", "request_id"))
    assert stored == {"pay-a": "req-a", "pay-b": "req_b:1.2-x", "pay-c": CALL}
    # and shows it in its API representation
    assert [api.get(f"transactions/{i}").json()["request_id"] for i in ids] == ["req-a", "req_b:1.2-x", CALL]
    # and each creation event carries the same id
    assert request_id_by_object("ledger.transaction.created") == dict(
        zip(ids, ["req-a", "req_b:1.2-x", CALL], strict=True)
    )


def test_the_serializer_path_takes_an_items_request_id_as_the_fast_path_does(api: LedgerAPI, funded):
    # given an item the fast path leaves to the serializer (its description is trimmed) with its own request id
    world, customer = funded
    clear()
    slow = item(world, customer, "slow", description="  padded  ", request_id="req-slow")

    response = post(api, "transactions/batch", {"transactions": [slow]})

    assert response.json()["results"][0]["status"] == "created", response.content
    txn = Transaction.objects.get(reference="slow")
    assert (txn.description, txn.request_id) == ("padded", "req-slow")
    assert request_id_by_object("ledger.transaction.created") == {txn.id: "req-slow"}


def test_a_single_transaction_stores_the_calls_request_id_and_takes_none_in_its_body(api: LedgerAPI, funded):
    world, customer = funded
    clear()

    created = post(api, "transactions", item(world, customer, "single"), request_id="req-single")
    refused = post(api, "transactions", item(world, customer, "single-2", request_id="req-body"))

    assert created.status_code == 201, created.content
    assert created.json()["request_id"] == "req-single"
    assert Transaction.objects.get(reference="single").request_id == "req-single"
    assert (refused.status_code, refused.json()["errors"][0]["field"]) == (400, "request_id")


@pytest.mark.parametrize(
    "request_id",
    ["has space", "x" * 129, "x" * 10_000, "", None, 42, ["req"], {"id": "req"}, "ünïcode", "req\n", " req"],
)
def test_an_invalid_item_request_id_is_that_items_validation_error_and_the_others_are_created(
    api: LedgerAPI, funded, request_id
):
    world, customer = funded
    clear()
    batch = [
        item(world, customer, "ok-0"),
        item(world, customer, "bad", request_id=request_id),
        item(world, customer, "ok-2"),
    ]

    response = post(api, "transactions/batch", {"transactions": batch})

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(r["index"], r["status"], r.get("code")) for r in results] == [
        (0, "created", None),
        (1, "error", "validation_error"),
        (2, "created", None),
    ]
    assert results[1]["detail"].startswith("request_id: ")
    assert len(results[1]["detail"]) < 300  # a clear detail, not the value echoed back
    assert not Transaction.objects.filter(reference="bad").exists()
    # the refusal is audited under the call's id (the item's own is not one)
    assert request_id_by_reference("ledger.transaction.created") == {"bad": CALL}


def test_an_atomic_batch_with_an_invalid_item_request_id_is_rejected_whole(api: LedgerAPI, funded):
    world, customer = funded
    clear()
    batch = [item(world, customer, "a-0", request_id="req-0"), item(world, customer, "a-1", request_id="no way")]

    response = post(api, "transactions/batch", {"transactions": batch, "atomic": True})

    assert (response.status_code, response.json()["code"]) == (422, "batch_rejected")
    assert not Transaction.objects.filter(reference__startswith="a-").exists()
    # one failure per item, each under its own request id where it has a valid one
    assert request_id_by_reference("ledger.transaction.created") == {"a-0": "req-0", "a-1": CALL}


def test_a_replay_under_another_request_id_or_none_is_the_same_transaction_not_a_conflict(api: LedgerAPI, funded):
    # given a transaction created by a batch item with its own request id
    world, customer = funded
    clear()
    first = post(api, "transactions/batch", {"transactions": [item(world, customer, "pay-r", request_id="req-1")]})
    (created,) = first.json()["results"]
    assert created["status"] == "created"

    # when the same item is sent again, under another request id, under none, and through the single endpoint
    again = post(api, "transactions/batch", {"transactions": [item(world, customer, "pay-r", request_id="req-2")]})
    bare = post(api, "transactions/batch", {"transactions": [item(world, customer, "pay-r")]}, request_id="call-2")
    single = post(api, "transactions", item(world, customer, "pay-r"), request_id="call-3")

    # then each is the existing transaction, which keeps the request id it was created with
    assert again.json()["results"] == [{"index": 0, "status": "exists", "id": created["id"]}]
    assert bare.json()["results"] == [{"index": 0, "status": "exists", "id": created["id"]}]
    assert (single.status_code, single.json()["id"], single.json()["request_id"]) == (200, created["id"], "req-1")
    assert Transaction.objects.get(reference="pay-r").request_id == "req-1"
    assert api.get(f"accounts/{customer['id']}/balance").json()["balance"] == 1001
    # and in one batch the second item of a reference is a replay too
    both = [item(world, customer, "twice", request_id="req-x"), item(world, customer, "twice", request_id="req-y")]
    assert [r["status"] for r in post(api, "transactions/batch", {"transactions": both}).json()["results"]] == [
        "created",
        "exists",
    ]


def test_refused_items_are_audited_under_their_own_request_id(api: LedgerAPI, funded):
    # given an item the ledger refuses (insufficient funds) and one that is malformed, both with a request id
    world, customer = funded
    clear()
    broke = item(customer, world, "broke", amount=10**9, request_id="req-broke")
    malformed = {**item(world, customer, "malformed", request_id="req-malformed"), "pending": "maybe"}

    response = post(api, "transactions/batch", {"transactions": [broke, malformed, item(world, customer, "fine")]})

    assert [r["status"] for r in response.json()["results"]] == ["error", "error", "created"]
    assert request_id_by_reference("ledger.transaction.created") == {
        "broke": "req-broke",
        "malformed": "req-malformed",
    }


def test_an_atomic_rejection_audits_each_item_under_its_own_request_id(api: LedgerAPI, funded):
    world, customer = funded
    clear()
    batch = [
        item(world, customer, "r-0", request_id="req-r0"),
        item(customer, world, "r-1", amount=10**9, request_id="req-r1"),
        item(world, customer, "r-2"),
    ]

    response = post(api, "transactions/batch", {"transactions": batch, "atomic": True})

    assert response.status_code == 422
    failures = {
        e["metadata"]["reference"]: (e["metadata"]["code"], e["request_id"])
        for e in events("ledger.transaction.created", "failure")
    }
    assert failures == {
        "r-0": ("batch_rejected", "req-r0"),
        "r-1": ("insufficient_funds", "req-r1"),
        "r-2": ("batch_rejected", CALL),
    }


def test_a_poisoned_item_fails_alone_under_its_own_request_id(funded):
    # given (through the service, past the parser) an item PostgreSQL cannot store, among good ones
    world, customer = funded
    clear()
    items = [
        transfer("p-0", world["id"], customer["id"], 1, request_id="req-p0"),
        transfer("p-1", world["id"], customer["id"], 1, description="nul\x00", request_id="req-p1"),
        transfer("p-2", world["id"], customer["id"], 1),
    ]

    results = transactions.transactions_create(items=items)

    assert [r.status for r in results] == ["created", "error", "created"]
    assert Transaction.objects.get(reference="p-0").request_id == "req-p0"
    assert request_id_by_reference("ledger.transaction.created") == {"p-1": "req-p1"}


# ------------------------------------------------------------------------------------------- batch settle


def test_settle_items_may_be_objects_with_a_request_id_mixed_with_plain_ids(api: LedgerAPI, funded):
    # given three holds created by three requests
    _world, customer = funded
    shop = api.account(name="shop")
    h1, h2, h3 = (hold(api, customer["id"], shop["id"], 100, f"h-{n}") for n in range(3))
    created = dict(Transaction.objects.filter(id__in=[h1, h2, h3]).values_list("id", "request_id"))

    # when they are posted in one call: one with its own request id, one plain id, one object without a request id
    items = [{"id": h1, "request_id": "req-h1"}, h2, {"id": h3}]
    response = post(api, "transactions/batch/settle", {"action": "post", "transactions": items})

    # then each is posted, and each posting event carries its item's request id, else the call's
    assert response.status_code == 200, response.content
    assert response.json()["results"] == [
        {"index": 0, "status": "posted", "id": h1},
        {"index": 1, "status": "posted", "id": h2},
        {"index": 2, "status": "posted", "id": h3},
    ]
    assert request_id_by_object("ledger.transaction.posted") == {h1: "req-h1", h2: CALL, h3: CALL}
    # and the transactions keep the request id of their creation
    assert dict(Transaction.objects.filter(id__in=[h1, h2, h3]).values_list("id", "request_id")) == created


def test_settle_refusals_and_voids_carry_the_items_request_id(api: LedgerAPI, funded):
    _world, customer = funded
    shop = api.account(name="shop")
    held = hold(api, customer["id"], shop["id"], 100, "held")
    missing = "txn_00000000000000000000000000"

    voided = post(
        api,
        "transactions/batch/settle",
        {
            "action": "void",
            "transactions": [{"id": held, "request_id": "req-v"}, {"id": missing, "request_id": "req-m"}],
        },
    )

    assert [(r["status"], r.get("code")) for r in voided.json()["results"]] == [
        ("voided", None),
        ("error", "not_found"),
    ]
    assert request_id_by_object("ledger.transaction.voided") == {held: "req-v"}
    assert request_id_by_object("ledger.transaction.voided", "failure") == {missing: "req-m"}


def test_the_service_pairs_request_ids_with_transaction_ids(api: LedgerAPI, funded):
    _world, customer = funded
    shop = api.account(name="shop")
    first, second = hold(api, customer["id"], shop["id"], 1, "s-0"), hold(api, customer["id"], shop["id"], 1, "s-1")

    with pytest.raises(ValueError, match="one entry per transaction id"):
        settlement.transactions_settle(transaction_ids=[first, second], request_ids=["req-0"], post=True)
    results = settlement.transactions_settle(transaction_ids=[first, second], request_ids=["req-0", ""], post=True)

    assert [r.status for r in results] == ["posted", "posted"]
    assert request_id_by_object("ledger.transaction.posted") == {first: "req-0", second: ""}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (42, "transactions.1"),
        (None, "transactions.1"),
        (True, "transactions.1"),
        (["txn_x"], "transactions.1"),
        ({"request_id": "req-1"}, "transactions.1.id"),
        ({"id": 7}, "transactions.1.id"),
        ({"id": "txn_" + "x" * 100}, "transactions.1.id"),
        ({"id": "HOLD", "extra": 1}, "transactions.1.extra"),
        ({"id": "HOLD", "request_id": "x" * 10_000}, "transactions.1.request_id"),
        ({"id": "HOLD", "request_id": "a b"}, "transactions.1.request_id"),
        ({"id": "HOLD", "request_id": ""}, "transactions.1.request_id"),
        ({"id": "HOLD", "request_id": None}, "transactions.1.request_id"),
        ({"id": "HOLD", "request_id": 5}, "transactions.1.request_id"),
    ],
)
def test_a_malformed_settle_item_is_a_400_naming_it_and_nothing_is_settled(api: LedgerAPI, funded, bad, field):
    _world, customer = funded
    shop = api.account(name="shop")
    held = hold(api, customer["id"], shop["id"], 100, "held")
    bad = json.loads(json.dumps(bad).replace("HOLD", held))

    response = post(api, "transactions/batch/settle", {"action": "post", "transactions": [held, bad]})

    assert response.status_code == 400, response.content
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert response["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert len(problem["detail"]) < 300
    assert Transaction.objects.get(id=held).status == "pending"


def test_a_nul_in_a_request_id_is_refused_before_any_item_is_read(api: LedgerAPI, funded):
    world, customer = funded
    clear()
    shop = api.account(name="shop")
    held = hold(api, customer["id"], shop["id"], 100, "held")

    settle = post(
        api, "transactions/batch/settle", {"action": "post", "transactions": [{"id": held, "request_id": "a\x00b"}]}
    )
    create = post(api, "transactions/batch", {"transactions": [item(world, customer, "nul", request_id="a\x00b")]})

    assert (settle.status_code, settle.json()["code"]) == (400, "invalid_characters")
    assert (create.status_code, create.json()["code"]) == (400, "invalid_characters")
    assert Transaction.objects.get(id=held).status == "pending"
    assert not Transaction.objects.filter(reference="nul").exists()


# ------------------------------------------------------------------------------------------------- admin


def test_the_admin_finds_a_transaction_by_its_request_id(api: LedgerAPI, funded, settings):
    world, customer = funded
    clear()
    post(api, "transactions/batch", {"transactions": [item(world, customer, "found", request_id="req-find-me")]})
    txn = Transaction.objects.get(reference="found")
    settings.ATRIUM_OUTBOX_RELAY = "off"
    get_user_model().objects.create_superuser("ops", "ops@example.com", "a long enough password")
    admin = Client()
    admin.post("/admin/login/", {"username": "ops", "password": "a long enough password", "next": "/admin/"})

    found = admin.get("/admin/ledger/transaction/", {"q": "req-find-me"})
    detail = admin.get(f"/admin/ledger/transaction/{txn.id}/change/")

    assert found.status_code == 200
    assert txn.id in found.content.decode()
    assert "fund-customer" not in found.content.decode()
    assert "req-find-me" in detail.content.decode()
