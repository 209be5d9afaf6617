"""Audit domain errors, each with a stable code (RFC 9457 problem details through the kit's handler)."""

from __future__ import annotations

from services.kit.errors import Conflict, DomainError, NotFound


class InvalidFilter(DomainError):
    code = "validation_error"
    status = 400
    title = "Invalid filter"


class AuditEventNotFound(NotFound):
    title = "Audit event not found"


class AuditLogEmpty(DomainError):
    code = "audit_log_empty"
    status = 400
    title = "The audit log is empty"


class ArchiveError(Conflict):
    """The archive could not be written (nothing was deleted): another run holds the lock, or the log does not
    verify."""

    code = "archive_refused"
    title = "Archival refused"


class EventNotSigned(Conflict):
    """The event is newer than the latest signed head: no proof exists yet (heads are signed every minute)."""

    code = "event_not_signed"
    title = "Event not covered by a signed head yet"
