"""Endpoint secrets: made here, encrypted at rest, decrypted only to sign or to show an operator.

- ``whsec_`` secrets (Standard Webhooks): ``"whsec_" + base64(random bytes)``; 32 bytes when made here, 24 to 64
  when a caller brings one (:func:`secret_valid`).
- ``v1a`` keys: an Ed25519 private key per endpoint (stored as hex, encrypted), its public key published as
  ``"whpk_" + base64(raw 32 bytes)``.
- At rest: ``cryptography``'s ``MultiFernet`` over ``WEBHOOKS_SECRET_KEYS`` (the first key encrypts, every one
  decrypts; :func:`reencrypt` moves a token to the first key, ``manage.py webhooks_rekey`` does it for every row).
  Without the setting (dev, test) the key is derived from ``SECRET_KEY`` with HKDF, and a system check says so
  (``webhooks.W001``); in production that is an error (``webhooks.E001``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets as random

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

SECRET_PREFIX = "whsec_"
PUBLIC_KEY_PREFIX = "whpk_"
SECRET_BYTES = 32
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64

__all__ = [
    "InvalidToken",
    "decrypt",
    "default_key_in_use",
    "encrypt",
    "public_key",
    "reencrypt",
    "secret_bytes",
    "secret_new",
    "secret_valid",
    "signing_key_new",
]


def secret_new() -> str:
    """A new endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret (the prefix is optional); ``ValueError`` when it is not base64."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc


def secret_valid(secret: object) -> bool:
    """Whether a caller-given secret is ``whsec_`` + base64 of 24 to 64 bytes."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return False
    try:
        raw = secret_bytes(secret)
    except ValueError:
        return False
    return SECRET_MIN_BYTES <= len(raw) <= SECRET_MAX_BYTES


def signing_key_new() -> str:
    """A new Ed25519 private key for ``v1a``, as the hex of its raw 32 bytes."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return raw.hex()


def signing_key_load(private_hex: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))


def public_key(private_hex: str) -> str:
    """The ``whpk_`` public key of a ``v1a`` private key (hex)."""
    raw = (
        signing_key_load(private_hex)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def default_key_in_use() -> bool:
    """No ``WEBHOOKS_SECRET_KEYS``: secrets are encrypted with a key derived from ``SECRET_KEY``."""
    return not settings.WEBHOOKS_SECRET_KEYS


def _derived_key(secret_key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"atrium-webhooks", info=b"endpoint-secrets")
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode()))


@functools.lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    fernets = [Fernet(key.encode()) for key in keys] or [Fernet(_derived_key(secret_key))]
    return MultiFernet(fernets)


def _current() -> MultiFernet:
    return _fernet(tuple(settings.WEBHOOKS_SECRET_KEYS), settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    """A Fernet token of ``plaintext`` under the first key ("" stays "")."""
    if not plaintext:
        return ""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """The plaintext of a token made by :func:`encrypt` under any of the keys ("" stays "");
    ``InvalidToken`` when no key opens it."""
    if not token:
        return ""
    return _current().decrypt(token.encode()).decode()


def reencrypt(token: str) -> str:
    """The same plaintext, encrypted under the first key (key rotation); ``InvalidToken`` as :func:`decrypt`."""
    if not token:
        return ""
    return _current().rotate(token.encode()).decode()
