"""Prefixed opaque ids (``acc_…``, ``txn_…``, ``cli_…``): the one id generator."""

from __future__ import annotations

import re
import secrets
import time

# Crockford base32: no I, L, O, U — readable and unambiguous when read aloud.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PREFIX = re.compile(r"^[a-z]{2,8}$")
ID_PATTERN = r"[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}"
_ID = re.compile(rf"^{ID_PATTERN}$")


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def id_new(prefix: str) -> str:
    """Return a new id: ``<prefix>_`` + 26 chars (48-bit ms timestamp + 80 random bits).

    Ids sort by creation time (like ULIDs), which keeps B-tree inserts local.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_encode(millis, 10)}{_encode(secrets.randbits(80), 16)}"


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
