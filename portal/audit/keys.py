"""The audit Ed25519 signing key: signed tree heads (``heads``) and row seals (``seal``) both use it.

The key comes from ``AUDIT_SIGNING_KEY`` (PEM) or ``AUDIT_SIGNING_KEY_FILE``; dev and test generate one under
``var/keys/`` (the kit's loader, ``services.kit.keys``). Depends on settings only, so ``chain``, ``heads`` and
``seal`` import it and not each other for the key.
"""

from __future__ import annotations

import functools
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.exceptions import ImproperlyConfigured

from services.kit.keys import private_pem_load


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
