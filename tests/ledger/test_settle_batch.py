"""``POST /api/v1/transactions/batch/settle``: many holds posted or voided in one call, each its own result."""

from __future__ import annotations

import pytest

from services.kit.models import OutboxEvent
from tests.ledger.conftest import LedgerAPI

pytestmark = pytest.mark.django_db


def hold(api: LedgerAPI, source: str, destination: str, amount: int, reference: str) -> str:
    response = api.transfer(source, destination, amount, reference=reference, pending=True)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def settle(api: LedgerAPI, action: str, ids: list[str]):
    return api.post("transactions/batch/settle", {"action": action, "transactions": ids})


def test_many_holds_are_posted_at_once_and_the_balances_follow(api: LedgerAPI, funded):
    _world, customer = funded
    shop = api.account(name="shop")
    ids = [hold(api, customer["id"], shop["id"], 100, f"h-{n}") for n in range(5)]
    assert api.get(f"accounts/{customer['id']}/balance").json()["available"] == 500

    response = settle(api, "post", ids)

    assert response.status_code == 200, response.content
    assert response.json()["results"] == [{"index": n, "status": "posted", "id": ids[n]} for n in range(5)]
    assert {api.get(f"transactions/{i}").json()["status"] for i in ids} == {"posted"}
    customer_now = api.get(f"accounts/{customer['id']}/balance").json()
    assert (customer_now["balance"], customer_now["available"], customer_now["debits_pending"]) == (500, 500, 0)
    assert api.get(f"accounts/{shop['id']}/balance").json()["balance"] == 500
    posted = OutboxEvent.objects.filter(topic="audit", payload__action="ledger.transaction.posted")
    assert sorted(e.payload["object"]["id"] for e in posted) == sorted(ids)
    # posting them again is the same answer, with nothing moved twice
    again = settle(api, "post", ids).json()["results"]
    assert {r["status"] for r in again} == {"posted"}
    assert api.get(f"accounts/{shop['id']}/balance").json()["balance"] == 500


def test_each_item_has_its_own_result_and_refusals_touch_nothing_else(api: LedgerAPI, funded):
    _world, customer = funded
    shop, frozen = api.account(name="shop"), api.account(name="frozen")
    good = hold(api, customer["id"], shop["id"], 100, "good")
    voided = hold(api, customer["id"], shop["id"], 100, "voided")
    api.post(f"transactions/{voided}/void")
    to_frozen = hold(api, customer["id"], frozen["id"], 100, "to-frozen")
    assert api.patch(f"accounts/{frozen['id']}", {"status": "frozen"}).status_code == 200

    ids = [good, voided, "txn_00000000000000000000000000", to_frozen, good]
    results = settle(api, "post", ids).json()["results"]

    assert [(r["index"], r["status"], r.get("code")) for r in results] == [
        (0, "posted", None),
        (1, "error", "transaction_not_pending"),
        (2, "error", "not_found"),
        (3, "error", "account_frozen"),
        (4, "posted", None),
    ]
    assert api.get(f"transactions/{to_frozen}").json()["status"] == "pending"
    assert api.get(f"accounts/{shop['id']}/balance").json()["balance"] == 100
    refused = OutboxEvent.objects.filter(
        topic="audit", payload__action="ledger.transaction.posted", payload__outcome="failure"
    )
    assert sorted(e.payload["metadata"]["code"] for e in refused) == [
        "account_frozen",
        "not_found",
        "transaction_not_pending",
    ]
    # a frozen account's hold can still be voided
    voiding = settle(api, "void", [to_frozen]).json()["results"]
    assert voiding == [{"index": 0, "status": "voided", "id": to_frozen}]
    assert api.get(f"accounts/{customer['id']}/balance").json()["available"] == 900


@pytest.mark.parametrize(
    "body",
    [
        {"action": "post", "transactions": []},
        {"action": "post", "transactions": ["txn_x"] * 1001},
        {"action": "settle", "transactions": ["txn_x"]},
        {"transactions": ["txn_x"]},
        {"action": "post", "transactions": "txn_x"},
        {"action": "post", "transactions": ["txn_x"], "extra": 1},
    ],
)
def test_a_malformed_settle_batch_is_a_400(api: LedgerAPI, body):
    response = api.post("transactions/batch/settle", body)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
