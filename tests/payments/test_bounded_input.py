"""The payments service's bounded input: the kit's metadata limits (422), deep or duplicate-key JSON refused
by the parser (the 500-level metadata that once never answered), its body limit, and its currency allow list
being a subset of the kit's ISO 4217 list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.contrib import admin
from django.test import Client, RequestFactory

from devtools.infra import REPO_ROOT, venv_env
from services.payments.admin import CurrencyLimitAdmin, VelocityLimitAdmin
from services.payments.checks import check_currencies_are_iso_4217
from services.payments.models import CurrencyLimit, IdempotencyKey, Payment, VelocityLimit
from tests.harness import MANAGE, current_test_database_url
from tests.payments.conftest import LedgerAdmin, PaymentsAPI
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def accounts(ledger_admin: LedgerAdmin) -> tuple[str, str]:
    return ledger_admin.funded(100_000), ledger_admin.account()


def body(source: str, destination: str, **extra: object) -> dict:
    return {"amount": 1500, "currency": "EUR", "source_account": source, "destination_account": destination, **extra}


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({f"k{i}": str(i) for i in range(51)}, "metadata_too_many_keys"),
        ({"customer-reference-that-is-far-too-long-to-be-a-key": "c1"}, "metadata_key_too_long"),
        ({"note": "x" * 501}, "metadata_value_too_long"),
        ({"order": {"lines": [{"sku": "A" * 20, "qty": 1}] * 30}}, "metadata_value_too_long"),
    ],
    ids=["too-many-keys", "long-key", "long-value", "long-nested-value"],
)
def test_metadata_over_a_limit_is_a_422_field_error_and_creates_nothing(api: PaymentsAPI, accounts, metadata, code):
    source, destination = accounts

    response = api.create(body(source, destination, metadata=metadata), key="meta-1")

    problem = assert_problem(response, 422, "invalid_metadata")
    assert [e["code"] for e in problem["errors"]] == [code]
    assert not Payment.objects.exists()
    # the refusal created nothing, so the key is free again (as Stripe does)
    assert not IdempotencyKey.objects.filter(key="meta-1").exists()


def test_metadata_at_every_limit_fully_escaped_fits_the_body_limit(api: PaymentsAPI, accounts):
    # given the largest metadata the limits allow, every character sent as a \u escape
    source, destination = accounts
    metadata = {f"{i:02d}" + "é" * 38: "é" * 500 for i in range(50)}
    text = json.dumps(body(source, destination, metadata=metadata), ensure_ascii=True)
    assert len(text) < settings.ATRIUM_MAX_BODY_BYTES

    # when it is posted
    response = api.create(None, raw=text)

    # then it is accepted as it is
    assert response.status_code == 201, response.content[:300]
    assert response.json()["metadata"] == metadata


def test_a_body_over_the_payments_limit_is_413(api: PaymentsAPI, accounts):
    source, destination = accounts
    text = json.dumps(body(source, destination, description="d" * (settings.ATRIUM_MAX_BODY_BYTES + 1)))

    response = api.create(None, raw=text)

    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["max_body_bytes"] == settings.ATRIUM_MAX_BODY_BYTES == 256 * 1024


@pytest.mark.parametrize("depth", [33, 500, 5_000])
def test_metadata_nested_deep_is_a_prompt_400_not_a_500(payments_env, module_key, depth):
    # given a client that returns 500 responses instead of raising, and metadata nested 500 levels deep
    api = PaymentsAPI(Client(raise_request_exception=False), module_key)
    nested = '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)
    text = '{"amount": 1, "currency": "EUR", "source_account": "acc_a", "destination_account": "acc_b", '
    text += f'"metadata": {nested}}}'

    # when it is posted
    started = time.monotonic()
    response = api.create(None, raw=text, key=f"deep-{depth}")

    # then the parser refuses it at once
    assert_problem(response, 400, "json_too_deep")
    assert time.monotonic() - started < 2
    assert not Payment.objects.exists()


def test_a_duplicate_amount_is_refused_not_last_wins(api: PaymentsAPI, accounts):
    source, destination = accounts
    text = json.dumps(body(source, destination))[:-1] + ', "amount": 150000}'

    response = api.create(None, raw=text)

    problem = assert_problem(response, 400, "duplicate_key")
    assert problem["errors"][0]["pointer"] == "#/amount"
    assert not Payment.objects.exists()


# ---------------------------------------------------------------------------------------- currency allow list


def test_the_default_allow_list_is_a_subset_of_the_iso_list():
    assert check_currencies_are_iso_4217(None) == []


@pytest.mark.parametrize("codes", [["EUR", "XXX"], ["EUR", "eur"], ["XAU"], []])
def test_an_allow_list_naming_a_non_iso_code_fails_the_system_check(settings, codes):
    settings.PAYMENTS_CURRENCIES = codes

    (error,) = check_currencies_are_iso_4217(None)

    assert error.id in ("payments.E101", "payments.E102")
    assert error.is_serious()


def test_the_payments_process_refuses_to_start_with_a_non_iso_code():
    # given the payments service configured to accept XTS (ISO's testing code)
    env = venv_env({k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PAYMENTS_"))})
    env.update(
        ATRIUM_ENV="test",
        PAYMENTS_DATABASE_URL=current_test_database_url(),
        PAYMENTS_CURRENCIES="EUR,XTS",
    )

    # when its checks run
    result = subprocess.run(
        [sys.executable, MANAGE["payments"], "check"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )

    # then they fail, naming the code
    assert result.returncode != 0
    assert "payments.E101" in result.stderr
    assert "XTS" in result.stderr


@pytest.mark.parametrize(
    ("admin_class", "model", "data"),
    [
        (CurrencyLimitAdmin, CurrencyLimit, {"max_amount": 5000, "enabled": True}),
        (VelocityLimitAdmin, VelocityLimit, {"name": "v", "window_hours": 24, "max_count": 3, "enabled": True}),
    ],
    ids=["currency-limit", "velocity-limit"],
)
def test_a_screening_rule_in_a_currency_payments_do_not_accept_is_refused_in_the_admin(admin_class, model, data):
    form_class = admin_class(model, admin.site).get_form(RequestFactory().get("/"))

    for currency in ("XXX", "eur", "XAU"):
        form = form_class(data={**data, "currency": currency})
        assert not form.is_valid()
        assert "currency" in form.errors
    assert form_class(data={**data, "currency": "EUR"}).is_valid()
