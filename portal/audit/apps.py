from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "portal.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from portal.audit.metrics import AuditCollector
        from services.kit.metrics import REGISTRY

        # With PROMETHEUS_MULTIPROC_DIR the kit serves only the processes' shared files (REGISTRY is None).
        if REGISTRY is not None:
            REGISTRY.register(AuditCollector())
