"""Webhooks end to end, every part its own process: portal, ledger, payments (web, worker, relays), the webhooks
service's web process, worker and dispatcher, and three local receivers verifying every delivery with the
``standardwebhooks`` package.

Payments are created and settled (one fails for want of funds); each endpoint must receive exactly the events its
filter and channels select — computed independently from the payments' and the ledger's own databases — each
once, each signature verified.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.e2e.payments_stack import payments_stack
from tests.e2e.webhooks_stack import webhooks_stack
from tests.webhook_receivers import Delivery, Receivers, secret_new

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = ("created", "settled", "failed", "rejected", "canceled")
TERMINAL = ("settled", "failed", "rejected", "canceled")


def _received(receivers: Receivers, name: str) -> list[Delivery]:
    return receivers.successes(name)


def test_three_endpoints_receive_exactly_what_their_filters_and_channels_select(harness, live_portal):
    pay = payments_stack(harness, live_portal)
    hooks = webhooks_stack(harness, live_portal)
    with Receivers() as receivers:
        secrets = {name: secret_new() for name in ("all_payments", "settled_only", "one_account")}
        source, other_source = pay.account(), pay.account()
        destination = pay.account()
        hooks.endpoint(
            "all_payments",
            receivers.add("all_payments", secret=secrets["all_payments"]),
            secret=secrets["all_payments"],
            event_types=["payment.*"],
        )
        hooks.endpoint(
            "settled_only",
            receivers.add("settled_only", secret=secrets["settled_only"]),
            secret=secrets["settled_only"],
            event_types=["payment.settled"],
        )
        hooks.endpoint(
            "one_account",
            receivers.add("one_account", secret=secrets["one_account"]),
            secret=secrets["one_account"],
            event_types=["*"],
            channels=[source],
        )

        # money in (ledger.transaction.posted on `source`: one_account's), then payments from both sources
        for account in (source, other_source):
            funding = pay.account(allow_negative=True)
            response = pay.ledger_http.post(
                "/api/v1/transactions",
                json={
                    "reference": f"fund-{account}",
                    "postings": [
                        {"account": funding, "direction": "debit", "amount": 100_000},
                        {"account": account, "direction": "credit", "amount": 100_000},
                    ],
                },
            )
            assert response.status_code == 201, response.text
        payments = [pay.pay(source, destination, 1_000 + i)["id"] for i in range(4)]
        payments += [pay.pay(other_source, destination, 2_000 + i)["id"] for i in range(3)]
        payments.append(pay.pay(source, destination, 10_000_000)["id"])  # more than it holds: not settled
        pay.wait_until(
            lambda: sum(pay.statuses().get(s, 0) for s in TERMINAL) == len(payments), 60, "every payment to end"
        )
        statuses = pay.statuses()
        assert statuses.get("settled") == 7, statuses

        # what each endpoint must get, from the services' own databases
        histories = pay.payments_sql(
            "SELECT id, source_account, destination_account, status_history FROM payments_payment"
        )
        payment_events = {
            (f"payment.{h['status']}", pid, src, dst)
            for pid, src, dst, history in histories
            for h in history
            if h["status"] in PUBLIC
        }
        ledger_events = {
            (f"ledger.transaction.{status}", txn)
            for txn, status in pay.ledger_sql(
                "SELECT DISTINCT t.id, t.status FROM ledger_transaction t JOIN ledger_posting p "
                "ON p.transaction_id = t.id WHERE p.account_id = %s AND t.status IN ('posted', 'voided')",
                [source],
            )
        }
        expected = {
            "all_payments": {(t, pid) for t, pid, _, _ in payment_events},
            "settled_only": {(t, pid) for t, pid, _, _ in payment_events if t == "payment.settled"},
            "one_account": {(t, pid) for t, pid, src, dst in payment_events if source in (src, dst)} | ledger_events,
        }
        assert len(expected["settled_only"]) == 7
        assert any(t != "payment.created" and t != "payment.settled" for t, _ in expected["all_payments"])
        assert ledger_events, "the funding and the settled payments of `source` posted ledger transactions"

        def arrived() -> bool:
            return all(
                expected[name] <= {(d.type, d.object_id) for d in _received(receivers, name)} for name in expected
            )

        deadline = time.monotonic() + 60
        while not arrived():
            if time.monotonic() > deadline:
                got = {n: sorted({(d.type, d.object_id) for d in _received(receivers, n)}) for n in expected}
                missing = {n: sorted(expected[n] - set(got[n])) for n in expected}
                raise AssertionError(f"not every event arrived within 60 s; missing {missing}")
            time.sleep(0.2)
        time.sleep(3)  # anything extra (a message it should not get, a second copy) would arrive by now

        report = {}
        webhook_ids: dict[tuple[str, str | None], set[str]] = {}
        for name, wanted in expected.items():
            every = receivers.deliveries(name)
            assert every, name
            assert all(d.verified is True for d in every), [d for d in every if d.verified is not True]
            assert all(d.ok for d in every), [d for d in every if not d.ok]
            got = {(d.type, d.object_id) for d in every}
            assert got == wanted, f"{name}: extra {sorted(got - wanted)}, missing {sorted(wanted - got)}"
            by_id = Counter(d.webhook_id for d in every)
            duplicates = {k: n for k, n in by_id.items() if n > 1}
            assert not duplicates, f"{name}: delivered more than once on a healthy run: {duplicates}"
            assert all(k.startswith("msg_") for k in by_id), by_id
            assert len(by_id) == len(wanted), f"{name}: {len(by_id)} messages for {len(wanted)} events"
            for d in every:
                webhook_ids.setdefault((d.type, d.object_id), set()).add(d.webhook_id)
            report[name] = len(every)
        # one message per event, fanned out: the same webhook-id at every endpoint it reached
        assert all(len(ids) == 1 for ids in webhook_ids.values()), {k: v for k, v in webhook_ids.items() if len(v) > 1}

        # the service's own record agrees: every delivery succeeded at its first attempt
        states = dict(hooks.sql("SELECT state, count(*) FROM webhooks_delivery GROUP BY state"))
        assert states == {"succeeded": sum(report.values())}, states
        assert hooks.sql("SELECT count(*) FROM webhooks_attempt WHERE error <> ''")[0][0] == 0
        print(f"\nwebhooks delivered and verified: {report}")
