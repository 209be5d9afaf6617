"""Webhooks writes of messages through the API: send one (``messages_create``, its refusals on record) and send
one again to an endpoint (resend)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_record
from services.webhooks import queries
from services.webhooks.errors import EndpointDisabled, EndpointNotFound, EndpointNotSubscribed, MessageNotFound
from services.webhooks.models import AttemptTrigger, Delivery, DeliveryState, Endpoint, Message
from services.webhooks.selectors import pattern_matches
from services.webhooks.services.messages import messages_create
from services.webhooks.services.refusals import refusal_recorded


def message_send(
    *,
    source: str,
    type: str,
    data: Any,
    channels: list[str] | None = None,
    event_id: str | None = None,
    occurred_at: dt.datetime | None = None,
) -> Message:
    """A message from an API caller (``source``: its client id): created and fanned out, or the one already made
    for the same ``event_id``; a refusal (unknown type, data not valid against the type's schema) on record."""
    with refusal_recorded("webhooks.message.created", object_type="message", type=type, event_id=event_id or ""):
        message, _ = messages_create(
            type=type, data=data, channels=channels, event_id=event_id, occurred_at=occurred_at, source=source
        )
    return message


def message_resend(*, message_id: str, endpoint_id: str) -> Delivery:
    """Send a message to an endpoint again, now: its delivery (made if there was none) is pending again with a
    fresh retry schedule, its next attempts marked ``manual``."""
    with refusal_recorded("webhooks.message.resent", object_type="message", object_id=message_id, endpoint=endpoint_id):
        with transaction.atomic():
            message = Message.objects.filter(id=message_id).first()
            if message is None:
                raise MessageNotFound(f"No message {message_id}.")
            endpoint = Endpoint.objects.filter(id=endpoint_id).first()
            if endpoint is None:
                raise EndpointNotFound(f"No endpoint {endpoint_id}.")
            if not endpoint.enabled:
                raise EndpointDisabled(
                    f"Endpoint {endpoint_id} is disabled ({endpoint.disabled_reason}); enable it first.",
                    extra={"disabled_reason": endpoint.disabled_reason},
                )
            if not _subscribed(endpoint, message):
                raise EndpointNotSubscribed(
                    f"Endpoint {endpoint_id} does not receive {message.type} on channels "
                    f"{message.channels or '[]'}: its filter would never have sent it.",
                )
            now = timezone.now()
            delivery, created = Delivery.objects.select_for_update().get_or_create(
                message=message,
                endpoint=endpoint,
                defaults={"msg_seq": message.seq, "created_at": now},
            )
            previous = None if created else delivery.state
            delivery.state = DeliveryState.PENDING
            delivery.attempts = 0
            delivery.next_attempt_at = now
            delivery.leased_until = None
            delivery.trigger = AttemptTrigger.MANUAL
            delivery.updated_at = now
            delivery.save()
            audit_record(
                "webhooks.message.resent",
                object_type="message",
                object_id=message_id,
                changes={"delivery_state": [previous, DeliveryState.PENDING]},
                metadata={"endpoint": endpoint_id, "type": message.type},
            )
            queries.notify_due()
    return delivery


def _subscribed(endpoint: Endpoint, message: Message) -> bool:
    if not any(pattern_matches(p, message.type) for p in endpoint.event_types):
        return False
    return not endpoint.channels or bool(set(endpoint.channels) & set(message.channels))
