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
            sso,
        )

        admin_audit.connect()
        sso.connect()
        # OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT or ATRIUM_OTEL_FILE asks for it (nothing at all otherwise):
        # here, before a WSGI handler loads the middleware and before a worker forks its pool.
        from services.kit.telemetry import telemetry_setup

        telemetry_setup()
