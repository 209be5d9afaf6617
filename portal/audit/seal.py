"""Seals: which transaction wrote each sequencer batch, so ``audit_verify`` can trust untouched rows' columns.

The search columns of ``audit_event`` are copies of fields of the hashed canonical JSON. Checking that they
still agree means parsing every event's JSON in PostgreSQL, the most expensive part of a verification. A
seal avoids that for rows nobody rewrote: PostgreSQL stamps each row version with the id of the transaction
that wrote it (``xmin``), an UPDATE (even with the append-only triggers disabled) writes a new version under
a new id, and VACUUM (FREEZE) keeps the id. So a row whose ``xmin`` equals its batch's sealed id is the very
version the sequencer derived from the JSON.

The seal's MAC is keyed with a key derived from the audit signing key, which the database does not hold:
an administrator who rewrote rows cannot seal them again. What stays possible in theory is consuming
2**32 transaction ids until the sealed id comes round again and then rewriting rows in exactly that
transaction; ``audit_verify --all-columns`` compares every row field by field regardless of seals.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Any

from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured

from portal.audit import keys, queries
from portal.audit.parallel_stream import Seals
from services.kit.logs import get_logger

log = get_logger(__name__)


@functools.cache
def _key() -> tuple[str, bytes] | None:
    """(key id, MAC key) from the audit signing key; None when there is no key (rows are then unsealed)."""
    try:
        raw = keys.signing_key().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return keys.key_id(), hashlib.sha256(b"atrium audit seal v1\x00" + raw).digest()
    except (ImproperlyConfigured, OSError, ValueError) as exc:
        log.warning("audit.seal_key_unavailable", error=f"{type(exc).__name__}: {exc}")
        return None


def seal_mac(key: bytes, first_seq: int, last_seq: int, row_xmin: int) -> bytes:
    return hmac.new(key, f"{first_seq}:{last_seq}:{row_xmin}".encode(), hashlib.sha256).digest()


def seal_write(cursor: Any, first_seq: int, last_seq: int) -> bool:
    """Seal the rows the current transaction just wrote (call after the COPY). False when there is no key."""
    key = _key()
    if key is None:
        return False
    cursor.execute(queries.EVENT_XMIN, [first_seq])
    row_xmin = cursor.fetchone()[0]
    cursor.execute(
        queries.SEAL_INSERT, [first_seq, last_seq, row_xmin, key[0], seal_mac(key[1], first_seq, last_seq, row_xmin)]
    )
    return True


def seals_load(cursor: Any, after: int, *, use: bool = True) -> tuple[Seals, list[tuple[int, int]]]:
    """The seals covering seqs after ``after`` whose MAC verifies, and those whose MAC does not (forged).

    Seals under another key id (the signing key was rotated) count as absent. ``use=False``: none at all.
    """
    if not use:
        return Seals([]), []
    key = _key()
    if key is None:
        return Seals([]), []
    cursor.execute(queries.SEALS_AFTER, [after])
    spans: list[tuple[int, int, int]] = []
    forged: list[tuple[int, int]] = []
    last = after
    for first_seq, last_seq, row_xmin, key_id, mac in cursor.fetchall():
        if key_id != key[0]:
            continue
        if not hmac.compare_digest(bytes(mac), seal_mac(key[1], first_seq, last_seq, row_xmin)):
            forged.append((first_seq, last_seq))
            continue
        if first_seq <= last:  # overlapping seals are not the sequencer's: ignore the later one
            continue
        spans.append((first_seq, last_seq, row_xmin))
        last = last_seq
    return Seals(spans), forged
