"""The write path's own transaction: outside any atomic block BEGIN and COMMIT travel in its pipelines.

These tests run without pytest-django's wrapping transaction (``transactional_db``), as a request in
production does, and check from a second connection what was really committed.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import IntegrityError, connection, connections, transaction

from services.ledger.errors import BatchRejected, InsufficientFunds
from services.ledger.models import Account, Transaction
from services.ledger.services import accounts, bulk, settlement, transactions
from services.ledger.services.transactions import PostingInput, TransactionInput

pytestmark = pytest.mark.django_db(transaction=True)


def _accounts() -> tuple[Account, Account]:
    world = accounts.account_create(name="world", currency="EUR", normal_balance="credit", allow_negative=True)
    alice = accounts.account_create(name="alice", currency="EUR", normal_balance="credit")
    return world, alice


def _transfer(reference: str, source: Account, destination: Account, amount: int, **fields) -> TransactionInput:
    return TransactionInput(
        reference=reference,
        postings=[
            PostingInput(source.id, "debit", amount),
            PostingInput(destination.id, "credit", amount),
        ],
        **fields,
    )


def _committed(sql: str, params: list) -> list[tuple]:
    """What another session sees: only committed rows."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        other.close()


def _idle() -> bool:
    return connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_transfer_outside_any_atomic_block_is_committed_and_leaves_no_transaction_open():
    world, alice = _accounts()
    assert not connection.in_atomic_block

    txn, created = transactions.transaction_create(item=_transfer("own-1", world, alice, 500))

    assert created
    assert _idle()
    assert _committed("SELECT reference, status FROM ledger_transaction WHERE id = %s", [txn.id]) == [
        ("own-1", "posted")
    ]
    assert _committed("SELECT credits_posted FROM ledger_account WHERE id = %s", [alice.id]) == [(500,)]


def test_a_refusal_rolls_back_and_the_connection_stays_usable():
    world, alice = _accounts()
    transactions.transaction_create(item=_transfer("fund", world, alice, 100))

    with pytest.raises(InsufficientFunds):
        transactions.transaction_create(item=_transfer("too-much", alice, world, 101))

    assert _idle()
    assert _committed("SELECT count(*) FROM ledger_transaction WHERE reference = 'too-much'", []) == [(0,)]
    # the same connection goes on working
    transactions.transaction_create(item=_transfer("after", alice, world, 100))
    assert Account.objects.get(pk=alice.id).available == 0


def test_a_database_error_in_the_final_pipeline_rolls_everything_back(monkeypatch):
    # given a write whose last statement fails in PostgreSQL (after the balances were updated)
    world, alice = _accounts()
    real = bulk.accounts_write

    def update_then_fail(pipeline, accounts, now):
        real(pipeline, accounts, now)
        pipeline.add("INSERT INTO ledger_transaction (id) VALUES (NULL)", [])  # violates NOT NULL

    monkeypatch.setattr(bulk, "accounts_write", update_then_fail)

    # when it runs
    with pytest.raises(IntegrityError):
        transactions.transaction_create(item=_transfer("doomed", world, alice, 700))

    # then neither the balances nor the transaction were committed, and nothing is left open
    assert _idle()
    assert _committed("SELECT credits_posted FROM ledger_account WHERE id = %s", [alice.id]) == [(0,)]
    assert _committed("SELECT count(*) FROM ledger_transaction", []) == [(0,)]
    monkeypatch.undo()
    transactions.transaction_create(item=_transfer("doomed", world, alice, 700))
    assert Account.objects.get(pk=alice.id).credits_posted == 700


def test_inside_a_callers_atomic_block_the_write_joins_it():
    world, alice = _accounts()

    # when the caller rolls back its own transaction after a successful transfer
    def caller() -> None:
        with transaction.atomic():
            transactions.transaction_create(item=_transfer("joined", world, alice, 300))
            assert Transaction.objects.filter(reference="joined").exists()
            raise RuntimeError("the caller changes its mind")

    with pytest.raises(RuntimeError):
        caller()

    # then the transfer went with it
    assert not Transaction.objects.filter(reference="joined").exists()
    assert Account.objects.get(pk=alice.id).credits_posted == 0


def test_a_large_batch_written_with_copy_is_committed():
    world, alice = _accounts()
    items = [_transfer(f"copy-{i}", world, alice, 1) for i in range(bulk.COPY_THRESHOLD + 5)]

    results = transactions.transactions_create(items=items)

    assert {r.status for r in results} == {"created"}
    assert _idle()
    assert _committed("SELECT count(*) FROM ledger_posting", []) == [(2 * len(items),)]


def test_an_atomic_batch_refusal_commits_nothing():
    world, alice = _accounts()
    items = [_transfer("ok", world, alice, 5), _transfer("bad", alice, world, 10**6)]

    with pytest.raises(BatchRejected):
        transactions.transactions_create(items=items, atomic=True)

    assert _idle()
    assert _committed("SELECT count(*) FROM ledger_transaction", []) == [(0,)]


def test_a_pending_hold_is_posted_through_the_write_path():
    world, alice = _accounts()
    hold, _ = transactions.transaction_create(item=_transfer("hold", world, alice, 40, pending=True))

    settlement.transaction_post(transaction_id=hold.id)

    assert _idle()
    assert _committed("SELECT credits_posted, credits_pending FROM ledger_account WHERE id = %s", [alice.id]) == [
        (40, 0)
    ]
