"""Payments tasks (queue ``payments``), run with ``DJANGO_SETTINGS_MODULE=services.payments.settings``."""

from workers.diagnostics import ping_task

ping = ping_task("payments")
