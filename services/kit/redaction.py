"""Redaction: the key names whose values never leave a service, and :func:`redact` to blank them.

Audit events and the job dashboard's task arguments both go through it. Depends on Django settings only
(``ATRIUM_AUDIT_SENSITIVE_KEYS`` adds names), so any module may import it.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

REDACTED = "[redacted]"
# Key names whose values never leave a service (compared case-insensitively, '-' read as '_').
SENSITIVE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "new_password",
        "old_password",
        "password1",
        "password2",
        "secret",
        "client_secret",
        "secret_hash",
        "webhook_secret",
        "signing_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "private_key",
        "card_number",
        "pan",
        "cvv",
        "cvc",
    }
)
SENSITIVE_SUFFIXES = ("_secret", "_password", "_token", "_private_key", "_api_key")


@functools.lru_cache(maxsize=4096)
def sensitive(key: str) -> bool:
    """Whether a value under ``key`` never leaves a service."""
    name = key.lower().replace("-", "_")
    extra = {k.lower() for k in getattr(settings, "ATRIUM_AUDIT_SENSITIVE_KEYS", ())}
    return name in SENSITIVE_KEYS or name in extra or name.endswith(SENSITIVE_SUFFIXES)


@receiver(setting_changed)
def _sensitive_keys_changed(setting: str, **kwargs: Any) -> None:
    if setting == "ATRIUM_AUDIT_SENSITIVE_KEYS":
        sensitive.cache_clear()


def redact(value: Any) -> Any:
    """A copy of ``value`` with every sensitive key's value replaced by ``[redacted]`` (nested too)."""
    if isinstance(value, dict):
        return {k: (REDACTED if sensitive(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
