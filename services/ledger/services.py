"""Ledger writes: accounts, transactions (single and batched), two-phase post/void, expiry.

Every transaction write follows one path (:func:`transactions_create`): validate what
needs no database, take an advisory lock per reference (so concurrent creations of
one reference serialize), lock every account involved in id order (no deadlocks),
check and apply the whole batch in memory, then write it with three statements
(one UPDATE of the accounts, one INSERT of transactions, one of postings; COPY for
large batches). Statements that do not depend on each other's results are pipelined,
so a single transfer costs three network round trips (locks and lookups, writes,
COMMIT) and holds its account locks for two of them.
PostgreSQL's constraints and triggers are the second line of defence.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Model
from django.db.models.base import ModelState
from django.utils import timezone

from services.kit.audit import audit_context, audit_event, audit_record
from services.kit.batches import batch_isolate
from services.kit.currencies import currency_is_valid
from services.kit.db import Pipeline, WriteTransaction, database_transient
from services.kit.errors import NotFound
from services.kit.ids import id_new
from services.kit.logs import get_logger
from services.kit.metadata import metadata_check
from services.ledger import audit as ledger_audit
from services.ledger.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    AccountNotFound,
    CurrencyMismatch,
    DuplicateAccountCode,
    InsufficientFunds,
    InvalidAmount,
    InvalidCurrency,
    InvalidMetadata,
    LedgerError,
    ProcessingError,
    ReferenceConflict,
    TooFewPostings,
    TransactionNotFound,
    TransactionNotPending,
    Unbalanced,
)
from services.ledger.models import (
    MAX_AMOUNT,
    Account,
    AccountStatus,
    Direction,
    NormalBalance,
    Posting,
    Transaction,
    TransactionStatus,
)

log = get_logger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Model)
# PostgreSQL error classes that mean "try the whole transaction again".
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
BALANCE_FIELDS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


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


# ----------------------------------------------------------------------------- accounts


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
        _check_currency(currency)
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
                raise NotFound(f"No account {account_id}.")
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
    except (LedgerError, NotFound) as exc:
        ledger_audit.record_after_rollback(
            [ledger_audit.refused_event("ledger.account.changed", exc, object_type="account", object_id=account_id)]
        )
        raise
    log.info("ledger.account_updated", account_id=account.id, status=account.status)
    return account


# ------------------------------------------------------------------------- transactions


@dataclass
class PostingInput:
    account: str
    direction: str
    amount: Any  # validated here, not by the serializer: invalid amounts have their own code


@dataclass
class TransactionInput:
    reference: str
    postings: list[PostingInput]
    description: str = ""
    pending: bool = False
    currency: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None

    def content_hash(self) -> str:
        """Digest of everything that defines the transaction (not its reference)."""
        canonical = {
            "description": self.description,
            "pending": self.pending,
            "currency": self.currency,
            "metadata": self.metadata,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "postings": [[p.account, p.direction, p.amount] for p in self.postings],
        }
        return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class ItemResult:
    index: int
    status: str  # created | exists | error
    transaction: Transaction | None = None
    error: LedgerError | None = None


class BatchRejected(LedgerError):
    code = "batch_rejected"
    status = 422
    title = "Batch rejected; nothing was applied"


def _check_currency(currency: Any) -> None:
    """An active ISO 4217 code (the kit's one list); ``XXX``, ``XTS``, metals and units of account are not."""
    if not currency_is_valid(currency):
        detail = f"{currency!r} is not an active ISO 4217 currency code that Atrium accepts."
        error = {"field": "currency", "pointer": "#/currency", "code": "invalid_currency", "detail": detail}
        raise InvalidCurrency(detail, extra={"errors": [error]})


def _check_shape(item: TransactionInput) -> None:
    if item.currency is not None:
        _check_currency(item.currency)
    if item.metadata:
        metadata_check(item.metadata, error=InvalidMetadata)
    if len(item.postings) < 2:
        raise TooFewPostings("A transaction needs at least two postings.")
    debits = credits = 0
    for index, posting in enumerate(item.postings):
        amount = posting.amount
        if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
            raise InvalidAmount(f"postings[{index}].amount must be an integer from 1 to 2^63-1, got {amount!r}.")
        if posting.direction == Direction.DEBIT:
            debits += amount
        else:
            credits += amount
    if debits > MAX_AMOUNT:
        raise InvalidAmount("The transaction's total exceeds 2^63-1.")
    if debits != credits:
        raise Unbalanced(f"Debits ({debits}) do not equal credits ({credits}).")


def _apply(account: Account, direction: str, amount: int, *, pending: bool, sign: int = 1) -> None:
    column = f"{'debits' if direction == Direction.DEBIT else 'credits'}_{'pending' if pending else 'posted'}"
    value = getattr(account, column) + sign * amount
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"Account {account.id} would exceed the largest representable total.")
    setattr(account, column, value)


def _checked_total(account: Account) -> int:
    """The sum the overdraft check constraint computes (posted plus pending on the side that lowers the balance)."""
    if account.normal_balance == NormalBalance.CREDIT:
        return account.debits_posted + account.debits_pending
    return account.credits_posted + account.credits_pending


def _snapshot(account: Account) -> tuple[int, ...]:
    return tuple(getattr(account, f) for f in BALANCE_FIELDS)


def _restore(account: Account, values: tuple[int, ...]) -> None:
    for name, value in zip(BALANCE_FIELDS, values, strict=True):
        setattr(account, name, value)


def _lock_references(pipeline: Pipeline, references: list[str]) -> None:
    """Serialize concurrent writers of one reference (sorted keys: batches sharing references never deadlock)."""
    if references:
        pipeline.add(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT DISTINCT hashtextextended(r, 42) AS k FROM unnest(%s::text[]) AS r ORDER BY k) AS keys",
            [references],
        )


def _existing_ids(pipeline: Pipeline, references: list[str]) -> int | None:
    """Queue the lookup of transactions already holding these references (after their advisory locks)."""
    if not references:
        return None
    return pipeline.add(
        f"SELECT id FROM {Transaction._meta.db_table} WHERE reference = ANY(%s)",  # noqa: S608  (no user input)
        [references],
    )


def _existing_load(ids: list[str]) -> dict[str, Transaction]:
    """Replays are rare: full rows (with postings) are loaded only when a reference already exists."""
    if not ids:
        return {}
    return {t.reference: t for t in Transaction.objects.filter(pk__in=ids).prefetch_related("postings")}


# What the write path needs of an account (metadata and names are not read there).
_LOCK_FIELDS = (
    "id",
    "currency",
    "normal_balance",
    "status",
    "overdraft_limit",
    "allow_negative",
    *BALANCE_FIELDS,
)


def _lock_accounts_queue(pipeline: Pipeline, ids: set[str]) -> int | None:
    """Queue the lock of the accounts in id order (so concurrent writers never deadlock), loading what the
    checks need. Raw SQL: on the single-transfer path the ORM's query compilation cost more than the query."""
    if not ids:
        return None
    return pipeline.add(
        f"SELECT {', '.join(_LOCK_FIELDS)} FROM {Account._meta.db_table} "  # noqa: S608  (no user input)
        "WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        [sorted(ids)],
    )


def _accounts_from(rows: list[tuple[Any, ...]]) -> dict[str, Account]:
    return {row[0]: Account.from_db(connection.alias, list(_LOCK_FIELDS), row) for row in rows}


def _lock_accounts(ids: set[str]) -> dict[str, Account]:
    """Lock the accounts in id order and load what the checks need (one statement)."""
    pipeline = Pipeline()
    handle = _lock_accounts_queue(pipeline, ids)
    if handle is None:
        return {}
    pipeline.run()
    return _accounts_from(pipeline.rows(handle))


def _write_accounts(pipeline: Pipeline, accounts: list[Account], now: datetime) -> None:
    if not accounts:
        return
    rows = ", ".join(["(%s, %s::bigint, %s::bigint, %s::bigint, %s::bigint)"] * len(accounts))
    params: list[Any] = []
    for a in accounts:
        params.extend([a.id, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending])
    table = Account._meta.db_table
    pipeline.add(
        f"UPDATE {table} AS a SET debits_posted = v.dp, credits_posted = v.cp, "  # noqa: S608  (no user input)
        f"debits_pending = v.dpe, credits_pending = v.cpe, updated_at = %s "
        f"FROM (VALUES {rows}) AS v(id, dp, cp, dpe, cpe) WHERE a.id = v.id",
        [now, *params],
    )


# Below this many transactions two multi-row INSERTs beat COPY's extra protocol round trips.
COPY_THRESHOLD = 10
_TXN_COLUMNS = (
    "id, reference, description, currency, status, metadata, content_hash, created_at, posted_at, voided_at, expires_at"
)
_POSTING_COLUMNS = "transaction_id, account_id, direction, amount, created_at"


def _transaction_row(t: Transaction) -> tuple[Any, ...]:
    return (
        t.id,
        t.reference,
        t.description,
        t.currency,
        t.status,
        json.dumps(t.metadata),
        t.content_hash,
        t.created_at,
        t.posted_at,
        t.voided_at,
        t.expires_at,
    )


def _posting_row(p: Posting) -> tuple[Any, ...]:
    return (p.transaction_id, p.account_id, p.direction, p.amount, p.created_at)


def _instance(model: type[M], **values: Any) -> M:
    """A model instance of a row about to be inserted, without ``Model.__init__``: on the batch path the
    constructors (defaults, descriptors, signals) cost more than writing the rows. Every concrete field
    must be given (a missing one would read as deferred); the row is written by :func:`_write`."""
    obj = model.__new__(model)
    obj.__dict__.update(values)
    state = ModelState()
    state.adding = False
    state.db = connection.alias
    obj._state = state
    return obj


def _write(
    tx: WriteTransaction,
    accounts: list[Account],
    transactions: list[Transaction],
    postings: list[Posting],
    now: datetime,
    events: list[dict[str, Any]] | None = None,
) -> None:
    """Write the new balances and rows and their audit events, and commit. A few transactions: the UPDATE,
    two multi-row INSERTs, the audit events' INSERT and the COMMIT in one round trip. Many: COPY after the
    UPDATE (binding thousands of INSERT parameters cost more CPU than PostgreSQL spends storing them; COPY
    cannot be pipelined), then the events' INSERT and COMMIT.
    Constraints and triggers apply to COPY as to INSERT."""
    pipeline = Pipeline()
    _write_accounts(pipeline, accounts, now)
    if not transactions:
        ledger_audit.queue_events(pipeline, tx, events or [])
        tx.commit(pipeline)
        pipeline.run()
        return
    txn_table, posting_table = Transaction._meta.db_table, Posting._meta.db_table
    if len(transactions) < COPY_THRESHOLD:
        txn_values = ", ".join(["(%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)"] * len(transactions))
        posting_values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(postings))
        pipeline.add(
            f"INSERT INTO {txn_table} ({_TXN_COLUMNS}) VALUES {txn_values}",  # noqa: S608  (no user input)
            [value for t in transactions for value in _transaction_row(t)],
        )
        pipeline.add(
            f"INSERT INTO {posting_table} ({_POSTING_COLUMNS}) VALUES {posting_values}",  # noqa: S608
            [value for p in postings for value in _posting_row(p)],
        )
        ledger_audit.queue_events(pipeline, tx, events or [])
        tx.commit(pipeline)
        pipeline.run()
        return
    pipeline.run()
    with connection.wrap_database_errors:
        raw = connection.connection.cursor()
        with raw.copy(f"COPY {txn_table} ({_TXN_COLUMNS}) FROM STDIN") as copy:
            for t in transactions:
                copy.write_row(_transaction_row(t))
        with raw.copy(f"COPY {posting_table} ({_POSTING_COLUMNS}) FROM STDIN") as copy:
            for p in postings:
                copy.write_row(_posting_row(p))
        ledger_audit.copy_events(raw, tx, events or [])
    commit = Pipeline()
    tx.commit(commit)
    commit.run()


def _create_batch(items: list[TransactionInput], atomic: bool) -> list[ItemResult]:
    now = timezone.now()
    results: list[ItemResult | None] = [None] * len(items)
    hashes: dict[int, str] = {}
    for index, item in enumerate(items):
        try:
            _check_shape(item)
            hashes[index] = item.content_hash()
        except LedgerError as exc:
            results[index] = ItemResult(index, "error", error=exc)
    valid = [i for i in range(len(items)) if results[i] is None]

    with WriteTransaction() as tx:
        # One round trip: BEGIN, the reference locks, the lookup of existing references, the account locks.
        references = sorted({items[i].reference for i in valid})
        pipeline = Pipeline()
        tx.begin(pipeline)
        _lock_references(pipeline, references)
        existing_handle = _existing_ids(pipeline, references)
        accounts_handle = _lock_accounts_queue(pipeline, {p.account for i in valid for p in items[i].postings})
        pipeline.run()
        existing_ids = [row[0] for row in pipeline.rows(existing_handle)] if existing_handle is not None else []
        existing = _existing_load(existing_ids)
        accounts = _accounts_from(pipeline.rows(accounts_handle)) if accounts_handle is not None else {}
        new_transactions: list[Transaction] = []
        new_postings: list[Posting] = []
        created_here: dict[str, tuple[str, Transaction]] = {}
        touched: dict[str, Account] = {}

        for index in valid:
            item = items[index]
            try:
                results[index] = _create_one(
                    index, item, hashes[index], existing, created_here, accounts, touched, now, new_postings
                )
                if results[index].status == "created":
                    new_transactions.append(results[index].transaction)
            except LedgerError as exc:
                results[index] = ItemResult(index, "error", error=exc)

        final = [r for r in results if r is not None]
        if atomic and any(r.status == "error" for r in final):
            raise BatchRejected(
                "At least one transaction was refused, so none were applied.",
                extra={"results": [result_as_dict(r) for r in final]},
            )
        context = audit_context()
        events = [
            ledger_audit.created_event(r.transaction, context, now)
            if r.status == "created"
            else _refused_create_event(r.error, items[r.index].reference, context)
            for r in final
            if r.status != "exists"
        ]
        _write(tx, list(touched.values()), new_transactions, new_postings, now, events)
    if len(new_transactions) == 1:
        txn = new_transactions[0]
        log.info("ledger.transaction_created", transaction_id=txn.id, reference=txn.reference, status=txn.status)
    elif new_transactions:
        # One line per batch: a line per transaction would cost more than writing them.
        log.info(
            "ledger.transactions_created",
            count=len(new_transactions),
            first_id=new_transactions[0].id,
            last_id=new_transactions[-1].id,
        )
    return final


def _create_one(
    index: int,
    item: TransactionInput,
    content_hash: str,
    existing: dict[str, Transaction],
    created_here: dict[str, tuple[str, Transaction]],
    accounts: dict[str, Account],
    touched: dict[str, Account],
    now: datetime,
    new_postings: list[Posting],
) -> ItemResult:
    prior = existing.get(item.reference)
    if prior is not None or item.reference in created_here:
        prior_hash, prior_txn = (prior.content_hash, prior) if prior is not None else created_here[item.reference]
        if prior_hash != content_hash:
            raise ReferenceConflict(f"Reference {item.reference!r} was used for a different transaction.")
        return ItemResult(index, "exists", transaction=prior_txn)

    involved: list[Account] = []
    for posting in item.postings:
        account = accounts.get(posting.account)
        if account is None:
            raise AccountNotFound(f"No account {posting.account}.")
        involved.append(account)
    currencies = {a.currency for a in involved}
    if len(currencies) > 1 or (item.currency and item.currency not in currencies):
        found = ", ".join(sorted(currencies))
        raise CurrencyMismatch(f"All postings must be in {item.currency or 'one currency'}; accounts are in {found}.")
    for account in involved:
        if account.status == AccountStatus.FROZEN:
            raise AccountFrozen(f"Account {account.id} is frozen.")
        if account.status == AccountStatus.CLOSED:
            raise AccountClosed(f"Account {account.id} is closed.")

    before = {a.id: _snapshot(a) for a in involved}
    try:
        for posting, account in zip(item.postings, involved, strict=True):
            _apply(account, posting.direction, posting.amount, pending=item.pending)
        for account in involved:
            if not account.allow_negative and account.available < 0:
                raise InsufficientFunds(
                    f"Account {account.id} would have {account.available} available; "
                    f"its overdraft limit is {account.overdraft_limit}."
                )
            if not account.allow_negative and _checked_total(account) > MAX_AMOUNT:
                # PostgreSQL's account_available_within_limit adds these two bigints: keep it from overflowing.
                raise InvalidAmount(f"Account {account.id} would exceed the largest representable total.")
    except LedgerError:
        for account in involved:
            _restore(account, before[account.id])
        raise

    for account in involved:
        touched[account.id] = account
    txn = _instance(
        Transaction,
        id=id_new("txn"),
        reference=item.reference,
        description=item.description,
        currency=involved[0].currency,
        status=TransactionStatus.PENDING if item.pending else TransactionStatus.POSTED,
        metadata=item.metadata,
        content_hash=content_hash,
        created_at=now,
        posted_at=None if item.pending else now,
        voided_at=None,
        expires_at=item.expires_at if item.pending else None,
    )
    postings = [
        _instance(
            Posting,
            id=None,
            transaction_id=txn.id,
            account_id=account.id,
            direction=p.direction,
            amount=p.amount,
            created_at=now,
        )
        for p, account in zip(item.postings, involved, strict=True)
    ]
    txn.postings_list = postings  # type: ignore[attr-defined]  (for the response, without a query)
    new_postings.extend(postings)
    created_here[item.reference] = (content_hash, txn)
    return ItemResult(index, "created", transaction=txn)


def _refused_create_event(error: Any, reference: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    return ledger_audit.refused_event(
        "ledger.transaction.created", error, object_type="transaction", context=context, reference=reference
    )


def transactions_create(
    *, items: list[TransactionInput], atomic: bool = False, isolate: bool = True
) -> list[ItemResult]:
    """Create many transactions in one database transaction; each gets its own result.

    With ``atomic=True`` one refusal rejects them all (``BatchRejected`` carries every result). Every
    created transaction and every refused one is audited; replays of an existing reference are not.
    A rejected atomic batch leaves one failure event per item (committed after the rollback): the item's
    own code, or ``batch_rejected`` for the items that were only rejected with the rest.

    With ``isolate`` (batches), an item meeting an unexpected error fails alone (:func:`_create_isolating`);
    without it (a single transaction's own endpoint), the error is raised.
    """
    try:
        if not isolate:
            return with_retry(lambda: _create_batch(items, atomic))
        return _create_isolating(items, atomic)
    except BatchRejected as exc:
        transactions_refused(refusals=batch_refusals([item.reference for item in items], exc.extra["results"]))
        raise


def _item_error(exc: Exception) -> bool:
    """Whether ``exc`` from a batch may be an item's fault: not a refusal (that is already the item's result),
    and not the database being away or busy (:func:`services.kit.db.database_transient`), which fails the whole
    call (503, retried by the caller) — splitting the batch because of it would blame innocent items."""
    return not isinstance(exc, LedgerError) and not database_transient(exc)


def _storable(value: Any, limit: int = 200) -> str:
    """``value`` as text PostgreSQL can store, for the audit event of an item that may be poisoned by its text."""
    return str(value)[:limit].replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def _unexpected(exc: Exception) -> str:
    """What an item's ``processing_error`` says: the error class only (its text may hold other items' data)."""
    return f"Unexpected {type(exc).__name__} while processing this item; the ledger's log has the traceback."


def _create_isolating(items: list[TransactionInput], atomic: bool) -> list[ItemResult]:
    """:func:`_create_batch`, isolating a poisoned item (:func:`services.kit.batches.batch_isolate`): an
    unexpected error (not a refusal, not an unavailable database) splits the batch, each half its own database
    transaction, until the item that raises is alone; it fails with ``processing_error`` and the others are
    applied. An atomic batch is all or nothing: the poisoned item is located with dry runs and the batch
    rejected, naming it."""
    if atomic:
        try:
            return with_retry(lambda: _create_batch(items, atomic=True))
        except Exception as exc:
            if not _item_error(exc):
                raise
            raise _poisoned_atomic(items, exc) from exc

    def alone(item: TransactionInput, exc: Exception) -> list[ItemResult]:
        log.error("ledger.batch_item_failed", reference=item.reference, error=type(exc).__name__, exc_info=exc)
        error = ProcessingError(_unexpected(exc))
        transactions_refused(refusals=[(_storable(item.reference), error)])
        return [ItemResult(0, "error", error=error)]

    return batch_isolate(
        items,
        lambda part: with_retry(lambda: _create_batch(list(part), atomic=False)),
        item_error=_item_error,
        alone=alone,
        merge=_shifted,
        event="ledger.batch_split",
    )


def _shifted(left: list[Any], right: list[Any]) -> list[Any]:
    """Two halves' results as one list: the right half's indexes follow the left half's items."""
    for result in right:
        result.index += len(left)
    return left + right


def _poisoned_atomic(items: list[TransactionInput], exc: Exception) -> BatchRejected:
    """The rejection of an atomic batch that met an unexpected error, naming the first item that raises: the
    shortest failing prefix, found by binary search over dry runs (each rolled back), so items that depend on
    earlier ones (their balances) are judged as the batch would have judged them."""

    def raises(count: int) -> bool:
        try:
            with transaction.atomic():
                try:
                    _create_batch(items[:count], False)
                finally:
                    transaction.set_rollback(True)
        except LedgerError:
            return False
        except Exception:
            return True
        return False

    low, high = 1, len(items)
    while low < high:
        middle = (low + high) // 2
        if raises(middle):
            high = middle
        else:
            low = middle + 1
    poisoned = low - 1
    log.error("ledger.atomic_batch_poisoned", index=poisoned, reference=items[poisoned].reference, error=str(exc))
    result = {"index": poisoned, "status": "error", "code": ProcessingError.code, "detail": _unexpected(exc)}
    return BatchRejected("An item met an unexpected error, so none were applied.", extra={"results": [result]})


def batch_refusals(references: list[str], results: list[dict[str, Any]]) -> list[tuple[str, LedgerError]]:
    """``(reference, error)`` of every item of a rejected atomic batch, in item order: the item's own refusal
    (from ``results``, by index) or ``batch_rejected``."""
    refused = {r["index"]: r for r in results if r.get("code")}
    out: list[tuple[str, LedgerError]] = []
    for index, reference in enumerate(references):
        result = refused.get(index)
        if result is not None:
            out.append((reference, LedgerError(result.get("detail"), code=result["code"])))
        else:
            out.append((reference, BatchRejected("Rejected with the rest of its atomic batch.")))
    return out


def transactions_refused(*, refusals: list[tuple[str, Any]]) -> None:
    """Audit transaction creations that were refused but whose refusal no committed write recorded: the items of
    a rejected atomic batch, and batch items refused as malformed before reaching the ledger. ``refusals``
    are ``(reference, error with a code)``; one failure event each, in a short transaction of their own."""
    ledger_audit.record_after_rollback(ledger_audit.refused_creations(refusals))


def transaction_create(*, item: TransactionInput) -> tuple[Transaction, bool]:
    """Create one transaction; return it and whether it was new (False: an idempotent replay)."""
    (result,) = transactions_create(items=[item], atomic=False, isolate=False)
    if result.error is not None:
        raise result.error
    return result.transaction, result.status == "created"


def result_as_dict(result: ItemResult) -> dict[str, Any]:
    body: dict[str, Any] = {"index": result.index, "status": result.status}
    if result.transaction is not None:
        body["id"] = result.transaction.id
    if result.error is not None:
        body["code"] = result.error.code
        body["detail"] = result.error.detail
    return body


def _settle(transaction_id: str, *, post: bool, now: datetime | None = None, reason: str | None = None) -> Transaction:
    def run() -> Transaction:
        # The ORM's SELECT … FOR UPDATE needs Django's transaction, so here the write joins it.
        with transaction.atomic(), WriteTransaction() as tx:
            txn = Transaction.objects.select_for_update().filter(pk=transaction_id).first()
            if txn is None:
                raise TransactionNotFound(f"No transaction {transaction_id}.")
            if txn.status != TransactionStatus.PENDING:
                raise TransactionNotPending(f"Transaction {txn.id} is {txn.status}, not pending.")
            postings = list(txn.postings.all())
            accounts = _lock_accounts({p.account_id for p in postings})
            if post:
                for account in accounts.values():
                    if account.status != AccountStatus.OPEN:
                        raise (AccountFrozen if account.status == AccountStatus.FROZEN else AccountClosed)(
                            f"Account {account.id} is {account.status}; the hold can only be voided."
                        )
            when = now or timezone.now()
            for p in postings:
                account = accounts[p.account_id]
                _apply(account, p.direction, p.amount, pending=True, sign=-1)
                if post:
                    _apply(account, p.direction, p.amount, pending=False)
            txn.status = TransactionStatus.POSTED if post else TransactionStatus.VOIDED
            txn.postings_list = postings  # type: ignore[attr-defined]
            event = audit_event(
                action,
                object_type="transaction",
                object_id=txn.id,
                metadata={**ledger_audit.transaction_metadata(txn), **({"reason": reason} if reason else {})},
            )
            _write(tx, list(accounts.values()), [], [], when, [event])
            if post:
                txn.posted_at = when
            else:
                txn.voided_at = when
            txn.save(update_fields=["status", "posted_at", "voided_at"])
            txn.postings_list = postings  # type: ignore[attr-defined]
            return txn

    action = "ledger.transaction.posted" if post else "ledger.transaction.voided"
    try:
        txn = with_retry(run)
    except LedgerError as exc:
        extra = {"reason": reason} if reason else {}
        ledger_audit.record_after_rollback(
            [ledger_audit.refused_event(action, exc, object_type="transaction", object_id=transaction_id, **extra)]
        )
        raise
    log.info("ledger.transaction_settled", transaction_id=txn.id, status=txn.status)
    return txn


def transaction_post(*, transaction_id: str) -> Transaction:
    """Post a pending transaction (two-phase commit): its held amounts become posted."""
    return _settle(transaction_id, post=True)


def transaction_void(*, transaction_id: str) -> Transaction:
    """Void a pending transaction: its held amounts are released."""
    return _settle(transaction_id, post=False)


@dataclass
class SettleResult:
    """One item of :func:`transactions_settle`: ``posted`` / ``voided`` (now or already), or ``error``."""

    index: int
    status: str
    transaction: Transaction | None = None
    error: LedgerError | None = None


def transactions_settle(*, transaction_ids: list[str], post: bool) -> list[SettleResult]:
    """Post (or void) many pending transactions in one database transaction; each item has its own result.

    Idempotent per item: a transaction already posted (voided) is reported ``posted`` (``voided``) again.
    Refusals — unknown id, not pending, a frozen or closed account when posting — are errors of their item
    only, audited with outcome ``failure``; the other items are settled. The accounts are locked once, in id
    order, their totals written with one statement, every audit event with one INSERT.
    """
    results = _settle_isolating(transaction_ids, post)
    log.info("ledger.transactions_settled", action="post" if post else "void", items=len(results))
    return results


def _settle_isolating(transaction_ids: list[str], post: bool) -> list[SettleResult]:
    """:func:`_settle_batch`, isolating a poisoned item as :func:`_create_isolating` does."""
    action = "ledger.transaction.posted" if post else "ledger.transaction.voided"

    def alone(transaction_id: str, exc: Exception) -> list[SettleResult]:
        log.error("ledger.batch_item_failed", transaction_id=transaction_id, error=type(exc).__name__, exc_info=exc)
        error = ProcessingError(_unexpected(exc))
        refused = ledger_audit.refused_event(
            action, error, object_type="transaction", object_id=_storable(transaction_id, 64)
        )
        ledger_audit.record_after_rollback([refused])
        return [SettleResult(0, "error", error=error)]

    return batch_isolate(
        transaction_ids,
        lambda part: _settle_batch(list(part), post),
        item_error=_item_error,
        alone=alone,
        merge=_shifted,
        event="ledger.batch_split",
    )


def _settle_batch(transaction_ids: list[str], post: bool) -> list[SettleResult]:
    target = TransactionStatus.POSTED if post else TransactionStatus.VOIDED
    action = "ledger.transaction.posted" if post else "ledger.transaction.voided"

    def run() -> list[SettleResult]:
        with transaction.atomic(), WriteTransaction() as tx:
            unique = sorted(set(transaction_ids))
            txns = {t.id: t for t in Transaction.objects.select_for_update().filter(pk__in=unique).order_by("id")}
            pending = [i for i in unique if i in txns and txns[i].status == TransactionStatus.PENDING]
            postings: dict[str, list[Posting]] = {i: [] for i in pending}
            for posting in Posting.objects.filter(transaction_id__in=pending).order_by("id"):
                postings[posting.transaction_id].append(posting)
            accounts = _lock_accounts({p.account_id for ps in postings.values() for p in ps})
            when = timezone.now()
            context = audit_context()
            results: list[SettleResult] = []
            settled: list[Transaction] = []
            events: list[dict[str, Any]] = []
            seen: dict[str, SettleResult] = {}
            for index, transaction_id in enumerate(transaction_ids):
                if transaction_id in seen:  # the same id twice: the same answer
                    earlier = seen[transaction_id]
                    results.append(SettleResult(index, earlier.status, earlier.transaction, earlier.error))
                    continue
                result = _settle_one(index, txns.get(transaction_id), transaction_id, postings, accounts, post, target)
                if result.error is not None:
                    events.append(
                        ledger_audit.refused_event(
                            action, result.error, object_type="transaction", object_id=transaction_id, context=context
                        )
                    )
                elif transaction_id in postings and result.transaction is not None:
                    txn = result.transaction
                    txn.postings_list = postings[transaction_id]  # type: ignore[attr-defined]
                    settled.append(txn)
                    events.append(
                        audit_event(
                            action,
                            object_type="transaction",
                            object_id=txn.id,
                            metadata=ledger_audit.transaction_metadata(txn),
                            context=context,
                        )
                    )
                seen[transaction_id] = result
                results.append(result)
            touched = {p.account_id for t in settled for p in postings[t.id]}
            _write(tx, [a for a in accounts.values() if a.id in touched], [], [], when, events)
            if settled:
                stamp = {"posted_at": when} if post else {"voided_at": when}
                Transaction.objects.filter(id__in=[t.id for t in settled]).update(status=target, **stamp)
                for txn in settled:
                    txn.status = target
                    setattr(txn, "posted_at" if post else "voided_at", when)
            return results

    return with_retry(run)


def _settle_one(
    index: int,
    txn: Transaction | None,
    transaction_id: str,
    postings: dict[str, list[Posting]],
    accounts: dict[str, Account],
    post: bool,
    target: str,
) -> SettleResult:
    """Check and apply one item of a settle batch to the in-memory accounts."""
    if txn is None:
        return SettleResult(index, "error", error=TransactionNotFound(f"No transaction {transaction_id}."))
    if txn.status == target:
        return SettleResult(index, target, transaction=txn)
    if txn.status != TransactionStatus.PENDING:
        error = TransactionNotPending(f"Transaction {txn.id} is {txn.status}, not pending.")
        return SettleResult(index, "error", transaction=txn, error=error)
    mine = [accounts[p.account_id] for p in postings[txn.id]]
    if post:
        for account in mine:
            if account.status != AccountStatus.OPEN:
                kind = AccountFrozen if account.status == AccountStatus.FROZEN else AccountClosed
                error = kind(f"Account {account.id} is {account.status}; the hold can only be voided.")
                return SettleResult(index, "error", transaction=txn, error=error)
    before = {a.id: _snapshot(a) for a in mine}
    try:
        for p in postings[txn.id]:
            account = accounts[p.account_id]
            _apply(account, p.direction, p.amount, pending=True, sign=-1)
            if post:
                _apply(account, p.direction, p.amount, pending=False)
    except LedgerError as error:
        # e.g. posting would carry an account's total past 2^63-1: this item's refusal, not the batch's.
        for account in mine:
            _restore(account, before[account.id])
        return SettleResult(index, "error", transaction=txn, error=error)
    return SettleResult(index, target, transaction=txn)


def settle_result_as_dict(result: SettleResult) -> dict[str, Any]:
    body: dict[str, Any] = {"index": result.index, "status": result.status}
    if result.transaction is not None:
        body["id"] = result.transaction.id
    if result.error is not None:
        body["code"] = result.error.code
        body["detail"] = result.error.detail
    return body


def transactions_expire(*, now: datetime | None = None, limit: int = 500) -> int:
    """Void pending transactions whose ``expires_at`` has passed; return how many."""
    now = now or timezone.now()
    ids = list(
        Transaction.objects.filter(status=TransactionStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("id", flat=True)[:limit]
    )
    voided = 0
    for transaction_id in ids:
        try:
            _settle(transaction_id, post=False, now=now, reason="expired")
            voided += 1
        except TransactionNotPending:
            continue  # posted or voided meanwhile
        except Exception as exc:
            if database_transient(exc):
                raise
            # One hold that cannot be voided must not keep the others from expiring; it is tried again next run.
            log.exception("ledger.expire_failed", transaction_id=transaction_id)
    if voided:
        log.info("ledger.transactions_expired", count=voided)
    return voided
