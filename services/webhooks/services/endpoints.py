"""Webhooks writes of endpoints: create (the URL through the SSRF guard, patterns against the catalog, the
secret checked or made), change, enable, disable, delete, and their secrets (read, rotate). Each change is one
transaction with its audit event; each refusal is on record (:mod:`.refusals`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_record
from services.kit.logs import get_logger
from services.kit.metadata import metadata_check
from services.kit.outbound import OutboundRefused, allow_networks, outbound_target
from services.webhooks import queries, secrets
from services.webhooks.errors import (
    EndpointNotFound,
    EndpointUrlNotAllowed,
    InvalidMetadata,
    InvalidSecret,
    UnknownEventType,
)
from services.webhooks.models import Endpoint, EventType
from services.webhooks.selectors import pattern_matches
from services.webhooks.services.refusals import refusal_recorded

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Checks


def url_check(url: str) -> str:
    """The URL as given, if deliveries may go to it: parsed and resolved by the kit's guard, every address public
    or allow-listed (``WEBHOOKS_ALLOWED_NETWORKS``), and https in production unless the address is allow-listed.
    Else ``endpoint_url_not_allowed`` with the reason (``invalid_url``, ``blocked``, ``dns``, ``https_required``)."""
    allow = settings.WEBHOOKS_ALLOWED_NETWORKS
    try:
        target = outbound_target(url, allow=allow, timeout=3.0)
    except OutboundRefused as refused:
        reasons = {
            "invalid_url": "not an http(s) URL the service sends to (no user info, a plain host name or address)",
            "blocked": "its host is or resolves to an address that is not allowed (loopback, private, link-local, "
            "reserved...)",
            "dns": "its host name does not resolve",
        }
        raise EndpointUrlNotAllowed(
            f"url refused: {reasons.get(refused.error, refused.error)}.", extra={"reason": refused.error}
        ) from refused
    if settings.ATRIUM_ENV == "production" and target.url.scheme != "https":
        listed = any(target.address.version == net.version and target.address in net for net in allow_networks(allow))
        if not listed:
            raise EndpointUrlNotAllowed(
                "url refused: https is required (only allow-listed addresses may use http).",
                extra={"reason": "https_required"},
            )
    return url


def event_types_check(patterns: list[str]) -> list[str]:
    """The patterns, each matching at least one known (not archived) type; else ``unknown_event_type``."""
    known = list(EventType.objects.filter(archived=False).values_list("name", flat=True))
    unmatched = [p for p in patterns if not any(pattern_matches(p, name) for name in known)]
    if unmatched:
        raise UnknownEventType(
            f"No known event type matches {', '.join(unmatched)} (GET /api/v1/event-types lists them).",
            extra={"event_types": unmatched},
        )
    return list(dict.fromkeys(patterns))


def secret_check(secret: str) -> str:
    """A caller's secret: ``whsec_`` + base64 of 24 to 64 bytes; else ``invalid_secret``."""
    if not secrets.secret_valid(secret):
        raise InvalidSecret(
            f"secret must be {secrets.SECRET_PREFIX} followed by the base64 of {secrets.SECRET_MIN_BYTES} to "
            f"{secrets.SECRET_MAX_BYTES} random bytes."
        )
    return secret


def _endpoint_locked(endpoint_id: str) -> Endpoint:
    endpoint = Endpoint.objects.select_for_update().filter(id=endpoint_id).first()
    if endpoint is None:
        raise EndpointNotFound(f"No endpoint {endpoint_id}.")
    return endpoint


_AUDITED_FIELDS = (
    "url",
    "description",
    "event_types",
    "channels",
    "rate_limit",
    "max_in_flight",
    "ordered",
    "metadata",
    "v1a",
)


def _terms(endpoint: Endpoint) -> dict[str, Any]:
    return {name: getattr(endpoint, name) for name in _AUDITED_FIELDS}


# ---------------------------------------------------------------------------------------------------------
# Endpoints


def endpoint_create(
    *,
    url: str,
    event_types: list[str],
    description: str = "",
    channels: list[str] | None = None,
    rate_limit: int | None = None,
    max_in_flight: int = 10,
    ordered: bool = False,
    metadata: dict[str, Any] | None = None,
    secret: str | None = None,
    v1a: bool = False,
) -> Endpoint:
    """Subscribe a URL to event types; its secret is the caller's or a new one, stored encrypted."""
    with refusal_recorded("webhooks.endpoint.created", object_type="endpoint", url=url):
        url = url_check(url)
        event_types = event_types_check(event_types)
        metadata = metadata_check(metadata or {}, error=InvalidMetadata)
        given = secret is not None
        plain = secret_check(secret) if secret is not None else secrets.secret_new()
        now = timezone.now()
        endpoint = Endpoint(
            url=url,
            description=description,
            event_types=event_types,
            channels=list(dict.fromkeys(channels or [])),
            rate_limit=rate_limit,
            max_in_flight=max_in_flight,
            ordered=ordered,
            metadata=metadata,
            secret=secrets.encrypt(plain),
            v1a=v1a,
            signing_key=secrets.encrypt(secrets.signing_key_new()) if v1a else "",
            created_at=now,
            updated_at=now,
        )
        with transaction.atomic():
            endpoint.save(force_insert=True)
            audit_record(
                "webhooks.endpoint.created",
                object_type="endpoint",
                object_id=endpoint.id,
                metadata={**_terms(endpoint), "secret_given": given},
            )
    log.info("webhooks.endpoint_created", endpoint_id=endpoint.id)
    return endpoint


def endpoint_update(*, endpoint_id: str, **fields: Any) -> Endpoint:
    """Change an endpoint's URL (checked again), filter, limits, ordering, metadata or ``v1a`` signing."""
    with refusal_recorded("webhooks.endpoint.updated", object_type="endpoint", object_id=endpoint_id):
        if "url" in fields:
            fields["url"] = url_check(fields["url"])
        if "event_types" in fields:
            fields["event_types"] = event_types_check(fields["event_types"])
        if "metadata" in fields:
            fields["metadata"] = metadata_check(fields["metadata"], error=InvalidMetadata)
        if "channels" in fields:
            fields["channels"] = list(dict.fromkeys(fields["channels"]))
        with transaction.atomic():
            endpoint = _endpoint_locked(endpoint_id)
            before = _terms(endpoint)
            for name, value in fields.items():
                setattr(endpoint, name, value)
            if endpoint.v1a and not endpoint.signing_key:
                endpoint.signing_key = secrets.encrypt(secrets.signing_key_new())
            elif not endpoint.v1a:
                endpoint.signing_key = ""
            endpoint.updated_at = timezone.now()
            endpoint.save()
            changes = {k: [before[k], v] for k, v in _terms(endpoint).items() if before[k] != v}
            audit_record("webhooks.endpoint.updated", object_type="endpoint", object_id=endpoint.id, changes=changes)
    return endpoint


def endpoint_delete(*, endpoint_id: str) -> None:
    """Delete an endpoint, its deliveries and recoveries (its attempts stay until their retention)."""
    with refusal_recorded("webhooks.endpoint.deleted", object_type="endpoint", object_id=endpoint_id):
        with transaction.atomic():
            endpoint = _endpoint_locked(endpoint_id)
            terms = _terms(endpoint)
            endpoint.delete()
            audit_record("webhooks.endpoint.deleted", object_type="endpoint", object_id=endpoint_id, metadata=terms)


def endpoint_enable(*, endpoint_id: str) -> Endpoint:
    """Enable an endpoint: its pending deliveries go out again; the failure clock restarts."""
    with refusal_recorded("webhooks.endpoint.enabled", object_type="endpoint", object_id=endpoint_id):
        with transaction.atomic():
            endpoint = _endpoint_locked(endpoint_id)
            if endpoint.enabled:
                return endpoint
            before = endpoint.disabled_reason
            endpoint.enabled = True
            endpoint.disabled_reason = ""
            endpoint.disabled_at = None
            endpoint.first_failure_at = None
            endpoint.updated_at = timezone.now()
            endpoint.save()
            audit_record(
                "webhooks.endpoint.enabled",
                object_type="endpoint",
                object_id=endpoint_id,
                changes={"enabled": [False, True], "disabled_reason": [before, ""]},
            )
            queries.notify_due()
    return endpoint


def endpoint_disable(*, endpoint_id: str, reason: str = "manual") -> Endpoint:
    """Disable an endpoint with a reason: nothing is sent to it (messages still queue for it) until enabled."""
    with refusal_recorded("webhooks.endpoint.disabled", object_type="endpoint", object_id=endpoint_id):
        with transaction.atomic():
            endpoint = _endpoint_locked(endpoint_id)
            if not endpoint.enabled and endpoint.disabled_reason == reason:
                return endpoint
            was = endpoint.enabled
            endpoint.enabled = False
            endpoint.disabled_reason = reason
            endpoint.disabled_at = endpoint.disabled_at if not was else timezone.now()
            endpoint.updated_at = timezone.now()
            endpoint.save()
            audit_record(
                "webhooks.endpoint.disabled",
                object_type="endpoint",
                object_id=endpoint_id,
                changes={"enabled": [was, False]},
                metadata={"reason": reason},
            )
    return endpoint


def endpoint_secret_read(*, endpoint_id: str) -> dict[str, Any]:
    """The endpoint's secret (and the previous one while it still signs), decrypted; the read is audited."""
    with refusal_recorded("webhooks.endpoint.secret_read", object_type="endpoint", object_id=endpoint_id):
        with transaction.atomic():
            endpoint = Endpoint.objects.filter(id=endpoint_id).first()
            if endpoint is None:
                raise EndpointNotFound(f"No endpoint {endpoint_id}.")
            now = timezone.now()
            overlapping = bool(
                endpoint.previous_secret
                and endpoint.previous_secret_expires_at
                and endpoint.previous_secret_expires_at > now
            )
            audit_record(
                "webhooks.endpoint.secret_read",
                object_type="endpoint",
                object_id=endpoint_id,
                metadata={"previous_included": overlapping},
            )
    return {
        "endpoint": endpoint.id,
        "secret": secrets.decrypt(endpoint.secret),
        "previous_secret": secrets.decrypt(endpoint.previous_secret) if overlapping else None,
        "previous_secret_expires_at": endpoint.previous_secret_expires_at if overlapping else None,
    }


def endpoint_secret_rotate(
    *, endpoint_id: str, secret: str | None = None, overlap_seconds: int | None = None
) -> Endpoint:
    """A new secret (the caller's or generated); the old one keeps signing for ``overlap_seconds``."""
    with refusal_recorded("webhooks.endpoint.secret_rotated", object_type="endpoint", object_id=endpoint_id):
        new = secret_check(secret) if secret is not None else secrets.secret_new()
        overlap = settings.WEBHOOKS_SECRET_OVERLAP_SECONDS if overlap_seconds is None else overlap_seconds
        with transaction.atomic():
            endpoint = _endpoint_locked(endpoint_id)
            now = timezone.now()
            endpoint.previous_secret = endpoint.secret if overlap > 0 else ""
            endpoint.previous_secret_expires_at = now + dt.timedelta(seconds=overlap) if overlap > 0 else None
            endpoint.secret = secrets.encrypt(new)
            endpoint.updated_at = now
            endpoint.save()
            audit_record(
                "webhooks.endpoint.secret_rotated",
                object_type="endpoint",
                object_id=endpoint_id,
                metadata={"overlap_seconds": overlap, "secret_given": secret is not None},
            )
    return endpoint
