"""Webhooks reads for the API and the admin: endpoints with their 24 h stats, event types, messages with their
deliveries, attempts, recoveries."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from services.webhooks import secrets
from services.webhooks.errors import (
    EndpointNotFound,
    EventTypeNotFound,
    MessageNotFound,
    PublicKeyNotFound,
    RecoveryNotFound,
)
from services.webhooks.models import Attempt, AttemptError, Endpoint, EventType, Message, Recovery

STATS_WINDOW = dt.timedelta(hours=24)


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether an endpoint's event-type pattern takes ``name``: ``*`` everything, ``payment.*`` every type below
    ``payment`` (one or more segments), otherwise the exact name."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def endpoint_get(endpoint_id: str) -> Endpoint:
    endpoint = Endpoint.objects.filter(id=endpoint_id).first()
    if endpoint is None:
        raise EndpointNotFound(f"No endpoint {endpoint_id}.")
    return endpoint


def endpoint_list() -> QuerySet[Endpoint]:
    return Endpoint.objects.all()


def endpoint_stats(endpoint_ids: list[str], *, now: dt.datetime | None = None) -> dict[str, tuple[int, int]]:
    """Attempts and successful attempts of each endpoint in the last 24 h: one grouped query over the
    ``(endpoint_id, at)`` index."""
    if not endpoint_ids:
        return {}
    since = (now or timezone.now()) - STATS_WINDOW
    rows = (
        Attempt.objects.filter(endpoint_id__in=endpoint_ids, at__gte=since)
        .order_by()
        .values_list("endpoint_id")
        .annotate(n=Count("id"), ok=Count("id", filter=Q(error=AttemptError.NONE)))
    )
    return {endpoint_id: (n, ok) for endpoint_id, n, ok in rows}


def event_type_get(name: str) -> EventType:
    event_type = EventType.objects.filter(name=name).first()
    if event_type is None:
        raise EventTypeNotFound(f"No event type {name}.")
    return event_type


def event_type_list() -> QuerySet[EventType]:
    return EventType.objects.all()


def message_get(message_id: str) -> Message:
    """A message with its deliveries."""
    message = Message.objects.filter(id=message_id).prefetch_related("deliveries").first()
    if message is None:
        raise MessageNotFound(f"No message {message_id}.")
    return message


def message_list() -> QuerySet[Message]:
    return Message.objects.all()


def attempt_list() -> QuerySet[Attempt]:
    return Attempt.objects.all()


def recovery_get(recovery_id: str) -> Recovery:
    recovery = Recovery.objects.filter(id=recovery_id).first()
    if recovery is None:
        raise RecoveryNotFound(f"No recovery {recovery_id}.")
    return recovery


def endpoint_public_key(endpoint_id: str) -> str:
    """The endpoint's Ed25519 public key (``whpk_…``); ``public_key_not_found`` while ``v1a`` is off."""
    endpoint = endpoint_get(endpoint_id)
    if not endpoint.v1a or not endpoint.signing_key:
        raise PublicKeyNotFound(f"Endpoint {endpoint_id} does not sign with Ed25519 (v1a is off).")
    return secrets.public_key(secrets.decrypt(endpoint.signing_key))
