"""System checks of the payments service's own settings: refuse to start with limits that make no sense."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from services.payments.models import MAX_AMOUNT


@checks.register(checks.Tags.compatibility)
def check_amount_limits(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    limits = {"PAYMENTS_MAX_AMOUNT": settings.PAYMENTS_MAX_AMOUNT}
    limits.update({f"PAYMENTS_MAX_AMOUNTS[{c}]": v for c, v in settings.PAYMENTS_MAX_AMOUNTS.items()})
    for name, value in limits.items():
        if not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
            errors.append(
                checks.Error(
                    f"{name} must be a positive integer of at most 2^63-1 minor units, not {value!r}.",
                    id="payments.E001",
                )
            )
    if settings.PAYMENTS_PROCESSING_ATTEMPTS < 1:
        errors.append(checks.Error("PAYMENTS_PROCESSING_ATTEMPTS must be at least 1.", id="payments.E002"))
    return errors
