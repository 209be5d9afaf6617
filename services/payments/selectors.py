"""Payments reads for the API's lists and the admin: payments, idempotency keys, screening rules.

One payment by id is still ``services.payment_get``: a read, to move here with the rest of services.py's
reorganisation.
"""

from __future__ import annotations

from django.db.models import QuerySet

from services.payments.models import BlockedAccount, CurrencyLimit, IdempotencyKey, Payment, VelocityLimit


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
