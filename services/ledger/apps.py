from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "services.ledger"
    label = "ledger"
    verbose_name = "Ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from services.kit.metrics import REGISTRY
        from services.ledger.integrity import IntegrityCollector

        if REGISTRY is not None:
            REGISTRY.register(IntegrityCollector())
