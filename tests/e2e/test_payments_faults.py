"""Faults in the payments path, every part its own process (see ``payments_stack``): the ledger stopped and
started again in the middle of a run, payments workers killed with SIGKILL while they work, and one killed while
it holds a batch, whose payments must not wait the old 60 s lease.

After the fault each test waits, bounded, for every payment to end, then checks the money: one ledger
transaction per payment, posted if and only if the payment settled, no hold left pending, balances that
add up, and a reconciliation without mismatches.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.payments_stack import PaymentsStack, payments_stack
from tests.harness import AtriumProcess
from tests.proxy import LedgerProxy
from workers.celery import app

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TERMINAL = ("settled", "rejected", "failed", "canceled")
FUNDS = 10_000_000  # per source account: far more than its payments add up to
QUICK_RETRIES = {
    "PAYMENTS_RETRY_BASE_SECONDS": "0.2",
    "PAYMENTS_RETRY_MAX_SECONDS": "2",
    "PAYMENTS_LEDGER_TIMEOUT": "2",
}


@dataclass(frozen=True)
class Planned:
    key: str
    source: str
    destination: str
    amount: int


def _plan(count: int, sources: list[str], destinations: list[str], tag: str) -> list[Planned]:
    return [
        Planned(f"{tag}-{i}", sources[i % len(sources)], destinations[i % len(destinations)], 100 + (i * 37) % 900)
        for i in range(count)
    ]


def _create(stack: PaymentsStack, planned: Planned, deadline: float) -> str:
    """Create one payment; a refusal for want of the ledger (503) or a busy key (409) is tried again with the
    same ``Idempotency-Key``, so a retry never makes a second payment."""
    body = {
        "amount": planned.amount,
        "currency": "EUR",
        "source_account": planned.source,
        "destination_account": planned.destination,
    }
    while True:
        try:
            response = stack.payments_http.post("/api/v1/payments", json=body, headers={"Idempotency-Key": planned.key})
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code == 201:
                return response.json()["id"]
            assert response.status_code in (409, 503), response.text
            last = response.text
        if time.monotonic() > deadline:
            raise AssertionError(f"payment {planned.key} could not be created: {last}")
        time.sleep(0.3)


def _create_all(stack: PaymentsStack, plan: list[Planned], *, threads: int, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda planned: _create(stack, planned, deadline), plan))


def _count(stack: PaymentsStack, *statuses: str) -> int:
    return stack.payments_sql("SELECT count(*) FROM payments_payment WHERE status = ANY(%s)", [list(statuses)])[0][0]


def _sweep_soon() -> None:
    """What beat does every 5 s (there is no beat in the stack): fire and forget."""
    app.send_task("payments.sweep")


def _wait_all_terminal(stack: PaymentsStack, count: int, timeout: float, *, sweep_every: float | None) -> None:
    deadline = time.monotonic() + timeout
    next_sweep = time.monotonic()
    while _count(stack, *TERMINAL) < count:
        if time.monotonic() > deadline:
            stuck = stack.payments_sql(
                "SELECT id, status, hold_status, attempts, lease_until, next_attempt_at, updated_at "
                "FROM payments_payment WHERE NOT status = ANY(%s) ORDER BY updated_at LIMIT 10",
                [list(TERMINAL)],
            )
            raise AssertionError(f"after {timeout} s not every payment ended: {stack.statuses()}; e.g. {stuck}")
        if sweep_every is not None and time.monotonic() >= next_sweep:
            _sweep_soon()
            next_sweep = time.monotonic() + sweep_every
        time.sleep(0.5)


def _check_the_money(stack: PaymentsStack, ids: list[str], funded: dict[str, int], destinations: list[str]) -> None:
    """Every payment against the ledger, by SQL on both databases, through the balances API, and through
    the reconciliation (the beat task, and a run whose window includes the payments just made)."""
    assert len(set(ids)) == len(ids), "a payment was created twice"
    payments = {
        row[0]: row
        for row in stack.payments_sql(
            "SELECT id, status, amount, source_account, destination_account, ledger_transaction, hold_status, "
            "status_history FROM payments_payment"
        )
    }
    assert set(payments) == set(ids), "the payments database holds other payments than those created"
    settled = {pid for pid, row in payments.items() if row[1] == "settled"}

    for pid, (_, status, *_rest, history) in payments.items():
        seen = Counter(entry["status"] for entry in history)
        assert seen["settled"] <= 1, f"{pid} settled more than once: {history}"
        assert all(n == 1 for n in seen.values()), f"{pid} went through a status twice: {history}"
        assert history[-1]["status"] == status, f"{pid} is {status}, its history ends otherwise: {history}"
    assert not [pid for pid, row in payments.items() if row[6] == "pending"], "payments left a hold pending"

    txns = stack.ledger_sql(
        "SELECT t.id, t.reference, t.status, t.metadata->>'payment', "
        "  sum(p.amount) FILTER (WHERE p.direction = 'debit'), "
        "  max(p.account_id) FILTER (WHERE p.direction = 'debit'), "
        "  max(p.account_id) FILTER (WHERE p.direction = 'credit'), count(p.id) "
        "FROM ledger_transaction t JOIN ledger_posting p ON p.transaction_id = t.id "
        "WHERE t.reference LIKE 'pay\\_%%' OR t.metadata ? 'payment' GROUP BY t.id"
    )
    per_payment = Counter(reference for _, reference, *_ in txns)
    assert not [r for r, n in per_payment.items() if n > 1], "a payment has more than one ledger transaction"
    assert all(meta == reference for _, reference, _, meta, *_ in txns), "a transaction's metadata names another"
    assert set(per_payment) <= set(payments), "a ledger transaction references no payment"
    recorded = {pid: row[5] for pid, row in payments.items() if row[5]}
    assert {txn[1]: txn[0] for txn in txns} == recorded, "the payments record other ledger transactions"
    assert not [t for t in txns if t[2] == "pending"], f"holds left pending: {[t for t in txns if t[2] == 'pending']}"
    posted = {txn[1]: txn for txn in txns if txn[2] == "posted"}
    assert set(posted) == settled, (
        f"posted without settling: {sorted(set(posted) - settled)[:5]}; "
        f"settled without a posting: {sorted(settled - set(posted))[:5]}"
    )
    for pid in settled:
        txn_id, _, _, _, amount, debited, credited, postings = posted[pid]
        _, _, want, source, destination, ledger_transaction, hold_status, _ = payments[pid]
        assert (txn_id, amount, debited, credited, postings) == (ledger_transaction, want, source, destination, 2)
        assert hold_status == "posted", (pid, hold_status)

    moved = sum(txn[4] for txn in posted.values())
    assert moved == sum(payments[pid][2] for pid in settled), "the ledger moved another total than was settled"
    for source, initial in funded.items():
        balance = stack.balance(source)
        sent = sum(payments[pid][2] for pid in settled if payments[pid][3] == source)
        assert (balance["balance"], balance["debits_pending"]) == (initial - sent, 0), (source, balance)
    for destination in destinations:
        balance = stack.balance(destination)
        received = sum(payments[pid][2] for pid in settled if payments[pid][4] == destination)
        assert (balance["balance"], balance["credits_pending"]) == (received, 0), (destination, balance)

    beat = stack.send("payments.reconcile")
    assert not any(beat["mismatches"].values()), beat
    report = stack.reconcile_everything()
    assert (report["payments"], report["ledger_transactions"]) == (len(ids), len(txns)), report
    assert not any(report["mismatches"].values()), report


# --- the ledger goes away ------------------------------------------------------------------------------------


def test_the_ledger_stopped_mid_run_then_back_on_its_port_every_payment_settles_once(harness, live_portal):
    # While the ledger is away the workers' circuit breakers open (5 failures) and stay open 30 s, so
    # payments wait ~30 s after it is back and retry every ≤ 2 s meanwhile: far fewer than 200 attempts.
    stack = payments_stack(harness, live_portal, workers=2, extra_env={**QUICK_RETRIES, "PAYMENTS_MAX_ATTEMPTS": "200"})
    funded = {stack.funded(FUNDS): FUNDS for _ in range(4)}
    destinations = [stack.account() for _ in range(2)]
    plan = _plan(200, list(funded), destinations, "outage")
    ids: list[str] = []
    started = time.monotonic()

    # the first 120 are created and processed; the ledger goes away once 20 have settled
    background = ThreadPoolExecutor(1)
    creator = background.submit(_create_all, stack, plan[:120], threads=4)
    stack.wait_until(lambda: _count(stack, "settled") >= 20, 60, "20 payments to settle", every=0.1)
    url = stack.ledger.url
    stack.ledger.stop()
    down = time.monotonic()
    ids.extend(creator.result(timeout=120))
    background.shutdown()
    at_stop = stack.statuses()

    # the other 80 are accepted while it is away (the payments service knows the accounts already)
    ids.extend(_create_all(stack, plan[120:], threads=4))
    time.sleep(max(0.0, 6 - (time.monotonic() - down)))
    during = stack.statuses()
    stack.ledger.start().wait_ready()
    assert stack.ledger.url == url  # the same command: the same port
    outage = time.monotonic() - down
    assert during.get("settled", 0) < 200, f"nothing was left for the outage to hit: {during}"

    _wait_all_terminal(stack, 200, 150, sweep_every=None)
    finished = time.monotonic()
    assert stack.statuses() == {"settled": 200}, stack.statuses()
    waited = stack.payments_sql("SELECT count(*), max(attempts) FROM payments_payment WHERE attempts > 0")[0]
    assert waited[0] > 0, "no payment met the unavailable ledger"
    _check_the_money(stack, ids, funded, destinations)
    print(
        f"\nledger outage: {outage:.1f} s; at the stop {at_stop}; before the restart {during}; "
        f"{waited[0]} payments retried (max {waited[1]} attempts); all settled "
        f"{finished - down:.1f} s after the stop, {finished - started:.1f} s after the first payment"
    )


# --- workers killed ------------------------------------------------------------------------------------------

_TASK = re.compile(r"^Task payments\.process\[([0-9a-f-]+)\] (\w+)")


def _unfinished_tasks(worker: AtriumProcess) -> int:
    """``payments.process`` tasks the worker received and had not finished (by its log)."""
    open_tasks: set[str] = set()
    for record in worker.log_records():
        match = _TASK.match(str(record.get("event", "")))
        if match and match.group(2) == "received":
            open_tasks.add(match.group(1))
        elif match:
            open_tasks.discard(match.group(1))
    return len(open_tasks)


def _wait_worker_up(worker: AtriumProcess, timeout: float = 60) -> None:
    """Ready by its own log (a ping task would queue behind the payments and may be answered by the other
    worker)."""
    deadline = time.monotonic() + timeout
    while not any(
        r.get("logger") == "celery.apps.worker" and str(r.get("event", "")).endswith(" ready.")
        for r in worker.log_records()
    ):
        assert worker.proc is not None
        assert worker.proc.poll() is None, worker.output()[-3000:]
        assert time.monotonic() < deadline, f"{worker.name} not ready after {timeout} s"
        time.sleep(0.2)


def _kill_and_restart(stack: PaymentsStack, worker: AtriumProcess, n: int) -> dict[str, Any]:
    assert worker.proc is not None
    leased = stack.payments_sql("SELECT count(*) FROM payments_payment WHERE lease_until > now()")[0][0]
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)
    unfinished = _unfinished_tasks(worker)
    shutil.copyfile(worker.log_path, worker.log_path.with_suffix(f".killed-{n}.log"))  # start() truncates it
    worker.start()
    _wait_worker_up(worker)
    return {"unfinished": unfinished, "leased": leased}


def test_workers_killed_with_sigkill_mid_run_every_payment_ends_once(harness, live_portal):
    stack = payments_stack(
        harness,
        live_portal,
        workers=2,
        extra_env={
            **QUICK_RETRIES,
            "CELERY_VISIBILITY_TIMEOUT": "15",
            "PAYMENTS_STALE_SECONDS": "3",
        },
    )
    # A killed worker's unacknowledged tasks may be redelivered 15 s later, but kombu only looks for them
    # every ~100 s per worker (unacked_restore_interval 10 s x unacked_restore_throttle 10), so it is mostly
    # the sweeper, run here as beat would, that resumes the payments they were carrying.
    funded = {stack.funded(FUNDS): FUNDS for _ in range(4)}
    destinations = [stack.account() for _ in range(2)]
    plan = _plan(500, list(funded), destinations, "kills")
    started = time.monotonic()
    background = ThreadPoolExecutor(1)
    creator = background.submit(_create_all, stack, plan, threads=8)
    stack.wait_until(lambda: _count(stack, *TERMINAL) >= 10, 60, "processing to begin", every=0.1)

    kills = []
    for n in range(5):
        time.sleep(1.5)
        kills.append(_kill_and_restart(stack, stack.workers[n % 2], n))
        _sweep_soon()
    ids = creator.result(timeout=120)
    background.shutdown()
    killed_at = stack.statuses()

    _wait_all_terminal(stack, 500, 180, sweep_every=4)
    finished = time.monotonic()
    statuses = stack.statuses()
    assert statuses == {"settled": 500}, f"every source had the funds and no rule applies, yet: {statuses}"
    _check_the_money(stack, ids, funded, destinations)
    landed = sum(1 for k in kills if k["unfinished"])
    print(
        f"\nworker kills: {len(kills)}, {landed} with a payments.process task unfinished in the killed worker "
        f"({[k['unfinished'] for k in kills]}; leases held at each kill {[k['leased'] for k in kills]}); "
        f"after the kills {killed_at}; all ended {finished - started:.1f} s after the first payment"
    )


# --- a worker killed while it holds a batch ------------------------------------------------------------------

LEASE_SECONDS = 15.0  # PAYMENTS_LEASE_SECONDS' default, which this test runs with
SLOW_HOLDS = 2.0  # every hold call reaches the ledger this late (under PAYMENTS_LEDGER_TIMEOUT's 3 s)


def _lease_holders(stack: PaymentsStack) -> dict[str, list[str]]:
    """Live leases by owner token (``node:pid:random``)."""
    rows = stack.payments_sql(
        "SELECT lease_owner, array_agg(id) FROM payments_payment WHERE lease_until > now() GROUP BY lease_owner"
    )
    return {owner: ids for owner, ids in rows}


def _holder_worker(stack: PaymentsStack, owner: str) -> AtriumProcess | None:
    """The payments worker whose process (a prefork child: its process group is the worker's) holds ``owner``."""
    try:
        group = os.getpgid(int(owner.split(":")[1]))
    except (ProcessLookupError, ValueError, IndexError):
        return None
    return next((w for w in stack.workers if w.proc is not None and w.proc.pid == group), None)


def test_a_worker_killed_holding_a_batch_its_payments_settle_once_within_the_lease(harness, live_portal):
    # given two payments workers, a slow ledger (so a kill lands while a worker waits for its holds) and a steady
    # trickle of payments; PAYMENTS_STALE_SECONDS so long that only the lease running out can free the batch
    made: dict[str, LedgerProxy] = {}

    def via(url: str) -> str:
        made["proxy"] = LedgerProxy(url)
        return made["proxy"].url

    stack = payments_stack(
        harness, live_portal, workers=2, ledger_via=via, extra_env={"PAYMENTS_STALE_SECONDS": "3600"}
    )
    proxy = made["proxy"]
    try:
        proxy.delay("/api/v1/transactions/batch", SLOW_HOLDS)
        funded = {stack.funded(FUNDS): FUNDS for _ in range(4)}
        destinations = [stack.account() for _ in range(2)]
        plan = _plan(120, list(funded), destinations, "lease")
        background = ThreadPoolExecutor(1)
        creator = background.submit(_create_paced, stack, plan, per_second=5)

        # when a worker holds a batch (waiting for the ledger's answer to its holds), its whole worker is killed
        def holding() -> tuple[str, list[str], AtriumProcess] | None:
            for owner, ids in _lease_holders(stack).items():
                worker = _holder_worker(stack, owner)
                if worker is not None and len(ids) >= 3:
                    return owner, ids, worker
            return None

        stack.wait_until(lambda: _count(stack, "settled") >= 5, 60, "processing to begin", every=0.1)
        found = None
        deadline = time.monotonic() + 60
        while found is None:
            assert time.monotonic() < deadline, "no worker was seen holding a batch"
            found = holding()
            time.sleep(0.05)
        owner, _, victim = found
        assert victim.proc is not None
        os.killpg(victim.proc.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.proc.wait(10)
        batch = [
            row[0] for row in stack.payments_sql("SELECT id FROM payments_payment WHERE lease_owner = %s", [owner])
        ]
        assert batch, "the killed worker held no lease"
        left_open = _count(stack, "created", "screening", "processing")

        # then: beat's sweeper as in production (every 5 s), the load goes on; every payment ends, settled once
        next_sweep = time.monotonic()
        while not creator.done() or _count(stack, *TERMINAL) < len(plan):
            assert time.time() - killed_at < 120, f"not every payment ended 120 s after the kill: {stack.statuses()}"
            if time.monotonic() >= next_sweep:
                _sweep_soon()
                next_sweep = time.monotonic() + 5
            time.sleep(0.25)
        ids = creator.result(timeout=10)
        background.shutdown()
        assert stack.statuses() == {"settled": len(plan)}, stack.statuses()
        _check_the_money(stack, ids, funded, destinations)

        # the killed worker's batch settled within the lease (and a sweep or a drain) of the kill, not 60 s later
        settled_at = {
            pid: dt.datetime.fromisoformat(history[-1]["at"]).timestamp()
            for pid, history in stack.payments_sql(
                "SELECT id, status_history FROM payments_payment WHERE id = ANY(%s)", [batch]
            )
        }
        waited = sorted(at - killed_at for at in settled_at.values())
        assert waited[-1] < LEASE_SECONDS + 10, f"the killed worker's payments waited {waited} s after the kill"
        print(
            f"\nkilled {victim.name} (pid group {victim.proc.pid}) holding {len(batch)} payments under {owner}; "
            f"{left_open} open at the kill; they settled {waited[0]:.1f} to {waited[-1]:.1f} s after it "
            f"(lease {LEASE_SECONDS:g} s; the old lease was 60 s); all {len(plan)} settled, each once"
        )
    finally:
        proxy.stop()


def _create_paced(stack: PaymentsStack, plan: list[Planned], *, per_second: float) -> list[str]:
    """Create the planned payments one after the other at about ``per_second`` (a steady trickle)."""
    started = time.monotonic()
    deadline = started + 120 + len(plan) / per_second
    ids = []
    for n, planned in enumerate(plan):
        ids.append(_create(stack, planned, deadline))
        time.sleep(max(0.0, started + (n + 1) / per_second - time.monotonic()))
    return ids
