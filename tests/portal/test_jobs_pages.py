"""The job dashboard's pages in the admin: who may read them and act on them, what each shows (charts, queues,
workers, filters, keyset pages, a task's timeline and traceback, failures grouped), the live fragments, and the
task list's bounded number of queries.

A retry from these tests really publishes to the broker (this run's Redis): the queues it used are emptied
after each test, and no worker consumes them."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.utils import timezone

from portal.jobs.models import Job, JobMinute, JobTotal, Worker, WorkerStatus
from portal.jobs.recorder import record
from tests.portal.factories import user_with_role

pytestmark = pytest.mark.django_db

OVERVIEW = "/admin/jobs/"
TASKS = "/admin/jobs/tasks/"
FAILURES = "/admin/jobs/failures/"
TRACEBACK = 'Traceback (most recent call last):\n  File "workers/ledger.py", line 40, in post\nLedgerDown: 503'


def task_url(task_id: str) -> str:
    return f"/admin/jobs/tasks/{task_id}/"


def new_id() -> str:
    return str(uuid.uuid4())


def make_job(*, state: str = "succeeded", seen: dt.datetime | None = None, **fields: Any) -> Job:
    seen = seen or timezone.now()
    defaults: dict[str, Any] = {
        "task_id": new_id(),
        "name": "ledger.transaction_post",
        "service": "ledger",
        "queue": "ledger",
        "worker": "ledger@app-1",
        "args": ["txn_1"],
        "kwargs": {"amount": 1200, "token": "[redacted]"},
        "payload": {"args": ["txn_1"], "kwargs": {"amount": 1200, "token": "s3cret"}},
        "seen_at": seen,
        "queued_at": seen,
        "last_event_at": seen,
    }
    if state in ("succeeded", "failed", "revoked", "rejected"):
        defaults |= {"finished_at": seen + dt.timedelta(milliseconds=40), "runtime_ms": 38.5}
    if state == "failed":
        defaults |= {"exception_type": "LedgerDown", "exception_message": "503 from the ledger", "traceback": TRACEBACK}
    return Job.objects.create(state=state, **(defaults | fields))


def entry(n: int, **event: Any) -> tuple[str, dict[str, str]]:
    return (f"1700000000000-{n}", {"e": json.dumps(event)})


@pytest.fixture(autouse=True)
def no_tracking(settings: Any) -> None:
    """What these tests publish is not appended to the tracking stream (no monitor reads it here)."""
    settings.JOBS_TRACKING = False


@pytest.fixture
def broker_queues() -> Iterator[redis.Redis]:
    """The real broker; the ledger and payments queues emptied before and after (nothing consumes them here)."""
    conn = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    conn.delete("ledger", "payments")
    try:
        yield conn
    finally:
        conn.delete("ledger", "payments")
        conn.close()


def logged_in(role: str | None) -> Client:
    client = Client()
    client.force_login(user_with_role(role))
    return client


@pytest.fixture
def viewer() -> Client:
    return logged_in("viewer")


@pytest.fixture
def operator() -> Client:
    return logged_in("operator")


@pytest.fixture
def failed_job() -> Job:
    """A ledger task that was retried by Celery once and then failed, recorded from its events."""
    task_id = new_id()
    at = timezone.now().timestamp() - 30
    common = {"task_id": task_id, "name": "ledger.transaction_post", "queue": "ledger", "service": "ledger"}
    record(
        [
            entry(1, state="queued", at=at, args=["txn_9"], kwargs={}, payload={"args": ["txn_9"], "kwargs": {}},
                  request_id="req_abc123", **common),
            entry(2, state="received", at=at + 0.01, worker="ledger@app-1", **common),
            entry(3, state="started", at=at + 0.02, worker="ledger@app-1", **common),
            entry(4, state="retried", at=at + 0.5, worker="ledger@app-1", reason="Retry in 1s: ConnectError",
                  exception_type="ConnectError", runtime_ms=480.0, **common),
            entry(5, state="started", at=at + 1.6, worker="ledger@app-1", retries=1, **common),
            entry(6, state="failed", at=at + 1.7, worker="ledger@app-1", exception_type="LedgerDown",
                  exception_message="503 from the ledger", traceback=TRACEBACK, runtime_ms=95.0, **common),
        ]
    )  # fmt: skip
    return Job.objects.get(task_id=task_id)


# --------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("url", [OVERVIEW, TASKS, FAILURES, task_url("x")])
def test_anonymous_people_are_sent_to_the_login_page(client: Client, url: str):
    response = client.get(url)

    assert response.status_code == 302
    assert response.url.startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", [OVERVIEW, TASKS, FAILURES])
def test_staff_without_job_permissions_get_403(url: str):
    response = logged_in(None).get(url)

    assert response.status_code == 403


def test_a_viewer_reads_every_page_and_gets_no_action_buttons(viewer: Client, failed_job: Job):
    for url in (OVERVIEW, TASKS, FAILURES, task_url(failed_job.task_id)):
        response = viewer.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert 'id="task-retry"' not in body
        assert 'id="task-revoke"' not in body
        assert "data-retry-group" not in body


def test_a_viewer_who_posts_a_retry_or_a_revoke_gets_403_and_nothing_happens(
    viewer: Client, failed_job: Job, broker_queues: redis.Redis
):
    running = make_job(state="started")

    retry = viewer.post(f"{task_url(failed_job.task_id)}retry/")
    revoke = viewer.post(f"{task_url(running.task_id)}revoke/", {"terminate": "on"})
    group = viewer.post("/admin/jobs/failures/retry/", {"exception_type": "LedgerDown", "name": failed_job.name})

    assert (retry.status_code, revoke.status_code, group.status_code) == (403, 403, 403)
    assert broker_queues.llen("ledger") == 0
    assert Job.objects.get(pk=running.pk).state == "started"


def test_an_operator_retries_a_failed_task_and_lands_on_the_new_tasks_page(
    operator: Client, failed_job: Job, broker_queues: redis.Redis
):
    # given the failed task's page shows the operator a Retry button
    page = operator.get(task_url(failed_job.task_id)).content.decode()
    assert 'id="task-retry"' in page

    # when they press it
    response = operator.post(f"{task_url(failed_job.task_id)}retry/")

    # then the task is published again under a new id, and they are sent to that id's page
    assert response.status_code == 302
    new_task_id = re.fullmatch(r"/admin/jobs/tasks/([0-9a-f-]{36})/", response.url).group(1)
    assert new_task_id != failed_job.task_id
    [message] = [json.loads(raw) for raw in broker_queues.lrange("ledger", 0, -1)]
    assert message["headers"]["id"] == new_task_id
    assert message["headers"]["atrium_retry_of"] == failed_job.task_id
    # which says it was published and waits for the monitor (no monitor runs here), with a live region
    landed = operator.get(response.url)
    assert landed.status_code == 200
    body = landed.content.decode()
    assert "Published, waiting for the job monitor to record it" in body
    assert f"published again as {new_task_id}" in body
    assert "data-live-url" in body


def test_the_page_of_a_new_task_shows_it_once_the_monitor_has_recorded_it(
    operator: Client, failed_job: Job, broker_queues: redis.Redis
):
    new_task_id = operator.post(f"{task_url(failed_job.task_id)}retry/").url.split("/")[-2]
    make_job(task_id=new_task_id, state="queued", retry_of=failed_job.task_id)

    fragment = operator.get(task_url(new_task_id), {"fragment": "1"}).content.decode()

    assert "Published, waiting" not in fragment
    assert 'data-state="queued"' in fragment
    assert failed_job.task_id in fragment  # re-runs: the original
    assert "Published, waiting" not in operator.get(task_url(new_task_id)).content.decode()


def test_an_unknown_task_id_that_nobody_just_published_is_404(viewer: Client):
    assert viewer.get(task_url(new_id())).status_code == 404


def test_a_refused_retry_is_a_message_on_the_tasks_page_not_an_error(operator: Client, broker_queues: redis.Redis):
    done = make_job(state="succeeded")
    too_big = make_job(state="failed", payload=None)

    for job, why in ((done, "only failed, revoked or rejected"), (too_big, "too large to keep")):
        response = operator.post(f"{task_url(job.task_id)}retry/", follow=True)

        assert response.redirect_chain == [(task_url(job.task_id), 302)]
        assert why in response.content.decode()
    assert broker_queues.llen("ledger") == 0


def test_a_task_whose_args_were_not_kept_says_why_there_is_no_retry_button(operator: Client):
    job = make_job(state="failed", payload=None)

    body = operator.get(task_url(job.task_id)).content.decode()

    assert 'id="task-retry"' not in body
    assert "Cannot be retried from here" in body


def test_revoking_asks_for_a_confirmation_first(operator: Client):
    running = make_job(state="started", finished_at=None)
    done = make_job(state="succeeded")

    detail = operator.get(task_url(running.task_id)).content.decode()
    confirm = operator.get(f"{task_url(running.task_id)}revoke/")
    revoked = operator.post(f"{task_url(running.task_id)}revoke/", {"terminate": "on"}, follow=True)
    refused = operator.post(f"{task_url(done.task_id)}revoke/", follow=True)

    assert 'id="task-revoke"' in detail
    assert 'id="task-revoke"' not in operator.get(task_url(done.task_id)).content.decode()
    assert confirm.status_code == 200
    assert 'name="terminate"' in confirm.content.decode()
    assert "was revoked and its process was sent SIGTERM" in revoked.content.decode()
    assert "Not revoked" in refused.content.decode()
    assert "already ended" in refused.content.decode()


# ------------------------------------------------------------------------------------------------ overview


def test_the_overview_charts_each_queue_and_counts_the_last_hour_by_state(viewer: Client):
    now = timezone.now()
    minute = now.replace(second=0, microsecond=0)
    for n, (queue, service) in enumerate([("ledger", "ledger"), ("payments", "payments")]):
        for ago in range(0, 50, 5):
            JobMinute.objects.create(
                minute=minute - dt.timedelta(minutes=ago), service=service, queue=queue, name=f"{queue}.work",
                succeeded=10 + n + ago % 7, failed=ago % 3, started=12,
            )  # fmt: skip
    make_job(state="failed", queue="payments", service="payments", name="payments.capture")
    make_job(state="succeeded")
    make_job(state="succeeded", seen=now - dt.timedelta(hours=3))  # not in the last hour

    body = viewer.get(OVERVIEW).content.decode()
    day = viewer.get(OVERVIEW, {"range": "24h"}).content.decode()

    assert 'id="jobs-throughput-chart"' in body
    assert 'id="jobs-failures-chart"' in body
    assert body.count('class="series" data-series="ledger"') == 2
    assert body.count('class="series" data-series="payments"') == 2
    assert "Tasks succeeded per 15 minutes, by queue" in day
    assert "Tasks succeeded per minute, by queue" in body
    counts = re.findall(r'id="count-(\w+)"[^>]*>.*?</span>\s*(\d+)</a>', body, re.S)
    assert dict(counts)["failed"] == "1"
    assert dict(counts)["succeeded"] == "1"
    # the count opens the list of exactly those tasks: housekeeping included, as the count includes it
    assert re.search(
        r'href="/admin/jobs/tasks/\?state=failed&amp;since=\d{4}-\d\d-\d\dT\d\d%3A\d\d&amp;housekeeping=1"', body
    )


def test_the_overview_shows_workers_and_a_lost_workers_tasks_in_flight(viewer: Client):
    now = timezone.now()
    Worker.objects.create(
        hostname="ledger@app-1", service="ledger", queues=["ledger"], pool="prefork", concurrency=4, active=1,
        processed=5120, sw_version="5.4.0", last_heartbeat=now, status=WorkerStatus.ONLINE,
    )  # fmt: skip
    Worker.objects.create(
        hostname="payments@app-2", service="payments", queues=["payments"], pool="prefork", concurrency=2,
        last_heartbeat=now - dt.timedelta(minutes=3), status=WorkerStatus.LOST,
    )  # fmt: skip
    stuck = make_job(state="started", worker="payments@app-2", name="payments.capture", finished_at=None)

    body = viewer.get(OVERVIEW).content.decode()

    lost = re.search(r'<tr id="worker-2" data-worker="payments@app-2" class="jobs-row-lost">(.*?)</tr>', body, re.S)
    assert lost, body
    assert "lost" in lost.group(1)
    assert task_url(stuck.task_id) in lost.group(1)
    assert "prefork &times; 4" in body
    assert "5.4.0" in body
    assert "5,120" in body


# --------------------------------------------------------------------------------------------------- list


def test_the_task_list_filters_by_state_queue_service_name_time_request_and_task_id(viewer: Client):
    now = timezone.now()
    failed = make_job(state="failed", request_id="req_one")
    payment = make_job(state="succeeded", queue="payments", service="payments", name="payments.capture")
    old = make_job(state="succeeded", seen=now - dt.timedelta(days=2))
    JobTotal.objects.create(service="payments", queue="payments", name="payments.capture")
    JobTotal.objects.create(service="ledger", queue="ledger", name="ledger.transaction_post")

    def listed(**params: str) -> set[str]:
        response = viewer.get(TASKS, params)
        assert response.status_code == 200
        return set(re.findall(r'<tr data-task-id="([^"]+)"', response.content.decode()))

    assert listed() == {failed.task_id, payment.task_id, old.task_id}
    assert listed(state="failed") == {failed.task_id}
    assert listed(queue="payments") == {payment.task_id}
    assert listed(service="ledger", name="ledger.transaction_post") == {failed.task_id, old.task_id}
    assert listed(since=(now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")) == {failed.task_id, payment.task_id}
    assert listed(until=(now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")) == {old.task_id}
    assert listed(request_id="req_one") == {failed.task_id}
    assert listed(q=payment.task_id[:8], state="succeeded") == {payment.task_id}
    # the task names are a select of the known ones
    body = viewer.get(TASKS).content.decode()
    assert '<option value="payments.capture">payments.capture</option>' in body


def test_a_whole_task_id_in_the_search_opens_the_task(viewer: Client):
    job = make_job()

    response = viewer.get(TASKS, {"q": job.task_id})

    assert (response.status_code, response.url) == (302, task_url(job.task_id))


def test_a_wrong_filter_value_is_a_warning_not_an_error(viewer: Client):
    make_job()

    response = viewer.get(TASKS, {"state": "exploded", "since": "yesterday"})

    body = response.content.decode()
    assert response.status_code == 200
    assert "Unknown state" in body
    assert "is not a date and time" in body
    assert body.count("<tr data-task-id=") == 1


def test_the_task_list_pages_by_keyset_both_ways(viewer: Client):
    start = timezone.now() - dt.timedelta(hours=1)
    jobs = [make_job(seen=start + dt.timedelta(seconds=n)) for n in range(120)]
    newest_first = [j.task_id for j in reversed(jobs)]

    def page(url: str, params: dict[str, str] | None = None) -> tuple[list[str], str, str, str]:
        body = viewer.get(url, params or {}).content.decode()
        ids = re.findall(r'<tr data-task-id="([^"]+)"', body)
        older = re.search(r'href="\?([^"]*)" id="jobs-older"', body)
        newer = re.search(r'href="\?([^"]*)" id="jobs-newer"', body)
        live = "data-live-url" in body
        return (
            ids,
            f"?{older.group(1)}".replace("&amp;", "&") if older else "",
            f"?{newer.group(1)}".replace("&amp;", "&") if newer else "",
            live,
        )

    first, older, newer, live = page(TASKS)
    assert (first, newer, live) == (newest_first[:50], "", True)
    assert "after=" in older
    assert "offset" not in older
    second, older, newer, live = page(TASKS + older)
    assert (second, live) == (newest_first[50:100], False)
    third, end, newer_from_third, _ = page(TASKS + older)
    assert (third, end) == (newest_first[100:], "")
    back, _, _, _ = page(TASKS + newer_from_third)
    assert back == second
    to_top, _, newer, live = page(TASKS + page(TASKS + newer_from_third)[2])
    assert (to_top, newer, live) == (first, "", True)


def test_a_cursor_the_list_did_not_give_out_is_a_message(viewer: Client):
    response = viewer.get(TASKS, {"after": "not-a-cursor", "state": "failed"}, follow=True)

    assert response.redirect_chain == [(f"{TASKS}?state=failed", 302)]
    assert "The cursor is not one this list gave out" in response.content.decode()


def test_the_task_lists_queries_do_not_grow_with_the_rows(viewer: Client, django_assert_max_num_queries: Any):
    start = timezone.now() - dt.timedelta(hours=1)
    Job.objects.bulk_create(
        [
            Job(task_id=new_id(), name=f"ledger.t{n % 7}", service="ledger", queue="ledger", state="succeeded",
                seen_at=start + dt.timedelta(seconds=n), last_event_at=start, runtime_ms=3.0)
            for n in range(400)
        ]
    )  # fmt: skip
    viewer.get(TASKS)  # the session and permission caches warmed

    with django_assert_max_num_queries(6) as captured:
        response = viewer.get(TASKS, {"state": "succeeded", "queue": "ledger"})

    assert response.content.decode().count("<tr data-task-id=") == 50
    sql = " ".join(q["sql"] for q in captured.captured_queries)
    assert "COUNT(" not in sql.upper()
    assert "OFFSET" not in sql.upper()


# ------------------------------------------------------------------------------------------------- detail


def test_a_tasks_page_shows_its_timeline_traceback_and_links(viewer: Client, failed_job: Job):
    child = make_job(parent_id=failed_job.task_id, name="ledger.notify")

    body = viewer.get(task_url(failed_job.task_id)).content.decode()

    assert 'id="task-traceback"' in body
    assert "LedgerDown: 503" in body
    assert 'href="/admin/audit/auditevent/?request_id=req_abc123"' in body
    assert 'href="/admin/jobs/tasks/?request_id=req_abc123"' in body
    timeline = re.findall(r'<tr data-state="(\w+)">', body)
    assert timeline == ["queued", "received", "started", "retried", "started", "failed"]
    assert "Retry in 1s: ConnectError" in body
    assert "&quot;txn_9&quot;" in body  # args, as JSON
    assert task_url(child.task_id) in body
    assert "data-live-final" in body
    assert "data-live-url" not in body


def test_an_unfinished_tasks_page_updates_by_itself(viewer: Client):
    running = make_job(state="started", finished_at=None)

    body = viewer.get(task_url(running.task_id)).content.decode()

    assert "data-live-url" in body
    assert "data-live-final" not in body


# ----------------------------------------------------------------------------------------------- failures


def test_failures_are_grouped_by_exception_and_task(viewer: Client):
    for _ in range(3):
        make_job(state="failed")
    make_job(state="failed", exception_type="KeyError", name="payments.capture", queue="payments")
    make_job(state="failed", seen=timezone.now() - dt.timedelta(days=3))  # outside the last 24 h

    body = viewer.get(FAILURES).content.decode()
    everything = viewer.get(FAILURES, {"range": "all"}).content.decode()

    groups = re.findall(r'<tr data-exception="(\w+)" data-name="([\w.]+)"', body)
    assert groups == [("LedgerDown", "ledger.transaction_post"), ("KeyError", "payments.capture")]
    assert re.search(r'title="List them">3</a>', body)
    assert re.search(r'title="List them">4</a>', everything)


def test_an_operator_retries_a_failure_group_bounded_and_confirmed(
    operator: Client, broker_queues: redis.Redis, settings: Any
):
    settings.JOBS_RETRY_MAX = 2
    jobs = [make_job(state="failed") for _ in range(3)]
    make_job(state="failed", task_id=new_id(), retry_of=jobs[0].task_id)  # a re-run of one, failed too
    params = {"exception_type": "LedgerDown", "name": "ledger.transaction_post", "range": "24h"}

    listing = operator.get(FAILURES).content.decode()
    confirm = operator.get("/admin/jobs/failures/retry/", params).content.decode()
    done = operator.post("/admin/jobs/failures/retry/", params, follow=True)

    assert "Retry all 4" in listing
    assert re.search(r"publishes <strong>2</strong> tasks again", confirm)
    assert "the newest 2" in confirm
    assert "1 of the group was already re-run" in confirm
    assert "2 tasks of LedgerDown in ledger.transaction_post published again" in done.content.decode()
    assert broker_queues.llen("ledger") == 2


def test_fragments_are_the_live_region_only(viewer: Client, failed_job: Job):
    for url in (OVERVIEW, TASKS, FAILURES, task_url(failed_job.task_id)):
        response = viewer.get(url, {"fragment": "1"})

        assert response.status_code == 200
        assert response["X-Catalog-Fragment"] == "1"
        body = response.content.decode()
        assert "<html" not in body
        assert 'data-region="' in body


def test_the_admins_job_pages_open_the_dashboard(viewer: Client, failed_job: Job):
    # given the admin's list and a job's change page, by row id or by task id
    listed = viewer.get("/admin/jobs/job/", {"state__exact": "failed", "o": "1"})
    by_pk = viewer.get(f"/admin/jobs/job/{failed_job.pk}/change/")
    by_task_id = viewer.get(f"/admin/jobs/job/{failed_job.task_id}/change/")
    unknown = viewer.get("/admin/jobs/job/999999999/change/")

    # then each redirects to the dashboard (its filters kept; a number that is no row is taken as a task id)
    assert (listed.status_code, listed.url) == (302, f"{TASKS}?state=failed")
    assert (by_pk.status_code, by_pk.url) == (302, task_url(failed_job.task_id))
    assert by_task_id.url == task_url(failed_job.task_id)
    assert unknown.url == task_url("999999999")
