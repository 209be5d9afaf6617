"""Payments tasks (queue ``payments``), run with ``DJANGO_SETTINGS_MODULE=services.payments.settings``."""

from workers.diagnostics import ping_task
from workers.outbox import outbox_relay_task

ping = ping_task("payments")
outbox_relay = outbox_relay_task("payments")
