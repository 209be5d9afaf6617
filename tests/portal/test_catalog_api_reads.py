"""Reading the catalog over the API: filtered services with their derived status, instances, health history
(single checks and hourly counts), teams; who may read; bad filters are field errors, never 500s."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from portal.catalog.health import health_roll_up
from portal.catalog.models import Dependency, HealthCheck, HealthHour, Instance, Service, Team
from tests.portal.factories import machine_client, user_with_role
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

API = "/api/v1/catalog"
SECOND, MINUTE = dt.timedelta(seconds=1), dt.timedelta(minutes=1)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _heartbeat_interval(settings: Any) -> None:
    settings.CATALOG_HEARTBEAT_SECONDS = 10  # an instance is critical once silent for 30 s
    settings.CATALOG_HEALTH_RAW_DAYS = 2


def _client(mint_token: Any, *scopes: str) -> Client:
    machine = machine_client(audiences=["portal"], scopes=list(scopes))
    return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal', scope=' '.join(scopes))}")


@pytest.fixture
def reader(mint_token: Any) -> Client:
    return _client(mint_token, "portal:read")


def _team(slug: str, **fields: str) -> Team:
    return Team.objects.create(slug=slug, name=fields.pop("name", slug.title()), **fields)


def _service(slug: str, *, team: Team | None = None, health: str = "", **fields: Any) -> Service:
    fields.setdefault("display_name", slug.title())
    return Service.objects.create(slug=slug, owner=team, health_status=health, **fields)


def _instance(service: Service, name: str, *, silent: dt.timedelta = SECOND, marked: str = "passing") -> Instance:
    """An instance whose last heartbeat was ``silent`` ago, with the mark the beat task last wrote."""
    now = timezone.now()
    return Instance.objects.create(
        service=service, instance=name, host=name.split(":")[0], first_heartbeat=now - silent - HOUR,
        last_heartbeat=now - silent, heartbeats=5, status=marked,
    )  # fmt: skip


def _slugs(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [s["slug"] for s in response.json()]


def test_services_are_filtered_by_team_lifecycle_tier_tag_and_text(reader):
    money, risk = _team("money"), _team("risk")
    _service("ledger", team=money, tier=1, lifecycle="production", tags=["money", "core"], display_name="Ledger")
    _service("payments", team=money, tier=1, lifecycle="production", tags=["money"], display_name="Payments")
    _service("fraud-engine", team=risk, tier=2, lifecycle="experimental", display_name="Fraud screening")
    _service("old-reports", tier=3, lifecycle="deprecated", tags=["core"], display_name="Reports (legacy)")

    assert _slugs(reader.get(f"{API}/services")) == ["fraud-engine", "ledger", "old-reports", "payments"]
    assert _slugs(reader.get(f"{API}/services", {"team": "money"})) == ["ledger", "payments"]
    assert _slugs(reader.get(f"{API}/services", {"team": "nobody"})) == []
    assert _slugs(reader.get(f"{API}/services", {"lifecycle": "deprecated"})) == ["old-reports"]
    assert _slugs(reader.get(f"{API}/services", {"tier": "1"})) == ["ledger", "payments"]
    assert _slugs(reader.get(f"{API}/services", {"tag": "core"})) == ["ledger", "old-reports"]
    assert _slugs(reader.get(f"{API}/services", {"q": "SCREEN"})) == ["fraud-engine"]  # display name, any case
    assert _slugs(reader.get(f"{API}/services", {"q": "led"})) == ["ledger"]  # slug
    assert _slugs(reader.get(f"{API}/services", {"team": "money", "tag": "core", "tier": "1"})) == ["ledger"]


def test_status_is_derived_on_read_so_a_silent_instance_is_critical_before_any_mark_job_ran(reader):
    # given: instances all still marked "passing" by the beat task, which has not run since
    up = _service("up", health="passing")
    _instance(up, "up-1:1")
    flaky = _service("flaky")
    _instance(flaky, "flaky-1:1")
    _instance(flaky, "flaky-2:1", silent=45 * SECOND)
    down = _service("down")
    _instance(down, "down-1:1", silent=45 * SECOND)
    _instance(down, "down-2:1", silent=2 * HOUR, marked="gone")
    failing = _service("failing", health="critical")
    _instance(failing, "failing-1:1")
    _service("new")

    # when
    listed = {s["slug"]: s for s in reader.get(f"{API}/services").json()}
    detail = reader.get(f"{API}/services/down").json()

    # then
    assert {slug: s["status"] for slug, s in listed.items()} == {
        "up": "passing",
        "flaky": "warning",
        "down": "critical",
        "failing": "critical",
        "new": "unknown",
    }
    assert {i["instance"]: i["status"] for i in listed["flaky"]["instances"]} == {
        "flaky-1:1": "passing",
        "flaky-2:1": "critical",
    }
    assert detail["status"] == "critical"
    assert {i["instance"]: i["status"] for i in detail["instances"]} == {"down-1:1": "critical", "down-2:1": "gone"}
    assert set(Instance.objects.values_list("status", flat=True)) == {"passing", "gone"}  # nothing was written
    assert _slugs(reader.get(f"{API}/services", {"status": "critical"})) == ["down", "failing"]
    assert _slugs(reader.get(f"{API}/services", {"status": "warning"})) == ["flaky"]
    assert _slugs(reader.get(f"{API}/services", {"status": "unknown"})) == ["new"]
    assert _slugs(reader.get(f"{API}/services", {"status": "passing", "q": "u"})) == ["up"]


@pytest.mark.parametrize(
    ("url", "params", "fields"),
    [
        ("services", {"tier": "9"}, {"tier"}),
        ("services", {"tier": "one"}, {"tier"}),
        ("services", {"lifecycle": "beta", "status": "sleepy"}, {"lifecycle", "status"}),
        ("services/ledger/instances", {"status": "warning"}, {"status"}),
        ("services/ledger/health", {"since": "yesterday", "status": "down"}, {"since", "status"}),
        ("services/ledger/health/hours", {"until": "2026-13-01T00:00:00Z"}, {"until"}),
        ("services/ledger/health/hours", {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, {"until"}),
        ("services/ledger/health/hours", {"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, {"since"}),
    ],
)
def test_a_bad_filter_value_is_a_field_error_not_a_500(reader, url, params, fields):
    _service("ledger")

    response = reader.get(f"{API}/{url}", params)

    problem = assert_problem(response, 400, "validation_error")
    assert {e["field"] for e in problem["errors"]} == fields, problem
    assert all(e["code"] and e["detail"] for e in problem["errors"])


READ_URLS = [
    "services",
    "services/ledger",
    "services/ledger/instances",
    "services/ledger/health",
    "services/ledger/health/hours",
    "teams",
    "teams/money",
    "graph",
]


@pytest.mark.parametrize("url", READ_URLS)
def test_reads_need_portal_read_or_catalog_register(mint_token, url):
    _service("ledger", team=_team("money"))
    outsider = _client(mint_token, "audit:read", "jobs:read")

    assert_problem(Client().get(f"{API}/{url}"), 401, "not_authenticated")
    refused = assert_problem(outsider.get(f"{API}/{url}"), 403, "insufficient_scope")
    assert "portal:read" in refused["detail"]
    assert "catalog:register" in refused["detail"]
    # a dashboard reads with portal:read; a service's own client (catalog:register only) finds its dependencies
    assert _client(mint_token, "portal:read").get(f"{API}/{url}").status_code == 200
    assert _client(mint_token, "catalog:register").get(f"{API}/{url}").status_code == 200


def test_people_read_by_role_and_writes_still_need_catalog_register(mint_token):
    _service("ledger", team=_team("money"))
    viewer, nobody = Client(), Client()
    viewer.force_login(user_with_role("viewer"))
    nobody.force_login(user_with_role(None))

    for url in READ_URLS:
        assert viewer.get(f"{API}/{url}").status_code == 200, url
    assert_problem(nobody.get(f"{API}/teams"), 403, "role_required")
    put = _client(mint_token, "portal:read").put(f"{API}/services/ledger", "{}", content_type="application/json")
    assert_problem(put, 403, "insufficient_scope")


def test_instances_are_listed_latest_heartbeat_first_gone_ones_included_and_filtered_by_status(reader):
    ledger = _service("ledger")
    _instance(ledger, "host-a:1", silent=3 * HOUR, marked="gone")
    _instance(ledger, "host-b:1", silent=40 * SECOND)
    _instance(ledger, "host-c:1", silent=2 * SECOND)
    _instance(_service("payments"), "host-d:1")

    every = reader.get(f"{API}/services/ledger/instances").json()

    assert [(i["instance"], i["status"]) for i in every["results"]] == [
        ("host-c:1", "passing"),
        ("host-b:1", "critical"),
        ("host-a:1", "gone"),
    ]
    assert every["next"] is None
    for wanted, expected in (("passing", "host-c:1"), ("critical", "host-b:1"), ("gone", "host-a:1")):
        page = reader.get(f"{API}/services/ledger/instances", {"status": wanted}).json()
        assert [i["instance"] for i in page["results"]] == [expected], wanted
    assert_problem(reader.get(f"{API}/services/nope/instances"), 404, "service_not_found")


def _checks(service: Service, spec: list[tuple[dt.datetime, str, int | None]]) -> None:
    HealthCheck.objects.bulk_create(
        [HealthCheck(service=service, status=s, latency_ms=ms, checked_at=at) for at, s, ms in spec]
    )


def test_health_history_is_paged_newest_first_and_filtered_by_time_and_status(reader):
    ledger = _service("ledger")
    now = timezone.now()
    statuses = ["passing", "passing", "critical", "passing", "warning", "passing", "critical"]
    _checks(ledger, [(now - n * MINUTE, status, 10 + n) for n, status in enumerate(statuses)])
    _checks(_service("payments"), [(now, "critical", 1)])
    url = f"{API}/services/ledger/health"

    pages, page = [], reader.get(url, {"limit": 3}).json()
    pages.append(page["results"])
    while page["next"]:
        page = reader.get(page["next"]).json()
        pages.append(page["results"])

    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [c for p in pages for c in p]
    assert [c["latency_ms"] for c in seen] == [10, 11, 12, 13, 14, 15, 16]  # newest first, each once
    assert seen[0].keys() == {"checked_at", "status", "http_status", "latency_ms", "error"}
    window = {"since": (now - 4 * MINUTE).isoformat(), "until": (now - MINUTE).isoformat()}  # [since, until)
    assert [c["latency_ms"] for c in reader.get(url, window).json()["results"]] == [12, 13, 14]
    critical = reader.get(url, {"status": "critical"}).json()["results"]
    assert [c["latency_ms"] for c in critical] == [12, 16]
    assert_problem(reader.get(f"{API}/services/nope/health"), 404, "service_not_found")


def test_health_hours_add_up_hourly_roll_ups_and_single_checks_so_every_hour_is_complete(reader):
    # given: the roll-up runs at half past an hour, so the hour its cut-off falls in ends up half rolled up
    ledger = _service("ledger")
    rolled_at = timezone.now().replace(minute=30, second=0, microsecond=0) - HOUR
    cut = rolled_at - 2 * DAY  # CATALOG_HEALTH_RAW_DAYS
    split = cut - 30 * MINUTE  # the start of the hour the cut-off falls in
    _checks(ledger, [
        (split - 2 * HOUR + 5 * MINUTE, "passing", 100),   # an hour rolled up whole
        (split - 2 * HOUR + 6 * MINUTE, "critical", None),  # a timeout: no latency
        (split + 10 * MINUTE, "passing", 20),               # the split hour: rolled up ...
        (split + 20 * MINUTE, "warning", 1500),
        (split + 40 * MINUTE, "critical", 40),              # ... and still single
        (split + 50 * MINUTE, "passing", 40),
        (split + HOUR + 1 * MINUTE, "passing", 30),         # an hour still single
        (split + 5 * HOUR, "passing", 30),                  # outside the window asked for
    ])  # fmt: skip
    _checks(_service("payments"), [(split + 15 * MINUTE, "critical", 1)])
    url = f"{API}/services/ledger/health/hours"
    window = {"since": (split - 2 * HOUR + MINUTE).isoformat(), "until": (split + HOUR + 2 * MINUTE).isoformat()}
    before = reader.get(url, window)
    assert before.status_code == 200, before.content

    # when
    assert health_roll_up(now=rolled_at) == 3  # ledger's two hours and payments' one
    after = reader.get(url, window)

    # then: both sources were read, and the hours are the same as before the roll-up
    assert HealthHour.objects.filter(service=ledger).count() == 2
    assert HealthCheck.objects.filter(service=ledger, checked_at__gte=split, checked_at__lt=split + HOUR).count() == 2
    assert after.json() == before.json()
    body = after.json()
    assert body["service"] == "ledger"
    assert dt.datetime.fromisoformat(body["since"]) == split - 2 * HOUR  # widened to whole hours
    assert dt.datetime.fromisoformat(body["until"]) == split + 2 * HOUR
    hours = [{**h, "hour": dt.datetime.fromisoformat(h["hour"])} for h in body["hours"]]
    assert hours == [
        {"hour": split - 2 * HOUR, "checks": 2, "passing": 1, "warning": 0, "critical": 1, "latency_ms_mean": 100.0},
        {"hour": split, "checks": 4, "passing": 2, "warning": 1, "critical": 1, "latency_ms_mean": 400.0},
        {"hour": split + HOUR, "checks": 1, "passing": 1, "warning": 0, "critical": 0, "latency_ms_mean": 30.0},
    ]
    assert_problem(reader.get(f"{API}/services/nope/health/hours"), 404, "service_not_found")


def test_health_hours_default_to_the_last_24_hours(reader):
    ledger = _service("ledger")
    now = timezone.now()
    _checks(ledger, [(now - MINUTE, "passing", 10), (now - 3 * HOUR, "warning", 20), (now - 25 * HOUR, "passing", 5)])

    body = reader.get(f"{API}/services/ledger/health/hours").json()

    assert [(h["passing"], h["warning"]) for h in body["hours"]] == [(0, 1), (1, 0)]
    assert dt.datetime.fromisoformat(body["until"]) - dt.datetime.fromisoformat(body["since"]) == 25 * HOUR


def test_teams_list_their_contact_and_services_with_status(reader):
    money = _team("money", name="Money movement", contact="#money", on_call="money-rota")
    _team("risk")
    ledger = _service("ledger", team=money, health="passing")
    _instance(ledger, "ledger-1:1")
    _instance(_service("payments", team=money), "payments-1:1", silent=MINUTE)
    _service("reports")

    teams = reader.get(f"{API}/teams").json()
    money_body = reader.get(f"{API}/teams/money").json()

    assert [t["slug"] for t in teams] == ["money", "risk"]
    assert teams[1]["services"] == []
    assert {k: money_body[k] for k in ("slug", "name", "contact", "on_call", "services")} == {
        "slug": "money",
        "name": "Money movement",
        "contact": "#money",
        "on_call": "money-rota",
        "services": [{"slug": "ledger", "status": "passing"}, {"slug": "payments", "status": "critical"}],
    }
    assert teams[0] == money_body
    assert_problem(reader.get(f"{API}/teams/nobody"), 404, "team_not_found")


def _catalog_of(count: int) -> None:
    team = _team(f"team-{count}")
    for n in range(count):
        service = _service(f"svc-{count}-{n}", team=team, tags=["core"])
        Dependency.objects.create(service=service, resource="postgres")
        _instance(service, f"svc-{n}-a:1")
        _instance(service, f"svc-{n}-b:1", silent=MINUTE)
        _checks(service, [(timezone.now() - MINUTE, "passing", 10)])


@pytest.mark.parametrize("params", [{}, {"status": "warning", "tag": "core"}])
def test_the_service_list_reads_in_a_bounded_number_of_queries(reader, django_assert_max_num_queries, params):
    _catalog_of(3)
    reader.get(f"{API}/services", params)  # warm: keys, tokens

    _catalog_of(20)
    with django_assert_max_num_queries(7):
        listed = reader.get(f"{API}/services", params).json()
    with django_assert_max_num_queries(3):
        teams = reader.get(f"{API}/teams").json()

    assert len(listed) == 23
    assert all(s["status"] == "warning" and len(s["instances"]) == 2 for s in listed)
    assert sum(len(t["services"]) for t in teams) == 23
