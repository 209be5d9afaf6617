"""Audit reads: event search and export, proofs against the latest signed head, head listing and checks.

The API (``portal.audit.api``) and the admin (``portal.audit.admin`` and ``portal.audit.pages``) both read
through these functions. Nothing here writes: recording that a read happened, and signing heads, are
services (``portal.audit.services``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Q, QuerySet

from portal.audit import heads, queries
from portal.audit import standalone_verifier as verifier
from portal.audit.chain import NodeSource, frontier_root, node_lookup
from portal.audit.errors import AuditEventNotFound, EventNotSigned, InvalidFilter
from portal.audit.keys import UNKNOWN_KEY, trusted_public_keys
from portal.audit.models import AuditChainState, AuditEvent, AuditHead
from portal.catalog.models import Service
from services.kit.timestamps import timestamp_parse

T = TypeVar("T")

# ------------------------------------------------------------------------------------ events

# Query parameters compared exactly, and the column each one filters.
_EXACT = {
    "service": "service",
    "actor": "actor_id",
    "actor_type": "actor_type",
    "object_type": "object_type",
    "object_id": "object_id",
    "request_id": "request_id",
}
ACTION_PREFIX = re.compile(r"[a-z][a-z0-9_.]*")
MAX_CHOICES = 200


def _time(name: str, value: str) -> dt.datetime:
    try:
        return timestamp_parse(value)
    except ValueError as exc:
        raise InvalidFilter(f"{name} must be an ISO 8601 timestamp, got {value!r}.") from exc


def event_list(*, params: Mapping[str, Any]) -> tuple[QuerySet[AuditEvent], dict[str, str]]:
    """The events matching the API's query parameters, and the filters used (for the audit record)."""
    queryset = AuditEvent.objects.all()
    used: dict[str, str] = {}
    for param, column in _EXACT.items():
        value = params.get(param)
        if value:
            queryset = queryset.filter(**{column: value})
            used[param] = value
    if params.get("action"):
        queryset = queryset.filter(action__startswith=params["action"])
        used["action"] = params["action"]
    outcome = params.get("outcome")
    if outcome:
        if outcome not in ("success", "failure"):
            raise InvalidFilter("outcome must be success or failure.")
        queryset = queryset.filter(outcome=outcome)
        used["outcome"] = outcome
    for param, lookup in (("occurred_after", "occurred_at__gte"), ("occurred_before", "occurred_at__lt")):
        if params.get(param):
            queryset = queryset.filter(**{lookup: _time(param, params[param])})
            used[param] = params[param]
    return queryset, used


def event_get(*, event_id: str) -> AuditEvent:
    event = AuditEvent.objects.filter(event_id=event_id).first()
    if event is None:
        raise AuditEventNotFound(f"No audit event {event_id}.")
    return event


def distinct_values(column: str, limit: int = MAX_CHOICES) -> list[str]:
    """Distinct values of an indexed column of ``audit_event`` by a loose index scan: one index probe
    per value instead of a ``SELECT DISTINCT`` over every row."""
    sql = queries.distinct_values_sql(column)
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


def event_search(*, queryset: QuerySet[AuditEvent], term: str) -> QuerySet[AuditEvent]:
    """The admin's search: an exact id (event, request, actor, object), a ``seq`` (``#123``) or an action
    prefix; each served by an index, never an ``icontains`` scan."""
    term = term.strip()
    if not term:
        return queryset
    match = Q(event_id=term) | Q(request_id=term) | Q(actor_id=term)
    object_types = distinct_values("object_type")
    if object_types:  # the object index leads with object_type: name every type so the index serves it
        match |= Q(object_type__in=object_types, object_id=term)
    if ACTION_PREFIX.fullmatch(term):
        match |= Q(action__startswith=term)  # LIKE 'term%' on the varchar_pattern_ops index
    number = term.removeprefix("#")
    if number.isdigit() and len(number) < 19:
        match |= Q(seq=int(number))
    return queryset.filter(match)


# What a trace reads of an event (portal/trace): neither the canonical JSON nor the hashes.
TRACE_DEFERRED = ("canonical", "leaf_hash", "hash", "prev_hash", "source_ip", "user_agent")


def events_for_requests(*, request_ids: Sequence[str], limit: int) -> tuple[list[AuditEvent], bool]:
    """The events recorded under any of ``request_ids``, oldest first: at most ``limit``, and whether there were
    more (one range of the request id index per id)."""
    ids = [r for r in dict.fromkeys(request_ids) if r]
    if not ids or limit <= 0:
        return [], False
    rows = list(
        AuditEvent.objects.filter(request_id__in=ids).defer(*TRACE_DEFERRED).order_by("occurred_at", "seq")[: limit + 1]
    )
    return rows[:limit], len(rows) > limit


def object_events_latest(*, object_id: str, limit: int, exclude_types: Collection[str] = ()) -> list[tuple[int, str]]:
    """``(seq, request_id)`` of the newest ``limit`` events about ``object_id``, whatever its object type (but
    ``exclude_types``), newest first: one index range per known object type."""
    types = [t for t in distinct_values("object_type") if t not in exclude_types]
    if not types or not object_id or limit <= 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(queries.OBJECT_EVENTS_LATEST, [types, object_id, limit, limit])
        return [(int(seq), request_id) for seq, request_id in cursor.fetchall()]


def events_by_seq(*, seqs: Sequence[int]) -> list[AuditEvent]:
    """The events at ``seqs`` (primary key lookups), oldest first."""
    if not seqs:
        return []
    return list(AuditEvent.objects.filter(seq__in=list(seqs)).defer(*TRACE_DEFERRED).order_by("occurred_at", "seq"))


def table_estimate(table: str) -> int:
    """The planner's row estimate for ``table`` (``pg_class.reltuples``; 0 if never analysed)."""
    with connection.cursor() as cursor:
        cursor.execute(queries.TABLE_ESTIMATE, [table])
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row and row[0] is not None else 0


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def event_column_mismatches(*, event: AuditEvent, body: dict[str, Any]) -> list[str]:
    """Columns of the row (what the admin shows and searches) that disagree with the hashed JSON."""
    expected: dict[str, Any] = {
        "seq": event.seq,
        "id": event.event_id,
        "service": event.service,
        "service_seq": event.service_seq,
        "actor": {"type": event.actor_type, "id": event.actor_id, "display": event.actor_display},
        "action": event.action,
        "outcome": event.outcome,
        "object": {"type": event.object_type, "id": event.object_id},
        "request_id": event.request_id,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "changes": event.changes,
        "metadata": event.metadata,
    }
    wrong = [name for name, value in expected.items() if body.get(name) != value]
    for name in ("occurred_at", "recorded_at"):
        if _parse_time(body.get(name)) != getattr(event, name):
            wrong.append(name)
    return wrong


def event_chain_link_ok(*, event: AuditEvent) -> bool:
    """Does the row's hash follow from its canonical JSON and the previous hash it records?"""
    data = event.canonical.encode("utf-8")
    return bytes(event.hash) == verifier.chain_hash(data, bytes(event.prev_hash))


# ------------------------------------------------------------------------------------ export

CSV_COLUMNS = [
    "seq", "event_id", "service", "service_seq", "occurred_at", "recorded_at", "actor_type", "actor_id",
    "actor_display", "action", "outcome", "object_type", "object_id", "request_id", "source_ip", "user_agent",
]  # fmt: skip


def event_export_csv(*, queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    """The events as CSV, in chunks of about 64 KiB (JSON columns as sorted JSON, the hash as hex)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*CSV_COLUMNS, "changes", "metadata", "hash"])
    for row in queryset.values_list(*CSV_COLUMNS, "changes", "metadata", "hash").iterator(chunk_size=2000):
        values = list(row)
        values[4] = values[4].isoformat()
        values[5] = values[5].isoformat()
        values[-3] = json.dumps(values[-3], sort_keys=True)
        values[-2] = json.dumps(values[-2], sort_keys=True)
        values[-1] = bytes(values[-1]).hex()
        writer.writerow(values)
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def event_export_jsonl(*, queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    """The events' canonical JSON, one per line, in chunks of 1,000 lines."""
    chunk: list[str] = []
    for canonical in queryset.values_list("canonical", flat=True).iterator(chunk_size=2000):
        chunk.append(canonical)
        if len(chunk) >= 1000:
            yield "\n".join(chunk) + "\n"
            chunk = []
    if chunk:
        yield "\n".join(chunk) + "\n"


# ------------------------------------------------------------------------------------ heads


def head_latest() -> AuditHead | None:
    return AuditHead.objects.order_by("-tree_size").first()


def head_list() -> QuerySet[AuditHead]:
    return AuditHead.objects.all()


def head_list_with_consistency(*, page: list[AuditHead]) -> list[dict[str, Any]]:
    """Heads as the API lists them: each with the previous head's size and the consistency proof from it."""
    nodes = NodeSource()
    return [head_with_consistency(head=head, nodes=nodes) for head in page]


def head_with_consistency(*, head: AuditHead, nodes: Callable[[int, int], bytes] | None = None) -> dict[str, Any]:
    """A head with the previous head's size and the consistency proof from it."""
    previous = AuditHead.objects.filter(tree_size__lt=head.tree_size).order_by("-tree_size").first()
    body = heads.head_as_dict(head)
    body["previous_tree_size"] = previous.tree_size if previous else None
    body["consistency_proof"] = (
        [n.hex() for n in verifier.consistency_path(previous.tree_size, head.tree_size, nodes or NodeSource())]
        if previous
        else []
    )
    return body


def audit_public_keys() -> verifier.PublicKeys | None:
    """``{key id: PEM}`` of the current and retired audit keys, or None where they are not (all) configured."""
    try:
        return trusted_public_keys()
    except (ImproperlyConfigured, OSError, ValueError):
        return None


def head_signature_valid(*, head: AuditHead) -> bool | None:
    """Does the head's signature verify with the key it names, current or retired (None: no keys here)?"""
    keys = audit_public_keys()
    return None if keys is None else heads.head_signature_problem(heads.head_as_dict(head), keys) is None


def with_prefetched_nodes(compute: Callable[[Callable[[int, int], bytes]], T]) -> T:
    """Run a verifier function over ``audit_node`` with every node it needs loaded in one query.

    Which nodes a proof or root needs depends only on the indexes and sizes, never on the hashes,
    so a dry run with placeholder hashes lists them.
    """
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return verifier.ZERO_HASH

    compute(record)
    source = NodeSource()
    source.cache.update(node_lookup(wanted))
    return compute(source)


@dataclass
class HeadStatus:
    """The cheap checks of the latest signed head shown on the event list (not a full verification)."""

    head: AuditHead | None = None
    chain_size: int = 0
    signature_ok: bool = False
    chain_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.head is not None and self.signature_ok and self.chain_ok

    @property
    def uncovered(self) -> int:
        """Events recorded after the latest head (covered by the next one)."""
        return max(self.chain_size - (self.head.tree_size if self.head else 0), 0)


def head_status() -> HeadStatus:
    """Latest head: does its signature verify, and does the chain still have its root and last hash?"""
    head = head_latest()  # before the chain state: the chain only grows, so it is never read shorter than a head
    state = AuditChainState.objects.filter(id=1).first()
    status = HeadStatus(head=head, chain_size=state.size if state else 0)
    if head is None:
        return status
    keys = audit_public_keys()
    if keys is None:
        status.problems.append(
            "The audit keys (AUDIT_SIGNING_KEY, AUDIT_RETIRED_PUBLIC_KEY_FILES) are not configured here, "
            "so the signature cannot be checked."
        )
    else:
        why = heads.head_signature_problem(heads.head_as_dict(head), keys)
        status.signature_ok = why is None
        if why is not None:
            status.problems.append(f"The head's signature does not verify: {why} (forged head).")
    status.chain_ok = _head_matches_chain(head, state, status.problems)
    return status


def _head_matches_chain(head: AuditHead, state: AuditChainState | None, problems: list[str]) -> bool:
    size = head.tree_size
    chain_size = state.size if state else 0
    if state is None or chain_size < size:
        problems.append(f"The chain holds {chain_size} events, fewer than the {size} the head signs (events removed).")
        return False
    last: bytes | None
    if chain_size == size:
        root, last = frontier_root(state.frontier), bytes(state.last_hash)
    else:
        try:
            root = with_prefetched_nodes(lambda nodes: verifier.subtree_root(0, size, nodes))
        except LookupError as exc:
            problems.append(f"The Merkle nodes for the head's tree are missing ({exc}).")
            return False
        found = AuditEvent.objects.filter(seq=size).values_list("hash", flat=True).first()
        last = bytes(found) if found is not None else None  # None: archived, only the root is compared
    ok = True
    if root.hex() != head.root_hash:
        problems.append(f"The chain's Merkle root at size {size} is not the head's root hash (log rewritten).")
        ok = False
    if last is not None and last.hex() != head.last_hash:
        problems.append(f"The chain hash of event {size} is not the head's last hash (log rewritten).")
        ok = False
    return ok


# ------------------------------------------------------------------------------------ proofs


def proof_document(*, event: AuditEvent, head: AuditHead, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inclusion proof of ``event`` against ``head`` (which must cover it), as the standalone verifier
    checks it. ``body`` is the event's parsed canonical JSON when the caller has it already.

    Raises ``LookupError`` if a Merkle node of the path is missing.
    """
    path = with_prefetched_nodes(lambda nodes: verifier.inclusion_path(event.seq - 1, head.tree_size, nodes))
    return {
        "event": json.loads(event.canonical) if body is None else body,
        "leaf_index": event.seq - 1,
        "leaf_hash": bytes(event.leaf_hash).hex(),
        "proof": [node.hex() for node in path],
        "head": heads.head_as_dict(head),
    }


def event_proof_get(*, event: AuditEvent) -> dict[str, Any]:
    """The inclusion proof of ``event`` against the latest signed head. Never signs: an event newer than
    that head has no proof until the next head (``EventNotSigned``)."""
    head = head_latest()
    if head is None or head.tree_size < event.seq:
        raise EventNotSigned(
            f"Event {event.event_id} (seq {event.seq}) is newer than the latest signed head "
            f"(tree size {head.tree_size if head else 0}). Heads are signed every minute; "
            "POST /api/v1/audit/heads signs one now."
        )
    return proof_document(event=event, head=head)


@dataclass
class EventProof:
    """An event's inclusion proof against the latest signed head, checked like an outside auditor would."""

    head: AuditHead | None = None
    covered: bool = False
    leaf_index: int = 0
    path: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.covered and not self.problems


def event_proof_check(*, event: AuditEvent, body: dict[str, Any] | None) -> EventProof:
    """The proof the API serves for ``event``, checked with ``verifier.check_proof`` (``body``: the parsed
    canonical JSON, None if it does not parse)."""
    head = head_latest()
    proof = EventProof(head=head, leaf_index=event.seq - 1)
    if head is None or head.tree_size < event.seq:
        return proof
    proof.covered = True
    if body is None:
        proof.problems.append("The stored canonical JSON does not parse.")
        return proof
    try:
        document = proof_document(event=event, head=head, body=body)
    except LookupError as exc:
        proof.problems.append(f"A Merkle node of the proof is missing ({exc}).")
        return proof
    proof.path = document["proof"]
    keys = audit_public_keys()
    if keys is None:
        proof.problems.append(
            "The audit keys (AUDIT_SIGNING_KEY, AUDIT_RETIRED_PUBLIC_KEY_FILES) are not configured here, "
            "so the head cannot be checked."
        )
        return proof
    proof.problems.extend(verifier.check_proof(document, keys, unknown=UNKNOWN_KEY))
    return proof


def service_owners(slugs: list[str]) -> dict[str, str]:
    """The machine client that registered each of these catalog services (``registered_by``; "" for a service no
    client registered, e.g. imported from YAML); a slug not in the catalog is absent. The catalog's owner rule."""
    return dict(Service.objects.filter(slug__in=slugs).values_list("slug", "registered_by"))
