"""Ledger domain errors, each with a stable code."""

from __future__ import annotations

from services.kit.errors import DomainError, NotFound
from services.kit.metadata import InvalidMetadata as KitInvalidMetadata


class LedgerError(DomainError):
    status = 422


class AccountNotFound(LedgerError):
    """A posting names an account that does not exist (422: the transaction is what is wrong)."""

    code = "account_not_found"
    title = "Account not found"


class AccountAbsent(NotFound):
    """The account a request is about (its URL) does not exist: 404 ``not_found``."""

    title = "Account not found"


class CurrencyMismatch(LedgerError):
    code = "currency_mismatch"
    title = "Currency mismatch"


class Unbalanced(LedgerError):
    code = "unbalanced"
    title = "Transaction does not balance"


class TooFewPostings(LedgerError):
    code = "too_few_postings"
    title = "Too few postings"


class InvalidAmount(LedgerError):
    code = "invalid_amount"
    title = "Invalid amount"


class InvalidCurrency(LedgerError):
    code = "invalid_currency"
    title = "Invalid currency"


class InvalidMetadata(KitInvalidMetadata, LedgerError):
    """The kit's metadata limits (``services.kit.metadata``); a ledger error, so a batch item fails alone."""


class InsufficientFunds(LedgerError):
    code = "insufficient_funds"
    status = 409
    title = "Insufficient funds"


class AccountFrozen(LedgerError):
    code = "account_frozen"
    status = 409
    title = "Account frozen"


class AccountClosed(LedgerError):
    code = "account_closed"
    status = 409
    title = "Account closed"


class AccountNotEmpty(LedgerError):
    code = "account_not_empty"
    status = 409
    title = "Account has balances"


class ReferenceConflict(LedgerError):
    code = "reference_conflict"
    status = 409
    title = "Reference already used with different content"


class TransactionNotPending(LedgerError):
    code = "transaction_not_pending"
    status = 409
    title = "Transaction is not pending"


class TransactionNotFound(LedgerError):
    code = "not_found"
    status = 404
    title = "Transaction not found"


class DuplicateAccountCode(LedgerError):
    code = "account_code_taken"
    status = 409
    title = "Account code already in use"


class ProcessingError(LedgerError):
    """An item of a batch met an unexpected error (a bug, or a value PostgreSQL refused): it failed alone, the
    other items were applied. Its detail names the error class only; the traceback is in the ledger's log."""

    code = "processing_error"
    status = 500
    title = "The item could not be processed"


class BatchRejected(LedgerError):
    code = "batch_rejected"
    status = 422
    title = "Batch rejected; nothing was applied"


class InvalidTimestamp(DomainError):
    code = "invalid_timestamp"
    status = 400
    title = "Invalid timestamp"
