"""System checks of the webhooks service's configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security)
def check_secret_keys(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """Endpoint secrets need their own encryption keys in production (services/webhooks/secrets.py)."""
    if settings.WEBHOOKS_SECRET_KEYS:
        return []
    hint = (
        "Set WEBHOOKS_SECRET_KEYS to one or more Fernet keys, comma-separated, the newest first (make one with "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
    )
    if settings.ATRIUM_ENV == "production":
        return [
            checks.Error(
                "WEBHOOKS_SECRET_KEYS is not set: endpoint secrets would be encrypted with a key derived from "
                "SECRET_KEY.",
                hint=hint,
                id="webhooks.E001",
            )
        ]
    if settings.ATRIUM_ENV == "test":
        return []
    return [
        checks.Warning(
            "WEBHOOKS_SECRET_KEYS is not set: endpoint secrets are encrypted with a key derived from SECRET_KEY "
            "(fine for development only).",
            hint=hint,
            id="webhooks.W001",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_delivery_settings(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if settings.WEBHOOKS_TIMEOUT_SECONDS <= 0:
        errors.append(checks.Error("WEBHOOKS_TIMEOUT_SECONDS must be positive.", id="webhooks.E002"))
    if not 0 <= settings.WEBHOOKS_RETRY_JITTER < 1:
        errors.append(checks.Error("WEBHOOKS_RETRY_JITTER must be in [0, 1).", id="webhooks.E003"))
    for name in ("WEBHOOKS_RETRY_AFTER_MAX_SECONDS", "WEBHOOKS_DISABLE_AFTER_SECONDS", "WEBHOOKS_RESPONSE_MAX_BYTES"):
        if getattr(settings, name) < 0:
            errors.append(checks.Error(f"{name} must not be negative.", id="webhooks.E004"))
    if settings.WEBHOOKS_ATTEMPT_RETENTION_DAYS < 1:
        errors.append(checks.Error("WEBHOOKS_ATTEMPT_RETENTION_DAYS must be at least 1.", id="webhooks.E005"))
    return errors
