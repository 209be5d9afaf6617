"""Periodic tasks run by ``celery -A workers beat``."""

from __future__ import annotations

import os

BEAT_SCHEDULE = {
    # Proves beat → broker → portal worker keeps working (the job dashboard shows it every 5 minutes).
    "portal.ping.beat": {"task": "portal.ping", "schedule": 300.0, "kwargs": {"message": "beat"}},
    "ledger.integrity_check": {"task": "ledger.integrity_check", "schedule": 600.0},
    "ledger.expire_pending": {"task": "ledger.expire_pending", "schedule": 30.0},
    # Outbox sweeps: each service's worker delivers rows its processes' relays could not (broker away,
    # process gone). Normally they find nothing: relays deliver right after commit.
    "portal.outbox_relay": {"task": "portal.outbox_relay", "schedule": 15.0},
    # Service catalog: health checks that are due (each service has its own interval), instance liveness.
    "portal.catalog_health": {"task": "portal.catalog_health", "schedule": 5.0},
    "portal.catalog_health_roll_up": {"task": "portal.catalog_health_roll_up", "schedule": 3600.0},
    # Job dashboard: tasks and events past JOBS_RETENTION_DAYS, chart counts past JOBS_AGGREGATE_DAYS.
    "portal.jobs_prune": {"task": "portal.jobs_prune", "schedule": 3600.0},
    # Single sign-on: people's expired sign-in codes and tokens (each service re-checks sessions every 5 minutes).
    "portal.sso_tokens_clear": {"task": "portal.sso_tokens_clear", "schedule": 3600.0},
    "ledger.outbox_relay": {"task": "ledger.outbox_relay", "schedule": 15.0},
    "payments.outbox_relay": {"task": "payments.outbox_relay", "schedule": 15.0},
    "webhooks.outbox_relay": {"task": "webhooks.outbox_relay", "schedule": 15.0},
    # Outbox retention: published rows past ATRIUM_OUTBOX_RETENTION_DAYS, in each service's database.
    "portal.outbox_purge": {"task": "portal.outbox_purge", "schedule": 3600.0},
    "ledger.outbox_purge": {"task": "ledger.outbox_purge", "schedule": 3600.0},
    "payments.outbox_purge": {"task": "payments.outbox_purge", "schedule": 3600.0},
    "webhooks.outbox_purge": {"task": "webhooks.outbox_purge", "schedule": 3600.0},
    # Webhooks: delivery attempts past WEBHOOKS_ATTEMPT_RETENTION_DAYS (expired leases need no sweep: claims
    # treat them as due).
    "webhooks.attempts_purge": {"task": "webhooks.attempts_purge", "schedule": 3600.0},
    "audit.sign_head": {"task": "audit.sign_head", "schedule": 60.0},
    "audit.archive": {"task": "audit.archive", "schedule": 3600.0},  # a no-op unless AUDIT_ARCHIVE_AUTOMATIC
    # Payments: resume lost work (at once where a worker died holding a lease: every 5 s bounds how long a killed
    # worker's payments wait when nothing else runs — PAYMENTS_LEASE_SECONDS + 5 s), reconcile with the ledger,
    # forget idempotency keys after 24 h.
    "payments.sweep": {"task": "payments.sweep", "schedule": 5.0},
    "payments.reconcile": {
        "task": "payments.reconcile",
        "schedule": float(os.environ.get("PAYMENTS_RECONCILE_SECONDS", 600)),
    },
    "payments.idempotency_purge": {"task": "payments.idempotency_purge", "schedule": 3600.0},
    # Webhooks: recoveries whose webhooks.recover message was lost are sent again.
    "webhooks.recoveries_resume": {"task": "webhooks.recoveries_resume", "schedule": 60.0},
}

# Tasks run every minute or more often: Celery's INFO lines about them (sent, received, succeeded) are DEBUG.
QUIET_TASKS = tuple(sorted({entry["task"] for entry in BEAT_SCHEDULE.values() if entry["schedule"] <= 60}))
