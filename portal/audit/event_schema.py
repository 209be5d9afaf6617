"""The published JSON Schema (2020-12) of an audit event and of the ingest request (``GET /api/v1/audit/schema``).

``$defs.event`` says what the sequencer chains (:func:`portal.audit.chain._problem` and the bounds of
:func:`portal.audit.standalone_verifier.event_out_of_range`): an event outside it is not refused by the ingest
endpoint once its envelope (id, service, service_seq) is sound, but parked as a placeholder in its place. The
optional fields are what the Python kit writes (``services/kit/audit.py`` ``audit_event``). Members not named
here are accepted and ignored (not hashed), like the kit's ``trace_parent``.
"""

from __future__ import annotations

from typing import Any

from portal.audit.intake import MAX_EVENTS
from portal.audit.standalone_verifier import CLOCK_SKEW_SECONDS, EVENT_MAX_BYTES, FIELD_MAX, SEQ_MAX

SCHEMA_ID = "urn:atrium:audit:schema:1"


def _text(path: tuple[str, ...], description: str, *, required: bool = True) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1 if required else 0,
        "maxLength": FIELD_MAX[path],
        "description": description,
    }


def _optional_text(path: tuple[str, ...], description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": f"{description} Longer than {FIELD_MAX[path]} characters: cut to that length.",
    }


def audit_schema() -> dict[str, Any]:
    """The whole document: the ingest request at the top, one event in ``$defs.event``."""
    event = {
        "title": "Audit event",
        "description": (
            "One audit event as a service's outbox relays it. It is chained when it is within these bounds and "
            f"its canonical JSON is at most {EVENT_MAX_BYTES} bytes; otherwise it is parked as a placeholder in "
            "its place (docs/audit.md). Members not named here are ignored (not hashed)."
        ),
        "type": "object",
        "required": ["id", "service", "service_seq", "occurred_at", "action", "outcome", "actor", "object"],
        "properties": {
            "id": _text(("id",), "The event's unique id, e.g. evt_01m91tj5evb16g3wrkrk6xt9rh (idempotency key)."),
            "service": _text(("service",), "The catalog slug of the service that wrote it (the caller's own)."),
            "service_seq": {
                "type": "integer",
                "minimum": 1,
                "maximum": SEQ_MAX,
                "description": "The service's own gapless number: 1, 2, 3... in the order its changes committed.",
            },
            "occurred_at": {
                "type": "string",
                "format": "date-time",
                "maxLength": 40,
                "description": (
                    "When the change happened (RFC 3339, e.g. 2026-12-04T09:31:00.410000Z; no offset means UTC). "
                    f"Not before 2000, and not more than {CLOCK_SKEW_SECONDS} s after the portal records it."
                ),
            },
            "action": _text(("action",), "What happened: dotted lower-case words, e.g. risk.rules.updated."),
            "outcome": {"enum": ["success", "failure"]},
            "actor": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["user", "client", "system"]},
                    "id": _optional_text(("actor", "id"), "The user's or machine client's id."),
                    "display": _optional_text(("actor", "display"), "A readable name."),
                },
                "description": "Who did it.",
            },
            "object": {
                "type": "object",
                "properties": {
                    "type": _optional_text(("object", "type"), "The kind of object changed, e.g. payment."),
                    "id": _optional_text(("object", "id"), "Its id."),
                },
                "description": "What it was done to.",
            },
            "request_id": _optional_text(("request_id",), "The X-Request-ID of the request that caused it."),
            "source_ip": _optional_text(("source_ip",), "The caller's address."),
            "user_agent": _optional_text(("user_agent",), "The caller's User-Agent."),
            "changes": {
                "type": "object",
                "description": 'Before and after of each changed field: {"path": [before, after]} (secrets redacted).',
            },
            "metadata": {"type": "object", "description": "Anything else worth keeping (a JSON object)."},
            "trace_parent": {
                "type": "string",
                "description": "The W3C traceparent of the span that wrote it (kept out of the chain: not hashed).",
            },
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Atrium audit ingest request",
        "description": (
            "The body of POST /api/v1/audit/events:ingest: a service's audit events, in its service_seq order. "
            "One audit event is $defs.event."
        ),
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {"type": "array", "minItems": 1, "maxItems": MAX_EVENTS, "items": {"$ref": "#/$defs/event"}}
        },
        "$defs": {"event": event},
    }
