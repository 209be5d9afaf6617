"""System checks of the payments service's configuration: refuse to start with settings that make no sense."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from services.kit.currencies import CURRENCIES
from services.payments import risk
from services.payments.ledger import call_seconds
from services.payments.models import MAX_AMOUNT
from services.payments.processing import LEASE_MARGIN


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


@checks.register(checks.Tags.compatibility)
def check_lease_outlasts_a_ledger_call(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """A worker renews its lease between steps, never during one: one ledger call with all its tries
    (``PAYMENTS_LEDGER_TIMEOUT``, ``PAYMENTS_LEDGER_RETRIES``) must end within ``PAYMENTS_LEASE_SECONDS``, or
    another worker could take over a batch whose worker is alive and waiting for the ledger."""
    longest = call_seconds()
    if settings.PAYMENTS_LEASE_SECONDS < longest + LEASE_MARGIN:
        return [
            checks.Error(
                f"PAYMENTS_LEASE_SECONDS ({settings.PAYMENTS_LEASE_SECONDS:g}) is shorter than one ledger call may "
                f"take ({longest:g} s: {settings.PAYMENTS_LEDGER_RETRIES + 1} tries of PAYMENTS_LEDGER_TIMEOUT "
                f"{settings.PAYMENTS_LEDGER_TIMEOUT:g} s plus connecting and the waits between them) and "
                f"{LEASE_MARGIN:g} s: a live worker could lose its lease in the middle of a call.",
                hint="Lengthen PAYMENTS_LEASE_SECONDS, or shorten PAYMENTS_LEDGER_TIMEOUT or PAYMENTS_LEDGER_RETRIES.",
                id="payments.E003",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_risk_settings(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """``PAYMENTS_RISK_FALLBACK`` is one of hold, allow, deny; the risk call's timeout and retries make sense and,
    with ``RISK_URL`` set, one call (every try) ends within ``PAYMENTS_LEASE_SECONDS``."""
    errors: list[checks.CheckMessage] = []
    fallback = settings.PAYMENTS_RISK_FALLBACK
    if fallback not in risk.FALLBACKS:
        errors.append(
            checks.Error(
                f"PAYMENTS_RISK_FALLBACK is {fallback!r}; it must be one of {', '.join(risk.FALLBACKS)}: what "
                "screening does with payments while the risk service cannot be reached.",
                hint="hold (the default): they wait in screening and are retried when risk returns; allow: the "
                "admin's screening rules only; deny: rejected with risk_unavailable.",
                id="payments.E004",
            )
        )
    if not settings.PAYMENTS_RISK_TIMEOUT > 0 or settings.PAYMENTS_RISK_RETRIES < 0:
        errors.append(
            checks.Error(
                f"PAYMENTS_RISK_TIMEOUT must be positive and PAYMENTS_RISK_RETRIES at least 0 (they are "
                f"{settings.PAYMENTS_RISK_TIMEOUT!r} and {settings.PAYMENTS_RISK_RETRIES!r}).",
                id="payments.E006",
            )
        )
    elif settings.RISK_URL and settings.PAYMENTS_LEASE_SECONDS < risk.call_seconds() + LEASE_MARGIN:
        errors.append(
            checks.Error(
                f"PAYMENTS_LEASE_SECONDS ({settings.PAYMENTS_LEASE_SECONDS:g}) is shorter than one risk call may "
                f"take ({risk.call_seconds():g} s: {settings.PAYMENTS_RISK_RETRIES + 1} tries of "
                f"PAYMENTS_RISK_TIMEOUT {settings.PAYMENTS_RISK_TIMEOUT:g} s plus connecting and the waits between "
                f"them) and {LEASE_MARGIN:g} s: a live worker could lose its lease in the middle of a call.",
                hint="Lengthen PAYMENTS_LEASE_SECONDS, or shorten PAYMENTS_RISK_TIMEOUT or PAYMENTS_RISK_RETRIES.",
                id="payments.E005",
            )
        )
    return errors
