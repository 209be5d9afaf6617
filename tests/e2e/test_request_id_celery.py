"""A request's id travels from the HTTP call into the Celery task headers, the worker's
log line, and back in the response."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.harness import current_test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_request_id_reaches_the_worker_log_and_comes_back(harness, live_portal, all_access_client, get_token):
    # given a live portal and a live worker on the portal queue
    worker = harness.worker("portal", database_url=current_test_database_url())
    token = get_token(*all_access_client, audience="portal", scope="portal:write")
    request_id = f"e2e-{uuid.uuid4().hex}"

    # when a request with that id makes the portal send a task and wait for it
    response = httpx.post(
        f"{live_portal.url}/api/v1/diagnostics/ping",
        json={"message": "hello", "timeout": 15},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
        timeout=30,
    )

    # then the worker saw the same request id and it comes back in the response
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == request_id
    body = response.json()
    assert body["request_id"] == request_id
    assert body["worker"]["request_id"] == request_id
    task_id = body["task_id"]
    assert body["worker"]["task_id"] == task_id

    # and the worker's JSON log line for the task carries both ids
    deadline = time.monotonic() + 10
    lines = []
    while time.monotonic() < deadline:
        lines = [r for r in worker.log_records() if r.get("event") == "portal.ping" and r.get("task_id") == task_id]
        if lines:
            break
        time.sleep(0.2)
    assert lines, worker.output()[-3000:]
    assert lines[0]["request_id"] == request_id
    assert lines[0]["service"] == "portal"
    assert lines[0]["level"] == "info"


def test_task_without_a_request_gets_its_own_request_id(harness, live_portal, all_access_client, get_token):
    # given a live worker and a task sent from outside any request
    harness.worker("portal", database_url=current_test_database_url())
    from workers.celery import app

    # when it runs
    answer = app.send_task("portal.ping", kwargs={"message": "no request"}).get(timeout=15)

    # then it ran under a fresh, well-formed request id
    assert answer["request_id"].startswith("req_")


def test_a_worker_keeps_its_database_connection_from_task_to_task_and_replaces_a_broken_one(harness, live_portal):
    # given a live worker (Celery's Django fixup would otherwise connect anew for every task)
    harness.worker("portal", database_url=current_test_database_url())
    from django.db import connection

    from workers.celery import app

    def backend() -> int:
        return app.send_task("portal.ping", kwargs={"message": "db", "database": True}).get(timeout=15)[
            "database_backend"
        ]

    # when it runs tasks one after another, the same PostgreSQL backend serves them
    first = backend()
    assert isinstance(first, int)
    assert backend() == backend() == first

    # and when that connection dies under it, the next task health-checks it and connects again
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
    replaced = backend()
    assert isinstance(replaced, int)
    assert replaced != first
    assert backend() == replaced
