"""The outbox sweep and retention, one task each per service (each runs in that service's worker, on its own
database)."""

from __future__ import annotations

from typing import Any

from workers.celery import app


def outbox_relay_task(service: str) -> Any:
    """Register ``<service>.outbox_relay``: deliver whatever the in-process relays left behind."""

    @app.task(name=f"{service}.outbox_relay", housekeeping=True)
    def outbox_relay() -> dict[str, int] | None:
        from services.kit.outbox import relay_run

        return relay_run()

    return outbox_relay


def outbox_purge_task(service: str) -> Any:
    """Register ``<service>.outbox_purge``: delete published rows past ATRIUM_OUTBOX_RETENTION_DAYS."""

    @app.task(name=f"{service}.outbox_purge", ignore_result=True, housekeeping=True)
    def outbox_purge() -> int:
        from services.kit.outbox import outbox_purge as purge

        return purge()

    return outbox_purge
