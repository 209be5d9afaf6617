"""JWT bearer authentication against a real JWKS server: verification, key rotation, outages, scopes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest

from services.kit import auth
from tests.problems import assert_problem
from tests.servers import json_reply
from tests.tokens import SigningKey

pytestmark = pytest.mark.urls("tests.kit.urls")

PROBLEM = "application/problem+json"
WHOAMI = "/api/v1/whoami"
SCOPED = "/api/v1/scoped"


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_valid_token_identifies_the_client(client, jwks_server, signing_key):
    # given a token the portal would mint for the ledger
    token = signing_key.mint(sub="cli_alpha", scope="ledger:read")

    # when it calls whoami
    response = client.get(WHOAMI, **bearer(token), HTTP_X_REQUEST_ID="req-who")

    # then the ledger verified it against the JWKS and knows the client
    assert response.status_code == 200
    assert response.json() == {
        "service": "ledger",
        "client_id": "cli_alpha",
        "scopes": ["ledger:read"],
        "request_id": "req-who",
    }
    assert jwks_server.fetches == 1


def test_keys_are_fetched_once_and_cached(client, jwks_server, signing_key):
    # when several requests carry tokens signed by the same key
    for sub in ("cli_a", "cli_b", "cli_c"):
        assert client.get(WHOAMI, **bearer(signing_key.mint(sub=sub))).status_code == 200

    # then the JWKS was fetched once
    assert jwks_server.fetches == 1


def test_missing_token_gives_401_with_www_authenticate(client, jwks_server):
    # when no Authorization header is sent
    response = client.get(WHOAMI)

    # then authentication is asked for
    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="ledger"'
    assert jwks_server.fetches == 0


def test_other_auth_scheme_is_not_authenticated(client, jwks_server):
    # when the caller uses Basic authentication
    response = client.get(WHOAMI, HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"u:p").decode())

    # then it is treated as anonymous
    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="ledger"'


def test_expired_token_gives_token_expired_with_www_authenticate(client, jwks_server, signing_key):
    # given a token that expired well beyond the leeway
    now = int(time.time())
    token = signing_key.mint(iat=now - 600, exp=now - 120)

    # when it is used
    response = client.get(WHOAMI, **bearer(token))

    # then the client is told to get a new one
    body = assert_problem(response, 401, "token_expired")
    assert "expired" in body["detail"]
    assert response["WWW-Authenticate"] == 'Bearer realm="ledger"'


def test_token_expired_within_the_leeway_is_accepted(client, jwks_server, signing_key, settings):
    # given a token that expired a few seconds ago, inside JWT_LEEWAY_SECONDS
    assert settings.JWT_LEEWAY_SECONDS >= 10
    now = int(time.time())
    token = signing_key.mint(iat=now - 300, exp=now - 5)

    # when it is used
    response = client.get(WHOAMI, **bearer(token))

    # then clock skew does not refuse it
    assert response.status_code == 200


def test_token_for_another_audience_gives_403_invalid_audience(client, jwks_server, signing_key):
    # given a valid token minted for the payments service
    token = signing_key.mint(aud="payments", scope="payments:read")

    # when it is presented to the ledger
    response = client.get(WHOAMI, **bearer(token))

    # then it is authentic but not for this service
    body = assert_problem(response, 403, "invalid_audience")
    assert "ledger" in body["detail"]


def test_token_from_another_issuer_gives_401_invalid_token(client, jwks_server, signing_key):
    # given a token with the right key but a foreign issuer
    token = signing_key.mint(iss="https://evil.example.com")

    # when it is used
    response = client.get(WHOAMI, **bearer(token))

    # then it is refused
    assert_problem(response, 401, "invalid_token")
    assert response["WWW-Authenticate"] == 'Bearer realm="ledger"'


@pytest.mark.parametrize("missing", ["exp", "sub", "iat"])
def test_token_without_a_required_claim_gives_401(client, jwks_server, signing_key, missing):
    # given a token lacking a required claim
    token = signing_key.mint(**{missing: None})

    # when it is used
    response = client.get(WHOAMI, **bearer(token))

    # then it is refused
    body = assert_problem(response, 401, "invalid_token")
    assert missing in body["detail"]


def test_tampered_token_gives_401_invalid_token(client, jwks_server, signing_key):
    # given a valid token whose payload is changed to grant more, signature kept
    header, payload, signature = signing_key.mint(scope="ledger:read").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "cli_admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    # when the forged token is used
    response = client.get(WHOAMI, **bearer(f"{header}.{forged}.{signature}"))

    # then the signature check refuses it
    body = assert_problem(response, 401, "invalid_token")
    assert "Signature" in body["detail"]


def test_token_signed_by_a_key_not_in_the_jwks_gives_401(client, jwks_server, signing_key):
    # given a token signed by another key that claims the published key's kid
    impostor = SigningKey(kid=signing_key.kid)

    # when it is used
    response = client.get(WHOAMI, **bearer(impostor.mint()))

    # then the signature does not verify
    assert_problem(response, 401, "invalid_token")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer garbage", "Bearer a.b.c", "Bearer", "Bearer one two", "Bearer \xe9t\xe9"],
    ids=["garbage", "three-junk-parts", "no-token", "two-tokens", "non-ascii"],
)
def test_malformed_bearer_gives_401_invalid_token(client, jwks_server, authorization):
    # when the bearer credential is not a JWT
    response = client.get(WHOAMI, HTTP_AUTHORIZATION=authorization)

    # then it is refused without consulting the JWKS
    assert_problem(response, 401, "invalid_token")
    assert response["WWW-Authenticate"] == 'Bearer realm="ledger"'
    assert jwks_server.fetches == 0


def test_unsigned_alg_none_token_gives_401(client, jwks_server, signing_key):
    # given a token with alg "none" naming a published kid
    claims = jwt.decode(signing_key.mint(), options={"verify_signature": False})
    token = jwt.encode(claims, None, algorithm="none", headers={"kid": signing_key.kid})

    # when it is used
    response = client.get(WHOAMI, **bearer(token))

    # then it is refused
    assert_problem(response, 401, "invalid_token")


def test_hs256_token_keyed_with_the_public_key_gives_401(client, jwks_server, signing_key):
    # given an algorithm-confusion token: HMAC keyed with the published public key
    claims = jwt.decode(signing_key.mint(), options={"verify_signature": False})
    public_x = signing_key.jwk["x"].encode()
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": signing_key.kid}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(public_x, header + b"." + payload, hashlib.sha256).digest())
    token = b".".join([header, payload, signature.rstrip(b"=")]).decode()

    # when it is used
    response = client.get(WHOAMI, **bearer(token))

    # then it is refused
    assert_problem(response, 401, "invalid_token")


def test_token_without_scope_is_refused_by_a_scoped_view(client, jwks_server, signing_key):
    # given a valid ledger token with write scope only
    token = signing_key.mint(scope="ledger:write")

    # when it reads from a view that requires ledger:read
    response = client.get(SCOPED, **bearer(token))

    # then it is forbidden, naming the missing scope
    body = assert_problem(response, 403, "insufficient_scope")
    assert "ledger:read" in body["detail"]


def test_token_with_the_scope_passes_a_scoped_view(client, jwks_server, signing_key):
    # given a valid ledger token with the read scope
    token = signing_key.mint(sub="cli_reader", scope="ledger:read")

    # when it reads from the scoped view
    response = client.get(SCOPED, **bearer(token))

    # then it is let through
    assert response.status_code == 200
    assert response.json() == {"client_id": "cli_reader", "scopes": ["ledger:read"]}


def test_rotated_key_is_fetched_when_a_token_names_an_unknown_kid(client, jwks_server, signing_key, monkeypatch):
    # given the keys were cached, then the portal rotated to a new key
    monkeypatch.setattr(auth, "UNKNOWN_KID_REFETCH_SECONDS", 0.0)
    assert client.get(WHOAMI, **bearer(signing_key.mint())).status_code == 200
    new_key = SigningKey()
    jwks_server.keys = [new_key]

    # when a token signed by the new key arrives
    response = client.get(WHOAMI, **bearer(new_key.mint(sub="cli_rotated")))

    # then the ledger refetched the key set and accepted it
    assert response.status_code == 200
    assert response.json()["client_id"] == "cli_rotated"
    assert jwks_server.fetches == 2


def test_unknown_kids_do_not_refetch_the_jwks_more_often_than_the_interval(client, jwks_server, signing_key):
    # given the keys were just fetched
    assert client.get(WHOAMI, **bearer(signing_key.mint())).status_code == 200

    # when tokens with unknown kids arrive at once
    responses = [client.get(WHOAMI, **bearer(SigningKey().mint())) for _ in range(3)]

    # then they are refused without hammering the portal
    for response in responses:
        body = assert_problem(response, 401, "invalid_token")
        assert "unknown key" in body["detail"]
    assert jwks_server.fetches == 1


def test_jwks_unreachable_with_nothing_cached_gives_503(client, jwks_server, signing_key):
    # given the portal's JWKS endpoint is down before any key was fetched
    jwks_server.server.stop()

    # when a token arrives
    response = client.get(WHOAMI, **bearer(signing_key.mint()))

    # then the service says it cannot verify right now (not that the token is bad)
    body = assert_problem(response, 503, "jwks_unavailable")
    assert "try again" in body["detail"]


def test_jwks_answering_an_error_with_nothing_cached_gives_503(client, local_server, signing_key, settings):
    # given a JWKS endpoint that answers 500
    server = local_server(lambda seen: json_reply(500, {"error": "boom"}))
    settings.JWT_JWKS_URL = f"{server.url}/.well-known/jwks.json"
    auth._caches.clear()

    # when a token arrives
    response = client.get(WHOAMI, **bearer(signing_key.mint()))
    auth._caches.clear()

    # then it is a 503
    assert_problem(response, 503, "jwks_unavailable")


def test_jwks_answering_json_that_is_not_a_key_set_gives_503(client, local_server, signing_key, settings):
    # given a JWKS URL that answers valid JSON of the wrong shape
    server = local_server(lambda seen: json_reply(200, ["not", "a", "key", "set"]))
    settings.JWT_JWKS_URL = f"{server.url}/.well-known/jwks.json"
    auth._caches.clear()

    # when a token arrives
    response = client.get(WHOAMI, **bearer(signing_key.mint()))
    auth._caches.clear()

    # then it is a 503, not a crash
    assert_problem(response, 503, "jwks_unavailable")


def test_cached_keys_keep_serving_when_the_jwks_goes_down(client, jwks_server, signing_key, settings):
    # given keys cached with a TTL that has already run out, then the portal goes down
    settings.JWT_JWKS_CACHE_SECONDS = 0
    assert client.get(WHOAMI, **bearer(signing_key.mint())).status_code == 200
    jwks_server.server.stop()

    # when another token arrives and the refetch fails
    response = client.get(WHOAMI, **bearer(signing_key.mint(sub="cli_stale")))

    # then the stale keys still verify it
    assert response.status_code == 200
    assert response.json()["client_id"] == "cli_stale"


def test_failed_refetch_is_not_retried_on_every_request(client, local_server, signing_key, settings):
    # given keys cached with a TTL that has run out, then the JWKS endpoint starts failing
    state = {"up": True}

    def jwks(seen):
        if state["up"]:
            return json_reply(200, {"keys": [signing_key.jwk]})
        return json_reply(503, {"error": "down"})

    server = local_server(jwks)
    settings.JWT_JWKS_URL = f"{server.url}/.well-known/jwks.json"
    settings.JWT_JWKS_CACHE_SECONDS = 0
    auth._caches.clear()
    assert client.get(WHOAMI, **bearer(signing_key.mint())).status_code == 200
    state["up"] = False

    # when several requests arrive while it is failing
    statuses = [client.get(WHOAMI, **bearer(signing_key.mint())).status_code for _ in range(4)]
    auth._caches.clear()

    # then all are served from the stale keys, and the failing endpoint was tried once, not per request
    assert statuses == [200, 200, 200, 200]
    assert len(server.calls()) == 2


def test_valid_token_over_real_http(live_server, jwks_server, signing_key):
    # when a token is presented to a real server
    response = httpx.get(
        f"{live_server.url}{WHOAMI}",
        headers={"Authorization": f"Bearer {signing_key.mint(sub='cli_live')}"},
        timeout=10,
    )

    # then it is verified against the JWKS server
    assert response.status_code == 200
    assert response.json()["client_id"] == "cli_live"


def test_expired_token_over_real_http_gives_401_with_www_authenticate(live_server, jwks_server, signing_key):
    # given an expired token
    now = int(time.time())
    token = signing_key.mint(iat=now - 600, exp=now - 300)

    # when it is presented to a real server
    response = httpx.get(f"{live_server.url}{WHOAMI}", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    # then the wire response says why and how to authenticate
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == 'Bearer realm="ledger"'
    assert response.json()["code"] == "token_expired"


# ---------------------------------------------------------------------- verified-token cache


def _decodes(monkeypatch) -> list[str]:
    """Count full verifications (header parse + signature) from here on."""
    calls: list[str] = []
    real = auth._token_decode

    def counting(token, audience):
        calls.append(token)
        return real(token, audience)

    monkeypatch.setattr(auth, "_token_decode", counting)
    auth.verified_cache().clear()
    return calls


def test_a_token_seen_again_is_not_verified_again(client, jwks_server, signing_key, monkeypatch):
    # given one token used for several requests, as a client does until it expires
    calls = _decodes(monkeypatch)
    token = signing_key.mint(sub="cli_repeat", scope="ledger:read")

    # when it is sent three times
    bodies = [client.get(WHOAMI, **bearer(token)).json() for _ in range(3)]

    # then the signature was checked once and every request knew the client
    assert len(calls) == 1
    assert {b["client_id"] for b in bodies} == {"cli_repeat"}
    assert bodies[0]["scopes"] == ["ledger:read"]


def test_a_cached_token_still_expires(client, jwks_server, signing_key, monkeypatch, settings):
    # given a token verified and cached while valid
    calls = _decodes(monkeypatch)
    now = time.time()
    token = signing_key.mint(iat=int(now) - 60, exp=int(now) + 60)
    assert client.get(WHOAMI, **bearer(token)).status_code == 200

    # when the clock passes its expiry plus the leeway
    later = now + 60 + settings.JWT_LEEWAY_SECONDS + 5
    monkeypatch.setattr(auth, "_wall_clock", lambda: later)
    response = client.get(WHOAMI, **bearer(token))

    # then the cache does not keep it alive
    assert_problem(response, 401, "token_expired")
    assert len(calls) == 1


def test_a_cached_token_is_dropped_when_its_key_is_withdrawn(client, local_server, signing_key, monkeypatch, settings):
    # given a token verified while its key was published
    published = {"keys": [signing_key.jwk]}
    server = local_server(lambda seen: json_reply(200, published))
    settings.JWT_JWKS_URL = f"{server.url}/.well-known/jwks.json"
    settings.JWT_JWKS_CACHE_SECONDS = 0
    auth._caches.clear()
    calls = _decodes(monkeypatch)
    token = signing_key.mint()
    assert client.get(WHOAMI, **bearer(token)).status_code == 200

    # when the portal stops publishing the key and the key set is refetched
    published["keys"] = [SigningKey().jwk]
    response = client.get(WHOAMI, **bearer(token))
    auth._caches.clear()

    # then the token is verified again, and refused
    assert_problem(response, 401, "invalid_token")
    assert len(calls) == 2


def test_a_token_for_another_audience_is_not_served_from_the_cache(jwks_server, signing_key, monkeypatch):
    # given a ledger token verified and cached for the ledger
    _decodes(monkeypatch)
    token = signing_key.mint(aud="ledger")
    assert auth.token_verify(token, audience="ledger")["aud"] == "ledger"

    # when the same token is presented for payments
    with pytest.raises(auth.exceptions.PermissionDenied):
        auth.token_verify(token, audience="payments")


def test_the_cache_is_bounded_and_evicts_the_least_recently_used():
    cache = auth.VerifiedTokenCache(size=2, ttl=60)
    entry = auth._Verified({"sub": "x"}, "kid", object(), time.time() + 60, time.monotonic())
    cache.put("ledger", "a", entry)
    cache.put("ledger", "b", entry)
    assert cache.get("ledger", "a") is entry  # "a" is now the most recently used
    cache.put("ledger", "c", entry)
    assert cache.get("ledger", "b") is None
    assert cache.get("ledger", "a") is entry
    assert cache.get("ledger", "c") is entry


def test_cache_entries_live_no_longer_than_the_ttl(monkeypatch):
    cache = auth.VerifiedTokenCache(size=8, ttl=30)
    entry = auth._Verified({"sub": "x"}, "kid", object(), time.time() + 600, time.monotonic())
    cache.put("ledger", "a", entry)
    monkeypatch.setattr(auth, "_monotonic", lambda: entry.stored + 31)
    assert cache.get("ledger", "a") is None


def test_mutating_returned_claims_does_not_change_the_cache(jwks_server, signing_key, monkeypatch):
    _decodes(monkeypatch)
    token = signing_key.mint(sub="cli_same")
    first = auth.token_verify(token, audience="ledger")
    first["sub"] = "cli_other"
    assert auth.token_verify(token, audience="ledger")["sub"] == "cli_same"
