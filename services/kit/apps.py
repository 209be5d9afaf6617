from __future__ import annotations

from django.apps import AppConfig


class KitConfig(AppConfig):
    name = "services.kit"
    label = "kit"
    verbose_name = "Atrium service kit"

    def ready(self) -> None:
        from services.kit import checks  # noqa: F401  (registers system checks)
