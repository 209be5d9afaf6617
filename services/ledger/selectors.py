"""Ledger reads: accounts, postings, balances at an instant, transactions, integrity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from services.kit.errors import NotFound
from services.ledger.models import Account, Posting, Transaction


def account_get(*, account_id: str) -> Account:
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        raise NotFound(f"No account {account_id}.")
    return account


def account_list() -> QuerySet[Account]:
    return Account.objects.all()


def posting_list(*, account_id: str) -> QuerySet[Posting]:
    account_get(account_id=account_id)
    return Posting.objects.filter(account_id=account_id).select_related("transaction")


def transaction_get(*, transaction_id: str) -> Transaction:
    txn = Transaction.objects.filter(pk=transaction_id).prefetch_related("postings").first()
    if txn is None:
        raise NotFound(f"No transaction {transaction_id}.")
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
    sql = f"""
        SELECT
          COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.posted_at <= %(t)s), 0),
          COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.posted_at <= %(t)s), 0),
          COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND {_PENDING_AT}), 0),
          COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND {_PENDING_AT}), 0)
        FROM {Posting._meta.db_table} p JOIN {Transaction._meta.db_table} t ON t.id = p.transaction_id
        WHERE p.account_id = %(a)s AND p.created_at <= %(t)s
    """  # noqa: S608  (table names only)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"t": as_of, "a": account.id})
        dp, cp, dpe, cpe = cursor.fetchone()
    return BalanceAsOf(account, as_of, int(dp), int(cp), int(dpe), int(cpe))


_PENDING_AT = (
    "t.created_at <= %(t)s AND (t.posted_at IS NULL OR t.posted_at > %(t)s) "
    "AND (t.voided_at IS NULL OR t.voided_at > %(t)s)"
)


def integrity_report() -> dict[str, Any]:
    """Compare every account's stored totals with its postings, and check the per-currency zero sum."""
    accounts = Account._meta.db_table
    postings = Posting._meta.db_table
    transactions = Transaction._meta.db_table
    mismatch_sql = f"""
        WITH sums AS (
          SELECT p.account_id,
            SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.status = 'posted') AS dp,
            SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.status = 'posted') AS cp,
            SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.status = 'pending') AS dpe,
            SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.status = 'pending') AS cpe
          FROM {postings} p JOIN {transactions} t ON t.id = p.transaction_id
          GROUP BY p.account_id
        )
        SELECT a.id, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending,
               COALESCE(s.dp, 0), COALESCE(s.cp, 0), COALESCE(s.dpe, 0), COALESCE(s.cpe, 0)
        FROM {accounts} a LEFT JOIN sums s ON s.account_id = a.id
        WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
              IS DISTINCT FROM (COALESCE(s.dp, 0), COALESCE(s.cp, 0), COALESCE(s.dpe, 0), COALESCE(s.cpe, 0))
    """  # noqa: S608  (table names only)
    zero_sum_sql = f"""
        SELECT currency, SUM(debits_posted) - SUM(credits_posted), SUM(debits_pending) - SUM(credits_pending)
        FROM {accounts} GROUP BY currency
        HAVING SUM(debits_posted) <> SUM(credits_posted) OR SUM(debits_pending) <> SUM(credits_pending)
    """  # noqa: S608  (table names only)
    with connection.cursor() as cursor:
        cursor.execute(mismatch_sql)
        mismatches = [
            {
                "account": row[0],
                "stored": dict(zip(_FIELDS, map(int, row[1:5]), strict=True)),
                "from_postings": dict(zip(_FIELDS, map(int, row[5:9]), strict=True)),
            }
            for row in cursor.fetchall()
        ]
        cursor.execute(zero_sum_sql)
        unbalanced = [
            {"currency": row[0], "posted_difference": int(row[1]), "pending_difference": int(row[2])}
            for row in cursor.fetchall()
        ]
    return {
        "ok": not mismatches and not unbalanced,
        "account_mismatches": mismatches,
        "unbalanced_currencies": unbalanced,
    }


_FIELDS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
