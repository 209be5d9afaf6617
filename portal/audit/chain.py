"""The sequencer: events from every service's outbox become one hash chain and one Merkle tree.

:func:`ingest` runs in the ``audit`` queue's worker. Under one transaction-level advisory lock (so
several ingest workers never fork the chain) it drops events already recorded (by event id),
assigns the next global sequence numbers, computes each event's chain hash
``SHA-256(canonical ‖ previous hash)`` and Merkle leaf ``SHA-256(0x00 ‖ canonical)``, adds the
completed subtree roots to ``audit_node``, writes the batch with COPY and seals it (``audit_seal``: the
transaction id its rows carry, see :mod:`portal.audit.seal`). Validation and serialisation happen before
the lock. ``recorded_at`` never goes back along the chain: a batch stamped before the one written ahead of it
(another worker held the lock meanwhile) takes that batch's stamp.

One item never stops a batch. An event the sequencer refuses — malformed, a value PostgreSQL would refuse
(a NUL, a number beyond bigint, a lone surrogate, NaN, nesting too deep), beyond the bounds every event is
verified against (:func:`portal.audit.standalone_verifier.event_out_of_range`: size, numbers, timestamps, field
lengths) — is parked at once: chained as a placeholder in its own place (:mod:`portal.audit.parked`), so every
service's sequence stays gapless. An unexpected error writing a batch splits it in halves, each written in
its own transaction, until the failing event is alone; that event is tried ``AUDIT_INGEST_ATTEMPTS`` times in
all, then parked. The database being away is not an event's fault: :class:`IngestDeferred` is raised and the
whole message is retried later. Events that claim no place, or a place another event holds, are kept in
``audit_rejected`` with the reason, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from portal.audit import queries
from portal.audit.models import AuditNode, AuditRejected
from portal.audit.parked import place, placeholder, rejected_payload
from portal.audit.seal import seal_write
from portal.audit.standalone_verifier import (
    FIELD_MAX,
    SEQ_MAX,
    ZERO_HASH,
    canonical,
    chain_hash,
    event_out_of_range,
    leaf_hash,
    node_hash,
    parse_timestamp,
)
from services.kit.batches import batch_isolate
from services.kit.db import database_transient
from services.kit.logs import get_logger
from services.kit.outbox import event_expand, isoformat

log = get_logger(__name__)

SEQUENCER_LOCK = 0x41554449545F5351  # "AUDIT_SQ": one sequencer at a time, across every worker
_TEXT_FIELDS = ("id", "service", "occurred_at", "action", "outcome")


class IngestDeferred(Exception):
    """The portal's database is away: nothing was parked, the whole message is retried later (JSON-safe)."""


@dataclass
class IngestResult:
    inserted: int = 0  # chained, placeholders of parked events included
    duplicates: int = 0
    rejected: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    reasons: list[str] = field(default_factory=list)
    parked: list[dict[str, Any]] = field(default_factory=list)  # {id, service, service_seq, reason, attempts}

    def merge(self, other: IngestResult) -> None:
        """Add what one transaction of this ingest did."""
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.reasons += other.reasons
        if other.first_seq is not None:
            self.first_seq = other.first_seq if self.first_seq is None else min(self.first_seq, other.first_seq)
            self.last_seq = max(self.last_seq or 0, other.last_seq or 0)


def _problem(event: Any) -> str | None:
    """Why ``event`` cannot be chained (None: it can, once serialised and within bounds: see :func:`_admit`)."""
    if not isinstance(event, dict):
        return "event is not a JSON object"
    if "unparsable_payload" in event:
        return "the payload is not JSON (or is nested too deeply to read)"
    for name in _TEXT_FIELDS:
        if not isinstance(event.get(name), str) or not event[name]:
            return f"{name} is missing or not a string"
    number = event.get("service_seq")
    if not isinstance(number, int) or isinstance(number, bool):
        return "service_seq is missing or not an integer"
    if not 1 <= number <= SEQ_MAX:
        return "service_seq is out of range (1 to 2^63-1)"
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
    if parse_timestamp(event["occurred_at"]) is None:
        return "occurred_at is not an ISO 8601 timestamp"
    for name in ("id", "service", "action"):
        if len(event[name]) > FIELD_MAX[(name,)]:
            return f"{name} is longer than {FIELD_MAX[(name,)]} characters"
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


# A NUL anywhere in the event (json.dumps writes it \u0000; an escaped backslash before "u0000" is not one):
# PostgreSQL stores neither a NUL in text nor \u0000 in jsonb.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


# The canonical text is built before the sequencer lock with seq 0, then the number is spliced in
# under the lock. Keys are sorted, so "seq" sits between "request_id" and "service"; only strings
# and an integer follow it, which cannot contain this text, so its last occurrence is the top-level one.
_SEQ_MARK = ',"seq":0,"service":'
_SEQ_ZERO = len(',"seq":0')


# recorded_at is the last top-level key before request_id (whose string value cannot hold a bare quote): the
# last occurrence of this text in the head is the top-level one.
_RECORDED_MARK = ',"recorded_at":"'


@dataclass
class _Prepared:
    event: dict[str, Any]
    head: str  # canonical text up to ``,"seq":``
    tail: str  # canonical text after the number
    columns: tuple[Any, ...]  # event_id … metadata
    recorded_at: dt.datetime
    body: dict[str, Any]  # the event as chained, with seq 0
    size: int  # bytes of its canonical text, with seq 0
    item: Any = None  # what arrived (to park it)
    parked: dict[str, Any] | None = None  # a placeholder: what it stands for

    def retime(self, moment: dt.datetime) -> None:
        """Stamp the event ``moment`` instead (a later time: ``recorded_at`` never goes back along the chain)."""
        old, new = isoformat(self.recorded_at), isoformat(moment)
        found = self.head.rfind(_RECORDED_MARK + old)
        if found < 0 or len(new) != len(old):
            raise ValueError(f"cannot restamp {old} as {new}")
        cut = found + len(_RECORDED_MARK)
        self.head = self.head[:cut] + new + self.head[cut + len(old) :]
        self.columns = (*self.columns[:4], moment, *self.columns[5:])
        self.recorded_at = moment


def _prepare(event: dict[str, Any], now: dt.datetime, recorded_at: str) -> _Prepared:
    """Everything about ``event`` that does not depend on its place in the chain (no lock needed)."""
    body = chained_event(event, 0, recorded_at)
    data = canonical(body)
    text = data.decode("utf-8")
    cut = text.rfind(_SEQ_MARK)
    actor, obj = body["actor"], body["object"]
    return _Prepared(
        event=event,
        recorded_at=now,
        body=body,
        size=len(data),
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


def _state_locked(cursor: Any) -> tuple[int, bytes, dict[str, str], dt.datetime | None]:
    """The sequencer's (size, last hash, frontier, the last batch's ``recorded_at``), row-locked (created on
    first use; no batch yet: None)."""
    # A last stamp no datetime holds (the row was tampered with) is no floor: the batch keeps its own.
    cursor.execute(queries.CHAIN_STATE_LOCK)
    row = cursor.fetchone()
    if row is None:
        cursor.execute(queries.CHAIN_STATE_CREATE, [ZERO_HASH])
        cursor.execute(queries.CHAIN_STATE_LOCK)
        row = cursor.fetchone()
    size, last_hash, frontier, updated_at = row
    if isinstance(frontier, str):
        frontier = json.loads(frontier)
    return size, bytes(last_hash), dict(frontier), updated_at if size else None


def _recorded(prepared: list[_Prepared]) -> tuple[set[str], set[tuple[str, int]]]:
    """Of these events: the ids already chained, and the (service, service_seq) pairs other events hold."""
    ids = [p.event["id"] for p in prepared]
    with connection.cursor() as cursor:
        cursor.execute(queries.EVENT_IDS_KNOWN, [ids])
        known = {row[0] for row in cursor.fetchall()}
        pairs = {(p.event["service"], p.event["service_seq"]) for p in prepared if p.event["id"] not in known}
        taken: set[tuple[str, int]] = set()
        if pairs:
            cursor.execute(queries.SERVICE_PLACES_TAKEN, [[p[0] for p in pairs], [p[1] for p in pairs]])
            taken = {(s, n) for s, n in cursor.fetchall()}
    return known, taken


def _chain_write(
    prepared: list[_Prepared],
    state: tuple[int, bytes, dict[str, str], dt.datetime | None],
    known: set[str],
    taken: set[tuple[str, int]],
    result: _Done,
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
            reason = f"{pair[0]} sequence {pair[1]} already holds another event"
            rejected.append(AuditRejected(reason=reason, payload=rejected_payload(item.item, event)))
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
        with raw.copy(queries.EVENT_COPY_IN) as copy:
            for row in rows:
                copy.write_row(row)
        with raw.copy(queries.NODE_COPY_IN) as copy:
            for node in nodes:
                copy.write_row(node)
        seal_write(cursor, rows[0][0], rows[-1][0])
        cursor.execute(queries.CHAIN_STATE_UPDATE, [size, prev, json.dumps(frontier), now])
    result.inserted = len(rows)
    result.first_seq, result.last_seq = rows[0][0], rows[-1][0]
    result.written = seen


def _admit(item: Any, now: dt.datetime, recorded_at: str) -> tuple[Any, _Prepared | None, str | None]:
    """``item`` expanded, and either prepared for the chain or refused (with the reason). Never raises."""
    event = event_expand(item)
    problem = _problem(event)
    if problem is not None:
        return event, None, problem
    try:
        prepared = _prepare(event, now, recorded_at)
    except Exception as exc:  # what cannot be serialised: a lone surrogate, NaN, nesting too deep, a huge number
        return event, None, f"cannot be serialised: {type(exc).__name__}: {exc}"[:500]
    if ("\\u0000" in prepared.head or "\\u0000" in prepared.tail) and (
        _NUL.search(prepared.head) or _NUL.search(prepared.tail)
    ):
        return event, None, "holds a NUL character, which PostgreSQL cannot store"
    # The bounds every chained event is verified against, with the largest seq it could be given.
    why = event_out_of_range({**prepared.body, "seq": 1}, prepared.size + len(str(SEQ_MAX)) - 1)
    if why is not None:
        return event, None, why
    prepared.item = item
    return event, prepared, None


def _park(item: Any, event: Any, reason: str, *, attempts: int, now: dt.datetime, recorded_at: str) -> _Prepared | None:
    """The placeholder that takes ``event``'s place in the chain (None: it names no place to take)."""
    where = place(item, event)
    if where is None:
        return None
    body = placeholder(item, event, where, reason, attempts=attempts, occurred_at=recorded_at)
    prepared = _prepare(body, now, recorded_at)
    prepared.item = item
    prepared.parked = {"id": where[0], "service": where[1], "service_seq": where[2], "reason": reason[:500]}
    prepared.parked["attempts"] = attempts
    return prepared


def ingest(events: list[Any]) -> IngestResult:
    """Chain ``events`` (idempotent on event id). Safe to call concurrently from many workers.

    Validation and serialisation happen first, outside the lock, so concurrent workers overlap that
    work; only numbering, hashing and the writes are serialised. What the sequencer refuses is parked in its
    place at once; an unexpected error isolates the failing event (see the module's docstring). Raises only
    :class:`IngestDeferred` (the database is away: nothing was written by the failing transaction).
    """
    result = IngestResult()
    now = timezone.now()
    recorded_at = isoformat(now)
    batch: list[_Prepared] = []
    rejected: list[tuple[str, dict[str, Any]]] = []
    for item in events:
        event, prepared, problem = _admit(item, now, recorded_at)
        if prepared is None:
            assert problem is not None
            prepared = _park(item, event, problem, attempts=1, now=now, recorded_at=recorded_at)
            if prepared is None:
                rejected.append((problem, rejected_payload(item, event)))
                continue
        batch.append(prepared)
    _chain_isolating(batch, rejected, result)
    if result.parked:
        log.error(
            "audit.events_parked",
            count=len(result.parked),
            events=[f"{p['service']}#{p['service_seq']} {p['id']}: {p['reason'][:200]}" for p in result.parked[:5]],
        )
    if result.rejected:
        log.error("audit.events_rejected", count=result.rejected, reasons=result.reasons[:5])
    return result


def _chain_isolating(batch: list[_Prepared], rejected: list[tuple[str, dict[str, Any]]], result: IngestResult) -> None:
    """Chain ``batch`` in one transaction; on an unexpected error, in halves, down to the failing event
    (:func:`services.kit.batches.batch_isolate`), which is tried ``AUDIT_INGEST_ATTEMPTS`` times in all and then
    parked. ``rejected`` rows are kept aside with the first part (the whole batch, or its left-most half)."""
    if not batch:
        _chain_recording([], rejected, result)
        return

    def first(part: Sequence[_Prepared]) -> list[tuple[str, dict[str, Any]]]:
        return rejected if part[0] is batch[0] else []

    def item_error(exc: Exception) -> bool:
        if isinstance(exc, IngestDeferred):
            return False
        _deferred_if_unavailable(exc)  # raises IngestDeferred when the database is away
        return True

    def alone(prepared: _Prepared, failure: Exception) -> None:
        rows = first([prepared])
        attempts = int(getattr(settings, "AUDIT_INGEST_ATTEMPTS", 3))
        for attempt in range(2, attempts + 1):
            time.sleep(0.1 * attempt)  # what is transient gets a moment to pass
            try:
                _chain_recording([prepared], rows, result)
                return
            except Exception as exc:
                if not item_error(exc):
                    raise
                failure = exc
        reason = f"{type(failure).__name__}: {failure}"[:500]
        log.error("audit.ingest_event_failed", attempts=attempts, error=reason)
        if prepared.parked is not None:  # a placeholder itself failed: keep what arrived aside
            _chain_recording([], [*rows, (reason, rejected_payload(prepared.item, prepared.event))], result)
            return
        moment = prepared.recorded_at
        stand_in = _park(
            prepared.item, prepared.event, reason, attempts=attempts, now=moment, recorded_at=isoformat(moment)
        )
        if stand_in is None:  # it named its place when admitted: only a bug gets here; keep it aside all the same
            _chain_recording([], [*rows, (reason, rejected_payload(prepared.item, prepared.event))], result)
            return
        _chain_isolating([stand_in], rows, result)

    batch_isolate(
        batch,
        lambda part: _chain_recording(list(part), first(part), result),
        item_error=item_error,
        alone=alone,
        merge=lambda left, right: None,
        event="audit.ingest_split",
    )


def _chain_recording(batch: list[_Prepared], rejected: list[tuple[str, dict[str, Any]]], result: IngestResult) -> None:
    """One transaction: chain ``batch`` and keep ``rejected`` aside; add what it did to ``result``."""
    done = _chain(batch, rejected)
    result.merge(done)
    result.parked += [p.parked for p in batch if p.parked is not None and p.event["id"] in done.written]


def _chain(batch: list[_Prepared], rejected: list[tuple[str, dict[str, Any]]]) -> _Done:
    """Number, hash and write ``batch`` under the sequencer lock, and ``rejected`` to ``audit_rejected``."""
    done = _Done()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(queries.XACT_LOCK, [SEQUENCER_LOCK])
            state = _state_locked(cursor)
        moment = max((p.recorded_at for p in batch), default=timezone.now())
        if state[3] is not None and state[3] > moment:  # the batch before was stamped later: not back in time
            moment = state[3]
        for prepared in batch:
            if prepared.recorded_at != moment:
                prepared.retime(moment)
        conflicts: list[AuditRejected] = []
        # Optimistically every event is new (the usual case): the unique indexes on event_id and on
        # (service, service_seq) say otherwise by failing the COPY, and then the batch is redone after
        # looking its events up.
        try:
            with transaction.atomic():
                _chain_write(batch, state, set(), set(), done, conflicts, moment)
        except (IntegrityError, psycopg.errors.UniqueViolation):
            done, conflicts = _Done(), []
            known, taken = _recorded(batch)
            _chain_write(batch, state, known, taken, done, conflicts, moment)
        rows = [AuditRejected(reason=reason, payload=payload) for reason, payload in rejected] + conflicts
        if rows:
            AuditRejected.objects.bulk_create(rows)
            done.rejected = len(rows)
            done.reasons = [r.reason for r in rows]
    return done


@dataclass
class _Done(IngestResult):
    """What one transaction did, and which event ids it wrote."""

    written: set[str] = field(default_factory=set)


def _deferred_if_unavailable(exc: BaseException) -> None:
    """Raise :class:`IngestDeferred` if ``exc`` says the database is away rather than that an event is bad."""
    if database_transient(exc):
        raise IngestDeferred(f"the portal database is unavailable: {type(exc).__name__}: {exc}"[:500]) from exc


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def node_lookup(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Stored complete subtree roots by (level, index)."""
    if not pairs:
        return {}
    levels, indexes = zip(*sorted(pairs), strict=True)
    with connection.cursor() as cursor:
        cursor.execute(queries.NODES_AT, [list(levels), list(indexes)])
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
