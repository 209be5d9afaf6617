"""Trace errors (RFC 9457 problems with stable codes)."""

from __future__ import annotations

from services.kit.errors import DomainError, NotFound


class TraceNotFound(NotFound):
    """Nothing recorded anywhere for this id: no audit event, no job, no job that carried it."""

    code = "trace_not_found"
    title = "Nothing recorded for this id"


class TraceIdInvalid(DomainError):
    """Not an id Atrium makes or accepts: empty, longer than 200 characters, or characters outside
    ``A-Z a-z 0-9 . _ : -``."""

    code = "trace_id_invalid"
    title = "Not a traceable id"
