"""Recovery of an endpoint's failed messages: requested through the API (a ``Recovery`` row, queued), carried out
by the ``webhooks.recover`` task in bounded batches (:func:`recovery_step`), each batch one transaction that moves
the recovery's cursor with the deliveries it made pending: a crash resumes after the last committed batch, and no
delivery is recovered twice by one recovery. Audited when requested (the caller) and when finished (the service,
under the request id of the request that asked)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_context, audit_event
from services.kit.context import request_id_var
from services.kit.logs import get_logger
from services.kit.outbox import outbox_put
from services.webhooks import queries
from services.webhooks.errors import EndpointDisabled, EndpointNotFound, InvalidRecoveryWindow
from services.webhooks.models import Endpoint, Recovery, RecoveryState
from services.webhooks.services.refusals import refusal_recorded

log = get_logger(__name__)

SERVICE_ACTOR = {"type": "system", "id": "webhooks", "display": "webhooks"}


def recovery_request(*, endpoint_id: str, since: dt.datetime, until: dt.datetime | None = None) -> Recovery:
    """Queue the recovery of an endpoint's failed deliveries of messages created in [since, until) (until:
    now); the ``webhooks.recover`` task does it in bounded batches."""
    with refusal_recorded("webhooks.recovery.requested", object_type="endpoint", object_id=endpoint_id):
        now = timezone.now()
        until = until or now
        if since >= until or since > now:
            raise InvalidRecoveryWindow(
                "since must be before until (default now) and not in the future.",
                extra={"since": since.isoformat(), "until": until.isoformat()},
            )
        with transaction.atomic():
            endpoint = Endpoint.objects.select_for_update().filter(id=endpoint_id).first()
            if endpoint is None:
                raise EndpointNotFound(f"No endpoint {endpoint_id}.")
            if not endpoint.enabled:
                raise EndpointDisabled(
                    f"Endpoint {endpoint_id} is disabled ({endpoint.disabled_reason}); enable it first.",
                    extra={"disabled_reason": endpoint.disabled_reason},
                )
            context = audit_context()
            first = queries.first_seq_since(since)
            recovery = Recovery.objects.create(
                endpoint=endpoint,
                since=since,
                until=until,
                cursor_seq=first - 1 if first is not None else 0,
                requested_by=context["actor"],
                request_id=request_id_var.get() or "",
                created_at=now,
                updated_at=now,
            )
            outbox_put(
                "audit",
                audit_event(
                    "webhooks.recovery.requested",
                    object_type="recovery",
                    object_id=recovery.id,
                    metadata={"endpoint": endpoint_id, "since": since, "until": until},
                    context=context,
                ),
            )
            transaction.on_commit(lambda: recover_send(recovery.id))
    return recovery


def recover_send(recovery_id: str, *, countdown: float | None = None) -> bool:
    """Send ``webhooks.recover`` for the recovery; False if the broker refused (it stays ``queued``)."""
    from services.kit.celery_app import app

    try:
        app.send_task(
            "webhooks.recover",
            args=[recovery_id],
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
        )
    except Exception as exc:
        log.warning("webhooks.recover_send_failed", recovery_id=recovery_id, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def recovery_step(*, recovery_id: str, batch: int | None = None) -> bool:
    """One bounded batch of a recovery: the endpoint's next ``batch`` failed deliveries (in message order, after
    the recovery's cursor) whose messages fall in the window become pending now (trigger ``recovery``); the
    cursor moves past them in the same transaction, so a crash resumes where the last batch committed. Return
    True when the recovery is finished (done, failed, or unknown)."""
    batch = batch or settings.WEBHOOKS_RECOVERY_BATCH
    with transaction.atomic():
        recovery = Recovery.objects.select_for_update().filter(id=recovery_id).first()
        if recovery is None or recovery.state in (RecoveryState.DONE, RecoveryState.FAILED):
            return True
        now = timezone.now()
        made, last_seq, picked = queries.deliveries_recover(
            endpoint_id=recovery.endpoint_id,
            after_seq=recovery.cursor_seq,
            since=recovery.since,
            until=recovery.until or recovery.created_at,
            limit=batch,
            now=now,
        )
        recovery.recovered += made
        if last_seq is not None:
            recovery.cursor_seq = max(recovery.cursor_seq, last_seq)
        recovery.updated_at = now
        finished = picked < batch
        recovery.state = RecoveryState.DONE if finished else RecoveryState.RUNNING
        if finished:
            recovery.finished_at = now
            outbox_put(
                "audit",
                audit_event(
                    "webhooks.recovery.finished",
                    object_type="recovery",
                    object_id=recovery.id,
                    metadata={"endpoint": recovery.endpoint_id, "recovered": recovery.recovered},
                    actor=SERVICE_ACTOR,
                    request_id=recovery.request_id,
                ),
            )
        recovery.save()
        if made:
            queries.notify_due()
    return finished


RESUME_AFTER_SECONDS = 60.0


def recoveries_resume(*, stale_seconds: float = RESUME_AFTER_SECONDS, limit: int = 100) -> list[str]:
    """Send ``webhooks.recover`` again for recoveries still ``queued`` or ``running`` whose last batch is older than
    ``stale_seconds``: their message was lost (the broker was away when it was requested, or a worker lost it).
    Running one twice is safe: each batch locks the recovery and goes on from its committed cursor."""
    cutoff = timezone.now() - dt.timedelta(seconds=stale_seconds)
    stale = list(
        Recovery.objects.filter(state__in=[RecoveryState.QUEUED, RecoveryState.RUNNING], updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("id", flat=True)[:limit]
    )
    for recovery_id in stale:
        recover_send(recovery_id)
    if stale:
        log.info("webhooks.recoveries_resumed", recoveries=stale)
    return stale
