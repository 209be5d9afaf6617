"""Standalone verifier for Atrium audit proofs: Python standard library + ``cryptography`` only.

An outside auditor copies this one file, fetches a proof from the portal
(``GET /api/v1/audit/events/{id}/proof``) and the portal's audit public key
(``GET /api/v1/audit/public-key``), and runs::

    python -m portal.audit.standalone_verifier proof.json --public-key audit-key.pem
    python standalone_verifier.py proof.json --public-key audit-key.pem   # the copied file works the same

After the signing key was rotated, heads signed by a retired key verify only with that key too: fetch every
trusted key (``GET /api/v1/audit/public-keys``, one file of PEM blocks, the current key first) and pass that file,
or repeat ``--public-key``. Each head is checked with the key its ``key_id`` names (SHA-256 of the raw public
key, first 16 hex digits); a head without one is tried against each key.

It checks that the event's leaf hash is what its canonical JSON hashes to, that the inclusion path
leads from the leaf to the signed head's root (RFC 6962 / RFC 9162 Merkle tree), and the head's
Ed25519 signature. With ``--heads heads.json`` (``GET /api/v1/audit/heads``) it also checks each
head's signature and the consistency proof between consecutive heads (the log only grew).

Hashes: leaf = SHA-256(0x00 ‖ canonical event), node = SHA-256(0x01 ‖ left ‖ right),
chain hash = SHA-256(canonical event ‖ previous chain hash). Canonical JSON: keys sorted, no
whitespace, UTF-8, non-ASCII kept as is. Exit status 0 when everything verifies, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ZERO_HASH = bytes(32)

# --- what the sequencer writes, and nothing else ---------------------------------------------------------------
# The sequencer (portal/audit/chain.py) parks, as a placeholder event, whatever would break these bounds; so a
# chained event outside them was not written by it. Both verifiers (``audit_verify`` and this file) report such
# a value at once, at its seq, and no check ever costs more for a bigger value: every loop is over what is
# present (rows, lines, path entries), never over a range of numbers found in the data.
EVENT_MAX_BYTES = 1 << 20  # the largest canonical event the sequencer chains (1 MiB)
SEQ_MAX = 2**63 - 1  # seq and service_seq are PostgreSQL bigints; both start at 1
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # nothing in an Atrium log happened before it
CLOCK_SKEW_SECONDS = 300  # how far a service's clock (occurred_at) may run ahead of the portal's (recorded_at)
# The longest value of each field the sequencer writes (it cuts the optional ones to these lengths; the search
# columns are as long), by path in the event.
FIELD_MAX = {
    ("id",): 64,
    ("service",): 40,
    ("action",): 200,
    ("outcome",): 10,
    ("actor", "type"): 10,
    ("actor", "id"): 200,
    ("actor", "display"): 200,
    ("object", "type"): 100,
    ("object", "id"): 200,
    ("request_id",): 128,
    ("source_ip",): 64,
    ("user_agent",): 512,
}
# An archive line holds an event's canonical text as a JSON string (each character escaped at most once: twice
# as long), its hashes and an inclusion proof of at most 64 hashes.
ARCHIVE_LINE_MAX = 2 * EVENT_MAX_BYTES + 64 * 1024


def parse_timestamp(value: Any) -> dt.datetime | None:
    """An event's ISO 8601 timestamp (``Z`` or an offset; none: UTC) as an aware datetime; None if it is none."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _short(value: Any) -> str:
    """A value for a message: at most 60 characters (a huge number by its size, never by its digits)."""
    if isinstance(value, int) and value.bit_length() > 96:
        return f"a {value.bit_length()}-bit number"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(value: Any) -> int:
    """A tree size or seq from a document: an integer from 0 to 2^63-1 (ValueError otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SEQ_MAX:
        raise ValueError(f"{_short(value)} is not a count from 0 to 2^63-1")
    return value


def _count_or_zero(value: Any) -> int:
    try:
        return _count(value)
    except ValueError:
        return 0


_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def event_out_of_range(event: dict[str, Any], size: int) -> str | None:
    """Why a chained event (``size`` bytes of canonical JSON) holds what the sequencer never writes; None: it does not.

    Its size, ``seq`` and ``service_seq`` (1 to 2^63-1), its timestamps (not before 2000; ``occurred_at`` not more
    than ``CLOCK_SKEW_SECONDS`` after ``recorded_at``) and the length of each field in ``FIELD_MAX``. The order of
    events (``recorded_at`` never goes back) is the caller's to check.
    """
    if size > EVENT_MAX_BYTES:
        return f"its canonical JSON is {size} bytes, more than the {EVENT_MAX_BYTES} the sequencer writes"
    for name in ("seq", "service_seq"):
        value = event.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= SEQ_MAX:
            return f"its {name} {_short(value)} is out of range (1 to 2^63-1)"
    recorded = parse_timestamp(event.get("recorded_at"))
    occurred = parse_timestamp(event.get("occurred_at"))
    if recorded is None or recorded < EPOCH:
        return f"its recorded_at {_short(event.get('recorded_at'))} is not a time since {EPOCH:%Y}"
    if occurred is None or occurred < EPOCH:
        return f"its occurred_at {_short(event.get('occurred_at'))} is not a time since {EPOCH:%Y}"
    if occurred > recorded + dt.timedelta(seconds=CLOCK_SKEW_SECONDS):
        return (
            f"its occurred_at {event['occurred_at']} is after its recorded_at {event['recorded_at']} "
            f"(by more than the {CLOCK_SKEW_SECONDS} s a service's clock may be ahead)"
        )
    for path, limit in _FIELD_PATHS:
        value = event.get(path[0])
        if len(path) == 2:
            value = value.get(path[1]) if isinstance(value, dict) else None
        if not isinstance(value, str) or len(value) > limit:
            name = ".".join(path)
            if not isinstance(value, str):
                return f"its {name} is not a string"
            return f"its {name} is {len(value)} characters long, more than the {limit} the sequencer writes"
    return None


_FIELD_PATHS = tuple(FIELD_MAX.items())


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes that are hashed for an event (and for a signed head): strict JSON (no NaN or Infinity)."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def chain_hash(data: bytes, previous: bytes) -> bytes:
    return hashlib.sha256(data + previous).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes (empty tree: SHA-256 of nothing)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root_from_leaves(leaves[:k]), root_from_leaves(leaves[k:]))


def subtree_root(start: int, end: int, complete: Callable[[int, int], bytes]) -> bytes:
    """MTH of leaves [start, end), given ``complete(level, index)`` for aligned complete subtrees."""
    size = end - start
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return complete(level, start >> level)
    k = _split(size)
    return node_hash(subtree_root(start, start + k, complete), subtree_root(start + k, end, complete))


def inclusion_path(index: int, size: int, complete: Callable[[int, int], bytes], start: int = 0) -> list[bytes]:
    """RFC 6962 audit path for leaf ``index`` in the first ``size`` leaves (offset ``start``)."""
    if size <= 1:
        return []
    k = _split(size)
    if index < k:
        return [*inclusion_path(index, k, complete, start), subtree_root(start + k, start + size, complete)]
    return [*inclusion_path(index - k, size - k, complete, start + k), subtree_root(start, start + k, complete)]


def consistency_path(old: int, new: int, complete: Callable[[int, int], bytes]) -> list[bytes]:
    """RFC 6962 consistency proof between tree sizes ``old`` and ``new`` (0 < old ≤ new)."""

    def sub(m: int, start: int, n: int, whole: bool) -> list[bytes]:
        if m == n:
            return [] if whole else [subtree_root(start, start + n, complete)]
        k = _split(n)
        if m <= k:
            return [*sub(m, start, k, whole), subtree_root(start + k, start + n, complete)]
        return [*sub(m - k, start + k, n - k, False), subtree_root(start, start + k, complete)]

    if old <= 0 or old > new:
        raise ValueError("consistency needs 0 < old <= new")
    return sub(old, 0, new, True)


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove ``leaf`` at ``index`` in the tree of ``size`` with ``root``?"""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``path`` prove the tree of size ``new`` extends the one of size ``old``?"""
    if old == new:
        return old_root == new_root and not path
    if old == 0 or old > new:
        return False
    path = list(path)
    if old & (old - 1) == 0:  # old is a power of two: its root is the first node
        path = [old_root, *path]
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def head_message(head: dict[str, Any]) -> bytes:
    """What a signed tree head's signature covers."""
    return canonical(
        {
            "tree_size": head["tree_size"],
            "root_hash": head["root_hash"],
            "last_hash": head["last_hash"],
            "timestamp": head["timestamp"],
        }
    )


def verify_head_signature(head: dict[str, Any], public_key_pem: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(base64.b64decode(head["signature"]), head_message(head))
    except (InvalidSignature, ValueError, KeyError):
        return False
    return True


PublicKeys = dict[str, bytes]  # key id -> public key PEM: every key a head may be signed by


def public_key_id(public_key_pem: bytes) -> str:
    """A public key's id as heads name it: SHA-256 of the raw Ed25519 public key, first 16 hex digits."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

    key = load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


PEM_END = b"-----END PUBLIC KEY-----"


def public_keys_load(data: bytes | Sequence[bytes]) -> PublicKeys:
    """``{key id: PEM}`` of one PEM, a file of several PEM blocks, or a list of either; raises ValueError if one
    is not an Ed25519 public key."""
    chunks = [data] if isinstance(data, bytes) else list(data)
    keys: PublicKeys = {}
    for chunk in chunks:
        blocks = [part.strip() + b"\n" + PEM_END + b"\n" for part in chunk.split(PEM_END) if part.strip()]
        for pem in blocks:
            keys[public_key_id(pem)] = pem
    if not keys:
        raise ValueError("no public key given")
    return keys


def _as_keys(public_keys: bytes | PublicKeys) -> PublicKeys:
    return public_keys_load(public_keys) if isinstance(public_keys, bytes) else public_keys


UNKNOWN_KEY = "none of the public keys given"


def head_signature_problem(
    head: dict[str, Any], public_keys: bytes | PublicKeys, *, unknown: str = UNKNOWN_KEY
) -> str | None:
    """Why ``head`` is not validly signed by one of ``public_keys`` (None: it is), picking the key by the head's
    ``key_id``; a head without one is tried against each key. ``unknown`` says which keys were trusted."""
    keys = _as_keys(public_keys)
    key_id = head.get("key_id") if isinstance(head, dict) else None
    if not key_id:
        if any(verify_head_signature(head, pem) for pem in keys.values()):
            return None
        return "bad signature under every public key given (and the head names no key id)"
    if not isinstance(key_id, str) or key_id not in keys:
        shown = key_id if isinstance(key_id, str) and len(key_id) <= 40 else _short(key_id)
        return f"signed by key {shown}, which is {unknown}"
    if not verify_head_signature(head, keys[key_id]):
        return f"bad signature under key {key_id}"
    return None


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


def check_proof(document: dict[str, Any], public_keys: bytes | PublicKeys, *, unknown: str = UNKNOWN_KEY) -> list[str]:
    """Every problem with an inclusion-proof document (empty list: it verifies)."""
    problems: list[str] = []
    try:
        event, head = document["event"], document["head"]
        data = canonical(event)
        leaf = leaf_hash(data)
        if document.get("leaf_hash") and _hex(document["leaf_hash"]) != leaf:
            problems.append("the event does not hash to the stated leaf hash (event modified)")
        why = event_out_of_range(event, len(data))
        if why is not None:
            problems.append(f"the event is out of range: {why}")
        path = [_hex(h) for h in document["proof"]]
        index, size = _count(document["leaf_index"]), _count(head["tree_size"])
        if not verify_inclusion(leaf, index, size, path, _hex(head["root_hash"])):
            problems.append("the inclusion path does not lead to the head's root hash")
    except (*_MALFORMED, UnicodeError) as exc:
        return [*problems, f"the proof document is malformed ({type(exc).__name__}: {_short(str(exc))})"]
    why = head_signature_problem(head, public_keys, unknown=unknown)
    if why is not None:
        problems.append(f"the tree head's signature is not valid: {why} (forged head)")
    return problems


def check_heads(heads: list[dict[str, Any]], public_keys: bytes | PublicKeys) -> list[str]:
    """Signatures of every head and consistency between consecutive ones (oldest first)."""
    problems: list[str] = []
    keys = _as_keys(public_keys)  # parsed once, not per head
    try:
        ordered = sorted(heads, key=lambda h: _count(h["tree_size"]))
    except _MALFORMED as exc:
        return [f"the heads document is malformed ({type(exc).__name__}: {_short(str(exc))})"]
    for head in ordered:
        why = head_signature_problem(head, keys)
        if why is not None:
            problems.append(f"head at tree size {head['tree_size']}: {why} (forged head)")
    for older, newer in itertools.pairwise(ordered):
        try:
            path = [_hex(h) for h in newer.get("consistency_proof", [])]
            old_root, new_root = _hex(older["root_hash"]), _hex(newer["root_hash"])
        except _MALFORMED:
            path, old_root, new_root = [], b"", b""
        if older["tree_size"] and not verify_consistency(
            older["tree_size"], newer["tree_size"], old_root, new_root, path
        ):
            problems.append(
                f"heads at tree sizes {older['tree_size']} and {newer['tree_size']} are not consistent "
                "(the log was rewritten between them)"
            )
    return problems


ARCHIVE_FORMAT = "atrium.audit.archive/1"


def frontier_root_hex(frontier: dict[str, str]) -> bytes:
    """The RFC 6962 root of a tree given its right frontier (``{level: hex of the complete subtree}``)."""
    acc: bytes | None = None
    for level in sorted(frontier, key=int):
        node = _hex(frontier[level])
        acc = node if acc is None else node_hash(node, acc)
    return acc if acc is not None else hashlib.sha256(b"").digest()


def _open_archive(path: Path) -> Any:
    import gzip

    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


class ArchiveCheck:
    """What :func:`check_archive` found in one archive file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: dict[str, Any] = {}
        self.events = 0
        self.problems: list[str] = []

    @property
    def first_seq(self) -> int:
        return _count_or_zero(self.header.get("first_seq"))

    @property
    def last_seq(self) -> int:
        return _count_or_zero(self.header.get("last_seq"))


OUT_OF_RANGE_MAX = 100  # out-of-range events reported per archive (the chain goes on being checked)


def check_archive(
    path: Path, public_keys: bytes | PublicKeys, *, proofs: bool = True, unknown: str = UNKNOWN_KEY
) -> ArchiveCheck:
    """Check an ``audit_archive`` file on its own: every event's hashes, the chain from the archive's start,
    the Merkle tree from the start's frontier to the covering head's root, every signed head in the range,
    each event's inclusion proof (unless ``proofs`` is false), the end line (count and body digest), and that
    every event is within what the sequencer writes (:func:`event_out_of_range`, ``recorded_at`` never going
    back, no event recorded after a head covering it was signed). A malformed header or line is a problem,
    never an exception; no line is read past ``ARCHIVE_LINE_MAX`` bytes.
    """
    check = ArchiveCheck(path)
    try:
        _archive_check(check, _as_keys(public_keys), proofs, unknown)
    except _MALFORMED as exc:  # the header (the lines have their own handling)
        check.problems.append(f"the header is malformed ({type(exc).__name__}: {_short(str(exc))})")
    return check


def _archive_check(check: ArchiveCheck, keys: PublicKeys, proofs: bool, unknown: str) -> None:
    problems = check.problems

    def signature_problem(head: dict[str, Any]) -> str | None:
        return head_signature_problem(head, keys, unknown=unknown)

    body = hashlib.sha256()
    with _open_archive(check.path) as handle:
        first_line = handle.readline()  # every head of the range: as long as they are many, never longer
        body.update(first_line)
        try:
            header = json.loads(first_line)
        except ValueError:
            problems.append("the first line is not the archive header")
            return
        if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
            problems.append(f"not an Atrium audit archive (format {ARCHIVE_FORMAT} expected)")
            return
        check.header = header
        head, start = header["head"], header["start"]
        covering = _count(head["tree_size"])
        covering_why = signature_problem(head)
        if covering_why is not None:
            problems.append(f"the covering head (tree size {covering}): {covering_why} (forged head)")
        size = _count(start["tree_size"])
        if covering != check.last_seq or check.first_seq != size + 1:
            problems.append("the header's seq range does not run from the start to the covering head")
        frontier = {int(level): _hex(h) for level, h in start["frontier"].items()}
        if set(frontier) != {level for level in range(size.bit_length()) if size >> level & 1}:
            problems.append(f"the start frontier is not the right edge of a tree of size {size}")
            return
        prev = _hex(start["last_hash"]) if size else ZERO_HASH
        if size:
            start_head = start.get("head") or {}
            start_why = signature_problem(start_head)
            if start_why is not None:
                problems.append(f"the start head (tree size {size}): {start_why} (forged head)")
            elif (
                start_head["tree_size"] != size
                or frontier_root_hex(start["frontier"]).hex() != start_head["root_hash"]
                or start["last_hash"] != start_head["last_hash"]
            ):
                problems.append(f"the start frontier and last hash do not match the signed head at tree size {size}")
        heads = {_count(h["tree_size"]): h for h in header.get("heads", [])}
        valid = {covering: head} if covering_why is None else {}
        for tree_size, signed in sorted(heads.items()):
            why = signature_problem(signed)
            if why is None:
                valid[tree_size] = signed
            else:
                problems.append(f"head at tree size {tree_size}: {why} (forged head)")
        # Each event was recorded before the first signed head covering it: (tree size, signed at), in order.
        signed_at = sorted(
            (s, moment) for s, h in valid.items() if (moment := parse_timestamp(h.get("timestamp"))) is not None
        )
        next_head = 0
        root = _hex(head["root_hash"])
        trailer: dict[str, Any] | None = None
        last_recorded: dt.datetime | None = None
        out_of_range = 0
        skew = dt.timedelta(seconds=CLOCK_SKEW_SECONDS)
        while raw := handle.readline(ARCHIVE_LINE_MAX + 1):
            if trailer is not None:
                problems.append("lines after the end line")
                break
            expected = size + 1
            if len(raw) > ARCHIVE_LINE_MAX:
                problems.append(f"seq {expected}: its line is longer than any the archiver writes (out of range)")
                break
            try:
                line = json.loads(raw)
                if "end" in line:
                    trailer = line
                    continue
                body.update(raw)
                seq = _count(line["seq"])
                if seq != expected:
                    problems.append(f"seq {expected}: missing (the next line is seq {seq})")
                    break
                data = line["canonical"].encode("utf-8")
                leaf = leaf_hash(data)
                digest = chain_hash(data, prev)
                if leaf.hex() != line["leaf_hash"] or digest.hex() != line["hash"] or line["prev_hash"] != prev.hex():
                    problems.append(f"seq {seq}: its hashes do not match its canonical JSON and the chain (modified)")
                    break
                if len(data) > EVENT_MAX_BYTES:
                    event: Any = {}
                    why = event_out_of_range(event, len(data))
                else:
                    event = json.loads(data)
                    if not isinstance(event, dict) or event.get("seq") != seq:
                        problems.append(f"seq {seq}: its canonical JSON was chained as another seq")
                        break
                    why = event_out_of_range(event, len(data))
                    recorded = parse_timestamp(event.get("recorded_at"))
                    while next_head < len(signed_at) and signed_at[next_head][0] < seq:
                        next_head += 1
                    if why is None and last_recorded is not None and recorded < last_recorded:  # type: ignore[operator]
                        why = f"its recorded_at {event['recorded_at']} is before the previous event's"
                    elif why is None and next_head < len(signed_at) and recorded > signed_at[next_head][1] + skew:  # type: ignore[operator]
                        covered, moment = signed_at[next_head]
                        why = (
                            f"its recorded_at {event['recorded_at']} is after the head at tree size {covered} "
                            f"covering it was signed ({isoformat_utc(moment)})"
                        )
                    elif why is None:
                        last_recorded = recorded
                if why is not None and out_of_range < OUT_OF_RANGE_MAX:
                    problems.append(f"seq {seq}: {why} (out of range)")
                    out_of_range += 1
                if proofs and "proof" in line:
                    path = [_hex(h) for h in line["proof"]]
                    if not verify_inclusion(leaf, seq - 1, covering, path, root):
                        problems.append(f"seq {seq}: its inclusion proof does not lead to the covering head's root")
            except _MALFORMED as exc:
                problems.append(f"seq {expected}: its line is malformed ({type(exc).__name__}: {_short(str(exc))})")
                break
            carry, level, position = leaf, 0, size
            while position >> level & 1:
                carry = node_hash(frontier.pop(level), carry)
                level += 1
            frontier[level] = carry
            size, prev = seq, digest
            check.events += 1
            signed = heads.get(size)
            if signed is not None:
                here = frontier_root_hex({str(k): v.hex() for k, v in frontier.items()})
                if here.hex() != signed["root_hash"] or prev.hex() != signed["last_hash"]:
                    problems.append(f"head at tree size {size} does not match the archived events (forged head)")
    if trailer is None:
        problems.append("no end line: the archive is truncated")
    else:
        if trailer.get("events", -1) != check.events:
            problems.append(
                f"the end line counts {_short(trailer.get('events'))} events, the file holds {check.events}"
            )
        if trailer.get("body_sha256") != body.hexdigest():
            problems.append("the end line's digest does not match the lines before it")
    if not problems and size == check.last_seq:
        final = frontier_root_hex({str(k): v.hex() for k, v in frontier.items()})
        if final != root or prev.hex() != head["last_hash"]:
            problems.append("the archived events do not add up to the covering head's root and last hash")
    elif not problems:
        problems.append(f"the archive ends at seq {size}, its head covers {check.last_seq}")


def isoformat_utc(moment: dt.datetime) -> str:
    """UTC, microseconds, ``Z``: the format of every timestamp in the log."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_archives(
    paths: Sequence[Path], public_keys: bytes | PublicKeys, *, proofs: bool = True, unknown: str = UNKNOWN_KEY
) -> list[ArchiveCheck]:
    """Check each archive and that, in seq order, each one starts where the one before it ends."""
    keys = _as_keys(public_keys)
    checks = sorted((check_archive(p, keys, proofs=proofs, unknown=unknown) for p in paths), key=lambda c: c.first_seq)
    for before, after in itertools.pairwise(checks):
        if before.header and after.header:
            try:
                start = after.header["start"]
                follows = start["tree_size"] == before.last_seq and (
                    start["last_hash"] == before.header["head"]["last_hash"]
                )
            except _MALFORMED:
                follows = False
            if not follows:
                after.problems.append(f"does not continue {before.path.name} (which ends at seq {before.last_seq})")
    return checks


def archive_proof(path: Path, seq: int) -> dict[str, Any]:
    """The inclusion-proof document (as the portal's proof endpoint returns) of one archived event."""
    with _open_archive(path) as handle:
        header = json.loads(handle.readline())
        for raw in handle:
            line = json.loads(raw)
            if line.get("seq") == seq:
                return {
                    "event": json.loads(line["canonical"]),
                    "leaf_index": seq - 1,
                    "leaf_hash": line["leaf_hash"],
                    "proof": line.get("proof", []),
                    "head": header["head"],
                }
    raise LookupError(f"seq {seq} is not in {path}")


def _document(path: str, problems: list[str]) -> Any:
    """A JSON document from ``path`` (None, and a problem, if it is not JSON: a huge number included)."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        problems.append(f"{Path(path).name} is not JSON ({_short(str(exc))})")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portal.audit.standalone_verifier", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("proof", nargs="?", help="inclusion proof JSON (GET /api/v1/audit/events/{id}/proof)")
    parser.add_argument(
        "--public-key",
        metavar="PEM",
        action="append",
        default=[],
        help="the portal's audit public key (GET /api/v1/audit/public-key), or a file of several (GET "
        "/api/v1/audit/public-keys: the current and retired keys); repeat for several; needed for every check, "
        "not --extract",
    )
    parser.add_argument("--heads", help="signed heads JSON (GET /api/v1/audit/heads)")
    parser.add_argument(
        "--archive", action="append", default=[], help="an audit_archive file to check (repeat for several)"
    )
    parser.add_argument("--extract", type=int, metavar="SEQ", help="with one --archive: print SEQ's proof document")
    args = parser.parse_args(argv)
    if args.extract is not None:  # prints a document, checks nothing: no key needed
        if len(args.archive) != 1 or args.proof or args.heads:
            parser.error("--extract needs exactly one --archive (and no proof file or --heads)")
        print(json.dumps(archive_proof(Path(args.archive[0]), args.extract), indent=2, ensure_ascii=False))
        return 0
    if not args.proof and not args.heads and not args.archive:
        parser.error("give a proof file, --heads, --archive, or several")
    if not args.public_key:
        parser.error(
            "--public-key PEM is required: signatures are checked against the portal's audit public key "
            "(GET /api/v1/audit/public-key), never a key taken from the files being checked"
        )
    try:
        key = public_keys_load([Path(p).read_bytes() for p in args.public_key])
    except ValueError as exc:
        parser.error(f"--public-key: {exc}")
    problems: list[str] = []
    if args.proof:
        document = _document(args.proof, problems)
        if isinstance(document, dict):
            problems += check_proof(document, key)
        elif document is not None:
            problems.append("the proof is not a JSON object")
        if not problems:
            print(
                f"OK: event {document['event'].get('id')} is leaf {document['leaf_index']} of the signed tree "
                f"of size {document['head']['tree_size']}"
            )
    if args.heads:
        data = _document(args.heads, problems)
        heads = data.get("results") if isinstance(data, dict) else data
        heads = heads if isinstance(heads, list) else []
        problems += check_heads(heads, key)
        if not problems:
            print(f"OK: {len(heads)} signed heads, each signature valid and each consistent with the previous")
    for check in check_archives([Path(a) for a in args.archive], key):
        problems += [f"{check.path.name}: {p}" for p in check.problems]
        if not check.problems:
            print(
                f"OK: {check.path.name}: seqs {check.first_seq}-{check.last_seq}, {check.events} events, "
                f"chain, Merkle root and {len(check.header.get('heads', []))} signed heads verified"
            )
    for problem in problems:
        print("FAIL:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
