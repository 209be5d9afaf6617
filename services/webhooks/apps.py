from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "services.webhooks"
    label = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from services.webhooks import checks  # noqa: F401  (system checks)
