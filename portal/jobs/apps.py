from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "portal.jobs"
    label = "jobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from portal.jobs.metrics import JobsCollector
        from services.kit.metrics import collector_register

        collector_register(JobsCollector())
