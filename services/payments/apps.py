from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "services.payments"
    label = "payments"
    verbose_name = "Payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from services.kit.metrics import collector_register
        from services.payments import checks  # noqa: F401  (system checks)
        from services.payments.metrics import ProcessingCollector
        from services.payments.reconcile import ReconciliationCollector

        collector_register(ReconciliationCollector())
        collector_register(ProcessingCollector())
