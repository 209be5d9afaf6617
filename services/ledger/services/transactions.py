"""Ledger writes of transactions: create one or a batch (all or nothing, or each item on its own).

Every transaction write follows one path (:func:`transactions_create`): validate what
needs no database, take an advisory lock per reference (so concurrent creations of
one reference serialize), lock every account involved in id order (no deadlocks),
check and apply the whole batch in memory, then write it with three statements
(one UPDATE of the accounts, one INSERT of transactions, one of postings, one of the outbox's
audit events and ``ledger.transaction.posted`` domain events; COPY for large batches:
:func:`services.ledger.services.bulk.write`). Statements that do not
depend on each other's results are pipelined, so a single transfer costs three network
round trips (locks and lookups, writes, COMMIT) and holds its account locks for two of them.
PostgreSQL's constraints and triggers are the second line of defence.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_context
from services.kit.batches import batch_isolate
from services.kit.context import request_id_var
from services.kit.db import Pipeline, WriteTransaction
from services.kit.ids import id_new
from services.kit.logs import get_logger
from services.kit.metadata import metadata_check
from services.ledger import audit as ledger_audit
from services.ledger import events as ledger_events
from services.ledger import queries
from services.ledger.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotFound,
    BatchRejected,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    InvalidMetadata,
    LedgerError,
    ProcessingError,
    ReferenceConflict,
    TooFewPostings,
    Unbalanced,
)
from services.ledger.models import (
    MAX_AMOUNT,
    Account,
    AccountStatus,
    Direction,
    Posting,
    Transaction,
    TransactionStatus,
)
from services.ledger.services import bulk
from services.ledger.services.accounts import currency_check

log = get_logger(__name__)


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
    # The request this item belongs to (a batch item's own, e.g. its payment's); "" means the call's own.
    request_id: str = ""

    def content_hash(self) -> str:
        """Digest of everything that defines the transaction (not its reference, nor its request id: a replay
        under another request is the same transaction)."""
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


def _check_shape(item: TransactionInput) -> None:
    if item.currency is not None:
        currency_check(item.currency)
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


def _lock_references(pipeline: Pipeline, references: list[str]) -> None:
    """Serialize concurrent writers of one reference (sorted keys: batches sharing references never deadlock)."""
    if references:
        pipeline.add(queries.REFERENCES_LOCK, [references])


def _existing_ids(pipeline: Pipeline, references: list[str]) -> int | None:
    """Queue the lookup of transactions already holding these references (after their advisory locks)."""
    if not references:
        return None
    return pipeline.add(queries.TRANSACTION_IDS_BY_REFERENCE, [references])


def _existing_load(ids: list[str]) -> dict[str, Transaction]:
    """Replays are rare: full rows (with postings) are loaded only when a reference already exists."""
    if not ids:
        return {}
    return {t.reference: t for t in Transaction.objects.filter(pk__in=ids).prefetch_related("postings")}


def _create_batch(items: list[TransactionInput], atomic: bool) -> list[ItemResult]:
    now = timezone.now()
    call_request_id = request_id_var.get() or ""
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
        accounts_handle = bulk.accounts_lock_queue(pipeline, {p.account for i in valid for p in items[i].postings})
        pipeline.run()
        existing_ids = [row[0] for row in pipeline.rows(existing_handle)] if existing_handle is not None else []
        existing = _existing_load(existing_ids)
        accounts = bulk.accounts_from(pipeline.rows(accounts_handle)) if accounts_handle is not None else {}
        new_transactions: list[Transaction] = []
        new_postings: list[Posting] = []
        created_here: dict[str, tuple[str, Transaction]] = {}
        touched: dict[str, Account] = {}

        for index in valid:
            item = items[index]
            try:
                results[index] = _create_one(
                    index,
                    item,
                    hashes[index],
                    existing,
                    created_here,
                    accounts,
                    touched,
                    now,
                    new_postings,
                    item.request_id or call_request_id,
                )
                if results[index].status == "created":
                    new_transactions.append(results[index].transaction)
            except LedgerError as exc:
                results[index] = ItemResult(index, "error", error=exc)

        final = [r for r in results if r is not None]
        if atomic and any(r.status == "error" for r in final):
            raise BatchRejected(
                "At least one transaction was refused, so none were applied.",
                extra={"results": [bulk.result_as_dict(r) for r in final]},
            )
        context = audit_context()
        events: list[dict[str, Any]] = []
        domain: list[dict[str, Any]] = []  # ledger.transaction.posted of each created posted (not pending) one
        for r in final:
            if r.status == "created":
                audit = ledger_audit.created_event(r.transaction, context, now, items[r.index].request_id)
                events.append(audit)
                if r.transaction.status == TransactionStatus.POSTED:
                    domain.append(ledger_events.transaction_event(r.transaction, audit))
            elif r.status != "exists":
                events.append(_refused_create_event(r.error, items[r.index], context))
        bulk.write(tx, list(touched.values()), new_transactions, new_postings, now, events, domain)
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
    request_id: str,
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

    before = {a.id: bulk.balances_snapshot(a) for a in involved}
    try:
        for posting, account in zip(item.postings, involved, strict=True):
            bulk.amount_apply(account, posting.direction, posting.amount, pending=item.pending)
        for account in involved:
            if not account.allow_negative and account.available < 0:
                raise InsufficientFunds(
                    f"Account {account.id} would have {account.available} available; "
                    f"its overdraft limit is {account.overdraft_limit}."
                )
            if not account.allow_negative and bulk.checked_total(account) > MAX_AMOUNT:
                # PostgreSQL's account_available_within_limit adds these two bigints: keep it from overflowing.
                raise InvalidAmount(f"Account {account.id} would exceed the largest representable total.")
    except LedgerError:
        for account in involved:
            bulk.balances_restore(account, before[account.id])
        raise

    for account in involved:
        touched[account.id] = account
    txn = bulk.instance(
        Transaction,
        id=id_new("txn"),
        reference=item.reference,
        description=item.description,
        currency=involved[0].currency,
        status=TransactionStatus.PENDING if item.pending else TransactionStatus.POSTED,
        metadata=item.metadata,
        content_hash=content_hash,
        request_id=request_id,
        created_at=now,
        posted_at=None if item.pending else now,
        voided_at=None,
        expires_at=item.expires_at if item.pending else None,
    )
    postings = [
        bulk.instance(
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


def _refused_create_event(error: Any, item: TransactionInput, context: dict[str, Any]) -> dict[str, Any]:
    return ledger_audit.refused_event(
        "ledger.transaction.created",
        error,
        object_type="transaction",
        context=context,
        request_id=item.request_id,
        reference=item.reference,
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
            return bulk.with_retry(lambda: _create_batch(items, atomic))
        return _create_isolating(items, atomic)
    except BatchRejected as exc:
        keys = [(item.reference, item.request_id) for item in items]
        transactions_refused(refusals=batch_refusals(keys, exc.extra["results"]))
        raise


def _create_isolating(items: list[TransactionInput], atomic: bool) -> list[ItemResult]:
    """:func:`_create_batch`, isolating a poisoned item (:func:`services.kit.batches.batch_isolate`): an
    unexpected error (not a refusal, not an unavailable database) splits the batch, each half its own database
    transaction, until the item that raises is alone; it fails with ``processing_error`` and the others are
    applied. An atomic batch is all or nothing: the poisoned item is located with dry runs and the batch
    rejected, naming it."""
    if atomic:
        try:
            return bulk.with_retry(lambda: _create_batch(items, atomic=True))
        except Exception as exc:
            if not bulk.item_error(exc):
                raise
            raise _poisoned_atomic(items, exc) from exc

    def alone(item: TransactionInput, exc: Exception) -> list[ItemResult]:
        log.error("ledger.batch_item_failed", reference=item.reference, error=type(exc).__name__, exc_info=exc)
        error = ProcessingError(bulk.unexpected(exc))
        transactions_refused(refusals=[(bulk.storable(item.reference), error, item.request_id)])
        return [ItemResult(0, "error", error=error)]

    return batch_isolate(
        items,
        lambda part: bulk.with_retry(lambda: _create_batch(list(part), atomic=False)),
        item_error=bulk.item_error,
        alone=alone,
        merge=bulk.shifted,
        event="ledger.batch_split",
    )


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
    result = {"index": poisoned, "status": "error", "code": ProcessingError.code, "detail": bulk.unexpected(exc)}
    return BatchRejected("An item met an unexpected error, so none were applied.", extra={"results": [result]})


def batch_refusals(keys: list[tuple[str, str]], results: list[dict[str, Any]]) -> list[tuple[str, LedgerError, str]]:
    """``(reference, error, request id)`` of every item of a rejected atomic batch, in item order, from each
    item's ``(reference, request id)``: the item's own refusal (from ``results``, by index) or
    ``batch_rejected``."""
    refused = {r["index"]: r for r in results if r.get("code")}
    out: list[tuple[str, LedgerError, str]] = []
    for index, (reference, request_id) in enumerate(keys):
        result = refused.get(index)
        if result is not None:
            out.append((reference, LedgerError(result.get("detail"), code=result["code"]), request_id))
        else:
            out.append((reference, BatchRejected("Rejected with the rest of its atomic batch."), request_id))
    return out


def transactions_refused(*, refusals: list[tuple[str, Any, str]]) -> None:
    """Audit transaction creations that were refused but whose refusal no committed write recorded: the items of
    a rejected atomic batch, and batch items refused as malformed before reaching the ledger. ``refusals``
    are ``(reference, error with a code, the item's request id or "" for the call's)``; one failure event
    each, in a short transaction of their own."""
    ledger_audit.record_after_rollback(ledger_audit.refused_creations(refusals))


def transaction_create(*, item: TransactionInput) -> tuple[Transaction, bool]:
    """Create one transaction; return it and whether it was new (False: an idempotent replay)."""
    (result,) = transactions_create(items=[item], atomic=False, isolate=False)
    if result.error is not None:
        raise result.error
    return result.transaction, result.status == "created"
