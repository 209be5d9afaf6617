"""``manage.py webhooks_dispatch``: the webhooks dispatcher, one asyncio process (``services/webhooks/dispatch.py``).

Runs until SIGTERM/SIGINT: it stops claiming, lets what is in flight finish (a few seconds), writes the results
and lets go of the leases of the rest. ``--once`` sends what is due and exits when nothing is left in flight;
``--max-seconds`` bounds a run (tests, scripts). It registers in the catalog as ``dispatcher-webhooks``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from services.kit.catalog import agent_stop, process_agent_start
from services.webhooks.dispatch import dispatch_run


class Command(BaseCommand):
    help = "Deliver due webhook messages to their endpoints, continuously (or once with --once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="send what is due, then exit when idle")
        parser.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["once"]:
            process_agent_start(
                "dispatcher-webhooks",
                display_name="Webhooks dispatcher",
                description="Sends due webhook deliveries to their endpoints (asyncio, concurrent, SSRF-guarded).",
                role="other",
            )
        try:
            dispatch_run(once=options["once"], max_seconds=options["max_seconds"])
        finally:
            if not options["once"]:
                agent_stop()
