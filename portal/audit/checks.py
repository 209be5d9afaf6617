"""Refuse to start with a retired audit public key that cannot be read: old heads would all look forged."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from portal.audit.keys import retired_public_keys


@checks.register(checks.Tags.security)
def check_retired_public_keys(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        retired_public_keys()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="Each entry of AUDIT_RETIRED_PUBLIC_KEY_FILES must be the path of an Ed25519 public key (PEM) "
                "that once signed audit heads (docs/deploy.md, rotating the audit signing key).",
                id="audit.E001",
            )
        ]
    return []
