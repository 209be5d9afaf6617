"""Portal tasks (queue ``portal``)."""

from workers.diagnostics import ping_task
from workers.outbox import outbox_relay_task

ping = ping_task("portal")
outbox_relay = outbox_relay_task("portal")
