"""Webhooks reads for the API and the admin: endpoints with their 24 h stats, event types, messages with their
deliveries, attempts, recoveries."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from services.webhooks import secrets
from services.webhooks.errors import (
    EndpointNotFound,
    EventTypeNotFound,
    MessageNotFound,
    PublicKeyNotFound,
    RecoveryNotFound,
)
from services.webhooks.models import Attempt, AttemptError, Delivery, Endpoint, EventType, Message, Recovery

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


# ----------------------------------------------------------------------------------------------------------------
# The admin's reads (services/webhooks/admin.py; the admin helper's section of this module)
# ----------------------------------------------------------------------------------------------------------------

SUCCESS_WINDOW = STATS_WINDOW  # the endpoints' success rate is over the same 24 h as the API's stats


def _attempt_count(since: dt.datetime, *, succeeded: bool) -> Coalesce:
    """Attempts to the outer endpoint since ``since`` (only successful ones: ``error`` empty), as a subquery on the
    ``(endpoint_id, at)`` index."""
    attempts = Attempt.objects.filter(endpoint_id=OuterRef("pk"), at__gte=since)
    if succeeded:
        attempts = attempts.filter(error="")
    counted = attempts.order_by().values("endpoint_id").annotate(n=Count("id")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def endpoint_admin_list(now: dt.datetime | None = None) -> QuerySet[Endpoint]:
    """Endpoints with ``attempts_24h`` and ``succeeded_24h`` (their success rate over the last 24 hours)."""
    since = (now or timezone.now()) - SUCCESS_WINDOW
    return Endpoint.objects.annotate(
        attempts_24h=_attempt_count(since, succeeded=False),
        succeeded_24h=_attempt_count(since, succeeded=True),
    )


def endpoint_deliveries(endpoint_id: str, limit: int = 50) -> list[Delivery]:
    """An endpoint's latest deliveries, newest first, with their messages."""
    return list(Delivery.objects.filter(endpoint_id=endpoint_id).select_related("message").order_by("-msg_seq")[:limit])


def endpoint_recoveries(endpoint_id: str, limit: int = 20) -> list[Recovery]:
    return list(Recovery.objects.filter(endpoint_id=endpoint_id).order_by("-created_at")[:limit])


def endpoint_choices() -> list[tuple[str, str]]:
    """``(id, "id url")`` of every endpoint, for the admin's resend form."""
    return [(e.id, f"{e.id}  {e.url}") for e in Endpoint.objects.order_by("url").only("id", "url")[:1000]]


def message_admin_list() -> QuerySet[Message]:
    return Message.objects.defer("body", "payload")


def message_deliveries(message_id: str) -> QuerySet[Delivery]:
    """A message's delivery to each endpoint (the admin's inline)."""
    return Delivery.objects.filter(message_id=message_id).select_related("endpoint").order_by("endpoint__url")


def delivery_admin_list() -> QuerySet[Delivery]:
    return Delivery.objects.select_related("endpoint", "message")


def attempt_admin_list() -> QuerySet[Attempt]:
    return Attempt.objects.all()


def recovery_admin_list() -> QuerySet[Recovery]:
    return Recovery.objects.select_related("endpoint")


def event_type_admin_list() -> QuerySet[EventType]:
    return EventType.objects.all()
