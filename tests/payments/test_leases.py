"""Leases on payments against the live ledger: a claim's owner token, renewal between the steps of a run, the
compare-and-set that keeps a worker that lost its lease away from those payments, and takeover of expired
leases by the next claim, drain or sweep (see ``services.payments.processing``, "Leases").

A killed worker with real processes is ``tests/e2e/test_payments_faults.py``
(``test_a_worker_killed_holding_a_batch_its_payments_settle_once_within_the_lease``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time

import pytest
import redis
from django.core import checks
from django.db import connection
from django.utils import timezone

from services.payments import checks as payment_checks
from services.payments import metrics, processing, queries, services
from services.payments.ledger import call_seconds
from services.payments.models import Payment
from tests.payments.conftest import LedgerAdmin
from tests.payments.test_processing import create
from tests.proxy import LedgerProxy
from tests.servers import Seen

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env", "counters_cleared")]

HOLDS = "/api/v1/transactions/batch"
SETTLE = "/api/v1/transactions/batch/settle"


def lease_of(payment_ids: list[str]) -> dict[str, tuple[dt.datetime | None, str]]:
    return {p.id: (p.lease_until, p.lease_owner) for p in Payment.objects.filter(id__in=payment_ids)}


def expire(payment_ids: list[str]) -> None:
    """Their lease runs out now (as if its worker had been killed 15 s ago)."""
    Payment.objects.filter(id__in=payment_ids).update(lease_until=timezone.now() - dt.timedelta(milliseconds=1))


def calls(proxy: LedgerProxy, path: str) -> int:
    return sum(1 for seen in proxy.server.requests if seen.path == path)


def counter(settings, name: str) -> int:
    return int(redis.Redis.from_url(settings.REDIS_URL).hget(metrics.KEY, name) or 0)


# --- the owner token and renewal -----------------------------------------------------------------------------


def test_a_claim_leases_under_its_own_owner_token_naming_the_node_and_process(ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    ids = sorted(create(source, destination, 10).id for _ in range(3))

    first = processing.claim(ids=ids[:2])
    second = processing.claim(ids=ids)

    assert sorted(first) == ids[:2]
    assert second == [ids[2]]
    node, pid, random_part = first.owner.split(":")
    assert (node, int(pid), len(random_part)) == (socket.gethostname()[:80], os.getpid(), 8)
    assert second.owner != first.owner  # every claim its own token, also in one process
    leases = lease_of(ids)
    assert {leases[i][1] for i in ids[:2]} == {first.owner}
    assert leases[ids[2]][1] == second.owner
    for until, _ in leases.values():
        assert timezone.now() + dt.timedelta(seconds=13) < until <= timezone.now() + dt.timedelta(seconds=15)


def test_a_renewed_lease_is_extended_and_the_run_renews_only_when_what_is_left_might_not_cover_a_step(
    ledger_admin: LedgerAdmin,
):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    ids = [create(source, destination, 10).id for _ in range(3)]
    claimed = processing.claim(ids=ids)
    lease = processing.Lease(claimed)
    set_at = lease_of(ids)

    # fresh: keeping it sends nothing
    lease.keep()
    assert lease_of(ids) == set_at
    # a renewal extends every lease the claim holds, under the same owner
    time.sleep(0.3)
    assert lease.renew() == set()
    renewed = lease_of(ids)
    for payment_id in ids:
        assert renewed[payment_id][1] == claimed.owner
        assert renewed[payment_id][0] >= set_at[payment_id][0] + dt.timedelta(seconds=0.3)
    # once more than PAYMENTS_LEASE_SECONDS - (one ledger call + margin) has passed, keeping it renews it
    lease.since = time.monotonic() - processing.lease_renew_after() - 0.01
    lease.keep()
    assert all(lease_of(ids)[i][0] > renewed[i][0] for i in ids)
    assert lease.held == set(ids)
    # the run releases them at its end: both columns cleared
    assert processing.run(claimed).statuses == dict.fromkeys(ids, "settled")
    assert set(lease_of(ids).values()) == {(None, "")}


# --- a lost lease ----------------------------------------------------------------------------------------------


def test_an_owner_that_lost_its_lease_can_neither_renew_nor_write_nor_release_it(ledger_admin: LedgerAdmin, settings):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payments = [create(source, destination, 100 + i) for i in range(3)]
    ids = [p.id for p in payments]
    stalled = processing.claim(ids=ids)
    expire(ids)
    taken = processing.claim(ids=ids)  # another worker takes the expired leases over at once
    assert sorted(taken) == sorted(ids)
    leases = lease_of(ids)

    # the stalled worker's renewal finds every lease taken over
    lease = processing.Lease(stalled)
    assert lease.renew() == set(ids)
    assert lease.held == set()
    assert counter(settings, "leases_lost") == 3
    # its writes are compare-and-set on its token: nothing is written
    known = {p.id: Payment.objects.get(id=p.id) for p in payments}
    moved = services.transition_many({i: {} for i in ids}, ["created"], "screening", known=known, owner=stalled.owner)
    assert moved == []
    for payment in known.values():
        payment.attempts = 7
    assert queries.rows_write(list(known.values()), owner=stalled.owner) == []
    lease.release()
    # nor does a run under its claim touch them, or call the ledger for them
    result = processing.run(stalled)
    assert result.changed == 0
    assert {(p.status, p.attempts) for p in Payment.objects.filter(id__in=ids)} == {("created", 0)}
    assert lease_of(ids) == leases  # the new owner's leases, untouched
    assert all(ledger_admin.transaction_by_reference(i) == [] for i in ids)

    # the new owner carries them: one ledger transaction each
    assert processing.run(taken).statuses == dict.fromkeys(ids, "settled")
    assert all(len(ledger_admin.transaction_by_reference(i)) == 1 for i in ids)
    assert ledger_admin.balance(destination)["balance"] == 303


def test_a_worker_that_stalls_past_its_lease_stops_at_its_next_step_and_the_new_owner_settles_each_once(
    ledger_admin: LedgerAdmin, proxy: LedgerProxy, settings
):
    # a lease so short that the run renews before every step
    settings.PAYMENTS_LEASE_SECONDS = call_seconds()
    assert processing.lease_renew_after() < 0
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    ids = [create(source, destination, 100 + i).id for i in range(4)]
    taken: list[processing.Claim] = []

    def take_over(seen: Seen) -> None:
        # while the first worker waits for its holds, its leases run out and another worker takes them
        if taken:
            return
        try:
            expire(ids)
            taken.append(processing.claim(ids=ids))
        finally:
            connection.close()

    proxy.before_forwarding(HOLDS, take_over)
    stalled = processing.run(processing.claim(ids=ids))

    assert sorted(taken[0]) == sorted(ids)
    # its holds were placed (the call was in flight), but it renewed before posting them, found the leases lost
    # and stopped: no posting, no write
    assert calls(proxy, HOLDS) == 1
    assert calls(proxy, SETTLE) == 0
    assert stalled.changed == 4  # created → processing, before the takeover
    assert {p.status for p in Payment.objects.filter(id__in=ids)} == {"processing"}
    assert {p.hold_status for p in Payment.objects.filter(id__in=ids)} == {""}  # its hold ids were not written
    assert counter(settings, "leases_lost") == 4
    assert {owner for _, owner in lease_of(ids).values()} == {taken[0].owner}

    # the new owner finds the holds again (a replay) and posts them: one ledger transaction per payment
    assert processing.run(taken[0]).statuses == dict.fromkeys(ids, "settled")
    for payment_id in ids:
        (txn,) = ledger_admin.transaction_by_reference(payment_id)
        assert (txn["status"], txn["id"]) == ("posted", Payment.objects.get(id=payment_id).ledger_transaction)
    assert ledger_admin.balance(destination)["balance"] == 406


def test_a_slow_ledger_call_costs_a_live_worker_nothing_its_lease_is_renewed_between_steps(
    ledger_admin: LedgerAdmin, proxy: LedgerProxy, settings
):
    settings.PAYMENTS_LEASE_SECONDS = call_seconds() + processing.LEASE_MARGIN + 0.5  # renewed once 0.5 s has gone
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    ids = [create(source, destination, 10).id for _ in range(3)]
    seen: dict[str, object] = {}

    def during_the_posting(_: Seen) -> None:
        try:
            seen["leases"] = lease_of(ids)
            seen["another claim"] = processing.claim(ids=ids)
        finally:
            connection.close()

    proxy.delay(HOLDS, 1.0)
    proxy.before_forwarding(SETTLE, during_the_posting)
    claimed = processing.claim(ids=ids)
    claimed_until = lease_of(ids)

    assert processing.run(claimed).statuses == dict.fromkeys(ids, "settled")
    # before posting, a second after the claim, the run had renewed the leases: later than the claim's, still its own
    for payment_id, (until, owner) in seen["leases"].items():  # type: ignore[attr-defined]
        assert owner == claimed.owner
        assert until >= claimed_until[payment_id][0] + dt.timedelta(seconds=1)
    assert seen["another claim"] == []  # nobody could take them meanwhile
    assert all(len(ledger_admin.transaction_by_reference(i)) == 1 for i in ids)


# --- expired leases are taken over at once ----------------------------------------------------------------------


def test_an_expired_lease_is_taken_by_the_next_drain_and_by_the_sweeper_at_once_a_live_one_is_left(
    ledger_admin: LedgerAdmin, settings
):
    settings.PAYMENTS_STALE_SECONDS = 3600  # nothing here is stale: only the expired leases make them due
    settings.PAYMENTS_DRAIN_GATHER = 0
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    by_sweep = [create(source, destination, 10).id for _ in range(2)]
    by_drain = [create(source, destination, 20).id for _ in range(2)]
    live = create(source, destination, 30).id
    processing.claim(ids=[*by_sweep, *by_drain, live])  # a worker that is then killed, say
    expire([*by_sweep, *by_drain])

    # the sweeper takes the expired leases without waiting for PAYMENTS_STALE_SECONDS
    assert processing.sweep(limit=2) == {"resumed": 2, "holds_released": 0}
    assert {Payment.objects.get(id=i).status for i in by_sweep} == {"settled"}
    # a drain (new payments kicked it) takes the others first: theirs is the oldest change
    new = create(source, destination, 40).id
    assert processing.drain(seconds=5)["settled"] == 3
    assert {Payment.objects.get(id=i).status for i in [*by_drain, new]} == {"settled"}
    # the live lease is its worker's, left alone by both
    assert processing.sweep() == {"resumed": 0, "holds_released": 0}
    assert Payment.objects.get(id=live).status == "created"
    expire([live])
    assert processing.sweep() == {"resumed": 1, "holds_released": 0}
    assert ledger_admin.balance(destination)["balance"] == 2 * 10 + 2 * 20 + 30 + 40


# --- configuration ---------------------------------------------------------------------------------------------


def test_a_lease_shorter_than_one_ledger_call_with_its_retries_stops_the_process(settings):
    # the defaults: 15 s leases, calls of 2 tries x (2 s to connect + 3 s) + a wait of at most 1 s
    settings.PAYMENTS_LEASE_SECONDS, settings.PAYMENTS_LEDGER_TIMEOUT, settings.PAYMENTS_LEDGER_RETRIES = 15, 3.0, 1
    assert call_seconds() == 11
    assert payment_checks.check_lease_outlasts_a_ledger_call(None) == []

    settings.PAYMENTS_LEDGER_TIMEOUT, settings.PAYMENTS_LEDGER_RETRIES = 5.0, 2  # the old defaults
    (error,) = payment_checks.check_lease_outlasts_a_ledger_call(None)
    assert (error.id, error.level) == ("payments.E003", checks.ERROR)
    assert "(23 s:" in error.msg  # 3 tries x (2 s to connect + 5 s) + 2 waits of at most 1 s

    settings.PAYMENTS_LEASE_SECONDS = 24
    assert payment_checks.check_lease_outlasts_a_ledger_call(None) == []
