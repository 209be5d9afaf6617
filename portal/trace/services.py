"""The trace's one write: every lookup is itself audited, as every read of the audit trail is
(``trace.viewed``, through :func:`portal.audit.services.access_record`), refused and unknown ids included."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from portal.audit.services import access_record
from portal.trace.errors import TraceIdInvalid, TraceNotFound
from portal.trace.selectors import LOOKUP_OBJECT_TYPE, Trace, TraceViewer, trace_of

ACTION = "trace.viewed"
_RECORDED_ID_MAX = 200


def trace_lookup(*, value: str, viewer: TraceViewer, via: str) -> Trace:
    """:func:`~portal.trace.selectors.trace_of`, recorded as ``trace.viewed`` (``via``: api or page); an invalid or
    unknown id is recorded with outcome ``failure`` and its reason, then raised."""
    base: dict[str, Any] = {"via": via, "audit_visible": viewer.audit}
    recorded_id = value[:_RECORDED_ID_MAX]
    try:
        with transaction.atomic():
            trace = trace_of(value, viewer=viewer)
            access_record(
                action=ACTION,
                object_type=LOOKUP_OBJECT_TYPE,
                object_id=trace.query,
                metadata={
                    **base,
                    "kind": trace.kind,
                    "request_ids": len(trace.request_ids),
                    "events": trace.events,
                    "jobs": trace.jobs,
                },
            )
    except (TraceIdInvalid, TraceNotFound) as exc:
        reason = "invalid_id" if isinstance(exc, TraceIdInvalid) else "not_found"
        extra = {"length": len(value)} if reason == "invalid_id" else {}
        access_record(
            action=ACTION,
            object_type=LOOKUP_OBJECT_TYPE,
            object_id=recorded_id if reason == "not_found" else "",
            outcome="failure",
            metadata={**base, "reason": reason, **extra},
        )
        raise
    return trace
