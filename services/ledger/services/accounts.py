"""Ledger writes of accounts: open one, and rename, re-tag, freeze, unfreeze or close it."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from services.kit.audit import audit_record
from services.kit.currencies import currency_is_valid
from services.kit.logs import get_logger
from services.kit.metadata import metadata_check
from services.ledger import audit as ledger_audit
from services.ledger.errors import (
    AccountAbsent,
    AccountClosed,
    AccountNotEmpty,
    DuplicateAccountCode,
    InvalidAmount,
    InvalidCurrency,
    InvalidMetadata,
    LedgerError,
)
from services.ledger.models import MAX_AMOUNT, Account, AccountStatus
from services.ledger.services.bulk import with_retry

log = get_logger(__name__)


def account_create(
    *,
    name: str,
    currency: str,
    normal_balance: str,
    code: str | None = None,
    overdraft_limit: int = 0,
    allow_negative: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Account:
    """Open an account."""
    terms = {
        "name": name,
        "currency": currency,
        "normal_balance": normal_balance,
        "overdraft_limit": overdraft_limit,
        "allow_negative": allow_negative,
    }
    try:
        currency_check(currency)
        metadata_check(metadata or {}, error=InvalidMetadata)
        if not isinstance(overdraft_limit, int) or not 0 <= overdraft_limit <= MAX_AMOUNT:
            raise InvalidAmount("overdraft_limit must be an integer from 0 to 2^63-1.")
        try:
            with transaction.atomic():
                account = Account.objects.create(
                    code=code or None,
                    name=name,
                    currency=currency,
                    normal_balance=normal_balance,
                    overdraft_limit=overdraft_limit,
                    allow_negative=allow_negative,
                    metadata=metadata or {},
                )
                audit_record(
                    "ledger.account.created",
                    object_type="account",
                    object_id=account.id,
                    metadata={"code": code or None, **terms},
                )
        except IntegrityError as exc:
            if code and Account.objects.filter(code=code).exists():
                raise DuplicateAccountCode(f"An account with code {code!r} already exists.") from exc
            raise
    except LedgerError as exc:
        # A failure's metadata "code" is the refusal's code: the account's own code goes as account_code.
        refused = ledger_audit.refused_event(
            "ledger.account.created", exc, object_type="account", account_code=code or None, **terms
        )
        ledger_audit.record_after_rollback([refused])
        raise
    log.info("ledger.account_created", account_id=account.id, currency=currency)
    return account


def account_update(
    *, account_id: str, name: str | None = None, metadata: dict[str, Any] | None = None, status: str | None = None
) -> Account:
    """Rename, re-tag, freeze, unfreeze or close an account (closing needs zero balances)."""

    def run() -> Account:
        if metadata is not None:
            metadata_check(metadata, error=InvalidMetadata)
        with transaction.atomic():
            account = Account.objects.select_for_update().filter(pk=account_id).first()
            if account is None:
                raise AccountAbsent(f"No account {account_id}.")
            before = {"name": account.name, "metadata": account.metadata, "status": account.status}
            if status is not None and status != account.status:
                if account.status == AccountStatus.CLOSED:
                    raise AccountClosed("A closed account cannot be reopened.")
                if status == AccountStatus.CLOSED and (
                    account.balance != 0 or account.debits_pending or account.credits_pending
                ):
                    raise AccountNotEmpty("Only an account with zero balance and no pending amounts can be closed.")
                account.status = status
            if name is not None:
                account.name = name
            if metadata is not None:
                account.metadata = metadata
            after = {"name": account.name, "metadata": account.metadata, "status": account.status}
            account.save(update_fields=["name", "metadata", "status", "updated_at"])
            changes = {k: [before[k], v] for k, v in after.items() if before[k] != v}
            audit_record("ledger.account.changed", object_type="account", object_id=account.id, changes=changes)
            return account

    try:
        account = with_retry(run)
    except (LedgerError, AccountAbsent) as exc:
        ledger_audit.record_after_rollback(
            [ledger_audit.refused_event("ledger.account.changed", exc, object_type="account", object_id=account_id)]
        )
        raise
    log.info("ledger.account_updated", account_id=account.id, status=account.status)
    return account


def currency_check(currency: Any) -> None:
    """An active ISO 4217 code (the kit's one list); ``XXX``, ``XTS``, metals and units of account are not."""
    if not currency_is_valid(currency):
        detail = f"{currency!r} is not an active ISO 4217 currency code that Atrium accepts."
        error = {"field": "currency", "pointer": "#/currency", "code": "invalid_currency", "detail": detail}
        raise InvalidCurrency(detail, extra={"errors": [error]})
