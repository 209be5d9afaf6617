"""Payments the risk service marked for review, decided in the payments admin in a real headless Chromium: the portal
(OpenID Connect provider) and the payments service under gunicorn, people signing in at the portal (docs/sso.md),
payments seeded in ``review`` in the payments database by its own models.

An operator sees the risk score and reasons on a payment's page, approves one with a reason (it goes on to
``processing``) and rejects another (``rejected``, ``risk_review_rejected``); each decision lands in the database
and in the payments outbox's audit events under the operator's portal identity. A viewer sees the same page without
the Approve and Reject buttons, and the review form refuses them (403).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser import in_thread, log_in, save_screenshot
from tests.e2e.service_admin import ServiceAdmin, service_admin_start, sso_application
from tests.harness import AtriumProcess, ProcessHarness
from tests.portal.factories import user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CLIENT_ID = "e2e-payments-review-admin"
CLIENT_SECRET = "e2e-payments-review-admin-secret-" + "z" * 20

# Run by the payments service's own manage.py: two payments the risk service sent to review.
SEED = r"""
import json
from django.utils import timezone
from services.payments.models import Payment
now = timezone.now().isoformat()
made = []
for amount, reasons, score in ((250000, ["amount_high"], 60), (90000, ["new_payee", "amount_outlier"], 55)):
    made.append(Payment.objects.create(
        client_id="cli_merchant", amount=amount, currency="EUR", source_account="acc_src_browser",
        destination_account="acc_dst_browser", status="review", risk_decision="review", risk_score=score,
        risk_reasons=reasons, risk_assessment_id="rsk_browser%d" % score,
        status_history=[{"status": s, "at": now} for s in ("created", "screening", "review")]).id)
print(json.dumps({"approve": made[0], "reject": made[1]}))
"""


@pytest.fixture(scope="module")
def stack(live_portal: AtriumProcess, module_harness: ProcessHarness) -> ServiceAdmin:
    return service_admin_start(
        "payments", live_portal, module_harness, seed=SEED, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )


@pytest.fixture
def sso_client(stack: ServiceAdmin, transactional_db: None) -> None:
    sso_application(name="payments-admin", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, service_url=stack.url)


def _open(page: Page, stack: ServiceAdmin, path: str) -> None:
    page.goto(f"{stack.url}{path}")
    assert page.url.startswith(f"{stack.url}{path}"), (page.url, page.content()[:3000])


def test_an_operator_approves_and_rejects_payments_in_review_and_a_viewer_cannot(
    stack: ServiceAdmin, sso_client: None, browser: Browser, tmp_path: Path
):
    ids = stack.ids
    operator = in_thread(lambda: user_with_role("operator"))
    page = log_in(browser, stack.portal_url, operator.username)

    # the payment's page: in review, with the risk service's score and reasons
    _open(page, stack, f"/admin/payments/payment/{ids['approve']}/change/")
    expect(page.locator(".field-status")).to_contain_text("Review")
    expect(page.locator(".field-risk_score")).to_contain_text("60")
    expect(page.locator(".field-risk_reasons")).to_contain_text("amount_high")
    save_screenshot(page, "payments-review", tmp_path)

    # approve it with a reason: it goes on to processing (the drain takes it to the ledger)
    page.locator("[data-action=approve]").click()
    expect(page.locator("#content-main")).to_contain_text("Risk score 60: amount_high")
    page.fill("textarea[name=reason]", "Known customer, invoice checked")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".messagelist")).to_contain_text("Approved: it goes on to the ledger.")
    expect(page.locator(".field-status")).to_contain_text("Processing")
    expect(page.locator("[data-action=approve]")).to_have_count(0)  # nothing left to decide
    assert stack.sql("SELECT status FROM payments_payment WHERE id = %s", [ids["approve"]]) == [("processing",)]
    (approved,) = stack.audited("payments.payment.review_approved")
    assert approved["object"]["id"] == ids["approve"]
    assert approved["actor"]["type"] == "user"
    assert operator.username in approved["actor"]["display"] + approved["actor"]["id"]
    assert "Known customer, invoice checked" in json.dumps(approved["metadata"])

    # reject the other: rejected, risk_review_rejected, the reason its failure message
    _open(page, stack, f"/admin/payments/payment/{ids['reject']}/change/")
    page.locator("[data-action=reject]").click()
    page.fill("textarea[name=reason]", "Payee not known to the customer")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".messagelist")).to_contain_text("Rejected.")
    rows = stack.sql(
        "SELECT status, failure_code, failure_message FROM payments_payment WHERE id = %s", [ids["reject"]]
    )
    assert rows[0][:2] == ("rejected", "risk_review_rejected")
    assert "Payee not known to the customer" in rows[0][2]
    (rejected,) = stack.audited("payments.payment.review_rejected")
    assert rejected["object"]["id"] == ids["reject"]
    assert rejected["actor"]["type"] == "user"


def test_a_viewer_sees_a_payment_in_review_without_the_decision_buttons(
    stack: ServiceAdmin, sso_client: None, browser: Browser
):
    waiting = stack.sql(
        "INSERT INTO payments_payment (id, client_id, amount, currency, source_account, destination_account, "
        "description, metadata, status, status_history, ledger_transaction, hold_status, failure_code, "
        "failure_message, attempts, processing_errors, request_id, trace_parent, created_at, updated_at, "
        "lease_owner, risk_decision, risk_score, risk_assessment_id, risk_reasons) "
        "VALUES ('pay_viewer_browser', 'cli_merchant', 5000, 'EUR', 'acc_a', 'acc_b', '', '{}', 'review', '[]', '', "
        "'', '', '', 0, 0, '', '', now(), now(), '', 'review', 50, 'rsk_viewer', '[\"amount_high\"]') "
        "ON CONFLICT (id) DO NOTHING RETURNING id"
    )
    assert waiting == [("pay_viewer_browser",)]
    viewer = in_thread(lambda: user_with_role("viewer"))
    page = log_in(browser, stack.portal_url, viewer.username)

    _open(page, stack, "/admin/payments/payment/pay_viewer_browser/change/")
    expect(page.locator(".field-status")).to_contain_text("Review")
    expect(page.locator("[data-action=approve]")).to_have_count(0)
    expect(page.locator("[data-action=reject]")).to_have_count(0)
    # and the form itself refuses them, even reached by its URL
    response = page.goto(f"{stack.url}/admin/payments/payment/pay_viewer_browser/review/approve/")
    assert response is not None
    assert response.status == 403
    assert stack.sql("SELECT status FROM payments_payment WHERE id = 'pay_viewer_browser'") == [("review",)]
