"""Standalone verifier for Atrium audit proofs: Python standard library + ``cryptography`` only.

An outside auditor copies this one file, fetches a proof from the portal
(``GET /api/v1/audit/events/{id}/proof``) and the portal's audit public key
(``GET /api/v1/audit/public-key``), and runs::

    python -m portal.audit.verifier proof.json --public-key audit-key.pem
    python verifier.py proof.json --public-key audit-key.pem      # the copied file works the same

It checks that the event's leaf hash is what its canonical JSON hashes to, that the inclusion path
leads from the leaf to the signed head's root (RFC 6962 / RFC 9162 Merkle tree), and the head's
Ed25519 signature. With ``--heads heads.json`` (``GET /api/v1/audit/heads/``) it also checks each
head's signature and the consistency proof between consecutive heads (the log only grew).

Hashes: leaf = SHA-256(0x00 ‖ canonical event), node = SHA-256(0x01 ‖ left ‖ right),
chain hash = SHA-256(canonical event ‖ previous chain hash). Canonical JSON: keys sorted, no
whitespace, UTF-8, non-ASCII kept as is. Exit status 0 when everything verifies, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ZERO_HASH = bytes(32)


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes that are hashed for an event (and for a signed head)."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


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


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


def check_proof(document: dict[str, Any], public_key_pem: bytes) -> list[str]:
    """Every problem with an inclusion-proof document (empty list: it verifies)."""
    problems: list[str] = []
    event, head = document["event"], document["head"]
    leaf = leaf_hash(canonical(event))
    if document.get("leaf_hash") and _hex(document["leaf_hash"]) != leaf:
        problems.append("the event does not hash to the stated leaf hash (event modified)")
    path = [_hex(h) for h in document["proof"]]
    if not verify_inclusion(leaf, int(document["leaf_index"]), int(head["tree_size"]), path, _hex(head["root_hash"])):
        problems.append("the inclusion path does not lead to the head's root hash")
    if not verify_head_signature(head, public_key_pem):
        problems.append("the tree head's signature is not valid for this public key (forged head)")
    return problems


def check_heads(heads: list[dict[str, Any]], public_key_pem: bytes) -> list[str]:
    """Signatures of every head and consistency between consecutive ones (oldest first)."""
    problems: list[str] = []
    ordered = sorted(heads, key=lambda h: h["tree_size"])
    for head in ordered:
        if not verify_head_signature(head, public_key_pem):
            problems.append(f"head at tree size {head['tree_size']}: bad signature (forged head)")
    for older, newer in itertools.pairwise(ordered):
        path = [_hex(h) for h in newer.get("consistency_proof", [])]
        if older["tree_size"] and not verify_consistency(
            older["tree_size"], newer["tree_size"], _hex(older["root_hash"]), _hex(newer["root_hash"]), path
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
        return int(self.header.get("first_seq", 0))

    @property
    def last_seq(self) -> int:
        return int(self.header.get("last_seq", 0))


def check_archive(path: Path, public_key_pem: bytes, *, proofs: bool = True) -> ArchiveCheck:
    """Check an ``audit_archive`` file on its own: every event's hashes, the chain from the archive's start,
    the Merkle tree from the start's frontier to the covering head's root, every signed head in the range,
    each event's inclusion proof (unless ``proofs`` is false), and the end line (count and body digest).
    """
    check = ArchiveCheck(path)
    problems = check.problems
    body = hashlib.sha256()
    with _open_archive(path) as handle:
        first_line = handle.readline()
        body.update(first_line)
        try:
            header = json.loads(first_line)
        except ValueError:
            problems.append("the first line is not the archive header")
            return check
        if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
            problems.append(f"not an Atrium audit archive (format {ARCHIVE_FORMAT} expected)")
            return check
        check.header = header
        head, start = header["head"], header["start"]
        if not verify_head_signature(head, public_key_pem):
            problems.append(f"the covering head (tree size {head['tree_size']}): bad signature (forged head)")
        size = int(start["tree_size"])
        if int(head["tree_size"]) != check.last_seq or check.first_seq != size + 1:
            problems.append("the header's seq range does not run from the start to the covering head")
        frontier = {int(level): _hex(h) for level, h in start["frontier"].items()}
        prev = _hex(start["last_hash"]) if size else ZERO_HASH
        if size:
            start_head = start.get("head") or {}
            if not verify_head_signature(start_head, public_key_pem):
                problems.append(f"the start head (tree size {size}): bad signature (forged head)")
            elif (
                int(start_head["tree_size"]) != size
                or frontier_root_hex(start["frontier"]).hex() != start_head["root_hash"]
                or start["last_hash"] != start_head["last_hash"]
            ):
                problems.append(f"the start frontier and last hash do not match the signed head at tree size {size}")
        heads = {int(h["tree_size"]): h for h in header.get("heads", [])}
        for tree_size, signed in sorted(heads.items()):
            if not verify_head_signature(signed, public_key_pem):
                problems.append(f"head at tree size {tree_size}: bad signature (forged head)")
        root = _hex(head["root_hash"])
        trailer: dict[str, Any] | None = None
        for raw in handle:
            if trailer is not None:
                problems.append("lines after the end line")
                break
            line = json.loads(raw)
            if "end" in line:
                trailer = line
                continue
            body.update(raw)
            seq = int(line["seq"])
            expected = size + 1
            if seq != expected:
                problems.append(f"seq {expected}: missing (the next line is seq {seq})")
                break
            data = line["canonical"].encode("utf-8")
            leaf = leaf_hash(data)
            digest = chain_hash(data, prev)
            if leaf.hex() != line["leaf_hash"] or digest.hex() != line["hash"] or line["prev_hash"] != prev.hex():
                problems.append(f"seq {seq}: its hashes do not match its canonical JSON and the chain (modified)")
                break
            if json.loads(data).get("seq") != seq:
                problems.append(f"seq {seq}: its canonical JSON was chained as another seq")
                break
            if proofs and "proof" in line:
                path = [_hex(h) for h in line["proof"]]
                if not verify_inclusion(leaf, seq - 1, int(head["tree_size"]), path, root):
                    problems.append(f"seq {seq}: its inclusion proof does not lead to the covering head's root")
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
        if int(trailer.get("events", -1)) != check.events:
            problems.append(f"the end line counts {trailer.get('events')} events, the file holds {check.events}")
        if trailer.get("body_sha256") != body.hexdigest():
            problems.append("the end line's digest does not match the lines before it")
    if not problems and size == check.last_seq:
        final = frontier_root_hex({str(k): v.hex() for k, v in frontier.items()})
        if final != root or prev.hex() != head["last_hash"]:
            problems.append("the archived events do not add up to the covering head's root and last hash")
    elif not problems:
        problems.append(f"the archive ends at seq {size}, its head covers {check.last_seq}")
    return check


def check_archives(paths: Sequence[Path], public_key_pem: bytes, *, proofs: bool = True) -> list[ArchiveCheck]:
    """Check each archive and that, in seq order, each one starts where the one before it ends."""
    checks = sorted((check_archive(p, public_key_pem, proofs=proofs) for p in paths), key=lambda c: c.first_seq)
    for before, after in itertools.pairwise(checks):
        if before.header and after.header:
            start = after.header["start"]
            if start["tree_size"] != before.last_seq or start["last_hash"] != before.header["head"]["last_hash"]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portal.audit.verifier", description=__doc__.split("\n\n")[0])
    parser.add_argument("proof", nargs="?", help="inclusion proof JSON (GET /api/v1/audit/events/{id}/proof)")
    parser.add_argument("--public-key", required=True, help="the portal's audit public key (PEM)")
    parser.add_argument("--heads", help="signed heads JSON (GET /api/v1/audit/heads/)")
    parser.add_argument(
        "--archive", action="append", default=[], help="an audit_archive file to check (repeat for several)"
    )
    parser.add_argument("--extract", type=int, metavar="SEQ", help="with one --archive: print SEQ's proof document")
    args = parser.parse_args(argv)
    key = Path(args.public_key).read_bytes()
    problems: list[str] = []
    if args.proof:
        document = json.loads(Path(args.proof).read_text())
        problems += check_proof(document, key)
        if not problems:
            print(
                f"OK: event {document['event'].get('id')} is leaf {document['leaf_index']} of the signed tree "
                f"of size {document['head']['tree_size']}"
            )
    if args.heads:
        data = json.loads(Path(args.heads).read_text())
        heads = data["results"] if isinstance(data, dict) else data
        problems += check_heads(heads, key)
        if not problems:
            print(f"OK: {len(heads)} signed heads, each signature valid and each consistent with the previous")
    if args.extract is not None:
        if len(args.archive) != 1:
            parser.error("--extract needs exactly one --archive")
        print(json.dumps(archive_proof(Path(args.archive[0]), args.extract), indent=2, ensure_ascii=False))
        return 0
    for check in check_archives([Path(a) for a in args.archive], key):
        problems += [f"{check.path.name}: {p}" for p in check.problems]
        if not check.problems:
            print(
                f"OK: {check.path.name}: seqs {check.first_seq}-{check.last_seq}, {check.events} events, "
                f"chain, Merkle root and {len(check.header.get('heads', []))} signed heads verified"
            )
    if not args.proof and not args.heads and not args.archive:
        parser.error("give a proof file, --heads, --archive, or several")
    for problem in problems:
        print("FAIL:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
