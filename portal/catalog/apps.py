from __future__ import annotations

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "portal.catalog"
    label = "catalog"
    verbose_name = "Service catalog"
    default_auto_field = "django.db.models.BigAutoField"
