"""GET /.well-known/jwks.json: the public keys services verify portal tokens with."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from portal.identity.keys import dev_key_path
from tests.portal.factories import machine_client
from tests.portal.helpers import clear_key_caches
from tests.problems import assert_problem

JWKS_URL = "/.well-known/jwks.json"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint_b64url(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def rfc7638_thumbprint(public_key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> str:
    """RFC 7638: SHA-256 over the required members, lexicographically ordered, no whitespace."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        canonical = f'{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}'
    else:
        numbers = public_key.public_numbers()
        canonical = f'{{"e":"{_uint_b64url(numbers.e)}","kty":"RSA","n":"{_uint_b64url(numbers.n)}"}}'
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _write_public_pem(path, public_key) -> str:
    path.write_bytes(
        public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(path)


def test_jwks_publishes_one_ed25519_key_named_by_its_thumbprint(client, fresh_key_caches):
    # given the test signing key the portal generated on disk
    private_key = serialization.load_pem_private_key(dev_key_path().read_bytes(), password=None)

    # when the key set is fetched
    response = client.get(JWKS_URL)

    # then it is a cacheable JWK Set with exactly that key, identified by its RFC 7638 thumbprint
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jwk-set+json"
    assert "max-age=300" in response["Cache-Control"]
    (key,) = json.loads(response.content)["keys"]
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(raw),
        "use": "sig",
        "alg": "EdDSA",
        "kid": rfc7638_thumbprint(private_key.public_key()),
    }
    assert "d" not in key  # never the private part


def test_jwks_refuses_post(client):
    response = client.post(JWKS_URL)

    assert_problem(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, HEAD"


def test_retired_public_keys_are_published_after_the_current_one(client, settings, tmp_path, fresh_key_caches):
    # given a retired Ed25519 key and a retired RSA key configured for the rotation window
    retired_ed = ed25519.Ed25519PrivateKey.generate().public_key()
    retired_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    settings.JWT_RETIRED_PUBLIC_KEY_FILES = [
        _write_public_pem(tmp_path / "retired-ed25519.pem", retired_ed),
        _write_public_pem(tmp_path / "retired-rsa.pem", retired_rsa),
    ]

    # when the key set is fetched
    keys = client.get(JWKS_URL).json()["keys"]

    # then the current key comes first, then each retired key under its own thumbprint
    current_kid = rfc7638_thumbprint(
        serialization.load_pem_private_key(dev_key_path().read_bytes(), password=None).public_key()
    )
    assert [k["kid"] for k in keys] == [current_kid, rfc7638_thumbprint(retired_ed), rfc7638_thumbprint(retired_rsa)]
    assert [(k["kty"], k["alg"], k["use"]) for k in keys] == [
        ("OKP", "EdDSA", "sig"),
        ("OKP", "EdDSA", "sig"),
        ("RSA", "RS256", "sig"),
    ]


@pytest.mark.django_db
def test_portal_accepts_tokens_signed_by_a_retired_key_while_it_is_published(
    client, settings, tmp_path, fresh_key_caches
):
    # given a token for audience "portal" signed by a key that has since been retired
    retired = ed25519.Ed25519PrivateKey.generate()
    settings.JWT_RETIRED_PUBLIC_KEY_FILES = [_write_public_pem(tmp_path / "retired.pem", retired.public_key())]
    machine = machine_client(audiences=["portal"], scopes=["portal:read"])
    now = int(time.time())
    claims = {
        "iss": settings.JWT_ISSUER,
        "sub": machine.id,
        "aud": "portal",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "portal:read",
        "client_name": machine.client.name,
    }
    token = jwt.encode(claims, retired, algorithm="EdDSA", headers={"kid": rfc7638_thumbprint(retired.public_key())})

    # when the portal is called with it
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}")

    # then the portal verified it against the retired key it still publishes
    assert response.status_code == 200, response.content
    assert response.json()["id"] == machine.id
    assert response.json()["scopes"] == ["portal:read"]

    # and once the retired key is dropped from the key set, the same token is refused
    settings.JWT_RETIRED_PUBLIC_KEY_FILES = []
    clear_key_caches()
    assert_problem(client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}"), 401, "invalid_token")
