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
