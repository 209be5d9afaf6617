"""Parsing and checking of the webhooks service's own settings (``settings.py`` reads the environment; a bad
value stops the process at start-up instead of misbehaving later). Imports nothing of the app."""

from __future__ import annotations

import base64
import binascii
import ipaddress

from django.core.exceptions import ImproperlyConfigured


def secret_keys_setting(values: list[str]) -> list[str]:
    """``WEBHOOKS_SECRET_KEYS``: Fernet keys (url-safe base64 of 32 bytes), the first encrypts."""
    keys = [value.strip() for value in values if value.strip()]
    for index, key in enumerate(keys):
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ImproperlyConfigured(
                f"WEBHOOKS_SECRET_KEYS: key {index + 1} is not a Fernet key (url-safe base64 of 32 bytes; make one "
                "with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            )
    return keys


def retry_schedule_setting(values: list[str]) -> list[float]:
    """``WEBHOOKS_RETRY_SCHEDULE``: seconds before each attempt (the first is usually 0), at least one."""
    try:
        schedule = [float(value) for value in values]
    except ValueError as exc:
        raise ImproperlyConfigured(f"WEBHOOKS_RETRY_SCHEDULE: not a list of seconds: {exc}") from exc
    if not schedule or any(delay < 0 for delay in schedule):
        raise ImproperlyConfigured("WEBHOOKS_RETRY_SCHEDULE: one or more non-negative numbers of seconds")
    return schedule


def networks_setting(name: str, values: list[str], fallback: list[str]) -> list[str]:
    """A list of CIDRs (host bits zero); ``fallback`` when empty."""
    networks = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(value.strip())))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {value!r} is not a network (CIDR, host bits zero): {exc}") from exc
    return networks or list(fallback)
