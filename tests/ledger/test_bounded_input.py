"""The ledger's bounded input: ISO 4217 currencies only, the kit's metadata limits on accounts and transactions
(batch items failing alone), duplicate keys refused, and its body limits (1 MiB, 8 MiB for the batch)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings

from services.ledger.models import Account, Transaction
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(api):
    return api.account(name="shop")


def _legs(source: str, destination: str, amount: int = 10) -> list[dict[str, Any]]:
    return [
        {"account": source, "direction": "debit", "amount": amount},
        {"account": destination, "direction": "credit", "amount": amount},
    ]


# ------------------------------------------------------------------------------------------------ currencies


@pytest.mark.parametrize("currency", ["XXX", "XTS", "XAU", "XDR", "ABC", "ZWL"])
def test_an_account_in_a_code_that_is_not_an_active_currency_is_invalid_currency(api, currency):
    # when an account is opened in a code ISO 4217 does not give a currency (or no longer does)
    response = api.post("accounts", {"name": "x", "currency": currency, "normal_balance": "credit"})

    # then it is refused with the stable code, naming the field, and nothing is stored
    body = assert_problem(response, 422, "invalid_currency")
    assert body["errors"][0]["field"] == "currency"
    assert not Account.objects.exists()


@pytest.mark.parametrize("currency", ["EUR", "JPY", "XOF", "CLF", "ZWG"])
def test_an_account_in_an_active_currency_is_opened(api, currency):
    assert api.account(currency=currency)["currency"] == currency


def test_a_transaction_naming_an_invalid_currency_is_invalid_currency_not_a_mismatch(api, funded, shop):
    _, customer = funded

    response = api.transfer(customer["id"], shop["id"], 10, currency="XXX")

    assert_problem(response, 422, "invalid_currency")


# ------------------------------------------------------------------------------------------------ metadata


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({f"k{i}": i for i in range(51)}, "metadata_too_many_keys"),
        ({"k" * 41: "v"}, "metadata_key_too_long"),
        ({"note": "v" * 501}, "metadata_value_too_long"),
        ({"order": {"lines": list(range(300))}}, "metadata_value_too_long"),
    ],
    ids=["too-many-keys", "long-key", "long-value", "long-nested-value"],
)
def test_account_metadata_over_a_limit_is_a_422_field_error(api, metadata, code):
    response = api.post("accounts", {"name": "x", "currency": "EUR", "normal_balance": "credit", "metadata": metadata})

    body = assert_problem(response, 422, "invalid_metadata")
    assert [e["code"] for e in body["errors"]] == [code]
    assert body["errors"][0]["pointer"].startswith("#/metadata")
    assert not Account.objects.exists()


def test_account_metadata_within_the_limits_nested_values_included_is_kept(api):
    metadata = {"tier": "gold", "limits": {"daily": 500, "tags": ["vip"]}, "score": 0.5, "active": True}

    account = api.account(metadata=metadata)

    assert account["metadata"] == metadata


def test_changing_an_account_to_metadata_over_a_limit_is_refused_and_changes_nothing(api):
    account = api.account(metadata={"tier": "gold"})

    response = api.patch(f"accounts/{account['id']}", {"name": "renamed", "metadata": {"note": "v" * 501}})

    assert_problem(response, 422, "invalid_metadata")
    stored = Account.objects.get(id=account["id"])
    assert (stored.name, stored.metadata) == ("account", {"tier": "gold"})


def test_transaction_metadata_over_a_limit_is_a_422_field_error(api, funded, shop):
    _, customer = funded

    response = api.transfer(customer["id"], shop["id"], 10, metadata={"k" * 100: 1})

    body = assert_problem(response, 422, "invalid_metadata")
    assert body["errors"][0]["code"] == "metadata_key_too_long"
    assert not Transaction.objects.filter(reference__startswith="ref-").exists()


def test_the_payments_services_metadata_is_accepted(api, funded, shop):
    # the payments service sends its payment id as metadata with every hold
    _, customer = funded

    response = api.transfer(customer["id"], shop["id"], 10, metadata={"payment": "pay_01jabcdefghjkmnpqrstvwxyz0"})

    assert response.status_code == 201, response.content


def test_a_batch_item_with_bad_metadata_or_currency_fails_alone(api, funded, shop):
    # given a batch where the second item's metadata and the third's currency are refused
    _, customer = funded
    items = [
        {"reference": f"b-{i}", "postings": _legs(customer["id"], shop["id"]), **extra}
        for i, extra in enumerate([{}, {"metadata": {"note": "v" * 600}}, {"currency": "XTS"}, {"metadata": {}}])
    ]

    response = api.post("transactions/batch", {"transactions": items})

    # then those two fail with their codes and the others are created
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        ("created", None),
        ("error", "invalid_metadata"),
        ("error", "invalid_currency"),
        ("created", None),
    ]
    assert "metadata.note" in results[1]["detail"]


# ------------------------------------------------------------------------------------------------ JSON


def test_a_duplicate_key_in_a_transfer_is_refused_not_last_wins(api, funded, shop):
    # given a posting naming its amount twice
    _, customer = funded
    text = (
        '{"reference": "dup", "postings": ['
        f'{{"account": "{customer["id"]}", "direction": "debit", "amount": 1, "amount": 900}},'
        f'{{"account": "{shop["id"]}", "direction": "credit", "amount": 900}}]}}'
    )

    response = api.client.post("/api/v1/transactions", text, content_type="application/json", **api.headers)

    body = assert_problem(response, 400, "duplicate_key")
    assert body["errors"][0]["pointer"] == "#/postings/0/amount"
    assert not Transaction.objects.filter(reference="dup").exists()


def test_deep_account_metadata_is_json_too_deep(api):
    metadata = "1"
    for _ in range(600):
        metadata = '{"m": ' + metadata + "}"
    text = '{"name": "x", "currency": "EUR", "normal_balance": "credit", "metadata": ' + metadata + "}"

    response = api.client.post("/api/v1/accounts", text, content_type="application/json", **api.headers)

    assert_problem(response, 400, "json_too_deep")


# ------------------------------------------------------------------------------------------------ body limits


def _padded(document: Any, size: int) -> bytes:
    text = json.dumps(document).encode()
    return text + b" " * (size - len(text))


def test_a_2_mib_account_body_is_413_not_a_field_error(api):
    # given an account whose name alone is 2 MiB
    body = {"name": "n" * (2 * 1024 * 1024), "currency": "EUR", "normal_balance": "credit"}

    response = api.post("accounts", body)

    # then the body limit answers, before any field is looked at
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["max_body_bytes"] == settings.ATRIUM_MAX_BODY_BYTES == 1024 * 1024


def test_the_batch_endpoint_takes_bodies_up_to_its_own_larger_limit(api, funded, shop):
    # given a batch body of 3 MiB (over the ledger's 1 MiB, under the batch's 8 MiB)
    _, customer = funded
    batch = {"transactions": [{"reference": "big-1", "postings": _legs(customer["id"], shop["id"])}]}
    data = _padded(batch, 3 * 1024 * 1024)

    response = api.client.post("/api/v1/transactions/batch", data, content_type="application/json", **api.headers)

    # then it is processed
    assert response.status_code == 200, response.content[:500]
    assert response.json()["results"][0]["status"] == "created"


def test_a_batch_body_over_the_batch_limit_is_413(api):
    data = _padded({"transactions": []}, settings.LEDGER_MAX_BATCH_BODY_BYTES + 1)

    response = api.client.post("/api/v1/transactions/batch", data, content_type="application/json", **api.headers)

    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["max_body_bytes"] == settings.LEDGER_MAX_BATCH_BODY_BYTES


def test_other_batch_endpoints_keep_the_ledger_limit(api):
    data = _padded({"action": "post", "transactions": []}, 2 * 1024 * 1024)

    response = api.client.post(
        "/api/v1/transactions/batch/settle", data, content_type="application/json", **api.headers
    )

    assert_problem(response, 413, "payload_too_large")
