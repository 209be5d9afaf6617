"""System checks of the payments service's configuration: refuse to start with settings that make no sense."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from services.kit.currencies import CURRENCIES
from services.payments.models import MAX_AMOUNT


@checks.register(checks.Tags.compatibility)
def check_currencies_are_iso_4217(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """PAYMENTS_CURRENCIES is a subset of the kit's one ISO 4217 list, which the ledger enforces too."""
    unknown = sorted(str(code) for code in settings.PAYMENTS_CURRENCIES if code not in CURRENCIES)
    if unknown:
        return [
            checks.Error(
                f"PAYMENTS_CURRENCIES names codes that are not accepted ISO 4217 currencies: {', '.join(unknown)}.",
                hint="Use active ISO 4217 codes (services/kit/currencies.py lists them; XXX, XTS, metals and units "
                "of account are not currencies).",
                id="payments.E101",
            )
        ]
    if not settings.PAYMENTS_CURRENCIES:
        return [checks.Error("PAYMENTS_CURRENCIES is empty: no payment could be created.", id="payments.E102")]
    return []


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
