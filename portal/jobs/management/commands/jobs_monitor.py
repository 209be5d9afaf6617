"""``manage.py jobs_monitor``: record every task's life cycle from the tracking stream (see portal/jobs/monitor.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from portal.jobs.monitor import Monitor
from services.kit.catalog import agent_stop, process_agent_start


class Command(BaseCommand):
    help = "Record every Celery task's life cycle from the tracking stream into the portal's database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consumer", default=None, help="consumer name in the group (default: host name)")
        parser.add_argument("--batch", type=int, default=None, help="entries per batch (JOBS_MONITOR_BATCH)")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        process_agent_start(
            "jobs-monitor",
            display_name="Job monitor",
            description="Records every Celery task's life cycle from the tracking stream.",
        )
        try:
            Monitor(consumer=options["consumer"], batch=options["batch"]).run(stop)
        finally:
            agent_stop()
