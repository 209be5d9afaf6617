"""Private keys from settings: a PEM setting, else a file setting, else (outside production) a dev key.

One loader for every key the processes sign with (the portal's token key, the audit signing key): the PEM
is read from ``settings.<pem_setting>``, else from the file ``settings.<file_setting>`` names. In production
one of them must be set; in dev and test an Ed25519 key is generated once under ``<ATRIUM_VAR_DIR>/keys/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def dev_key_path(name: str) -> Path:
    """Where the dev key ``name`` (a file name) is kept: ``<ATRIUM_VAR_DIR>/keys/<name>``."""
    return Path(settings.ATRIUM_VAR_DIR) / "keys" / name


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


def private_pem_load(*, pem_setting: str, file_setting: str, dev_name: str) -> bytes:
    """The private key PEM: ``settings.<pem_setting>``, else the file ``settings.<file_setting>``, else (not in
    production) the dev key ``dev_name``, generated on first use."""
    pem = getattr(settings, pem_setting, "")
    if pem:
        return pem.encode() if isinstance(pem, str) else bytes(pem)
    filename = getattr(settings, file_setting, "")
    if filename:
        return Path(filename).read_bytes()
    if settings.ATRIUM_ENV == "production":
        raise ImproperlyConfigured(f"Set {pem_setting} or {file_setting} in production")
    path = dev_key_path(dev_name)
    if path.exists():
        return path.read_bytes()
    return _generate_dev_key(path)
