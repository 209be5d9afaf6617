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
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured

from services.kit.logs import get_logger

log = get_logger(__name__)


@functools.cache
def _key() -> tuple[str, bytes] | None:
    """(key id, MAC key) from the audit signing key; None when there is no key (rows are then unsealed)."""
    from portal.audit.heads import key_id, signing_key

    try:
        raw = signing_key().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return key_id(), hashlib.sha256(b"atrium audit seal v1\x00" + raw).digest()
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
    cursor.execute("SELECT xmin::text::bigint FROM audit_event WHERE seq = %s", [first_seq])
    row_xmin = cursor.fetchone()[0]
    cursor.execute(
        "INSERT INTO audit_seal (first_seq, last_seq, row_xmin, key_id, mac, created_at) "
        "VALUES (%s, %s, %s, %s, %s, now())",
        [first_seq, last_seq, row_xmin, key[0], seal_mac(key[1], first_seq, last_seq, row_xmin)],
    )
    return True


@dataclass
class Seals:
    """The valid seals from ``low`` on, walked in step with the verification's stream.

    :meth:`at` is called only when a row is past the current seal or has another ``xmin``; it moves on and
    records rows no valid seal vouches for in ``unsealed`` (ranges of seqs), to be compared field by field.
    """

    spans: list[tuple[int, int, int]]  # (first_seq, last_seq, row_xmin), in order
    forged: list[tuple[int, int]] = field(default_factory=list)  # seals whose MAC does not verify
    unsealed: list[list[int]] = field(default_factory=list)
    index: int = 0

    @classmethod
    def load(cls, cursor: Any, after: int, *, use: bool = True) -> Seals:
        """Seals covering seqs after ``after`` whose MAC verifies (all of them count as absent if not ``use``)."""
        if not use:
            return cls([])
        key = _key()
        if key is None:
            return cls([])
        cursor.execute(
            "SELECT first_seq, last_seq, row_xmin, key_id, mac FROM audit_seal WHERE last_seq > %s ORDER BY first_seq",
            [after],
        )
        spans: list[tuple[int, int, int]] = []
        forged: list[tuple[int, int]] = []
        last = after
        for first_seq, last_seq, row_xmin, key_id, mac in cursor.fetchall():
            if key_id != key[0]:
                continue  # sealed under another signing key (rotated): compared field by field
            if not hmac.compare_digest(bytes(mac), seal_mac(key[1], first_seq, last_seq, row_xmin)):
                forged.append((first_seq, last_seq))
                continue
            if first_seq <= last:  # overlapping seals are not the sequencer's: ignore the later one
                continue
            spans.append((first_seq, last_seq, row_xmin))
            last = last_seq
        return cls(spans, forged)

    def uncovered(self, low: int, high: int) -> list[tuple[int, int]]:
        """Ranges of [low, high] no seal covers."""
        out: list[tuple[int, int]] = []
        at = low
        for first_seq, last_seq, _ in self.spans:
            if last_seq < at:
                continue
            if first_seq > high:
                break
            if first_seq > at:
                out.append((at, first_seq - 1))
            at = max(at, last_seq + 1)
        if at <= high:
            out.append((at, high))
        return out

    def at(self, seq: int, xmin: int) -> tuple[int, int]:
        """The (last seq, xmin) of the seal that vouches for rows from ``seq`` on; (seq, -1) if none does.

        Rows with no seal at all are already in :meth:`uncovered`; a covered row with another ``xmin`` is
        added to ``unsealed`` here.
        """
        spans = self.spans
        while self.index < len(spans) and spans[self.index][1] < seq:
            self.index += 1
        if self.index < len(spans) and spans[self.index][0] <= seq:
            _, last_seq, row_xmin = spans[self.index]
            if xmin != row_xmin:
                self._unseal(seq)
            return last_seq, row_xmin
        return seq, -1

    def _unseal(self, seq: int) -> None:
        if self.unsealed and self.unsealed[-1][1] == seq - 1:
            self.unsealed[-1][1] = seq
        else:
            self.unsealed.append([seq, seq])
