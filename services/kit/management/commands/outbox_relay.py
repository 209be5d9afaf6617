"""``manage.py outbox_relay``: deliver this service's outbox continuously (one process per service).

Polls every ``--interval`` seconds (default ``ATRIUM_OUTBOX_RELAY_INTERVAL``, 0.5 s) with a query on the
partial index of unpublished rows, so events leave shortly after their commit while web processes do
no relay work at all. Several relays of one service may run: they take turns through an advisory lock.
Stops cleanly on SIGTERM/SIGINT; a broker or database outage is logged and retried with backoff.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connection

from services.kit.catalog import agent_stop, relay_agent_start
from services.kit.logs import get_logger
from services.kit.outbox import relay_run

log = get_logger("atrium.outbox")


class Command(BaseCommand):
    help = "Publish this service's outbox events to their queues, continuously (or once with --once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between polls (default 0.5, ATRIUM_OUTBOX_RELAY_INTERVAL)",
        )
        parser.add_argument("--once", action="store_true", help="deliver what is pending, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        from django.conf import settings

        interval = options["interval"] or float(getattr(settings, "ATRIUM_OUTBOX_RELAY_INTERVAL", 0.5))
        stopping: list[int] = []

        def stop(signum: int, frame: Any) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("outbox.relay_started", interval=interval)
        if not options["once"]:
            relay_agent_start()
        backoff = interval
        while not stopping:
            try:
                close_old_connections()
                result = relay_run()
                backoff = interval
                if options["once"]:
                    break
                if not result or not any(result.values()):
                    time.sleep(interval)
            except Exception as exc:  # broker or database away: keep the rows, try again later
                log.warning("outbox.relay_failed", error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                connection.close()
                if options["once"]:
                    raise
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        if not options["once"]:
            agent_stop()
        log.info("outbox.relay_stopped")
