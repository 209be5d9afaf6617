"""Payments reads for the API and the admin: payments, idempotency keys, screening rules."""

from __future__ import annotations

from django.db.models import QuerySet

from services.payments.errors import PaymentNotFound
from services.payments.models import BlockedAccount, CurrencyLimit, IdempotencyKey, Payment, VelocityLimit


def payment_get(payment_id: str) -> Payment:
    """One payment, or ``payment_not_found`` (404)."""
    payment = Payment.objects.filter(id=payment_id).first()
    if payment is None:
        raise PaymentNotFound(f"No payment {payment_id}.")
    return payment


def payment_list() -> QuerySet[Payment]:
    return Payment.objects.all()


def idempotency_key_list() -> QuerySet[IdempotencyKey]:
    return IdempotencyKey.objects.all()


def currency_limit_list() -> QuerySet[CurrencyLimit]:
    return CurrencyLimit.objects.all()


def velocity_limit_list() -> QuerySet[VelocityLimit]:
    return VelocityLimit.objects.all()


def blocked_account_list() -> QuerySet[BlockedAccount]:
    return BlockedAccount.objects.all()
