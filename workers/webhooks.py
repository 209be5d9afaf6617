"""Webhooks tasks (queue ``webhooks``), run with ``DJANGO_SETTINGS_MODULE=services.webhooks.settings``.

Deliveries are not tasks: the dispatcher (``manage.py webhooks_dispatch``) sends them concurrently. The tasks here
turn events into messages, and do the service's housekeeping.
"""

from __future__ import annotations

from workers.diagnostics import noop_task, ping_task, probe_task
from workers.outbox import outbox_purge_task, outbox_relay_task

ping = ping_task("webhooks")
probe = probe_task("webhooks")
noop = noop_task("webhooks")
outbox_relay = outbox_relay_task("webhooks")
outbox_purge = outbox_purge_task("webhooks")
