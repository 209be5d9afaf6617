"""OpenTelemetry across real processes (payments web and worker, ledger web, the portal's audit worker), spans
written by the file exporter (``ATRIUM_OTEL_FILE``): one payment yields the payments API span, the drain span
linked to it, the ledger batch spans as children of the drain, and the audit ingest span linked to it; every one
carries the payment's request id (``atrium.request_id``, or among ``atrium.request_ids``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.payments_stack import payments_stack

pytestmark = pytest.mark.django_db(transaction=True)  # ~17 s: not slow

REQUEST_ID = "req-otel-live-1"


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def service(span: dict[str, Any]) -> str:
    return span["resource"]["attributes"]["service.name"]


def request_ids(span: dict[str, Any]) -> set[str]:
    attributes = span["attributes"]
    return {attributes.get("atrium.request_id", ""), *attributes.get("atrium.request_ids", [])}


def linked_to(span: dict[str, Any], target: dict[str, Any]) -> bool:
    return any(link["context"]["span_id"] == target["context"]["span_id"] for link in span["links"])


def test_one_payment_is_one_story_of_spans_across_processes(harness, live_portal, tmp_path):
    # given: the stack with the file exporter on (flushing every 100 ms)
    path = tmp_path / "spans.jsonl"
    stack = payments_stack(
        harness, live_portal, extra_env={"ATRIUM_OTEL_FILE": str(path), "OTEL_BSP_SCHEDULE_DELAY": "100"}
    )
    source, destination = stack.funded(10_000), stack.account()

    # when: one payment, under a request id of ours
    created = stack.pay(source, destination, 1_234, headers={"X-Request-ID": REQUEST_ID})

    # then
    found: dict[str, dict[str, Any]] = {}

    def story() -> bool:
        spans = read_spans(path)
        for span in spans:
            if span["kind"] == "SpanKind.SERVER" and service(span) == "payments" and REQUEST_ID in request_ids(span):
                if span["name"].startswith("POST api/v1/payments"):
                    found["api"] = span
        api = found.get("api")
        if api is None:
            return False
        for span in spans:
            if span["name"] == "run/payments.drain" and linked_to(span, api):
                found["drain"] = span
            if span["name"] == "run/audit.ingest" and linked_to(span, api):
                found["ingest"] = span
        drain = found.get("drain")
        if drain is not None:
            in_drain = {
                s["context"]["span_id"] for s in spans if s["context"]["trace_id"] == drain["context"]["trace_id"]
            }
            batch = [
                s
                for s in spans
                if service(s) == "ledger"
                and s["kind"] == "SpanKind.SERVER"
                and s["name"].startswith("POST api/v1/transactions/batch")
                and s["context"]["trace_id"] == drain["context"]["trace_id"]
                and s["parent_id"] in in_drain
            ]
            if len(batch) >= 2:  # the holds, then their posting
                found["ledger"] = min(batch, key=lambda s: s["start_time"])
                found["settle"] = max(batch, key=lambda s: s["start_time"])
        return {"api", "drain", "ingest", "ledger", "settle"} <= set(found)

    stack.wait_until(story, 60, "the payment's spans in the file", every=0.5)
    api, drain, ingest = found["api"], found["drain"], found["ingest"]
    assert stack.payments_http.get(f"/api/v1/payments/{created['id']}").json()["status"] == "settled"

    # the API span: the payments service, the request id of the call
    assert api["attributes"]["atrium.request_id"] == REQUEST_ID
    # the drain (payments worker): linked to the API span, the payment's request id among its items'
    assert service(drain) == "payments"
    link = next(link for link in drain["links"] if link["context"]["span_id"] == api["context"]["span_id"])
    assert link["context"]["trace_id"] == api["context"]["trace_id"]
    assert link["attributes"]["messaging.message.id"] == created["id"]
    assert REQUEST_ID in drain["attributes"]["atrium.request_ids"]
    assert drain["attributes"]["messaging.batch.message_count"] >= 1
    # the ledger's batch spans: children of the drain's trace (the traceparent crossed the HTTP call); they carry
    # the drain's request id, and the items' request ids when the items carry them
    for batch in (found["ledger"], found["settle"]):
        assert batch["attributes"]["atrium.request_id"] == drain["attributes"]["atrium.request_id"]
        if "atrium.request_ids" in batch["attributes"]:
            assert REQUEST_ID in batch["attributes"]["atrium.request_ids"]
    # the audit ingest (the portal's audit worker): linked to the API span (the payment.created event's context)
    assert service(ingest) == "portal"
    assert REQUEST_ID in ingest["attributes"]["atrium.request_ids"]
    # and every span the payment's request made in the payments process carries its id
    own = [
        s
        for s in read_spans(path)
        if s["context"]["trace_id"] == api["context"]["trace_id"] and service(s) == "payments"
    ]
    assert own
    assert all(s["attributes"].get("atrium.request_id") == REQUEST_ID for s in own)
