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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

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
    return Path(settings.ATRIUM_VAR_DIR) / "keys" / "jwt-signing-ed25519.pem"


def _generate_dev_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL: two processes starting together must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem


def _private_pem() -> bytes:
    if settings.JWT_PRIVATE_KEY:
        return settings.JWT_PRIVATE_KEY.encode()
    if settings.JWT_PRIVATE_KEY_FILE:
        return Path(settings.JWT_PRIVATE_KEY_FILE).read_bytes()
    if settings.ATRIUM_ENV == "production":
        raise ImproperlyConfigured("Set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE in production")
    path = dev_key_path()
    if path.exists():
        return path.read_bytes()
    return _generate_dev_key(path)


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
