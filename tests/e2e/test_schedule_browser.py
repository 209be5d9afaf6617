"""The schedule page and the task list's housekeeping toggle in a real headless Chromium against the portal under
gunicorn.

The code's schedule (``workers/beat.py``) is synced into django-celery-beat's database schedule as beat does at
start; a few runs are recorded as the job monitor would have (a housekeeping health poll, a failed reconcile). A
viewer reads the schedule (schedule in words, queue, last run with its outcome and link, next run) with no
buttons, and toggles housekeeping out of the task list and back. An operator runs a task now — it really goes to
the broker, and the page says which task was sent — and pauses and resumes another, each audited. The schedule
page is saved as a PNG (``ATRIUM_SCREENSHOTS_DIR``, or the test's temporary directory): ``jobs-schedule.png``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from playwright.sync_api import Browser, expect

from portal.jobs import services
from portal.jobs.models import Job
from services.kit.models import OutboxEvent
from tests.e2e.browser import in_thread, log_in, save_screenshot
from tests.harness import AtriumProcess
from tests.portal.factories import user_with_role
from workers.beat import BEAT_SCHEDULE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER, OPERATOR = "e2e-schedule-viewer", "e2e-schedule-operator"


def _job(name: str, ago: float, **fields: Any) -> Job:
    seen = timezone.now() - dt.timedelta(seconds=ago)
    base: dict[str, Any] = {
        "task_id": str(uuid.uuid4()), "name": name, "queue": name.split(".")[0], "service": name.split(".")[0],
        "state": "succeeded", "seen_at": seen, "last_event_at": seen, "started_at": seen,
        "finished_at": seen + dt.timedelta(milliseconds=40), "runtime_ms": 38.0, "worker": "portal@app-1",
    }  # fmt: skip
    return Job.objects.create(**(base | fields))


@pytest.fixture
def schedule(transactional_db: None) -> dict[str, Job]:
    user_with_role("viewer", username=VIEWER)
    user_with_role("operator", username=OPERATOR)
    services.schedule_sync(entries=BEAT_SCHEDULE)
    runs = {
        "health": _job("portal.catalog_health", 3, periodic="portal.catalog_health", housekeeping=True),
        "reconcile": _job(
            "payments.reconcile",
            240,
            periodic="payments.reconcile",
            state="failed",
            exception_type="LedgerDown",
            worker="payments@app-2",
        ),
        "integrity": _job("ledger.integrity_check", 420, periodic="ledger.integrity_check", worker="ledger@app-1"),
        "work": _job("payments.process", 10, args=["pay_1"], worker="payments@app-2"),
    }
    return runs


@pytest.fixture
def broker_queues() -> Iterator[redis.Redis]:
    """The real broker's payments queue, emptied before and after (nothing consumes it here)."""
    conn = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    conn.delete("payments")
    try:
        yield conn
    finally:
        conn.delete("payments")
        conn.close()


def _audited(action: str) -> list[dict[str, Any]]:
    return in_thread(
        lambda: [e.payload for e in OutboxEvent.objects.filter(topic="audit", payload__action=action).order_by("id")]
    )


def test_a_viewer_reads_the_schedule_and_an_operator_runs_pauses_and_resumes_a_periodic_task(
    schedule: dict[str, Job], broker_queues: redis.Redis, browser: Browser, live_portal: AtriumProcess, tmp_path: Path
):
    base = live_portal.url
    page = log_in(browser, base, VIEWER)

    # given the viewer on the schedule page, from the job dashboard's navigation
    page.goto(f"{base}/admin/jobs/")
    page.locator(".catalog-nav").get_by_role("link", name="Schedule").click()
    page.wait_for_url(f"{base}/admin/jobs/schedule/")
    rows = page.locator("#schedule-list tbody tr")
    expect(rows).to_have_count(len(BEAT_SCHEDULE))
    health = page.locator("tr[data-periodic='portal.catalog_health']")
    expect(health.locator(".schedule-words")).to_have_text("every 5 seconds")
    expect(health).to_contain_text("housekeeping")
    expect(health.locator(".schedule-last")).to_contain_text("succeeded")
    expect(health.locator(".schedule-next")).to_contain_text(re.compile(r"in \d+ s|due now"))
    reconcile = page.locator("tr[data-periodic='payments.reconcile']")
    expect(reconcile.locator(".schedule-words")).to_have_text("every 10 minutes")
    expect(reconcile.locator("td").nth(2)).to_have_text("payments")
    expect(reconcile.locator(".schedule-last")).to_contain_text("failed")
    expect(reconcile.locator(".schedule-last a")).to_have_attribute(
        "href", f"/admin/jobs/tasks/{schedule['reconcile'].task_id}/"
    )
    expect(page.locator("#schedule-list [data-run]")).to_have_count(0)
    expect(page.locator("#schedule-list [data-pause]")).to_have_count(0)

    # when they hide housekeeping on the schedule, only the business tasks seen run stay (and the never-run ones)
    page.locator("#schedule-toggle").click()
    page.wait_for_url(f"{base}/admin/jobs/schedule/?housekeeping=0")
    expect(page.locator("tr[data-periodic='portal.catalog_health']")).to_have_count(0)
    expect(page.locator("tr[data-periodic='payments.reconcile']")).to_have_count(1)
    expect(page.locator("#schedule-housekeeping-toggle")).to_contain_text("Housekeeping hidden (1)")

    # and the task list: housekeeping hidden by default, behind a visible toggle
    page.goto(f"{base}/admin/jobs/tasks/")
    expect(page.locator(f"tr[data-task-id='{schedule['work'].task_id}']")).to_have_count(1)
    expect(page.locator(f"tr[data-task-id='{schedule['health'].task_id}']")).to_have_count(0)
    page.locator("#jobs-housekeeping").click()
    page.wait_for_url(f"{base}/admin/jobs/tasks/?housekeeping=1")
    expect(page.locator(f"tr[data-task-id='{schedule['health'].task_id}']")).to_have_count(1)
    expect(page.locator("#jobs-task-list tbody tr")).to_have_count(4)
    # a filter keeps the choice
    page.select_option("#filter-state", "succeeded")
    page.locator("#jobs-filters").get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*state=succeeded.*"))
    expect(page.locator(f"tr[data-task-id='{schedule['health'].task_id}']")).to_have_count(1)
    page.locator("#jobs-housekeeping").click()
    expect(page.locator(f"tr[data-task-id='{schedule['health'].task_id}']")).to_have_count(0)
    expect(page.locator(f"tr[data-task-id='{schedule['work'].task_id}']")).to_have_count(1)

    # when an operator opens the schedule, the buttons are there
    page = log_in(browser, base, OPERATOR)
    page.goto(f"{base}/admin/jobs/schedule/")
    expect(page.locator("#schedule-list [data-run]")).to_have_count(len(BEAT_SCHEDULE))
    save_screenshot(page, "jobs-schedule", tmp_path)

    # and runs the reconcile now: it goes to the broker, and the page says which task was sent
    page.locator("tr[data-periodic='payments.reconcile'] [data-run]").click()
    page.wait_for_url(f"{base}/admin/jobs/schedule/")
    expect(page.locator(".messagelist .success")).to_contain_text("Sent payments.reconcile now as task")
    (message,) = [json.loads(raw) for raw in broker_queues.lrange("payments", 0, -1)]
    assert message["headers"]["task"] == "payments.reconcile"
    assert message["headers"]["periodic_task_name"] == "payments.reconcile"
    expect(page.locator(".messagelist .success a")).to_have_text(message["headers"]["id"])
    (run,) = _audited("jobs.periodic.run")
    assert run["actor"]["id"]
    assert run["object"] == {"type": "jobs.periodic", "id": "payments.reconcile"}

    # and pauses the ledger's integrity check: paused on the page and in the database, audited
    page.locator("tr[data-periodic='ledger.integrity_check'] [data-pause]").click()
    page.wait_for_url(f"{base}/admin/jobs/schedule/")
    integrity = page.locator("tr[data-periodic='ledger.integrity_check']")
    expect(page.locator(".messagelist .success")).to_contain_text("Paused ledger.integrity_check")
    expect(integrity.locator("[data-paused]")).to_be_visible()
    expect(integrity).to_have_attribute("data-enabled", "false")
    assert in_thread(lambda: PeriodicTask.objects.get(name="ledger.integrity_check").enabled) is False
    assert [e["object"]["id"] for e in _audited("jobs.periodic.paused")] == ["ledger.integrity_check"]

    # then resumes it
    integrity.locator("[data-resume]").click()
    page.wait_for_url(f"{base}/admin/jobs/schedule/")
    expect(page.locator(".messagelist .success")).to_contain_text("Resumed ledger.integrity_check")
    expect(page.locator("tr[data-periodic='ledger.integrity_check']")).to_have_attribute("data-enabled", "true")
    assert in_thread(lambda: PeriodicTask.objects.get(name="ledger.integrity_check").enabled) is True
    assert [e["object"]["id"] for e in _audited("jobs.periodic.resumed")] == ["ledger.integrity_check"]
