"""The audit Ed25519 signing key: signed tree heads (``heads``) and row seals (``seal``) both use it.

The key comes from ``AUDIT_SIGNING_KEY`` (PEM) or ``AUDIT_SIGNING_KEY_FILE``; dev and test generate one under
``var/keys/`` (the kit's loader, ``services.kit.keys``). Depends on settings only, so ``chain``, ``heads`` and
``seal`` import it and not each other for the key.

Rotating: the new private key goes in ``AUDIT_SIGNING_KEY``, the old public key's PEM file in
``AUDIT_RETIRED_PUBLIC_KEY_FILES``, for as long as anything it signed must verify (for an audit trail: always).
``trusted_public_keys`` is what every head verification picks its key from, by the head's ``key_id``.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from portal.audit.standalone_verifier import PublicKeys, public_key_id
from services.kit.keys import private_pem_load

# How a head signed by an untrusted key is described (the standalone verifier's default names its --public-key).
UNKNOWN_KEY = "neither the current key nor a retired one in AUDIT_RETIRED_PUBLIC_KEY_FILES"


def _private_pem() -> bytes:
    return private_pem_load(
        pem_setting="AUDIT_SIGNING_KEY", file_setting="AUDIT_SIGNING_KEY_FILE", dev_name="audit-signing-ed25519.pem"
    )


@functools.cache
def signing_key() -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(_private_pem(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ImproperlyConfigured("AUDIT_SIGNING_KEY must be an Ed25519 private key")
    return key


def public_key_pem() -> bytes:
    return (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def key_id() -> str:
    raw = signing_key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def retired_public_keys() -> PublicKeys:
    """``{key id: PEM}`` of ``AUDIT_RETIRED_PUBLIC_KEY_FILES``; ImproperlyConfigured names a file that is missing,
    unreadable or not an Ed25519 public key. Read on each call: a few small files, and no cache to go stale."""
    keys: PublicKeys = {}
    for filename in settings.AUDIT_RETIRED_PUBLIC_KEY_FILES:
        try:
            pem = Path(filename).read_bytes()
            keys[public_key_id(pem)] = pem
        except (OSError, ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"AUDIT_RETIRED_PUBLIC_KEY_FILES: {filename} is not a readable Ed25519 public key (PEM): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return keys


def trusted_public_keys() -> PublicKeys:
    """Every key a head may be verified with, ``{key id: PEM}``: the current key first, then the retired ones."""
    return {key_id(): public_key_pem(), **retired_public_keys()}
