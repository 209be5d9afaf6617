"""Refuse to start the identity provider without a usable signing key."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register(checks.Tags.security)
def check_signing_key(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    from portal.identity.keys import signing_key

    try:
        signing_key()
    except (ImproperlyConfigured, ValueError, OSError) as exc:
        return [
            checks.Error(
                f"The JWT signing key cannot be loaded: {exc}",
                hint="Set JWT_PRIVATE_KEY (PEM) or JWT_PRIVATE_KEY_FILE to an Ed25519 or RSA private key.",
                id="identity.E001",
            )
        ]
    return []
