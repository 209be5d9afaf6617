"""Ledger transactions through the HTTP API: every refusal code, idempotent references,
two-phase holds, lists, batches, authentication, and the append-only triggers."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import ProgrammingError, connection, transaction
from django.utils.dateparse import parse_datetime

from services.ledger.models import MAX_AMOUNT, Account, Posting, Transaction
from tests.problems import assert_problem


def _stored(account_id: str) -> tuple[int, int, int, int]:
    a = Account.objects.get(pk=account_id)
    return a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending


def _body(reference: str, *postings: tuple[str, str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "reference": reference,
        "postings": [{"account": a, "direction": d, "amount": n} for a, d, n in postings],
        **fields,
    }


def _pay(source: str, destination: str, amount: Any, reference: str, **fields: Any) -> dict[str, Any]:
    return _body(reference, (source, "debit", amount), (destination, "credit", amount), **fields)


@pytest.fixture
def shop(api):
    return api.account(name="shop")


# ------------------------------------------------------------------------------ creation


def test_a_posted_transfer_is_201_and_moves_both_balances(api, funded, shop):
    # given
    _, customer = funded

    # when
    response = api.post(
        "transactions", _pay(customer["id"], shop["id"], 120, "order-1", description="order", metadata={"o": 1})
    )

    # then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("txn_")
    assert (body["reference"], body["status"], body["currency"], body["description"]) == (
        "order-1",
        "posted",
        "EUR",
        "order",
    )
    assert body["postings"] == [
        {"account": customer["id"], "direction": "debit", "amount": 120},
        {"account": shop["id"], "direction": "credit", "amount": 120},
    ]
    assert body["posted_at"] is not None
    assert body["voided_at"] is None
    stored = Transaction.objects.get(pk=body["id"])
    assert (stored.status, stored.metadata) == ("posted", {"o": 1})
    assert sorted(
        Posting.objects.filter(transaction=stored).values_list("account_id", "direction", "amount")
    ) == sorted([(customer["id"], "debit", 120), (shop["id"], "credit", 120)])
    assert _stored(customer["id"]) == (120, 1000, 0, 0)
    assert _stored(shop["id"]) == (0, 120, 0, 0)


def test_get_a_transaction_by_id_returns_it_with_its_postings(api, funded, shop):
    _, customer = funded
    created = api.transfer(customer["id"], shop["id"], 7, reference="get-me").json()

    response = api.get(f"transactions/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_an_unknown_transaction_id_is_404_not_found(api):
    assert_problem(api.get("transactions/txn_00000000000000000000000000"), 404, "not_found")
    assert_problem(api.post("transactions/txn_00000000000000000000000000/post"), 404, "not_found")
    assert_problem(api.post("transactions/txn_00000000000000000000000000/void"), 404, "not_found")


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "amount",
    [0, -5, 1.5, 1.0, "10", True, MAX_AMOUNT + 1, 10**30, [1], {"n": 1}],
    ids=["zero", "negative", "fraction", "float", "string", "boolean", "2^63", "huge", "list", "object"],
)
def test_an_amount_that_is_not_a_positive_int64_is_422_invalid_amount(api, funded, shop, amount):
    # given
    _, customer = funded

    # when
    response = api.post("transactions", _pay(customer["id"], shop["id"], amount, "bad-amount"))

    # then
    assert_problem(response, 422, "invalid_amount")
    assert not Transaction.objects.filter(reference="bad-amount").exists()
    assert _stored(customer["id"]) == (0, 1000, 0, 0)


def test_totals_above_int64_are_422_invalid_amount(api, funded, shop):
    # given two debits that each fit in int64 but whose sum does not
    world, _ = funded
    half = 2**62
    body = _body("overflow", (world["id"], "debit", half), (world["id"], "debit", half), (shop["id"], "credit", half))

    # when
    response = api.post("transactions", body)

    # then
    assert_problem(response, 422, "invalid_amount")
    assert not Transaction.objects.filter(reference="overflow").exists()


def test_an_amount_of_exactly_2_to_the_63_minus_1_is_accepted(api, shop):
    world = api.account(name="world", allow_negative=True)

    response = api.post("transactions", _pay(world["id"], shop["id"], MAX_AMOUNT, "max"))

    assert response.status_code == 201, response.content
    assert _stored(shop["id"]) == (0, MAX_AMOUNT, 0, 0)


def test_a_total_beyond_int64_on_an_account_is_422_invalid_amount(api, shop):
    # given a shop already credited 2^63-1
    world = api.account(name="world", allow_negative=True)
    assert api.post("transactions", _pay(world["id"], shop["id"], MAX_AMOUNT, "max")).status_code == 201

    # when one more unit is credited to it
    response = api.post("transactions", _pay(world["id"], shop["id"], 1, "one-more"))

    # then
    assert_problem(response, 422, "invalid_amount")
    assert _stored(shop["id"]) == (0, MAX_AMOUNT, 0, 0)


def test_a_hold_whose_posted_plus_pending_debits_exceed_int64_is_422_not_a_server_error(api):
    # given an account with the largest overdraft, fully drawn, then credited 1
    world = api.account(name="world", allow_negative=True)
    spender = api.account(name="spender", overdraft_limit=MAX_AMOUNT)
    assert api.post("transactions", _pay(spender["id"], world["id"], MAX_AMOUNT, "draw")).status_code == 201
    assert api.post("transactions", _pay(world["id"], spender["id"], 1, "back")).status_code == 201

    # when a hold of 1 would leave available at 0 but debits_posted + debits_pending above 2^63-1
    response = api.post("transactions", _pay(spender["id"], world["id"], 1, "edge-hold", pending=True))

    # then it is refused as an unrepresentable total (PostgreSQL's check would overflow: it was a 500)
    assert_problem(response, 422, "invalid_amount")
    assert _stored(spender["id"]) == (MAX_AMOUNT, 1, 0, 0)
    assert not Transaction.objects.filter(reference="edge-hold").exists()


def test_an_allow_negative_account_may_hold_beyond_int64_posted_plus_pending(api, shop):
    # given a world account that has sent 2^63-1
    world = api.account(name="world", allow_negative=True)
    assert api.post("transactions", _pay(world["id"], shop["id"], MAX_AMOUNT, "max")).status_code == 201
    other = api.account(name="other")

    # when it places a further hold
    response = api.post("transactions", _pay(world["id"], other["id"], 5, "hold", pending=True))

    # then it is accepted (no overdraft rule applies to it)
    assert response.status_code == 201, response.content
    assert _stored(world["id"]) == (MAX_AMOUNT, 0, 5, 0)


def test_an_unknown_account_in_a_posting_is_422_account_not_found(api, funded):
    _, customer = funded

    response = api.post("transactions", _pay(customer["id"], "acc_00000000000000000000000000", 5, "ghost"))

    assert_problem(response, 422, "account_not_found")
    assert not Transaction.objects.filter(reference="ghost").exists()
    assert _stored(customer["id"]) == (0, 1000, 0, 0)


def test_postings_across_currencies_are_422_currency_mismatch(api, funded):
    # given a EUR customer and a USD account
    _, customer = funded
    usd = api.account(name="usd", currency="USD")

    # when money is moved between them, or the stated currency differs from the accounts'
    mixed = api.post("transactions", _pay(customer["id"], usd["id"], 5, "mixed"))
    stated = api.post("transactions", _pay(customer["id"], customer["id"], 5, "stated", currency="USD"))

    # then
    assert_problem(mixed, 422, "currency_mismatch")
    assert_problem(stated, 422, "currency_mismatch")
    assert not Transaction.objects.filter(reference__in=["mixed", "stated"]).exists()
    assert _stored(usd["id"]) == (0, 0, 0, 0)


def test_debits_not_equal_to_credits_are_422_unbalanced(api, funded, shop):
    _, customer = funded
    body = _body("lopsided", (customer["id"], "debit", 10), (shop["id"], "credit", 9))

    response = api.post("transactions", body)

    assert_problem(response, 422, "unbalanced")
    assert not Transaction.objects.filter(reference="lopsided").exists()


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_postings_are_422_too_few_postings(api, funded, count):
    _, customer = funded
    postings = [(customer["id"], "debit", 10)][:count]

    response = api.post("transactions", _body("lonely", *postings))

    assert_problem(response, 422, "too_few_postings")
    assert not Transaction.objects.filter(reference="lonely").exists()


def test_spending_more_than_available_is_409_insufficient_funds_and_writes_nothing(api, funded, shop):
    _, customer = funded

    response = api.post("transactions", _pay(customer["id"], shop["id"], 1001, "too-much"))

    body = assert_problem(response, 409, "insufficient_funds")
    assert customer["id"] in body["detail"]
    assert not Transaction.objects.filter(reference="too-much").exists()
    assert _stored(customer["id"]) == (0, 1000, 0, 0)
    assert _stored(shop["id"]) == (0, 0, 0, 0)


def test_a_malformed_transaction_is_400_validation_error(api, funded, shop):
    _, customer = funded
    body = _body("bad-direction", (customer["id"], "sideways", 5), (shop["id"], "credit", 5))

    assert_problem(api.post("transactions", body), 400, "validation_error")
    assert_problem(api.post("transactions", {"postings": []}), 400, "validation_error")
    assert not Transaction.objects.exists() or Transaction.objects.count() == 1  # only the funding


def test_a_nul_character_in_the_reference_is_400(api, funded, shop):
    _, customer = funded

    response = api.post("transactions", _pay(customer["id"], shop["id"], 5, "nul\x00ref"))

    assert_problem(response, 400, "invalid_characters")
    assert Transaction.objects.count() == 1  # only the funding
    assert _stored(customer["id"]) == (0, 1000, 0, 0)


# ------------------------------------------------------------------------------ idempotent references


def test_the_same_reference_and_content_again_is_200_with_the_same_transaction_moved_once(api, funded, shop):
    # given a transfer
    _, customer = funded
    body = _pay(customer["id"], shop["id"], 100, "once", metadata={"a": 1})
    first = api.post("transactions", body)
    assert first.status_code == 201

    # when it is sent again
    again = api.post("transactions", body)

    # then the same transaction comes back and the money moved once
    assert again.status_code == 200, again.content
    assert again.json() == first.json()
    assert Transaction.objects.filter(reference="once").count() == 1
    assert _stored(customer["id"]) == (100, 1000, 0, 0)


def test_a_replay_spelling_out_the_defaults_is_the_same_content(api, funded, shop):
    # given a transfer sent with only the required fields
    _, customer = funded
    first = api.post("transactions", _pay(customer["id"], shop["id"], 10, "defaults"))
    assert first.status_code == 201

    # when it is replayed with every optional field at its default
    explicit = _pay(customer["id"], shop["id"], 10, "defaults", description="", pending=False, metadata={})
    again = api.post("transactions", {**explicit, "expires_at": None})

    # then it is recognised as the same transaction
    assert again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"]
    assert _stored(customer["id"]) == (10, 1000, 0, 0)


def test_a_replay_is_answered_even_when_the_transfer_would_no_longer_fit(api, funded, shop):
    # given a hold of 600, then the customer spends the rest
    _, customer = funded
    body = _pay(customer["id"], shop["id"], 600, "hold-600", pending=True)
    first = api.post("transactions", body)
    assert api.post("transactions", _pay(customer["id"], shop["id"], 400, "rest")).status_code == 201

    # when the hold request is replayed
    again = api.post("transactions", body)

    # then the existing hold comes back instead of insufficient_funds, and nothing more is held
    assert again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"]
    assert _stored(customer["id"]) == (400, 1000, 600, 0)


@pytest.mark.parametrize(
    "change",
    [{"amount": 101}, {"metadata": {"a": 2}}, {"description": "other"}, {"pending": True}],
    ids=["amount", "metadata", "description", "pending"],
)
def test_the_same_reference_with_different_content_is_409_reference_conflict(api, funded, shop, change):
    # given
    _, customer = funded
    assert api.post("transactions", _pay(customer["id"], shop["id"], 100, "dup", metadata={"a": 1})).status_code == 201

    # when
    fields = {"metadata": {"a": 1}, **{k: v for k, v in change.items() if k != "amount"}}
    response = api.post("transactions", _pay(customer["id"], shop["id"], change.get("amount", 100), "dup", **fields))

    # then
    assert_problem(response, 409, "reference_conflict")
    assert Transaction.objects.filter(reference="dup").count() == 1
    assert _stored(customer["id"]) == (100, 1000, 0, 0)


# ------------------------------------------------------------------------------ two-phase holds


def test_a_hold_then_post_moves_the_amount_from_pending_to_posted(api, funded, shop):
    # given a hold
    _, customer = funded
    hold = api.post("transactions", _pay(customer["id"], shop["id"], 300, "hold", pending=True))
    assert hold.status_code == 201
    assert (hold.json()["status"], hold.json()["posted_at"]) == ("pending", None)
    assert _stored(customer["id"]) == (0, 1000, 300, 0)
    assert _stored(shop["id"]) == (0, 0, 0, 300)

    # when it is posted
    response = api.post(f"transactions/{hold.json()['id']}/post")

    # then
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "posted"
    assert response.json()["posted_at"] is not None
    assert Transaction.objects.get(pk=hold.json()["id"]).status == "posted"
    assert _stored(customer["id"]) == (300, 1000, 0, 0)
    assert _stored(shop["id"]) == (0, 300, 0, 0)
    assert api.get(f"accounts/{shop['id']}").json()["available"] == 300


def test_a_hold_then_void_releases_the_amount(api, funded, shop):
    # given
    _, customer = funded
    hold = api.post("transactions", _pay(customer["id"], shop["id"], 300, "hold", pending=True)).json()

    # when
    response = api.post(f"transactions/{hold['id']}/void")

    # then
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["posted_at"]) == ("voided", None)
    assert response.json()["voided_at"] is not None
    assert _stored(customer["id"]) == (0, 1000, 0, 0)
    assert _stored(shop["id"]) == (0, 0, 0, 0)
    assert api.get(f"accounts/{customer['id']}").json()["available"] == 1000


@pytest.mark.parametrize(
    ("first", "second"),
    [("post", "post"), ("post", "void"), ("void", "void"), ("void", "post")],
)
def test_settling_a_settled_hold_is_409_transaction_not_pending(api, funded, shop, first, second):
    # given a hold settled once
    _, customer = funded
    hold = api.post("transactions", _pay(customer["id"], shop["id"], 300, "hold", pending=True)).json()
    assert api.post(f"transactions/{hold['id']}/{first}").status_code == 200
    before = _stored(customer["id"])

    # when it is settled again
    response = api.post(f"transactions/{hold['id']}/{second}")

    # then
    assert_problem(response, 409, "transaction_not_pending")
    assert Transaction.objects.get(pk=hold["id"]).status == ("posted" if first == "post" else "voided")
    assert _stored(customer["id"]) == before


def test_posting_a_transfer_created_posted_is_409_transaction_not_pending(api, funded, shop):
    _, customer = funded
    txn = api.transfer(customer["id"], shop["id"], 5, reference="direct").json()

    assert_problem(api.post(f"transactions/{txn['id']}/post"), 409, "transaction_not_pending")
    assert_problem(api.post(f"transactions/{txn['id']}/void"), 409, "transaction_not_pending")


# ------------------------------------------------------------------------------ lists


def test_transactions_are_filtered_by_reference_account_status_and_time(api, funded, shop):
    # given a posted payment, a hold, and a payment not involving the shop
    world, customer = funded
    other = api.account(name="other")
    paid = api.transfer(customer["id"], shop["id"], 10, reference="paid").json()
    held = api.transfer(customer["id"], shop["id"], 20, reference="held", pending=True).json()
    elsewhere = api.transfer(world["id"], other["id"], 30, reference="elsewhere").json()

    def refs(**params: Any) -> list[str]:
        return [t["reference"] for t in api.all("transactions", **params)]

    # when / then
    assert refs(reference="held") == ["held"]
    assert refs(account=shop["id"]) == ["held", "paid"]
    assert refs(account=world["id"]) == ["elsewhere", "fund-customer"]
    assert refs(status="pending") == ["held"]
    assert refs(status="posted", account=customer["id"]) == ["paid", "fund-customer"]
    assert refs(created_after=held["created_at"]) == ["elsewhere", "held"]
    assert refs(created_before=held["created_at"]) == ["paid", "fund-customer"]
    assert refs(created_after=paid["created_at"], created_before=elsewhere["created_at"]) == ["held", "paid"]
    assert refs(reference="nothing") == []


def test_transaction_list_pages_with_a_cursor_newest_first(api, funded, shop):
    # given seven payments (plus the funding)
    _, customer = funded
    for i in range(7):
        assert api.transfer(customer["id"], shop["id"], 1, reference=f"p{i}").status_code == 201

    # when read two at a time
    first = api.get("transactions", limit=2).json()
    items = api.all("transactions", limit=2)

    # then
    assert len(first["results"]) == 2
    assert first["next"] is not None
    assert [t["reference"] for t in items] == [f"p{i}" for i in range(6, -1, -1)] + ["fund-customer"]
    assert len({t["id"] for t in items}) == 8


# ------------------------------------------------------------------------------ batches


def test_a_batch_returns_a_result_per_item_and_applies_the_good_ones(api, funded, shop):
    # given a batch: a good payment, an overdraft, an unbalanced one, a replay of an existing one, a hold
    _, customer = funded
    existing = api.transfer(customer["id"], shop["id"], 5, reference="old").json()
    items = [
        _pay(customer["id"], shop["id"], 100, "b-ok"),
        _pay(customer["id"], shop["id"], 5000, "b-overdraft"),
        _body("b-unbalanced", (customer["id"], "debit", 3), (shop["id"], "credit", 2)),
        _pay(customer["id"], shop["id"], 5, "old"),
        _pay(customer["id"], shop["id"], 50, "b-hold", pending=True),
        _pay(customer["id"], "acc_missing", 1, "b-ghost"),
        _pay(customer["id"], shop["id"], 6, "old"),
    ]

    # when
    response = api.post("transactions/batch", {"transactions": items})

    # then
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(r["index"], r["status"], r.get("code")) for r in results] == [
        (0, "created", None),
        (1, "error", "insufficient_funds"),
        (2, "error", "unbalanced"),
        (3, "exists", None),
        (4, "created", None),
        (5, "error", "account_not_found"),
        (6, "error", "reference_conflict"),
    ]
    assert results[3]["id"] == existing["id"]
    assert all(r["detail"] for r in results if r["status"] == "error")
    assert Transaction.objects.get(pk=results[0]["id"]).status == "posted"
    assert Transaction.objects.get(pk=results[4]["id"]).status == "pending"
    assert not Transaction.objects.filter(reference__in=["b-overdraft", "b-unbalanced", "b-ghost"]).exists()
    assert _stored(customer["id"]) == (105, 1000, 50, 0)
    assert _stored(shop["id"]) == (0, 105, 0, 50)


def test_a_duplicate_reference_inside_one_batch_is_exists_if_equal_else_reference_conflict(api, funded, shop):
    # given the same reference three times in one batch: twice identical, once different
    _, customer = funded
    items = [
        _pay(customer["id"], shop["id"], 10, "twice"),
        _pay(customer["id"], shop["id"], 10, "twice"),
        _pay(customer["id"], shop["id"], 11, "twice"),
    ]

    # when
    response = api.post("transactions/batch", {"transactions": items})

    # then one transaction exists, applied once
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        ("created", None),
        ("exists", None),
        ("error", "reference_conflict"),
    ]
    assert results[0]["id"] == results[1]["id"]
    assert Transaction.objects.filter(reference="twice").count() == 1
    assert _stored(customer["id"]) == (10, 1000, 0, 0)


def test_later_items_of_a_batch_see_the_balances_left_by_earlier_ones(api, funded, shop):
    # given two payments of 600 from a customer holding 1,000
    _, customer = funded
    items = [_pay(customer["id"], shop["id"], 600, "first"), _pay(customer["id"], shop["id"], 600, "second")]

    # when
    results = api.post("transactions/batch", {"transactions": items}).json()["results"]

    # then only the first fits
    assert [(r["status"], r.get("code")) for r in results] == [("created", None), ("error", "insufficient_funds")]
    assert _stored(customer["id"]) == (600, 1000, 0, 0)


def test_an_atomic_batch_with_one_failure_is_422_batch_rejected_and_applies_nothing(api, funded, shop):
    # given a batch whose last item overdraws
    _, customer = funded
    before = (_stored(customer["id"]), _stored(shop["id"]), Transaction.objects.count(), Posting.objects.count())
    items = [
        _pay(customer["id"], shop["id"], 100, "a-1"),
        _pay(customer["id"], shop["id"], 200, "a-2", pending=True),
        _pay(customer["id"], shop["id"], 900, "a-3"),
    ]

    # when
    response = api.post("transactions/batch", {"transactions": items, "atomic": True})

    # then every result is reported and nothing was written
    body = assert_problem(response, 422, "batch_rejected")
    assert [(r["index"], r["status"], r.get("code")) for r in body["results"]] == [
        (0, "created", None),
        (1, "created", None),
        (2, "error", "insufficient_funds"),
    ]
    after = (_stored(customer["id"]), _stored(shop["id"]), Transaction.objects.count(), Posting.objects.count())
    assert after == before
    assert not Transaction.objects.filter(reference__startswith="a-").exists()


def test_an_atomic_batch_that_succeeds_applies_everything(api, funded, shop):
    _, customer = funded
    items = [_pay(customer["id"], shop["id"], 100, "a-1"), _pay(customer["id"], shop["id"], 200, "a-2")]

    response = api.post("transactions/batch", {"transactions": items, "atomic": True})

    assert response.status_code == 200, response.content
    assert [r["status"] for r in response.json()["results"]] == ["created", "created"]
    assert _stored(customer["id"]) == (300, 1000, 0, 0)


def test_a_malformed_item_in_a_batch_is_that_items_validation_error(api, funded, shop):
    # given a batch whose second item has a bad direction and fourth an unknown field
    _, customer = funded
    items = [
        _pay(customer["id"], shop["id"], 1, "m-0"),
        _body("m-1", (customer["id"], "up", 1), (shop["id"], "credit", 1)),
        _pay(customer["id"], shop["id"], 2, "m-2"),
        {**_pay(customer["id"], shop["id"], 3, "m-3"), "colour": "red"},
    ]

    # when
    response = api.post("transactions/batch", {"transactions": items})

    # then only it fails, and the others keep their own indices
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(r["index"], r["status"], r.get("code")) for r in results] == [
        (0, "created", None),
        (1, "error", "validation_error"),
        (2, "created", None),
        (3, "error", "validation_error"),
    ]
    assert "direction" in results[1]["detail"]
    assert "colour" in results[3]["detail"]
    assert set(Transaction.objects.filter(reference__startswith="m-").values_list("reference", flat=True)) == {
        "m-0",
        "m-2",
    }
    assert _stored(customer["id"]) == (3, 1000, 0, 0)


def test_a_malformed_item_in_an_atomic_batch_rejects_the_batch(api, funded, shop):
    _, customer = funded
    items = [_pay(customer["id"], shop["id"], 1, "m-0"), {"reference": "m-1"}]

    response = api.post("transactions/batch", {"transactions": items, "atomic": True})

    body = assert_problem(response, 422, "batch_rejected")
    assert [(r["index"], r["code"]) for r in body["results"]] == [(1, "validation_error")]
    assert not Transaction.objects.filter(reference="m-0").exists()
    assert _stored(customer["id"]) == (0, 1000, 0, 0)


def test_a_batch_of_more_than_1000_or_none_is_400(api, funded, shop):
    _, customer = funded
    many = [_pay(customer["id"], shop["id"], 1, f"n-{i}") for i in range(1001)]

    assert_problem(api.post("transactions/batch", {"transactions": many}), 400, "validation_error")
    assert_problem(api.post("transactions/batch", {"transactions": []}), 400, "validation_error")
    assert Transaction.objects.count() == 1


def test_a_batch_of_1000_is_accepted(api, funded, shop):
    world, _ = funded
    many = [_pay(world["id"], shop["id"], 1, f"n-{i}") for i in range(1000)]

    response = api.post("transactions/batch", {"transactions": many})

    assert response.status_code == 200, response.content
    assert {r["status"] for r in response.json()["results"]} == {"created"}
    assert _stored(shop["id"]) == (0, 1000, 0, 0)
    assert Transaction.objects.filter(reference__startswith="n-").count() == 1000


# ------------------------------------------------------------------------------ authentication


def test_transaction_calls_without_a_token_are_401(client, db):
    creating = client.post(
        "/api/v1/transactions", '{"reference": "x", "postings": []}', content_type="application/json"
    )

    assert_problem(creating, 401, "not_authenticated")
    assert_problem(client.get("/api/v1/transactions"), 401, "not_authenticated")


def test_a_read_only_token_cannot_create_settle_or_batch(api, funded, shop, signing_key):
    # given a hold and a token with only ledger:read
    _, customer = funded
    hold = api.transfer(customer["id"], shop["id"], 10, reference="hold", pending=True).json()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {signing_key.mint(scope='ledger:read')}"}

    def post(path: str, body: Any) -> Any:
        return api.client.post(f"/api/v1/{path}", body, content_type="application/json", **headers)

    # when / then writes are refused, reads allowed
    assert_problem(post("transactions", _pay(customer["id"], shop["id"], 1, "ro")), 403, "insufficient_scope")
    assert_problem(post(f"transactions/{hold['id']}/post", {}), 403, "insufficient_scope")
    assert_problem(post("transactions/batch", {"transactions": [{}]}), 403, "insufficient_scope")
    assert api.client.get(f"/api/v1/transactions/{hold['id']}", **headers).status_code == 200
    assert Transaction.objects.get(pk=hold["id"]).status == "pending"
    assert not Transaction.objects.filter(reference="ro").exists()


# ------------------------------------------------------------------------------ append-only (PostgreSQL)


def _refused(sql: str, params: list[Any]) -> None:
    """``sql`` is refused by a trigger (insufficient_privilege, raised by Django as ProgrammingError)."""
    with pytest.raises(ProgrammingError, match="ledger: ") as caught, transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql, params)
    assert caught.value.__cause__.sqlstate == "42501"


def test_postings_cannot_be_updated_or_deleted(api, funded):
    _, customer = funded
    posting = Posting.objects.filter(account_id=customer["id"]).get()

    _refused("UPDATE ledger_posting SET amount = amount + 1 WHERE id = %s", [posting.id])
    _refused("DELETE FROM ledger_posting WHERE id = %s", [posting.id])

    assert Posting.objects.get(pk=posting.id).amount == 1000


def test_transactions_cannot_be_deleted(api, funded):
    txn = Transaction.objects.get(reference="fund-customer")

    _refused("DELETE FROM ledger_transaction WHERE id = %s", [txn.id])

    assert Transaction.objects.filter(pk=txn.id).exists()


@pytest.mark.parametrize(
    "assignment",
    [
        "reference = 'rewritten'",
        "description = 'rewritten'",
        "metadata = '{\"x\": 1}'::jsonb",
        "currency = 'USD'",
        "content_hash = 'x'",
        "status = 'voided', posted_at = NULL, voided_at = now()",
    ],
    ids=["reference", "description", "metadata", "currency", "content_hash", "status"],
)
def test_a_posted_transaction_cannot_be_updated(api, funded, assignment):
    txn = Transaction.objects.get(reference="fund-customer")

    _refused(f"UPDATE ledger_transaction SET {assignment} WHERE id = %s", [txn.id])

    stored = Transaction.objects.get(pk=txn.id)
    assert (stored.reference, stored.status, stored.currency) == ("fund-customer", "posted", "EUR")


def test_a_pending_transaction_may_only_change_its_status(api, funded, shop):
    # given a hold
    _, customer = funded
    hold = api.transfer(customer["id"], shop["id"], 10, reference="hold", pending=True).json()

    # then rewriting its reference is refused, even though it is pending
    _refused("UPDATE ledger_transaction SET reference = 'other' WHERE id = %s", [hold["id"]])
    # and the ledger's own status change still works
    assert api.post(f"transactions/{hold['id']}/post").status_code == 200
    assert parse_datetime(api.get(f"transactions/{hold['id']}").json()["posted_at"]) is not None
