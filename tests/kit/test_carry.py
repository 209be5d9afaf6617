"""The kit's rule for work that carries many requests: each item keeps its own request id (the task's id beside
it), and the task reports the request ids and object ids it carried, bounded, each once."""

from __future__ import annotations

from typing import Any

import pytest
from celery import signals

from services.kit import carry
from services.kit.audit import audit_context, audit_event
from services.kit.carry import acting_for, carried
from services.kit.context import request_id_var, task_id_var


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(carry.tracker, "emit", events.append)
    return events


@pytest.fixture
def in_task() -> Any:
    task = task_id_var.set("task-drain-1")
    request = request_id_var.set("req_drain")
    yield "task-drain-1"
    signals.task_postrun.send(sender=None, task_id="task-drain-1")
    request_id_var.reset(request)
    task_id_var.reset(task)


def test_outside_a_task_nothing_is_reported(sent):
    carried(request_ids=["r-1"], object_ids=["pay_1"])

    assert sent == []


def test_a_task_reports_each_id_once_with_running_totals(sent, in_task):
    carried(request_ids=["r-1", "r-2", "", "r-1"], object_ids=["pay_1", "pay_2"])
    carried(request_ids=["r-2", "r-3"], object_ids=["pay_2", 7, "x" * 201])  # type: ignore[list-item]
    carried(request_ids=["r-3"], object_ids=["pay_1"])  # nothing new: nothing sent

    assert [(e["request_ids"], e["object_ids"], e["requests_total"], e["objects_total"]) for e in sent] == [
        (["r-1", "r-2"], ["pay_1", "pay_2"], 2, 2),
        (["r-3"], [], 3, 2),
    ]
    assert {e["state"] for e in sent} == {"carried"}
    assert {e["task_id"] for e in sent} == {in_task}


def test_links_stop_at_the_bound_and_the_totals_go_on_counting(sent, in_task, monkeypatch):
    monkeypatch.setattr(carry, "LINKS_MAX", 3)

    carried(request_ids=[f"r-{i}" for i in range(2)])
    carried(request_ids=[f"r-{i}" for i in range(10)])

    assert [len(e["request_ids"]) for e in sent] == [2, 1]
    assert sent[-1]["requests_total"] == 10


def test_the_end_of_a_run_forgets_what_it_carried(sent):
    for _ in range(2):
        token = task_id_var.set("task-again")
        carried(request_ids=["r-1"])
        signals.task_postrun.send(sender=None, task_id="task-again")
        task_id_var.reset(token)

    assert [e["requests_total"] for e in sent] == [1, 1]  # a retry of the same task id reports again


def test_acting_for_an_item_makes_its_request_current_and_keeps_the_task_beside_it(sent, in_task, settings):
    with acting_for("acc-rid-1", object_id="pay_1") as current:
        assert current == request_id_var.get() == "acc-rid-1"
        event = audit_event("payments.payment.settled", object_type="payment", object_id="pay_1")
    after = audit_event("payments.batch.done")

    assert event["request_id"] == "acc-rid-1"
    assert event["metadata"]["task_id"] == in_task
    assert after["request_id"] == "req_drain"
    assert sent[0]["request_ids"] == ["acc-rid-1"]
    assert sent[0]["object_ids"] == ["pay_1"]


@pytest.mark.parametrize("bad", [None, "", "has space", "x" * 129, "nul\x00"])
def test_acting_for_an_item_without_a_valid_request_id_keeps_the_current_one(sent, in_task, bad):
    with acting_for(bad) as current:
        assert current == request_id_var.get() == "req_drain"

    assert sent == []


def test_a_batch_gives_each_event_its_item_request_id_from_one_shared_context(in_task):
    context = audit_context()

    first = audit_event("ledger.transaction.created", context=context, request_id="acc-rid-1")
    second = audit_event("ledger.transaction.created", context=context, request_id="")

    assert (first["request_id"], second["request_id"]) == ("acc-rid-1", "req_drain")
    assert first["metadata"] == second["metadata"] == {"task_id": in_task}
    assert "task_id" not in first  # the chain hashes a fixed set of fields: the job goes in metadata


def test_an_event_outside_a_task_names_no_task():
    token = request_id_var.set("req_web")
    try:
        event = audit_event("payments.payment.created", metadata={"amount": 1})
    finally:
        request_id_var.reset(token)

    assert event["request_id"] == "req_web"
    assert event["metadata"] == {"amount": 1}
