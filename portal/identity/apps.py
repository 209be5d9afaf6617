from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IdentityConfig(AppConfig):
    name = "portal.identity"
    label = "identity"
    verbose_name = "Identity and access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from portal.identity import checks  # noqa: F401  (registers system checks)
        from portal.identity.roles import roles_sync_after_migrate

        post_migrate.connect(roles_sync_after_migrate, dispatch_uid="identity.roles_sync")

        from portal.identity import audit

        audit.connect()
