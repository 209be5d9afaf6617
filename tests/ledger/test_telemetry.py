"""OpenTelemetry in the ledger (in-memory exporter): a batch call made under a caller's trace (the payments drain)
is a child of the caller's span, with the caller's request id and the items' request ids."""

from __future__ import annotations

import json

import pytest
from opentelemetry.trace import SpanKind

from tests.ledger.conftest import LedgerAPI

pytestmark = pytest.mark.django_db

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def server_span(spans) -> object:
    (server,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    return server


def post_traced(api: LedgerAPI, path: str, body: dict) -> object:
    return api.client.post(
        f"/api/v1/{path}",
        json.dumps(body),
        content_type="application/json",
        HTTP_TRACEPARENT=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        HTTP_X_REQUEST_ID="req-otel-drain",
        **api.headers,
    )


def test_a_batch_call_is_a_child_of_the_callers_span_with_the_items_request_ids(spans, api: LedgerAPI, funded):
    # given
    world, customer = funded
    items = [
        {
            "reference": f"otel-{n}",
            "pending": True,
            "postings": [
                {"account": customer["id"], "direction": "debit", "amount": 10},
                {"account": world["id"], "direction": "credit", "amount": 10},
            ],
            **({"request_id": f"req-otel-item-{n}"} if n < 2 else {}),
        }
        for n in range(3)
    ]
    spans.clear()

    # when
    response = post_traced(api, "transactions/batch", {"transactions": items})

    # then
    assert response.status_code == 200, response.content
    server = server_span(spans)
    assert server.name.startswith("POST api/v1/transactions/batch")
    assert (f"{server.context.trace_id:032x}", f"{server.parent.span_id:016x}") == (CALLER_TRACE, CALLER_SPAN)
    assert server.parent.is_remote
    assert server.attributes["atrium.request_id"] == "req-otel-drain"
    assert list(server.attributes["atrium.request_ids"]) == ["req-otel-item-0", "req-otel-item-1"]


def test_a_settle_batch_is_a_child_of_the_callers_span(spans, api: LedgerAPI, funded):
    world, customer = funded
    held = api.transfer(customer["id"], world["id"], 10, reference="otel-hold", pending=True).json()["id"]
    spans.clear()

    response = post_traced(api, "transactions/batch/settle", {"action": "post", "transactions": [held]})

    assert response.status_code == 200, response.content
    server = server_span(spans)
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN
    assert server.attributes["atrium.request_id"] == "req-otel-drain"
    assert "atrium.request_ids" not in server.attributes  # plain ids carry none
