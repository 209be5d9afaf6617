"""Portal tasks (queue ``portal``)."""

from typing import Any

from workers.celery import app
from workers.diagnostics import noop_task, ping_task, probe_task
from workers.outbox import outbox_purge_task, outbox_relay_task

ping = ping_task("portal")
probe = probe_task("portal")
noop = noop_task("portal")
outbox_relay = outbox_relay_task("portal")
outbox_purge = outbox_purge_task("portal")


@app.task(name="portal.catalog_health", ignore_result=True, housekeeping=True)
def catalog_health() -> dict[str, Any]:
    """Poll the health URLs whose check is due; mark instances that stopped heartbeating."""
    from portal.catalog.health import health_poll, instances_mark

    return {**health_poll(), "instances": instances_mark()}


@app.task(name="portal.catalog_health_roll_up", ignore_result=True, housekeeping=True)
def catalog_health_roll_up() -> int:
    """Fold health checks older than CATALOG_HEALTH_RAW_DAYS into hourly counts (uptime keeps them)."""
    from portal.catalog.health import health_roll_up

    return health_roll_up()


@app.task(name="portal.jobs_prune", ignore_result=True, housekeeping=True)
def jobs_prune() -> dict[str, Any]:
    """Delete job dashboard rows past their retention (JOBS_RETENTION_DAYS, JOBS_AGGREGATE_DAYS), in batches."""
    from portal.jobs.retention import jobs_prune as prune

    return prune()


@app.task(name="portal.sso_tokens_clear", ignore_result=True, housekeeping=True)
def sso_tokens_clear() -> int:
    """Delete people's expired sign-in codes and tokens (docs/sso.md)."""
    from portal.identity.oidc import sso_tokens_clear as clear

    return clear()
