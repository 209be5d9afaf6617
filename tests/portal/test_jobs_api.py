"""Job dashboard API: filtered task lists on keyset pages, task detail (never the raw payload), retry and revoke
(one, or the failed tasks a filter selects) by role and scope and audited, statistics, queues and workers; bad
parameters are field errors, never 500s."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import uuid
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from portal.jobs.models import Job, JobEvent, JobMinute, JobState, Worker, WorkerStatus
from portal.jobs.recorder import record
from services.kit.models import OutboxEvent
from tests.portal.factories import machine_client, user_with_role
from tests.portal.helpers import queued_messages
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

API = "/api/v1/jobs"
SECOND, MINUTE, HOUR = dt.timedelta(seconds=1), dt.timedelta(minutes=1), dt.timedelta(hours=1)
_stream_seq = itertools.count(1)


def _job(*, state: str = JobState.SUCCEEDED, ago: dt.timedelta = MINUTE, **fields: Any) -> Job:
    """A recorded task first seen ``ago`` (a fresh uuid unless ``task_id`` is given)."""
    seen_at = fields.pop("seen_at", None) or timezone.now() - ago
    fields.setdefault("task_id", str(uuid.uuid4()))
    fields.setdefault("name", "portal.ping")
    fields.setdefault("queue", "portal")
    fields.setdefault("service", "portal")
    return Job.objects.create(state=state, seen_at=seen_at, last_event_at=seen_at, **fields)


def _failed(**fields: Any) -> Job:
    fields.setdefault("payload", {"args": [], "kwargs": {"message": "again"}})
    fields.setdefault("exception_type", "ValueError")
    return _job(state=JobState.FAILED, **fields)


def _entry(event: dict[str, Any]) -> tuple[bytes, dict[bytes, bytes]]:
    """A tracking stream entry as the monitor reads it."""
    return f"{int(event['at'] * 1000)}-{next(_stream_seq)}".encode(), {b"e": json.dumps(event).encode()}


def _machine(mint_token: Any, *scopes: str) -> Client:
    machine = machine_client(audiences=["portal"], scopes=list(scopes))
    return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal', scope=' '.join(scopes))}")


def _person(role: str | None) -> Client:
    client = Client()
    client.force_login(user_with_role(role))
    return client


@pytest.fixture
def reader(mint_token: Any) -> Client:
    return _machine(mint_token, "jobs:read")


@pytest.fixture
def operator() -> Client:
    return _person("operator")


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["task_id"] for row in response.json()["results"]]


def _post(client: Client, url: str, body: Any = None) -> Any:
    return client.post(url, json.dumps(body) if body is not None else "", content_type="application/json")


def _audited(action: str) -> list[dict[str, Any]]:
    return [e.payload for e in OutboxEvent.objects.filter(topic="audit", payload__action=action).order_by("id")]


# --- lists ------------------------------------------------------------------------------------------------------


def test_tasks_are_listed_newest_first_and_narrowed_by_every_filter(reader):
    old = _job(ago=3 * HOUR, name="ledger.post", queue="ledger", service="ledger", worker="w1@ledger")
    failed = _failed(ago=2 * HOUR, request_id="req_abc", exception_type="KeyError", worker="w2@portal")
    other_failure = _failed(ago=HOUR, exception_type="ValueError")
    running = _job(
        state=JobState.STARTED, ago=MINUTE, worker="w2@portal", task_id="abcdef12-0000-4000-8000-000000000000"
    )

    assert _ids(reader.get(f"{API}/tasks")) == [running.task_id, other_failure.task_id, failed.task_id, old.task_id]
    by = {
        "state": ("failed", [other_failure, failed]),
        "queue": ("ledger", [old]),
        "service": ("ledger", [old]),
        "name": ("ledger.post", [old]),
        "request_id": ("req_abc", [failed]),
        "exception_type": ("KeyError", [failed]),
        "worker": ("w2@portal", [running, failed]),
        "q": ("ABCDEF", [running]),  # a task id's beginning, any case
    }
    for name, (value, expected) in by.items():
        assert _ids(reader.get(f"{API}/tasks", {name: value})) == [j.task_id for j in expected], name
    window = {"since": (timezone.now() - 150 * MINUTE).isoformat(), "until": (timezone.now() - 30 * MINUTE).isoformat()}
    assert _ids(reader.get(f"{API}/tasks", window)) == [other_failure.task_id, failed.task_id]
    assert _ids(reader.get(f"{API}/tasks", {"state": "failed", "exception_type": "ValueError"})) == [
        other_failure.task_id
    ]


def test_pages_follow_the_keyset_so_rows_inserted_meanwhile_neither_repeat_nor_shift_a_page(reader):
    # given: five tasks, two of them first seen at the same instant (the id breaks the tie)
    now = timezone.now()
    same = now - 2 * MINUTE
    jobs = [_job(seen_at=now - MINUTE), _job(seen_at=same), _job(seen_at=same), _job(seen_at=now - 3 * MINUTE)]
    jobs.append(_job(seen_at=now - 4 * MINUTE, queue="ledger"))
    expected = [j.task_id for j in sorted(jobs, key=lambda j: (j.seen_at, j.id), reverse=True)]

    # when: paging two at a time while new tasks keep arriving
    seen: list[str] = []
    response = reader.get(f"{API}/tasks", {"limit": 2})
    pages = 0
    while True:
        body = response.json()
        assert response.status_code == 200, body
        assert body["previous"] is None
        seen += [row["task_id"] for row in body["results"]]
        pages += 1
        _job(seen_at=timezone.now())  # newer than everything listed: belongs before the first page
        if body["next"] is None:
            break
        assert "limit=2" in body["next"]
        response = reader.get(body["next"])

    # then
    assert seen == expected
    assert pages == 3
    filtered = reader.get(f"{API}/tasks", {"queue": "portal", "until": now.isoformat(), "limit": 3}).json()
    assert [row["task_id"] for row in filtered["results"]] == expected[:3]
    assert "queue=portal" in filtered["next"]  # the next link keeps the filters
    assert _ids(reader.get(filtered["next"])) == expected[3:4]


def test_a_list_row_leaves_out_args_results_and_tracebacks_and_reads_them_in_one_query(
    reader, django_assert_max_num_queries
):
    for _ in range(5):
        _failed(traceback="Traceback (most recent call last): ...", args=[1], result="x")

    # machine client: the token check reads the client once; the page is one query
    with django_assert_max_num_queries(4):
        rows = reader.get(f"{API}/tasks").json()["results"]

    assert len(rows) == 5
    assert not {"args", "kwargs", "payload", "traceback", "result"} & set(rows[0])
    assert rows[0]["exception_type"] == "ValueError"


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"state": "sleepy"}, {"state"}),
        ({"since": "yesterday"}, {"since"}),
        ({"until": "2024-13-45T00:00:00Z"}, {"until"}),
        ({"limit": "0"}, {"limit"}),
        ({"limit": "201"}, {"limit"}),
        ({"limit": "many", "state": "x"}, {"limit", "state"}),
    ],
)
def test_bad_list_parameters_are_field_errors(reader, params, fields):
    problem = assert_problem(reader.get(f"{API}/tasks", params), 400, "validation_error")

    assert {e["field"] for e in problem["errors"]} == fields


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "WzEsMl0",  # [1,2]
        "WyIyMDI0LTAxLTAxVDAwOjAwOjAwIiwgMV0",  # a naive time
        "WyIyMDI0LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgOTk5OTk5OTk5OTk5OTk5OTk5OTk5XQ",  # an id past bigint
        "W" * 500,
    ],
)
def test_a_cursor_the_list_did_not_give_out_is_invalid_cursor(reader, cursor):
    assert_problem(reader.get(f"{API}/tasks", {"cursor": cursor}), 400, "invalid_cursor")


def test_failures_are_grouped_by_exception_and_task_and_take_the_same_filters(reader):
    for _ in range(3):
        _failed(exception_type="TimeoutError", name="payments.process", queue="payments")
    latest = _failed(exception_type="KeyError", ago=SECOND)
    _job(state=JobState.SUCCEEDED, exception_type="")

    groups = reader.get(f"{API}/failures").json()["results"]
    narrowed = reader.get(f"{API}/failures", {"queue": "portal"}).json()["results"]

    assert [(g["exception_type"], g["name"], g["count"]) for g in groups] == [
        ("TimeoutError", "payments.process", 3),
        ("KeyError", "portal.ping", 1),
    ]
    assert groups[1]["example_task_id"] == latest.task_id
    assert [g["exception_type"] for g in narrowed] == ["KeyError"]
    assert_problem(reader.get(f"{API}/failures", {"since": "soon"}), 400, "validation_error")


# --- detail -----------------------------------------------------------------------------------------------------


def test_detail_shows_redacted_args_result_timeline_and_relatives_but_never_the_raw_payload(reader):
    # given: a task as the tracking reports it, published by a parent task, later retried from the dashboard
    at = timezone.now().timestamp() - 60
    parent = _job(task_id="parent-1")
    task_id = "task-1"
    common = {"task_id": task_id, "name": "payments.process", "queue": "payments", "service": "payments"}
    record(
        [
            _entry({**common, "state": "queued", "at": at, "parent_id": "parent-1", "request_id": "req_1",
                    "args": ["pay_1"], "kwargs": {"card_token": "[redacted]", "amount": 100},
                    "payload": {"args": ["pay_1"], "kwargs": {"card_token": "tok_SECRET_4242", "amount": 100}}}),
            _entry({**common, "state": "received", "at": at + 0.1, "worker": "w1@host"}),
            _entry({**common, "state": "started", "at": at + 0.2, "worker": "w1@host"}),
            _entry({**common, "state": "failed", "at": at + 0.5, "worker": "w1@host", "runtime_ms": 300.0,
                    "exception_type": "CardDeclined", "exception_message": "declined",
                    "traceback": "Traceback (most recent call last):\n  CardDeclined: declined"}),
        ]
    )  # fmt: skip
    child = _job(task_id="child-1", parent_id=task_id)
    rerun = _job(task_id="rerun-1", retry_of=task_id, ago=SECOND)

    # when
    response = reader.get(f"{API}/tasks/{task_id}")

    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert "payload" not in body
    assert b"tok_SECRET_4242" not in response.content
    assert body["kwargs"] == {"card_token": "[redacted]", "amount": 100}
    assert body["args"] == ["pay_1"]
    assert (body["state"], body["worker"], body["runtime_ms"]) == ("failed", "w1@host", 300.0)
    assert (body["exception_type"], body["exception_message"]) == ("CardDeclined", "declined")
    assert body["traceback"].startswith("Traceback")
    assert (body["retryable"], body["revocable"]) == (True, False)
    assert [e["state"] for e in body["timeline"]] == ["queued", "received", "started", "failed"]
    assert all("payload" not in e["detail"] for e in body["timeline"])
    relatives = body["relatives"]
    assert relatives["parent"]["task_id"] == parent.task_id
    assert [c["task_id"] for c in relatives["children"]] == [child.task_id]
    assert [r["task_id"] for r in relatives["retried_as"]] == [rerun.task_id]
    assert relatives["retry_of"] is None
    assert reader.get(f"{API}/tasks/{rerun.task_id}").json()["relatives"]["retry_of"]["task_id"] == task_id


def test_an_unknown_task_is_job_not_found(reader, operator):
    assert_problem(reader.get(f"{API}/tasks/nope"), 404, "job_not_found")
    assert_problem(_post(operator, f"{API}/tasks/nope/retry"), 404, "job_not_found")
    assert_problem(_post(operator, f"{API}/tasks/nope/revoke", {}), 404, "job_not_found")


# --- retry and revoke --------------------------------------------------------------------------------------------


def test_an_operator_retries_a_failed_task_which_is_published_again_with_its_raw_args_and_audited(operator, broker):
    failed = _failed(payload={"args": [], "kwargs": {"message": "hello", "token": "raw-secret"}})

    response = _post(operator, f"{API}/tasks/{failed.task_id}/retry")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["retry_of"] == failed.task_id
    assert body["task_id"] != failed.task_id
    (message,) = queued_messages(broker)
    assert message["headers"]["id"] == body["task_id"]
    assert message["headers"]["task"] == "portal.ping"
    assert message["headers"]["atrium_retry_of"] == failed.task_id
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([], {"message": "hello", "token": "raw-secret"})
    (event,) = _audited("jobs.task.retried")
    assert event["object"] == {"type": "jobs.task", "id": failed.task_id}
    assert event["metadata"]["new_task_id"] == body["task_id"]
    assert event["actor"]["type"] == "user"


def test_a_task_still_running_or_whose_args_were_not_kept_is_not_retryable(operator, broker):
    running = _job(state=JobState.STARTED, payload={"args": [], "kwargs": {}})
    too_large = _failed(payload=None)

    assert_problem(_post(operator, f"{API}/tasks/{running.task_id}/retry"), 409, "job_not_retryable")
    assert_problem(_post(operator, f"{API}/tasks/{too_large.task_id}/retry"), 409, "job_not_retryable")
    assert queued_messages(broker) == []
    assert _audited("jobs.task.retried") == []


def test_an_operator_revokes_a_task_that_has_not_ended_and_it_is_audited(operator):
    queued = _job(state=JobState.QUEUED)
    done = _job(state=JobState.SUCCEEDED)

    response = _post(operator, f"{API}/tasks/{queued.task_id}/revoke", {"terminate": True})

    assert response.status_code == 202, response.content
    assert response.json() == {"task_id": queued.task_id, "terminate": True}
    (event,) = _audited("jobs.task.revoked")
    assert event["object"] == {"type": "jobs.task", "id": queued.task_id}
    assert event["metadata"]["terminate"] is True
    assert_problem(_post(operator, f"{API}/tasks/{done.task_id}/revoke", {}), 409, "job_not_revocable")
    assert _post(operator, f"{API}/tasks/{queued.task_id}/revoke").status_code == 202  # no body: terminate false
    bad = assert_problem(_post(operator, f"{API}/tasks/{queued.task_id}/revoke", {"terminate": "maybe"}), 400,
                         "validation_error")  # fmt: skip
    assert bad["errors"][0]["field"] == "terminate"
    unknown = _post(operator, f"{API}/tasks/{queued.task_id}/revoke", {"terminat": True})
    assert assert_problem(unknown, 400, "validation_error")["errors"][0]["code"] == "unknown_field"


def test_a_viewer_reads_but_neither_retries_nor_revokes_and_a_person_without_a_role_reads_nothing(broker):
    failed = _failed()
    viewer, nobody = _person("viewer"), _person(None)

    for url in ("tasks", f"tasks/{failed.task_id}", "failures", "stats", "throughput", "workers", "queues"):
        assert viewer.get(f"{API}/{url}").status_code == 200, url
    assert_problem(_post(viewer, f"{API}/tasks/{failed.task_id}/retry"), 403, "role_required")
    assert_problem(_post(viewer, f"{API}/tasks/{failed.task_id}/revoke", {}), 403, "role_required")
    assert_problem(_post(viewer, f"{API}/tasks/retry", {"queue": "portal"}), 403, "role_required")
    assert_problem(nobody.get(f"{API}/tasks"), 403, "role_required")
    assert queued_messages(broker) == []
    assert _audited("jobs.task.retried") == []


def test_machine_clients_read_with_jobs_read_and_act_with_jobs_write(mint_token, broker):
    failed = _failed()
    reader, writer = _machine(mint_token, "jobs:read"), _machine(mint_token, "jobs:write")
    outsider = _machine(mint_token, "portal:read")

    assert_problem(Client().get(f"{API}/tasks"), 401, "not_authenticated")
    assert_problem(outsider.get(f"{API}/tasks"), 403, "insufficient_scope")
    assert reader.get(f"{API}/tasks").status_code == 200
    refused = assert_problem(_post(reader, f"{API}/tasks/{failed.task_id}/retry"), 403, "insufficient_scope")
    assert "jobs:write" in refused["detail"]
    response = _post(writer, f"{API}/tasks/{failed.task_id}/retry")
    assert response.status_code == 202, response.content
    (event,) = _audited("jobs.task.retried")
    assert event["actor"]["type"] == "client"


def test_bulk_retry_publishes_the_failed_tasks_the_filters_select_and_skips_those_it_cannot(operator, broker):
    retryable = [_failed(exception_type="TimeoutError") for _ in range(2)]
    no_payload = _failed(exception_type="TimeoutError", payload=None)
    _failed(exception_type="KeyError")  # another exception
    _job(state=JobState.SUCCEEDED, exception_type="TimeoutError")  # not failed

    response = _post(operator, f"{API}/tasks/retry", {"exception_type": "TimeoutError", "queue": "portal"})

    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body["retried"]) == {j.task_id for j in retryable}
    assert set(body["skipped"]) == {no_payload.task_id}
    assert {m["headers"]["id"] for m in queued_messages(broker)} == set(body["retried"].values())
    (event,) = _audited("jobs.tasks.retried")
    assert event["metadata"]["retried"] == body["retried"]
    assert event["metadata"]["selection"] == {"state": "failed", "queue": "portal", "exception_type": "TimeoutError"}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "filter_required"),
        ({"state": "failed"}, 400, "filter_required"),
        ({"state": "succeeded", "queue": "portal"}, 400, "validation_error"),
        ({"quue": "portal"}, 400, "validation_error"),
        ({"since": "last week"}, 400, "validation_error"),
        ({"queue": "portal"}, 409, "too_many_jobs"),
    ],
)
def test_bulk_retry_needs_a_narrowing_filter_and_refuses_more_than_the_maximum(
    operator, broker, settings, body, status, code
):
    settings.JOBS_RETRY_MAX = 2
    for _ in range(3):
        _failed()

    assert_problem(_post(operator, f"{API}/tasks/retry", body), status, code)

    assert queued_messages(broker) == []
    assert _audited("jobs.tasks.retried") == []


# --- statistics, queues, workers --------------------------------------------------------------------------------


def test_stats_count_tasks_by_state_per_queue_or_name_over_a_window(reader):
    _job(ago=10 * MINUTE, runtime_ms=10.0, finished_at=timezone.now())
    _job(ago=10 * MINUTE, runtime_ms=30.0, finished_at=timezone.now())
    _failed(ago=20 * MINUTE, queue="ledger", name="ledger.post", runtime_ms=5.0, finished_at=timezone.now())
    _job(ago=5 * HOUR)  # outside the hour

    by_queue = reader.get(f"{API}/stats").json()
    by_name = reader.get(f"{API}/stats", {"window": "24h", "group_by": "name"}).json()

    assert (by_queue["window"], by_queue["group_by"]) == ("1h", "queue")
    rows = {r["key"]: r for r in by_queue["results"]}
    assert rows["portal"]["total"] == 2
    assert rows["portal"]["states"]["succeeded"] == 2
    assert rows["portal"]["runtime_ms_p50"] == 20.0
    assert rows["ledger"]["states"]["failed"] == 1
    assert {r["key"]: r["total"] for r in by_name["results"]} == {"portal.ping": 3, "ledger.post": 1}
    assert_problem(reader.get(f"{API}/stats", {"window": "1y"}), 400, "validation_error")
    assert_problem(reader.get(f"{API}/stats", {"group_by": "worker"}), 400, "validation_error")


def test_throughput_sums_the_minute_counts_into_buckets(reader):
    start = timezone.now().replace(second=0, microsecond=0) - 30 * MINUTE
    for offset, succeeded in ((0, 2), (1, 3), (5, 7)):
        JobMinute.objects.create(
            minute=start + offset * MINUTE, queue="portal", name="portal.ping", succeeded=succeeded
        )
    JobMinute.objects.create(minute=start, queue="ledger", name="ledger.post", failed=1)

    body = reader.get(
        f"{API}/throughput",
        {"since": (start - HOUR).isoformat(), "until": timezone.now().isoformat(), "bucket_minutes": 60,
         "queue": "portal"},
    ).json()  # fmt: skip
    minutes = reader.get(f"{API}/throughput").json()

    assert sum(b["succeeded"] for b in body["results"]) == 12
    assert {b["queue"] for b in body["results"]} == {"portal"}
    assert body["bucket_minutes"] == 60
    assert len(minutes["results"]) == 4  # three minutes of portal, one of ledger
    for params in ({"bucket_minutes": 0}, {"since": timezone.now().isoformat(), "until": "2020-01-01T00:00:00Z"},
                   {"since": "2000-01-01T00:00:00Z", "bucket_minutes": 1}):  # fmt: skip
        assert_problem(reader.get(f"{API}/throughput", params), 400, "validation_error")


def test_queues_show_depth_and_oldest_message_age_from_the_broker(reader, broker):
    published = timezone.now().timestamp() - 30
    for index in range(3):
        message = {"headers": {"id": f"t{index}", "atrium_published_at": published + index}, "body": ""}
        broker.lpush("portal", json.dumps(message))

    queues = {q["name"]: q for q in reader.get(f"{API}/queues").json()["results"]}

    assert queues["portal"]["depth"] == 3
    assert 29 <= queues["portal"]["oldest_age_seconds"] < 60
    assert set(queues) >= {"portal", "ledger", "payments", "audit"}


def test_queues_answer_broker_unavailable_when_the_broker_does_not_answer(reader, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    assert_problem(reader.get(f"{API}/queues"), 503, "broker_unavailable")


def test_workers_are_listed_with_their_in_flight_tasks(reader, django_assert_max_num_queries):
    now = timezone.now()
    Worker.objects.create(hostname="w1@a", service="portal", queues=["portal"], last_heartbeat=now)
    Worker.objects.create(hostname="w2@b", last_heartbeat=now - HOUR, status=WorkerStatus.LOST)
    Worker.objects.create(hostname="w3@c", last_heartbeat=now - HOUR, status=WorkerStatus.OFFLINE)
    running = _job(state=JobState.STARTED, worker="w1@a")
    stuck = _job(state=JobState.RECEIVED, worker="w2@b")
    _job(state=JobState.SUCCEEDED, worker="w1@a")

    with django_assert_max_num_queries(5):
        workers = {w["hostname"]: w for w in reader.get(f"{API}/workers").json()["results"]}

    assert workers["w1@a"]["status"] == "online"
    assert workers["w1@a"]["in_flight"] == [running.task_id]
    assert workers["w2@b"]["in_flight"] == [stuck.task_id]
    assert workers["w3@c"]["in_flight"] == []
    assert JobEvent.objects.count() == 0  # nothing written by a read
