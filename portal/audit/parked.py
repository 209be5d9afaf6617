"""Parked events: what the sequencer cannot chain still takes its place in the chain, as a placeholder.

Every service's ``service_seq`` is gapless and ``audit_verify --strict-services`` holds it to that, so an event
the sequencer refuses (malformed, a value PostgreSQL would refuse, beyond the bounds the verifiers hold every
event to) or that keeps failing for a reason nobody foresaw must not leave a hole. It is chained as a
placeholder under its own id, service and number: action ``audit.event.parked``, outcome ``failure``, the
sequencer as actor, and in ``metadata`` why (``reason``, ``code`` ``processing_error``, ``attempts``), the
SHA-256 and size of the bytes that arrived and the first ``PARKED_RAW_BYTES`` of them (base64). So nothing is
lost without a trace, the placeholder is hash-chained like any event (tamper-evident), and it is what audits
the park. An item without a usable id, service and number has no place to take: it goes to ``audit_rejected``
(kept, with the same digest and bounded bytes), as does an event whose place another event already holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import reprlib
from typing import Any

from portal.audit.standalone_verifier import FIELD_MAX, SEQ_MAX

PARKED_ACTION = "audit.event.parked"
PARKED_CODE = "processing_error"
PARKED_RAW_BYTES = 64 * 1024  # the bytes of a parked event kept in its placeholder (the digest covers them all)
ACTOR = {"type": "system", "id": "audit_ingest", "display": "audit sequencer"}


class AuditEventsParked(Exception):
    """Raised by the ``audit.ingest`` task after it chained its batch, when some events of it were parked: the
    task shows as failed in the job dashboard's failures. Its only argument is a message (JSON-safe)."""

    code = PARKED_CODE


def raw_bytes(item: Any) -> bytes:
    """The bytes of ``item`` as they arrived: a relayed event's payload text exactly as its service wrote it,
    anything else as JSON (or, if it cannot be, its repr). Never raises."""
    if isinstance(item, list) and len(item) == 4 and isinstance(item[3], str):
        return item[3].encode("utf-8", "surrogatepass")
    try:
        return json.dumps(item, ensure_ascii=True, default=repr).encode("ascii")
    except (ValueError, TypeError, RecursionError):
        return reprlib.repr(item).encode("utf-8", "backslashreplace")


def raw_summary(raw: bytes) -> dict[str, Any]:
    """Digest, size and the first ``PARKED_RAW_BYTES`` (base64) of ``raw``: JSON-safe whatever the bytes are."""
    return {
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "raw_bytes": len(raw),
        "raw_base64": base64.b64encode(raw[:PARKED_RAW_BYTES]).decode("ascii"),
        "raw_truncated": len(raw) > PARKED_RAW_BYTES,
    }


def _clean(value: Any, limit: int) -> str | None:
    """``value`` if it is a non-empty string that PostgreSQL takes as text and within ``limit``; else None."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def place(item: Any, event: Any) -> tuple[str, str, int] | None:
    """The place ``event`` (expanded from ``item``) claims: (id, service, service_seq), or None if it names none.

    An id that cannot be stored is replaced by one derived from the place and the bytes that arrived, the same
    for every delivery of them, so that a redelivered parked event is a duplicate, not a conflict.
    """
    if isinstance(item, list) and len(item) == 4 and not isinstance(event, dict):  # relayed, not an object
        event = {"id": item[0], "service": item[1], "service_seq": item[2]}
    if not isinstance(event, dict):
        return None
    service = _clean(event.get("service"), FIELD_MAX[("service",)])
    number = event.get("service_seq")
    if service is None or not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= SEQ_MAX:
        return None
    event_id = _clean(event.get("id"), FIELD_MAX[("id",)])
    if event_id is None:
        digest = hashlib.sha256(f"{service}\x00{number}\x00".encode() + raw_bytes(item)).hexdigest()
        event_id = f"evt_parked_{digest[:40]}"
    return event_id, service, number


def placeholder(
    item: Any, event: Any, where: tuple[str, str, int], reason: str, *, attempts: int, occurred_at: str
) -> dict[str, Any]:
    """The event chained in place of ``event``, which could not be (``reason``; after ``attempts`` tries)."""
    event_id, service, number = where
    # the id of the request that caused it, when it can be kept (a batch of many requests keeps each one's)
    request_id = _clean(event.get("request_id"), FIELD_MAX[("request_id",)]) if isinstance(event, dict) else None
    return {
        "id": event_id,
        "service": service,
        "service_seq": number,
        "occurred_at": occurred_at,
        "action": PARKED_ACTION,
        "outcome": "failure",
        "actor": dict(ACTOR),
        "object": {"type": "audit_event", "id": event_id},
        "request_id": request_id or "",
        "source_ip": "",
        "user_agent": "",
        "changes": {},
        "metadata": {
            "code": PARKED_CODE,
            "reason": reason[:1000].encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\0"),
            "attempts": attempts,
            **raw_summary(raw_bytes(item)),
        },
    }


def rejected_payload(item: Any, event: Any) -> dict[str, Any]:
    """What ``audit_rejected`` keeps of an item: the event itself when PostgreSQL can store it as it is, else
    its digest and bounded bytes (a NUL, a lone surrogate, NaN or a nesting too deep cannot go into jsonb)."""
    if isinstance(event, dict):
        try:
            text = json.dumps(event, ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")
            if "\\u0000" not in text and len(text) <= PARKED_RAW_BYTES:
                return event
        except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
            pass
    return raw_summary(raw_bytes(item))
