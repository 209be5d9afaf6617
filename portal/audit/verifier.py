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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portal.audit.verifier", description=__doc__.split("\n\n")[0])
    parser.add_argument("proof", nargs="?", help="inclusion proof JSON (GET /api/v1/audit/events/{id}/proof)")
    parser.add_argument("--public-key", required=True, help="the portal's audit public key (PEM)")
    parser.add_argument("--heads", help="signed heads JSON (GET /api/v1/audit/heads/)")
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
    if not args.proof and not args.heads:
        parser.error("give a proof file, --heads, or both")
    for problem in problems:
        print("FAIL:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
