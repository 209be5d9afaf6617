"""Audit events over HTTP (``POST /api/v1/audit/events:ingest``): the language-neutral door to the sequencer.

A service in any language relays its outbox here, in order, one batch at a time. The whole request is refused
on the first check that fails, in this order:

1. the envelope (:func:`envelope_errors`): ``{"events": [...]}``, 1 to ``MAX_EVENTS`` objects, each with a
   non-empty string ``id`` (≤ 64), ``service`` (≤ 40) and an integer ``service_seq`` (1 to 2^63-1): else 400
   ``validation_error`` with a pointer per field;
2. identity (:func:`identity_check`): every event's service is the catalog service (by slug) that the caller's
   machine client registered (``registered_by``): another client's → 403 ``audit_service_mismatch``; no catalog
   entry, or one no client registered → 403 ``audit_service_unregistered``;
3. sequence (:func:`_sequence_refusal`), under the sequencer's lock (:data:`portal.audit.chain.SEQUENCER_LOCK`,
   held until the events are chained, so two concurrent requests of one service are checked and written one
   after the other): an id already recorded at the same (service, service_seq) is a duplicate (counted, not
   written again); an id recorded at another place, or a place holding another id → 409
   ``audit_sequence_conflict``; the new events of each service, by ``service_seq``, must continue that service's
   highest recorded number without a hole → 409 ``audit_sequence_gap`` (``expected_seq``, ``received_seq``);
4. the new events are chained by :func:`portal.audit.chain.ingest`, exactly as the Celery relay's are: what the
   sequencer cannot chain (a malformed payload) is parked as a placeholder in its place, keeping the sequence.

Every event of a refused request is kept in ``audit_rejected`` with the reason (the problem's code and detail,
and the caller), once: a sender retrying the same refused batch does not add rows again. The gap check is the
HTTP door's alone: the Celery relay of the Python services may deliver out of order, and ``chain.ingest`` takes
what it gets (``audit_verify --strict-services`` finds a hole that stays).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from rest_framework.exceptions import ErrorDetail, ValidationError

from portal.audit import chain, queries
from portal.audit.errors import (
    AuditIngestUnavailable,
    AuditSequenceConflict,
    AuditSequenceGap,
    AuditServiceMismatch,
    AuditServiceUnregistered,
)
from portal.audit.models import AuditArchive, AuditRejected
from portal.audit.parked import raw_summary, rejected_payload
from portal.audit.selectors import service_owners
from portal.audit.standalone_verifier import FIELD_MAX, SEQ_MAX
from services.kit.errors import DomainError
from services.kit.logs import get_logger

log = get_logger(__name__)

MAX_EVENTS = 1000  # events in one request
MAX_FIELD_ERRORS = 100  # field errors one 400 lists at most
_CONFLICTS_LISTED = 10


@dataclass
class IntakeResult:
    """What a request did: the 200 answer's members."""

    inserted: int = 0  # chained, placeholders of parked events included
    duplicates: int = 0
    parked: int = 0
    first_seq: int | None = None  # the global chain seqs written (None: nothing new)
    last_seq: int | None = None
    parked_events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "parked": self.parked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }


def _text_ok(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def envelope_errors(body: Any) -> dict[str, list[ErrorDetail]]:
    """The envelope's field errors by path (``events[3].service_seq``); empty: the envelope is sound."""
    errors: dict[str, list[ErrorDetail]] = {}

    def add(path: str, message: str, code: str) -> None:
        if len(errors) < MAX_FIELD_ERRORS:
            errors.setdefault(path, []).append(ErrorDetail(message, code=code))

    if not isinstance(body, dict):
        add("non_field_errors", 'The body must be a JSON object: {"events": [...]}.', "invalid")
        return errors
    for key in body:
        if key != "events":
            add(str(key)[:100], "Unknown field.", "unknown_field")
    events = body.get("events")
    if "events" not in body:
        add("events", "This field is required.", "required")
        return errors
    if not isinstance(events, list):
        add("events", "Must be a list of events.", "not_a_list")
        return errors
    if not events:
        add("events", "At least one event is needed.", "empty")
        return errors
    if len(events) > MAX_EVENTS:
        add("events", f"At most {MAX_EVENTS} events per request; send {len(events)} in several.", "max_length")
        return errors
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            add(where, "Each event must be a JSON object.", "not_an_object")
            continue
        if not _text_ok(event.get("id"), FIELD_MAX[("id",)]):
            add(f"{where}.id", f"A non-empty string of at most {FIELD_MAX[('id',)]} characters.", "invalid")
        if not _text_ok(event.get("service"), FIELD_MAX[("service",)]):
            add(f"{where}.service", f"A non-empty string of at most {FIELD_MAX[('service',)]} characters.", "invalid")
        number = event.get("service_seq")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= SEQ_MAX:
            add(f"{where}.service_seq", "An integer from 1 to 2^63-1.", "invalid")
    return errors


def identity_check(events: list[dict[str, Any]], client_id: str) -> None:
    """Raise 403 unless ``client_id`` registered (``registered_by``) every service the events name."""
    names = sorted({event["service"] for event in events})
    owners = service_owners(names)
    for name in names:
        owner = owners.get(name)
        if not owner:
            raise AuditServiceUnregistered(
                f"No machine client registered the service {name!r} in the catalog: register it first "
                "(PUT /api/v1/catalog/services/{slug}) with the client that sends its audit events.",
                extra={"service": name},
            )
        if owner != client_id:
            raise AuditServiceMismatch(
                f"The service {name!r} was registered by another machine client; only it may send its audit events.",
                extra={"service": name},
            )


def _sequence_refusal(
    events: list[dict[str, Any]], cursor: Any
) -> tuple[list[dict[str, Any]], int, DomainError | None]:
    """Under the sequencer lock: the new events (request order), the duplicates' count and the refusal (None:
    none). On a refusal the events returned are every one that is not a duplicate (what is kept aside)."""
    ids = sorted({event["id"] for event in events})
    cursor.execute(queries.PLACES_OF_IDS, [ids])
    recorded_at = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
    places = sorted({(event["service"], event["service_seq"]) for event in events})
    cursor.execute(queries.IDS_AT_PLACES, [[p[0] for p in places], [p[1] for p in places]])
    holder = {(row[0], row[1]): row[2] for row in cursor.fetchall()}

    fresh: list[dict[str, Any]] = []
    duplicates = 0
    conflicts: list[dict[str, Any]] = []
    seen_place: dict[str, tuple[str, int]] = {}
    seen_id: dict[tuple[str, int], str] = {}
    for index, event in enumerate(events):
        event_id, place = event["id"], (event["service"], event["service_seq"])
        where = recorded_at.get(event_id) or seen_place.get(event_id)
        held = holder.get(place) or seen_id.get(place)
        if where == place:
            duplicates += 1
            continue
        if where is not None:
            conflicts.append({"index": index, "id": event_id, "service": place[0], "service_seq": place[1],
                              "recorded_service": where[0], "recorded_service_seq": where[1]})  # fmt: skip
            continue
        if held is not None:
            conflicts.append({"index": index, "id": event_id, "service": place[0], "service_seq": place[1],
                              "recorded_id": held})  # fmt: skip
            continue
        seen_place[event_id], seen_id[place] = place, event_id
        fresh.append(event)
    if conflicts:
        first = conflicts[0]
        if "recorded_id" in first:
            detail = (
                f"{first['service']} sequence {first['service_seq']} already holds the event {first['recorded_id']!r}, "
                f"not {first['id']!r}."
            )
        else:
            detail = (
                f"The event {first['id']!r} was recorded as {first['recorded_service']} sequence "
                f"{first['recorded_service_seq']}, not {first['service']} sequence {first['service_seq']}."
            )
        if len(conflicts) > 1:
            detail += f" ({len(conflicts)} conflicting events in all.)"
        undecided = [e for e in events if recorded_at.get(e["id"]) != (e["service"], e["service_seq"])]
        return undecided, duplicates, AuditSequenceConflict(detail, extra={"conflicts": conflicts[:_CONFLICTS_LISTED]})

    by_service: dict[str, list[int]] = defaultdict(list)
    for event in fresh:
        by_service[event["service"]].append(event["service_seq"])
    if by_service:
        cursor.execute(queries.SERVICE_SEQ_HIGHEST, [sorted(by_service)])
        highest = dict(cursor.fetchall())
        archived = None
        for service in sorted(by_service):
            numbers = sorted(by_service[service])
            top = highest.get(service)
            if top is None:
                # Nothing of this service is live. After an archival its earlier events may be in an archive file:
                # its next number cannot be known here, so the batch starts where it says (audit_verify checks the
                # live log from each service's lowest live number on).
                if archived is None:
                    archived = AuditArchive.objects.exists()
                top = numbers[0] - 1 if archived else 0
            expected = top + 1
            for number in numbers:
                if number != expected:
                    return (
                        fresh,
                        duplicates,
                        AuditSequenceGap(
                            f"{service}'s audit sequence continues at {expected}, but the next event sent is {number}: "
                            f"send the events from {expected} on, in order.",
                            extra={"service": service, "expected_seq": expected, "received_seq": number},
                        ),
                    )
                expected += 1
    return fresh, duplicates, None


def events_ingest(events: list[dict[str, Any]], *, client_id: str) -> IntakeResult:
    """Check (identity, then sequence under the sequencer lock) and chain ``events``, whose envelope is sound.

    Raises the refusal (403/409) after keeping the events in ``audit_rejected``, or :class:`AuditIngestUnavailable`.
    """
    try:
        identity_check(events, client_id)
    except DomainError as refusal:
        rejected_keep(events, code=refusal.code, detail=refusal.detail, client_id=client_id)
        raise
    result = IntakeResult()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(queries.XACT_LOCK, [chain.SEQUENCER_LOCK])
                fresh, duplicates, refusal = _sequence_refusal(events, cursor)
            result.duplicates = duplicates
            if refusal is None and fresh:
                # The lock is held until this transaction commits: chain.ingest takes it again (re-entrant), in
                # savepoints, so nothing can come between the check and the writes.
                done = chain.ingest(fresh)
                result.inserted, result.duplicates = done.inserted, duplicates + done.duplicates
                result.first_seq, result.last_seq = done.first_seq, done.last_seq
                result.parked, result.parked_events = len(done.parked), done.parked
                if done.rejected:  # the check above leaves nothing for it to refuse: only a bug gets here
                    log.error("audit.http_ingest_rejected", count=done.rejected, reasons=done.reasons[:5])
    except chain.IngestDeferred as exc:
        raise AuditIngestUnavailable(
            "The portal could not reach its database; nothing was written: send the batch again shortly."
        ) from exc
    if refusal is not None:
        rejected_keep(fresh, code=refusal.code, detail=refusal.detail, client_id=client_id)
        raise refusal
    return result


def _reason(code: str, detail: str, client_id: str | None) -> str:
    by = f" from client {client_id}" if client_id else ""
    return f"HTTP ingest{by} refused ({code}): {detail}"[:2000]


def _fingerprint(reason: str, payload: Any) -> str:
    return reason + "\x00" + json.dumps(payload, sort_keys=True, ensure_ascii=True, default=repr)


def rejected_keep(items: list[Any], *, code: str, detail: str, client_id: str | None) -> int:
    """Keep the items of a refused request in ``audit_rejected`` with the refusal's code and detail (each item
    once: an identical item already kept with the same reason is not added again); how many rows were added."""
    reason = _reason(code, detail, client_id)
    rows: dict[str, AuditRejected] = {}
    for item in items:
        payload = rejected_payload(item, item)
        rows.setdefault(_fingerprint(reason, payload), AuditRejected(reason=reason, payload=payload))
    if not rows:
        return 0
    with transaction.atomic():
        known = {
            _fingerprint(r, p) for r, p in AuditRejected.objects.filter(reason=reason).values_list("reason", "payload")
        }
        new = [row for key, row in rows.items() if key not in known]
        AuditRejected.objects.bulk_create(new)
    if new:
        log.warning("audit.http_ingest_refused", code=code, client=client_id, kept=len(new))
    return len(new)


def raw_keep(raw: bytes, *, code: str, detail: str, client_id: str | None) -> int:
    """Keep a refused body that is not a JSON document (its digest, size and first bytes) in ``audit_rejected``."""
    return rejected_keep([{"raw": raw_summary(raw)}], code=code, detail=detail, client_id=client_id)


def envelope_check(body: Any, *, client_id: str | None) -> list[dict[str, Any]]:
    """The events of a sound envelope; else keep what arrived in ``audit_rejected`` and raise 400."""
    errors = envelope_errors(body)
    if not errors:
        return body["events"]
    summary = "; ".join(f"{path}: {items[0]}" for path, items in list(errors.items())[:5])
    events = body.get("events") if isinstance(body, dict) else None
    items = events if isinstance(events, list) and 0 < len(events) <= MAX_EVENTS else [body]
    rejected_keep(items, code="validation_error", detail=summary, client_id=client_id)
    raise ValidationError(errors)
