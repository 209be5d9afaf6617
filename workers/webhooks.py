"""Webhooks tasks (queue ``webhooks``), run with ``DJANGO_SETTINGS_MODULE=services.webhooks.settings``.

Deliveries are not tasks: the dispatcher (``manage.py webhooks_dispatch``) sends them concurrently. The tasks here
turn events into messages, and do the service's housekeeping.
"""

from __future__ import annotations

from typing import Any

from services.webhooks import services
from workers.celery import app
from workers.diagnostics import noop_task, ping_task, probe_task
from workers.outbox import outbox_purge_task, outbox_relay_task

ping = ping_task("webhooks")
probe = probe_task("webhooks")
noop = noop_task("webhooks")
outbox_relay = outbox_relay_task("webhooks")
outbox_purge = outbox_purge_task("webhooks")


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
