"""The catalog pages in the admin: who may read them, what each shows (statuses derived on read, drift, what a
critical service takes down), the live fragments, and the overview's bounded number of queries."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.catalog.models import (
    Dependency,
    HealthCheck,
    HealthHour,
    Instance,
    InstanceStatus,
    ObservedCall,
    Service,
    Team,
)
from tests.portal.factories import user_with_role

pytestmark = pytest.mark.django_db

OVERVIEW = "/admin/catalog/overview/"
GRAPH = "/admin/catalog/graph/"
TEAMS = "/admin/catalog/teams/"


def service_url(slug: str) -> str:
    return f"/admin/catalog/services/{slug}/"


PAGES = [OVERVIEW, service_url("ledger"), GRAPH, TEAMS]


def _instance(service: Service, name: str, *, ago: dt.timedelta = dt.timedelta(seconds=2), **fields) -> Instance:
    now = timezone.now()
    return Instance.objects.create(
        service=service,
        instance=name,
        host="web-1",
        pid=4242,
        version=service.version,
        started_at=now - dt.timedelta(hours=1),
        first_heartbeat=now - dt.timedelta(hours=1),
        last_heartbeat=now - ago,
        heartbeats=360,
        **fields,
    )


def _checks(service: Service, *statuses: str, every: dt.timedelta = dt.timedelta(minutes=5)) -> None:
    now = timezone.now()
    HealthCheck.objects.bulk_create(
        [
            HealthCheck(service=service, status=s, http_status=200 if s == "passing" else 503, latency_ms=12,
                        error="" if s == "passing" else "status", checked_at=now - i * every)
            for i, s in enumerate(statuses)
        ]
    )  # fmt: skip


@pytest.fixture
def catalog() -> dict[str, Service]:
    """money owns ledger (passing) and payments (declares ledger, called it; declares fraud-engine, never called
    it); webhooks has no team and calls the ledger without declaring it; risk owns nothing."""
    now = timezone.now()
    money = Team.objects.create(slug="money", name="Money movement", contact="#money", on_call="money-rota")
    Team.objects.create(slug="risk", name="Risk", contact="risk@example.test")
    ledger = Service.objects.create(
        slug="ledger",
        display_name="Ledger",
        description="Double-entry ledger.",
        owner=money,
        tier=1,
        lifecycle="production",
        version="1.4.0",
        base_url="http://ledger.internal:8001",
        health_url="http://ledger.internal:8001/health/ready",
        openapi_url="http://ledger.internal:8001/api/schema",
        health_status="passing",
        last_checked_at=now,
        registered_by="cli_ledger",
        health_interval_seconds=300,  # the checks below, 5 minutes apart, cover each other's gaps
    )
    payments = Service.objects.create(
        slug="payments",
        display_name="Payments",
        owner=money,
        tier=1,
        lifecycle="production",
        version="2.0.1",
        registered_by="cli_payments",
    )
    webhooks = Service.objects.create(slug="webhooks", display_name="Webhooks", registered_by="cli_webhooks")
    Dependency.objects.create(service=payments, target=ledger, target_slug="ledger")
    Dependency.objects.create(service=payments, target_slug="fraud-engine")
    Dependency.objects.create(service=ledger, resource="postgres")
    for caller, calls in (("cli_payments", 40), ("cli_webhooks", 3)):
        ObservedCall.objects.create(callee=ledger, caller_client=caller, calls=calls, first_seen=now, last_seen=now)
    _instance(ledger, "web-1:100:a")
    _instance(ledger, "web-1:90:old", ago=dt.timedelta(days=1), status=InstanceStatus.GONE)
    _instance(payments, "web-2:200:a")
    _instance(webhooks, "web-3:300:a")
    _checks(ledger, "passing", "passing", "critical", "passing")
    return {"ledger": ledger, "payments": payments, "webhooks": webhooks}


@pytest.fixture
def viewer(client):
    client.force_login(user_with_role("viewer"))
    return client


def _status_of(page: str, row_id: str) -> str:
    match = re.search(rf'id="{row_id}".*?data-status="(\w+)"', page, re.S)
    assert match, page[:2000]
    return match.group(1)


# ---------------------------------------------------------------------------------------- access


@pytest.mark.parametrize("url", PAGES)
def test_a_viewer_reads_every_catalog_page_inside_the_admin(catalog, viewer, url):
    response = viewer.get(url)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="header"' in page  # the admin's header and breadcrumbs
    assert 'class="breadcrumbs"' in page
    assert "/static/catalog/live.js" in page
    assert 'data-live data-live-url="' in page
    assert 'data-live-seconds="5"' in page


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_users_are_sent_to_the_login_page(catalog, client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_staff_without_catalog_permissions_are_refused(catalog, client, url):
    client.force_login(user_with_role(None))

    assert client.get(url).status_code == 403


def test_operators_see_the_edit_link_and_viewers_do_not(catalog, client):
    client.force_login(user_with_role("operator"))
    edit = f'href="/admin/catalog/service/{catalog["ledger"].pk}/change/"'

    assert edit in client.get(service_url("ledger")).content.decode()

    client.force_login(user_with_role("viewer"))
    page = client.get(service_url("ledger")).content.decode()
    assert edit not in page
    assert 'id="catalog-edit"' not in page


def test_the_pages_are_linked_from_the_catalog_in_the_admin(catalog, viewer):
    app_index = viewer.get("/admin/catalog/").content.decode()
    assert f'href="{OVERVIEW}"' in app_index
    assert f'href="{GRAPH}"' in app_index
    assert f'href="{TEAMS}"' in app_index

    client_change = viewer.get(f"/admin/catalog/service/{catalog['ledger'].pk}/change/").content.decode()
    assert f'href="{service_url("ledger")}"' in client_change


def test_an_unknown_service_is_a_404(catalog, viewer):
    assert viewer.get(service_url("nope")).status_code == 404


# -------------------------------------------------------------------------------------- overview


def test_the_overview_lists_every_service_with_its_derived_status(catalog, viewer, settings):
    settings.CATALOG_HEARTBEAT_SECONDS = 10
    # payments' only instance stopped heartbeating 40 s ago: critical now, whatever its stored mark says
    Instance.objects.filter(service=catalog["payments"]).update(
        last_heartbeat=timezone.now() - dt.timedelta(seconds=40)
    )

    page = viewer.get(OVERVIEW).content.decode()

    assert _status_of(page, "service-ledger") == "passing"
    assert _status_of(page, "service-payments") == "critical"
    assert _status_of(page, "service-webhooks") == "passing"
    ledger_row = re.search(r'id="service-ledger".*?</tr>', page, re.S).group(0)
    assert f'href="{service_url("ledger")}"' in ledger_row
    assert "Money movement" in ledger_row
    assert "1 of 1 instance heartbeating" in ledger_row  # live / not gone: the gone instance is history
    assert re.search(r'data-role="web"><span class="catalog-role-name">web</span> <a id="process-ledger"', ledger_row)
    # uptime over the observed time: 4 checks 5 minutes apart cover 15 minutes, 5 of them down
    # (the newest check covers the moments until the page is read: 66.66 % or a hair more)
    assert re.search(r"66\.6\d %", ledger_row)
    assert "of the 15 minutes observed in the last 30 days" in ledger_row
    assert "&#10004; passing" in ledger_row  # the status as text, not only a colour
    assert 'id="count-critical"' in page


def test_the_overview_filters_by_team_lifecycle_tier_and_status(catalog, viewer):
    def listed(query: str) -> list[str]:
        page = viewer.get(f"{OVERVIEW}?{query}").content.decode()
        return re.findall(r'<tr id="service-([a-z-]+)"', page)

    assert listed("") == ["ledger", "payments", "webhooks"]
    assert listed("team=money") == ["ledger", "payments"]
    assert listed("team=none") == ["webhooks"]
    assert listed("lifecycle=experimental") == ["webhooks"]
    assert listed("tier=1") == ["ledger", "payments"]
    assert listed("tier=7") == []
    assert listed("status=passing&team=money") == ["ledger", "payments"]
    assert listed("status=critical") == []
    assert "No service matches these filters" in viewer.get(f"{OVERVIEW}?status=critical").content.decode()


def test_an_empty_catalog_says_how_services_get_in(viewer):
    for url in (OVERVIEW, GRAPH, TEAMS):
        page = viewer.get(url).content.decode()
        assert 'id="catalog-empty"' in page, url
        assert "docs/catalog.md" in page


def _overview_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(OVERVIEW).status_code == 200
    return len(queries)


def test_the_overview_reads_a_fixed_number_of_queries_whatever_the_number_of_services(
    viewer, django_assert_max_num_queries
):
    team = Team.objects.create(slug="money", name="Money")

    def add(n: int) -> None:
        for _ in range(n):
            service = Service.objects.create(slug=f"svc-{Service.objects.count()}", display_name="S", owner=team)
            _instance(service, "a")
            _instance(service, "b", ago=dt.timedelta(minutes=5))
            _instance(service, "c", ago=dt.timedelta(days=2), status=InstanceStatus.GONE)
            _checks(service, "passing", "critical")

    add(2)
    viewer.get(OVERVIEW)  # session and permission caches warm
    with_two = _overview_queries(viewer)
    add(8)

    with django_assert_max_num_queries(12):
        page = viewer.get(OVERVIEW).content.decode()

    assert _overview_queries(viewer) == with_two
    assert page.count('<tr id="service-') == 10
    # a live and a silent instance each (the gone ones are not counted): a warning process, a degraded service
    assert page.count("1 of 2 instances heartbeating") == 10
    assert page.count('class="catalog-row-degraded"') == 10


# ------------------------------------------------------------------------------------- fragments


@pytest.mark.parametrize("url", PAGES)
def test_the_fragment_is_only_the_live_region(catalog, viewer, url):
    response = viewer.get(url, {"fragment": "1"})

    assert response.status_code == 200
    assert response["X-Catalog-Fragment"] == "1"
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    fragment = response.content.decode().strip()
    assert fragment.startswith('<div id="catalog-')
    assert "<html" not in fragment
    assert 'id="header"' not in fragment
    assert "data-live" not in fragment.split(">", 1)[0]
    # and it is the same markup the full page holds in its region
    region = re.search(r'data-region="(\w+)"', fragment).group(1)
    assert f'data-region="{region}"' in viewer.get(url).content.decode()


def test_the_fragment_url_keeps_the_filters_and_the_refresh_period_can_be_set(catalog, viewer):
    page = viewer.get(f"{OVERVIEW}?team=money&refresh=1").content.decode()

    assert f'data-live-url="{OVERVIEW}?team=money&amp;fragment=1"' in page
    assert 'data-live-seconds="1"' in page
    assert "data-live " not in viewer.get(f"{OVERVIEW}?refresh=0").content.decode()


# ---------------------------------------------------------------------------------- service page


def test_the_service_page_shows_instances_checks_links_and_drift_both_ways(catalog, viewer):
    page = viewer.get(service_url("ledger")).content.decode()

    assert _status_of(page, "service-status") == "passing"
    assert "Double-entry ledger." in page
    assert 'href="http://ledger.internal:8001/api/docs"' in page
    assert 'href="http://ledger.internal:8001/api/schema"' in page
    # instances: the live one, and the gone one greyed (history)
    assert 'data-instance="web-1:100:a"' in page
    gone = re.search(r'<tr class="catalog-gone" data-instance="web-1:90:old">', page)
    assert gone
    # the health history chart and the recent checks
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="catalog-health-chart"' in page
    assert 'class="bucket bucket-critical"' in page
    checks = re.search(r'id="service-checks".*?</table>', page, re.S).group(0)
    assert re.search(r'<td class="num">503</td>.*?<span title="answered, not with 2xx">status</span>', checks, re.S)
    assert re.search(r"66\.6\d %", page)  # of the 15 minutes observed: see the overview's test
    # the service it is part of, with where to go next
    group = re.search(r'id="service-group".*?id="service-tools".*?</p>', page, re.S).group(0)
    assert 'data-service="ledger"' in group
    assert 'id="group-process-ledger" data-role="web"' in group
    assert 'href="http://ledger.internal:8001/admin/" data-tool="Admin"' in group
    assert 'href="http://ledger.internal:8001/api/docs" data-tool="API docs"' in group
    assert 'data-tool="Audit events"' not in group  # a viewer may not read the audit trail
    # depended on by payments (declared and called) and webhooks (called, not declared)
    incoming = re.search(r'id="service-incoming".*?</table>', page, re.S).group(0)
    assert 'data-other="payments"' in incoming
    assert re.search(r'data-other="webhooks" data-drift="observed_not_declared"', incoming)
    assert "called, not declared" in incoming
    outgoing = re.search(r'id="service-outgoing".*?</table>', page, re.S).group(0)
    assert 'data-other="postgres"' in outgoing


def test_a_declared_dependency_never_called_is_flagged_on_the_callers_page(catalog, viewer):
    page = viewer.get(service_url("payments")).content.decode()

    outgoing = re.search(r'id="service-outgoing".*?</table>', page, re.S).group(0)
    assert re.search(r'data-other="fraud-engine" data-drift="declared_not_observed"', outgoing)
    assert "declared, never called" in outgoing
    assert "(not in the catalog)" in outgoing
    assert "No health URL in its manifest" in page


def test_the_health_history_reads_hourly_roll_ups_for_older_windows(catalog, viewer):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=3)
    HealthHour.objects.create(
        service=catalog["ledger"], hour=hour, passing=200, critical=40, latency_ms_total=2400, latency_count=240
    )

    week = viewer.get(service_url("ledger"), {"range": "7d"}).content.decode()
    day = viewer.get(service_url("ledger")).content.decode()

    assert "Checks in the last 7d<strong>244</strong>" in week  # 240 rolled up + 4 single checks
    assert "(includes hourly roll-ups)" in week
    assert "Checks in the last 24h<strong>4</strong>" in day


# ------------------------------------------------------------------------------------ graph page


def test_the_graph_has_a_node_per_service_flags_drift_and_what_a_critical_service_takes_down(catalog, viewer):
    # the ledger fails its health check: payments and webhooks depend on it
    Service.objects.filter(slug="ledger").update(health_status="critical")

    page = viewer.get(GRAPH).content.decode()

    svg = re.search(r'<svg xmlns="http://www.w3.org/2000/svg" id="catalog-graph-svg".*?</svg>', page, re.S).group(0)
    for slug in ("ledger", "payments", "webhooks", "fraud-engine"):
        assert f'<g id="node-{slug}"' in svg
    # resources are folded into the boxes, and shown as nodes on demand
    assert 'id="resource-postgres"' not in svg
    assert re.search(r'<g id="node-ledger".*?<text class="node-line"[^>]*>postgres</text>', svg, re.S)
    assert 'href="?resources=1"' in page
    with_resources = viewer.get(GRAPH, {"resources": "1"}).content.decode()
    assert 'id="resource-postgres"' in with_resources
    assert re.search(r'<g id="node-ledger" class="[^"]*status-critical', svg)
    assert re.search(r'<g id="node-payments" class="[^"]*node-impacted', svg)
    assert re.search(r'<g id="node-webhooks" class="[^"]*node-impacted', svg)
    assert not re.search(r'<g id="node-ledger" class="[^"]*node-impacted', svg)
    assert re.search(r'<g id="edge-payments--ledger" class="edge edge-ok edge-to-critical"', svg)
    assert re.search(r'<g id="edge-webhooks--ledger" class="[^"]*edge-undeclared[^"]*"[^>]*data-drift', svg)
    assert re.search(r'<g id="edge-payments--fraud-engine" class="[^"]*edge-declared-only', svg)
    assert 'id="legend"' in svg
    # and as text beside the picture
    critical = re.search(r'id="graph-critical".*?</table>', page, re.S).group(0)
    assert 'data-critical="ledger"' in critical
    assert "payments" in critical
    assert "webhooks" in critical
    assert page.count('data-drift="') >= 4  # two edges in the picture and two rows in the drift table


# ------------------------------------------------------------------------------------ teams page


def test_the_teams_page_shows_contacts_on_call_and_each_teams_services(catalog, viewer):
    page = viewer.get(TEAMS).content.decode()

    money = re.search(r'id="team-money".*?</table>', page, re.S).group(0)
    assert "#money" in money
    assert "money-rota" in money
    assert 'data-service="ledger"' in money
    assert 'data-service="payments"' in money
    assert "Owns no service." in re.search(r'id="team-risk".*?</div>', page, re.S).group(0)
    assert 'data-service="webhooks"' in re.search(r'id="team-none".*?</table>', page, re.S).group(0)
