"""The job dashboard's pages in a real headless Chromium against the portal under gunicorn.

Jobs of two services (ledger and payments) are seeded as the job monitor would have recorded them: succeeded,
failed with a traceback, retried by Celery, queued, one running on a worker that was lost; an hour of per-minute
counts for the charts; two workers. A viewer reads the overview (charts, queues, workers), filters the list to
the failed tasks, opens one (its traceback, no Retry button) and sees the overview count a new failure without a
reload. An operator retries the failed task: the new task's page says it was published and waits for the
monitor (none runs here), and shows the task by itself once it is recorded. Each page is saved as a PNG
(``ATRIUM_SCREENSHOTS_DIR``, or the test's temporary directory): ``docs/screenshots/jobs-*.png`` come from here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import Browser, expect

from portal.jobs.models import Job, JobMinute, JobTotal, Worker, WorkerStatus
from portal.jobs.recorder import record
from tests.e2e.browser import in_thread, log_in, save_screenshot
from tests.harness import AtriumProcess
from tests.portal.factories import user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER, OPERATOR = "e2e-jobs-viewer", "e2e-jobs-operator"
TRACEBACK = """Traceback (most recent call last):
  File "/srv/atrium/.venv/lib/python3.12/site-packages/celery/app/trace.py", line 453, in trace_task
    R = retval = fun(*args, **kwargs)
  File "/srv/atrium/workers/kit.py", line 88, in __call__
    return super().__call__(*args, **kwargs)
  File "/srv/atrium/workers/ledger.py", line 41, in transaction_post
    return ledger.transaction_post(transaction_id=transaction_id)
  File "/srv/atrium/services/ledger/services.py", line 212, in transaction_post
    raise AccountFrozen(f"Account {account_id} is frozen; posting refused.")
services.ledger.errors.AccountFrozen: Account acc_7Hq2 is frozen; posting refused."""


def _id() -> str:
    return str(uuid.uuid4())


def _entry(n: int, **event: Any) -> tuple[str, dict[str, str]]:
    return (f"1700000000000-{n}", {"e": json.dumps(event)})


@pytest.fixture
def users(transactional_db: None) -> None:
    user_with_role("viewer", username=VIEWER)
    user_with_role("operator", username=OPERATOR)


@pytest.fixture
def broker_queues() -> Iterator[None]:
    """Messages waiting in the real broker's queues (the payments one for a minute and a half), as kombu's Redis
    transport keeps them; the retry publishes to the ledger queue. Nothing consumes them: emptied afterwards."""
    conn = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    conn.delete("ledger", "payments")
    now = time.time()
    for queue, ages in (("payments", (95, 40, 3)), ("ledger", (1,))):
        for age in ages:  # the oldest pushed first: LPUSH puts the newest on the left
            message = {"body": "", "headers": {"id": _id(), "task": f"{queue}.probe", "atrium_published_at": now - age}}
            conn.lpush(queue, json.dumps(message))
    try:
        yield
    finally:
        conn.delete("ledger", "payments")
        conn.close()


@pytest.fixture
def jobs(transactional_db: None) -> dict[str, str]:
    """A recorded day of the ledger and payments queues; the failed task's id under ``failed``."""
    now = timezone.now()
    minute = now.replace(second=0, microsecond=0)
    counts = []
    for ago in range(0, 24 * 60, 1):
        if ago > 60 and ago % 5:
            continue  # the last hour minute by minute, the rest of the day sparser
        wave = (ago * 7) % 23
        counts.append(
            JobMinute(
                minute=minute - dt.timedelta(minutes=ago),
                service="ledger",
                queue="ledger",
                name="ledger.transaction_post",
                succeeded=40 + wave,
                started=42 + wave,
                failed=3 if ago in (12, 13, 14, 38) else (1 if wave == 5 else 0),
                queued=44,
            )
        )
        counts.append(
            JobMinute(
                minute=minute - dt.timedelta(minutes=ago),
                service="payments",
                queue="payments",
                name="payments.capture",
                succeeded=18 + (ago * 3) % 11,
                started=20,
                failed=2 if ago in (25, 26) else 0,
                retried=1 if ago % 9 == 0 else 0,
                queued=21,
            )
        )
    JobMinute.objects.bulk_create(counts)  # fmt: skip
    for service, name in (("ledger", "ledger.transaction_post"), ("ledger", "ledger.balance_snapshot"),
                          ("payments", "payments.capture"), ("payments", "payments.settle")):  # fmt: skip
        JobTotal.objects.create(service=service, queue=service, name=name, succeeded=100)
    Worker.objects.create(
        hostname="ledger@app-1", service="ledger", queues=["ledger"], pid=4242, pool="prefork", concurrency=4,
        active=1, reserved=0, processed=18_240, sw_version="5.4.0", started_at=now - dt.timedelta(hours=5),
        last_heartbeat=now - dt.timedelta(seconds=2), status=WorkerStatus.ONLINE,
    )  # fmt: skip
    Worker.objects.create(
        hostname="payments@app-2", service="payments", queues=["payments"], pid=5151, pool="prefork",
        concurrency=2, active=1, processed=6_011, sw_version="5.4.0", started_at=now - dt.timedelta(hours=3),
        last_heartbeat=now - dt.timedelta(minutes=4), status=WorkerStatus.LOST,
    )  # fmt: skip

    def job(state: str, ago: float, **fields: Any) -> Job:
        seen = now - dt.timedelta(seconds=ago)
        base: dict[str, Any] = {
            "task_id": _id(), "name": "ledger.transaction_post", "service": "ledger", "queue": "ledger",
            "worker": "ledger@app-1", "args": [f"txn_{int(ago)}"], "kwargs": {},
            "payload": {"args": [f"txn_{int(ago)}"], "kwargs": {}}, "seen_at": seen, "queued_at": seen,
            "last_event_at": seen, "request_id": f"req_{int(ago):06d}",
        }  # fmt: skip
        if state in ("succeeded", "failed"):
            base |= {
                "received_at": seen,
                "started_at": seen,
                "finished_at": seen + dt.timedelta(milliseconds=30),
                "runtime_ms": 12.0 + ago % 40,
                "result": '{"posted": true}' if state == "succeeded" else "",
            }
        return Job.objects.create(state=state, **(base | fields))

    for n in range(14):
        job("succeeded", 60 + n * 97)
        job("succeeded", 90 + n * 113, name="payments.capture", service="payments", queue="payments",
            worker="payments@app-2", result=json.dumps({"capture": f"cap_{n}", "amount": 1200}))  # fmt: skip
    job("failed", 400, name="payments.settle", service="payments", queue="payments", worker="payments@app-2",
        exception_type="KeyError", exception_message="'merchant_id'", traceback="KeyError: 'merchant_id'")  # fmt: skip
    job("retried", 30, retries=1, exception_type="ConnectError", exception_message="Retry in 5s: ConnectError")
    job("queued", 5, worker="", name="ledger.balance_snapshot")
    job("started", 260, name="payments.capture", service="payments", queue="payments", worker="payments@app-2",
        finished_at=None)  # fmt: skip

    # the failed one as the monitor records it: its whole timeline, a Celery retry on the way
    failed = _id()
    at = now.timestamp() - 120
    common = {"task_id": failed, "name": "ledger.transaction_post", "queue": "ledger", "service": "ledger"}
    record(
        [
            _entry(1, state="queued", at=at, args=["txn_8812"], kwargs={"account_id": "acc_7Hq2", "amount": 12_500},
                   payload={"args": ["txn_8812"], "kwargs": {"account_id": "acc_7Hq2", "amount": 12_500}},
                   request_id="req_9f2c4e1d", **common),
            _entry(2, state="received", at=at + 0.004, worker="ledger@app-1", **common),
            _entry(3, state="started", at=at + 0.011, worker="ledger@app-1", **common),
            _entry(4, state="retried", at=at + 0.9, worker="ledger@app-1", runtime_ms=880.2,
                   reason="Retry in 2s: ConnectError('ledger database unavailable')", exception_type="ConnectError",
                   **common),
            _entry(5, state="started", at=at + 2.95, worker="ledger@app-1", retries=1, **common),
            _entry(6, state="failed", at=at + 3.02, worker="ledger@app-1", runtime_ms=64.9,
                   exception_type="AccountFrozen", exception_message="Account acc_7Hq2 is frozen; posting refused.",
                   traceback=TRACEBACK, **common),
        ]
    )  # fmt: skip
    return {"failed": failed}


def test_a_viewer_reads_the_dashboard_and_an_operator_retries_a_failed_task(
    jobs: dict[str, str],
    users: None,
    broker_queues: None,
    browser: Browser,
    live_portal: AtriumProcess,
    tmp_path: Path,
):
    base = live_portal.url
    failed = jobs["failed"]
    page = log_in(browser, base, VIEWER)

    # given the viewer on the overview: charts drawn on the server, queues, workers, the last hour by state
    page.goto(f"{base}/admin/jobs/?refresh=1")
    expect(page.locator("#jobs-throughput-chart")).to_be_visible()
    expect(page.locator("#jobs-failures-chart")).to_be_visible()
    expect(page.locator("#jobs-throughput-chart polyline.series")).to_have_count(2)
    expect(page.locator("#jobs-throughput-chart .legend-item")).to_contain_text(["ledger", "payments"])
    payments = page.locator("#jobs-queues tr[data-queue=payments]")
    expect(payments.locator("td").nth(0)).to_have_text("3")
    # the oldest message was published 95 s before the page was served: 1 min 35 s, or a little more on a slow run
    expect(payments.locator("td").nth(1)).to_contain_text(re.compile(r"1 min (3[5-9]|[45]\d) s"))
    expect(page.locator("#jobs-queues tr[data-queue=ledger] td").nth(0)).to_have_text("1")
    lost = page.locator("#jobs-workers tr[data-worker='payments@app-2']")
    expect(lost).to_contain_text("lost")
    expect(lost.locator(".jobs-inflight")).to_contain_text("payments.capture")
    expect(page.locator("#jobs-workers tr[data-worker='ledger@app-1']")).to_contain_text("online")
    expect(page.locator("#count-failed")).to_contain_text("2")
    save_screenshot(page, "jobs-overview", tmp_path)

    # when another task fails, the overview left open counts it without a reload
    page.evaluate("window.jobsNotReloaded = true")
    in_thread(
        lambda: Job.objects.create(
            task_id=_id(), name="payments.settle", service="payments", queue="payments", state="failed",
            seen_at=timezone.now(), last_event_at=timezone.now(), exception_type="KeyError",
        )
    )  # fmt: skip
    expect(page.locator("#count-failed")).to_contain_text("3", timeout=10_000)
    assert page.evaluate("window.jobsNotReloaded") is True

    # when they filter the list to the failed tasks
    page.locator(".catalog-nav").get_by_role("link", name="Tasks").click()
    page.wait_for_url(f"{base}/admin/jobs/tasks/")
    expect(page.locator("#jobs-task-list tbody tr").first).to_be_visible()
    page.select_option("#filter-state", "failed")
    page.locator("#jobs-filters").get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/admin/jobs/tasks/\?state=failed.*"))
    rows = page.locator("#jobs-task-list tbody tr")
    expect(rows).to_have_count(3)
    for state in page.locator("#jobs-task-list tbody tr .jobs-state").all_inner_texts():
        assert state.endswith("failed")
    save_screenshot(page, "jobs-list", tmp_path)

    # and open the ledger's failed task: its timeline and traceback, and no Retry button for a viewer
    page.locator(f"tr[data-task-id='{failed}'] a").first.click()  # the task; the second link is its request's trace
    page.wait_for_url(f"{base}/admin/jobs/tasks/{failed}/")
    expect(page.locator("#task-state")).to_have_text("\u2716 failed")
    expect(page.locator("#task-traceback")).to_contain_text("AccountFrozen: Account acc_7Hq2 is frozen")
    expect(page.locator("#task-timeline tbody tr")).to_have_count(6)
    expect(page.locator("#task-timeline")).to_contain_text("Retry in 2s: ConnectError")
    expect(page.locator("#task-request-audit")).to_have_attribute(
        "href", "/admin/audit/auditevent/?request_id=req_9f2c4e1d"
    )
    expect(page.locator("#task-retry")).to_have_count(0)
    expect(page.locator("#task-revoke")).to_have_count(0)

    # then an operator sees Retry on the same page
    page = log_in(browser, base, OPERATOR)
    page.goto(f"{base}/admin/jobs/tasks/{failed}/")
    retry = page.locator("#task-retry")
    expect(retry).to_be_visible()
    save_screenshot(page, "jobs-detail", tmp_path)

    # and the failures, grouped, with a bounded "retry all" for each group
    page.goto(f"{base}/admin/jobs/failures/")
    groups = page.locator("#jobs-failure-groups tbody tr")
    expect(groups).to_have_count(2)
    expect(page.locator("tr[data-exception=KeyError]")).to_contain_text("payments.settle")
    expect(page.locator("tr[data-exception=AccountFrozen] [data-retry-group]")).to_have_text("Retry all 1\u2026")
    save_screenshot(page, "jobs-failures", tmp_path)

    # when the operator retries the failed task
    page.goto(f"{base}/admin/jobs/tasks/{failed}/")
    page.locator("#task-retry").click()

    # then they land on the new task's page, which waits for the monitor to record it
    page.wait_for_url(re.compile(rf"{re.escape(base)}/admin/jobs/tasks/[0-9a-f-]{{36}}/$"))
    new_id = page.url.rstrip("/").rsplit("/", 1)[1]
    assert new_id != failed
    expect(page.locator(".messagelist .success")).to_contain_text(f"published again as {new_id}")
    expect(page.locator("#jobs-pending")).to_contain_text("Published, waiting for the job monitor to record it")

    # and once the monitor has recorded it, the page shows it by itself
    in_thread(
        lambda: Job.objects.create(
            task_id=new_id, name="ledger.transaction_post", service="ledger", queue="ledger", state="queued",
            seen_at=timezone.now(), last_event_at=timezone.now(), retry_of=failed,
        )
    )  # fmt: skip
    expect(page.locator("#task-state")).to_have_text("\u2026 queued", timeout=15_000)
    expect(page.locator("#task-retry-of")).to_contain_text(failed)
