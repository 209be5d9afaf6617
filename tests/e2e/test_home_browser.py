"""The portal's home in a real headless Chromium at 1280 px, against the portal and the payments service under
gunicorn, each registered in the catalog by itself.

The portal reads the payments stats over HTTP with its own machine identity (a token from its own token
endpoint); a viewer logs in and lands on the home: both services' status with their admin links, the payments of
the last hour and day by status with amounts per currency, the jobs and tools, nothing wider than the window.
The search box takes a payment id to its trace. Then payments stops: the open home says payments is unavailable,
without a reload, and the rest of it stays. ``docs/screenshots/home.png`` is taken from a real ``make up``; this
test saves its own (``ATRIUM_SCREENSHOTS_DIR``, or the test's temporary directory).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect, sync_playwright

from devtools.infra import free_port
from portal.identity import services as identity
from tests.e2e.browser import CHROMIUM_ARGS, VIEWPORT, log_in, save_screenshot
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url
from tests.portal.factories import user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER = "e2e-home-viewer"
LIVE_TIMEOUT_MS = 30_000


def _insert_payments(payments: AtriumProcess) -> str:
    """Payments of the last minutes and of earlier today, straight into the payments database; one id."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        (1500, "EUR", "settled", now - dt.timedelta(minutes=3)),
        (2500, "EUR", "settled", now - dt.timedelta(minutes=7)),
        (700, "USD", "settled", now - dt.timedelta(minutes=9)),
        (99_00, "EUR", "failed", now - dt.timedelta(minutes=12)),
        (1_234_567, "EUR", "settled", now - dt.timedelta(hours=6)),
        (90_000, "JPY", "rejected", now - dt.timedelta(hours=20)),
    ]
    ids = [f"pay_{uuid.uuid4().hex[:26]}" for _ in rows]
    with psycopg.connect(payments.env["PAYMENTS_DATABASE_URL"], autocommit=True) as conn:
        for pid, (amount, currency, status, at) in zip(ids, rows, strict=True):
            conn.execute(
                "INSERT INTO payments_payment (id, client_id, amount, currency, source_account, destination_account,"
                " description, metadata, status, status_history, ledger_transaction, hold_status, failure_code,"
                " failure_message, attempts, processing_errors, request_id, trace_parent, created_at, updated_at)"
                " VALUES (%s, 'cli_e2e', %s, %s, %s, %s, '', '{}', %s, '[]', '', '', '', '', 0, 0, '', '', %s, %s)",
                [pid, amount, currency, f"acc_s{pid[-6:]}", f"acc_d{pid[-6:]}", status, at, at],
            )
    return ids[0]


@pytest.fixture
def stack(harness: ProcessHarness, transactional_db: None) -> dict[str, AtriumProcess]:
    """The portal (its identity may read payments stats) and payments, each registering itself in the catalog."""
    portal_port, payments_port = free_port(), free_port()
    portal_url, payments_url = f"http://127.0.0.1:{portal_port}", f"http://127.0.0.1:{payments_port}"
    portal_client, portal_secret = identity.client_create(
        name="portal-service", audiences=["payments", "portal"], scopes=["catalog:register", "payments:read"]
    )
    payments_client, payments_secret = identity.client_create(
        name="payments-service", audiences=["portal"], scopes=["catalog:register"]
    )
    user_with_role("viewer", username=VIEWER)
    common = {"ATRIUM_PORTAL_URL": portal_url, "ATRIUM_TOKEN_URL": f"{portal_url}/api/v1/auth/token"}
    portal = harness.web(
        "portal",
        database_url=current_test_database_url(),
        port=portal_port,
        env={
            **common,
            "PORTAL_URL": portal_url,
            "PAYMENTS_URL": payments_url,
            "PORTAL_CLIENT_ID": portal_client.id,
            "PORTAL_CLIENT_SECRET": portal_secret,
        },
    )
    payments = harness.web(
        "payments",
        port=payments_port,
        env={
            **common,
            "JWT_JWKS_URL": f"{portal_url}/.well-known/jwks.json",
            "PAYMENTS_URL": payments_url,
            "PAYMENTS_CLIENT_ID": payments_client.id,
            "PAYMENTS_CLIENT_SECRET": payments_secret,
            "ATRIUM_OUTBOX_RELAY": "off",
        },
    )
    return {"portal": portal, "payments": payments}


def test_a_viewer_lands_on_the_home_and_sees_the_business_then_payments_goes_down(
    stack: dict[str, AtriumProcess], tmp_path: Path, chromium: Path
):
    portal, payments = stack["portal"], stack["payments"]
    base = portal.url or ""
    payment_id = _insert_payments(payments)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            # given a viewer who logs in: they land on the home (refreshing every second for this test)
            page = log_in(browser, base, VIEWER)
            assert page.title() == "Home | Atrium portal"
            page.goto(f"{base}/admin/?refresh=1")

            # then both services show with their status and admin links, once each has registered itself
            for slug in ("portal", "payments"):
                row = page.locator(f"#home-service-{slug}")
                expect(row).to_contain_text("passing", timeout=LIVE_TIMEOUT_MS)
            expect(page.locator("#home-admins").get_by_role("link", name="Payments")).to_have_attribute(
                "href", f"{payments.url}/admin/"
            )
            # and the payments of the last hour and day, by status, amounts per currency in major units
            expect(page.locator("#home-payments-total-1")).to_contain_text("4 created in the last hour")
            expect(page.locator("#home-payments-total-2")).to_contain_text("6 created in the last day")
            settled = page.locator("#home-payments-settled")
            expect(settled).to_contain_text("40.00 EUR")
            expect(settled).to_contain_text("7.00 USD")
            expect(settled).to_contain_text("12,385.67 EUR")
            expect(page.locator("#home-payments-rejected")).to_contain_text("90,000 JPY")
            expect(page.locator("#home-payments-failed")).to_contain_text("99.00 EUR")
            # and the jobs tile and every tool it may use; no audit tile for a viewer
            expect(page.locator("#home-jobs")).to_contain_text("failed in the last hour")
            expect(page.locator("#home-tools").get_by_role("link")).to_have_text(
                ["Catalog overview", "Dependency graph", "Job dashboard", "Schedule", "Trace", "Every model"]
            )
            expect(page.locator("#home-audit")).to_have_count(0)
            # and nothing is wider than the window, nor cut off
            assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
            save_screenshot(page, "home", tmp_path)

            # and each process serves a favicon
            for url in (base, payments.url):
                icon = page.request.get(f"{url}/favicon.ico")
                assert icon.status == 200
                assert icon.headers["content-type"] == "image/vnd.microsoft.icon"

            # when they search for a payment id, they land on its trace
            page.fill("#home-search-q", payment_id)
            page.locator("#home-search").get_by_role("button", name="Trace").click()
            page.wait_for_url(f"{base}/admin/trace/?q={payment_id}")

            # when payments stops while the home is open
            page.goto(f"{base}/admin/?refresh=1")
            expect(page.locator("#home-payments-settled")).to_be_visible()
            payments.stop()

            # then the tile says payments is unavailable, without a reload, and the rest of the page stays
            expect(page.locator("#home-payments-down")).to_contain_text(
                "Payments is unavailable", timeout=LIVE_TIMEOUT_MS
            )
            expect(page.locator("#home-payments-settled")).to_have_count(0)
            expect(page.locator("#home-service-portal")).to_be_visible()
            expect(page.locator("[data-live-status]")).not_to_have_class("catalog-live-status catalog-live-failing")
            save_screenshot(page, "home-payments-down", tmp_path)
        finally:
            browser.close()
