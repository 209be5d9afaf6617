"""The write path that transactions and settlement share: retry on deadlock, lock accounts, apply amounts to
them in memory, then write the new totals, rows and audit events and commit (pipelined INSERTs for a few
transactions, COPY for many); and the helpers of batches that isolate a poisoned item.

The statements themselves are in :mod:`services.ledger.queries`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from django.db import OperationalError, connection
from django.db.models import Model
from django.db.models.base import ModelState

from services.kit.db import Pipeline, WriteTransaction, database_transient
from services.kit.logs import get_logger
from services.ledger import audit as ledger_audit
from services.ledger import queries
from services.ledger.errors import InvalidAmount, LedgerError
from services.ledger.models import MAX_AMOUNT, Account, Direction, NormalBalance, Posting, Transaction

log = get_logger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Model)
# PostgreSQL error classes that mean "try the whole transaction again".
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# Below this many transactions two multi-row INSERTs beat COPY's extra protocol round trips.
COPY_THRESHOLD = 10


def with_retry(fn: Callable[[], T], *, attempts: int = 5) -> T:
    """Run ``fn`` (which opens its own atomic block); retry on deadlock or serialization failure."""
    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            sqlstate = getattr(exc.__cause__, "sqlstate", None)
            if sqlstate not in RETRYABLE_SQLSTATES or connection.in_atomic_block or attempt + 1 == attempts:
                raise
            log.warning("ledger.retry", sqlstate=sqlstate, attempt=attempt)
            time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311  (jitter, not crypto)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------- balances in memory


def amount_apply(account: Account, direction: str, amount: int, *, pending: bool, sign: int = 1) -> None:
    """Add (``sign=-1``: remove) ``amount`` to the account's posted or pending total on ``direction``'s side."""
    column = f"{'debits' if direction == Direction.DEBIT else 'credits'}_{'pending' if pending else 'posted'}"
    value = getattr(account, column) + sign * amount
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"Account {account.id} would exceed the largest representable total.")
    setattr(account, column, value)


def checked_total(account: Account) -> int:
    """The sum the overdraft check constraint computes (posted plus pending on the side that lowers the balance)."""
    if account.normal_balance == NormalBalance.CREDIT:
        return account.debits_posted + account.debits_pending
    return account.credits_posted + account.credits_pending


def balances_snapshot(account: Account) -> tuple[int, ...]:
    return tuple(getattr(account, f) for f in queries.BALANCE_FIELDS)


def balances_restore(account: Account, values: tuple[int, ...]) -> None:
    for name, value in zip(queries.BALANCE_FIELDS, values, strict=True):
        setattr(account, name, value)


# ------------------------------------------------------------------------------------ locks


def accounts_lock_queue(pipeline: Pipeline, ids: set[str]) -> int | None:
    """Queue the lock of the accounts in id order (so concurrent writers never deadlock), loading what the
    checks need."""
    if not ids:
        return None
    return pipeline.add(queries.ACCOUNTS_LOCK, [sorted(ids)])


def accounts_from(rows: list[tuple[Any, ...]]) -> dict[str, Account]:
    return {row[0]: Account.from_db(connection.alias, list(queries.LOCK_FIELDS), row) for row in rows}


def accounts_lock(ids: set[str]) -> dict[str, Account]:
    """Lock the accounts in id order and load what the checks need (one statement)."""
    pipeline = Pipeline()
    handle = accounts_lock_queue(pipeline, ids)
    if handle is None:
        return {}
    pipeline.run()
    return accounts_from(pipeline.rows(handle))


# ----------------------------------------------------------------------------------- writes


def accounts_write(pipeline: Pipeline, accounts: list[Account], now: datetime) -> None:
    if not accounts:
        return
    params: list[Any] = [now]
    for account in accounts:
        params.extend(queries.account_row(account))
    pipeline.add(queries.accounts_update(len(accounts)), params)


def instance(model: type[M], **values: Any) -> M:
    """A model instance of a row about to be inserted, without ``Model.__init__``: on the batch path the
    constructors (defaults, descriptors, signals) cost more than writing the rows. Every concrete field
    must be given (a missing one would read as deferred); the row is written by :func:`write`."""
    obj = model.__new__(model)
    obj.__dict__.update(values)
    state = ModelState()
    state.adding = False
    state.db = connection.alias
    obj._state = state
    return obj


def write(
    tx: WriteTransaction,
    accounts: list[Account],
    transactions: list[Transaction],
    postings: list[Posting],
    now: datetime,
    events: list[dict[str, Any]] | None = None,
    domain: list[dict[str, Any]] | None = None,
) -> None:
    """Write the new balances and rows and their audit events (and ``domain``: the domain events of the
    transactions posted or voided, :mod:`services.ledger.events`), and commit. A few transactions: the UPDATE,
    two multi-row INSERTs, the audit events' INSERT and the COMMIT in one round trip. Many: COPY after the
    UPDATE (binding thousands of INSERT parameters cost more CPU than PostgreSQL spends storing them; COPY
    cannot be pipelined), then the events' COPY and the COMMIT.
    Constraints and triggers apply to COPY as to INSERT."""
    pipeline = Pipeline()
    accounts_write(pipeline, accounts, now)
    if not transactions:
        ledger_audit.queue_events(pipeline, tx, events or [], domain)
        tx.commit(pipeline)
        pipeline.run()
        return
    if len(transactions) < COPY_THRESHOLD:
        pipeline.add(
            queries.transactions_insert(len(transactions)),
            [value for t in transactions for value in queries.transaction_row(t)],
        )
        pipeline.add(
            queries.postings_insert(len(postings)),
            [value for p in postings for value in queries.posting_row(p)],
        )
        ledger_audit.queue_events(pipeline, tx, events or [], domain)
        tx.commit(pipeline)
        pipeline.run()
        return
    pipeline.run()
    with connection.wrap_database_errors:
        raw = connection.connection.cursor()
        with raw.copy(queries.TRANSACTIONS_COPY) as copy:
            for t in transactions:
                copy.write_row(queries.transaction_row(t))
        with raw.copy(queries.POSTINGS_COPY) as copy:
            for p in postings:
                copy.write_row(queries.posting_row(p))
        ledger_audit.copy_events(raw, tx, events or [], domain)
    commit = Pipeline()
    tx.commit(commit)
    commit.run()


# ---------------------------------------------------------------------------------- batches


def item_error(exc: Exception) -> bool:
    """Whether ``exc`` from a batch may be an item's fault: not a refusal (that is already the item's result),
    and not the database being away or busy (:func:`services.kit.db.database_transient`), which fails the whole
    call (503, retried by the caller) — splitting the batch because of it would blame innocent items."""
    return not isinstance(exc, LedgerError) and not database_transient(exc)


def storable(value: Any, limit: int = 200) -> str:
    """``value`` as text PostgreSQL can store, for the audit event of an item that may be poisoned by its text."""
    return str(value)[:limit].replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def unexpected(exc: Exception) -> str:
    """What an item's ``processing_error`` says: the error class only (its text may hold other items' data)."""
    return f"Unexpected {type(exc).__name__} while processing this item; the ledger's log has the traceback."


def shifted(left: list[Any], right: list[Any]) -> list[Any]:
    """Two halves' results as one list: the right half's indexes follow the left half's items."""
    for result in right:
        result.index += len(left)
    return left + right


def result_as_dict(result: Any) -> dict[str, Any]:
    """One batch item's result as the API answers it (a created/settled item, or its refusal's code)."""
    body: dict[str, Any] = {"index": result.index, "status": result.status}
    if result.transaction is not None:
        body["id"] = result.transaction.id
    if result.error is not None:
        body["code"] = result.error.code
        body["detail"] = result.error.detail
    return body
