from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "portal.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from portal.audit import checks  # noqa: F401  (registers system checks)
        from portal.audit.metrics import AuditCollector
        from services.kit.metrics import collector_register

        collector_register(AuditCollector())
