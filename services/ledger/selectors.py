"""Ledger reads: accounts, postings, balances at an instant, transactions, integrity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from services.ledger import queries
from services.ledger.errors import AccountAbsent, TransactionNotFound
from services.ledger.models import Account, Posting, Transaction


def account_get(*, account_id: str) -> Account:
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        raise AccountAbsent(f"No account {account_id}.")
    return account


def account_list() -> QuerySet[Account]:
    return Account.objects.all()


def posting_list(*, account_id: str | None = None) -> QuerySet[Posting]:
    """Postings with their transactions: every one, or an account's (which must exist)."""
    if account_id is None:
        return Posting.objects.select_related("transaction")
    account_get(account_id=account_id)
    return Posting.objects.filter(account_id=account_id).select_related("transaction")


def transaction_get(*, transaction_id: str) -> Transaction:
    txn = Transaction.objects.filter(pk=transaction_id).prefetch_related("postings").first()
    if txn is None:
        raise TransactionNotFound(f"No transaction {transaction_id}.")
    return txn


def transaction_list() -> QuerySet[Transaction]:
    return Transaction.objects.prefetch_related("postings")


@dataclass(frozen=True)
class BalanceAsOf:
    account: Account
    as_of: datetime
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def balance(self) -> int:
        if self.account.normal_balance == "credit":
            return self.credits_posted - self.debits_posted
        return self.debits_posted - self.credits_posted

    @property
    def available(self) -> int:
        pending = self.debits_pending if self.account.normal_balance == "credit" else self.credits_pending
        return self.balance - pending + self.account.overdraft_limit


def account_balance_as_of(*, account_id: str, as_of: datetime) -> BalanceAsOf:
    """The account's totals as they were at ``as_of``, recomputed from postings and status times."""
    account = account_get(account_id=account_id)
    dp, cp, dpe, cpe = queries.balance_totals(account_id=account.id, as_of=as_of)
    return BalanceAsOf(account, as_of, dp, cp, dpe, cpe)


def integrity_report() -> dict[str, Any]:
    """Compare every account's stored totals with its postings, and check the per-currency zero sum."""
    mismatches = [
        {
            "account": row[0],
            "stored": dict(zip(queries.BALANCE_FIELDS, map(int, row[1:5]), strict=True)),
            "from_postings": dict(zip(queries.BALANCE_FIELDS, map(int, row[5:9]), strict=True)),
        }
        for row in queries.account_mismatches()
    ]
    unbalanced = [
        {"currency": row[0], "posted_difference": int(row[1]), "pending_difference": int(row[2])}
        for row in queries.unbalanced_currencies()
    ]
    return {
        "ok": not mismatches and not unbalanced,
        "account_mismatches": mismatches,
        "unbalanced_currencies": unbalanced,
    }
