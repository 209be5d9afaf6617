"""The sequencer: events from every service's outbox become one hash chain and one Merkle tree.

:func:`ingest` runs in the ``audit`` queue's worker. Under one transaction-level advisory lock (so
several ingest workers never fork the chain) it drops events already recorded (by event id),
assigns the next global sequence numbers, computes each event's chain hash
``SHA-256(canonical ‖ previous hash)`` and Merkle leaf ``SHA-256(0x00 ‖ canonical)``, adds the
completed subtree roots to ``audit_node``, writes the batch with COPY and seals it (``audit_seal``: the
transaction id its rows carry, see :mod:`portal.audit.seal`). Validation and serialisation happen before
the lock. Malformed or conflicting events are kept in ``audit_rejected`` with the reason, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from portal.audit.models import AuditNode, AuditRejected
from portal.audit.seal import seal_write
from portal.audit.verifier import ZERO_HASH, canonical, chain_hash, leaf_hash, node_hash
from services.kit.logs import get_logger
from services.kit.outbox import event_expand, isoformat

log = get_logger(__name__)

SEQUENCER_LOCK = 0x41554449545F5351  # "AUDIT_SQ": one sequencer at a time, across every worker
_TEXT_FIELDS = ("id", "service", "occurred_at", "action", "outcome")
_EVENT_COLUMNS = (
    "seq, event_id, service, service_seq, occurred_at, recorded_at, actor_type, actor_id, actor_display, action, "
    "outcome, object_type, object_id, request_id, source_ip, user_agent, changes, metadata, canonical, leaf_hash, "
    "hash, prev_hash"
)


@dataclass
class IngestResult:
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    reasons: list[str] = field(default_factory=list)


def _problem(event: Any) -> str | None:
    """Why ``event`` cannot be chained (None: it can)."""
    if not isinstance(event, dict):
        return "event is not a JSON object"
    for name in _TEXT_FIELDS:
        if not isinstance(event.get(name), str) or not event[name]:
            return f"{name} is missing or not a string"
    if not isinstance(event.get("service_seq"), int) or isinstance(event["service_seq"], bool):
        return "service_seq is missing or not an integer"
    if event["outcome"] not in ("success", "failure"):
        return "outcome must be success or failure"
    actor, obj = event.get("actor"), event.get("object")
    if not isinstance(actor, dict) or actor.get("type") not in ("user", "client", "system"):
        return "actor must be an object with type user, client or system"
    if not isinstance(obj, dict):
        return "object must be an object"
    for name in ("changes", "metadata"):
        if not isinstance(event.get(name, {}), dict):
            return f"{name} must be an object"
    try:
        dt.datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
    except ValueError:
        return "occurred_at is not an ISO 8601 timestamp"
    if len(event["id"]) > 64 or len(event["action"]) > 200:
        return "id or action too long"
    return None


def chained_event(event: dict[str, Any], seq: int, recorded_at: str) -> dict[str, Any]:
    """The event exactly as chained and hashed (its canonical JSON is what ``canonical`` stores)."""
    actor, obj = event["actor"], event["object"]
    return {
        "seq": seq,
        "id": event["id"],
        "service": event["service"],
        "service_seq": event["service_seq"],
        "occurred_at": event["occurred_at"],
        "recorded_at": recorded_at,
        "actor": {
            "type": actor["type"],
            "id": str(actor.get("id", ""))[:200],
            "display": str(actor.get("display", ""))[:200],
        },
        "action": event["action"],
        "outcome": event["outcome"],
        "object": {"type": str(obj.get("type", ""))[:100], "id": str(obj.get("id", ""))[:200]},
        "request_id": str(event.get("request_id") or "")[:128],
        "source_ip": str(event.get("source_ip") or "")[:64],
        "user_agent": str(event.get("user_agent") or "")[:512],
        "changes": event.get("changes") or {},
        "metadata": event.get("metadata") or {},
    }


def frontier_append(frontier: dict[str, str], size: int, leaf: bytes) -> list[tuple[int, int, bytes]]:
    """Add leaf number ``size`` (0-based) to the right frontier; return the complete nodes it creates."""
    created = [(0, size, leaf)]
    carry, level = leaf, 0
    while size >> level & 1:
        left = bytes.fromhex(frontier.pop(str(level)))
        carry = node_hash(left, carry)
        level += 1
        created.append((level, size >> level, carry))
    frontier[str(level)] = carry.hex()
    return created


def frontier_root(frontier: dict[str, str]) -> bytes:
    """The Merkle root of the tree whose right frontier this is (RFC 6962 MTH)."""
    acc: bytes | None = None
    for level in sorted(frontier, key=int):
        node = bytes.fromhex(frontier[level])
        acc = node if acc is None else node_hash(node, acc)
    return acc if acc is not None else leaf_root_of_empty()


def leaf_root_of_empty() -> bytes:
    import hashlib

    return hashlib.sha256(b"").digest()


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# The canonical text is built before the sequencer lock with seq 0, then the number is spliced in
# under the lock. Keys are sorted, so "seq" sits between "request_id" and "service"; only strings
# and an integer follow it, which cannot contain this text, so its last occurrence is the top-level one.
_SEQ_MARK = ',"seq":0,"service":'
_SEQ_ZERO = len(',"seq":0')


@dataclass
class _Prepared:
    event: dict[str, Any]
    head: str  # canonical text up to ``,"seq":``
    tail: str  # canonical text after the number
    columns: tuple[Any, ...]  # event_id … metadata


def _prepare(event: dict[str, Any], now: dt.datetime, recorded_at: str) -> _Prepared:
    """Everything about ``event`` that does not depend on its place in the chain (no lock needed)."""
    body = chained_event(event, 0, recorded_at)
    text = canonical(body).decode("utf-8")
    cut = text.rfind(_SEQ_MARK)
    actor, obj = body["actor"], body["object"]
    return _Prepared(
        event=event,
        head=text[:cut],
        tail=text[cut + _SEQ_ZERO :],
        columns=(
            body["id"],
            body["service"],
            body["service_seq"],
            _parse_time(body["occurred_at"]),
            now,
            actor["type"],
            actor["id"],
            actor["display"],
            body["action"],
            body["outcome"],
            obj["type"],
            obj["id"],
            body["request_id"],
            body["source_ip"],
            body["user_agent"],
            _json(body["changes"]),
            _json(body["metadata"]),
        ),
    )


def _state_locked(cursor: Any) -> tuple[int, bytes, dict[str, str]]:
    """The sequencer's (size, last hash, frontier), row-locked (created on first use)."""
    cursor.execute("SELECT size, last_hash, frontier FROM audit_chain_state WHERE id = 1 FOR UPDATE")
    row = cursor.fetchone()
    if row is None:
        cursor.execute(
            "INSERT INTO audit_chain_state (id, size, last_hash, frontier, updated_at) "
            "VALUES (1, 0, %s, '{}', now()) ON CONFLICT (id) DO NOTHING",
            [ZERO_HASH],
        )
        cursor.execute("SELECT size, last_hash, frontier FROM audit_chain_state WHERE id = 1 FOR UPDATE")
        row = cursor.fetchone()
    size, last_hash, frontier = row
    if isinstance(frontier, str):
        frontier = json.loads(frontier)
    return size, bytes(last_hash), dict(frontier)


def _recorded(prepared: list[_Prepared]) -> tuple[set[str], set[tuple[str, int]]]:
    """Of these events: the ids already chained, and the (service, service_seq) pairs other events hold."""
    ids = [p.event["id"] for p in prepared]
    with connection.cursor() as cursor:
        cursor.execute("SELECT event_id FROM audit_event WHERE event_id = ANY(%s)", [ids])
        known = {row[0] for row in cursor.fetchall()}
        pairs = {(p.event["service"], p.event["service_seq"]) for p in prepared if p.event["id"] not in known}
        taken: set[tuple[str, int]] = set()
        if pairs:
            cursor.execute(
                "SELECT service, service_seq FROM audit_event WHERE (service, service_seq) IN "
                "(SELECT * FROM unnest(%s::text[], %s::bigint[]))",
                [[p[0] for p in pairs], [p[1] for p in pairs]],
            )
            taken = {(s, n) for s, n in cursor.fetchall()}
    return known, taken


def _chain_write(
    prepared: list[_Prepared],
    state: tuple[int, bytes, dict[str, str]],
    known: set[str],
    taken: set[tuple[str, int]],
    result: IngestResult,
    rejected: list[AuditRejected],
    now: dt.datetime,
) -> None:
    """Number, hash and write the events not in ``known`` whose pair is not ``taken``; seal the batch."""
    size, prev, frontier = state[0], state[1] if state[0] else ZERO_HASH, dict(state[2])
    taken = set(taken)
    rows: list[tuple[Any, ...]] = []
    nodes: list[tuple[int, int, bytes]] = []
    seen: set[str] = set()
    for item in prepared:
        event = item.event
        if event["id"] in known or event["id"] in seen:
            result.duplicates += 1
            continue
        pair = (event["service"], event["service_seq"])
        if pair in taken:
            rejected.append(
                AuditRejected(reason=f"{pair[0]} sequence {pair[1]} already holds another event", payload=event)
            )
            continue
        seen.add(event["id"])
        taken.add(pair)
        seq = size + 1
        text = f'{item.head},"seq":{seq}{item.tail}'
        data = text.encode("utf-8")
        leaf = leaf_hash(data)
        digest = chain_hash(data, prev)
        rows.append((seq, *item.columns, text, leaf, digest, prev))
        nodes.extend(frontier_append(frontier, size, leaf))
        prev = digest
        size = seq
    if not rows:
        return
    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy(f"COPY audit_event ({_EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        with raw.copy("COPY audit_node (level, index, hash) FROM STDIN") as copy:
            for node in nodes:
                copy.write_row(node)
        seal_write(cursor, rows[0][0], rows[-1][0])
        cursor.execute(
            "UPDATE audit_chain_state SET size = %s, last_hash = %s, frontier = %s::jsonb, updated_at = %s "
            "WHERE id = 1",
            [size, prev, json.dumps(frontier), now],
        )
    result.inserted = len(rows)
    result.first_seq, result.last_seq = rows[0][0], rows[-1][0]


def ingest(events: list[Any]) -> IngestResult:
    """Chain ``events`` (idempotent on event id). Safe to call concurrently from many workers.

    Validation and serialisation happen first, outside the lock, so concurrent workers overlap that
    work; only numbering, hashing and the writes are serialised.
    """
    result = IngestResult()
    now = timezone.now()
    recorded_at = isoformat(now)
    prepared: list[_Prepared] = []
    rejected: list[AuditRejected] = []
    for item in events:
        event = event_expand(item)
        problem = _problem(event)
        if problem:
            rejected.append(AuditRejected(reason=problem, payload=event if isinstance(event, dict) else {"raw": event}))
        else:
            prepared.append(_prepare(event, now, recorded_at))
    invalid = len(rejected)

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
            state = _state_locked(cursor)
        # Optimistically every event is new (the usual case): the unique indexes on event_id and on
        # (service, service_seq) say otherwise by failing the COPY, and then the batch is redone after
        # looking its events up.
        try:
            with transaction.atomic():
                _chain_write(prepared, state, set(), set(), result, rejected, now)
        except (IntegrityError, psycopg.errors.UniqueViolation):
            result.inserted = result.duplicates = 0
            del rejected[invalid:]
            known, taken = _recorded(prepared)
            _chain_write(prepared, state, known, taken, result, rejected, now)
        if rejected:
            AuditRejected.objects.bulk_create(rejected)
            result.rejected = len(rejected)
            result.reasons = [r.reason for r in rejected]
    if result.rejected:
        log.error("audit.events_rejected", count=result.rejected, reasons=result.reasons[:5])
    return result


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def node_lookup(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Stored complete subtree roots by (level, index)."""
    if not pairs:
        return {}
    levels, indexes = zip(*sorted(pairs), strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.level, n.index, n.hash FROM audit_node n JOIN unnest(%s::smallint[], %s::bigint[]) AS w(l, i) "
            "ON n.level = w.l AND n.index = w.i",
            [list(levels), list(indexes)],
        )
        return {(level, index): bytes(digest) for level, index, digest in cursor.fetchall()}


class NodeSource:
    """``complete(level, index)`` for the verifier's proof functions, reading ``audit_node`` (cached)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[int, int], bytes] = {}

    def __call__(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self.cache:
            found = AuditNode.objects.filter(level=level, index=index).values_list("hash", flat=True).first()
            if found is None:
                raise LookupError(f"no Merkle node at level {level}, index {index}")
            self.cache[key] = bytes(found)
        return self.cache[key]
