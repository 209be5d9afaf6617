"""The periodic schedule: the code's beat schedule synced into django-celery-beat's database schedule (idempotent,
a pause and an operator's edit survive it), the schedule in words, the schedule API and page (last run from the
jobs the monitor recorded, next run), run-now, pause and resume by role, audited, refused with problem codes; and
housekeeping tasks left out of the task list unless asked for.

Run-now really publishes to the broker (this run's Redis, the ``portal`` queue, emptied after each test)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from celery.schedules import crontab
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from portal.jobs import selectors, services
from portal.jobs.models import Job, JobState
from portal.jobs.recorder import record
from services.kit.models import OutboxEvent
from tests.portal.factories import machine_client, user_with_role
from tests.portal.helpers import queued_messages
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

API = "/api/v1/jobs"
PAGE = "/admin/jobs/schedule/"
CODE = {
    "portal.ping.beat": {"task": "portal.ping", "schedule": 300.0, "kwargs": {"message": "beat"}},
    "portal.catalog_health": {"task": "portal.catalog_health", "schedule": 5.0},
    "ledger.nightly": {"task": "ledger.integrity_check", "schedule": crontab(minute="0", hour="3")},
}


@pytest.fixture(autouse=True)
def no_tracking(settings: Any) -> None:
    settings.JOBS_TRACKING = False


def _person(role: str | None) -> Client:
    client = Client()
    client.force_login(user_with_role(role))
    return client


def _machine(mint_token: Any, *scopes: str) -> Client:
    machine = machine_client(audiences=["portal"], scopes=list(scopes))
    return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal', scope=' '.join(scopes))}")


def _post(client: Client, url: str) -> Any:
    return client.post(url, "", content_type="application/json")


def _audited(action: str) -> list[dict[str, Any]]:
    return [e.payload for e in OutboxEvent.objects.filter(topic="audit", payload__action=action).order_by("id")]


def _job(*, name: str, periodic: str = "", ago: float = 60, state: str = JobState.SUCCEEDED, **fields: Any) -> Job:
    seen = timezone.now() - dt.timedelta(seconds=ago)
    fields.setdefault("queue", name.split(".", 1)[0])
    return Job.objects.create(
        task_id=str(uuid.uuid4()), name=name, periodic=periodic, state=state, seen_at=seen, last_event_at=seen,
        **fields,
    )  # fmt: skip


# --- the sync ---------------------------------------------------------------------------------------------------


def test_the_code_schedule_is_synced_idempotently_and_a_pause_survives_it():
    # given the code's schedule synced once
    first = services.schedule_sync(entries=CODE)
    assert sorted(first.created) == sorted(CODE)
    ping = PeriodicTask.objects.get(name="portal.ping.beat")
    assert (ping.task, ping.interval.every, ping.interval.period, json.loads(ping.kwargs)) == (
        "portal.ping", 300, IntervalSchedule.SECONDS, {"message": "beat"},
    )  # fmt: skip
    nightly = PeriodicTask.objects.get(name="ledger.nightly")
    assert (nightly.crontab.minute, nightly.crontab.hour, nightly.crontab.day_of_week) == ("0", "3", "*")

    # when an operator pauses one and beat starts again (the sync runs again)
    services.periodic_pause(name="portal.catalog_health")
    again = services.schedule_sync(entries=CODE)

    # then nothing changed, and the pause holds
    assert (again.created, again.updated, again.kept, again.removed) == ([], [], [], [])
    assert PeriodicTask.objects.get(name="portal.catalog_health").enabled is False
    assert PeriodicTask.objects.count() == 3


def test_a_code_change_is_applied_an_operators_edit_is_kept_and_a_dropped_entry_goes():
    services.schedule_sync(entries=CODE)
    # an operator edits one task's interval in the admin, and pauses another
    health = PeriodicTask.objects.get(name="portal.catalog_health")
    health.interval = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    health.save()
    services.periodic_pause(name="portal.ping.beat")

    # when the code changes the paused one's interval and its health poll's, and drops the nightly job
    code = {
        "portal.ping.beat": {**CODE["portal.ping.beat"], "schedule": 600.0},
        "portal.catalog_health": {**CODE["portal.catalog_health"], "schedule": 10.0},
    }
    done = services.schedule_sync(entries=code)

    # then the code's change lands where nobody edited (the pause stays), the operator's edit is kept
    assert done.updated == ["portal.ping.beat"]
    assert done.kept == ["portal.catalog_health"]
    assert done.removed == ["ledger.nightly"]
    ping = PeriodicTask.objects.get(name="portal.ping.beat")
    assert (ping.interval.every, ping.enabled) == (600, False)
    assert PeriodicTask.objects.get(name="portal.catalog_health").interval.every == 30
    assert not PeriodicTask.objects.filter(name="ledger.nightly").exists()


def test_a_task_an_operator_added_in_the_admin_is_left_alone_by_the_sync():
    services.schedule_sync(entries=CODE)
    PeriodicTask.objects.create(
        name="ops.report", task="payments.reconcile",
        interval=IntervalSchedule.objects.create(every=2, period=IntervalSchedule.HOURS),
    )  # fmt: skip
    done = services.schedule_sync(entries={})
    assert sorted(done.removed) == sorted(CODE)
    assert list(PeriodicTask.objects.values_list("name", flat=True)) == ["ops.report"]


@pytest.mark.parametrize(
    ("kind", "spec", "words"),
    [
        ("interval", (30, "seconds"), "every 30 seconds"),
        ("interval", (1, "seconds"), "every second"),
        ("interval", (300, "seconds"), "every 5 minutes"),
        ("interval", (3600, "seconds"), "every hour"),
        ("interval", (2, "days"), "every 2 days"),
        ("interval", (90, "seconds"), "every 90 seconds"),
        ("crontab", ("0", "3", "*"), "daily at 03:00 UTC"),
        ("crontab", ("30", "6", "1,5"), "every Monday, Friday at 06:30 UTC"),
        ("crontab", ("15", "*", "*"), "hourly at :15"),
        ("crontab", ("*/10", "8-18", "*"), "cron */10 8-18 * * * (UTC)"),
    ],
)
def test_the_schedule_reads_in_words(kind, spec, words):
    if kind == "interval":
        schedule = {"interval": IntervalSchedule.objects.create(every=spec[0], period=spec[1])}
    else:
        schedule = {
            "crontab": CrontabSchedule.objects.create(minute=spec[0], hour=spec[1], day_of_week=spec[2], timezone="UTC")
        }
    task = PeriodicTask.objects.create(name=f"t-{uuid.uuid4().hex[:6]}", task="portal.ping", **schedule)
    assert selectors.schedule_words(task) == words


# --- the API ----------------------------------------------------------------------------------------------------


def test_the_schedule_lists_every_periodic_task_with_its_last_run_from_the_jobs_and_its_next_run(mint_token):
    services.schedule_sync(entries=CODE)
    beat_sent = timezone.now() - dt.timedelta(seconds=2)
    PeriodicTask.objects.filter(name="portal.catalog_health").update(last_run_at=beat_sent)
    # the jobs the periodic tasks sent, as the monitor recorded them (the newest one counts; other jobs do not)
    _job(name="portal.catalog_health", periodic="portal.catalog_health", ago=20, housekeeping=True)
    newest = _job(name="portal.catalog_health", periodic="portal.catalog_health", ago=3, housekeeping=True,
                  state=JobState.FAILED, exception_type="ConnectError")  # fmt: skip
    _job(name="portal.catalog_health", ago=1, housekeeping=True)  # not sent by the schedule
    services.periodic_pause(name="portal.ping.beat")

    body = _machine(mint_token, "jobs:read").get(f"{API}/schedule")

    assert body.status_code == 200, body.content
    rows = {r["name"]: r for r in body.json()["results"]}
    assert list(rows) == sorted(CODE)
    health = rows["portal.catalog_health"]
    assert (health["task"], health["schedule"], health["queue"], health["enabled"]) == (
        "portal.catalog_health", "every 5 seconds", "portal", True,
    )  # fmt: skip
    assert health["last_run"]["task_id"] == newest.task_id
    assert (health["last_run"]["state"], health["last_run"]["exception_type"]) == ("failed", "ConnectError")
    assert health["housekeeping"] is True
    next_run = dt.datetime.fromisoformat(health["next_run"])
    assert timezone.now() < next_run <= timezone.now() + dt.timedelta(seconds=5)
    ping = rows["portal.ping.beat"]
    assert (ping["enabled"], ping["next_run"], ping["last_run"], ping["housekeeping"]) == (False, None, None, None)
    assert rows["ledger.nightly"]["schedule"] == "daily at 03:00 UTC"
    assert rows["ledger.nightly"]["queue"] == "ledger"
    nightly_next = dt.datetime.fromisoformat(rows["ledger.nightly"]["next_run"])
    assert (nightly_next.hour, nightly_next.minute) == (3, 0)
    assert timezone.now() < nightly_next <= timezone.now() + dt.timedelta(days=1)

    # and ?housekeeping=false leaves out those whose last run was housekeeping
    hidden = _machine(mint_token, "jobs:read").get(f"{API}/schedule?housekeeping=false").json()["results"]
    assert [r["name"] for r in hidden] == ["ledger.nightly", "portal.ping.beat"]
    assert_problem(_machine(mint_token, "jobs:read").get(f"{API}/schedule?housekeeping=maybe"), 400, "validation_error")


def test_an_operator_runs_a_periodic_task_now_with_its_args_and_it_is_audited(broker):
    services.schedule_sync(entries=CODE)
    services.periodic_pause(name="portal.ping.beat")  # paused or not, run-now sends it

    response = _post(_person("operator"), f"{API}/schedule/portal.ping.beat/run")

    assert response.status_code == 202, response.content
    task_id = response.json()["task_id"]
    (message,) = queued_messages(broker)
    assert message["headers"]["id"] == task_id
    assert message["headers"]["task"] == "portal.ping"
    assert message["headers"]["periodic_task_name"] == "portal.ping.beat"
    (event,) = _audited("jobs.periodic.run")
    assert event["object"] == {"type": "jobs.periodic", "id": "portal.ping.beat"}
    assert event["metadata"]["new_task_id"] == task_id
    assert PeriodicTask.objects.get(name="portal.ping.beat").enabled is False  # run-now changes no schedule


def test_an_operator_pauses_and_resumes_and_each_is_audited_and_a_second_pause_is_a_conflict():
    services.schedule_sync(entries=CODE)
    operator = _person("operator")
    url = f"{API}/schedule/portal.catalog_health"

    assert _post(operator, f"{url}/pause").json() == {"name": "portal.catalog_health", "enabled": False}
    assert PeriodicTask.objects.get(name="portal.catalog_health").enabled is False
    assert_problem(_post(operator, f"{url}/pause"), 409, "periodic_task_paused")
    assert _post(operator, f"{url}/resume").json() == {"name": "portal.catalog_health", "enabled": True}
    assert_problem(_post(operator, f"{url}/resume"), 409, "periodic_task_not_paused")
    assert PeriodicTask.objects.get(name="portal.catalog_health").enabled is True
    assert [e["object"]["id"] for e in _audited("jobs.periodic.paused")] == ["portal.catalog_health"]
    assert [e["object"]["id"] for e in _audited("jobs.periodic.resumed")] == ["portal.catalog_health"]
    assert _audited("jobs.periodic.paused")[0]["actor"]["type"] == "user"


def test_viewers_auditors_and_readers_cannot_run_or_pause_and_unknown_names_are_not_found(mint_token, broker):
    services.schedule_sync(entries=CODE)
    url = f"{API}/schedule/portal.ping.beat"
    for role in ("viewer", "auditor"):
        person = _person(role)
        assert person.get(f"{API}/schedule").status_code == 200
        for action in ("run", "pause", "resume"):
            assert_problem(_post(person, f"{url}/{action}"), 403, "role_required")
    reader = _machine(mint_token, "jobs:read")
    assert_problem(_post(reader, f"{url}/pause"), 403, "insufficient_scope")
    assert_problem(_person(None).get(f"{API}/schedule"), 403, "role_required")
    writer = _machine(mint_token, "jobs:write")
    for action in ("run", "pause", "resume"):
        assert_problem(_post(writer, f"{API}/schedule/no.such.task/{action}"), 404, "periodic_task_not_found")
    assert _post(writer, f"{url}/pause").status_code == 200  # a client with jobs:write may
    assert queued_messages(broker) == []
    assert PeriodicTask.objects.filter(enabled=False).count() == 1
    assert _audited("jobs.periodic.run") == []


# --- the page ---------------------------------------------------------------------------------------------------


def test_the_page_shows_every_task_and_only_operators_get_buttons_which_work(broker):
    services.schedule_sync(entries=CODE)
    last = _job(name="portal.ping", periodic="portal.ping.beat", ago=30, housekeeping=True)
    viewer, operator = _person("viewer"), _person("operator")

    page = viewer.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    for name in CODE:
        assert f'data-periodic="{name}"' in html
    assert "every 5 minutes" in html
    assert "daily at 03:00 UTC" in html
    assert f"/admin/jobs/tasks/{last.task_id}/" in html
    assert "data-run" not in html
    assert "data-pause" not in html
    assert viewer.post(f"{PAGE}portal.ping.beat/pause/").status_code == 403
    assert viewer.post(f"{PAGE}portal.ping.beat/run/").status_code == 403

    html = operator.get(PAGE).content.decode()
    assert html.count("data-run") == 3
    assert html.count("data-pause") == 3
    paused = operator.post(f"{PAGE}portal.ping.beat/pause/", follow=True).content.decode()
    assert "Paused portal.ping.beat" in paused
    assert "data-resume" in paused
    assert "data-paused" in paused
    again = operator.post(f"{PAGE}portal.ping.beat/pause/", follow=True).content.decode()
    assert "Not paused" in again  # a refusal is a message on the page, never an error page
    sent = operator.post(f"{PAGE}portal.ping.beat/run/", follow=True)
    (message,) = queued_messages(broker)
    assert message["headers"]["id"] in sent.content.decode()
    # the run's page waits for the monitor instead of a 404
    waiting = operator.get(f"/admin/jobs/tasks/{message['headers']['id']}/").content.decode()
    assert "sent from the" in waiting


# --- housekeeping in the task list ------------------------------------------------------------------------------


def test_the_task_list_hides_housekeeping_unless_asked_or_a_task_is_named(mint_token):
    work = _job(name="payments.process", ago=5)
    poll = _job(name="portal.catalog_health", ago=4, housekeeping=True)
    reader = _machine(mint_token, "jobs:read")

    def ids(query: str) -> list[str]:
        response = reader.get(f"{API}/tasks{query}")
        assert response.status_code == 200, response.content
        return [r["task_id"] for r in response.json()["results"]]

    assert ids("") == [work.task_id]
    assert ids("?housekeeping=1") == [poll.task_id, work.task_id]
    assert ids("?housekeeping=true&queue=portal") == [poll.task_id]
    assert ids("?name=portal.catalog_health") == [poll.task_id]  # asking for it by name shows it
    assert ids(f"?q={poll.task_id[:8]}") == [poll.task_id]
    assert_problem(reader.get(f"{API}/tasks?housekeeping=maybe"), 400, "validation_error")
    row = reader.get(f"{API}/tasks?housekeeping=1").json()["results"][0]
    assert row["housekeeping"] is True

    # the page: hidden by default, behind a visible toggle that keeps the other filters
    viewer = _person("viewer")
    html = viewer.get("/admin/jobs/tasks/").content.decode()
    assert work.task_id in html
    assert poll.task_id not in html
    assert 'id="jobs-housekeeping"' in html
    assert "Show housekeeping" in html
    html = viewer.get("/admin/jobs/tasks/?housekeeping=1&state=succeeded").content.decode()
    assert work.task_id in html
    assert poll.task_id in html
    assert "Hide housekeeping" in html
    assert 'href="?state=succeeded"' in html


def test_the_monitor_records_housekeeping_and_the_periodic_task_from_the_events():
    task_id, at = str(uuid.uuid4()), timezone.now().timestamp()
    common = {"task_id": task_id, "name": "portal.catalog_health", "queue": "portal"}
    record(
        [
            ("1-1", {"e": json.dumps({"state": "queued", "at": at, "periodic": "portal.catalog_health",
                                      "housekeeping": False, **common})}),
            ("1-2", {"e": json.dumps({"state": "started", "at": at + 0.01, "worker": "portal@h",
                                      "housekeeping": True, **common})}),
            ("1-3", {"e": json.dumps({"state": "succeeded", "at": at + 0.02, "worker": "portal@h", **common})}),
        ]
    )  # fmt: skip
    job = Job.objects.get(task_id=task_id)
    assert (job.housekeeping, job.periodic, job.state) == (True, "portal.catalog_health", "succeeded")
    other = str(uuid.uuid4())
    record([("2-1", {"e": json.dumps({"state": "queued", "at": at, "task_id": other, "name": "payments.process"})})])
    assert (Job.objects.get(task_id=other).housekeeping, Job.objects.get(task_id=other).periodic) == (False, "")


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("a%00b", 400, "invalid_characters"),  # the kit refuses a NUL anywhere in the path
        ("x" * 500, 404, "periodic_task_not_found"),
        ("%C3%BCn%C3%AFcode", 404, "periodic_task_not_found"),
        ("%2E%2E", 404, "periodic_task_not_found"),
        ("%F0%9F%92%A5", 404, "periodic_task_not_found"),
        ("a%20b", 404, "periodic_task_not_found"),
    ],
)
def test_a_hostile_periodic_task_name_is_a_problem_never_a_500(name, status, code):
    services.schedule_sync(entries=CODE)
    operator = _person("operator")
    for action in ("run", "pause", "resume"):
        assert_problem(_post(operator, f"{API}/schedule/{name}/{action}"), status, code)
        page = operator.post(f"{PAGE}{name}/{action}/")
        assert page.status_code in (302, 400, 404), page.status_code  # a message on the schedule page, or refused
    assert not PeriodicTask.objects.filter(enabled=False).exists()
    assert _audited("jobs.periodic.run") == []


def test_the_admins_bulk_actions_pause_resume_and_run_through_the_audited_services(broker):
    # given the schedule in django-celery-beat's admin, and an admin (operators only read it there)
    services.schedule_sync(entries=CODE)
    ids = {t.name: str(t.pk) for t in PeriodicTask.objects.all()}
    admin, operator = _person("admin"), _person("operator")
    url = "/admin/django_celery_beat/periodictask/"
    assert operator.get(url).status_code == 200
    assert "disable_tasks" not in operator.get(url).content.decode()

    def act(action: str, *names: str) -> Any:
        return admin.post(url, {"action": action, "_selected_action": [ids[n] for n in names]}, follow=True)

    # when the admin pauses two of them, then resumes one and runs one
    assert act("disable_tasks", "portal.ping.beat", "ledger.nightly").status_code == 200
    act("enable_tasks", "ledger.nightly")
    done = act("run_tasks", "portal.ping.beat").content.decode()

    # then each went through the services: audited, and the run sent by name to its queue
    assert PeriodicTask.objects.get(name="portal.ping.beat").enabled is False
    assert PeriodicTask.objects.get(name="ledger.nightly").enabled is True
    assert sorted(e["object"]["id"] for e in _audited("jobs.periodic.paused")) == ["ledger.nightly", "portal.ping.beat"]
    assert [e["object"]["id"] for e in _audited("jobs.periodic.resumed")] == ["ledger.nightly"]
    (message,) = queued_messages(broker)
    assert message["headers"]["periodic_task_name"] == "portal.ping.beat"
    assert "Sent now: portal.ping.beat" in done


def test_the_schedule_reads_in_three_queries_however_many_tasks_and_runs(django_assert_num_queries):
    services.schedule_sync(entries=CODE)
    for n in range(30):
        _job(name="portal.catalog_health", periodic="portal.catalog_health", ago=5 * n + 1, housekeeping=True)
        _job(name="portal.ping", periodic="portal.ping.beat", ago=300 * n + 2, housekeeping=True)
    newest = Job.objects.filter(periodic="portal.catalog_health").order_by("-seen_at").first()

    with django_assert_num_queries(3):  # the tasks; each one's newest job id (a LIMIT 1 per task); those jobs
        rows = {r.task.name: r for r in selectors.schedule_list()}

    assert rows["portal.catalog_health"].last_run == newest
    assert rows["ledger.nightly"].last_run is None
