"""Ledger writes that settle holds (pending transactions): post or void one or a batch, and void the holds
whose ``expires_at`` has passed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_context, audit_event
from services.kit.batches import batch_isolate
from services.kit.db import WriteTransaction, database_transient
from services.kit.logs import get_logger
from services.ledger import audit as ledger_audit
from services.ledger import events as ledger_events
from services.ledger.errors import (
    AccountClosed,
    AccountFrozen,
    LedgerError,
    ProcessingError,
    TransactionNotFound,
    TransactionNotPending,
)
from services.ledger.models import Account, AccountStatus, Posting, Transaction, TransactionStatus
from services.ledger.services import bulk

log = get_logger(__name__)


def _settle(transaction_id: str, *, post: bool, now: datetime | None = None, reason: str | None = None) -> Transaction:
    def run() -> Transaction:
        # The ORM's SELECT … FOR UPDATE needs Django's transaction, so here the write joins it.
        with transaction.atomic(), WriteTransaction() as tx:
            txn = Transaction.objects.select_for_update().filter(pk=transaction_id).first()
            if txn is None:
                raise TransactionNotFound(f"No transaction {transaction_id}.")
            if txn.status != TransactionStatus.PENDING:
                raise TransactionNotPending(f"Transaction {txn.id} is {txn.status}, not pending.")
            postings = list(txn.postings.order_by("id"))  # as the API lists them (its answer, its event)
            accounts = bulk.accounts_lock({p.account_id for p in postings})
            if post:
                for account in accounts.values():
                    if account.status != AccountStatus.OPEN:
                        raise (AccountFrozen if account.status == AccountStatus.FROZEN else AccountClosed)(
                            f"Account {account.id} is {account.status}; the hold can only be voided."
                        )
            when = now or timezone.now()
            for p in postings:
                account = accounts[p.account_id]
                bulk.amount_apply(account, p.direction, p.amount, pending=True, sign=-1)
                if post:
                    bulk.amount_apply(account, p.direction, p.amount, pending=False)
            txn.status = TransactionStatus.POSTED if post else TransactionStatus.VOIDED
            if post:
                txn.posted_at = when
            else:
                txn.voided_at = when
            txn.postings_list = postings  # type: ignore[attr-defined]
            event = audit_event(
                action,
                object_type="transaction",
                object_id=txn.id,
                metadata={**ledger_audit.transaction_metadata(txn), **({"reason": reason} if reason else {})},
            )
            domain = [ledger_events.transaction_event(txn, event)]
            bulk.write(tx, list(accounts.values()), [], [], when, [event], domain)
            txn.save(update_fields=["status", "posted_at", "voided_at"])
            txn.postings_list = postings  # type: ignore[attr-defined]
            return txn

    action = "ledger.transaction.posted" if post else "ledger.transaction.voided"
    try:
        txn = bulk.with_retry(run)
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


def transactions_settle(
    *, transaction_ids: list[str], post: bool, request_ids: list[str] | None = None
) -> list[SettleResult]:
    """Post (or void) many pending transactions in one database transaction; each item has its own result.

    Idempotent per item: a transaction already posted (voided) is reported ``posted`` (``voided``) again.
    Refusals — unknown id, not pending, a frozen or closed account when posting — are errors of their item
    only, audited with outcome ``failure``; the other items are settled. The accounts are locked once, in id
    order, their totals written with one statement, every audit event with one INSERT.

    ``request_ids`` (same order as ``transaction_ids``; "" for none) are the items' own request ids: each
    item's audit event carries its own, else the call's.
    """
    if request_ids is not None and len(request_ids) != len(transaction_ids):
        raise ValueError("request_ids must have one entry per transaction id")
    items = list(zip(transaction_ids, request_ids or [""] * len(transaction_ids), strict=True))
    results = _settle_isolating(items, post)
    log.info("ledger.transactions_settled", action="post" if post else "void", items=len(results))
    return results


def _settle_isolating(items: list[tuple[str, str]], post: bool) -> list[SettleResult]:
    """:func:`_settle_batch`, isolating a poisoned item as :func:`_create_isolating` does."""
    action = "ledger.transaction.posted" if post else "ledger.transaction.voided"

    def alone(item: tuple[str, str], exc: Exception) -> list[SettleResult]:
        transaction_id, request_id = item
        log.error("ledger.batch_item_failed", transaction_id=transaction_id, error=type(exc).__name__, exc_info=exc)
        error = ProcessingError(bulk.unexpected(exc))
        refused = ledger_audit.refused_event(
            action,
            error,
            object_type="transaction",
            object_id=bulk.storable(transaction_id, 64),
            request_id=request_id,
        )
        ledger_audit.record_after_rollback([refused])
        return [SettleResult(0, "error", error=error)]

    return batch_isolate(
        items,
        lambda part: _settle_batch(list(part), post),
        item_error=bulk.item_error,
        alone=alone,
        merge=bulk.shifted,
        event="ledger.batch_split",
    )


def _settle_batch(items: list[tuple[str, str]], post: bool) -> list[SettleResult]:
    """Settle ``(transaction id, request id or "")`` items in one database transaction."""
    target = TransactionStatus.POSTED if post else TransactionStatus.VOIDED
    action = "ledger.transaction.posted" if post else "ledger.transaction.voided"

    def run() -> list[SettleResult]:
        with transaction.atomic(), WriteTransaction() as tx:
            unique = sorted({transaction_id for transaction_id, _ in items})
            txns = {t.id: t for t in Transaction.objects.select_for_update().filter(pk__in=unique).order_by("id")}
            pending = [i for i in unique if i in txns and txns[i].status == TransactionStatus.PENDING]
            postings: dict[str, list[Posting]] = {i: [] for i in pending}
            for posting in Posting.objects.filter(transaction_id__in=pending).order_by("id"):
                postings[posting.transaction_id].append(posting)
            accounts = bulk.accounts_lock({p.account_id for ps in postings.values() for p in ps})
            when = timezone.now()
            context = audit_context()
            results: list[SettleResult] = []
            settled: list[Transaction] = []
            events: list[dict[str, Any]] = []
            domain: list[dict[str, Any]] = []
            seen: dict[str, SettleResult] = {}
            for index, (transaction_id, request_id) in enumerate(items):
                if transaction_id in seen:  # the same id twice: the same answer
                    earlier = seen[transaction_id]
                    results.append(SettleResult(index, earlier.status, earlier.transaction, earlier.error))
                    continue
                result = _settle_one(index, txns.get(transaction_id), transaction_id, postings, accounts, post, target)
                if result.error is not None:
                    events.append(
                        ledger_audit.refused_event(
                            action,
                            result.error,
                            object_type="transaction",
                            object_id=transaction_id,
                            context=context,
                            request_id=request_id,
                        )
                    )
                elif transaction_id in postings and result.transaction is not None:
                    txn = result.transaction
                    txn.postings_list = postings[transaction_id]  # type: ignore[attr-defined]
                    settled.append(txn)
                    audit = audit_event(
                        action,
                        object_type="transaction",
                        object_id=txn.id,
                        metadata=ledger_audit.transaction_metadata(txn),
                        context=context,
                        request_id=request_id,
                    )
                    events.append(audit)
                    # The domain event shows the transaction as it is once written (the rows are updated below).
                    txn.status = target
                    setattr(txn, "posted_at" if post else "voided_at", when)
                    domain.append(ledger_events.transaction_event(txn, audit))
                seen[transaction_id] = result
                results.append(result)
            touched = {p.account_id for t in settled for p in postings[t.id]}
            bulk.write(tx, [a for a in accounts.values() if a.id in touched], [], [], when, events, domain)
            if settled:
                stamp = {"posted_at": when} if post else {"voided_at": when}
                Transaction.objects.filter(id__in=[t.id for t in settled]).update(status=target, **stamp)
                for txn in settled:
                    txn.status = target
                    setattr(txn, "posted_at" if post else "voided_at", when)
            return results

    return bulk.with_retry(run)


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
    before = {a.id: bulk.balances_snapshot(a) for a in mine}
    try:
        for p in postings[txn.id]:
            account = accounts[p.account_id]
            bulk.amount_apply(account, p.direction, p.amount, pending=True, sign=-1)
            if post:
                bulk.amount_apply(account, p.direction, p.amount, pending=False)
    except LedgerError as error:
        # e.g. posting would carry an account's total past 2^63-1: this item's refusal, not the batch's.
        for account in mine:
            bulk.balances_restore(account, before[account.id])
        return SettleResult(index, "error", transaction=txn, error=error)
    return SettleResult(index, target, transaction=txn)


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
