"""Refuse to start the identity provider without usable signing keys (machine tokens, people's ID tokens)."""

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


@checks.register(checks.Tags.security)
def check_oidc_key(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    if not settings.OAUTH2_PROVIDER.get("OIDC_RSA_PRIVATE_KEY"):
        return [
            checks.Error(
                "No key signs people's ID tokens: no service admin can sign anyone in.",
                hint="Set OIDC_PRIVATE_KEY (PEM) or OIDC_PRIVATE_KEY_FILE to an RSA private key (2048 bits or more).",
                id="identity.E002",
            )
        ]
    return []
