"""Portal tasks (queue ``portal``)."""

from workers.diagnostics import ping_task

ping = ping_task("portal")
