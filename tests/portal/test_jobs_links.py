"""Batch jobs record what they carried: the recorder links a job to each request id and object id it reported,
and ``?request_id=`` / ``?object_id=`` on the jobs API find the batch jobs that carried them."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
import uuid
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from portal.jobs.models import DeadLetter, Job, JobLink, JobState
from portal.jobs.recorder import record
from portal.jobs.retention import jobs_prune
from portal.jobs.selectors import job_carried, jobs_carrying
from tests.portal.factories import machine_client

pytestmark = pytest.mark.django_db

API = "/api/v1/jobs/tasks"
_seq = itertools.count(1)


def _entry(event: dict[str, Any]) -> tuple[bytes, dict[bytes, bytes]]:
    event.setdefault("at", time.time())
    return f"{int(event['at'] * 1000)}-{next(_seq)}".encode(), {b"e": json.dumps(event).encode()}


def _started(task_id: str, name: str = "payments.drain", request_id: str = "") -> tuple[bytes, dict[bytes, bytes]]:
    return _entry({"state": "started", "task_id": task_id, "name": name, "queue": "payments", "request_id": request_id})


def _carried(task_id: str, requests: list[str], objects: list[str], **totals: int) -> tuple[bytes, dict[bytes, bytes]]:
    return _entry(
        {
            "state": "carried",
            "task_id": task_id,
            "request_ids": requests,
            "object_ids": objects,
            "requests_total": totals.get("requests_total", len(requests)),
            "objects_total": totals.get("objects_total", len(objects)),
        }
    )


@pytest.fixture
def reader(mint_token: Any) -> Client:
    machine = machine_client(audiences=["portal"], scopes=["jobs:read"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal', scope='jobs:read')}")


def test_a_batch_job_is_linked_to_each_request_and_object_it_carried_once_even_when_recorded_twice():
    drain = str(uuid.uuid4())
    batch = [
        _started(drain, request_id="req_drain"),
        _carried(drain, ["acc-rid-1", "acc-rid-2"], ["pay_1", "pay_2"]),
        _carried(drain, ["acc-rid-3"], ["pay_3", "txn_3"], requests_total=3, objects_total=4),
    ]

    first = record(batch)
    again = record(batch)  # the monitor crashed after the commit, before acknowledging

    assert (first.links, again.links) == (7, 0)
    job = Job.objects.get(task_id=drain)
    assert (job.carried_requests, job.carried_objects) == (3, 4)
    carried = job_carried(job)
    assert carried.request_ids == ["acc-rid-1", "acc-rid-2", "acc-rid-3"]
    assert sorted(carried.object_ids) == ["pay_1", "pay_2", "pay_3", "txn_3"]
    assert [j.task_id for j in jobs_carrying("acc-rid-2")] == [drain]
    assert [j.task_id for j in jobs_carrying("txn_3")] == [drain]
    assert jobs_carrying("acc-rid-9") == []


def test_totals_only_grow_and_count_what_the_links_leave_out():
    drain = str(uuid.uuid4())
    record([_started(drain), _carried(drain, ["r-1"], ["pay_1"], requests_total=1500, objects_total=2000)])
    record([_carried(drain, [], [], requests_total=10, objects_total=10)])  # an older report arriving late

    job = Job.objects.get(task_id=drain)
    assert (job.carried_requests, job.carried_objects) == (1500, 2000)
    carried = job_carried(job)
    assert (carried.requests_more, carried.objects_more) == (1499, 1999)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"request_ids": "acc-rid-1"}, "request_ids is not a list"),
        ({"request_ids": [7]}, "request_ids holds something other than ids"),
        ({"object_ids": ["x" * 201]}, "object_ids holds something other than ids"),
        ({"object_ids": [""]}, "object_ids holds something other than ids"),
        ({"request_ids": [f"r{i}" for i in range(1001)]}, "request_ids is not a list of at most 1000"),
        ({"requests_total": -1}, "requests_total -1 is out of range"),
        ({"objects_total": 2**40}, "objects_total 1099511627776 is out of range"),
        ({"task_id": ""}, "task_id is missing"),
    ],
)
def test_a_poisoned_carried_event_is_parked_and_the_good_ones_beside_it_are_recorded(event, reason):
    drain = str(uuid.uuid4())
    bad = {"state": "carried", "task_id": drain, "request_ids": [], "object_ids": [], **event}
    result = record([_started(drain), _entry(bad), _carried(drain, ["good-rid"], ["pay_good"])])

    assert result.parked == 1
    assert reason in DeadLetter.objects.get().reason
    assert set(JobLink.objects.values_list("value", flat=True)) == {"good-rid", "pay_good"}


def test_request_id_finds_jobs_published_under_it_and_batch_jobs_that_carried_it_marked_linked(reader):
    direct, drain, other = (str(uuid.uuid4()) for _ in range(3))
    record(
        [
            _started(direct, name="payments.process", request_id="acc-rid-1"),
            _started(drain, request_id="req_drain"),
            _carried(drain, ["acc-rid-1", "acc-rid-2"], ["pay_1"]),
            _started(other, request_id="acc-rid-2"),
        ]
    )

    rows = reader.get(API, {"request_id": "acc-rid-1"}).json()["results"]

    assert {r["task_id"]: r["linked"] for r in rows} == {direct: False, drain: True}
    drain_row = next(r for r in rows if r["task_id"] == drain)
    assert (drain_row["carried_requests"], drain_row["carried_objects"]) == (2, 1)
    by_object = reader.get(API, {"object_id": "pay_1"}).json()["results"]
    assert [r["task_id"] for r in by_object] == [drain]
    assert reader.get(API, {"request_id": "acc-rid-404"}).json()["results"] == []
    # Without the filter nothing is marked linked.
    assert not any(r["linked"] for r in reader.get(API).json()["results"])


def test_the_job_detail_lists_what_a_batch_job_carried(reader):
    drain = str(uuid.uuid4())
    record([_started(drain), _carried(drain, ["acc-rid-1"], ["pay_1", "txn_1"], requests_total=5)])

    body = reader.get(f"{API}/{drain}").json()

    assert body["carried"] == {
        "request_ids": ["acc-rid-1"],
        "object_ids": ["pay_1", "txn_1"],
        "requests_total": 5,
        "objects_total": 2,
    }


def test_links_go_with_the_retention():
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    long_ago = timezone.now() - dt.timedelta(days=40)
    Job.objects.create(task_id=old, name="payments.drain", state=JobState.SUCCEEDED, seen_at=long_ago,
                       last_event_at=long_ago)  # fmt: skip
    JobLink.objects.create(value="old-rid", task_id=old, kind="request", at=long_ago)
    record([_started(new), _carried(new, ["new-rid"], [])])

    result = jobs_prune()

    assert result["links"] == 1
    assert list(JobLink.objects.values_list("value", flat=True)) == ["new-rid"]
