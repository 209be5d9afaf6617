from __future__ import annotations

from django.apps import AppConfig


class KitConfig(AppConfig):
    name = "services.kit"
    label = "kit"
    verbose_name = "Atrium service kit"

    def ready(self) -> None:
        # Every process (web or worker) configures the one Celery app, so tasks sent
        # from a request carry the request id and go through the same routing.
        from services.kit import (  # noqa: F401  (system checks, OpenAPI extensions)
            admin_audit,
            celery_app,
            checks,
            schema,
        )

        admin_audit.connect()
