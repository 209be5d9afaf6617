"""Stateful property test: the ledger's service layer against a plain in-memory model.

Hypothesis drives random sequences of account openings, transfers, holds, posts and voids,
freezes/unfreezes/closures and reference replays through ``services.ledger.services``. For every
step the model predicts the outcome — success, or the exact error — by the rules of the service,
checked in the same order the service checks them:

1. shape (``too_few_postings``, ``invalid_amount``, ``unbalanced``), before anything is read;
2. the reference (same content: the existing transaction, ``created`` False; else ``reference_conflict``);
3. each posting's account exists (``account_not_found``), then one currency (``currency_mismatch``);
4. per account in posting order, frozen (``account_frozen``) then closed (``account_closed``);
5. after applying every leg, no account without ``allow_negative`` has ``available`` < 0
   (``insufficient_funds``).

After every step the real PostgreSQL rows must equal the model, the integrity report must be clean,
and no account without ``allow_negative`` may have a negative ``available``.

Every pool a step draws from is in creation order, never sorted by id: ids are random (ULIDs, uuid4), so a
sorted pool would hand Hypothesis a different element when it replays a run, and it would report the
strategy as flaky.

All examples share the test's database transaction; each run works on its own accounts and unique
references, inside a savepoint that is rolled back when the run ends.
``ATRIUM_HYPOTHESIS_EXAMPLES`` raises the number of runs (default 30, 40 steps each).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import hypothesis
import pytest
from django.db import transaction as db_transaction
from hypothesis import HealthCheck, event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from services.kit.errors import DomainError
from services.ledger import selectors
from services.ledger.errors import (
    AccountAbsent,
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    AccountNotFound,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    ReferenceConflict,
    TooFewPostings,
    TransactionNotFound,
    TransactionNotPending,
    Unbalanced,
)
from services.ledger.models import MAX_AMOUNT, Account
from services.ledger.services.accounts import account_create, account_update
from services.ledger.services.settlement import transaction_post, transaction_void
from services.ledger.services.transactions import PostingInput, TransactionInput, transaction_create

T = TypeVar("T")
FIELDS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
EXAMPLES = int(os.environ.get("ATRIUM_HYPOTHESIS_EXAMPLES", "30"))

amounts = st.integers(min_value=1, max_value=1000)
currencies = st.sampled_from(("EUR", "EUR", "EUR", "USD"))  # mostly EUR
normals = st.sampled_from(("credit", "debit"))


def new_reference() -> str:
    return f"hypo-{uuid.uuid4().hex}"


# ----------------------------------------------------------------------------- the model


@dataclass
class ModelAccount:
    id: str
    currency: str
    normal: str
    overdraft_limit: int
    allow_negative: bool
    status: str = "open"
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def totals(self) -> tuple[int, int, int, int]:
        return (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)

    @property
    def balance(self) -> int:
        if self.normal == "credit":
            return self.credits_posted - self.debits_posted
        return self.debits_posted - self.credits_posted

    @property
    def available(self) -> int:
        if self.normal == "credit":
            return self.credits_posted - self.debits_posted - self.debits_pending + self.overdraft_limit
        return self.debits_posted - self.credits_posted - self.credits_pending + self.overdraft_limit

    def apply(self, direction: str, amount: int, *, pending: bool, sign: int = 1) -> None:
        name = f"{'debits' if direction == 'debit' else 'credits'}_{'pending' if pending else 'posted'}"
        setattr(self, name, getattr(self, name) + sign * amount)


@dataclass
class ModelTransaction:
    id: str
    status: str
    postings: list[tuple[str, str, int]]
    content: tuple
    item: TransactionInput


def content_of(item: TransactionInput) -> tuple:
    """What makes two requests with one reference "the same" (everything but the reference)."""
    return (
        item.description,
        item.pending,
        item.currency,
        tuple(sorted(item.metadata.items())),
        item.expires_at,
        tuple((p.account, p.direction, p.amount) for p in item.postings),
    )


def legs(*postings: tuple[str, str, object]) -> list[PostingInput]:
    return [PostingInput(account=a, direction=d, amount=n) for a, d, n in postings]


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Everything one run writes is undone when it ends (see teardown).
        self.savepoint = db_transaction.savepoint()
        self.accounts: dict[str, ModelAccount] = {}
        self.transactions: dict[str, ModelTransaction] = {}
        self.references: dict[str, str] = {}  # reference -> transaction id, for created transactions only
        self.failed: list[TransactionInput] = []  # refused requests: their references are still free
        self.counter = 0

    def teardown(self) -> None:
        db_transaction.savepoint_rollback(self.savepoint)

    # --------------------------------------------------------------------- helpers

    def _open(self, currency: str, normal: str, overdraft_limit: int, allow_negative: bool) -> ModelAccount:
        self.counter += 1
        account = account_create(
            name=f"hypo-{self.counter}",
            currency=currency,
            normal_balance=normal,
            overdraft_limit=overdraft_limit,
            allow_negative=allow_negative,
        )
        assert account.status == "open"
        assert [getattr(account, name) for name in FIELDS] == [0, 0, 0, 0]
        model = ModelAccount(account.id, currency, normal, overdraft_limit, allow_negative)
        self.accounts[account.id] = model
        return model

    def _pick_account(self, data: st.DataObject, *, currency: str | None = None, label: str = "account") -> str:
        pool = [a.id for a in self.accounts.values() if currency is None or a.currency == currency]
        return data.draw(st.sampled_from(pool), label=label)

    def _pick_pair(self, data: st.DataObject) -> tuple[str, str]:
        """Two accounts (possibly the same one) in one currency."""
        source = self._pick_account(data, label="source")
        destination = self._pick_account(data, currency=self.accounts[source].currency, label="destination")
        return source, destination

    def _world(self, data: st.DataObject, currency: str) -> str:
        pool = [a.id for a in self.accounts.values() if a.allow_negative and a.currency == currency]
        return data.draw(st.sampled_from(pool), label="world")

    def _predict_create(self, item: TransactionInput) -> tuple[type[DomainError] | None, str | None]:
        """(expected error class or None, id of the existing transaction on a replay)."""
        # 1. shape, before the database is touched
        if len(item.postings) < 2:
            return TooFewPostings, None
        debits = credits = 0
        for posting in item.postings:
            if type(posting.amount) is not int or not 0 < posting.amount <= MAX_AMOUNT:
                return InvalidAmount, None
            if posting.direction == "debit":
                debits += posting.amount
            else:
                credits += posting.amount
        if debits > MAX_AMOUNT:
            return InvalidAmount, None
        if debits != credits:
            return Unbalanced, None
        # 2. the reference
        if item.reference in self.references:
            prior = self.transactions[self.references[item.reference]]
            return (None, prior.id) if prior.content == content_of(item) else (ReferenceConflict, None)
        # 3. accounts and currency
        for posting in item.postings:
            if posting.account not in self.accounts:
                return AccountNotFound, None
        involved = [self.accounts[p.account] for p in item.postings]
        found = {a.currency for a in involved}
        if len(found) > 1 or (item.currency and item.currency not in found):
            return CurrencyMismatch, None
        # 4. status, account by account in posting order
        for account in involved:
            if account.status == "frozen":
                return AccountFrozen, None
            if account.status == "closed":
                return AccountClosed, None
        # 5. funds, after every leg is applied
        trial = {a.id: replace(a) for a in involved}
        for posting in item.postings:
            trial[posting.account].apply(posting.direction, posting.amount, pending=item.pending)
        for posting in item.postings:
            account = trial[posting.account]
            if not account.allow_negative and account.available < 0:
                return InsufficientFunds, None
        return None, None

    def _submit(self, item: TransactionInput) -> None:
        expected, existing = self._predict_create(item)
        outcome = self._expect(expected, transaction_create, item=item)
        if outcome is None:
            if item.reference not in self.references:
                self.failed.append(item)
            return
        txn, created = outcome
        if existing is not None:
            event("create: replay")
            prior = self.transactions[existing]
            assert created is False
            assert txn.id == existing
            assert txn.status == prior.status
            return
        assert created is True
        assert txn.status == ("pending" if item.pending else "posted")
        assert txn.reference == item.reference
        assert txn.currency == self.accounts[item.postings[0].account].currency
        for posting in item.postings:
            self.accounts[posting.account].apply(posting.direction, posting.amount, pending=item.pending)
        self.transactions[txn.id] = ModelTransaction(
            id=txn.id,
            status=txn.status,
            postings=[(p.account, p.direction, p.amount) for p in item.postings],
            content=content_of(item),
            item=item,
        )
        self.references[item.reference] = txn.id

    def _transfer(self, source: str, destination: str, amount: object, *, pending: bool = False, **kw) -> None:
        item = TransactionInput(
            reference=kw.pop("reference", None) or new_reference(),
            postings=legs((source, "debit", amount), (destination, "credit", amount)),
            pending=pending,
            **kw,
        )
        self._submit(item)

    def _expect(self, expected: type[DomainError] | None, fn: Callable[..., T], **kwargs: Any) -> T | None:
        """Call ``fn``; check it fails with exactly ``expected`` (returning None), or succeeds if that is None."""
        try:
            result, raised = fn(**kwargs), None
        except DomainError as exc:
            result, raised = None, exc
        event(f"{fn.__name__}: {raised.code if raised else 'ok'}")
        if raised is not None:
            assert expected is not None, f"model expected success, {fn.__name__} raised {raised!r} ({raised.code})"
            assert type(raised) is expected, f"model expected {expected.__name__}, {fn.__name__} raised {raised!r}"
            assert raised.code == expected.code
            return None
        assert expected is None, f"model expected {expected.__name__}, {fn.__name__} succeeded: {result!r}"
        return result

    # ----------------------------------------------------------------------- rules

    @initialize(eur=normals, usd=normals)
    def open_world_accounts(self, eur: str, usd: str) -> None:
        """One account per currency that may go negative: the source of funds."""
        self._open("EUR", eur, 0, True)
        self._open("USD", usd, 0, True)

    @rule(
        currency=currencies,
        normal=normals,
        overdraft_limit=st.one_of(st.just(0), st.integers(min_value=0, max_value=500)),
        allow_negative=st.sampled_from((False, False, False, True)),
    )
    def open_account(self, currency: str, normal: str, overdraft_limit: int, allow_negative: bool) -> None:
        self._open(currency, normal, overdraft_limit, allow_negative)

    @rule(data=st.data(), amount=amounts, pending=st.booleans())
    def fund(self, data: st.DataObject, amount: int, pending: bool) -> None:
        """Raise an account's balance from a world account (its normal side gets the posting)."""
        account = self.accounts[self._pick_account(data)]
        world = self._world(data, account.currency)
        if account.normal == "credit":
            self._transfer(world, account.id, amount, pending=pending)
        else:
            self._transfer(account.id, world, amount, pending=pending)

    @rule(data=st.data(), amount=amounts)
    def transfer(self, data: st.DataObject, amount: int) -> None:
        """Debit one account, credit another (posted at once)."""
        source, destination = self._pick_pair(data)
        self._transfer(source, destination, amount)

    @rule(data=st.data(), amount=amounts)
    def hold(self, data: st.DataObject, amount: int) -> None:
        """Like transfer, as a pending two-phase hold."""
        source, destination = self._pick_pair(data)
        self._transfer(source, destination, amount, pending=True)

    @rule(data=st.data(), first=amounts, second=amounts, pending=st.booleans())
    def three_legs(self, data: st.DataObject, first: int, second: int, pending: bool) -> None:
        """A balanced transaction with one debit split over two credits."""
        source, a = self._pick_pair(data)
        b = self._pick_account(data, currency=self.accounts[source].currency, label="second destination")
        item = TransactionInput(
            reference=new_reference(),
            postings=legs((source, "debit", first + second), (a, "credit", first), (b, "credit", second)),
            pending=pending,
        )
        self._submit(item)

    @rule(
        data=st.data(),
        amount=amounts,
        kind=st.sampled_from(
            (
                "zero",
                "negative",
                "not_int",
                "unbalanced",
                "one_posting",
                "no_postings",
                "mixed_currencies",
                "wrong_currency",
                "unknown_account",
            )
        ),
        pending=st.booleans(),
    )
    def invalid_transaction(self, data: st.DataObject, amount: int, kind: str, pending: bool) -> None:
        """Requests the model expects to be refused (it still predicts which error, and in what order)."""
        source, destination = self._pick_pair(data)
        postings: list[PostingInput]
        currency = None
        if kind == "zero":
            postings = legs((source, "debit", 0), (destination, "credit", 0))
        elif kind == "negative":
            postings = legs((source, "debit", -amount), (destination, "credit", -amount))
        elif kind == "not_int":
            bad = data.draw(st.sampled_from((float(amount), str(amount), True)), label="bad amount")
            postings = legs((source, "debit", bad), (destination, "credit", bad))
        elif kind == "unbalanced":
            postings = legs((source, "debit", amount), (destination, "credit", amount + 1))
        elif kind == "one_posting":
            postings = legs((source, "debit", amount))
        elif kind == "no_postings":
            postings = []
        elif kind == "mixed_currencies":
            other = "USD" if self.accounts[source].currency == "EUR" else "EUR"
            destination = self._pick_account(data, currency=other, label="foreign destination")
            postings = legs((source, "debit", amount), (destination, "credit", amount))
        elif kind == "wrong_currency":
            currency = "USD" if self.accounts[source].currency == "EUR" else "EUR"
            postings = legs((source, "debit", amount), (destination, "credit", amount))
        else:
            postings = legs((source, "debit", amount), (f"acc_{uuid.uuid4().hex[:26]}", "credit", amount))
        item = TransactionInput(reference=new_reference(), postings=postings, pending=pending, currency=currency)
        self._submit(item)

    def _settle(self, data: st.DataObject, *, post: bool) -> None:
        """Post or void: mostly pending holds, sometimes already settled transactions, rarely unknown ids."""
        fn = transaction_post if post else transaction_void
        if data.draw(st.integers(min_value=0, max_value=19), label="unknown?") == 19:
            self._expect(TransactionNotFound, fn, transaction_id=f"txn_{uuid.uuid4().hex[:26]}")
            return
        pending = [t.id for t in self.transactions.values() if t.status == "pending"]
        if pending and data.draw(st.integers(min_value=0, max_value=3), label="any?") < 3:
            txn_id = data.draw(st.sampled_from(pending), label="hold")
        else:
            txn_id = data.draw(st.sampled_from(list(self.transactions)), label="any transaction")
        model = self.transactions[txn_id]
        expected: type[DomainError] | None = None
        if model.status != "pending":
            expected = TransactionNotPending
        elif post:  # voiding is allowed whatever the accounts' status; posting needs them all open
            for account_id in sorted({account for account, _, _ in model.postings}):
                status = self.accounts[account_id].status
                if status != "open":
                    expected = AccountFrozen if status == "frozen" else AccountClosed
                    break
        txn = self._expect(expected, fn, transaction_id=txn_id)
        if txn is None:
            return
        assert txn.id == txn_id
        assert txn.status == ("posted" if post else "voided")
        for account_id, direction, amount in model.postings:
            account = self.accounts[account_id]
            account.apply(direction, amount, pending=True, sign=-1)
            if post:
                account.apply(direction, amount, pending=False)
        model.status = txn.status

    @precondition(lambda self: self.transactions)
    @rule(data=st.data())
    def post_hold(self, data: st.DataObject) -> None:
        self._settle(data, post=True)

    @precondition(lambda self: self.transactions)
    @rule(data=st.data())
    def void_hold(self, data: st.DataObject) -> None:
        self._settle(data, post=False)

    @rule(data=st.data(), status=st.sampled_from(("open", "frozen", "closed")))
    def set_status(self, data: st.DataObject, status: str) -> None:
        """Freeze, unfreeze or close an account (closing needs zero balance and nothing pending)."""
        if data.draw(st.integers(min_value=0, max_value=19), label="unknown?") == 19:
            self._expect(AccountAbsent, account_update, account_id=f"acc_{uuid.uuid4().hex[:26]}", status=status)
            return
        account = self.accounts[self._pick_account(data)]
        expected: type[DomainError] | None = None
        if status != account.status:
            if account.status == "closed":
                expected = AccountClosed
            elif status == "closed" and (account.balance != 0 or account.debits_pending or account.credits_pending):
                expected = AccountNotEmpty
        result = self._expect(expected, account_update, account_id=account.id, status=status)
        if result is not None:
            account.status = status
            assert result.status == status

    @precondition(lambda self: self.references)
    @rule(data=st.data())
    def replay_same(self, data: st.DataObject) -> None:
        """The same reference and content again: the existing transaction, whatever happened since."""
        txn = self.transactions[data.draw(st.sampled_from(list(self.transactions)), label="replayed")]
        item = txn.item
        # A fresh but equal request object, so nothing relies on identity.
        self._submit(replace(item, postings=[replace(p) for p in item.postings], metadata=dict(item.metadata)))

    @precondition(lambda self: self.references)
    @rule(
        data=st.data(),
        change=st.sampled_from(("description", "pending", "amounts", "order", "currency", "metadata")),
    )
    def replay_different(self, data: st.DataObject, change: str) -> None:
        """The same reference with different content: reference_conflict."""
        item = self.transactions[data.draw(st.sampled_from(list(self.transactions)), label="replayed")].item
        postings = [replace(p) for p in item.postings]
        if change == "description":
            other = replace(item, postings=postings, description=item.description + " (changed)")
        elif change == "pending":
            other = replace(item, postings=postings, pending=not item.pending)
        elif change == "amounts":
            other = replace(item, postings=[replace(p, amount=p.amount * 2) for p in postings])
        elif change == "order":
            other = replace(item, postings=postings[::-1])
        elif change == "currency":
            other = replace(item, postings=postings, currency=self.accounts[postings[0].account].currency)
        else:
            other = replace(item, postings=postings, metadata={"changed": True})
        assert content_of(other) != content_of(item)
        self._submit(other)

    def _unused_refused(self) -> list[str]:
        refused = dict.fromkeys(item.reference for item in self.failed)
        return [reference for reference in refused if reference not in self.references]

    @precondition(lambda self: self._unused_refused())
    @rule(data=st.data(), amount=amounts)
    def reuse_refused_reference(self, data: st.DataObject, amount: int) -> None:
        """A refused request consumed nothing: its reference can still be used (here, to fund an account)."""
        reference = data.draw(st.sampled_from(self._unused_refused()), label="refused reference")
        account = self.accounts[self._pick_account(data)]
        world = self._world(data, account.currency)
        if account.normal == "credit":
            self._transfer(world, account.id, amount, reference=reference)
        else:
            self._transfer(account.id, world, amount, reference=reference)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def totals_and_status_match_the_model(self) -> None:
        rows = {
            row[0]: row[1:]
            for row in Account.objects.filter(pk__in=list(self.accounts)).values_list("id", "status", *FIELDS)
        }
        assert set(rows) == set(self.accounts)
        for account_id, model in self.accounts.items():
            status, *totals = rows[account_id]
            assert (status, tuple(totals)) == (model.status, model.totals), account_id

    @invariant()
    def books_are_intact(self) -> None:
        report = selectors.integrity_report()
        assert report["ok"], report

    @invariant()
    def no_overdraft_beyond_the_limit(self) -> None:
        for account in Account.objects.filter(pk__in=list(self.accounts), allow_negative=False):
            assert account.available >= 0, (account.id, account.available)
        for model in self.accounts.values():
            assert model.allow_negative or model.available >= 0, model


@pytest.mark.django_db
def test_ledger_services_behave_like_the_model():
    run_state_machine_as_test(
        LedgerMachine,
        settings=hypothesis.settings(
            max_examples=EXAMPLES,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
            report_multiple_bugs=False,  # shrinking replays real database work: shrink one failure, not all
        ),
    )
