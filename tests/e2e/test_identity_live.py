"""Tokens from the live portal, verified by a live ledger against the portal's JWKS over HTTP."""

from __future__ import annotations

import base64
import time

import httpx
import jwt
import pytest
from django.conf import settings

from portal.identity.keys import signing_key
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def live_ledger(module_harness, jwks_env):
    """One ledger (own database) trusting the live portal's keys, shared by this module."""
    return module_harness.web("ledger", env=jwks_env)


def _call(ledger, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{ledger.url}/api/v1/whoami", headers=headers, timeout=10)


def test_ledger_accepts_a_portal_token_minted_for_it(live_ledger, all_access_client, get_token):
    # given a token from the portal for audience "ledger"
    token = get_token(*all_access_client, audience="ledger")

    # when the ledger is called with it
    response = _call(live_ledger, token)

    # then the ledger verified it locally and knows the caller and its scopes
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["service"] == "ledger"
    assert body["client_id"] == all_access_client[0]
    assert body["scopes"] == ["ledger:read", "ledger:write"]


def test_ledger_refuses_a_call_without_a_token(live_ledger):
    response = _call(live_ledger, None)

    body = assert_problem(response, 401, "not_authenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["instance"] == "/api/v1/whoami"


def test_ledger_refuses_a_token_minted_for_payments(live_ledger, all_access_client, get_token):
    token = get_token(*all_access_client, audience="payments")

    assert_problem(_call(live_ledger, token), 403, "invalid_audience")


def test_ledger_refuses_an_expired_token(live_ledger, all_access_client):
    # given a token signed with the portal's real key that expired a minute ago
    key = signing_key()
    now = int(time.time())
    claims = {
        "iss": settings.JWT_ISSUER,
        "sub": all_access_client[0],
        "aud": "ledger",
        "iat": now - 1000,
        "nbf": now - 1000,
        "exp": now - 60 - settings.JWT_LEEWAY_SECONDS,
        "scope": "ledger:read",
    }
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})

    assert_problem(_call(live_ledger, token), 401, "token_expired")


def test_ledger_refuses_a_token_whose_signature_was_tampered_with(live_ledger, all_access_client, get_token):
    # given a valid token with one byte of its signature changed
    token = get_token(*all_access_client, audience="ledger")
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    tampered = ".".join([header, payload, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()])

    assert_problem(_call(live_ledger, tampered), 401, "invalid_token")


def test_ledger_refuses_a_token_whose_claims_were_rewritten(live_ledger, all_access_client, get_token):
    # given a ledger token whose payload was swapped for one granting more, signature kept
    token = get_token(*all_access_client, audience="ledger", scope="ledger:read")
    header, _payload, signature = token.split(".")
    forged = jwt.decode(token, options={"verify_signature": False}) | {"scope": "ledger:read ledger:write"}
    payload = base64.urlsafe_b64encode(jwt.api_jws.json.dumps(forged).encode()).rstrip(b"=").decode()

    assert_problem(_call(live_ledger, f"{header}.{payload}.{signature}"), 401, "invalid_token")


def test_ledger_sees_only_the_scopes_the_token_was_narrowed_to(live_ledger, all_access_client, get_token):
    # given a token requested with a narrower scope than the client may have
    token = get_token(*all_access_client, audience="ledger", scope="ledger:read")

    # then the ledger sees exactly that scope
    response = _call(live_ledger, token)
    assert response.status_code == 200, response.text
    assert response.json()["scopes"] == ["ledger:read"]
