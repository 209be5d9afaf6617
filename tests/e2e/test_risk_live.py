"""The TypeScript risk service joins as an equal, every part its own process: the portal (tokens, JWKS, catalog,
audit trail), the ledger, payments and its worker under gunicorn/Celery, and the risk service on Node 24.

A payment the risk rules deny is rejected; one they mark for review waits in ``review`` until an operator
approves it, then settles; one they allow settles. The risk service's audit events reach the portal over HTTP
(``POST /api/v1/audit/events:ingest``), in the same chain as the Python services' (``audit_verify
--strict-services`` passes), and the catalog shows the observed edge ``payments → risk`` with risk passing.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from portal.audit.models import AuditEvent
from portal.catalog.models import Service
from tests.e2e import hostile_audit_jobs as h
from tests.e2e.payments_stack import PaymentsStack, payments_stack
from tests.e2e.risk_stack import DECIDING_RULES, RiskService, caller_token, risk_rules, risk_start
from tests.harness import wait_until
from workers.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


def _payment(stack: PaymentsStack, payment_id: str) -> dict[str, Any]:
    response = stack.payments_http.get(f"/api/v1/payments/{payment_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _status(stack: PaymentsStack, payment_id: str, wanted: str, timeout: float = 40) -> dict[str, Any]:
    return wait_until(
        lambda: (p := _payment(stack, payment_id))["status"] == wanted and p, timeout, f"{payment_id} {wanted}"
    )


def _risk(stack: PaymentsStack, payment_id: str) -> tuple[str, int | None, list[str], str]:
    """The risk service's verdict as payments kept it: (decision, score, reason codes, assessment id)."""
    rows = stack.payments_sql(
        "SELECT risk_decision, risk_score, risk_reasons, risk_assessment_id FROM payments_payment WHERE id = %s",
        [payment_id],
    )
    return rows[0]  # type: ignore[return-value]


def _python_services_chained(stack: PaymentsStack) -> bool:
    """Whether every audit event the payments and ledger services wrote to their outboxes is in the chain."""
    for service, sql in (("payments", stack.payments_sql), ("ledger", stack.ledger_sql)):
        written = sql("SELECT count(*) FROM kit_outbox_event WHERE topic = 'audit'")[0][0]
        if AuditEvent.objects.filter(service=service).count() < written:
            return False
    return True


def _risk_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(service="risk").order_by("service_seq"))


def test_risk_decides_payments_and_its_trail_and_edge_reach_the_portal(harness, live_portal, tmp_path):
    with app.connection_for_write() as conn:  # no stale batches other tests' relays left on the shared broker
        conn.default_channel.queue_purge("audit")
    risk: RiskService = risk_start(harness, live_portal)
    rules_token = caller_token(live_portal, ["risk:read", "risk:write"])
    version = risk_rules(risk, rules_token, DECIDING_RULES)
    # (payments registers in the catalog too: its calls to risk are drawn from its client)
    stack = payments_stack(
        harness, live_portal, risk_url=risk.url, extra_env={"ATRIUM_PORTAL_URL": live_portal.url or ""}
    )

    source, other, destination = stack.funded(500_000), stack.funded(500_000), stack.account()
    allowed = stack.pay(source, destination, 500)
    denied = stack.pay(source, destination, 60_000)  # 40 + 50: deny
    review = stack.pay(other, destination, 20_000)  # 40: review

    _status(stack, allowed["id"], "settled")
    assert _risk(stack, allowed["id"])[0] == "allow"
    assert _status(stack, denied["id"], "rejected")["failure_code"] == "risk_denied"
    decision, score, reasons, assessment = _risk(stack, denied["id"])
    assert (decision, score) == ("deny", 90)
    assert set(reasons) == {"amount_high", "velocity_amount"}
    _status(stack, review["id"], "review")
    assert _risk(stack, review["id"])[:3] == ("review", 40, ["amount_high"])
    # the assessment payments kept is the risk service's own
    read = httpx.get(
        f"{risk.url}/api/v1/assessments/{assessment}",
        headers={"Authorization": f"Bearer {caller_token(live_portal, ['risk:read'])}"},
        timeout=10,
    )
    assert read.status_code == 200, read.text
    assert (read.json()["payment_id"], read.json()["decision"]) == (denied["id"], "deny")
    assert stack.balance(other)["balance"] == 500_000  # nothing held while it waits

    # The operator approves it: it goes on to the ledger and settles.
    approved = stack.payments_http.post(f"/api/v1/payments/{review['id']}/approve", json={"reason": "known payee"})
    assert approved.status_code == 200, approved.text
    settled = _status(stack, review["id"], "settled")
    assert [s["status"] for s in settled["status_history"]] == [
        "created",
        "screening",
        "review",
        "processing",
        "settled",
    ]
    assert stack.balance(other)["balance"] == 500_000 - 20_000
    # Approving again is refused with a problem, not a 500.
    again = stack.payments_http.post(f"/api/v1/payments/{review['id']}/approve")
    assert (again.status_code, again.json()["code"]) == (409, "payment_not_in_review")

    # Every step is in the portal's audit trail: the Node service's events came over HTTP, in one chain.
    paid = {allowed["id"], denied["id"], review["id"]}

    def audited() -> bool:
        decided = {e.object_id for e in _risk_events() if e.action == "risk.assessment.decided"}
        return (
            paid <= decided
            and AuditEvent.objects.filter(
                service="payments", action="payments.payment.review_approved", object_id=review["id"]
            ).exists()
        )

    wait_until(audited, 40, "the risk and payments audit events to be chained")
    # ...and every audit event the Python services wrote is chained too (none in flight), so the chain is complete
    wait_until(lambda: _python_services_chained(stack), 40, "the payments and ledger audit events to be chained")
    events = _risk_events()
    assert [e.service_seq for e in events] == list(range(1, len(events) + 1))  # gapless, in order
    rules_event = next(e for e in events if e.action == "risk.rules.updated")
    assert rules_event.metadata["version"] == version["version"]
    assert rules_event.changes  # before and after of each changed rule
    decisions = {e.object_id: e.metadata["decision"] for e in events if e.action == "risk.assessment.decided"}
    assert decisions == {allowed["id"]: "allow", denied["id"]: "deny", review["id"]: "review"}
    approval = AuditEvent.objects.get(action="payments.payment.review_approved", object_id=review["id"])
    assert approval.actor_type == "client"
    verified, _ = h.audit_verify(str(tmp_path / "heads.jsonl"), "--strict-services")  # this test's heads only
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The catalog: risk registered itself, passes its health check, and payments → risk was observed.
    reader = caller_token(live_portal, ["portal:read"], audience="portal")
    catalog = httpx.Client(base_url=live_portal.url or "", headers={"Authorization": f"Bearer {reader}"}, timeout=10)

    def edge() -> dict[str, Any] | None:
        body = catalog.get("/api/v1/catalog/graph").json()
        return next((e for e in body["edges"] if (e["from"], e["to"]) == ("payments", "risk") and e["observed"]), None)

    try:
        found = wait_until(edge, 40, "the observed edge payments → risk")
    except AssertionError:
        print(catalog.get("/api/v1/catalog/graph").json())
        print(list(Service.objects.values_list("slug", "registered_by")))
        from portal.catalog.models import ObservedCall

        print(list(ObservedCall.objects.values()))
        raise
    assert found["declared"] is True
    assert found["calls"] >= 1
    assert Service.objects.get(slug="risk").registered_by == risk.client_id
    wait_until(lambda: catalog.get("/api/v1/catalog/services/risk").json()["status"] == "passing", 40, "risk passing")


def test_review_rejected_by_an_operator_never_reaches_the_ledger(harness, live_portal):
    risk = risk_start(harness, live_portal)
    risk_rules(risk, caller_token(live_portal, ["risk:write"]), DECIDING_RULES)
    stack = payments_stack(harness, live_portal, risk_url=risk.url)
    source, destination = stack.funded(100_000), stack.account()
    review = stack.pay(source, destination, 15_000)
    _status(stack, review["id"], "review")
    refused = stack.payments_http.post(f"/api/v1/payments/{review['id']}/reject", json={"reason": "mule account"})
    assert refused.status_code == 200, refused.text
    rejected = _status(stack, review["id"], "rejected")
    assert rejected["failure_code"] == "risk_review_rejected"
    assert stack.balance(source)["balance"] == 100_000
    assert not stack.ledger_sql("SELECT 1 FROM ledger_transaction WHERE reference = %s", [review["id"]])
