"""Idempotent references under real concurrency: 20 simultaneous requests to a live gunicorn ledger."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.ledger.live import LiveLedger, pay
from tests.problems import assert_problem

THREADS = 20


@pytest.fixture
def ledger(harness, jwks_server, signing_key) -> LiveLedger:
    return LiveLedger(harness, jwks_server, signing_key)


@pytest.fixture
def accounts(ledger) -> dict[str, dict[str, Any]]:
    """A world account, a customer holding 1,000 and a shop, created through the live API."""
    with ledger.client() as http:
        world = ledger.account(http, name="world", allow_negative=True)
        customer = ledger.account(http, name="customer")
        shop = ledger.account(http, name="shop")
        assert http.post("transactions", json=pay(world["id"], customer["id"], 1000, "fund")).status_code == 201
    return {"world": world, "customer": customer, "shop": shop}


def _all_at_once(ledger: LiveLedger, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST each body to transactions/ from its own thread, all released together by a barrier."""
    barrier = threading.Barrier(len(bodies))
    clients = [ledger.client() for _ in bodies]
    for http in clients:  # connect first, so the barrier releases requests, not TCP handshakes
        assert http.get("whoami").status_code == 200

    def send(index: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return clients[index].post("transactions", json=bodies[index])

    try:
        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            return list(pool.map(send, range(len(bodies))))
    finally:
        for http in clients:
            http.close()


def _balances(http: httpx.Client, account_id: str) -> tuple[int, int, int, int, int]:
    body = http.get(f"accounts/{account_id}").json()
    return (
        body["debits_posted"],
        body["credits_posted"],
        body["debits_pending"],
        body["credits_pending"],
        body["balance"],
    )


def test_twenty_concurrent_identical_creations_make_one_transaction_and_move_money_once(ledger, accounts):
    # given one transfer body, sent by 20 threads at the same instant
    customer, shop = accounts["customer"]["id"], accounts["shop"]["id"]
    body = pay(customer, shop, 100, "concurrent-1", metadata={"order": "o-1"})

    # when
    responses = _all_at_once(ledger, [body] * THREADS)

    # then exactly one created it and the other 19 got that same transaction back
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: THREADS - 1}, [(r.status_code, r.text[:200]) for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert all(r.json()["reference"] == "concurrent-1" and r.json()["status"] == "posted" for r in responses)

    # and the live database holds one transaction, with the money moved once
    with ledger.client() as http:
        listed = http.get("transactions", params={"reference": "concurrent-1"}).json()["results"]
        assert [t["id"] for t in listed] == list(ids)
        assert _balances(http, customer) == (100, 1000, 0, 0, 900)
        assert _balances(http, shop) == (0, 100, 0, 0, 100)
        postings = http.get(f"accounts/{customer}/postings").json()["results"]
        assert [p["reference"] for p in postings] == ["concurrent-1", "fund"]


def test_concurrent_creations_with_one_reference_but_two_contents_make_one_and_refuse_the_other(ledger, accounts):
    # given 20 threads sharing one reference: ten send 100, ten send 200, all at once
    customer, shop = accounts["customer"]["id"], accounts["shop"]["id"]
    bodies = [pay(customer, shop, 100 if i % 2 else 200, "concurrent-2") for i in range(THREADS)]

    # when
    responses = _all_at_once(ledger, bodies)

    # then one request created it; the others with that content got it back, the rest got reference_conflict
    created = [(b, r) for b, r in zip(bodies, responses, strict=True) if r.status_code == 201]
    assert len(created) == 1, [(r.status_code, r.text[:200]) for r in responses]
    winner_body, winner = created[0]
    amount = winner_body["postings"][0]["amount"]
    for body, response in zip(bodies, responses, strict=True):
        if response is winner:
            continue
        if body == winner_body:
            assert response.status_code == 200, response.text
            assert response.json()["id"] == winner.json()["id"]
        else:
            assert_problem(response, 409, "reference_conflict")

    # and the live database has one transaction with the winner's amount, moved once
    with ledger.client() as http:
        listed = http.get("transactions", params={"reference": "concurrent-2"}).json()["results"]
        assert [t["id"] for t in listed] == [winner.json()["id"]]
        assert listed[0]["postings"][0]["amount"] == amount
        assert _balances(http, customer) == (amount, 1000, 0, 0, 1000 - amount)
        assert _balances(http, shop) == (0, amount, 0, 0, amount)


def test_a_replay_after_the_fact_with_other_content_is_409(ledger, accounts):
    # given a transfer created on the live ledger
    customer, shop = accounts["customer"]["id"], accounts["shop"]["id"]
    with ledger.client() as http:
        assert http.post("transactions", json=pay(customer, shop, 5, "later")).status_code == 201

        # when the same reference comes with another amount, then with the original
        conflict = http.post("transactions", json=pay(customer, shop, 6, "later"))
        replay = http.post("transactions", json=pay(customer, shop, 5, "later"))

        # then
        assert_problem(conflict, 409, "reference_conflict")
        assert replay.status_code == 200
        assert _balances(http, customer) == (5, 1000, 0, 0, 995)
