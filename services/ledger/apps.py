from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "services.ledger"
    label = "ledger"
    verbose_name = "Ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from services.kit.metrics import collector_register
        from services.ledger.integrity import IntegrityCollector

        collector_register(IntegrityCollector())
