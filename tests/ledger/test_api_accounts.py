"""Ledger accounts through the HTTP API: creation, balances, overdraft rules, status changes,
lists with filters and cursors, postings and balances at an instant, authentication."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import ProgrammingError, connection, transaction
from django.utils.dateparse import parse_datetime

from services.ledger.models import Account, Posting, Transaction
from tests.problems import assert_problem


def _stored(account_id: str) -> tuple[int, int, int, int]:
    a = Account.objects.get(pk=account_id)
    return a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending


# ------------------------------------------------------------------------------ creation


def test_creating_an_account_returns_201_with_zero_balances_and_stores_it(api):
    # given / when
    response = api.post(
        "accounts",
        {
            "code": "cust-1",
            "name": "Customer one",
            "currency": "EUR",
            "normal_balance": "credit",
            "overdraft_limit": 250,
            "metadata": {"tier": "gold"},
        },
    )

    # then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("acc_")
    assert body["status"] == "open"
    assert (body["balance"], body["available"]) == (0, 250)
    assert (body["debits_posted"], body["credits_posted"], body["debits_pending"], body["credits_pending"]) == (
        0,
        0,
        0,
        0,
    )
    stored = Account.objects.get(pk=body["id"])
    assert (stored.code, stored.currency, stored.normal_balance, stored.overdraft_limit) == (
        "cust-1",
        "EUR",
        "credit",
        250,
    )
    assert stored.metadata == {"tier": "gold"}
    assert stored.allow_negative is False


@pytest.mark.parametrize(
    "fields",
    [
        {"currency": "eur"},
        {"currency": "EURO"},
        {"normal_balance": "sideways"},
        {"overdraft_limit": -1},
        {"colour": "blue"},
    ],
    ids=["lowercase-currency", "long-currency", "bad-normal-balance", "negative-overdraft", "unknown-field"],
)
def test_creating_an_account_with_malformed_fields_is_a_validation_error(api, fields):
    # given
    body = {"name": "x", "currency": "EUR", "normal_balance": "credit", **fields}

    # when
    response = api.post("accounts", body)

    # then
    assert_problem(response, 400, "validation_error")
    assert Account.objects.count() == 0


def test_a_taken_account_code_is_409_account_code_taken(api):
    # given
    api.account(code="shared")

    # when
    response = api.post("accounts", {"code": "shared", "name": "b", "currency": "EUR", "normal_balance": "credit"})

    # then
    assert_problem(response, 409, "account_code_taken")
    assert Account.objects.filter(code="shared").count() == 1


# ------------------------------------------------------------------------------ balances


def test_credit_normal_balance_is_credits_minus_debits_and_available_subtracts_pending_debits(api, funded):
    # given a credit-normal customer holding 1,000
    world, customer = funded
    shop = api.account(name="shop")

    # when it pays 100, holds 300 outgoing and receives a 50 hold incoming
    assert api.transfer(customer["id"], shop["id"], 100, reference="pay").status_code == 201
    assert api.transfer(customer["id"], shop["id"], 300, reference="hold-out", pending=True).status_code == 201
    assert api.transfer(world["id"], customer["id"], 50, reference="hold-in", pending=True).status_code == 201

    # then balance = credits_posted - debits_posted; available = balance - debits_pending + limit
    body = api.get(f"accounts/{customer['id']}").json()
    assert (body["debits_posted"], body["credits_posted"], body["debits_pending"], body["credits_pending"]) == (
        100,
        1000,
        300,
        50,
    )
    assert body["balance"] == 900
    assert body["available"] == 600
    assert _stored(customer["id"]) == (100, 1000, 300, 50)


def test_debit_normal_balance_is_debits_minus_credits_and_available_subtracts_pending_credits(api):
    # given a debit-normal cash account (an asset) with 1,000 debited into it, and an overdraft of 40
    equity = api.account(name="equity", normal_balance="credit", allow_negative=True)
    cash = api.account(name="cash", normal_balance="debit", overdraft_limit=40)
    funding = {
        "reference": "fund-cash",
        "postings": [
            {"account": cash["id"], "direction": "debit", "amount": 1000},
            {"account": equity["id"], "direction": "credit", "amount": 1000},
        ],
    }
    assert api.post("transactions", funding).status_code == 201

    # when 100 is credited out of it, 300 is held on the credit side and 50 is held on the debit side
    def move(reference: str, direction: str, amount: int, pending: bool) -> Any:
        other = "debit" if direction == "credit" else "credit"
        return api.post(
            "transactions",
            {
                "reference": reference,
                "pending": pending,
                "postings": [
                    {"account": cash["id"], "direction": direction, "amount": amount},
                    {"account": equity["id"], "direction": other, "amount": amount},
                ],
            },
        )

    assert move("spend", "credit", 100, False).status_code == 201
    assert move("hold-credit", "credit", 300, True).status_code == 201
    assert move("hold-debit", "debit", 50, True).status_code == 201

    # then balance = debits_posted - credits_posted; available = balance - credits_pending + overdraft_limit
    body = api.get(f"accounts/{cash['id']}").json()
    assert (body["debits_posted"], body["credits_posted"], body["debits_pending"], body["credits_pending"]) == (
        1000,
        100,
        50,
        300,
    )
    assert body["balance"] == 900
    assert body["available"] == 900 - 300 + 40

    # and a credit taking available below zero is refused, while exactly to zero is accepted
    assert_problem(move("too-much", "credit", 641, False), 409, "insufficient_funds")
    assert move("all-of-it", "credit", 640, False).status_code == 201
    body = api.get(f"accounts/{cash['id']}").json()
    assert (body["balance"], body["available"]) == (260, 0)


def test_overdraft_limit_lets_an_account_go_down_to_minus_the_limit_and_no_further(api):
    # given an empty account with an overdraft limit of 500
    world = api.account(name="world", allow_negative=True)
    spender = api.account(name="spender", overdraft_limit=500)

    # when it spends exactly its limit
    first = api.transfer(spender["id"], world["id"], 500, reference="to-the-limit")

    # then it is accepted and the account sits at -500 with nothing available
    assert first.status_code == 201, first.content
    body = api.get(f"accounts/{spender['id']}").json()
    assert (body["balance"], body["available"]) == (-500, 0)

    # and one more unit is refused, with nothing written
    refused = api.transfer(spender["id"], world["id"], 1, reference="past-the-limit")
    assert_problem(refused, 409, "insufficient_funds")
    assert not Transaction.objects.filter(reference="past-the-limit").exists()
    assert _stored(spender["id"]) == (500, 0, 0, 0)


def test_an_allow_negative_account_is_never_refused(api):
    # given an account allowed to go negative and holding nothing
    world = api.account(name="world", allow_negative=True)
    sink = api.account(name="sink")

    # when it sends far more than it has, posted and as a hold
    posted = api.transfer(world["id"], sink["id"], 10**15, reference="huge")
    held = api.transfer(world["id"], sink["id"], 10**12, reference="huge-hold", pending=True)

    # then both are accepted
    assert posted.status_code == 201, posted.content
    assert held.status_code == 201, held.content
    body = api.get(f"accounts/{world['id']}").json()
    assert body["balance"] == -(10**15)
    assert body["available"] == -(10**15) - 10**12
    assert _stored(world["id"]) == (10**15, 0, 10**12, 0)


def test_a_pending_hold_counts_against_available_at_once(api, funded):
    # given a customer with 1,000 and a hold of 800 on it
    _, customer = funded
    shop = api.account(name="shop")
    assert api.transfer(customer["id"], shop["id"], 800, reference="hold", pending=True).status_code == 201

    # when it tries to spend 201, then 200
    refused = api.transfer(customer["id"], shop["id"], 201, reference="over")
    accepted = api.transfer(customer["id"], shop["id"], 200, reference="exact")

    # then only the second fits in what the hold left available
    assert_problem(refused, 409, "insufficient_funds")
    assert accepted.status_code == 201, accepted.content
    body = api.get(f"accounts/{customer['id']}").json()
    assert (body["balance"], body["available"]) == (800, 0)
    assert _stored(customer["id"]) == (200, 1000, 800, 0)


# ------------------------------------------------------------------------------ status changes


def test_patch_renames_and_retags_an_account(api):
    # given
    account = api.account(name="old")

    # when
    response = api.patch(f"accounts/{account['id']}", {"name": "new", "metadata": {"k": "v"}})

    # then
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["metadata"]) == ("new", {"k": "v"})
    stored = Account.objects.get(pk=account["id"])
    assert (stored.name, stored.metadata, stored.status) == ("new", {"k": "v"}, "open")


def test_a_frozen_account_refuses_postings_both_ways_and_unfreezing_restores_it(api, funded):
    # given a funded customer, a pending hold on it, then the customer frozen
    world, customer = funded
    hold = api.transfer(customer["id"], world["id"], 10, reference="hold-before-freeze", pending=True).json()
    frozen = api.patch(f"accounts/{customer['id']}", {"status": "frozen"})
    assert frozen.status_code == 200, frozen.content
    assert frozen.json()["status"] == "frozen"

    # when money goes out of it, into it, or its hold is posted
    outgoing = api.transfer(customer["id"], world["id"], 1, reference="out-frozen")
    incoming = api.transfer(world["id"], customer["id"], 1, reference="in-frozen")
    post_hold = api.post(f"transactions/{hold['id']}/post")

    # then every one is refused with account_frozen and nothing moves
    assert_problem(outgoing, 409, "account_frozen")
    assert_problem(incoming, 409, "account_frozen")
    assert_problem(post_hold, 409, "account_frozen")
    assert not Transaction.objects.filter(reference__in=["out-frozen", "in-frozen"]).exists()
    assert Transaction.objects.get(pk=hold["id"]).status == "pending"
    assert _stored(customer["id"]) == (0, 1000, 10, 0)

    # and once unfrozen, the account works again
    unfrozen = api.patch(f"accounts/{customer['id']}", {"status": "open"})
    assert unfrozen.status_code == 200
    assert unfrozen.json()["status"] == "open"
    assert api.transfer(customer["id"], world["id"], 1, reference="out-open").status_code == 201
    assert api.transfer(world["id"], customer["id"], 1, reference="in-open").status_code == 201
    assert api.post(f"transactions/{hold['id']}/post").status_code == 200
    assert _stored(customer["id"]) == (11, 1001, 0, 0)


def test_a_hold_on_a_frozen_account_can_still_be_voided(api, funded):
    # given a hold, then the account frozen
    world, customer = funded
    hold = api.transfer(customer["id"], world["id"], 10, reference="hold", pending=True).json()
    api.patch(f"accounts/{customer['id']}", {"status": "frozen"})

    # when
    response = api.post(f"transactions/{hold['id']}/void")

    # then the hold is released
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "voided"
    assert _stored(customer["id"]) == (0, 1000, 0, 0)


def test_closing_an_account_with_a_balance_is_409_account_not_empty(api, funded):
    # given
    _, customer = funded

    # when
    response = api.patch(f"accounts/{customer['id']}", {"status": "closed"})

    # then
    assert_problem(response, 409, "account_not_empty")
    assert Account.objects.get(pk=customer["id"]).status == "open"


def test_closing_an_account_with_only_a_pending_hold_is_409_account_not_empty(api):
    # given an account with zero balance but a pending incoming hold
    world = api.account(name="world", allow_negative=True)
    account = api.account(name="acc")
    assert api.transfer(world["id"], account["id"], 5, reference="incoming", pending=True).status_code == 201

    # when
    response = api.patch(f"accounts/{account['id']}", {"status": "closed"})

    # then
    assert_problem(response, 409, "account_not_empty")
    assert Account.objects.get(pk=account["id"]).status == "open"


def test_a_closed_account_cannot_be_reopened_or_frozen_and_refuses_postings(api):
    # given an account emptied back to zero, then closed
    world = api.account(name="world", allow_negative=True)
    account = api.account(name="acc")
    assert api.transfer(world["id"], account["id"], 5, reference="in").status_code == 201
    assert api.transfer(account["id"], world["id"], 5, reference="out").status_code == 201
    closed = api.patch(f"accounts/{account['id']}", {"status": "closed"})
    assert closed.status_code == 200, closed.content
    assert closed.json()["status"] == "closed"

    # when it is reopened, frozen, or posted to
    reopen = api.patch(f"accounts/{account['id']}", {"status": "open"})
    freeze = api.patch(f"accounts/{account['id']}", {"status": "frozen"})
    posting = api.transfer(world["id"], account["id"], 1, reference="to-closed")

    # then each is refused with account_closed and it stays closed
    assert_problem(reopen, 409, "account_closed")
    assert_problem(freeze, 409, "account_closed")
    assert_problem(posting, 409, "account_closed")
    assert Account.objects.get(pk=account["id"]).status == "closed"
    assert not Transaction.objects.filter(reference="to-closed").exists()


# ------------------------------------------------------------------------------ lists


def test_accounts_are_filtered_by_currency_status_and_code(api):
    # given accounts in two currencies, one frozen, one with a code
    eur = api.account(name="eur", currency="EUR", code="eur-main")
    usd = api.account(name="usd", currency="USD")
    frozen = api.account(name="frozen", currency="USD")
    api.patch(f"accounts/{frozen['id']}", {"status": "frozen"})

    # when / then
    def ids(**params: Any) -> set[str]:
        response = api.get("accounts", **params)
        assert response.status_code == 200, response.content
        return {a["id"] for a in response.json()["results"]}

    assert ids(currency="USD") == {usd["id"], frozen["id"]}
    assert ids(currency="EUR") == {eur["id"]}
    assert ids(status="frozen") == {frozen["id"]}
    assert ids(status="open", currency="USD") == {usd["id"]}
    assert ids(code="eur-main") == {eur["id"]}
    assert ids(currency="GBP") == set()


def test_account_list_pages_with_a_cursor_newest_first(api):
    # given seven accounts
    created = [api.account(name=f"a{i}")["id"] for i in range(7)]

    # when the list is read two at a time, following next
    first = api.get("accounts", limit=2)
    assert len(first.json()["results"]) == 2
    items = api.all("accounts", limit=2)

    # then every account appears exactly once, newest first
    assert [a["id"] for a in items] == sorted(created, reverse=True)
    assert first.json()["previous"] is None


def test_postings_are_listed_newest_first_with_cursor_and_time_filters(api, funded):
    # given five payments out of the customer (after its funding)
    _, customer = funded
    shop = api.account(name="shop")
    payments = [api.transfer(customer["id"], shop["id"], 10 + i, reference=f"p{i}").json() for i in range(5)]

    # when its postings are read two at a time
    items = api.all(f"accounts/{customer['id']}/postings", limit=2)

    # then they come newest first, each naming its transaction, six in all
    assert [p["reference"] for p in items] == ["p4", "p3", "p2", "p1", "p0", "fund-customer"]
    assert [p["amount"] for p in items[:5]] == [14, 13, 12, 11, 10]
    assert all(p["direction"] == "debit" and p["status"] == "posted" for p in items[:5])
    assert items[0]["transaction"] == payments[4]["id"]
    assert [p["id"] for p in items] == sorted((p["id"] for p in items), reverse=True)
    assert len(items) == Posting.objects.filter(account_id=customer["id"]).count()

    # and created_after (inclusive) / created_before (exclusive) narrow them
    cut = payments[2]["created_at"]
    after = api.get(f"accounts/{customer['id']}/postings", created_after=cut).json()["results"]
    before = api.get(f"accounts/{customer['id']}/postings", created_before=cut).json()["results"]
    assert [p["reference"] for p in after] == ["p4", "p3", "p2"]
    assert [p["reference"] for p in before] == ["p1", "p0", "fund-customer"]


def test_postings_with_a_malformed_time_filter_are_400(api, funded):
    _, customer = funded

    response = api.get(f"accounts/{customer['id']}/postings", created_after="yesterday")

    assert_problem(response, 400, "invalid_timestamp")


# ------------------------------------------------------------------------------ balance as of


def test_balance_as_of_an_instant_between_two_transfers_returns_the_earlier_balance(api, funded):
    # given two payments at two instants
    _, customer = funded
    shop = api.account(name="shop")
    first = api.transfer(customer["id"], shop["id"], 100, reference="first").json()
    second = api.transfer(customer["id"], shop["id"], 250, reference="second").json()
    t1, t2 = parse_datetime(first["created_at"]), parse_datetime(second["created_at"])
    assert t1 < t2
    between = t1 + (t2 - t1) / 2

    # when the balance is asked for between them, before both, and now
    at_between = api.get(f"accounts/{customer['id']}/balance", as_of=between.isoformat())
    at_first = api.get(f"accounts/{customer['id']}/balance", as_of=first["created_at"])
    before_both = api.get(f"accounts/{customer['id']}/balance", as_of=(t1 - dt.timedelta(microseconds=1)).isoformat())
    now = api.get(f"accounts/{customer['id']}/balance")

    # then
    assert at_between.status_code == 200, at_between.content
    body = at_between.json()
    assert body["account"] == customer["id"]
    assert parse_datetime(body["as_of"]) == between
    assert (body["debits_posted"], body["credits_posted"], body["balance"], body["available"]) == (100, 1000, 900, 900)
    assert at_first.json()["balance"] == 900
    assert before_both.json()["balance"] == 1000
    assert (now.json()["balance"], now.json()["available"]) == (650, 650)


def test_balance_as_of_shows_a_hold_as_pending_until_it_was_posted(api, funded):
    # given a hold created at t1 and posted at t2
    _, customer = funded
    shop = api.account(name="shop")
    hold = api.transfer(customer["id"], shop["id"], 300, reference="hold", pending=True).json()
    posted = api.post(f"transactions/{hold['id']}/post").json()
    t1, t2 = parse_datetime(hold["created_at"]), parse_datetime(posted["posted_at"])
    between = t1 + (t2 - t1) / 2

    # when / then between them it was pending; after, posted
    mid = api.get(f"accounts/{customer['id']}/balance", as_of=between.isoformat()).json()
    assert (mid["debits_pending"], mid["debits_posted"], mid["balance"], mid["available"]) == (300, 0, 1000, 700)
    end = api.get(f"accounts/{customer['id']}/balance", as_of=t2.isoformat()).json()
    assert (end["debits_pending"], end["debits_posted"], end["balance"], end["available"]) == (0, 300, 700, 700)


def test_balance_as_of_a_timestamp_without_offset_is_read_as_utc(api, funded):
    # given a customer funded now
    _, customer = funded
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(tzinfo=None)

    # when the balance is asked for at a naive timestamp an hour from now
    response = api.get(f"accounts/{customer['id']}/balance", as_of=later.isoformat())

    # then it is taken as UTC (not a server error)
    assert response.status_code == 200, response.content
    assert response.json()["balance"] == 1000
    assert parse_datetime(response.json()["as_of"]) == later.replace(tzinfo=dt.UTC)


def test_balance_as_of_garbage_is_400_invalid_timestamp(api, funded):
    _, customer = funded

    response = api.get(f"accounts/{customer['id']}/balance", as_of="not-a-date")

    assert_problem(response, 400, "invalid_timestamp")


# ------------------------------------------------------------------------------ not found, auth


@pytest.mark.parametrize("suffix", ["", "/postings", "/balance"])
def test_an_unknown_account_id_in_the_url_is_404_not_found(api, suffix):
    response = api.get(f"accounts/acc_00000000000000000000000000{suffix}")

    assert_problem(response, 404, "not_found")


def test_patching_an_unknown_account_is_404_not_found(api):
    response = api.patch("accounts/acc_nope", {"name": "x"})

    assert_problem(response, 404, "not_found")


def test_account_calls_without_a_token_are_401(client, db):
    # when
    listing = client.get("/api/v1/accounts")
    creating = client.post(
        "/api/v1/accounts",
        '{"name": "x", "currency": "EUR", "normal_balance": "credit"}',
        content_type="application/json",
    )

    # then
    assert_problem(listing, 401, "not_authenticated")
    assert_problem(creating, 401, "not_authenticated")
    assert Account.objects.count() == 0


def test_a_read_only_token_can_list_accounts_but_not_create_or_change_them(api, signing_key):
    # given an account and a token with only ledger:read
    account = api.account(name="before")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {signing_key.mint(scope='ledger:read')}"}
    body = '{"name": "x", "currency": "EUR", "normal_balance": "credit"}'

    # when
    listing = api.client.get("/api/v1/accounts", **headers)
    creating = api.client.post("/api/v1/accounts", body, content_type="application/json", **headers)
    patching = api.client.patch(
        f"/api/v1/accounts/{account['id']}", '{"name": "after"}', content_type="application/json", **headers
    )

    # then
    assert listing.status_code == 200
    assert [a["id"] for a in listing.json()["results"]] == [account["id"]]
    assert_problem(creating, 403, "insufficient_scope")
    assert_problem(patching, 403, "insufficient_scope")
    assert Account.objects.count() == 1
    assert Account.objects.get().name == "before"


# ------------------------------------------------------------------------------ append-only


def test_deleting_an_account_row_is_refused_by_postgresql(api):
    # given
    account = api.account(name="keep")

    # when / then the trigger refuses, raising insufficient_privilege (a ProgrammingError)
    with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM ledger_account WHERE id = %s", [account["id"]])
    assert Account.objects.filter(pk=account["id"]).exists()
