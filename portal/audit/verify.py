"""Full verification of the audit log: chain, Merkle roots, signed heads (database and file), service gaps.

:func:`verify_log` streams ``audit_event`` in ``seq`` order with a server-side cursor. PostgreSQL compares
each row's search columns with its hashed JSON (in the streaming query, on its own core); Python
recomputes the chain hash and Merkle leaf from the stored canonical bytes, folds the leaves into the
tree's right frontier and, at every signed head's size, compares the recomputed root and last hash with
the head. It reports the first problem by ``seq`` with a reason:

* ``modified`` — a row's stored hashes do not match its canonical JSON, or its columns disagree with it;
* ``missing`` — a ``seq`` is absent (a row was deleted), so the next row's link points to a hash not seen;
* ``inserted`` — a row hashes correctly but does not link to its predecessor although no ``seq`` is
  missing (a row was slipped in and the rest renumbered or re-linked);
* ``forged head`` — a head whose signature is invalid, whose root or last hash differs from the
  recomputed tree, or that differs between the database and the file kept outside it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from portal.audit import heads as heads_mod
from portal.audit.models import AuditChainState, AuditHead
from portal.audit.verifier import ZERO_HASH, verify_head_signature

# The columns copied out of the canonical JSON for search, compared with it by PostgreSQL.
_COLUMNS_MATCH = """(
    c->>'id' = event_id AND c->>'service' = service AND (c->>'service_seq')::bigint = service_seq
    AND (c->>'seq')::bigint = seq AND c->>'action' = action AND c->>'outcome' = outcome
    AND c->'actor'->>'type' = actor_type AND c->'actor'->>'id' = actor_id
    AND c->'actor'->>'display' = actor_display AND c->'object'->>'type' = object_type
    AND c->'object'->>'id' = object_id AND c->>'request_id' = request_id AND c->>'source_ip' = source_ip
    AND c->>'user_agent' = user_agent AND c->'changes' = changes AND c->'metadata' = metadata
    AND (c->>'occurred_at')::timestamptz = occurred_at
)"""


_STREAM = "SELECT seq, convert_to(canonical, 'UTF8'), hash, prev_hash, leaf_hash FROM audit_event ORDER BY seq"
# Rows whose columns no longer say what their hashed JSON says (PostgreSQL parses the JSON, in parallel).
_COLUMNS_DISAGREE = (
    "SELECT seq FROM audit_event, LATERAL (SELECT canonical::jsonb AS c OFFSET 0) AS j "  # noqa: S608
    f"WHERE NOT {_COLUMNS_MATCH} ORDER BY seq LIMIT 100"
)
_SERVICE_GAPS = """
    SELECT s.service, g.n FROM (
        SELECT service, max(service_seq) AS top, count(DISTINCT service_seq) AS present
        FROM audit_event GROUP BY service
    ) AS s, LATERAL generate_series(1, s.top) AS g(n)
    WHERE s.present < s.top
      AND NOT EXISTS (SELECT 1 FROM audit_event e WHERE e.service = s.service AND e.service_seq = g.n)
    ORDER BY 1, 2 LIMIT 1000
"""


@dataclass
class Problem:
    seq: int
    reason: str
    detail: str


@dataclass
class VerifyReport:
    events: int = 0
    heads: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    service_gaps: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        return {
            "ok": self.ok,
            "events": self.events,
            "heads": self.heads,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second),
            "first_problem": None
            if first is None
            else {"seq": first.seq, "reason": first.reason, "detail": first.detail},
            "problems": len(self.problems),
            "service_gaps": {s: gaps[:20] for s, gaps in self.service_gaps.items()},
        }


def _heads_by_size() -> tuple[dict[int, dict[str, Any]], list[Problem]]:
    """Signed heads from the database, checked against the file copy and their signatures."""
    problems: list[Problem] = []
    key = heads_mod.public_key_pem()
    db = {h.tree_size: heads_mod.head_as_dict(h) for h in AuditHead.objects.order_by("tree_size")}
    file = {h["tree_size"]: h for h in heads_mod.heads_file_read()}
    for size in sorted(set(db) | set(file)):
        in_db, in_file = db.get(size), file.get(size)
        if in_db is None:
            problems.append(
                Problem(size, "forged head", f"head at tree size {size} is in the file but not the database")
            )
            continue
        if in_file is None:
            problems.append(Problem(size, "forged head", f"head at tree size {size} is in the database, not the file"))
        elif in_file != in_db:
            problems.append(Problem(size, "forged head", f"head at tree size {size} differs between database and file"))
        if not verify_head_signature(in_db, key):
            problems.append(Problem(size, "forged head", f"head at tree size {size} has an invalid signature"))
    return db, problems


def _columns_check(out: list[int]) -> None:
    """Run in a thread with its own connection, while the chain is streamed on the main one."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(_COLUMNS_DISAGREE)
            out.extend(row[0] for row in cursor.fetchall())
    finally:
        connection.close()


def verify_log(*, batch: int = 10_000) -> VerifyReport:
    """Verify everything; never raises for a bad log (the report says what is wrong)."""
    began = time.perf_counter()
    report = VerifyReport()
    heads, head_problems = _heads_by_size()
    report.heads = len(heads)
    report.problems.extend(head_problems)
    disagreeing: list[int] = []
    checker = threading.Thread(target=_columns_check, args=(disagreeing,), name="audit-verify-columns")
    checker.start()
    sha256 = hashlib.sha256
    prev = prev2 = ZERO_HASH
    expected_seq = 1
    nodes: list[bytes | None] = []  # the right frontier: nodes[level] is a complete subtree root, or None
    size = 0
    problems = report.problems
    with transaction.atomic(), connection.connection.cursor(name="audit_verify") as cursor:
        cursor.itersize = batch
        cursor.execute(_STREAM)
        for seq, data, digest, prev_hash, stored_leaf in cursor:
            if seq != expected_seq:
                reason = "missing" if seq > expected_seq else "inserted"
                problems.append(Problem(expected_seq, reason, f"expected seq {expected_seq}, found {seq}"))
            leaf = sha256(b"\x00" + data).digest()
            if sha256(data + prev_hash).digest() != digest or leaf != stored_leaf:
                problems.append(Problem(seq, "modified", f"seq {seq}: its hashes do not match its canonical JSON"))
            elif prev_hash != prev and seq == expected_seq:
                if prev_hash == prev2:  # it links past its predecessor: the predecessor was slipped in
                    problems.append(
                        Problem(seq - 1, "inserted", f"seq {seq - 1} is not in the chain: seq {seq} links past it")
                    )
                else:
                    problems.append(
                        Problem(seq, "inserted", f"seq {seq} hashes correctly but does not link to seq {seq - 1}")
                    )
            # Merkle: add the leaf to the right frontier, merging complete subtrees upwards.
            carry, level = leaf, 0
            while size >> level & 1:
                carry = sha256(b"\x01" + nodes[level] + carry).digest()  # type: ignore[operator]
                nodes[level] = None
                level += 1
            if level == len(nodes):
                nodes.append(carry)
            else:
                nodes[level] = carry
            size += 1
            prev2, prev = prev, digest
            expected_seq = seq + 1
            if size in heads:
                head = heads[size]
                if _root(nodes).hex() != head["root_hash"] or prev.hex() != head["last_hash"]:
                    problems.append(
                        Problem(size, "forged head", f"head at tree size {size} does not match the recomputed tree")
                    )
    report.events = size
    checker.join()
    for seq in disagreeing:
        problems.append(Problem(seq, "modified", f"seq {seq}: its columns disagree with its canonical JSON"))
    state = AuditChainState.objects.filter(id=1).first()
    if state is not None and (state.size != size or (size and bytes(state.last_hash) != prev)):
        problems.append(
            Problem(
                min(size, state.size) + 1,
                "inserted" if size > state.size else "missing",
                f"the sequencer recorded {state.size} events, the table holds {size}",
            )
        )
    for head_size in heads:
        if head_size > size:
            problems.append(
                Problem(head_size, "forged head", f"head at tree size {head_size} is beyond the log ({size} events)")
            )
    with connection.cursor() as cursor:
        cursor.execute(_SERVICE_GAPS)
        for service, number in cursor.fetchall():
            report.service_gaps.setdefault(service, []).append(number)
    report.seconds = time.perf_counter() - began
    return report


def _root(nodes: list[bytes | None]) -> bytes:
    """RFC 6962 root from the right frontier (lowest level first)."""
    acc: bytes | None = None
    for node in nodes:
        if node is not None:
            acc = node if acc is None else hashlib.sha256(b"\x01" + node + acc).digest()
    return acc if acc is not None else hashlib.sha256(b"").digest()
