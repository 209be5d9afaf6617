"""Load under real concurrency: 8 clients, 2,000+ transfers with hot spots, holds and batches,
against a live gunicorn ledger; afterwards the books must be exact."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from tests.ledger.live import LiveLedger, pay

pytestmark = pytest.mark.slow

CLIENTS = 8
TRANSFERS_PER_CLIENT = 260  # 2,080 in all
HOLD_SHARE = 0.15
BATCH_SHARE = 0.05
BATCH_SIZE = 5
SEED_AMOUNT = 3_000

# Ten accounts: a bank that may go negative, three hot spots, six others (two debit-normal, two with overdrafts).
ACCOUNTS = [
    {"code": "bank", "allow_negative": True},
    {"code": "hot-1"},
    {"code": "hot-2", "overdraft_limit": 500},
    {"code": "hot-3"},
    {"code": "cold-1"},
    {"code": "cold-2", "overdraft_limit": 1_000},
    {"code": "cold-3"},
    {"code": "cold-4"},
    {"code": "asset-1", "normal_balance": "debit"},
    {"code": "asset-2", "normal_balance": "debit", "overdraft_limit": 300},
]
# Most transfers touch the hot spots (on both sides).
WEIGHTS = [2, 30, 25, 20, 4, 4, 4, 4, 4, 3]


@dataclass
class Tally:
    """What one client saw: every answer, and the totals its accepted operations imply."""

    statuses: Counter = field(default_factory=Counter)
    refusals: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    transfers: int = 0
    created: int = 0
    totals: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))

    def book(self, source: str, destination: str, amount: int, *, pending: bool, sign: int = 1) -> None:
        offset = 2 if pending else 0  # [debits_posted, credits_posted, debits_pending, credits_pending]
        self.totals[source][offset] += sign * amount
        self.totals[destination][offset + 1] += sign * amount


def _refusal(tally: Tally, what: str, response: httpx.Response) -> None:
    tally.statuses[response.status_code] += 1
    code = response.json().get("code") if response.headers.get("content-type", "").endswith("json") else None
    if response.status_code == 409 and code == "insufficient_funds":
        tally.refusals[code] += 1
    else:
        tally.unexpected.append(f"{what}: {response.status_code} {response.text[:300]}")


def _client_run(ledger: LiveLedger, ids: list[str], number: int, barrier: threading.Barrier) -> Tally:
    rng = random.Random(1_000 + number)
    tally = Tally()
    holds: list[tuple[str, str, str, int]] = []
    sequence = 0

    def pick() -> tuple[str, str, int]:
        source, destination = rng.choices(ids, WEIGHTS, k=2)
        while destination == source:
            destination = rng.choices(ids, WEIGHTS)[0]
        return source, destination, rng.randint(1, 400)

    def reference() -> str:
        nonlocal sequence
        sequence += 1
        return f"c{number}-{sequence}"

    def settle(http: httpx.Client, hold: tuple[str, str, str, int]) -> None:
        hold_id, source, destination, amount = hold
        post = rng.random() < 0.6
        response = http.post(f"transactions/{hold_id}/{'post' if post else 'void'}")
        tally.statuses[response.status_code] += 1
        if response.status_code != 200 or response.json()["status"] != ("posted" if post else "voided"):
            tally.unexpected.append(f"settle {hold_id}: {response.status_code} {response.text[:300]}")
            return
        tally.book(source, destination, amount, pending=True, sign=-1)
        if post:
            tally.book(source, destination, amount, pending=False)

    with ledger.client() as http:
        barrier.wait(timeout=60)
        while tally.transfers < TRANSFERS_PER_CLIENT:
            roll = rng.random()
            if roll < BATCH_SHARE:
                moves = [pick() for _ in range(BATCH_SIZE)]
                body = {"transactions": [pay(s, d, a, reference()) for s, d, a in moves]}
                response = http.post("transactions/batch", json=body)
                tally.transfers += BATCH_SIZE
                if response.status_code != 200:
                    _refusal(tally, "batch", response)
                    continue
                tally.statuses[200] += 1
                for (source, destination, amount), result in zip(moves, response.json()["results"], strict=True):
                    if result["status"] == "created":
                        tally.created += 1
                        tally.book(source, destination, amount, pending=False)
                    elif result.get("code") == "insufficient_funds":
                        tally.refusals["insufficient_funds"] += 1
                    else:
                        tally.unexpected.append(f"batch item: {result}")
                continue
            pending = roll < BATCH_SHARE + HOLD_SHARE
            source, destination, amount = pick()
            response = http.post("transactions", json=pay(source, destination, amount, reference(), pending=pending))
            tally.transfers += 1
            if response.status_code != 201:
                _refusal(tally, "transfer", response)
            else:
                tally.statuses[201] += 1
                tally.created += 1
                tally.book(source, destination, amount, pending=pending)
                if pending:
                    holds.append((response.json()["id"], source, destination, amount))
            # Holds stay open a while, so they count against available under load, then settle.
            if holds and rng.random() < 0.12:
                settle(http, holds.pop(0))
        for hold in holds:
            settle(http, hold)
    return tally


def _integrity(database_url: str) -> dict[str, Any]:
    """The ledger's integrity checks, run in SQL against the live process's database."""
    with psycopg.connect(database_url) as conn:
        mismatches = conn.execute(
            """
            WITH sums AS (
              SELECT p.account_id,
                COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.status = 'posted'), 0) AS dp,
                COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.status = 'posted'), 0) AS cp,
                COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'debit' AND t.status = 'pending'), 0) AS dpe,
                COALESCE(SUM(p.amount) FILTER (WHERE p.direction = 'credit' AND t.status = 'pending'), 0) AS cpe
              FROM ledger_posting p JOIN ledger_transaction t ON t.id = p.transaction_id
              GROUP BY p.account_id
            )
            SELECT a.code FROM ledger_account a LEFT JOIN sums s ON s.account_id = a.id
            WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
                  IS DISTINCT FROM (COALESCE(s.dp, 0), COALESCE(s.cp, 0), COALESCE(s.dpe, 0), COALESCE(s.cpe, 0))
            """
        ).fetchall()
        unbalanced_currencies = conn.execute(
            """
            SELECT currency FROM ledger_account GROUP BY currency
            HAVING SUM(debits_posted) <> SUM(credits_posted) OR SUM(debits_pending) <> SUM(credits_pending)
            """
        ).fetchall()
        unbalanced_transactions = conn.execute(
            """
            SELECT transaction_id FROM ledger_posting GROUP BY transaction_id
            HAVING SUM(amount) FILTER (WHERE direction = 'debit') IS DISTINCT FROM
                   SUM(amount) FILTER (WHERE direction = 'credit')
            """
        ).fetchall()
        below_limit = conn.execute(
            """
            SELECT code FROM ledger_account WHERE NOT allow_negative AND (
              (normal_balance = 'credit' AND credits_posted - debits_posted - debits_pending + overdraft_limit < 0)
              OR (normal_balance = 'debit' AND debits_posted - credits_posted - credits_pending + overdraft_limit < 0))
            """
        ).fetchall()
        totals = {
            row[0]: list(row[1:])
            for row in conn.execute(
                "SELECT id, debits_posted, credits_posted, debits_pending, credits_pending FROM ledger_account"
            ).fetchall()
        }
        counts = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FROM ledger_transaction"
        ).fetchone()
    return {
        "mismatches": [r[0] for r in mismatches],
        "unbalanced_currencies": [r[0] for r in unbalanced_currencies],
        "unbalanced_transactions": [r[0] for r in unbalanced_transactions],
        "below_limit": [r[0] for r in below_limit],
        "totals": totals,
        "pending": counts[0],
        "transactions": counts[1],
    }


def test_concurrent_transfers_with_hot_spots_and_holds_keep_the_books_exact(harness, jwks_server, signing_key):
    # given a live ledger with ten accounts, the nine non-bank ones seeded through the API
    ledger = LiveLedger(harness, jwks_server, signing_key)
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    with ledger.client() as http:
        accounts = [ledger.account(http, name=spec["code"], **spec) for spec in ACCOUNTS]
        bank = accounts[0]["id"]
        for account in accounts[1:]:
            # value flows in on the side that raises the account's balance
            if account["normal_balance"] == "credit":
                source, destination = bank, account["id"]
            else:
                source, destination = account["id"], bank
            seed = http.post("transactions", json=pay(source, destination, SEED_AMOUNT, f"seed-{account['code']}"))
            assert seed.status_code == 201, seed.text
            expected[source][0] += SEED_AMOUNT
            expected[destination][1] += SEED_AMOUNT
    ids = [a["id"] for a in accounts]

    # when 8 clients run 2,000+ transfers at once (posted, holds later posted or voided, small batches)
    barrier = threading.Barrier(CLIENTS)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        tallies = list(pool.map(lambda n: _client_run(ledger, ids, n, barrier), range(CLIENTS)))
    elapsed = time.monotonic() - started

    transfers = sum(t.transfers for t in tallies)
    statuses = sum((t.statuses for t in tallies), Counter())
    refusals = sum((t.refusals for t in tallies), Counter())
    created = sum(t.created for t in tallies)
    retries = sum(1 for r in ledger.process.log_records() if r.get("event") == "ledger.retry")
    print(
        f"\n{transfers} transfers by {CLIENTS} clients in {elapsed:.1f} s = {transfers / elapsed:.0f} transfers/s; "
        f"{sum(statuses.values())} requests ({sum(statuses.values()) / elapsed:.0f}/s); "
        f"created {created}, refused {dict(refusals)}; statuses {dict(statuses)}; ledger retries {retries}"
    )

    # then no server error and no refusal but insufficient_funds (never transaction_not_pending)
    assert transfers >= 2_000
    assert [u for t in tallies for u in t.unexpected] == []
    assert not [s for s in statuses if s >= 500]
    assert set(refusals) <= {"insufficient_funds"}
    assert created > transfers // 2  # the load really moved money

    # and the stored totals equal the sums of the postings, every currency sums to zero, no account is past its
    # limit, no hold is left open, and the totals are exactly what the accepted operations imply (no lost update)
    report = _integrity(ledger.database_url)
    assert report["mismatches"] == []
    assert report["unbalanced_currencies"] == []
    assert report["unbalanced_transactions"] == []
    assert report["below_limit"] == []
    assert report["pending"] == 0
    assert report["transactions"] == created + len(ACCOUNTS) - 1
    for tally in tallies:
        for account_id, totals in tally.totals.items():
            expected[account_id] = [a + b for a, b in zip(expected[account_id], totals, strict=True)]
    assert report["totals"] == {account_id: expected[account_id] for account_id in ids}

    # and the API reports the same balances, with nothing available below zero except for the bank
    with ledger.client() as http:
        for account_id in ids:
            body = http.get(f"accounts/{account_id}").json()
            assert [body[f] for f in ("debits_posted", "credits_posted", "debits_pending", "credits_pending")] == (
                expected[account_id]
            )
            if not body["allow_negative"]:
                assert body["available"] >= 0, body
