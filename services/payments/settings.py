"""Settings for the payments service (database: PAYMENTS_DATABASE_URL or DATABASE_URL)."""

from pathlib import Path

from services.kit.conf import kit_settings

BASE_DIR = Path(__file__).resolve().parent

globals().update(
    kit_settings(
        service="payments",
        base_dir=BASE_DIR,
        root_urlconf="services.payments.urls",
        wsgi_application="services.payments.wsgi.application",
        apps=["services.payments"],
        celery_imports=["workers.payments"],
    )
)

from services.kit.conf import env  # noqa: E402

# The ledger, reached over HTTP with this service's own machine credentials (PAYMENTS_CLIENT_ID / _SECRET).
LEDGER_URL = env.str("LEDGER_URL", default="http://127.0.0.1:8001")
PAYMENTS_LEDGER_TIMEOUT = env.float("PAYMENTS_LEDGER_TIMEOUT", default=5.0)
PAYMENTS_LEDGER_RETRIES = env.int("PAYMENTS_LEDGER_RETRIES", default=2)  # within one attempt; attempts below
# Request body limit (413 payload_too_large above it, chunked bodies included): a payment is at most ~170 KB of
# JSON (metadata at its limits, every character escaped); 256 KiB leaves room and refuses anything larger.
ATRIUM_MAX_BODY_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("ATRIUM_MAX_BODY_BYTES", default=256 * 1024)
# Currencies payments accept: a subset of the kit's ISO 4217 list (services/kit/currencies.py; a system check
# refuses any other code).
PAYMENTS_CURRENCIES = env.list(
    "PAYMENTS_CURRENCIES", default=["EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "JPY", "CAD", "AUD"]
)
# The largest amount a payment may be created with, in minor units (422 amount_too_large above it): a hard cap
# against absurd amounts, before any screening rule. PAYMENTS_MAX_AMOUNTS overrides it per currency, e.g.
# "JPY=100000000000,KWD=1000000000". (Screening's currency limits, edited in the admin, come on top.)
PAYMENTS_MAX_AMOUNT = env.int("PAYMENTS_MAX_AMOUNT", default=1_000_000_000_000)
PAYMENTS_MAX_AMOUNTS = env.dict("PAYMENTS_MAX_AMOUNTS", cast={"value": int}, default={})
# Idempotency keys: kept this long; an in-flight key whose request died is taken over after the lock.
PAYMENTS_IDEMPOTENCY_TTL_HOURS = env.int("PAYMENTS_IDEMPOTENCY_TTL_HOURS", default=24)
PAYMENTS_IDEMPOTENCY_LOCK_SECONDS = env.int("PAYMENTS_IDEMPOTENCY_LOCK_SECONDS", default=60)
# Processing: a worker leases a payment while it works on it; attempts that meet an unavailable ledger are
# retried with exponential backoff and jitter (base doubling up to the max), then the payment fails.
PAYMENTS_LEASE_SECONDS = env.int("PAYMENTS_LEASE_SECONDS", default=60)
PAYMENTS_MAX_ATTEMPTS = env.int("PAYMENTS_MAX_ATTEMPTS", default=40)
PAYMENTS_RETRY_BASE_SECONDS = env.float("PAYMENTS_RETRY_BASE_SECONDS", default=1.0)
PAYMENTS_RETRY_MAX_SECONDS = env.float("PAYMENTS_RETRY_MAX_SECONDS", default=60.0)
# Workers claim due payments in batches of up to PAYMENTS_BATCH; at most PAYMENTS_DRAINERS drain at once, each for
# up to PAYMENTS_DRAIN_SECONDS per task. A web process wakes them at most once per PAYMENTS_KICK_DELAY seconds
# (0: a message per payment created).
PAYMENTS_BATCH = env.int("PAYMENTS_BATCH", default=200)
PAYMENTS_DRAINERS = env.int("PAYMENTS_DRAINERS", default=2)
PAYMENTS_DRAIN_SECONDS = env.float("PAYMENTS_DRAIN_SECONDS", default=20.0)
PAYMENTS_KICK_DELAY = env.float("PAYMENTS_KICK_DELAY", default=0.1)
# After a batch smaller than PAYMENTS_BATCH a drain waits this long before its next claim, so that batches gather.
PAYMENTS_DRAIN_GATHER = env.float("PAYMENTS_DRAIN_GATHER", default=0.1)
# The sweeper resumes open payments untouched for this long whose worker is gone (no lease, no retry due).
PAYMENTS_STALE_SECONDS = env.int("PAYMENTS_STALE_SECONDS", default=30)
# A payment that meets an unexpected error in a batch is taken out of it and processed alone (payments.process),
# with backoff; after this many unexpected errors it is parked: failed with processing_error, its hold voided.
PAYMENTS_PROCESSING_ATTEMPTS = env.int("PAYMENTS_PROCESSING_ATTEMPTS", default=3)
# Reconciliation against the ledger: payments created in this window (ending a minute ago).
PAYMENTS_RECONCILE_WINDOW_HOURS = env.int("PAYMENTS_RECONCILE_WINDOW_HOURS", default=48)

# Outbox topics: audit events to the portal; payment domain events (payment.<status>) to their consumer.
ATRIUM_OUTBOX_TOPICS = {"audit": "audit.ingest", "events": "payments.domain_event"}
