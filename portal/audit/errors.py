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


class AuditServiceUnregistered(DomainError):
    """An event names a service no machine client registered in the catalog (``POST /api/v1/audit/events:ingest``):
    register it first (``PUT /api/v1/catalog/services/{slug}``, with the same client)."""

    code = "audit_service_unregistered"
    status = 403
    title = "Service not registered"


class AuditServiceMismatch(DomainError):
    """An event names a service another machine client registered: a client writes only its own services' events."""

    code = "audit_service_mismatch"
    status = 403
    title = "Event of another client's service"


class AuditSequenceConflict(Conflict):
    """An event's place (service, service_seq) holds another event, or its id was recorded at another place."""

    code = "audit_sequence_conflict"
    title = "Audit sequence conflict"


class AuditSequenceGap(Conflict):
    """A service's new events do not continue its sequence: ``expected_seq`` is the number the log waits for,
    ``received_seq`` the one that came instead."""

    code = "audit_sequence_gap"
    title = "Gap in the service's audit sequence"


class AuditIngestUnavailable(DomainError):
    """The portal's database is away while chaining: nothing was written, send the batch again later."""

    code = "database_unavailable"
    status = 503
    title = "Database unavailable"


class AuditKeysUnavailable(DomainError):
    """A retired public key (``AUDIT_RETIRED_PUBLIC_KEY_FILES``) cannot be read: the key list would be incomplete."""

    code = "audit_keys_unavailable"
    status = 503
    title = "Audit public keys unavailable"
