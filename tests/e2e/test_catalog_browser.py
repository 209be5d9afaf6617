"""The catalog pages in a real headless Chromium against the portal under gunicorn.

A viewer logs in through the admin login form, goes from the admin to the catalog overview — services, each with
its processes by role (web, workers, relay, beat, monitor) — a service's page, a worker's page, the dependency graph
between services (resources folded into the boxes, shown on demand) and the teams; then a payments worker stops
heartbeating (payments turns degraded) and the ledger's health server goes down (the ledger turns critical), and
the overview that is open shows both, without a reload. An operator gets an Edit link on a service's page, a
viewer does not. Each page is saved as a PNG (``ATRIUM_SCREENSHOTS_DIR``, or the test's temporary directory) for
inspection only: the fixture is small and made up, so ``docs/screenshots/catalog-*.png`` are taken from a real
``make up`` instead (docs/catalog.md, *Screenshots*).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from portal.catalog.health import health_poll
from portal.catalog.models import Dependency, HealthCheck, Instance, InstanceStatus, ObservedCall, Service, Team
from portal.catalog.services import instance_heartbeat
from tests.e2e.browser import in_thread, log_in, save_screenshot
from tests.harness import AtriumProcess
from tests.portal.factories import user_with_role
from tests.servers import LocalServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER, OPERATOR = "e2e-catalog-viewer", "e2e-catalog-operator"


@pytest.fixture
def health_servers() -> Iterator[dict[str, LocalServer]]:
    """The ledger's health endpoint (stopped by the test) and one that stays up for the other services."""
    ok: Any = lambda seen: (200, {"Content-Type": "application/json"}, b'{"status": "ok"}')  # noqa: E731
    servers = {"ledger": LocalServer(ok), "steady": LocalServer(ok)}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _history(service: Service, *, critical_from: int = -1, critical_to: int = -1, warning_at: tuple = ()) -> None:
    """A check every 5 minutes for the last 24 h (the newest is the live poll's), some of them failing."""
    now = timezone.now()
    checks = []
    for n in range(1, 288):
        status = "passing"
        if critical_from <= n <= critical_to:
            status = "critical"
        elif n in warning_at:
            status = "warning"
        checks.append(
            HealthCheck(
                service=service,
                status=status,
                http_status=None if status == "critical" else 200,
                latency_ms=None if status == "critical" else 8 + (n * 7) % 23 + (900 if status == "warning" else 0),
                error="refused" if status == "critical" else "",
                checked_at=now - dt.timedelta(minutes=5 * n),
            )
        )
    HealthCheck.objects.bulk_create(checks)


@pytest.fixture
def catalog(transactional_db: None, health_servers: dict[str, LocalServer]) -> dict[str, Service]:
    """A small Atrium: the portal, the ledger and payments (money), webhooks (integrations), reporting (no
    team, never checked), each with instances and a day of health history; declared and observed
    dependencies, with drift both ways. Every service with a health URL is polled once: passing."""
    now = timezone.now()
    money = Team.objects.create(slug="money", name="Money movement", contact="#money-movement", on_call="money-rota")
    platform = Team.objects.create(slug="platform", name="Platform", contact="#platform", on_call="platform-rota")
    integrations = Team.objects.create(slug="integrations", name="Integrations", contact="integrations@atrium.test")
    Team.objects.create(slug="risk", name="Risk", contact="#risk")
    steady = health_servers["steady"].url

    def service(slug: str, name: str, **fields: Any) -> Service:
        return Service.objects.create(slug=slug, display_name=name, registered_by=f"cli_{slug}", **fields)

    portal = service(
        "portal", "Atrium portal", owner=platform, tier=1, lifecycle="production", version="0.9.0",
        description="Identity provider, service catalog, audit trail and job dashboard.",
        base_url="http://127.0.0.1:8000", health_url=f"{steady}/portal/health/ready",
    )  # fmt: skip
    ledger = service(
        "ledger", "Ledger", owner=money, tier=1, lifecycle="production", version="1.4.0",
        description="Double-entry ledger: accounts, transactions, postings and balances as of any time.",
        base_url="http://127.0.0.1:8001", health_url=f"{health_servers['ledger'].url}/health/ready",
        openapi_url="http://127.0.0.1:8001/api/schema", docs_url="https://docs.atrium.test/ledger",
        repository_url="https://git.atrium.test/atrium", queues=["ledger"], tags=["money"],
    )  # fmt: skip
    payments = service(
        "payments", "Payments", owner=money, tier=1, lifecycle="production", version="2.0.1",
        description="Payment intents, holds, captures and reconciliation against the ledger.",
        base_url="http://127.0.0.1:8002", health_url=f"{steady}/payments/health/ready", queues=["payments"],
    )  # fmt: skip
    webhooks = service(
        "webhooks", "Webhooks", owner=integrations, tier=2, lifecycle="experimental", version="0.3.0",
        health_url=f"{steady}/webhooks/health/ready",
    )  # fmt: skip
    reporting = service("reporting", "Reporting", tier=3, lifecycle="deprecated", version="0.1.0")
    declared = [
        (payments, "ledger"), (payments, "portal"), (ledger, "portal"), (webhooks, "payments"),
        (payments, "fraud-engine"), (reporting, "ledger"),
    ]  # fmt: skip
    by_slug = {s.slug: s for s in (portal, ledger, payments, webhooks, reporting)}
    for source, target in declared:
        Dependency.objects.create(service=source, target=by_slug.get(target), target_slug=target)
    for source, resource in [(ledger, "postgres"), (payments, "postgres"), (payments, "queue:payments")]:
        Dependency.objects.create(service=source, resource=resource)
    observed = [("ledger", "payments", 18_240), ("portal", "payments", 312), ("portal", "ledger", 96)]
    observed += [("payments", "webhooks", 1_204), ("ledger", "webhooks", 37)]  # the last one is not declared
    for callee, caller, calls in observed:
        ObservedCall.objects.create(
            callee=by_slug[callee], caller_client=f"cli_{caller}", calls=calls, first_seen=now, last_seen=now
        )
    # the processes of portal, ledger and payments: workers per queue, relays, beat and the job monitor
    processes = [
        ("worker-portal", "portal", "worker", ["portal"]), ("worker-audit", "portal", "worker", ["audit"]),
        ("relay-portal", "portal", "relay", []), ("beat", "portal", "beat", []),
        ("jobs-monitor", "portal", "monitor", []),
        ("worker-ledger", "ledger", "worker", ["ledger"]), ("relay-ledger", "ledger", "relay", []),
        ("worker-payments", "payments", "worker", ["payments"]), ("relay-payments", "payments", "relay", []),
    ]  # fmt: skip
    for slug, part_of, role, queues in processes:
        entry = service(slug, slug, part_of=part_of, role=role, queues=queues, owner=by_slug[part_of].owner, tier=1)
        Dependency.objects.create(service=entry, target=by_slug[part_of], target_slug=part_of)
        for resource in ("postgres", "redis"):
            Dependency.objects.create(service=entry, resource=resource)
        instance_heartbeat(slug=slug, instance=f"{slug}-1:5000", client_id=None, host="app-1", pid=5000)
    for slug, count in (("portal", 2), ("ledger", 2), ("payments", 3), ("webhooks", 1)):
        for n in range(count):
            instance_heartbeat(
                slug=slug, instance=f"{slug}-{n + 1}:{4100 + n}", client_id=None, host=f"app-{n + 1}",
                pid=4100 + n, version=by_slug[slug].version, started_at=now - dt.timedelta(hours=5 - n),
            )  # fmt: skip
    Instance.objects.create(
        service=ledger, instance="ledger-1:3900", host="app-1", pid=3900, version="1.3.2",
        started_at=now - dt.timedelta(days=2), first_heartbeat=now - dt.timedelta(days=2),
        last_heartbeat=now - dt.timedelta(hours=5), heartbeats=17_000, status=InstanceStatus.GONE,
    )  # fmt: skip
    _history(ledger, critical_from=70, critical_to=74)
    _history(payments, warning_at=(30, 31, 150))
    _history(portal)
    _history(webhooks, critical_from=200, critical_to=230)

    counts = health_poll()

    assert counts["checked"] == 4
    assert counts.get("passing") == 4, counts
    return by_slug


@pytest.fixture
def users(transactional_db: None) -> None:
    user_with_role("viewer", username=VIEWER)
    user_with_role("operator", username=OPERATOR)


def status_cell(page: Page, slug: str) -> Any:
    return page.locator(f"#service-{slug} .catalog-service-status")


def test_a_viewer_reads_the_catalog_and_sees_the_ledger_turn_critical_without_a_reload(
    catalog: dict[str, Service],
    users: None,
    browser: Browser,
    live_portal: AtriumProcess,
    health_servers: dict[str, LocalServer],
    tmp_path: Path,
):
    base = live_portal.url
    page = log_in(browser, base, VIEWER)

    # given the viewer on the admin index, they reach the overview through the catalog's own page
    page.locator("#content-main").get_by_role("link", name="Service catalog").click()
    page.wait_for_url(f"{base}/admin/catalog/")
    page.locator("#catalog-pages").get_by_role("link", name="Overview").click()
    page.wait_for_url(f"{base}/admin/catalog/overview/")

    # then every service, not every process, is listed with its status as text, its processes by role
    expect(page.locator("#catalog-services > tbody > tr")).to_have_count(5)
    for slug in ("portal", "ledger", "payments", "webhooks"):
        expect(status_cell(page, slug)).to_have_text("\u2714 passing")
    expect(status_cell(page, "reporting")).to_have_text("? unknown")
    expect(page.locator("#service-worker-ledger")).to_have_count(0)  # a process is not a service
    ledger_row = page.locator("#service-ledger")
    expect(ledger_row).to_contain_text("Money movement")
    expect(ledger_row.locator("li[data-role]")).to_have_count(3)
    expect(ledger_row.locator("li[data-role=worker]")).to_contain_text("worker-ledger")
    portal_roles = page.locator("#service-portal li[data-role]")
    expect(portal_roles).to_have_text(
        [
            re.compile(r"^web"),
            re.compile(r"^worker"),
            re.compile(r"^relay"),
            re.compile(r"^beat"),
            re.compile("^monitor"),
        ]
    )
    expect(page.locator("#service-portal li[data-role=worker] a")).to_have_count(2)
    expect(ledger_row).to_contain_text("observed in the last 30 days")
    expect(page.locator("#count-passing")).to_contain_text("4")

    # when they open the ledger
    ledger_row.get_by_role("link", name="Ledger", exact=True).click()
    page.wait_for_url(f"{base}/admin/catalog/services/ledger/")
    expect(page.locator("#service-status")).to_have_text("\u2714 passing")
    instances = page.locator("#service-instances tbody tr")
    expect(instances).to_have_count(3)
    expect(page.locator("#service-instances tr.catalog-gone")).to_contain_text("ledger-1:3900")
    expect(page.locator("#catalog-health-chart")).to_be_visible()
    expect(page.locator("#catalog-health-chart .bucket-critical").first).to_be_attached()
    expect(page.locator("#service-links").get_by_role("link", name="API docs")).to_have_attribute(
        "href", "http://127.0.0.1:8001/api/docs"
    )
    expect(page.locator("#service-incoming tr[data-other=webhooks]")).to_contain_text("called, not declared")
    expect(page.locator("#catalog-edit")).to_have_count(0)  # a viewer edits nothing
    expect(page.locator("#group-processes tbody tr")).to_have_count(3)
    expect(page.locator("#service-tools").get_by_role("link", name="Admin")).to_have_attribute(
        "href", "http://127.0.0.1:8001/admin/"
    )
    expect(page.locator("#service-tools").get_by_role("link", name="Tasks: ledger queue")).to_have_attribute(
        "href", "/admin/jobs/tasks/?queue=ledger"
    )
    save_screenshot(page, "catalog-service", tmp_path)

    # a worker's page says which service it is part of, and leads back to it
    page.locator("#group-processes").get_by_role("link", name="worker-ledger", exact=True).click()
    page.wait_for_url(f"{base}/admin/catalog/services/worker-ledger/")
    expect(page.locator("#service-group h2")).to_contain_text("Part of the service Ledger")
    page.locator("#service-group h2").get_by_role("link", name="Ledger", exact=True).click()
    page.wait_for_url(f"{base}/admin/catalog/services/ledger/")

    # and the dependency graph
    page.locator(".catalog-nav").get_by_role("link", name="Dependency graph").click()
    page.wait_for_url(f"{base}/admin/catalog/graph/")
    # services, not processes: six boxes; the resources are folded into them
    expect(page.locator("#catalog-graph-svg .node-service")).to_have_count(6)
    for slug in ("portal", "ledger", "payments", "webhooks", "reporting", "fraud-engine"):
        expect(page.locator(f"#node-{slug}")).to_be_visible()
    expect(page.locator("#node-worker-ledger")).to_have_count(0)
    expect(page.locator("#node-ledger .node-line").first).to_have_text("web \u00b7 worker \u00b7 relay")
    expect(page.locator("#node-ledger")).to_contain_text("postgres \u00b7 redis")
    expect(page.locator("#resource-postgres")).to_have_count(0)
    expect(page.locator("#graph-summary")).to_contain_text("6 services (14 processes)")
    expect(page.locator("#edge-webhooks--ledger")).to_have_attribute("data-drift", "observed_not_declared")
    expect(page.locator("#edge-payments--fraud-engine")).to_have_attribute("data-drift", "declared_not_observed")
    # boxes do not overlap on the page as drawn
    boxes = page.locator("#catalog-graph-svg .node-service rect:not(.impact-outline)").evaluate_all(
        "rects => rects.map(r => { const b = r.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; })"
    )
    assert len(boxes) == 6
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    # the resources, on demand
    page.locator("#graph-resources-toggle").click()
    page.wait_for_url(f"{base}/admin/catalog/graph/?resources=1")
    expect(page.locator("#resource-postgres")).to_be_visible()
    expect(page.locator("#edge-ledger--resource-postgres")).to_be_attached()
    page.locator("#graph-resources-toggle").click()
    page.wait_for_url(f"{base}/admin/catalog/graph/?")

    # and the teams
    page.locator(".catalog-nav").get_by_role("link", name="Teams").click()
    page.wait_for_url(f"{base}/admin/catalog/teams/")
    money = page.locator("#team-money")
    expect(money).to_contain_text("money-rota")
    expect(money.locator("tr[data-service]")).to_have_count(2)
    expect(page.locator("#team-none")).to_contain_text("Reporting")
    save_screenshot(page, "catalog-teams", tmp_path)

    # when a payments worker stops heartbeating, on an overview left open
    page.goto(f"{base}/admin/catalog/overview/?refresh=1")
    expect(status_cell(page, "ledger")).to_have_text("\u2714 passing")
    page.evaluate("window.catalogNotReloaded = true")
    in_thread(
        lambda: Instance.objects.filter(service__slug="worker-payments").update(
            last_heartbeat=timezone.now() - dt.timedelta(minutes=5)
        )
    )

    # then payments turns degraded by itself, the worker named
    expect(status_cell(page, "payments")).to_have_text("\u25b2 degraded", timeout=10_000)
    expect(page.locator("#service-payments")).to_contain_text("down: worker-payments")
    expect(page.locator("#process-worker-payments")).to_have_attribute("data-status", "critical")

    # when the ledger's health server goes down and the next poll finds it
    health_servers["ledger"].stop()
    counts = in_thread(lambda: health_poll(services=[Service.objects.get(slug="ledger")]))
    assert counts.get("critical") == 1, counts

    # then the badge turns critical by itself, and the page was not reloaded
    expect(status_cell(page, "ledger")).to_have_text("\u2716 critical", timeout=10_000)
    expect(page.locator("#count-critical")).to_contain_text("1")
    assert page.evaluate("window.catalogNotReloaded") is True
    expect(page.locator("[data-live-status]")).to_contain_text("last update")
    save_screenshot(page, "catalog-overview", tmp_path)

    # and the graph shows who depends on it
    page.goto(f"{base}/admin/catalog/graph/")
    expect(page.locator("#node-ledger")).to_have_attribute("data-status", "critical")
    for slug in ("payments", "webhooks", "reporting"):
        expect(page.locator(f"#node-{slug}")).to_have_class(re.compile(r"\bnode-impacted\b"))
    expect(page.locator("#edge-payments--ledger")).to_have_class("edge edge-ok edge-to-critical")
    expect(page.locator("#graph-critical tr[data-critical=ledger]")).to_contain_text("payments")
    save_screenshot(page, "catalog-graph", tmp_path)


def test_an_operator_gets_an_edit_link_and_the_admin_links_back(
    catalog: dict[str, Service], users: None, browser: Browser, live_portal: AtriumProcess
):
    base = live_portal.url
    page = log_in(browser, base, OPERATOR)

    page.goto(f"{base}/admin/catalog/services/payments/")
    edit = page.locator("#catalog-edit")
    expect(edit).to_have_text("Edit")
    edit.click()
    page.wait_for_url(f"{base}/admin/catalog/service/{catalog['payments'].pk}/change/")
    expect(page.locator("#id_display_name")).to_have_value("Payments")

    page.locator("#catalog-view-page").click()
    page.wait_for_url(f"{base}/admin/catalog/services/payments/")
    expect(page.locator("#service-outgoing tr[data-other=fraud-engine]")).to_contain_text("declared, never called")
