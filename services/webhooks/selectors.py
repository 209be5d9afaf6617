"""Webhooks reads for the API and the admin."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from services.webhooks.models import Attempt, Delivery, Endpoint, EventType, Message, Recovery

# ----------------------------------------------------------------------------------------------------------------
# The admin's reads (services/webhooks/admin.py; the admin helper's section of this module)
# ----------------------------------------------------------------------------------------------------------------

SUCCESS_WINDOW = dt.timedelta(hours=24)  # the endpoints' success rate is over this window


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
