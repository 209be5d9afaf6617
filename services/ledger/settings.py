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

# A batch of 1,000 transactions is larger than the kit's 1 MiB default.
ATRIUM_MAX_BODY_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("ATRIUM_MAX_BODY_BYTES", default=8 * 1024 * 1024)

# One OpenAPI enum per choice set (debit/credit is shared by directions and normal balances).
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {  # noqa: F821
    "DebitCreditEnum": "services.ledger.models.Direction",
    "AccountStatusEnum": "services.ledger.models.AccountStatus",
    "TransactionStatusEnum": "services.ledger.models.TransactionStatus",
    "BatchItemStatusEnum": ["created", "exists", "error"],
}
