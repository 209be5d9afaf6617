"""One request id finds everything its request caused, through a batch: three payments created under three
request ids settle in one drain, every part its own process (portal, ledger, payments, the payments worker, the
audit worker, the job monitor). Each id finds its own payment's steps and none of the others', the ledger
transaction that moved its money, and the drain that carried it; the payment's id finds the same."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from portal.audit.models import AuditEvent
from portal.jobs.models import Job
from tests.e2e.payments_stack import payments_stack
from tests.harness import ProcessHarness

pytestmark = pytest.mark.django_db(transaction=True)

RIDS = ("acc-rid-1", "acc-rid-2", "acc-rid-3")
STEPS = ["created", "screening", "processing", "settled"]


def test_three_requests_settled_in_one_drain_are_each_found_by_their_own_id(
    harness: ProcessHarness, live_portal: Any, stream: str, all_access_client: tuple[str, str], get_token: Any
):
    env = {"JOBS_STREAM": stream}
    stack = payments_stack(harness, live_portal, workers=0, extra_env=env)
    harness.jobs_monitor(stream)
    source, destination = stack.funded(100_000), stack.account()
    # No payments worker yet: the three wait, and the first drain claims them together.
    payments = {rid: stack.pay(source, destination, 1_000 + i, headers={"X-Request-ID": rid}) for i, rid in
                enumerate(RIDS)}  # fmt: skip
    stack.workers.append(
        harness.worker("payments", database_url=stack.env["PAYMENTS_DATABASE_URL"], env={**stack.env, **env})
    )

    def all_settled() -> bool:
        got = {rid: stack.payments_http.get(f"/api/v1/payments/{p['id']}").json() for rid, p in payments.items()}
        return all(body["status"] == "settled" for body in got.values())

    stack.wait_until(all_settled, 60, "the three payments to settle")
    settled = {rid: stack.payments_http.get(f"/api/v1/payments/{p['id']}").json() for rid, p in payments.items()}
    txns = {rid: body["ledger_transaction"] for rid, body in settled.items()}

    def chained(service: str) -> int:
        return AuditEvent.objects.filter(request_id__in=RIDS, service=service).count()

    # Each payment's four steps, then its ledger transaction's created and posted, under the payment's request id.
    stack.wait_until(lambda: chained("payments") >= 4 * len(RIDS), 60, "the payments' steps in the audit trail")
    stack.wait_until(lambda: chained("ledger") >= 2 * len(RIDS), 30, "the ledger's steps under the same ids")

    def drains() -> list[Job]:
        return list(Job.objects.filter(name="payments.drain", carried_requests__gt=0, state="succeeded"))

    stack.wait_until(lambda: drains(), 60, "the drain and what it carried to be recorded")
    (drain,) = drains()  # one drain carried all three
    assert drain.carried_requests == 3
    assert drain.request_id not in RIDS  # the drain runs under its own request id

    for rid, payment in payments.items():
        others = {p["id"] for r, p in payments.items() if r != rid}
        events = list(AuditEvent.objects.filter(request_id=rid).order_by("seq"))
        mine = [e.action.rsplit(".", 1)[1] for e in events if e.object_id == payment["id"]]
        assert mine == STEPS, (rid, mine)
        assert not [e for e in events if e.object_id in others]
        worker_steps = [e for e in events if e.object_id == payment["id"] and e.action != "payments.payment.created"]
        assert {e.metadata.get("task_id") for e in worker_steps} == {drain.task_id}  # the job that caused them
        ledger = sorted(e.action for e in events if e.object_id == txns[rid])
        assert ledger == ["ledger.transaction.created", "ledger.transaction.posted"], (rid, ledger)
        (txn_request,) = stack.ledger_sql("SELECT request_id FROM ledger_transaction WHERE id = %s", [txns[rid]])
        assert txn_request == (rid,)

    # The jobs API finds the drain for each id, marked linked; and by the payment's id.
    client_id, secret = all_access_client
    token = get_token(client_id, secret, "portal", scope="jobs:read audit:read")
    portal = httpx.Client(base_url=live_portal.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    for rid, payment in payments.items():
        rows = portal.get("/api/v1/jobs/tasks", params={"request_id": rid}).json()["results"]
        linked = [r for r in rows if r["linked"] and r["name"] == "payments.drain"]
        assert [r["task_id"] for r in linked] == [drain.task_id], rows
        # (the consumer of its domain events is linked too when it runs: it handled an event of the request)
        assert {r["name"] for r in rows if r["linked"]} <= {"payments.drain", "webhooks.ingest"}
        by_object = portal.get("/api/v1/jobs/tasks", params={"object_id": payment["id"]}).json()["results"]
        assert [r["task_id"] for r in by_object if r["name"] == "payments.drain"] == [drain.task_id]

    # The trace: for each request id, its payment's four steps (none of the others'), its ledger transaction and
    # that transaction's events, and the drain that carried it; the payment's id gives the same timeline.
    for rid, payment in payments.items():
        others = {p["id"] for r, p in payments.items() if r != rid}
        trace = portal.get(f"/api/v1/trace/{rid}")
        assert trace.status_code == 200, trace.text
        body = trace.json()
        assert (body["kind"], body["request_ids"], body["audit_visible"]) == ("request", [rid], True)
        audit = [e for e in body["timeline"] if e["kind"] == "audit"]
        steps = [e["title"].rsplit(".", 1)[1] for e in audit if e["object"]["id"] == payment["id"]]
        assert steps == STEPS, (rid, steps)
        assert not [e for e in audit if e["object"]["id"] in others]
        ledger = sorted(e["title"] for e in audit if e["object"]["id"] == txns[rid])
        assert ledger == ["ledger.transaction.created", "ledger.transaction.posted"]
        jobs = [e for e in body["timeline"] if e["kind"] == "job" and e["title"] == "payments.drain"]
        assert [(j["task_id"], j["linked"], j["state"]) for j in jobs] == [(drain.task_id, True, "succeeded")]
        assert jobs[0]["queue_wait_ms"] is not None
        assert jobs[0]["runtime_ms"] is not None
        times = [e["at"] for e in body["timeline"]]
        assert times == sorted(times)
        objects = {o["id"]: o for o in body["objects"]}
        assert objects[payment["id"]]["status"] == "settled"
        assert not objects[payment["id"]]["pending"]
        assert txns[rid] in objects

        by_payment = portal.get(f"/api/v1/trace/{payment['id']}").json()
        assert (by_payment["kind"], by_payment["request_ids"]) == ("object", [rid])
        same = [(e["kind"], e["title"], e["at"]) for e in by_payment["timeline"]]
        assert same == [(e["kind"], e["title"], e["at"]) for e in body["timeline"]]
