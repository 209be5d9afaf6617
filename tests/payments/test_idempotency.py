"""Idempotency-Key, Stripe's semantics: against a live payments service (gunicorn, 4 threads) for the
concurrent cases, and a live payments worker to settle the payment before replaying."""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from django.test import RequestFactory
from django.urls import resolve
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.payments import idempotency, services
from services.payments.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from services.payments.models import IdempotencyKey, Payment
from tests.harness import AtriumProcess, ProcessHarness
from tests.payments.conftest import PAYMENTS_CLIENT, LedgerAdmin, PaymentsAPI, TokenServer
from tests.tokens import JWKSServer, SigningKey


@pytest.fixture(scope="module")
def live_payments(
    module_harness: ProcessHarness,
    live_ledger: AtriumProcess,
    token_servers: tuple[JWKSServer, TokenServer],
) -> AtriumProcess:
    jwks, tokens = token_servers
    env = {
        "JWT_JWKS_URL": jwks.url,
        "LEDGER_URL": live_ledger.url or "",
        "ATRIUM_TOKEN_URL": tokens.url,
        "PAYMENTS_CLIENT_ID": PAYMENTS_CLIENT,
        "PAYMENTS_CLIENT_SECRET": "payments-secret",
        "ATRIUM_OUTBOX_RELAY": "off",
    }
    web = module_harness.web("payments", env=env)
    module_harness.worker("payments", database_url=web.env["PAYMENTS_DATABASE_URL"], env=env)
    return web


def http(live: AtriumProcess, key: SigningKey, client_id: str = "cli_shop") -> httpx.Client:
    token = key.mint(aud="payments", sub=client_id, scope="payments:read payments:write")
    return httpx.Client(base_url=live.url or "", timeout=30, headers={"Authorization": f"Bearer {token}"})


def order(source: str, destination: str, amount: int = 2500) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR", "source_account": source, "destination_account": destination}


def test_twenty_concurrent_posts_with_one_key_make_one_payment(
    live_payments: AtriumProcess, ledger_admin: LedgerAdmin, module_key: SigningKey
):
    source, destination = ledger_admin.funded(100_000), ledger_admin.account()
    body = order(source, destination)

    def post(_: int) -> httpx.Response:
        with http(live_payments, module_key) as client:
            return client.post("/api/v1/payments", json=body, headers={"Idempotency-Key": "order-20"})

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(post, range(20)))

    created = [r for r in responses if r.status_code == 201]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(created) + len(in_progress) == 20, [r.status_code for r in responses]
    assert len({r.json()["id"] for r in created}) == 1
    originals = [r for r in created if r.headers.get("Idempotent-Replayed") != "true"]
    assert len(originals) == 1
    assert all(r.json() == originals[0].json() for r in created)
    assert all(r.json()["code"] == "idempotency_key_in_progress" for r in in_progress)
    with http(live_payments, module_key) as client:
        mine = client.get("/api/v1/payments", params={"account": source}).json()["results"]
    assert [p["id"] for p in mine] == [originals[0].json()["id"]]


def test_a_different_body_with_the_key_is_422_and_a_settled_payment_replays_its_201(
    live_payments: AtriumProcess, ledger_admin: LedgerAdmin, module_key: SigningKey
):
    source, destination = ledger_admin.funded(100_000), ledger_admin.account()
    with http(live_payments, module_key) as client:
        first = client.post("/api/v1/payments", json=order(source, destination), headers={"Idempotency-Key": "k1"})
        assert first.status_code == 201, first.text
        assert first.json()["status"] == "created"

        other = client.post(
            "/api/v1/payments", json=order(source, destination, 2501), headers={"Idempotency-Key": "k1"}
        )
        assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")

        # the live worker settles it
        payment_id = first.json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/payments/{payment_id}").json()["status"] != "settled":
            assert time.monotonic() < deadline, "not settled in 30 s"
            time.sleep(0.1)

        replay = client.post("/api/v1/payments", json=order(source, destination), headers={"Idempotency-Key": "k1"})
        assert replay.status_code == 201
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json() == first.json()  # the original body, status "created" and all
        # keys are per client: another client's k1 is another payment
        with http(live_payments, module_key, "cli_other") as other_client:
            theirs = other_client.post(
                "/api/v1/payments", json=order(source, destination), headers={"Idempotency-Key": "k1"}
            )
        assert theirs.status_code == 201
        assert theirs.json()["id"] != payment_id
        assert "Idempotent-Replayed" not in theirs.headers
    assert ledger_admin.balance(destination)["balance"] == 2500


@pytest.mark.django_db(transaction=True)
def test_a_bad_key_header_is_a_400(api: PaymentsAPI, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(1000), ledger_admin.account()
    for bad in ("", "x" * 256, "has space", "naïve"):
        response = api.create(order(source, destination), key=bad)
        assert response.status_code == 400, bad
        assert response.json()["code"] == "invalid_idempotency_key"
    assert not Payment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_same_request_through_either_spelling_of_the_url_is_a_replay(api: PaymentsAPI, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(1000), ledger_admin.account()
    body = json.dumps(order(source, destination, 10))
    headers = {**api.headers, "HTTP_IDEMPOTENCY_KEY": "spelled-twice"}

    # given a payment made through the slashed spelling, which is redirected to the canonical one
    first = api.client.post("/api/v1/payments/", body, content_type="application/json", follow=True, **headers)
    assert first.redirect_chain == [("/api/v1/payments", 308)]
    assert first.status_code == 201, first.content

    # when the same request is sent to the canonical spelling
    again = api.client.post("/api/v1/payments", body, content_type="application/json", **headers)

    # then it is the same request: the saved answer, not idempotency_key_reused
    assert again.status_code == 201, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Payment.objects.count() == 1


def test_the_key_fingerprint_takes_the_route_not_the_raw_path():
    # given a request whose raw path is not its route's canonical spelling
    request = RequestFactory().post("/api/v1/payments/", {}, content_type="application/json")
    request.resolver_match = resolve("/api/v1/payments")

    # then its route is the canonical path of the pattern it resolved to
    assert idempotency.request_route(request) == "/api/v1/payments"


@pytest.mark.django_db(transaction=True)
def test_a_refused_request_spends_no_key_and_a_dead_claim_is_taken_over(api: PaymentsAPI, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(1000), ledger_admin.account()
    # a validation failure saves nothing: the key is free for the corrected request
    assert api.create(order(source, destination, 0), key="fix-me").status_code == 422
    assert not IdempotencyKey.objects.exists()
    assert api.create(order(source, destination, 10), key="fix-me").status_code == 201

    # a claim whose request died (no answer) blocks the key until its lock passes, then is taken over
    fingerprint = idempotency.request_hash("POST", "/api/v1/payments", {"a": 1})
    held = idempotency.claim(client_id="cli_x", key="dead", fingerprint=fingerprint)
    assert isinstance(held, idempotency.Claim)
    with pytest.raises(IdempotencyKeyInProgress):
        idempotency.claim(client_id="cli_x", key="dead", fingerprint=fingerprint)
    with pytest.raises(IdempotencyKeyReused):
        idempotency.claim(client_id="cli_x", key="dead", fingerprint="other")
    IdempotencyKey.objects.filter(id=held.id).update(locked_until=timezone.now() - dt.timedelta(seconds=1))
    again = idempotency.claim(client_id="cli_x", key="dead", fingerprint=fingerprint)
    assert isinstance(again, idempotency.Claim)
    assert again.token != held.token
    # the first request, should it wake up, can no longer finish with that key: its payment is rolled back
    payments_before, events_before = Payment.objects.count(), OutboxEvent.objects.count()
    with pytest.raises(IdempotencyKeyInProgress):
        services.payment_create(
            client_id="cli_x",
            amount=10,
            currency="EUR",
            source_account=source,
            destination_account=destination,
            claim=held,
        )
    assert (Payment.objects.count(), OutboxEvent.objects.count()) == (payments_before, events_before)


@pytest.mark.django_db(transaction=True)
def test_keys_expire_after_24_hours_and_are_purged(api: PaymentsAPI, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(1000), ledger_admin.account()
    first = api.create(order(source, destination, 10), key="daily").json()
    IdempotencyKey.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    second = api.create(order(source, destination, 10), key="daily")

    assert second.status_code == 201
    assert second.json()["id"] != first["id"]
    IdempotencyKey.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert idempotency.purge() == 1
    assert not IdempotencyKey.objects.exists()
