"""Payments domain errors, each with a stable code."""

from __future__ import annotations

from services.kit.errors import DomainError
from services.kit.metadata import InvalidMetadata as KitInvalidMetadata


class PaymentError(DomainError):
    status = 422


class InvalidAmount(PaymentError):
    code = "invalid_amount"
    title = "Invalid amount"


class AmountTooLarge(PaymentError):
    code = "amount_too_large"
    title = "Amount above the largest allowed"


class UnsupportedCurrency(PaymentError):
    code = "unsupported_currency"
    title = "Unsupported currency"


class InvalidMetadata(KitInvalidMetadata, PaymentError):
    """The kit's metadata limits (``services.kit.metadata``)."""


class SameAccount(PaymentError):
    code = "same_account"
    title = "Source and destination are the same account"


class AccountNotFound(PaymentError):
    code = "account_not_found"
    title = "Account not found"


class CurrencyMismatch(PaymentError):
    code = "currency_mismatch"
    title = "Account currency differs from the payment's"


class PaymentNotFound(PaymentError):
    code = "payment_not_found"
    status = 404
    title = "Payment not found"


class PaymentNotCancelable(PaymentError):
    code = "payment_not_cancelable"
    status = 409
    title = "Payment can no longer be canceled"


class PaymentNotInReview(PaymentError):
    code = "payment_not_in_review"
    status = 409
    title = "Payment is not waiting for review"


class IdempotencyKeyReused(PaymentError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency key reused with a different request"


class IdempotencyKeyInProgress(PaymentError):
    code = "idempotency_key_in_progress"
    status = 409
    title = "A request with this idempotency key is still in progress"


class InvalidStatsWindow(PaymentError):
    code = "invalid_window"
    status = 400
    title = "Unknown stats window"


class InvalidIdempotencyKey(PaymentError):
    code = "invalid_idempotency_key"
    status = 400
    title = "Invalid Idempotency-Key header"


# What ``payments.process`` raises: plain exceptions whose args are strings, so they cross Celery's JSON result
# backend and the job dashboard as they are.


class PaymentProcessingError(Exception):
    """A payment processed alone met an unexpected error; it is tried again after a backoff."""

    def __init__(self, payment_id: str, error: str) -> None:
        super().__init__(payment_id, error)
        self.payment_id = payment_id
        self.error = error

    def __str__(self) -> str:
        return f"{self.payment_id}: {self.error}"


class PaymentParked(PaymentProcessingError):
    """A payment met unexpected errors ``PAYMENTS_PROCESSING_ATTEMPTS`` times and was parked (failed with
    ``processing_error``, hold voided). The task fails with it so that the job dashboard lists it."""

    def __str__(self) -> str:
        return f"{self.payment_id} parked (failed, processing_error) after repeated errors; the last: {self.error}"
