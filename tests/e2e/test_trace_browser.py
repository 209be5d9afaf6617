"""The trace page in a real headless Chromium against the portal under gunicorn.

Two payments, their ledger transaction and the drain that processed them are recorded (``seed_flow``). An auditor
types a request id into the search box in the admin header and sees the timeline: audit events of two services
and the jobs, oldest first, with the gaps and the queued notification marked pending (saved as
``docs/screenshots/trace.png`` when ``ATRIUM_SCREENSHOTS_DIR=docs/screenshots``). From the drain's job page they
follow a carried payment id to its trace; a viewer's trace of the same request holds the jobs only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.browser import log_in, save_screenshot
from tests.harness import AtriumProcess
from tests.portal.factories import user_with_role
from tests.portal.test_trace import DRAIN, seed_flow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AUDITOR, VIEWER = "e2e-trace-auditor", "e2e-trace-viewer"


@pytest.fixture
def recorded(transactional_db: None, settings, tmp_path: Path) -> None:
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    seed_flow()
    user_with_role("auditor", username=AUDITOR)
    user_with_role("viewer", username=VIEWER)


def test_an_auditor_traces_a_request_from_the_header_and_a_payment_from_the_job_page(
    recorded: None, browser: Browser, live_portal: AtriumProcess, tmp_path: Path
):
    base = live_portal.url
    page = log_in(browser, base, AUDITOR)

    # given the admin's index, with the search box in its header
    search = page.locator("#header #trace-search-q")
    expect(search).to_be_visible()

    # when the auditor types a request id there
    search.fill("req_pay1")
    search.press("Enter")

    # then the trace page shows its timeline across services, oldest first, with the pending step marked
    page.wait_for_url(f"{base}/admin/trace/?q=req_pay1")
    rows = page.locator("#trace-timeline tbody tr")
    expect(rows).to_have_count(8)
    expect(rows.first).to_contain_text("payments.payment.created")
    expect(rows.nth(1)).to_contain_text("payments.drain")
    expect(rows.nth(1)).to_contain_text("batch")
    expect(rows.nth(4)).to_contain_text("ledger.transaction.created")
    expect(rows.nth(3).locator(".trace-gap")).to_have_text("+950 ms")
    expect(rows.last).to_contain_text("payments.domain_event")
    expect(rows.last).to_have_attribute("data-pending", "true")
    expect(page.locator("#trace-pending")).to_have_text("still pending")
    expect(page.locator("#trace-objects tr[data-object-id=pay_1]")).to_contain_text("settled")
    save_screenshot(page, "trace", tmp_path)

    # when they open the drain's job page and follow a payment it carried
    page.goto(f"{base}/admin/jobs/tasks/{DRAIN}/")
    carried = page.locator("#task-carried-objects")
    expect(carried).to_contain_text("pay_2")
    carried.get_by_role("link", name="pay_2").click()

    # then the payment's trace: resolved to the request that created it, still screening
    page.wait_for_url(f"{base}/admin/trace/?q=pay_2")
    expect(page.locator("#trace")).to_have_attribute("data-kind", "object")
    expect(page.locator("#trace-requests")).to_contain_text("req_pay2")
    expect(page.locator("#trace-objects tr[data-object-id=pay_2]")).to_contain_text(re.compile(r"screening\s+pending"))
    expect(page.locator("#trace-timeline tbody tr")).to_have_count(3)

    # and an unknown id says so on the same page
    search = page.locator("#header #trace-search-q")
    search.fill("req_nobody_sent")
    search.press("Enter")
    expect(page.locator("#trace-error")).to_contain_text("Nothing is recorded for 'req_nobody_sent'")


def test_a_viewer_traces_the_jobs_only(recorded: None, browser: Browser, live_portal: AtriumProcess):
    base = live_portal.url
    page = log_in(browser, base, VIEWER)

    search = page.locator("#header #trace-search-q")
    search.fill("req_pay1")
    search.press("Enter")

    page.wait_for_url(f"{base}/admin/trace/?q=req_pay1")
    expect(page.locator("#trace-jobs-only")).to_be_visible()
    expect(page.locator("#trace-timeline tbody tr")).to_have_count(2)
    expect(page.locator("#trace-timeline tbody tr[data-kind=audit]")).to_have_count(0)
