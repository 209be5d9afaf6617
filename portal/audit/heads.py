"""Signed tree heads: ``{tree_size, root_hash, last_hash, timestamp}`` signed with the audit Ed25519 key.

Each head is stored in ``audit_head`` and appended, as one JSON line, to ``AUDIT_HEADS_PATH`` (a file
outside the database; point it at object storage or a WORM volume in production), so rewriting
the database cannot also rewrite the proofs. The key comes from ``AUDIT_SIGNING_KEY`` (PEM) or
``AUDIT_SIGNING_KEY_FILE``; dev and test generate one under ``var/keys/``.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from portal.audit.chain import frontier_root
from portal.audit.models import AuditChainState, AuditHead
from portal.audit.verifier import head_message
from services.kit.logs import get_logger
from services.kit.outbox import isoformat

log = get_logger(__name__)


def _dev_key_path() -> Path:
    return Path(settings.ATRIUM_VAR_DIR) / "keys" / "audit-signing-ed25519.pem"


def _private_pem() -> bytes:
    if settings.AUDIT_SIGNING_KEY:
        return settings.AUDIT_SIGNING_KEY.encode()
    if settings.AUDIT_SIGNING_KEY_FILE:
        return Path(settings.AUDIT_SIGNING_KEY_FILE).read_bytes()
    if settings.ATRIUM_ENV == "production":
        raise ImproperlyConfigured("Set AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE in production")
    path = _dev_key_path()
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem


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
    import hashlib

    raw = signing_key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def head_as_dict(head: AuditHead) -> dict[str, Any]:
    return {
        "tree_size": head.tree_size,
        "root_hash": head.root_hash,
        "last_hash": head.last_hash,
        "timestamp": head.timestamp,
        "signature": head.signature,
        "key_id": head.key_id,
    }


def head_sign(*, force: bool = False) -> AuditHead | None:
    """Sign the current tree if it grew since the last head (or always with ``force``); return the head."""
    with transaction.atomic():
        state, _ = AuditChainState.objects.select_for_update().get_or_create(id=1)
        latest = AuditHead.objects.order_by("-tree_size").first()
        if state.size == 0 or (latest is not None and latest.tree_size >= state.size and not force):
            return latest
        if latest is not None and latest.tree_size == state.size:
            return latest  # one head per tree size
        head = {
            "tree_size": state.size,
            "root_hash": frontier_root(state.frontier).hex(),
            "last_hash": bytes(state.last_hash).hex(),
            "timestamp": isoformat(timezone.now()),
        }
        signature = base64.b64encode(signing_key().sign(head_message(head))).decode()
        row = AuditHead.objects.create(**head, signature=signature, key_id=key_id())
        transaction.on_commit(lambda: heads_file_append(row))
    log.info("audit.head_signed", tree_size=row.tree_size, root_hash=row.root_hash)
    return row


def heads_file_append(head: AuditHead) -> None:
    """Append the head to the JSONL file outside the database (created with its directory if needed)."""
    path = Path(settings.AUDIT_HEADS_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(head_as_dict(head), sort_keys=True, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def heads_file_read() -> list[dict[str, Any]]:
    path = Path(settings.AUDIT_HEADS_PATH)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
