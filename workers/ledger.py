"""Ledger tasks (queue ``ledger``), run with ``DJANGO_SETTINGS_MODULE=services.ledger.settings``."""

from workers.diagnostics import ping_task

ping = ping_task("ledger")
