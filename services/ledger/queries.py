"""The ledger's raw SQL, in one place: the write path's locks and bulk statements (pipelined INSERTs or
COPY), the balance at an instant, and the integrity checks. Services and selectors call these; the table
names come from the models, nothing here takes user input into the SQL text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connection

from services.ledger.models import Account, Posting, Transaction

_ACCOUNTS = Account._meta.db_table
_TRANSACTIONS = Transaction._meta.db_table
_POSTINGS = Posting._meta.db_table

BALANCE_FIELDS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")

# ------------------------------------------------------------------------------ write path

# Serialize concurrent writers of one reference (sorted keys: batches sharing references never deadlock).
REFERENCES_LOCK = (
    "SELECT count(pg_advisory_xact_lock(k)) FROM "
    "(SELECT DISTINCT hashtextextended(r, 42) AS k FROM unnest(%s::text[]) AS r ORDER BY k) AS keys"
)

TRANSACTION_IDS_BY_REFERENCE = f"SELECT id FROM {_TRANSACTIONS} WHERE reference = ANY(%s)"  # noqa: S608

# What the write path needs of an account (metadata and names are not read there).
LOCK_FIELDS = (
    "id",
    "currency",
    "normal_balance",
    "status",
    "overdraft_limit",
    "allow_negative",
    *BALANCE_FIELDS,
)

# Lock the accounts in id order (so concurrent writers never deadlock), loading what the checks need.
# Raw SQL: on the single-transfer path the ORM's query compilation cost more than the query.
ACCOUNTS_LOCK = (
    f"SELECT {', '.join(LOCK_FIELDS)} FROM {_ACCOUNTS} "  # noqa: S608  (no user input)
    "WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
)


def accounts_update(count: int) -> str:
    """One UPDATE of ``count`` accounts' totals; parameters: now, then (id, dp, cp, dpe, cpe) per account."""
    rows = ", ".join(["(%s, %s::bigint, %s::bigint, %s::bigint, %s::bigint)"] * count)
    return (
        f"UPDATE {_ACCOUNTS} AS a SET debits_posted = v.dp, credits_posted = v.cp, "  # noqa: S608  (no user input)
        f"debits_pending = v.dpe, credits_pending = v.cpe, updated_at = %s "
        f"FROM (VALUES {rows}) AS v(id, dp, cp, dpe, cpe) WHERE a.id = v.id"
    )


def account_row(account: Account) -> tuple[Any, ...]:
    """An account's parameters in :func:`accounts_update`."""
    return (
        account.id,
        account.debits_posted,
        account.credits_posted,
        account.debits_pending,
        account.credits_pending,
    )


_TXN_COLUMNS = (
    "id, reference, description, currency, status, metadata, content_hash, request_id, "
    "created_at, posted_at, voided_at, expires_at"
)
_POSTING_COLUMNS = "transaction_id, account_id, direction, amount, created_at"

TRANSACTIONS_COPY = f"COPY {_TRANSACTIONS} ({_TXN_COLUMNS}) FROM STDIN"
POSTINGS_COPY = f"COPY {_POSTINGS} ({_POSTING_COLUMNS}) FROM STDIN"


def transactions_insert(count: int) -> str:
    """One multi-row INSERT of ``count`` transactions (:func:`transaction_row` each)."""
    values = ", ".join(["(%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)"] * count)
    return f"INSERT INTO {_TRANSACTIONS} ({_TXN_COLUMNS}) VALUES {values}"  # noqa: S608  (no user input)


def postings_insert(count: int) -> str:
    """One multi-row INSERT of ``count`` postings (:func:`posting_row` each)."""
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * count)
    return f"INSERT INTO {_POSTINGS} ({_POSTING_COLUMNS}) VALUES {values}"  # noqa: S608  (no user input)


def transaction_row(t: Transaction) -> tuple[Any, ...]:
    """A transaction's values in the order of its INSERT and COPY columns."""
    return (
        t.id,
        t.reference,
        t.description,
        t.currency,
        t.status,
        json.dumps(t.metadata),
        t.content_hash,
        t.request_id,
        t.created_at,
        t.posted_at,
        t.voided_at,
        t.expires_at,
    )


def posting_row(p: Posting) -> tuple[Any, ...]:
    """A posting's values in the order of its INSERT and COPY columns."""
    return (p.transaction_id, p.account_id, p.direction, p.amount, p.created_at)


# ------------------------------------------------------------------------------------ reads

_PENDING_AT = (
    "t.created_at <= %(t)s AND (t.posted_at IS NULL OR t.posted_at > %(t)s) "
    "AND (t.voided_at IS NULL OR t.voided_at > %(t)s)"
)
_BALANCE_AS_OF = f"""
    SELECT
      COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.posted_at <= %(t)s), 0),
      COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.posted_at <= %(t)s), 0),
      COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND {_PENDING_AT}), 0),
      COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND {_PENDING_AT}), 0)
    FROM {_POSTINGS} p JOIN {_TRANSACTIONS} t ON t.id = p.transaction_id
    WHERE p.account_id = %(a)s AND p.created_at <= %(t)s
"""  # noqa: S608  (table names only)


def balance_totals(*, account_id: str, as_of: datetime) -> tuple[int, int, int, int]:
    """An account's (debits posted, credits posted, debits pending, credits pending) at ``as_of``,
    recomputed from its postings and their transactions' status times."""
    with connection.cursor() as cursor:
        cursor.execute(_BALANCE_AS_OF, {"t": as_of, "a": account_id})
        dp, cp, dpe, cpe = cursor.fetchone()
    return int(dp), int(cp), int(dpe), int(cpe)


_ACCOUNT_MISMATCHES = f"""
    WITH sums AS (
      SELECT p.account_id,
        SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.status = 'posted') AS dp,
        SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.status = 'posted') AS cp,
        SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.status = 'pending') AS dpe,
        SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.status = 'pending') AS cpe
      FROM {_POSTINGS} p JOIN {_TRANSACTIONS} t ON t.id = p.transaction_id
      GROUP BY p.account_id
    )
    SELECT a.id, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending,
           COALESCE(s.dp, 0), COALESCE(s.cp, 0), COALESCE(s.dpe, 0), COALESCE(s.cpe, 0)
    FROM {_ACCOUNTS} a LEFT JOIN sums s ON s.account_id = a.id
    WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
          IS DISTINCT FROM (COALESCE(s.dp, 0), COALESCE(s.cp, 0), COALESCE(s.dpe, 0), COALESCE(s.cpe, 0))
"""  # noqa: S608  (table names only)

_UNBALANCED_CURRENCIES = f"""
    SELECT currency, SUM(debits_posted) - SUM(credits_posted), SUM(debits_pending) - SUM(credits_pending)
    FROM {_ACCOUNTS} GROUP BY currency
    HAVING SUM(debits_posted) <> SUM(credits_posted) OR SUM(debits_pending) <> SUM(credits_pending)
"""  # noqa: S608  (table names only)


def account_mismatches() -> list[tuple[Any, ...]]:
    """Accounts whose stored totals differ from their postings': ``(id, 4 stored totals, 4 from postings)``."""
    with connection.cursor() as cursor:
        cursor.execute(_ACCOUNT_MISMATCHES)
        return cursor.fetchall()


def unbalanced_currencies() -> list[tuple[Any, ...]]:
    """Currencies whose accounts do not sum to zero: ``(currency, posted difference, pending difference)``."""
    with connection.cursor() as cursor:
        cursor.execute(_UNBALANCED_CURRENCIES)
        return cursor.fetchall()
