"""The job dashboard's Prometheus metrics at the portal's ``/metrics``: task counters and cumulative histograms from
the recorded totals, queue depths from the broker (left out, never an error, when it does not answer), workers."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.utils import timezone

from portal.jobs.metrics import cumulative_buckets
from portal.jobs.models import JobTotal, Worker, WorkerStatus
from portal.jobs.recorder import LATENCY_BOUNDS, RUNTIME_BOUNDS

pytestmark = pytest.mark.django_db

LABELS = 'service="payments",queue="payments",name="payments.process"'


def _scrape() -> str:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def _sample(text: str, name: str, labels: str) -> float:
    """The value of ``name{labels}`` in the exposition (labels in any order)."""
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"{name}{{{labels}}} not in the scrape")


def _total() -> JobTotal:
    runtime = [0] * (len(RUNTIME_BOUNDS) + 1)
    runtime[RUNTIME_BOUNDS.index(0.05)] = 3  # three runs ≤ 50 ms
    runtime[RUNTIME_BOUNDS.index(1.0)] = 2  # two ≤ 1 s
    runtime[-1] = 1  # one above every bound
    latency = [0] * (len(LATENCY_BOUNDS) + 1)
    latency[0] = 4
    return JobTotal.objects.create(
        service="payments", queue="payments", name="payments.process", succeeded=5, failed=1, retried=2,
        runtime_seconds_sum=400.5, runtime_buckets=runtime, latency_seconds_sum=0.01, latency_buckets=latency,
    )  # fmt: skip


def test_task_counts_and_runtime_and_latency_histograms_are_exported_per_task(broker):
    _total()

    text = _scrape()

    assert "# TYPE atrium_jobs_tasks_total counter" in text
    assert _sample(text, "atrium_jobs_tasks_total", f'{LABELS},state="succeeded"') == 5
    assert _sample(text, "atrium_jobs_tasks_total", f'{LABELS},state="failed"') == 1
    assert _sample(text, "atrium_jobs_tasks_total", f'{LABELS},state="revoked"') == 0
    assert "# TYPE atrium_jobs_task_runtime_seconds histogram" in text
    bucket = "atrium_jobs_task_runtime_seconds_bucket"
    assert _sample(text, bucket, f'{LABELS},le="0.025"') == 0
    assert _sample(text, bucket, f'{LABELS},le="0.05"') == 3
    assert _sample(text, bucket, f'{LABELS},le="0.5"') == 3  # cumulative
    assert _sample(text, bucket, f'{LABELS},le="1.0"') == 5
    assert _sample(text, bucket, f'{LABELS},le="300.0"') == 5
    assert _sample(text, bucket, f'{LABELS},le="+Inf"') == 6
    assert _sample(text, "atrium_jobs_task_runtime_seconds_count", LABELS) == 6
    assert _sample(text, "atrium_jobs_task_runtime_seconds_sum", LABELS) == 400.5
    assert _sample(text, "atrium_jobs_queue_latency_seconds_bucket", f'{LABELS},le="900.0"') == 4
    assert _sample(text, "atrium_jobs_queue_latency_seconds_count", LABELS) == 4


def test_queue_depths_and_workers_by_status_are_exported(broker):
    for index in range(2):
        broker.lpush("portal", json.dumps({"headers": {"id": f"t{index}"}, "body": ""}))
    now = timezone.now()
    Worker.objects.create(hostname="a@h", last_heartbeat=now)
    Worker.objects.create(hostname="b@h", last_heartbeat=now)
    Worker.objects.create(hostname="c@h", last_heartbeat=now, status=WorkerStatus.LOST)

    text = _scrape()

    assert _sample(text, "atrium_jobs_queue_depth", 'queue="portal"') == 2
    assert _sample(text, "atrium_jobs_queue_depth", 'queue="ledger"') == 0
    assert _sample(text, "atrium_jobs_workers", 'status="online"') == 2
    assert _sample(text, "atrium_jobs_workers", 'status="lost"') == 1
    assert _sample(text, "atrium_jobs_workers", 'status="offline"') == 0


def test_a_broker_that_does_not_answer_leaves_the_depths_out_and_the_scrape_still_succeeds(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    _total()

    text = _scrape()

    assert "atrium_jobs_queue_depth{" not in text
    assert _sample(text, "atrium_jobs_tasks_total", f'{LABELS},state="succeeded"') == 5
    assert "atrium_http_request" in text  # the process's own metrics are still there


def test_cumulative_buckets_tolerate_arrays_of_another_length():
    assert cumulative_buckets([1, 2, 3], (0.1, 1.0)) == [("0.1", 1), ("1.0", 3), ("+Inf", 6)]
    assert cumulative_buckets([1], (0.1, 1.0)) == [("0.1", 1), ("1.0", 1), ("+Inf", 1)]
    assert cumulative_buckets([], (0.1,)) == [("0.1", 0), ("+Inf", 0)]
    assert cumulative_buckets([1, 1, 1, 1], (0.1, 1.0)) == [("0.1", 1), ("1.0", 2), ("+Inf", 4)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("multiprocess", [False, True], ids=["one-process", "multiprocess-dir"])
def test_a_served_portal_exports_queue_depths_with_or_without_a_multiprocess_directory(harness, tmp_path, multiprocess):
    # given a portal under gunicorn (with PROMETHEUS_MULTIPROC_DIR: several workers share request counters in
    # files; the scrape-time collectors must be served all the same) and two messages waiting in the audit queue
    import httpx

    from tests.harness import current_test_database_url
    from workers.celery import app

    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)} if multiprocess else {}
    portal = harness.web("portal", database_url=current_test_database_url(), env=env)
    with app.connection_for_write() as connection:
        connection.default_channel.client.delete("audit")
    for _ in range(2):
        app.send_task("audit.noop")

    # when Prometheus scrapes it
    text = httpx.get(f"{portal.url}/metrics", timeout=10).text

    # then the queue depths and the request counters are both there
    assert _sample(text, "atrium_jobs_queue_depth", 'queue="audit"') == 2
    assert "atrium_http_requests_total{" in text
    assert "atrium_audit_" in text
