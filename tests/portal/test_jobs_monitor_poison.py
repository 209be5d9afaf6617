"""One poisoned tracking entry or event never blocks the job monitor: it is isolated, parked and acknowledged.

Poison of many kinds among good events — malformed JSON, the wrong shape, absurd values, what PostgreSQL
cannot store, and refusals nobody foresaw (a constraint and a trigger added to the real tables for the test).
The good events are recorded, the poisoned ones kept in ``jobs_deadletter`` with why, counted on ``/metrics``,
and the monitor acknowledges everything and goes on (a real Redis stream with a consumer group).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.db import Error, connection, transaction
from django.test import Client

from portal.jobs.models import DeadLetter, Job, JobEvent, Worker
from portal.jobs.monitor import GROUP, Monitor, group_ensure
from portal.jobs.recorder import record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

_ids = itertools.count(1)


def good(task_id: str, state: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {"state": state, "task_id": task_id, "name": "ledger.probe", "queue": "ledger", "service": "ledger",
            "worker": "w1@h", "at": time.time(), "runtime_ms": 3.0, **extra}  # fmt: skip


def entry(*events: Any, raw: bytes | None = None) -> tuple[bytes, dict[bytes, bytes]]:
    """A stream entry as the tracking writes it: a batch of events (``raw``: its JSON text as given)."""
    body = raw if raw is not None else json.dumps(list(events)).encode()
    return f"{int(time.time() * 1000)}-{next(_ids)}".encode(), {b"b": body}


NUL = '{"state": "succeeded", "task_id": "p", "name": "a\\u0000b", "at": %f}'
POISONED_EVENTS = {
    "not-an-object": [1, 2],
    "no-state": {"task_id": "p", "at": time.time()},
    "unknown-state": good("p", state="exploded"),
    "no-task-id": {**good("p"), "task_id": None},
    "at-a-string": good("p", at="yesterday"),
    "at-1e20": good("p", at=1e20),
    "at-1970": good("p", at=0),
    "at-next-year": good("p", at=time.time() + 365 * 86400),
    "retries-negative": good("p", retries=-1),
    "retries-2^40": good("p", retries=2**40),
    "runtime-a-string": good("p", runtime_ms="fast"),
    "runtime-negative": good("p", runtime_ms=-5.0),
    "pid-negative": {"state": "worker-heartbeat", "worker": "w9@h", "at": time.time(), "pid": -1},
    "queues-not-a-list": {"state": "worker-heartbeat", "worker": "w9@h", "at": time.time(), "queues": "ledger"},
    "oversized": good("p", result="x" * 300_000),
}


@pytest.mark.parametrize("kind", list(POISONED_EVENTS))
def test_a_poisoned_event_among_good_ones_is_parked_and_the_others_are_recorded(kind):
    # given a batch entry of 20 good events with a poisoned one in the middle, and another good entry
    events = [good(f"t-{n}") for n in range(20)]
    events.insert(10, POISONED_EVENTS[kind])
    first, second = entry(*events), entry(good("t-other"))

    # when recorded
    result = record([first, second])

    # then the 21 good events are recorded and the poisoned one parked under its key, saying why
    assert (result.events, result.new, result.parked) == (21, 21, 1)
    assert Job.objects.count() == 21
    (parked,) = DeadLetter.objects.all()
    assert parked.stream_id == f"{first[0].decode()}/10"
    assert parked.reason
    assert parked.attempts == 1
    assert parked.raw_sha256 == hashlib.sha256(bytes(parked.raw)).hexdigest()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'[{"state": "succeeded", "task_id": "p", "at": ', "not JSON"),
        (b'{"state": "succeeded"}', "not a JSON list"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON (RecursionError)"),
        (NUL.encode() % time.time(), "not a JSON list"),
        (("[" + NUL + "]").encode() % time.time(), "NUL"),
        (b'[{"state": "succeeded", "task_id": "p", "at": NaN}]', "at nan is not a time"),
        (b'[{"state": "succeeded", "task_id": "p", "at": 1.0, "runtime_ms": Infinity}]', "at 1.0 is not a time"),
        (b'[{"state": "queued", "task_id": "p", "at": %f, "args": [NaN]}]' % time.time(), "not JSON compliant"),
        (b'[{"state": "queued", "task_id": "p", "at": %f, "name": "\\ud800"}]' % time.time(), "UnicodeEncodeError"),
    ],
    ids=["cut-short", "batch-not-a-list", "deep", "nul-not-a-list", "nul", "at-nan", "infinity", "nan", "surrogate"],
)
def test_a_poisoned_entry_is_parked_whole_or_by_event(raw, why):
    # given a poisoned entry between two good ones
    before, poisoned, after = entry(good("t-1")), entry(raw=raw), entry(good("t-2"))

    # when recorded together
    result = record([before, poisoned, after])

    # then the good ones are recorded, the poison parked with the bytes that arrived and why
    assert (result.new, result.parked) == (2, 1)
    assert set(Job.objects.values_list("task_id", flat=True)) == {"t-1", "t-2"}
    (parked,) = DeadLetter.objects.all()
    assert parked.stream_id.split("/")[0] == poisoned[0].decode()
    assert why in parked.reason


def rogue_ddl(sql: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.fixture
def refused_by_postgres() -> Iterator[None]:
    """PostgreSQL itself refuses what the monitor cannot foresee: a task named ``poison.check`` (a CHECK
    constraint) and an event of task ``poison-trigger`` (a trigger raising an exception)."""
    rogue_ddl("ALTER TABLE jobs_job ADD CONSTRAINT test_poison CHECK (name <> 'poison.check')")
    rogue_ddl(
        "CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.task_id = 'poison-trigger' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$"
    )
    rogue_ddl("CREATE TRIGGER test_poison BEFORE INSERT ON jobs_event FOR EACH ROW EXECUTE FUNCTION test_poison()")
    yield
    rogue_ddl("DROP TRIGGER test_poison ON jobs_event")
    rogue_ddl("DROP FUNCTION test_poison()")
    rogue_ddl("ALTER TABLE jobs_job DROP CONSTRAINT test_poison")


def test_a_refusal_nobody_foresaw_splits_the_batch_retries_the_event_then_parks_it(refused_by_postgres, settings):
    # given 20 entries of 25 events, two of which PostgreSQL refuses for reasons the monitor cannot check
    settings.JOBS_MONITOR_ATTEMPTS = 3
    entries = [entry(*[good(f"t-{e}-{n}") for n in range(25)]) for e in range(20)]
    bad_check = entry(*[good(f"t-x-{n}") for n in range(24)], good("poison-1", name="poison.check"))
    bad_trigger = entry(good("poison-trigger"))
    entries[4], entries[15] = bad_check, bad_trigger

    # when recorded
    began = time.monotonic()
    result = record(entries)
    seconds = time.monotonic() - began

    # then every other event is recorded, the two are parked after three tries each, at once
    assert result.parked == 2
    assert Job.objects.count() == 18 * 25 + 24
    assert not Job.objects.filter(task_id__startswith="poison").exists()
    parked = {p.stream_id: p for p in DeadLetter.objects.all()}
    assert set(parked) == {f"{bad_check[0].decode()}/24", f"{bad_trigger[0].decode()}/0"}
    assert {p.attempts for p in parked.values()} == {3}
    assert any("test_poison" in p.reason for p in parked.values())
    assert any("refused by a trigger" in p.reason for p in parked.values())
    assert seconds < 15


@pytest.fixture
def stream(settings: Any) -> Iterator[str]:
    name = f"atrium:jobs:poison-{uuid.uuid4().hex[:8]}"
    settings.JOBS_STREAM = name
    yield name
    redis.Redis.from_url(settings.REDIS_URL).delete(name)


def test_the_monitor_acknowledges_the_poison_with_the_rest_and_goes_on(settings, stream):
    # given a stream with good entries and poisoned ones, read by the monitor's consumer group
    client = redis.Redis.from_url(settings.REDIS_URL)
    group_ensure(client)
    for n in range(6):
        client.xadd(stream, {"b": json.dumps([good(f"t-{n}"), good(f"t-{n}", state="started")])})
        client.xadd(stream, {"b": b'[{"state": "succeeded", "task_id": "bad", "at": "soon"}]'})
    client.xadd(stream, {"e": b"{not json"})
    client.xadd(stream, {"x": b"neither"})
    monitor = Monitor(consumer="poison-test", batch=5, block_ms=10, client=client)

    # when the monitor steps until the stream is drained
    while monitor.step():
        pass

    # then the good events are recorded, the poison parked, and nothing is left pending
    assert set(Job.objects.values_list("task_id", flat=True)) == {f"t-{n}" for n in range(6)}
    assert JobEvent.objects.count() == 12
    assert DeadLetter.objects.count() == 8
    assert monitor.recorded.parked == 8
    assert client.xpending(stream, GROUP)["pending"] == 0


def test_parked_items_are_counted_on_the_metrics_endpoint():
    # given three parked items
    record([entry(raw=b"nope"), entry(good("t", at="x"), good("u", at="y"))])

    # when /metrics is scraped; then they are counted
    text = Client().get("/metrics").content.decode()
    assert "atrium_jobs_monitor_parked_total 3.0" in text


def test_with_the_database_away_nothing_is_parked_and_the_batch_stays_to_be_read_again():
    import psycopg

    from tests.harness import current_test_database_url

    # given the monitor's database connection cut by the server
    Worker.objects.count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with psycopg.connect(current_test_database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])

    # when a batch is recorded, it raises (the monitor backs off and reads it again), parking nothing
    try:
        with pytest.raises(Error):  # the database's own error (Django's), whichever it is
            record([entry(good("t-1")), entry(raw=b"nope")])
    finally:
        connection.close()
    assert not DeadLetter.objects.exists()
    assert not Job.objects.exists()


def test_the_monitor_makes_its_group_again_when_redis_lost_the_stream(settings, stream):
    # given a monitor reading its group, with one batch recorded
    client = redis.Redis.from_url(settings.REDIS_URL)
    group_ensure(client)
    client.xadd(stream, {"b": json.dumps([good("before")])})
    monitor = Monitor(consumer="restart-test", batch=5, block_ms=10, client=client)
    while monitor.step():
        pass

    # when Redis loses the stream and its group (a restart without persistence), then processes append again
    client.delete(stream)
    client.xadd(stream, {"b": json.dumps([good("after-1")])})
    client.xadd(stream, {"b": json.dumps([good("after-2")])})
    for _ in range(3):
        monitor.step()

    # then the group is there again and what was appended since is recorded, nothing left pending
    assert set(Job.objects.values_list("task_id", flat=True)) == {"before", "after-1", "after-2"}
    assert client.xpending(stream, GROUP)["pending"] == 0
