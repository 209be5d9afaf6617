"""Structured JSON logs: one object per line, stamped with service, request and task ids, secrets redacted."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator

import pytest

from services.kit.conf import logging_config
from services.kit.context import request_id_var, task_id_var
from services.kit.logs import ConsoleFormatter, ContextFilter, JsonFormatter, QuietTasks, get_logger


def attach(logger_name: str, *, propagate: bool = False) -> tuple[logging.Handler, Callable[[], list[dict]]]:
    """Send ``logger_name``'s records, formatted as in production, to a buffer; return a reader of its lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter(service="ledger"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = propagate

    def lines() -> list[dict]:
        text = stream.getvalue()
        assert not text or text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]

    return handler, lines


@pytest.fixture
def captured() -> Iterator[tuple[str, Callable[[], list[dict]]]]:
    """A fresh logger name whose records are captured as JSON lines."""
    name = f"tests.kit.logs.{uuid.uuid4().hex[:8]}"
    handler, lines = attach(name)
    yield name, lines
    logging.getLogger(name).removeHandler(handler)


@pytest.fixture
def http_log() -> Iterator[Callable[[], list[dict]]]:
    """The request log lines the kit's middleware writes to ``atrium.http``."""
    logger = logging.getLogger("atrium.http")
    level = logger.level
    handler, lines = attach("atrium.http", propagate=True)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_event_and_fields_become_one_json_object_per_line(captured):
    name, lines = captured
    # given a request and a task in context
    request_token = request_id_var.set("req-log-1")
    task_token = task_id_var.set("task-9")
    try:
        # when two events are logged, one with a multi-line value
        get_logger(name).info("thing.happened", foo=1, note="line one\nline two", when=dt.date(2024, 5, 1))
        get_logger(name).warning("thing.again", items=("a", 2))
    finally:
        task_id_var.reset(task_token)
        request_id_var.reset(request_token)

    # then each is one JSON line with the standard fields and the extras
    first, second = lines()
    assert first["event"] == "thing.happened"
    assert first["level"] == "info"
    assert first["logger"] == name
    assert first["service"] == "ledger"
    assert first["request_id"] == "req-log-1"
    assert first["task_id"] == "task-9"
    assert first["foo"] == 1
    assert first["note"] == "line one\nline two"
    assert first["when"] == "2024-05-01"
    assert dt.datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert second["event"] == "thing.again"
    assert second["level"] == "warning"
    assert second["items"] == ["a", 2]


def test_ids_are_null_outside_a_request_or_task(captured):
    name, lines = captured
    # when an event is logged with no request or task in context
    get_logger(name).info("boot.done")

    # then the ids are present but null
    (record,) = lines()
    assert record["request_id"] is None
    assert record["task_id"] is None
    assert record["service"] == "ledger"


@pytest.mark.parametrize(
    "field", ["client_secret", "password", "new_password", "access_token", "Authorization", "api_key", "private_key"]
)
def test_sensitive_fields_are_redacted(captured, field):
    name, lines = captured
    # when an event carries a field named like a secret
    get_logger(name).info("client.created", client_id="cli_1", **{field: "hunter2-s3cret"})

    # then its value never reaches the log
    (record,) = lines()
    assert record[field] == "[redacted]"
    assert record["client_id"] == "cli_1"
    assert "hunter2" not in json.dumps(record)


def test_secrets_nested_in_a_field_are_redacted(captured):
    name, lines = captured
    # when an event carries a dict holding a secret
    get_logger(name).info(
        "client.updated", data={"name": "payments", "client_secret": "hunter2", "nested": {"token": "t"}}
    )

    # then the secret values are replaced, the rest kept
    (record,) = lines()
    assert record["data"] == {"name": "payments", "client_secret": "[redacted]", "nested": {"token": "[redacted]"}}


@pytest.mark.parametrize("field", ["ts", "event", "logger"])
def test_field_named_like_a_json_key_is_kept_under_a_suffix(captured, field):
    name, lines = captured
    get_logger(name).info("thing.happened", **{field: "mine"})

    (record,) = lines()
    assert record[f"{field}_"] == "mine"
    assert record["event"] == "thing.happened"


@pytest.mark.parametrize("field", ["message", "name", "args", "levelname", "asctime"])
def test_field_named_like_a_log_record_attribute_is_renamed_not_a_crash(captured, field):
    name, lines = captured
    # when an event carries a field that clashes with a LogRecord attribute
    get_logger(name).info("user.said", **{field: "hello"})

    # then it is kept under a suffixed name and the event is intact
    (record,) = lines()
    assert record[f"{field}_"] == "hello"
    assert record["event"] == "user.said"
    assert record["logger"] == name


def test_exception_is_logged_with_its_traceback(captured):
    name, lines = captured
    # when an exception is logged from its handler
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        get_logger(name).exception("ratio.failed", account="acc_1")

    # then the line carries the type and the traceback
    (record,) = lines()
    assert record["level"] == "error"
    assert record["event"] == "ratio.failed"
    assert record["account"] == "acc_1"
    assert record["exc_type"] == "ZeroDivisionError"
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in record["traceback"]
    assert "test_logs.py" in record["traceback"]


def test_values_that_are_not_json_are_logged_as_their_repr(captured):
    name, lines = captured

    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque 7>"

    # when an event carries an object JSON cannot hold
    get_logger(name).info("odd.value", thing=Opaque(), nested={"k": Opaque()})

    # then it is logged as its repr instead of failing
    (record,) = lines()
    assert record["thing"] == "<Opaque 7>"
    assert record["nested"] == {"k": "<Opaque 7>"}


def test_plain_stdlib_logging_is_json_too(captured):
    name, lines = captured
    # when a third-party style logger call with %-formatting is made
    logging.getLogger(name).info("worker %s ready after %d ms", "w1", 12)

    # then the formatted message is the event
    (record,) = lines()
    assert record["event"] == "worker w1 ready after 12 ms"
    assert "args" not in record


@pytest.mark.urls("tests.kit.urls")
def test_each_api_request_logs_one_line_with_its_request_id(client, http_log):
    # when an API request is handled
    client.post("/api/v1/echo", {"name": "rent", "amount": 2}, content_type="application/json", HTTP_X_REQUEST_ID="r-7")

    # then one line describes it, stamped with its request id
    (record,) = http_log()
    assert record["event"] == "http.request"
    assert record["request_id"] == "r-7"
    assert record["service"] == "ledger"
    assert record["method"] == "POST"
    assert record["path"] == "/api/v1/echo"
    assert record["view"] == "echo"
    assert record["status"] == 201
    assert record["duration_ms"] >= 0


def test_probe_and_scrape_requests_are_not_logged(client, http_log):
    # when probes and the metrics scraper call
    client.get("/health/live")
    client.get("/metrics")

    # then they add no request log lines
    assert http_log() == []


@pytest.mark.urls("tests.kit.urls")
def test_requests_machines_repeat_every_few_seconds_are_debug_unless_they_fail(client, http_log):
    # when a view marked access_log_quiet answers once with success and once with a refusal
    client.post("/api/v1/heartbeat", {"name": "beat", "amount": 1}, content_type="application/json")
    client.post("/api/v1/heartbeat", {"name": "beat"}, content_type="application/json")

    # then the success is a DEBUG line and the failure an INFO one
    ok, refused = http_log()
    assert (ok["status"], ok["level"]) == (201, "debug")
    assert (refused["status"], refused["level"]) == (400, "info")


def console_lines(logger_name: str, *, colour: bool = False) -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter(colour=colour))
    handler.addFilter(ContextFilter(service="ledger"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return handler, stream


def test_dev_console_prints_one_readable_line_per_event_with_its_request_id():
    name = f"tests.kit.logs.{uuid.uuid4().hex[:8]}"
    handler, stream = console_lines(name)
    token = request_id_var.set("req-console-1")
    try:
        # when an event with fields (one secret, one with spaces) is logged in a request
        get_logger(name).warning("payment.parked", payment_id="pay_1", reason="ledger away", client_secret="s3")
    finally:
        request_id_var.reset(token)
        logging.getLogger(name).removeHandler(handler)

    # then it is one plain line: level, event, fields, request id; no JSON, no secret, no colour codes
    assert stream.getvalue() == (
        'WARNING payment.parked payment_id=pay_1 reason="ledger away" client_secret=[redacted] [req-console-1]\n'
    )


def test_dev_console_colours_the_level_only_when_asked():
    name = f"tests.kit.logs.{uuid.uuid4().hex[:8]}"
    handler, stream = console_lines(name, colour=True)
    try:
        get_logger(name).error("thing.failed")
        get_logger(name).info("thing.done")
    finally:
        logging.getLogger(name).removeHandler(handler)

    failed, done = stream.getvalue().splitlines()
    assert failed == "\033[31mERROR  \033[0m thing.failed"
    assert done == "INFO    thing.done"


@pytest.mark.parametrize(
    ("atrium_env", "log_format", "formatter"),
    [("dev", "console", "console"), ("dev", "", "json"), ("test", "", "json"), ("production", "console", "json")],
)
def test_logs_are_readable_lines_only_where_asked_and_never_in_production(
    monkeypatch, atrium_env, log_format, formatter
):
    monkeypatch.setenv("ATRIUM_ENV", atrium_env)
    monkeypatch.setenv("ATRIUM_LOG_FORMAT", log_format)

    config = logging_config(service="ledger", level="INFO")

    assert config["handlers"]["stdout"]["formatter"] == formatter


def celery_record(logger: str, msg: str, args: object, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord(logger, level, __file__, 1, msg, None, None)
    record.args = args  # as Celery passes them (a dict, or beat's tuple)
    return record


def test_frequent_periodic_tasks_are_debug_so_an_idle_system_is_quiet():
    quiet = QuietTasks(["portal.catalog_health"])
    logging.getLogger("celery.beat").setLevel(logging.INFO)
    sent = celery_record(
        "celery.beat", "Scheduler: Sending due task %s (%s)", ("portal.catalog_health", "portal.catalog_health")
    )
    received = celery_record(
        "celery.worker.strategy", "Task %(name)s[%(id)s] received", {"name": "portal.catalog_health", "id": "1"}
    )
    other = celery_record(
        "celery.beat", "Scheduler: Sending due task %s (%s)", ("portal.jobs_prune", "portal.jobs_prune")
    )
    failed = celery_record(
        "celery.app.trace",
        "Task %(name)s[%(id)s] %(description)s: %(exc)s",
        {"name": "portal.catalog_health", "id": "1", "description": "raised", "exc": "boom"},
        logging.ERROR,
    )

    assert not quiet.filter(sent)
    assert sent.levelname == "DEBUG"
    assert not quiet.filter(received)
    assert quiet.filter(other)
    assert other.levelname == "INFO"
    assert quiet.filter(failed)
    assert failed.levelname == "ERROR"


def test_every_periodic_task_run_each_minute_or_more_often_is_quiet():
    from workers.beat import BEAT_SCHEDULE, QUIET_TASKS

    assert "portal.catalog_health" in QUIET_TASKS
    assert "portal.jobs_prune" not in QUIET_TASKS
    assert set(QUIET_TASKS) == {e["task"] for e in BEAT_SCHEDULE.values() if e["schedule"] <= 60}
