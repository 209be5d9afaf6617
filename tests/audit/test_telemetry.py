"""OpenTelemetry in the portal's audit ingest (in-memory exporter): the task's span links to the context each
event was created in, and lists their request ids; the context never enters the chain."""

from __future__ import annotations

import json
from typing import Any

import pytest

from portal.audit.models import AuditEvent
from tests.audit.test_chain import make_event
from tests.telemetry import named

pytestmark = pytest.mark.django_db(transaction=True)

CREATED_IN = [f"00-{n:032x}-{n + 100:016x}-01" for n in (1, 2)]


@pytest.fixture(autouse=True)
def _heads_file(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"


def relayed(n: int, **extra: Any) -> list[Any]:
    """An event as the outbox relay sends it: [id, service, service_seq, payload JSON text]."""
    event = make_event("payments", n, **extra)
    body = {k: v for k, v in event.items() if k not in ("id", "service", "service_seq")}
    return [event["id"], "payments", n, json.dumps(body)]


def test_the_ingest_span_links_to_each_events_creation_context(spans):
    from workers.audit import ingest

    # given: two events created under traces, one created with telemetry off
    events = [
        relayed(1, trace_parent=CREATED_IN[0], request_id="req-otel-1"),
        relayed(2, trace_parent=CREATED_IN[1], request_id="req-otel-2"),
        relayed(3, request_id="req-otel-3"),
    ]

    # when: the audit worker's task runs (in this process)
    outcome = ingest.apply(args=[events])

    # then
    assert outcome.state == "SUCCESS", outcome.result
    (run,) = named(spans, "run/audit.ingest")
    linked = {link.attributes["messaging.message.id"]: link for link in run.links}
    assert set(linked) == {"evt_payments_1", "evt_payments_2"}
    for n, parent in ((1, CREATED_IN[0]), (2, CREATED_IN[1])):
        link = linked[f"evt_payments_{n}"]
        assert f"00-{link.context.trace_id:032x}-{link.context.span_id:016x}-01" == parent
        assert link.attributes["atrium.request_id"] == f"req-otel-{n}"
    assert run.attributes["messaging.batch.message_count"] == 3
    assert list(run.attributes["atrium.request_ids"]) == ["req-otel-1", "req-otel-2", "req-otel-3"]
    # the trace context is not part of the chained (hashed) event
    assert AuditEvent.objects.count() == 3
    assert all("trace_parent" not in row.canonical for row in AuditEvent.objects.all())
