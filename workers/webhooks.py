"""Webhooks tasks (queue ``webhooks``), run with ``DJANGO_SETTINGS_MODULE=services.webhooks.settings``.

Deliveries are not tasks: the dispatcher (``manage.py webhooks_dispatch``) sends them concurrently. The tasks here
turn events into messages, and do the service's housekeeping.
"""

from __future__ import annotations

from typing import Any

from services.kit.telemetry import outbox_events_link
from services.webhooks import services
from services.webhooks.errors import IngestDeferred, IngestEventsFailed
from services.webhooks.services import messages_ingest
from services.webhooks.services.retention import attempts_purge as attempts_purge_run
from workers.celery import app
from workers.diagnostics import noop_task, ping_task, probe_task
from workers.outbox import outbox_purge_task, outbox_relay_task

ping = ping_task("webhooks")
probe = probe_task("webhooks")
noop = noop_task("webhooks")
outbox_relay = outbox_relay_task("webhooks")
outbox_purge = outbox_purge_task("webhooks")


@app.task(
    name="webhooks.ingest",
    acks_late=True,
    ignore_result=True,
    max_retries=None,
    autoretry_for=(IngestDeferred,),
)
def ingest(events: list[Any]) -> dict[str, int]:
    """The domain events payments and the ledger relay from their outboxes (topic ``events``) become messages,
    fanned out to the endpoints that want them (``services.webhooks.services.messages``).

    Idempotent on the event id (a redelivered batch creates nothing), so late acks are safe: a worker killed
    mid-batch leaves it to be run again. Each event is handled under the request id it carries (its log lines,
    the job's links to requests and objects). An unreadable event or one of an unknown type is dropped with a
    log line; one that makes the write fail is isolated and dropped alone (the task then fails with
    :class:`IngestEventsFailed`, for the job dashboard): neither stops the others. With the
    database away, the whole batch is retried later, with backoff, as often as it takes.
    """
    outbox_events_link(events)  # OpenTelemetry (when on): links to the contexts the events were created in
    result = messages_ingest(events)
    if result.failed:
        raise IngestEventsFailed(
            f"{result.failed} event(s) failed and were dropped, {len(result.created)} message(s) created: "
            + "; ".join(result.reasons[:5])
        )
    return result.as_dict()


# ------------------------------------------------------------------------------------------------ api: recovery


@app.task(name="webhooks.recover", acks_late=True)
def recover(recovery_id: str) -> dict[str, Any]:
    """Recover an endpoint's failed deliveries (``POST /api/v1/endpoints/{id}/recover``) one bounded batch at a
    time (``WEBHOOKS_RECOVERY_BATCH``): each run commits one batch with the recovery's cursor, then sends itself
    again until none is left. A worker killed mid-batch lost nothing: its message comes back (late ack) and the
    run resumes after the last committed batch."""
    finished = services.recovery_step(recovery_id=recovery_id)
    if not finished:
        services.recover_send(recovery_id)
    return {"recovery": recovery_id, "finished": finished}


@app.task(name="webhooks.recoveries_resume", housekeeping=True)
def recoveries_resume() -> list[str]:
    """Send ``webhooks.recover`` again for recoveries whose message was lost (queued or running, no batch for a
    minute): a recovery requested while the broker was away still runs."""
    return services.recoveries_resume()


@app.task(name="webhooks.attempts_purge", ignore_result=True, housekeeping=True)
def attempts_purge() -> int:
    """Delete delivery attempts past WEBHOOKS_ATTEMPT_RETENTION_DAYS (batches on the BRIN index of ``at``)."""
    return attempts_purge_run()
