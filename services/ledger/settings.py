"""Settings for the ledger service (database: LEDGER_DATABASE_URL or DATABASE_URL)."""

from pathlib import Path

from services.kit.conf import env, kit_settings

BASE_DIR = Path(__file__).resolve().parent

globals().update(
    kit_settings(
        service="ledger",
        base_dir=BASE_DIR,
        root_urlconf="services.ledger.urls",
        wsgi_application="services.ledger.wsgi.application",
        apps=["services.ledger"],
        celery_imports=["workers.ledger"],
    )
)

# Request body limits (413 payload_too_large above them, chunked bodies included): 1 MiB for every route (an
# account or a transaction is a few KB), 8 MiB for POST transactions/batch (1,000 transactions of up to ~8 KB).
ATRIUM_MAX_BODY_BYTES = env.int("ATRIUM_MAX_BODY_BYTES", default=1024 * 1024)
LEDGER_MAX_BATCH_BODY_BYTES = env.int("LEDGER_MAX_BATCH_BODY_BYTES", default=8 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(ATRIUM_MAX_BODY_BYTES, LEDGER_MAX_BATCH_BODY_BYTES)

# One OpenAPI enum per choice set (debit/credit is shared by directions and normal balances).
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {  # noqa: F821
    "DebitCreditEnum": "services.ledger.models.Direction",
    "AccountStatusEnum": "services.ledger.models.AccountStatus",
    "TransactionStatusEnum": "services.ledger.models.TransactionStatus",
    "BatchItemStatusEnum": ["created", "exists", "error"],
}
