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

    # the domain events (the public steps only) were relayed, in order, to the webhooks service's task: both
    # relays moved their topic's published watermark past them
    relayed = (
        "SELECT e.payload->>'type' FROM kit_outbox_event e JOIN kit_outbox_counter c ON c.topic = e.topic"
        " WHERE e.topic = 'events' AND e.payload->'data'->>'id' = %s AND e.seq <= c.published_seq ORDER BY e.seq"
    )

    def delivered() -> list[str]:
        return [row[0] for row in stack.payments_sql(relayed, [created["id"]])]

    stack.wait_until(lambda: "payment.settled" in delivered(), 30, "the domain events to be relayed")
    assert delivered() == ["payment.created", "payment.settled"]
    stack.wait_until(lambda: stack.ledger_sql(relayed, [txn["id"]]), 30, "the ledger's event to be relayed")
    assert stack.ledger_sql(relayed, [txn["id"]]) == [("ledger.transaction.posted",)]
