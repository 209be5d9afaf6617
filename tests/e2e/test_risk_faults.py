"""Faults at the seams of the TypeScript risk service, every part its own process.

* The risk service stops while 300 payments are being screened, with ``PAYMENTS_RISK_FALLBACK=hold``: the
  payments wait in ``screening`` (none fails, none is let through unscreened) and, once it is back on its port,
  every one of the 300 is screened and ends settled or rejected by the rules — none lost, the money adds up.
* The portal stops while the risk service changes its rules: the audit events wait in the risk service's own
  outbox, and reach the portal's chain over HTTP once it is back, in order, with no gap; ``audit_verify`` passes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import pytest

from portal.audit.models import AuditEvent
from tests.e2e import hostile_audit_jobs as h
from tests.e2e.payments_stack import payments_stack
from tests.e2e.risk_stack import caller_token, risk_restart, risk_rules, risk_start
from tests.e2e.test_payments_faults import (
    FUNDS,
    QUICK_RETRIES,
    _check_the_money,
    _count,
    _create_all,
    _plan,
    _wait_all_terminal,
)
from tests.harness import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The plan's payments (100 to 999) score at most 50 (the hourly sum): allowed. One in nine is made 20,000 from one
# source: above the absolute threshold (40) and, alone, above the hourly sum (50) → 90, denied by the rules.
FAULT_RULES: dict[str, Any] = {
    "thresholds": {"review": 80, "deny": 80},
    "velocity": [{"name": "hourly", "window_seconds": 3600, "max_count": None, "max_amount": 10_000, "weight": 50}],
    "new_payee": {"enabled": False, "weight": 0},
    "amount_outlier": {"enabled": False, "percentile": 99, "lookback_days": 90, "min_history": 20, "weight": 0},
    "amount_high": {"EUR": {"amount": 15_000, "weight": 40}},
}


def test_risk_stopped_during_300_payments_with_hold_then_back_none_lost(harness, live_portal):
    risk = risk_start(harness, live_portal)
    risk_rules(risk, caller_token(live_portal, ["risk:write"]), FAULT_RULES)
    stack = payments_stack(
        harness,
        live_portal,
        workers=2,
        risk_url=risk.url,
        extra_env={**QUICK_RETRIES, "PAYMENTS_RISK_FALLBACK": "hold", "PAYMENTS_RISK_TIMEOUT": "1"},
    )
    funded = {stack.funded(FUNDS): FUNDS for _ in range(4)}
    destinations = [stack.account() for _ in range(2)]
    plan = _plan(300, list(funded), destinations, "risk-outage")
    # One in nine asks for 20,000 from the fourth source: the risk rules deny every one of them.
    deny_source = list(funded)[3]
    plan = [p if i % 9 else replace(p, source=deny_source, amount=20_000) for i, p in enumerate(plan)]

    # The first 100 are created (4 threads) and screened; risk stops once 30 have settled, while the creation
    # may still run; the other 200 are created while it is away.
    background = ThreadPoolExecutor(1)
    creator = background.submit(_create_all, stack, plan[:100], threads=4, timeout=180)
    stack.wait_until(lambda: _count(stack, "settled") >= 30, 60, "30 payments to settle", every=0.1)
    risk.process.stop()
    stopped_at = time.monotonic()
    ids = creator.result(timeout=180)
    background.shutdown()
    ids += _create_all(stack, plan[100:], threads=4, timeout=180)
    assert len(ids) == 300

    # While risk is away: payments wait in screening; none is failed, rejected for want of risk, or let through.
    time.sleep(max(4.0, 12 - (time.monotonic() - stopped_at)))  # away ≥ 12 s: retries, breakers open
    waiting = _count(stack, "screening", "created")
    during = stack.statuses()
    assert waiting >= 200, during
    unscreened = stack.payments_sql(
        "SELECT count(*) FROM payments_payment WHERE status IN ('processing', 'settled') AND risk_decision = ''"
    )[0][0]
    assert unscreened == 0, "a payment went on without the risk service's decision"
    assert _count(stack, "failed") == 0
    failures = stack.payments_sql("SELECT count(*) FROM payments_payment WHERE failure_code = 'risk_unavailable'")
    assert failures[0][0] == 0

    risk = risk_restart(harness, live_portal, risk)
    back_at = time.monotonic()
    _wait_all_terminal(stack, 300, 180, sweep_every=2)
    ended = time.monotonic()
    print(
        f"risk away {back_at - stopped_at:.1f} s with {waiting} payments waiting ({during}); all 300 final "
        f"{ended - back_at:.1f} s after it returned: {stack.statuses()}"
    )
    rows = stack.payments_sql("SELECT status, failure_code, amount, risk_decision FROM payments_payment")
    assert len(rows) == 300
    assert {status for status, *_ in rows} <= {"settled", "rejected"}, stack.statuses()
    rejected = [(code, amount, decision) for status, code, amount, decision in rows if status == "rejected"]
    # Rejected only by the rules, and every payment the rules deny: the 34 of 20,000.
    assert rejected == [("risk_denied", 20_000, "deny")] * 34, rejected[:5]
    assert all(decision == "allow" for status, _, _, decision in rows if status == "settled")
    _check_the_money(stack, ids, funded, destinations)


def test_portal_stopped_while_risk_changes_rules_events_arrive_in_order_without_gap(harness, live_portal, tmp_path):
    # A portal of its own (same test database, own port) that the test may stop; the module's stays up.
    portal = harness.web("portal", database_url=live_portal.env["PORTAL_DATABASE_URL"])
    risk = risk_start(harness, portal, env={"RISK_RELAY_BACKOFF_MAX_SECONDS": "1"})
    token = caller_token(portal, ["risk:read", "risk:write"])
    rules_http = httpx.Client(base_url=risk.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert rules_http.get("/api/v1/rules").status_code == 200  # the service has the portal's keys now

    def chained() -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(service="risk").order_by("service_seq"))

    before = risk_rules(risk, token, FAULT_RULES)
    wait_until(lambda: any(e.action == "risk.rules.updated" for e in chained()), 30, "the first rules event")
    seen = len(chained())

    port = int((portal.url or "").rsplit(":", 1)[1])
    portal.stop()
    versions = []
    for n in range(5):
        changed = {**FAULT_RULES, "amount_high": {"EUR": {"amount": 15_000 + 1_000 * (n + 1), "weight": 40}}}
        versions.append(risk_rules(risk, token, changed)["version"])
    assert versions == list(range(before["version"] + 1, before["version"] + 6))
    time.sleep(2)  # the relay tries (and fails) meanwhile
    assert len(chained()) == seen, "events reached the chain while the portal was down?"
    pending = risk.process.output()
    assert "relay" in pending  # it said it could not deliver

    portal = harness.web("portal", database_url=live_portal.env["PORTAL_DATABASE_URL"], port=port)
    wait_until(lambda: len([e for e in chained() if e.action == "risk.rules.updated"]) >= 6, 60, "the 5 events")
    events = chained()
    assert [e.service_seq for e in events] == list(range(1, len(events) + 1)), "a gap or a reordering"
    updates = [e for e in events if e.action == "risk.rules.updated"]
    assert [e.metadata["version"] for e in updates] == [before["version"], *versions]
    assert [e.seq for e in updates] == sorted(e.seq for e in updates)  # chained in the order they happened
    last = updates[-1].changes
    assert any("amount_high" in path for path in last), last
    verified, _ = h.audit_verify(str(tmp_path / "heads.jsonl"), "--strict-services")  # this test's heads only
    assert verified.returncode == 0, verified.stdout + verified.stderr
