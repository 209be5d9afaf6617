"""The webhooks admin in a real headless Chromium: the portal (OpenID Connect provider) and the webhooks service under
gunicorn, people signing in at the portal (docs/sso.md), rows seeded in the webhooks database by its own models.

An operator sees the endpoints with their success rate and last error, opens a message, its deliveries and its
attempts with the receiver's answer, resends it, disables an endpoint with a reason, enables it and asks for a
recovery: each action lands in the database and in the webhooks outbox's audit events under the operator's portal
identity. A viewer reads the same pages without a single action button, and a change posted anyway (with a valid
CSRF token) is refused 403. The pages are saved as screenshots (``ATRIUM_SCREENSHOTS_DIR``, else the test's
temporary directory; ``./bin/atrium screenshots`` takes the docs' pictures from a real ``make up``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser import in_thread, log_in, save_screenshot
from tests.e2e.service_admin import ServiceAdmin, service_admin_start, sso_application
from tests.harness import AtriumProcess, ProcessHarness
from tests.portal.factories import user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CLIENT_ID = "e2e-webhooks-admin"
CLIENT_SECRET = "e2e-webhooks-admin-secret-" + "y" * 20

# Run by the webhooks service's own manage.py (its settings, its models, its secret key): two endpoints, one with
# three successes and a 503 in the last 24 hours, one disabled; a payment's message delivered to the first.
SEED = r"""
import datetime as dt, json
from django.utils import timezone
from services.webhooks import secrets
from services.webhooks.models import Attempt, Delivery, Endpoint, Message
now = timezone.now()
good = Endpoint.objects.create(
    url="https://merchant.example.com/hooks/atrium", description="Merchant's receiver", event_types=["payment.*"],
    channels=["acc_merchant"], secret=secrets.encrypt(secrets.secret_new()), last_error="status", last_status=503,
    last_success_at=now - dt.timedelta(minutes=3))
gone = Endpoint.objects.create(
    url="https://old.example.com/webhooks", event_types=["*"], secret=secrets.encrypt(secrets.secret_new()),
    enabled=False, disabled_reason="gone", disabled_at=now - dt.timedelta(hours=2))
data = {"id": "pay_browser1", "status": "settled", "amount": 2500, "currency": "EUR"}
body = json.dumps({"type": "payment.settled", "timestamp": now.isoformat(), "data": data}, separators=(",", ":"))
message = Message.objects.create(event_id="evt_browser1", type="payment.settled", channels=["acc_merchant"],
    payload=data, body=body, occurred_at=now, source="payments", object_id="pay_browser1")
delivery = Delivery.objects.create(message=message, endpoint=good, msg_seq=message.seq, state="failed", attempts=4,
    last_status=503, last_error="status")
answers = [(200, "", '{"received": true}'), (200, "", "ok"), (200, "", "ok"),
           (503, "status", "upstream busy: retry in a minute")]
for number, (status, error, text) in enumerate(answers, start=1):
    Attempt.objects.create(delivery=delivery, message_id=message.id, endpoint_id=good.id, number=number,
        at=now - dt.timedelta(minutes=4 * (5 - number)), duration_ms=40 + number, status_code=status,
        response_body=text, error=error)
print(json.dumps({"endpoint": good.id, "gone": gone.id, "message": message.id, "delivery": delivery.id}))
"""


@pytest.fixture(scope="module")
def stack(live_portal: AtriumProcess, module_harness: ProcessHarness) -> ServiceAdmin:
    """The webhooks service under gunicorn signing people in at the live portal, its database seeded."""
    return service_admin_start(
        "webhooks", live_portal, module_harness, seed=SEED, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )


@pytest.fixture
def sso_client(stack: ServiceAdmin, transactional_db: None) -> None:
    """The webhooks admin's client at the portal, as ``demo_setup`` makes it."""
    sso_application(name="webhooks-admin", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, service_url=stack.url)


def _open(page: Page, stack: ServiceAdmin, path: str) -> None:
    page.goto(f"{stack.url}{path}")
    assert page.url.startswith(f"{stack.url}{path.split('?')[0]}"), (page.url, page.content()[:3000])


def test_an_operator_reads_resends_disables_enables_and_recovers(
    stack: ServiceAdmin, sso_client: None, browser: Browser, tmp_path: Path
):
    ids = stack.ids
    operator = in_thread(lambda: user_with_role("operator"))
    page = log_in(browser, stack.portal_url, operator.username)

    # the endpoints, signed in through the portal: the success rate over 24 h and the last error
    _open(page, stack, "/admin/webhooks/endpoint/")
    expect(page.locator("#site-name")).to_have_text("Atrium webhooks admin")
    good = page.locator("#result_list tbody tr", has_text="merchant.example.com")
    expect(good.locator(".wh-rate")).to_contain_text("75.0 %")
    expect(good).to_contain_text("status · HTTP 503")
    expect(page.locator("#result_list tbody tr", has_text="old.example.com")).to_contain_text("disabled: gone")
    save_screenshot(page, "webhooks-endpoints", tmp_path)

    # a message with its deliveries, then its attempts with the receiver's answers
    _open(page, stack, f"/admin/webhooks/message/{ids['message']}/change/")
    expect(page.locator("h1")).to_have_text("View message")
    deliveries = page.locator(".inline-group")
    expect(deliveries).to_contain_text("merchant.example.com")
    expect(deliveries).to_contain_text("failed")
    expect(page.locator(".field-body_shown pre")).to_contain_text('"pay_browser1"')
    save_screenshot(page, "webhooks-message", tmp_path)
    deliveries.get_by_role("link", name="attempts and answers").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(4)
    expect(page.locator("#result_list")).to_contain_text("upstream busy: retry in a minute")
    save_screenshot(page, "webhooks-attempts", tmp_path)
    page.locator("#result_list tbody tr", has_text="upstream busy").locator("th a, td a").first.click()
    expect(page.locator(".field-response_shown pre")).to_have_text("upstream busy: retry in a minute")

    # resend the message to the endpoint
    _open(page, stack, f"/admin/webhooks/message/{ids['message']}/change/")
    page.locator("[data-action=resend]").click()
    page.select_option("select[name=endpoint]", ids["endpoint"])
    page.get_by_role("button", name="Resend").click()
    expect(page.locator(".messagelist")).to_contain_text(f"Resent to {ids['endpoint']}")
    assert stack.sql("SELECT state, attempts FROM webhooks_delivery WHERE id = %s", [ids["delivery"]]) == [
        ("pending", 0)
    ]

    # disable the endpoint with a reason, then enable it again
    _open(page, stack, f"/admin/webhooks/endpoint/{ids['endpoint']}/change/")
    page.locator("[data-action=disable]").click()
    page.fill("input[name=reason]", "merchant migrating their receiver")
    page.get_by_role("button", name="Disable").click()
    expect(page.locator(".messagelist")).to_contain_text("Disabled: merchant migrating their receiver")
    expect(page.locator(".field-state")).to_contain_text("disabled: merchant migrating their receiver")
    save_screenshot(page, "webhooks-endpoint", tmp_path)
    page.locator("[data-action=enable]").click()
    page.get_by_role("button", name="Enable").click()
    expect(page.locator(".messagelist")).to_contain_text("Enabled")
    expect(page.locator(".field-state")).to_contain_text("enabled")
    assert stack.sql("SELECT enabled, disabled_reason FROM webhooks_endpoint WHERE id = %s", [ids["endpoint"]]) == [
        (True, "")
    ]

    # recover it since the (prefilled) time a day ago
    page.locator("[data-action=recover]").click()
    page.get_by_role("button", name="Recover").click()
    expect(page.locator(".messagelist")).to_contain_text("requested since")
    assert stack.sql("SELECT count(*) FROM webhooks_recovery WHERE endpoint_id = %s", [ids["endpoint"]]) == [(1,)]

    # and each action is audited with the operator's portal identity (the service's event and the admin's entry)
    for action in (
        "webhooks.message.resent",
        "webhooks.endpoint.disabled",
        "webhooks.endpoint.enabled",
        "webhooks.recovery.requested",
    ):
        (event,) = stack.audited(action)
        assert event["actor"] == {"type": "user", "id": str(operator.pk), "display": operator.username}, action
    assert stack.audited("webhooks.endpoint.disabled")[0]["metadata"]["reason"] == "merchant migrating their receiver"
    assert len(stack.audited("webhooks.admin.change")) == 4


def test_a_viewer_reads_without_a_single_action_and_is_refused_when_posting(
    stack: ServiceAdmin, sso_client: None, browser: Browser
):
    ids = stack.ids
    viewer = in_thread(lambda: user_with_role("viewer"))
    page = log_in(browser, stack.portal_url, viewer.username)

    # the same pages, read-only: no action buttons, no bulk action
    _open(page, stack, "/admin/webhooks/endpoint/")
    expect(page.locator("#result_list")).to_contain_text("merchant.example.com")
    assert page.locator("select[name=action] option[value=enable_selected]").count() == 0
    for path in (
        f"/admin/webhooks/endpoint/{ids['endpoint']}/change/",
        f"/admin/webhooks/endpoint/{ids['gone']}/change/",
        f"/admin/webhooks/message/{ids['message']}/change/",
    ):
        _open(page, stack, path)
        expect(page.locator("h1")).to_contain_text("View")
        assert page.locator(".wh-action").count() == 0, path
    _open(page, stack, "/admin/webhooks/attempt/")
    expect(page.locator("#result_list")).to_contain_text("upstream busy")

    # a change posted anyway, with a valid CSRF token, is refused by the admin and changes nothing
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "atrium_webhooks_csrftoken")
    headers = {"Referer": f"{stack.url}/admin/"}
    for path, form in (
        (f"/admin/webhooks/endpoint/{ids['endpoint']}/disable/", {"reason": "mine"}),
        (f"/admin/webhooks/endpoint/{ids['gone']}/enable/", {}),
        (f"/admin/webhooks/endpoint/{ids['endpoint']}/recover/", {"since": "2026-01-01 00:00:00"}),
        (f"/admin/webhooks/message/{ids['message']}/resend/", {"endpoint": ids["endpoint"]}),
    ):
        posted = page.context.request.post(
            f"{stack.url}{path}", form={**form, "csrfmiddlewaretoken": csrf}, headers=headers
        )
        assert posted.status == 403, path
        assert posted.json()["code"] == "permission_denied"
    assert stack.sql("SELECT enabled FROM webhooks_endpoint WHERE id = %s", [ids["gone"]]) == [(False,)]
    assert stack.sql(
        "SELECT count(*) FROM kit_outbox_event WHERE topic = 'audit' AND payload->'actor'->>'display' = %s "
        "AND payload->>'action' LIKE 'webhooks.%%'",
        [viewer.username],
    ) == [(0,)]
