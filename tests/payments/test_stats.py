"""``GET /api/v1/payments/stats``: payments of the last hour or day by status, counted and summed per currency."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.urls import resolve
from django.utils import timezone

from services.payments.models import Payment
from tests.problems import assert_problem
from tests.tokens import JWKSServer, SigningKey

pytestmark = pytest.mark.django_db

STATUSES = ["created", "screening", "review", "processing", "settled", "rejected", "failed", "canceled"]


def _payment(*, amount: int, currency: str = "EUR", status: str = "settled", age: dt.timedelta) -> Payment:
    n = Payment.objects.count()
    return Payment.objects.create(
        client_id="cli_merchant",
        amount=amount,
        currency=currency,
        source_account=f"acc_src{n}",
        destination_account=f"acc_dst{n}",
        status=status,
        created_at=timezone.now() - age,
    )


def _get(client: Client, key: SigningKey, *, scope: str = "payments:read", aud: str = "payments", **params: Any):
    token = key.mint(aud=aud, sub="cli_portal_service", scope=scope)
    return client.get("/api/v1/payments/stats", params, HTTP_AUTHORIZATION=f"Bearer {token}")


def _by_status(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["status"]: s for s in body["statuses"]}


def test_stats_count_and_sum_each_status_per_currency_over_the_window(
    client: Client, jwks_server: JWKSServer, signing_key: SigningKey
):
    # given payments of the last minutes, of earlier today and of last week
    minutes = dt.timedelta(minutes=5)
    _payment(amount=1500, age=minutes)
    _payment(amount=2500, age=minutes)
    _payment(amount=700, currency="USD", age=minutes)
    _payment(amount=99, status="failed", age=minutes)
    _payment(amount=10_000, age=dt.timedelta(hours=5))
    _payment(amount=123, currency="GBP", status="rejected", age=dt.timedelta(hours=20))
    _payment(amount=5_000_000, age=dt.timedelta(days=3))

    # when the last hour and the last day are asked for
    hour = _get(client, signing_key, window="1h")
    day = _get(client, signing_key, window="24h")

    # then each counts its own payments, per status, with the amounts per currency in minor units
    assert hour.status_code == 200, hour.content
    body = hour.json()
    assert body["window"] == "1h"
    assert body["count"] == 4
    assert [s["status"] for s in body["statuses"]] == STATUSES  # every status, zeros included
    settled = _by_status(body)["settled"]
    assert settled["count"] == 3
    assert settled["amounts"] == [
        {"currency": "EUR", "count": 2, "amount": 4000},
        {"currency": "USD", "count": 1, "amount": 700},
    ]
    assert _by_status(body)["failed"]["amounts"] == [{"currency": "EUR", "count": 1, "amount": 99}]
    assert _by_status(body)["created"] == {"status": "created", "count": 0, "amounts": []}
    since, until = dt.datetime.fromisoformat(body["since"]), dt.datetime.fromisoformat(body["until"])
    assert until - since == dt.timedelta(hours=1)

    assert day.status_code == 200, day.content
    day_body = _by_status(day.json())
    assert day.json()["count"] == 6
    assert day_body["settled"]["amounts"][0] == {"currency": "EUR", "count": 3, "amount": 14_000}
    assert day_body["rejected"]["amounts"] == [{"currency": "GBP", "count": 1, "amount": 123}]


def test_stats_default_to_the_last_hour(client: Client, jwks_server: JWKSServer, signing_key: SigningKey):
    response = _get(client, signing_key)

    assert response.status_code == 200, response.content
    assert response.json()["window"] == "1h"
    assert response.json()["count"] == 0


def test_sums_past_a_bigint_stay_exact(client: Client, jwks_server: JWKSServer, signing_key: SigningKey):
    big = 2**62
    _payment(amount=big, age=dt.timedelta(minutes=1))
    _payment(amount=big, age=dt.timedelta(minutes=2))

    body = _get(client, signing_key, window="1h").json()

    assert _by_status(body)["settled"]["amounts"] == [{"currency": "EUR", "count": 2, "amount": 2**63}]


@pytest.mark.parametrize("window", ["2h", "", "1H", "24h ", "1h;drop table", "x" * 300])
def test_an_unknown_window_is_a_problem_naming_the_windows(
    client: Client, jwks_server: JWKSServer, signing_key: SigningKey, window: str
):
    response = _get(client, signing_key, window=window)

    problem = assert_problem(response, 400, "invalid_window")
    assert problem["windows"] == ["1h", "24h"]


def test_stats_need_a_payments_read_token(client: Client, jwks_server: JWKSServer, signing_key: SigningKey):
    # no token, a token for another service, a token without payments:read
    assert_problem(client.get("/api/v1/payments/stats"), 401, "not_authenticated")
    assert_problem(_get(client, signing_key, aud="ledger", scope="ledger:read"), 403, "invalid_audience")
    assert_problem(_get(client, signing_key, scope="payments:write"), 403, "insufficient_scope")


def test_stats_is_not_read_as_a_payment_id(client: Client, jwks_server: JWKSServer, signing_key: SigningKey):
    # the literal path is never /payments/{id} (whatever the order of the routes); the slashed spelling answers 308
    response = _get(client, signing_key)
    assert response.status_code == 200
    assert resolve("/api/v1/payments/stats").url_name == "payment-stats"
    assert resolve("/api/v1/payments/stats2").url_name == "payment-detail"
    token = signing_key.mint(aud="payments", scope="payments:read")
    slashed = client.get("/api/v1/payments/stats/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert slashed.status_code == 308
    assert slashed["Location"].endswith("/api/v1/payments/stats")
