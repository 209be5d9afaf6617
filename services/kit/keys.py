"""Private keys from settings: a PEM setting, else a file setting, else (outside production) a dev key.

One loader for every key the processes sign with (the portal's token key, the audit signing key, the portal's
OpenID Connect ID-token key): the PEM is read from ``settings.<pem_setting>``, else from the file
``settings.<file_setting>`` names. In production one of them must be set; in dev and test a key of the kind asked
for (Ed25519 unless said otherwise; RSA 2048 for RS256) is generated once under ``<ATRIUM_VAR_DIR>/keys/``.
:func:`private_pem_read` is the same rule for a settings module that needs the PEM while it is being loaded
(django-oauth-toolkit reads its key from a setting).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def dev_key_path(name: str) -> Path:
    """Where the dev key ``name`` (a file name) is kept: ``<ATRIUM_VAR_DIR>/keys/<name>``."""
    return Path(settings.ATRIUM_VAR_DIR) / "keys" / name


KINDS = ("ed25519", "rsa")
RSA_MIN_BITS = 2048


def _generate_dev_key(path: Path, kind: str = "ed25519") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=RSA_MIN_BITS)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # O_EXCL: two processes starting together must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem


def private_pem_load(*, pem_setting: str, file_setting: str, dev_name: str) -> bytes:
    """The private key PEM: ``settings.<pem_setting>``, else the file ``settings.<file_setting>``, else (not in
    production) the dev key ``dev_name``, generated on first use."""
    return private_pem_read(
        pem=getattr(settings, pem_setting, ""),
        filename=getattr(settings, file_setting, ""),
        environment=settings.ATRIUM_ENV,
        dev_path=dev_key_path(dev_name),
        names=(pem_setting, file_setting),
    )


def private_pem_read(
    *,
    pem: str | bytes,
    filename: str,
    environment: str,
    dev_path: Path,
    names: tuple[str, str],
    kind: str | None = None,
) -> bytes:
    """The rule of :func:`private_pem_load` on values given (for a settings module still loading): ``pem``, else
    the file ``filename``, else (not in production, where ``names`` say which variables to set) the dev key at
    ``dev_path``, generated on first use. With ``kind`` the key must be of that kind (RSA: 2048 bits at least)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if pem:
        data = pem.encode() if isinstance(pem, str) else bytes(pem)
    elif filename:
        data = Path(filename).read_bytes()
    elif environment == "production":
        raise ImproperlyConfigured(f"Set {names[0]} or {names[1]} in production")
    elif dev_path.exists():
        data = dev_path.read_bytes()
    else:
        data = _generate_dev_key(dev_path, kind or "ed25519")
    if kind is not None:
        _check_kind(data, kind, names[0])
    return data


def _check_kind(pem: bytes, kind: str, name: str) -> None:
    key = serialization.load_pem_private_key(pem, password=None)
    if kind == "rsa" and not (isinstance(key, rsa.RSAPrivateKey) and key.key_size >= RSA_MIN_BITS):
        raise ImproperlyConfigured(f"{name} must be an RSA private key of at least {RSA_MIN_BITS} bits")
    if kind == "ed25519" and not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{name} must be an Ed25519 private key")
