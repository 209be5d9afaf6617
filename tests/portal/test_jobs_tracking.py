"""The tracking side in a publishing process: what a published task's event carries (args redacted and capped, the
raw ones kept for a retry), and the buffer that keeps events while Redis is away and drops the oldest past its
bound."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from devtools.infra import free_port
from services.kit import tracking
from services.kit.context import request_id_var
from services.kit.tracking import Tracker, tracker
from workers.celery import app


@pytest.fixture
def stream(settings: Any) -> Iterator[str]:
    name = f"atrium:jobs:test-{uuid.uuid4().hex[:8]}"
    settings.JOBS_STREAM = name
    tracker.close()
    yield name
    redis.Redis.from_url(settings.REDIS_URL).delete(name)


def entries(settings: Any, stream: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    return [event for _, fields in client.xrange(stream) for event in json.loads(fields[b"b"])]


def test_a_published_task_is_queued_with_redacted_args_and_the_raw_ones_kept(settings, stream):
    token = request_id_var.set("req-track-1")
    try:
        result = app.send_task(
            "ledger.probe", args=["x" * 3000], kwargs={"outcome": "succeed", "api_key": "sk_live_123"}
        )
    finally:
        request_id_var.reset(token)
    tracker.close()

    (event,) = [e for e in entries(settings, stream) if e["task_id"] == result.id]
    assert event["state"] == "queued"
    assert (event["name"], event["queue"], event["service"]) == ("ledger.probe", "ledger", "ledger")
    assert event["request_id"] == "req-track-1"
    assert event["kwargs"] == {"outcome": "succeed", "api_key": "[redacted]"}
    assert isinstance(event["args"], str)  # too long to show whole: a truncated string of it
    assert len(event["args"]) <= tracking.ARGS_MAX_CHARS
    assert event["payload"] == {"args": ["x" * 3000], "kwargs": {"outcome": "succeed", "api_key": "sk_live_123"}}
    assert event["at"] > 0
    # the message itself says when it was published (the queue's oldest-message age)
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    messages = [json.loads(m) for m in client.lrange("ledger", 0, -1)]
    mine = [m for m in messages if m["headers"]["id"] == result.id]
    assert mine
    assert mine[0]["headers"]["atrium_published_at"] == pytest.approx(event["at"], abs=5)
    client.lrem("ledger", 0, json.dumps(mine[0]))


def test_events_wait_in_the_buffer_while_redis_is_away_and_go_out_when_it_is_back(settings, stream):
    own = Tracker()  # its buffer filled by hand: no sending thread racing the test
    settings.JOBS_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    own.buffer += [{"state": "queued", "task_id": "t1"}, {"state": "queued", "task_id": "t2"}]
    with pytest.raises(redis.ConnectionError):
        own.flush()
    assert [e["task_id"] for e in own.buffer] == ["t1", "t2"]

    own.buffer.append({"state": "queued", "task_id": "t3"})
    settings.JOBS_REDIS_URL = settings.REDIS_URL
    settings.JOBS_TRACKING_BATCH = 2
    own._redis = None
    assert own.flush() == 3
    assert [e["task_id"] for e in entries(settings, stream)] == ["t1", "t2", "t3"]
    # sent as one stream entry per batch of JOBS_TRACKING_BATCH events
    assert redis.Redis.from_url(settings.REDIS_URL).xlen(stream) == 2


def test_the_buffer_is_bounded_and_drops_the_oldest(settings, stream):
    own = Tracker()
    settings.JOBS_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.JOBS_TRACKING_BUFFER_MAX = 3
    settings.JOBS_TRACKING_BATCH = 1000
    for n in range(5):
        own.buffer.append({"state": "queued", "task_id": f"t{n}", "at": 1.0})
    with pytest.raises(redis.ConnectionError):
        own.flush()
    assert [e["task_id"] for e in own.buffer] == ["t2", "t3", "t4"]
    assert own.dropped == 2


def test_tracking_off_sends_nothing(settings, stream):
    settings.JOBS_TRACKING = False
    app.send_task("ledger.noop")
    tracker.close()
    assert entries(settings, stream) == []
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("ledger")


def test_a_periodic_send_names_its_schedule_entry_and_a_registered_housekeeping_task_says_so(settings, stream):
    # given a process that has registered one housekeeping task and one business task (as a worker has)
    @app.task(name="ledger.tracking_sweep_test", housekeeping=True)
    def sweep() -> None: ...

    @app.task(name="ledger.tracking_work_test")
    def work() -> None: ...

    try:
        # when beat (or run-now) sends the first with its schedule entry's header, and the second plainly
        swept = app.send_task("ledger.tracking_sweep_test", headers={"periodic_task_name": "ledger.sweep.nightly"})
        worked = app.send_task("ledger.tracking_work_test")
        unknown = app.send_task("ledger.not_registered_here")
        tracker.close()

        # then each queued event says what it is
        found = {e["task_id"]: e for e in entries(settings, stream)}
        assert (found[swept.id]["periodic"], found[swept.id]["housekeeping"]) == ("ledger.sweep.nightly", True)
        assert (found[worked.id]["periodic"], found[worked.id]["housekeeping"]) == ("", False)
        assert found[unknown.id]["housekeeping"] is False  # not known here: its worker will say
    finally:
        app.tasks.pop("ledger.tracking_sweep_test", None)
        app.tasks.pop("ledger.tracking_work_test", None)
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("ledger")
