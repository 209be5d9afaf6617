"""The payments API: creation (checked against the live ledger), listing, detail, cancel, and errors."""

from __future__ import annotations

import pytest

from services.kit.models import OutboxEvent
from services.payments.models import Payment
from services.payments.processing import advance
from tests.payments.conftest import LedgerAdmin, PaymentsAPI

pytestmark = pytest.mark.django_db(transaction=True)


def body(source: str, destination: str, amount: int = 1500, **extra: object) -> dict:
    return {"amount": amount, "currency": "EUR", "source_account": source, "destination_account": destination, **extra}


@pytest.fixture
def accounts(ledger_admin: LedgerAdmin) -> tuple[str, str]:
    return ledger_admin.funded(100_000), ledger_admin.account()


def test_a_payment_is_accepted_at_once_as_created_with_its_events(api: PaymentsAPI, accounts):
    source, destination = accounts
    response = api.create(body(source, destination, description="rent", metadata={"invoice": "INV-7"}))

    assert response.status_code == 201, response.content
    payment = response.json()
    assert payment["id"].startswith("pay_")
    assert payment["status"] == "created"
    assert (payment["amount"], payment["currency"]) == (1500, "EUR")
    assert (payment["source_account"], payment["destination_account"]) == (source, destination)
    assert (payment["description"], payment["metadata"]) == ("rent", {"invoice": "INV-7"})
    assert payment["ledger_transaction"] is None
    assert (payment["failure_code"], payment["failure_message"]) == ("", "")
    assert [h["status"] for h in payment["status_history"]] == ["created"]
    assert set(payment) >= {"created_at", "updated_at"}
    # the domain event and the audit event were written with it
    events = {e.topic: e.payload for e in OutboxEvent.objects.all()}
    assert events["events"]["type"] == "payment.created"
    assert events["events"]["data"]["id"] == payment["id"]
    assert events["audit"]["action"] == "payments.payment.created"
    assert events["audit"]["actor"]["id"] == "cli_merchant"
    assert events["audit"]["object"] == {"type": "payment", "id": payment["id"]}


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({"amount": 0}, "invalid_amount", 422),
        ({"amount": -5}, "invalid_amount", 422),
        ({"amount": 1.5}, "invalid_amount", 422),
        ({"amount": "100"}, "invalid_amount", 422),
        ({"amount": True}, "invalid_amount", 422),
        ({"amount": 2**63}, "invalid_amount", 422),
        ({"amount": 2**63 - 1}, "amount_too_large", 422),
        ({"amount": 1_000_000_000_001}, "amount_too_large", 422),
        ({"currency": "XYZ"}, "unsupported_currency", 422),
        ({"currency": "eur"}, "unsupported_currency", 422),
        ({"currency": 978}, "unsupported_currency", 422),
        ({"destination_account": "SOURCE"}, "same_account", 422),
        ({"destination_account": "acc_00000000000000000000000000"}, "account_not_found", 422),
        ({"source_account": "acc_00000000000000000000000000"}, "account_not_found", 422),
        ({"currency": "USD"}, "currency_mismatch", 422),
        ({"colour": "blue"}, "validation_error", 400),
        ({"metadata": "x"}, "validation_error", 400),
        ({"source_account": None}, "validation_error", 400),
    ],
)
def test_bad_input_is_a_problem_with_a_stable_code_and_creates_nothing(
    api: PaymentsAPI, accounts, change, code, status
):
    source, destination = accounts
    request = body(source, destination)
    request.update({k: (source if v == "SOURCE" else v) for k, v in change.items()})

    response = api.create(request)

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert not Payment.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_malformed_json_and_missing_fields_are_problems_not_500s(api: PaymentsAPI, accounts):
    assert api.create(None, raw="{not json").json()["code"] in ("parse_error", "malformed_json")
    missing = api.create({"amount": 10})
    assert missing.status_code == 400
    assert {e["field"] for e in missing.json()["errors"]} >= {"currency", "source_account", "destination_account"}
    assert api.create(None, raw="[1, 2]").status_code == 400
    assert not Payment.objects.exists()


def test_tokens_need_the_payments_scopes(api: PaymentsAPI, accounts, module_key):
    source, destination = accounts
    reader = module_key.mint(aud="payments", sub="cli_reader", scope="payments:read")
    response = api.client.post(
        "/api/v1/payments",
        body(source, destination),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {reader}",
    )
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert api.client.get("/api/v1/payments").status_code == 401


def test_list_filters_and_detail(api: PaymentsAPI, accounts, ledger_admin: LedgerAdmin):
    source, destination = accounts
    other = ledger_admin.funded(5_000)
    first = api.create(body(source, destination, amount=100)).json()
    second = api.create(body(other, destination, amount=200)).json()
    api.cancel(second["id"])

    everything = api.get("payments").json()
    assert [p["id"] for p in everything["results"]] == [second["id"], first["id"]]  # newest first
    assert [p["id"] for p in api.get("payments", status="canceled").json()["results"]] == [second["id"]]
    assert [p["id"] for p in api.get("payments", account=source).json()["results"]] == [first["id"]]
    assert len(api.get("payments", account=destination).json()["results"]) == 2
    after = api.get("payments", created_after=second["created_at"]).json()["results"]
    assert [p["id"] for p in after] == [second["id"]]
    page = api.get("payments", limit=1).json()
    assert len(page["results"]) == 1
    assert page["next"]
    assert api.get(f"payments/{first['id']}").json() == first
    missing = api.get("payments/pay_00000000000000000000000000")
    assert (missing.status_code, missing.json()["code"]) == (404, "payment_not_found")
    assert api.get("payments", status="nonsense").status_code == 400


def test_cancel_while_created_and_while_screening_and_not_after(api: PaymentsAPI, accounts):
    source, destination = accounts
    # created → canceled
    created = api.create(body(source, destination)).json()
    canceled = api.cancel(created["id"])
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert [h["status"] for h in canceled.json()["status_history"]] == ["created", "canceled"]
    # a worker arriving later leaves it canceled
    assert advance(created["id"]).status == "canceled"

    # screening → canceled
    screening = api.create(body(source, destination)).json()
    Payment.objects.filter(id=screening["id"]).update(status="screening")
    assert api.cancel(screening["id"]).json()["status"] == "canceled"

    # processing, settled, rejected, failed, canceled: 409 payment_not_cancelable
    for status in ("processing", "settled", "rejected", "failed", "canceled"):
        later = api.create(body(source, destination)).json()
        Payment.objects.filter(id=later["id"]).update(status=status)
        refused = api.cancel(later["id"])
        assert refused.status_code == 409, status
        assert refused.json()["code"] == "payment_not_cancelable"
        assert Payment.objects.get(id=later["id"]).status == status
    assert api.cancel("pay_00000000000000000000000000").status_code == 404


def test_the_ledger_being_unreachable_at_creation_is_a_503_and_spends_no_key(api: PaymentsAPI, accounts, settings):
    from devtools.infra import free_port
    from services.payments.ledger import ledger_reset

    source, destination = accounts
    live = settings.LEDGER_URL
    settings.LEDGER_URL = f"http://127.0.0.1:{free_port()}"
    ledger_reset()

    response = api.create(body(source, destination), key="k-503")

    assert response.status_code == 503
    assert response.json()["code"] in ("upstream_unavailable", "circuit_open")
    assert not Payment.objects.exists()
    # the key was not spent: the same request succeeds once the ledger is back
    settings.LEDGER_URL = live
    ledger_reset()
    again = api.create(body(source, destination), key="k-503")
    assert again.status_code == 201, again.content
    assert "Idempotent-Replayed" not in again


def test_the_largest_amount_is_a_setting_per_currency_with_a_default(api: PaymentsAPI, accounts, settings):
    # given a default cap and a tighter one for EUR
    source, destination = accounts
    settings.PAYMENTS_MAX_AMOUNT = 5_000
    settings.PAYMENTS_MAX_AMOUNTS = {"EUR": 2_000}

    # then EUR payments are held to their own cap, inclusive, with the limit named in the problem
    assert api.create(body(source, destination, amount=2_000)).status_code == 201
    refused = api.create(body(source, destination, amount=2_001))
    assert (refused.status_code, refused.json()["code"], refused.json()["max_amount"]) == (
        422,
        "amount_too_large",
        2_000,
    )
    # and without a currency of its own, the default applies
    settings.PAYMENTS_MAX_AMOUNTS = {"USD": 10}
    assert api.create(body(source, destination, amount=5_000)).status_code == 201
    assert api.create(body(source, destination, amount=5_001)).json()["code"] == "amount_too_large"
    assert Payment.objects.filter(amount__gt=5_000).count() == 0
