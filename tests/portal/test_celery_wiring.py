"""Celery wiring (workers/celery.py, routing.py, base.py) against the real Redis broker, without a worker."""

from __future__ import annotations

import base64
import json

import pytest
from django.conf import settings
from kombu.exceptions import ContentDisallowed

from services.kit.context import request_id_var
from services.kit.queues import QUEUES, route_task
from services.kit.task_base import AtriumTask
from tests.portal.helpers import PORTAL_QUEUE, queued_messages
from workers.celery import app


def test_app_policy_is_json_only_with_late_acks_and_time_limits():
    conf = app.conf

    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT == 300
    assert conf.task_soft_time_limit == settings.CELERY_TASK_SOFT_TIME_LIMIT == 270
    assert conf.task_soft_time_limit < conf.task_time_limit
    # late acks need a visibility timeout longer than any task may run
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.broker_url == settings.CELERY_BROKER_URL
    assert conf.task_create_missing_queues is False
    assert {q.name for q in conf.task_queues} == set(QUEUES)


def test_every_task_is_an_atrium_task_that_acks_late():
    import workers.portal  # noqa: F401  (what CELERY_IMPORTS loads in a worker)

    task = app.tasks["portal.ping"]

    assert isinstance(task, AtriumTask)
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True


@pytest.mark.parametrize(
    ("name", "queue"),
    [("ledger.x", "ledger"), ("payments.y", "payments"), ("portal.ping", "portal"), ("audit.append", "audit")],
)
def test_route_task_sends_a_task_to_the_queue_named_by_its_prefix(name, queue):
    assert route_task(name, (), {}, {}) == {"queue": queue, "routing_key": queue}


@pytest.mark.parametrize("name", ["reports.build", "ledgerx.y", "noprefix"])
def test_route_task_leaves_unknown_prefixes_to_the_default_queue(name):
    # the router has no opinion...
    assert route_task(name, (), {}, {}) is None
    # ...so Celery sends them to the default queue
    assert app.amqp.router.route({}, name)["queue"].name == "portal"


def test_an_explicit_queue_option_wins_over_the_prefix():
    assert route_task("ledger.x", (), {}, {"queue": "payments"}) is None
    assert app.amqp.router.route({"queue": "payments"}, "ledger.x")["queue"].name == "payments"


def test_published_task_carries_the_current_request_id_in_its_headers(broker):
    # given a request id in the context (as the request middleware sets it)
    token = request_id_var.set("req-wiring-test-1")
    try:
        # when a task is published
        result = app.send_task("portal.ping", kwargs={"message": "hi"})
    finally:
        request_id_var.reset(token)

    # then the raw message on the portal queue carries the id in its headers, as JSON
    (message,) = queued_messages(broker)
    assert message["headers"]["request_id"] == "req-wiring-test-1"
    assert message["headers"]["id"] == result.id
    assert message["headers"]["task"] == "portal.ping"
    assert message["content-type"] == "application/json"
    assert message["properties"]["delivery_info"]["routing_key"] == PORTAL_QUEUE
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([], {"message": "hi"})


def test_published_task_without_a_request_has_no_request_id_header(broker):
    assert request_id_var.get() is None

    app.send_task("portal.ping")

    (message,) = queued_messages(broker)
    assert "request_id" not in message["headers"]


def test_explicit_request_id_header_is_not_overwritten(broker):
    token = request_id_var.set("req-context")
    try:
        app.send_task("portal.ping", headers={"request_id": "req-explicit"})
    finally:
        request_id_var.reset(token)

    (message,) = queued_messages(broker)
    assert message["headers"]["request_id"] == "req-explicit"


def test_pickle_message_is_published_but_refused_by_a_json_only_consumer(broker):
    # given a caller that asks for pickle: kombu's producer does not stop it...
    app.send_task("portal.ping", kwargs={"message": "json"})
    app.send_task("portal.ping", kwargs={"message": "pickle"}, serializer="pickle")
    assert sorted(m["content-type"] for m in queued_messages(broker)) == [
        "application/json",
        "application/x-python-serialize",
    ]

    # when a consumer configured exactly like a worker (accept_content=["json"]) takes both messages
    decoded, refused = [], []

    def on_decode_error(message, exc):
        refused.append((message.content_type, exc))
        message.ack()  # what the worker does with undecodable messages

    def on_message(body, message):
        decoded.append(body)
        message.ack()

    with app.connection_for_read() as conn:
        consumer = app.amqp.TaskConsumer(
            conn, queues=[app.amqp.queues[PORTAL_QUEUE]], on_decode_error=on_decode_error, callbacks=[on_message]
        )
        with consumer:
            while len(decoded) + len(refused) < 2:
                conn.drain_events(timeout=5)

    # then the JSON task is decoded and the pickled one is refused before anything unpickles it
    assert decoded == [[[], {"message": "json"}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]]
    assert [(content_type, type(exc)) for content_type, exc in refused] == [
        ("application/x-python-serialize", ContentDisallowed)
    ]
    assert broker.llen(PORTAL_QUEUE) == 0


def test_task_runs_under_the_request_id_it_was_published_with():
    import workers.portal  # noqa: F401

    # when the task body runs (in process) with a request id header
    answer = app.tasks["portal.ping"].apply(kwargs={"message": "m"}, headers={"request_id": "req-from-header"}).get()

    # then it ran under that id, and the context was restored afterwards
    assert answer["request_id"] == "req-from-header"
    assert answer["service"] == "portal"
    assert request_id_var.get() is None


@pytest.mark.parametrize("header", [None, "bad id with spaces", "x" * 200])
def test_task_without_a_usable_request_id_gets_a_fresh_one(header):
    import workers.portal  # noqa: F401

    headers = {"request_id": header} if header else None
    answer = app.tasks["portal.ping"].apply(kwargs={"message": "m"}, headers=headers).get()

    assert answer["request_id"].startswith("req_")
    assert len(answer["request_id"]) == 36


class _Unbuildable(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


@pytest.mark.parametrize(
    ("exc", "portable"),
    [
        (ValueError("plain"), True),
        (KeyError("status"), True),
        (_Unbuildable("refused", "its __init__ takes other parameters"), False),
        (ValueError(object()), False),  # args that are not JSON
        (ValueError(b"bytes"), False),
    ],
)
def test_an_exception_is_portable_when_json_args_rebuild_it(exc, portable):
    from services.kit.task_base import exception_portable

    assert exception_portable(exc) is portable


def test_domain_and_gateway_errors_raised_from_tasks_are_portable():
    from services.kit.errors import DomainError
    from services.kit.http import UpstreamUnavailable
    from services.kit.task_base import exception_portable
    from services.payments.errors import PaymentParked
    from services.payments.ledger import LedgerFailed, LedgerRefused

    for exc in (
        LedgerRefused("invalid_amount", "too large", 422),
        LedgerFailed(500, "internal_error", "boom"),
        PaymentParked("pay_x", "KeyError: 'status'"),
        UpstreamUnavailable("ledger away"),
        DomainError("refused", code="some_code"),
    ):
        assert exception_portable(exc), exc


def test_a_task_raising_an_unportable_exception_raises_task_failed_naming_it_with_the_original_as_cause():
    from services.kit.task_base import TaskFailed
    from workers.diagnostics import ProbeRefused

    probe = app.tasks["portal.probe"]

    with pytest.raises(TaskFailed) as raised:
        probe(outcome="unportable")

    assert raised.value.error_type == "workers.diagnostics.ProbeRefused"
    assert str(raised.value).startswith("workers.diagnostics.ProbeRefused: probe_refused")
    assert isinstance(raised.value.__cause__, ProbeRefused)
    # and a portable one goes through as it is
    from workers.diagnostics import ProbeFailed

    with pytest.raises(ProbeFailed):
        probe(outcome="fail")
