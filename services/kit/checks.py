"""System checks: refuse to start a process whose configuration is missing or unsafe."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility)
def check_database_is_postgresql(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.postgresql":
        return [
            checks.Error(
                "Atrium needs PostgreSQL (row locks, triggers, constraints).",
                hint="Point DATABASE_URL at a PostgreSQL database.",
                id="atrium.E001",
            )
        ]
    return []


@checks.register(checks.Tags.security, deploy=True)
def check_production_wiring(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if not settings.CELERY_BROKER_URL:
        errors.append(checks.Error("No Celery broker configured.", hint="Set REDIS_URL.", id="atrium.E002"))
    if settings.CELERY_BROKER_URL.startswith("redis://") and "@" not in settings.CELERY_BROKER_URL:
        errors.append(
            checks.Warning(
                "The Redis broker URL has no password.",
                hint="Use a password (redis://:PASSWORD@host) or rediss:// in production.",
                id="atrium.W001",
            )
        )
    if not settings.JWT_JWKS_URL and not getattr(settings, "JWT_JWKS_PROVIDER", ""):
        errors.append(
            checks.Error(
                "JWT_JWKS_URL is not set: this service cannot verify tokens.",
                hint="Set JWT_JWKS_URL to https://<portal>/.well-known/jwks.json.",
                id="atrium.E003",
            )
        )
    if getattr(settings, "ATRIUM_SSO_ROLES", "") and not (
        settings.OIDC_RP_CLIENT_ID and settings.OIDC_OP_TOKEN_ENDPOINT.startswith("https://")
    ):
        errors.append(
            checks.Warning(
                "This admin does not sign people in through the portal: only break-glass accounts can log in.",
                hint="Set <SERVICE>_OIDC_CLIENT_ID, <SERVICE>_OIDC_CLIENT_SECRET and ATRIUM_SSO_URL "
                "(https://<portal>); see docs/sso.md.",
                id="atrium.W010",
            )
        )
    return errors
