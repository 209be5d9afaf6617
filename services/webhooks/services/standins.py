"""Thin stand-ins for the endpoint, resend and recovery writes (the admin helper's module; delete it when the api
helper's services land)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from services.kit.audit import audit_record
from services.webhooks import secrets
from services.webhooks.errors import EndpointNotFound, MessageNotFound
from services.webhooks.models import Delivery, DeliveryState, Endpoint, Message, Recovery

# ----------------------------------------------------------------------------------------------------------------
# THIN STAND-INS (the admin helper's section): the admin's actions and make up's demo subscription need these
# writes before the api helper's services land. Same names and keyword arguments as the contract; the api
# helper's versions (URL checks, metadata limits, refusals audited, the recovery task) replace this section.
# ----------------------------------------------------------------------------------------------------------------


def _endpoint_locked(endpoint_id: str) -> Endpoint:
    endpoint = Endpoint.objects.select_for_update().filter(id=endpoint_id).first()
    if endpoint is None:
        raise EndpointNotFound(f"No endpoint {endpoint_id}.")
    return endpoint


def _notify_due() -> None:
    with connection.cursor() as cursor:
        cursor.execute("NOTIFY webhooks_due")


def endpoint_create(
    *,
    url: str,
    event_types: list[str],
    description: str = "",
    metadata: dict[str, Any] | None = None,
    secret: str | None = None,
    **fields: Any,
) -> Endpoint:
    """Subscribe ``url`` to ``event_types`` with ``secret`` (or a new one), stored encrypted; audited."""
    with transaction.atomic():
        endpoint = Endpoint.objects.create(
            url=url,
            event_types=event_types,
            description=description,
            metadata=metadata or {},
            secret=secrets.encrypt(secret or secrets.secret_new()),
            **fields,
        )
        audit_record(
            "webhooks.endpoint.created",
            object_type="endpoint",
            object_id=endpoint.pk,
            metadata={"url": url, "event_types": event_types},
        )
    return endpoint


def endpoint_update(*, endpoint_id: str, **fields: Any) -> Endpoint:
    with transaction.atomic():
        endpoint = _endpoint_locked(endpoint_id)
        changes = {name: [getattr(endpoint, name), value] for name, value in fields.items()}
        for name, value in fields.items():
            setattr(endpoint, name, value)
        endpoint.updated_at = timezone.now()
        endpoint.save(update_fields=[*fields, "updated_at"])
        audit_record("webhooks.endpoint.updated", object_type="endpoint", object_id=endpoint_id, changes=changes)
    return endpoint


def endpoint_enable(*, endpoint_id: str) -> Endpoint:
    """Deliver to the endpoint again (its failure clock starts afresh); audited."""
    with transaction.atomic():
        endpoint = _endpoint_locked(endpoint_id)
        before = endpoint.disabled_reason
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = True, "", None
        endpoint.first_failure_at, endpoint.updated_at = None, timezone.now()
        endpoint.save(update_fields=["enabled", "disabled_reason", "disabled_at", "first_failure_at", "updated_at"])
        audit_record(
            "webhooks.endpoint.enabled", object_type="endpoint", object_id=endpoint_id, metadata={"was": before}
        )
        _notify_due()
    return endpoint


def endpoint_disable(*, endpoint_id: str, reason: str = "manual") -> Endpoint:
    """Stop delivering to the endpoint, with a reason; audited."""
    with transaction.atomic():
        endpoint = _endpoint_locked(endpoint_id)
        now = timezone.now()
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at, endpoint.updated_at = False, reason, now, now
        endpoint.save(update_fields=["enabled", "disabled_reason", "disabled_at", "updated_at"])
        audit_record(
            "webhooks.endpoint.disabled", object_type="endpoint", object_id=endpoint_id, metadata={"reason": reason}
        )
    return endpoint


def message_resend(*, message_id: str, endpoint_id: str) -> Delivery:
    """Deliver ``message_id`` to ``endpoint_id`` again, now (its delivery back to pending, attempts from 0)."""
    with transaction.atomic():
        message = Message.objects.filter(id=message_id).first()
        if message is None:
            raise MessageNotFound(f"No message {message_id}.")
        endpoint = _endpoint_locked(endpoint_id)
        now = timezone.now()
        delivery, _ = Delivery.objects.update_or_create(
            message=message,
            endpoint=endpoint,
            defaults={
                "msg_seq": message.seq,
                "state": DeliveryState.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "leased_until": None,
                "trigger": "manual",
                "updated_at": now,
            },
        )
        audit_record(
            "webhooks.message.resent",
            object_type="message",
            object_id=message_id,
            metadata={"endpoint": endpoint_id},
        )
        _notify_due()
    return delivery


def recovery_request(*, endpoint_id: str, since: dt.datetime, until: dt.datetime | None = None) -> Recovery:
    """Ask for every failed delivery of the endpoint in ``[since, until)`` to be sent again (a background job)."""
    with transaction.atomic():
        endpoint = _endpoint_locked(endpoint_id)
        recovery = Recovery.objects.create(endpoint=endpoint, since=since, until=until or timezone.now())
        audit_record(
            "webhooks.recovery.requested",
            object_type="recovery",
            object_id=recovery.pk,
            metadata={"endpoint": endpoint_id, "since": since.isoformat()},
        )
    return recovery
