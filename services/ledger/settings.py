"""Settings for the ledger service (database: LEDGER_DATABASE_URL or DATABASE_URL)."""

from pathlib import Path

from services.kit.conf import kit_settings

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
