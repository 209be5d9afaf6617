"""Messages in: every event becomes one message (idempotent on its event id), fanned out to the enabled endpoints
that want it, in one transaction that also wakes the dispatchers (``NOTIFY webhooks_due``).

- :func:`messages_ingest`: the events payments and the ledger relay from their outboxes (``webhooks.ingest``),
  set-based: one statement inserts the batch's new messages and their deliveries. An event that cannot be read
  (not an object, no id, a type not in the catalog, a bad timestamp or channels) is dropped with a log line; an
  item that makes the statement fail is isolated (``services.kit.batches``) and dropped alone, the others go in.
- :func:`messages_create`: one message from ``POST /api/v1/messages``: its type must be in the catalog (not
  archived) and its data valid against the type's JSON Schema; audited (``webhooks.message.created``).

A message's body is built once, here: the exact bytes every attempt sends, ``{"type", "timestamp", "data"}``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone
from jsonschema import Draft202012Validator

from services.kit.audit import audit_record
from services.kit.batches import batch_isolate
from services.kit.carry import acting_for, carried
from services.kit.context import request_id_clean, request_id_var
from services.kit.db import database_transient
from services.kit.db import execute as db_execute
from services.kit.ids import id_new
from services.kit.logs import get_logger
from services.kit.outbox import event_expand, isoformat
from services.webhooks import queries
from services.webhooks.errors import IngestDeferred, InvalidPayload, UnknownEventType
from services.webhooks.models import EventType, Message

log = get_logger(__name__)

EVENT_ID_MAX = 64
CHANNEL_MAX = 128
CHANNELS_MAX = 100
OBJECT_ID_MAX = 64
SOURCE_MAX = 200
SCHEMA_ERRORS_MAX = 10


@dataclass(frozen=True)
class MessageIn:
    """A message about to be written (its body already built)."""

    id: str
    event_id: str
    type: str
    channels: tuple[str, ...]
    body: str
    occurred_at: dt.datetime
    source: str
    request_id: str
    object_id: str


@dataclass
class IngestResult:
    created: list[str] = field(default_factory=list)  # the new messages' ids, in creation order
    deliveries: int = 0  # deliveries made for them
    duplicates: int = 0  # events that were messages already
    dropped: int = 0  # events that could not be read, or of unknown types
    failed: int = 0  # events that made the write fail (isolated)
    reasons: list[str] = field(default_factory=list)  # the first few drops and failures

    def merge(self, other: IngestResult) -> IngestResult:
        self.created += other.created
        self.deliveries += other.deliveries
        self.duplicates += other.duplicates
        self.dropped += other.dropped
        self.failed += other.failed
        self.reasons = (self.reasons + other.reasons)[:10]
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": len(self.created),
            "deliveries": self.deliveries,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "failed": self.failed,
        }


def message_body(event_type: str, occurred_at: dt.datetime, data: Any) -> str:
    """The exact JSON a message's attempts send: ``{"type", "timestamp", "data"}``, compact, UTF-8 as is."""
    return json.dumps(
        {"type": event_type, "timestamp": isoformat(occurred_at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def _object_id(data: Any) -> str:
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and len(value) <= OBJECT_ID_MAX else ""


def _channels(value: Any) -> tuple[str, ...]:
    """Distinct channels, in order; ``ValueError`` unless a list of 1..128-character strings (at most 100)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > CHANNELS_MAX:
        raise ValueError(f"channels must be a list of at most {CHANNELS_MAX} strings")
    for channel in value:
        if not isinstance(channel, str) or not 0 < len(channel) <= CHANNEL_MAX:
            raise ValueError(f"a channel must be a string of 1 to {CHANNEL_MAX} characters")
    return tuple(dict.fromkeys(value))


def _instant(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError("occurred_at must be an ISO 8601 timestamp")
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("occurred_at must have a time zone")
    return moment


def _known_types() -> set[str]:
    return {row[0] for row in db_execute(queries.KNOWN_TYPES_SQL, [])}


def _event_read(event: Any, known: set[str]) -> MessageIn:
    """A relayed event (expanded) as a message; ``ValueError`` saying why it cannot be one."""
    if not isinstance(event, dict):
        raise ValueError("not an object")
    if "unparsable_payload" in event:
        raise ValueError("payload is not JSON")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= EVENT_ID_MAX:
        raise ValueError("no event id")
    event_type = event.get("type")
    if event_type not in known:
        raise ValueError(f"unknown event type {str(event_type)[:100]!r}")
    if "data" not in event:
        raise ValueError("no data")
    occurred_at = _instant(event.get("occurred_at"))
    channels = _channels(event.get("channels"))
    data = event["data"]
    source = event.get("service")
    return MessageIn(
        id=id_new("msg"),
        event_id=event_id,
        type=event_type,
        channels=channels,
        body=message_body(event_type, occurred_at, data),
        occurred_at=occurred_at,
        source=source[:SOURCE_MAX] if isinstance(source, str) and source else "unknown",
        request_id=request_id_clean(event.get("request_id")) or "",
        object_id=_object_id(data),
    )


def _write(messages: Sequence[MessageIn], now: dt.datetime) -> tuple[list[tuple[str, int, int]], set[str]]:
    """Insert ``messages`` (new event ids only) and their deliveries in the current transaction; wake the
    dispatchers when a delivery was made. Returns ``(id, seq, deliveries)`` per new message, and the event ids
    that were messages already."""
    db_execute(queries.INGEST_XACT_LOCK, [queries.INGEST_LOCK])
    rows = [
        {
            "n": n,
            "id": m.id,
            "event_id": m.event_id,
            "type": m.type,
            "channels": m.channels,
            "body": m.body,
            "occurred_at": isoformat(m.occurred_at),
            "source": m.source,
            "request_id": m.request_id,
            "object_id": m.object_id,
        }
        for n, m in enumerate(messages)
    ]
    rows = db_execute(queries.MESSAGES_INGEST, {"rows": json.dumps(rows, ensure_ascii=False), "now": now})
    created = [(str(row[0]), int(row[1]), int(row[2])) for row in rows]
    if any(count for _, _, count in created):
        db_execute(queries.NOTIFY_DUE, [])
    new = {message_id for message_id, _, _ in created}
    duplicates = {m.event_id for m in messages if m.id not in new}
    return created, duplicates


def _write_batch(messages: Sequence[MessageIn]) -> IngestResult:
    with transaction.atomic():
        created, duplicates = _write(messages, timezone.now())
    return IngestResult(
        created=[message_id for message_id, _, _ in created],
        deliveries=sum(count for _, _, count in created),
        duplicates=len(duplicates),
    )


def messages_ingest(items: Iterable[Any]) -> IngestResult:
    """Turn relayed events (``[id, service, service_seq, payload]`` rows or expanded dicts) into messages and
    deliveries. Idempotent on the event id. With the database away or busy, raises :class:`IngestDeferred`
    (nothing was judged: the whole batch is tried again later)."""
    result = IngestResult()
    known = _known_types()
    messages: dict[str, MessageIn] = {}
    for item in items:
        event = event_expand(item)
        try:
            message = _event_read(event, known)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            request_id = event.get("request_id") if isinstance(event, dict) else None
            with acting_for(request_id if isinstance(request_id, str) else None):
                event_id = event.get("id") if isinstance(event, dict) else None
                log.warning("webhooks.event_dropped", event_id=str(event_id)[:80], reason=str(exc)[:300])
            result.dropped += 1
            result.reasons = [*result.reasons, str(exc)[:200]][:10]
            continue
        if message.event_id in messages:
            result.duplicates += 1
            continue
        messages[message.event_id] = message
    batch = list(messages.values())
    if not batch:
        return result

    def item_error(exc: Exception) -> bool:
        if database_transient(exc):
            raise IngestDeferred(f"webhooks database unavailable: {type(exc).__name__}") from exc
        return True

    def alone(message: MessageIn, exc: Exception) -> IngestResult:
        with acting_for(message.request_id or None, object_id=message.object_id):
            log.error(
                "webhooks.event_failed",
                event_id=message.event_id,
                type=message.type,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
        return IngestResult(failed=1, reasons=[f"{message.event_id}: {type(exc).__name__}"])

    written = batch_isolate(
        batch, _write_batch, item_error=item_error, alone=alone, merge=IngestResult.merge, event="webhooks.ingest_split"
    )
    result.merge(written)
    _carried(batch, set(written.created))
    return result


def _carried(batch: Sequence[MessageIn], created: set[str]) -> None:
    """The running task carried these requests and objects; one log line per new message, under its request."""
    carried(
        request_ids=[m.request_id for m in batch if m.request_id],
        object_ids=[m.object_id for m in batch if m.object_id],
    )
    for message in batch:
        if message.id in created:
            with acting_for(message.request_id or None, object_id=message.object_id):
                log.info("webhooks.message_created", message=message.id, type=message.type, event_id=message.event_id)


@functools.lru_cache(maxsize=64)
def _validator(name: str, schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _pointer(path: Iterable[Any]) -> str:
    return "#/data" + "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def data_check(event_type: EventType, data: Any) -> None:
    """Raise :class:`InvalidPayload` (with one field error per problem, at most 10) unless ``data`` is valid
    against the type's JSON Schema."""
    validator = _validator(event_type.name, json.dumps(event_type.schema, sort_keys=True))
    problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))[:SCHEMA_ERRORS_MAX]
    if not problems:
        return
    errors = [
        {
            "field": "data" + "".join(f".{part}" for part in problem.absolute_path),
            "pointer": _pointer(problem.absolute_path),
            "code": f"schema_{problem.validator}",
            "detail": problem.message[:300],
        }
        for problem in problems
    ]
    detail = f"data is not valid against the schema of {event_type.name}: " + "; ".join(
        f"{e['field']}: {e['detail']}" for e in errors[:3]
    )
    raise InvalidPayload(detail[:1000], extra={"errors": errors})


def messages_create(
    *,
    type: str,
    data: Any,
    source: str,
    channels: list[str] | None = None,
    event_id: str | None = None,
    occurred_at: dt.datetime | None = None,
    request_id: str | None = None,
) -> tuple[Message, bool]:
    """One message sent by a caller (``POST /api/v1/messages``), fanned out like relayed events. Returns the
    message and whether it is new: a repeated ``event_id`` returns the message it made, creating nothing.

    Raises :class:`UnknownEventType` (not in the catalog, or archived) and :class:`InvalidPayload` (data not valid
    against the type's schema). ``channels`` must already be valid (the API's serializer checks them)."""
    event_type = EventType.objects.filter(name=type, archived=False).first() if isinstance(type, str) else None
    if event_type is None:
        raise UnknownEventType(f"{str(type)[:100]!r} is not an event type (GET /api/v1/event-types lists them).")
    data_check(event_type, data)
    moment = occurred_at or timezone.now()
    message_id = id_new("msg")
    message = MessageIn(
        id=message_id,
        event_id=event_id or message_id,
        type=event_type.name,
        channels=_channels(channels),
        body=message_body(event_type.name, moment, data),
        occurred_at=moment,
        source=source[:SOURCE_MAX] or "unknown",
        request_id=request_id_clean(request_id) or request_id_clean(request_id_var.get()) or "",
        object_id=_object_id(data),
    )
    with transaction.atomic():
        created, _ = _write([message], timezone.now())
        if created:
            audit_record(
                "webhooks.message.created",
                object_type="message",
                object_id=message.id,
                metadata={
                    "type": message.type,
                    "event_id": message.event_id,
                    "channels": list(message.channels),
                    "deliveries": created[0][2],
                },
            )
    if created:
        return Message.objects.get(id=message.id), True
    return Message.objects.get(event_id=message.event_id), False
