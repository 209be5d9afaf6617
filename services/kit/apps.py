from __future__ import annotations

from django.apps import AppConfig


class KitConfig(AppConfig):
    name = "services.kit"
    label = "kit"
    verbose_name = "Atrium service kit"

    def ready(self) -> None:
        # Every process (web or worker) configures the one Celery app, so tasks sent
        # from a request carry the request id and go through the same routing.
        import workers.celery  # noqa: F401
        from services.kit import admin_audit, checks, schema  # noqa: F401  (system checks, OpenAPI extensions)

        admin_audit.connect()
