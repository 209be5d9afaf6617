"""The portal's token signing key and the JSON Web Key Set it publishes.

Production passes the private key in ``JWT_PRIVATE_KEY`` (PEM) or
``JWT_PRIVATE_KEY_FILE``; dev and test generate an Ed25519 key once into
``var/keys/``. Key ids are RFC 7638 thumbprints, so the same key always has the
same ``kid``. To rotate: publish the old public key through
``JWT_RETIRED_PUBLIC_KEY_FILES`` while switching the private key, and drop it once
the longest token lifetime has passed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from services.kit.keys import dev_key_path as kit_dev_key_path
from services.kit.keys import private_pem_load

_DEV_KEY = "jwt-signing-ed25519.pem"
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def public_jwk(public_key: PublicKey) -> dict[str, Any]:
    """The JWK of a public key with its RFC 7638 thumbprint as ``kid``."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        required = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        alg = "EdDSA"
    elif isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        required = {"e": _int_b64(numbers.e), "kty": "RSA", "n": _int_b64(numbers.n)}
        alg = "RS256"
    else:
        raise ImproperlyConfigured("JWT signing keys must be Ed25519 or RSA")
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return {**required, "kid": kid, "alg": alg, "use": "sig"}


@dataclass(frozen=True)
class SigningKey:
    private_key: PrivateKey
    kid: str
    algorithm: str
    jwk: dict[str, Any]


def _load_private_pem(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise ImproperlyConfigured("JWT_PRIVATE_KEY must be an Ed25519 or RSA private key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise ImproperlyConfigured("RSA signing keys must be at least 2048 bits")
    return key


def dev_key_path() -> Path:
    return kit_dev_key_path(_DEV_KEY)


def _private_pem() -> bytes:
    return private_pem_load(pem_setting="JWT_PRIVATE_KEY", file_setting="JWT_PRIVATE_KEY_FILE", dev_name=_DEV_KEY)


@functools.cache
def signing_key() -> SigningKey:
    """The current signing key (loaded once per process)."""
    private_key = _load_private_pem(_private_pem())
    jwk = public_jwk(private_key.public_key())
    return SigningKey(private_key=private_key, kid=jwk["kid"], algorithm=jwk["alg"], jwk=jwk)


@functools.cache
def jwks() -> dict[str, Any]:
    """The published key set: the current key, then retired keys still honoured."""
    keys = [signing_key().jwk]
    for filename in settings.JWT_RETIRED_PUBLIC_KEY_FILES:
        public_key = serialization.load_pem_public_key(Path(filename).read_bytes())
        if isinstance(public_key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
            keys.append(public_jwk(public_key))
    return {"keys": keys}
