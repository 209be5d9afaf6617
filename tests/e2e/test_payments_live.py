"""A payment end to end, every part its own process: portal, ledger, payments, their workers."""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from tests.e2e.payments_stack import payments_stack

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_payment_goes_from_created_to_settled_and_leaves_its_trail(harness, live_portal):
    stack = payments_stack(harness, live_portal)
    source, destination = stack.funded(50_000), stack.account()

    created = stack.pay(source, destination, 12_345, headers={"Idempotency-Key": "e2e-1"})
    assert created["status"] == "created"

    def settled() -> bool:
        return stack.payments_http.get(f"/api/v1/payments/{created['id']}").json()["status"] == "settled"

    stack.wait_until(settled, 30, "the payment to settle")
    payment = stack.payments_http.get(f"/api/v1/payments/{created['id']}").json()
    assert [h["status"] for h in payment["status_history"]] == ["created", "screening", "processing", "settled"]

    # the money moved in the ledger, through one posted transaction referencing the payment
    assert stack.balance(source)["balance"] == 50_000 - 12_345
    assert stack.balance(destination)["balance"] == 12_345
    txn = stack.ledger_http.get(f"/api/v1/transactions/{payment['ledger_transaction']}").json()
    assert (txn["reference"], txn["status"]) == (created["id"], "posted")

    # the audit trail in the portal has the payment's steps and the ledger's, from their services
    wanted = {
        ("payments", "payments.payment.created"),
        ("payments", "payments.payment.settled"),
        ("ledger", "ledger.transaction.created"),
        ("ledger", "ledger.transaction.posted"),
    }

    def audited() -> set[tuple[str, str]]:
        rows = AuditEvent.objects.filter(object_id__in=[created["id"], txn["id"]])
        return set(rows.values_list("service", "action"))

    stack.wait_until(lambda: wanted <= audited(), 30, "the audit events to be chained")
    settled_event = AuditEvent.objects.get(action="payments.payment.settled", object_id=created["id"])
    assert settled_event.actor_type == "system"
    assert settled_event.metadata["ledger_transaction"] == txn["id"]

    # the domain events were relayed to their consumer, in order
    def delivered() -> list[str]:
        return [
            r.get("type") for w in stack.workers for r in w.log_records() if r.get("event") == "payments.domain_event"
        ]

    stack.wait_until(lambda: "payment.settled" in delivered(), 30, "the domain events to be delivered")
    assert delivered()[:4] == ["payment.created", "payment.screening", "payment.processing", "payment.settled"]
