"""The job dashboard's recording with real processes: Celery workers of two services (ledger and payments) run
probe tasks that succeed, retry, fail and get revoked; the job monitor (``manage.py jobs_monitor``) records every
state with its service, queue, worker and request id; a retry through the portal's API is a new task linked to
the failed one, and it succeeds. And the monitor can stop — or be killed — while tasks run: when it is back, every
task is there once, in its final state.

Each test uses a stream of its own (``JOBS_STREAM``), so it sees only its own tasks.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import pytest

from devtools.infra import free_port
from portal.identity import services as identity
from portal.jobs.models import Job, JobEvent, JobState, Worker
from services.kit.context import request_id_var
from tests.harness import ProcessHarness, current_test_database_url, wait_until
from workers.celery import app

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def probe(queue: str, **kwargs: Any) -> str:
    return app.send_task(f"{queue}.probe", kwargs=kwargs).id


def jobs(task_ids: list[str]) -> dict[str, Job]:
    return {j.task_id: j for j in Job.objects.filter(task_id__in=task_ids)}


def test_every_state_is_recorded_from_two_services_and_a_retry_from_the_api_succeeds(
    harness: ProcessHarness, stream: str
):
    env = {"JOBS_STREAM": stream, "JOBS_WORKER_HEARTBEAT_SECONDS": "1"}
    harness.worker("ledger", env=env)
    harness.worker("payments", env=env)
    recorder = harness.jobs_monitor(stream)

    request_token = request_id_var.set("req-jobs-e2e")
    try:
        ok = probe("ledger")
        retried = probe("payments", outcome="retry", fail_times=1, countdown=0.2)
        failed = probe("ledger", outcome="fail", fail_until=time.time() + 3)
        # a slow task keeps the payments worker (one process) busy, so the next one waits in the queue to be revoked
        slow = probe("payments", sleep=2)
        revoked = probe("payments")
    finally:
        request_id_var.reset(request_token)
    wait_until(lambda: (j := jobs([slow])) and j[slow].state == JobState.STARTED, 20, "the slow task running")
    app.control.revoke(revoked)

    ids = [ok, retried, failed, slow, revoked]
    final = {ok: "succeeded", retried: "succeeded", failed: "failed", slow: "succeeded", revoked: "revoked"}
    try:
        recorded = wait_until(
            lambda: (found := jobs(ids)) and {t: j.state for t, j in found.items()} == final and found,
            30,
            "every task's final state",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {[(t, j.name, j.state) for t, j in jobs(ids).items()]} of {final}") from None
    for job in recorded.values():
        service = "ledger" if job.queue == "ledger" else "payments"
        assert (job.service, job.queue) == (service, service), job
        assert job.request_id == "req-jobs-e2e"
        assert job.worker.startswith(f"{service}-"), job.worker  # the harness names nodes <queue>-<hex>@<host>
        assert job.queued_at is not None
    assert recorded[ok].runtime_ms is not None
    assert json.loads(recorded[ok].result) == {"outcome": "succeed", "retries": 0, "service": "ledger"}
    # the retry: its timeline shows the failed attempt, its reason, and the second run
    assert recorded[retried].retries == 1
    states = [e.state for e in JobEvent.objects.filter(task_id=retried).order_by("at", "id")]
    assert states.count("started") == 2
    assert "retried" in states
    assert states[-1] == "succeeded"
    retry_event = JobEvent.objects.get(task_id=retried, state="retried")
    assert "attempt 1 of 2 fails" in retry_event.detail["reason"]
    # the failure: exception and traceback
    assert recorded[failed].exception_type == "ProbeFailed"
    assert "ledger.probe was asked to fail" in recorded[failed].exception_message
    assert "Traceback" in recorded[failed].traceback
    assert "ProbeFailed" in recorded[failed].traceback
    # the revoked one never ran
    assert recorded[revoked].started_at is None
    # both workers heartbeat with their pool
    workers = {w.hostname: w for w in Worker.objects.all()}
    assert {w.service for w in workers.values()} == {"ledger", "payments"}
    assert all(w.status == "online" and w.concurrency == 1 for w in workers.values())

    # when an operator's client retries the failed task through the API (the fault has cleared by now)
    portal = harness.web(
        "portal", database_url=current_test_database_url(), env={"JOBS_STREAM": stream}, port=free_port()
    )
    client, secret = identity.client_create(name="e2e-jobs-operator", audiences=["portal"], scopes=["jobs:write"])
    token = httpx.post(
        f"{portal.url}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client.id,
            "client_secret": secret,
            "audience": "portal",
        },
        timeout=10,
    ).json()["access_token"]
    time.sleep(max(0.0, 3.5 - (time.time() - recorded[failed].seen_at.timestamp())))
    response = httpx.post(
        f"{portal.url}/api/v1/jobs/tasks/{failed}/retry", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 202, response.text
    new_id = response.json()["task_id"]
    assert new_id != failed

    # then a new task, linked to the failed one, runs with the same args and succeeds
    # (retry_of comes with the publisher's "sent" event, which may be recorded after the worker's own events)
    rerun = wait_until(
        lambda: (j := jobs([new_id])) and j[new_id].state == JobState.SUCCEEDED and j[new_id].retry_of and j[new_id],
        30,
        "the re-run, linked to the failed task",
    )
    assert rerun.retry_of == failed
    assert (rerun.name, rerun.queue, rerun.service) == ("ledger.probe", "ledger", "ledger")
    assert rerun.kwargs == recorded[failed].kwargs
    assert Job.objects.get(task_id=failed).state == JobState.FAILED  # the original stays what it was
    assert recorder.proc.poll() is None


def test_a_stopped_or_killed_monitor_loses_and_duplicates_nothing(harness: ProcessHarness, stream: str):
    env = {"JOBS_STREAM": stream}
    harness.worker("ledger", env=env)
    harness.worker("payments", env=env)
    recorder = harness.jobs_monitor(stream)
    warm = probe("ledger")
    wait_until(lambda: jobs([warm]).get(warm) and jobs([warm])[warm].state == "succeeded", 20, "the monitor")

    # given the monitor stopped, 500 tasks run on both services' workers
    recorder.stop()
    results = [app.send_task(f"{q}.probe", kwargs={"outcome": "succeed"}) for q in ("ledger", "payments") * 250]
    for result in results:
        result.get(timeout=60)
    task_ids = [r.id for r in results]
    assert Job.objects.filter(task_id__in=task_ids).count() == 0

    # when it starts again and is killed while it catches up, then starts once more
    crashed = harness.jobs_monitor(stream, name="jobs-monitor-crash")
    wait_until(lambda: Job.objects.filter(task_id__in=task_ids).exists(), 30, "catching up")
    os.killpg(crashed.proc.pid, signal.SIGKILL)
    crashed.proc.wait(10)
    harness.jobs_monitor(stream, name="jobs-monitor-again")

    # then all 500 are there, each once, in its final state, each event recorded once
    wait_until(
        lambda: Job.objects.filter(task_id__in=task_ids, state="succeeded").count() == 500, 60, "all 500 recorded"
    )
    assert Job.objects.filter(task_id__in=task_ids).count() == 500
    events = JobEvent.objects.filter(task_id__in=task_ids)
    assert events.count() == 500 * 4  # queued, received, started, succeeded
    assert set(events.values_list("state", flat=True).distinct()) == {"queued", "received", "started", "succeeded"}
    assert {j.queue for j in Job.objects.filter(task_id__in=task_ids)} == {"ledger", "payments"}
