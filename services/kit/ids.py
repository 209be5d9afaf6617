"""Prefixed opaque ids (``acc_…``, ``txn_…``, ``cli_…``): the one id generator."""

from __future__ import annotations

import base64
import re
import secrets
import time

# Crockford base32: no I, L, O, U — readable and unambiguous when read aloud.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PREFIX = re.compile(r"^[a-z]{2,8}$")
ID_PATTERN = r"[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}"
_ID = re.compile(rf"^{ID_PATTERN}$")


# base64's base32 (RFC 4648 alphabet, encoded in C) translated to Crockford's: one call instead of a Python loop
# per character (ids are made for every outbox row: a batch of 100 transfers makes 300).
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_MILLIS_MASK = (1 << 50) - 1  # the 10 characters of the time part
_prefixes_ok: set[str] = set()


def _encode_130(value: int) -> str:
    """The low 130 bits of ``value`` as 26 Crockford base32 characters, most significant first: the base32 of
    20 bytes (160 bits, 32 characters) less its first 6 characters (the 30 bits above)."""
    return base64.b32encode((value & ((1 << 130) - 1)).to_bytes(20, "big")).translate(_TO_CROCKFORD)[6:].decode()


def id_new(prefix: str) -> str:
    """Return a new id: ``<prefix>_`` + 26 chars (48-bit ms timestamp + 80 random bits).

    Ids sort by creation time (like ULIDs), which keeps B-tree inserts local.
    """
    if prefix not in _prefixes_ok:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
        _prefixes_ok.add(prefix)
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_encode_130(((millis & _MILLIS_MASK) << 80) | secrets.randbits(80))}"


def id_is_valid(value: object, prefix: str | None = None) -> bool:
    """Whether ``value`` is a well-formed id (optionally with the given prefix)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        return False
    return prefix is None or value.startswith(prefix + "_")


class PrefixedIdConverter:
    """URL converter accepting any string segment; views answer 404 for malformed ids."""

    regex = r"[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value
