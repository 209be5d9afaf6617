"""The consumer of the payments' domain events handles each under the request that caused it: its log line
carries that request id, the job is linked to it, and one event it cannot read does not stop the others."""

from __future__ import annotations

import json
import logging
from typing import Any

from services.kit import carry
from services.kit.context import request_id_var, task_id_var
from workers.payments import domain_event


def _relayed(seq: int, body: Any) -> list[Any]:
    return [f"evt_{seq}", "payments", seq, body if isinstance(body, str) else json.dumps(body)]


def test_each_event_is_handled_under_its_own_request_and_the_job_links_to_it(monkeypatch, caplog):
    reported: list[dict[str, Any]] = []
    monkeypatch.setattr(carry.tracker, "emit", reported.append)
    tokens = request_id_var.set("req_consumer"), task_id_var.set("task-consumer-1")
    events = [
        _relayed(1, {"type": "payment.created", "request_id": "acc-rid-1", "data": {"id": "pay_1"}}),
        _relayed(2, "{not json"),
        _relayed(3, {"type": "payment.settled", "request_id": "acc-rid-2", "data": {"id": "pay_2"}}),
        _relayed(4, {"type": "payment.settled", "request_id": "bad id with spaces", "data": {"id": 5}}),
    ]
    try:
        with caplog.at_level(logging.INFO, logger="workers.payments"):
            delivered = domain_event.run(events)
    finally:
        request_id_var.reset(tokens[0])
        task_id_var.reset(tokens[1])

    assert delivered == 4
    handled = [r for r in caplog.records if r.getMessage() == "payments.domain_event"]
    assert [r.request_id for r in handled] == ["acc-rid-1", "req_consumer", "acc-rid-2", "req_consumer"]
    reported = [e for e in reported if e.get("state") == "carried"]
    assert [e["request_ids"] for e in reported] == [["acc-rid-1"], ["acc-rid-2"]]
    assert [e["object_ids"] for e in reported] == [["pay_1"], ["pay_2"]]
