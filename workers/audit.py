"""Audit tasks (queue ``audit``), run with ``DJANGO_SETTINGS_MODULE=portal.settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from portal.audit import services
from portal.audit.archive import retention_cutoff
from portal.audit.chain import IngestDeferred
from portal.audit.parked import AuditEventsParked
from services.kit.telemetry import outbox_events_link
from workers.celery import app
from workers.diagnostics import noop_task, ping_task, probe_task

ping = ping_task("audit")
probe = probe_task("audit")
noop = noop_task("audit")


@app.task(name="audit.ingest", bind=True, max_retries=None, acks_late=True, autoretry_for=(IngestDeferred,))
def ingest(self: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Chain a batch of events from a service's outbox (idempotent on event id). The outbox relays send it
    with ``ignore_result`` (nobody waits for their batches); a caller that wants the counts can wait for them.

    One bad event never stops the others (``portal.audit.chain``): it is parked in its place and the rest are
    chained. The task then fails with :class:`AuditEventsParked` (JSON-safe: a message only), so the park shows
    in the job dashboard's failures; running it again changes nothing (every event is a duplicate by then).
    With the portal's database away, the whole batch is retried later, with backoff, as often as it takes.
    """
    outbox_events_link(events)  # OpenTelemetry (when on): links to the contexts the events were created in
    result = services.event_ingest(events=events)
    if result.parked or result.rejected:
        shown = [f"{p['service']}#{p['service_seq']} {p['id']} ({p['reason'][:200]})" for p in result.parked[:5]]
        shown += [reason[:200] for reason in result.reasons[:5]]
        raise AuditEventsParked(
            f"{len(result.parked)} event(s) parked in their place and {result.rejected} kept aside in "
            f"audit_rejected; {result.inserted - len(result.parked)} chained: " + "; ".join(shown)
        )
    return {
        "inserted": result.inserted,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
    }


@app.task(name="audit.sign_head", housekeeping=True)
def sign_head() -> dict[str, Any] | None:
    """Sign the tree head if the log grew since the last one."""
    head = services.head_sign()
    return None if head is None else {"tree_size": head.tree_size, "root_hash": head.root_hash}


# Archival streams, proves, writes, re-reads and deletes up to a million events per file (~22 s per 100,000 in
# docs/benchmarks.md), more than the default 300 s limit allows once a backlog builds: its own limits. An archive
# cut short is resumed by the next run (archive_run finishes an interrupted deletion first). The audit worker's
# termination grace and the broker's visibility timeout exceed this (tests/deploy/test_worker_safety.py; the chart's
# policy reads these constants from this source: devtools/chart_policy.py).
ARCHIVE_SOFT_TIME_LIMIT = 29 * 60
ARCHIVE_TIME_LIMIT = 30 * 60


@app.task(
    name="audit.archive", housekeeping=True, soft_time_limit=ARCHIVE_SOFT_TIME_LIMIT, time_limit=ARCHIVE_TIME_LIMIT
)
def archive() -> dict[str, Any]:
    """Retention: archive what is older than AUDIT_RETENTION_DAYS, when AUDIT_ARCHIVE_AUTOMATIC is on.

    Off by default: the files it writes under AUDIT_ARCHIVE_DIR are then the only copy of those events,
    so that directory must be durable (a mounted volume synced to write-once storage) before it is enabled.
    """
    if not settings.AUDIT_ARCHIVE_AUTOMATIC:
        return {"archived": 0, "enabled": False}
    done = services.archive_run(before=retention_cutoff(), directory=Path(settings.AUDIT_ARCHIVE_DIR))
    return {"archived": sum(a.events for a in done), "files": [a.path for a in done], "enabled": True}
