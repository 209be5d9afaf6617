"""Webhooks domain errors, each with a stable code (listed in docs/errors.md)."""

from __future__ import annotations

from services.kit.errors import DomainError
from services.kit.metadata import InvalidMetadata as KitInvalidMetadata


class WebhooksError(DomainError):
    status = 422


class UnknownEventType(WebhooksError):
    code = "unknown_event_type"
    title = "Unknown event type"


class InvalidPayload(WebhooksError):
    code = "invalid_payload"
    title = "Data not valid against the event type's schema"


class EndpointUrlNotAllowed(WebhooksError):
    code = "endpoint_url_not_allowed"
    title = "Endpoint URL not allowed"


class EndpointNotFound(WebhooksError):
    code = "endpoint_not_found"
    status = 404
    title = "Endpoint not found"


class MessageNotFound(WebhooksError):
    code = "message_not_found"
    status = 404
    title = "Message not found"


class EventTypeNotFound(WebhooksError):
    code = "event_type_not_found"
    status = 404
    title = "Event type not found"


class RecoveryNotFound(WebhooksError):
    code = "recovery_not_found"
    status = 404
    title = "Recovery not found"


class EndpointDisabled(WebhooksError):
    code = "endpoint_disabled"
    status = 409
    title = "Endpoint is disabled"


class InvalidSecret(WebhooksError):
    code = "invalid_secret"
    title = "Secret must be whsec_ and the base64 of 24 to 64 bytes"


class InvalidMetadata(KitInvalidMetadata, WebhooksError):
    """The kit's metadata limits (``services.kit.metadata``)."""


class EndpointNotSubscribed(WebhooksError):
    code = "endpoint_not_subscribed"
    title = "The endpoint's filter does not take this message"


class InvalidRecoveryWindow(WebhooksError):
    code = "invalid_recovery_window"
    title = "Recovery window must start before it ends, not in the future"


class PublicKeyNotFound(WebhooksError):
    code = "public_key_not_found"
    status = 404
    title = "Endpoint does not sign with Ed25519 (v1a)"


# What ``webhooks.ingest`` raises: a plain exception whose args are strings (JSON-safe across Celery's result
# backend and the job dashboard).


class IngestDeferred(Exception):
    """The webhooks database is away or busy: nothing of the batch was judged; the task is retried later."""


class IngestEventsFailed(Exception):
    """Events of a batch made the write fail and were dropped (isolated: the others went in). The task fails with
    it after the batch's work is committed, so that the job dashboard's failures list it; running it again
    changes nothing."""
