"""OpenTelemetry in the payments service (in-memory exporter): the API's span carries the request id, a payment
keeps the context it was created in, and the drain that processes payments links to each of those contexts."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind

from services.kit.models import OutboxEvent
from services.payments.models import Payment
from tests.payments.conftest import LedgerAdmin, PaymentsAPI
from tests.telemetry import named, traceparent_of
from workers.payments import drain

pytestmark = pytest.mark.django_db(transaction=True)


def body(source: str, destination: str, amount: int = 1500) -> dict:
    return {"amount": amount, "currency": "EUR", "source_account": source, "destination_account": destination}


def create(api: PaymentsAPI, source: str, destination: str, request_id: str) -> dict:
    response = api.client.post(
        "/api/v1/payments",
        body(source, destination),
        content_type="application/json",
        HTTP_X_REQUEST_ID=request_id,
        **api.headers,
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_the_api_span_carries_the_request_id_and_the_payment_keeps_its_context(
    api: PaymentsAPI, ledger_admin: LedgerAdmin, spans
):
    # given
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()

    # when
    payment = create(api, source, destination, "req-otel-api")

    # then
    (server,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.name.startswith("POST api/v1/payments")  # (the route, as Django matched it)
    assert server.attributes["atrium.request_id"] == "req-otel-api"
    assert Payment.objects.get(id=payment["id"]).trace_parent == traceparent_of(server)
    # its audit event carries the same context (the portal's ingest links to it)
    audit = OutboxEvent.objects.get(topic="audit", payload__object__id=payment["id"])
    assert audit.payload["trace_parent"] == traceparent_of(server)
    # the spans made while serving it (the ledger checks over httpx, the queries) are in its trace, with its id
    inner = [s for s in spans.get_finished_spans() if s.context.trace_id == server.context.trace_id and s is not server]
    assert {s.kind for s in inner} >= {SpanKind.CLIENT}
    ledger_url = str(ledger_admin.http.base_url).rstrip("/")
    assert any(str(s.attributes.get("http.url", "")).startswith(ledger_url) for s in inner)
    assert all(s.attributes.get("atrium.request_id") == "req-otel-api" for s in inner)


def test_a_drain_links_to_the_contexts_its_payments_were_created_in(api: PaymentsAPI, ledger_admin: LedgerAdmin, spans):
    # given: payments created by two requests
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    first = create(api, source, destination, "req-otel-one")
    second = create(api, source, destination, "req-otel-two")
    created = {s.attributes["atrium.request_id"]: s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER}

    # when: the payments.drain task runs (in this process)
    spans.clear()
    drain.apply()

    # then: its span links to both creation contexts, with the payments' ids and request ids
    (run,) = named(spans, "run/payments.drain")
    links = {link.attributes["messaging.message.id"]: link for link in run.links}
    assert set(links) == {first["id"], second["id"]}
    for payment, request_id in ((first, "req-otel-one"), (second, "req-otel-two")):
        link = links[payment["id"]]
        assert link.context.trace_id == created[request_id].context.trace_id
        assert link.context.span_id == created[request_id].context.span_id
        assert link.attributes["atrium.request_id"] == request_id
    assert run.attributes["messaging.batch.message_count"] == 2
    assert set(run.attributes["atrium.request_ids"]) == {"req-otel-one", "req-otel-two"}
    assert run.attributes["atrium.request_id"]  # the drain's own
    # the ledger calls are children of the drain: the ledger gets the drain's traceparent
    calls = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT and s.name == "POST"]
    assert calls
    assert all(s.context.trace_id == run.context.trace_id for s in calls)
    assert Payment.objects.filter(status="settled").count() == 2


def test_with_telemetry_off_a_payment_records_no_context(api: PaymentsAPI, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()

    payment = create(api, source, destination, "req-otel-off")

    assert Payment.objects.get(id=payment["id"]).trace_parent == ""
    assert "trace_parent" not in OutboxEvent.objects.get(topic="audit", payload__object__id=payment["id"]).payload
