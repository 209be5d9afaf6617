"""Quick end-to-end path through the ledger API (the detailed suites cover each rule)."""

from __future__ import annotations


def test_transfer_hold_post_and_void_move_balances(api, funded):
    _, customer = funded
    shop = api.account(name="shop")

    # a posted transfer moves money at once
    assert api.transfer(customer["id"], shop["id"], 100, reference="t1").status_code == 201
    # a hold reserves it
    hold = api.transfer(customer["id"], shop["id"], 300, reference="h1", pending=True).json()
    assert hold["status"] == "pending"
    state = api.get(f"accounts/{customer['id']}").json()
    assert (state["balance"], state["available"], state["debits_pending"]) == (900, 600, 300)

    # posting the hold makes it final, voiding another releases it
    assert api.post(f"transactions/{hold['id']}/post").json()["status"] == "posted"
    hold2 = api.transfer(customer["id"], shop["id"], 50, reference="h2", pending=True).json()
    assert api.post(f"transactions/{hold2['id']}/void").json()["status"] == "voided"
    state = api.get(f"accounts/{customer['id']}").json()
    assert (state["balance"], state["available"], state["debits_pending"]) == (600, 600, 0)
    assert api.get(f"accounts/{shop['id']}").json()["balance"] == 400


def test_overdraft_is_refused_with_insufficient_funds(api, funded):
    _, customer = funded
    shop = api.account(name="shop")

    response = api.transfer(customer["id"], shop["id"], 1001, reference="too-much")

    assert response.status_code == 409
    assert response.json()["code"] == "insufficient_funds"


def test_a_large_batch_is_written_in_full(api, funded):
    # given 25 transfers (large enough for the COPY write path) with metadata and a hold among them
    _, customer = funded
    shop = api.account(name="shop")
    items = [
        {
            "reference": f"bulk-{i}",
            "metadata": {"n": i},
            "pending": i == 0,
            "postings": [
                {"account": customer["id"], "direction": "debit", "amount": 10},
                {"account": shop["id"], "direction": "credit", "amount": 10},
            ],
        }
        for i in range(25)
    ]

    # when they are sent as one batch
    response = api.post("transactions/batch", {"transactions": items})

    # then every one is stored with its postings and metadata, and the balances moved
    assert [r["status"] for r in response.json()["results"]] == ["created"] * 25
    listed = api.all("transactions", account=shop["id"])
    assert len(listed) == 25
    assert {t["metadata"]["n"] for t in listed} == set(range(25))
    assert all(len(t["postings"]) == 2 for t in listed)
    state = api.get(f"accounts/{customer['id']}").json()
    assert (state["balance"], state["debits_pending"], state["available"]) == (760, 10, 750)
