"""The audit trail's admin in a real headless Chromium against the portal under gunicorn.

An auditor logs in through the login form, sees the signed-head banner on the event list, filters it,
opens an event and sees its before/after table and its inclusion proof marked verified, and follows
the request id back to the list. What they looked at is itself on record.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from portal.audit.chain import ingest
from portal.audit.heads import head_sign
from portal.audit.models import AuditHead
from services.kit.models import OutboxEvent
from tests.e2e.browser import in_thread, log_in
from tests.harness import AtriumProcess
from tests.portal.factories import user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AUDITOR = "e2e-auditor"


def make_event(service: str, n: int, **extra) -> dict:
    return {
        "id": f"evt_{service}_{n}",
        "service": service,
        "service_seq": n,
        "occurred_at": "2026-11-28T10:00:00.000000Z",
        "action": "ledger.transaction.created",
        "outcome": "success",
        "actor": {"type": "client", "id": "cli_1", "display": "cli_1"},
        "object": {"type": "transaction", "id": f"txn_{n}"},
        "request_id": f"req_{n}",
        "source_ip": "127.0.0.1",
        "user_agent": "test",
        "changes": {},
        "metadata": {"n": n},
        **extra,
    }


def recorded_admin_events() -> list[dict]:
    """The audit.admin.* events in the outbox, read from another thread (Playwright's sync API runs an event
    loop in this one, where Django refuses database calls)."""

    def read() -> list[dict]:
        rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
        return [e.payload for e in rows if e.payload["action"].startswith("audit.admin.")]

    return in_thread(read)


@pytest.fixture
def signed_chain(transactional_db: None) -> AuditHead:
    """Seven committed events under a signed head; event 3 is a failed rename sharing request req_shared."""
    ingest(
        [
            make_event("ledger", 1),
            make_event("ledger", 2, changes={"limit": [100, 250]}),
            make_event(
                "ledger",
                3,
                action="ledger.account.renamed",
                outcome="failure",
                actor={"type": "user", "id": "7", "display": "alice"},
                object={"type": "account", "id": "acc_9"},
                request_id="req_shared",
                changes={"name": ["old", "new"]},
                metadata={"reason": "name taken"},
            ),
            make_event("payments", 1, request_id="req_shared"),
            make_event("payments", 2),
            make_event("payments", 3),
            make_event(  # long ids, as real ones are: the list must still show them whole at 1280 px
                "payments",
                4,
                occurred_at="2026-11-28T10:00:07.123456Z",
                action="payments.payment.settled",
                actor={
                    "type": "client",
                    "id": "cli_01JF3Q8ZK2M4N6P8R0T2V4X6Z8",
                    "display": "payments-service (cli_01JF3Q8ZK2M4N6P8R0T2V4X6Z8)",
                },
                object={"type": "payment", "id": "pay_01JF3Q8ZK2M4N6P8R0T2V4X6Z8"},
                request_id="req_8374186453e24c5a897def1ab108b7ab",
            ),
        ]
    )
    head = head_sign()
    assert head is not None
    assert head.tree_size == 7
    return head


@pytest.fixture
def auditor(transactional_db: None) -> str:
    """A user holding only the auditor role (made before the browser starts: Playwright's sync API runs an event
    loop in this thread, where Django refuses database calls)."""
    user_with_role("auditor", username=AUDITOR)
    return AUDITOR


@pytest.fixture
def auditor_page(auditor: str, browser: Browser, live_portal: AtriumProcess) -> Page:
    """Headless Chromium logged in to the live portal's admin as the auditor."""
    return log_in(browser, live_portal.url, auditor)


def test_auditor_filters_the_trail_and_sees_a_verified_proof(
    signed_chain: AuditHead, auditor_page: Page, live_portal: AtriumProcess, tmp_path: Path
):
    page, base = auditor_page, live_portal.url

    # given the auditor on the admin index, when they open the audit events
    page.locator("#content-main").get_by_role("link", name="Audit events", exact=True).click()
    page.wait_for_url(f"{base}/admin/audit/auditevent/")

    # then the banner says the latest signed head verifies and matches the chain
    banner = page.locator("#audit-status")
    expect(banner).to_contain_text("Latest signed head")
    expect(page.locator("#audit-head-size")).to_have_text("7")
    expect(page.locator("#audit-status-signature")).to_contain_text("Signature verified")
    expect(page.locator("#audit-status-chain")).to_contain_text("Matches the chain")
    expect(banner).to_contain_text(signed_chain.root_hash)
    expect(banner).to_contain_text("manage.py audit_verify")
    expect(page.locator("#result_list tbody tr")).to_have_count(7)
    # and there is nothing to add and no bulk action to run
    expect(page.get_by_role("link", name="Add audit event")).to_have_count(0)
    expect(page.locator("select[name=action]")).to_have_count(0)
    page.screenshot(path=str(tmp_path / "audit-events.png"), full_page=True)
    # and at 1280 px the list shows times to the second and every column whole, long ids wrapped
    newest = page.locator("#result_list tbody tr").first
    expect(newest.locator("td.field-occurred")).to_have_text("2026-11-28 10:00:07")
    expect(newest.locator("td.field-actor_shown")).to_contain_text("payments-service (cli_01JF3Q8ZK2M4N6P8R0T2V4X6Z8)")
    expect(newest.locator("td.field-object_shown")).to_contain_text("payment pay_01JF3Q8ZK2M4N6P8R0T2V4X6Z8")
    expect(newest.locator("td.field-request_link")).to_contain_text("req_8374186453e24c5a897def1ab108b7ab")
    assert page.locator("#changelist .results").evaluate("e => e.scrollWidth <= e.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    # when they filter by outcome "failure"
    page.locator("#changelist-filter").get_by_role("link", name="failure", exact=True).click()
    page.wait_for_url("**/admin/audit/auditevent/?outcome=failure")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("ledger.account.renamed")

    # and open that event
    rows.first.get_by_role("link", name="3", exact=True).click()
    page.wait_for_url("**/admin/audit/auditevent/3/change/**")  # with the filters preserved

    # then its page shows the before/after table, the metadata and a verified inclusion proof
    expect(page.get_by_role("heading", name="Audit event #3")).to_be_visible()
    changes = page.locator("#audit-changes")
    expect(changes.locator("thead")).to_contain_text("Before")
    expect(changes.locator("thead")).to_contain_text("After")
    row = changes.locator("tbody tr", has_text="name")
    expect(row.locator("td.audit-before")).to_have_text("old")
    expect(row.locator("td.audit-after")).to_have_text("new")
    expect(page.locator("#audit-metadata")).to_contain_text('"reason": "name taken"')
    status = page.locator("#proof-status")
    expect(status).to_contain_text("verified")
    expect(status).not_to_contain_text("NOT")
    expect(status).to_have_class("audit-ok")
    expect(page.locator("#audit-chain-link")).to_contain_text("is the chain hash")
    expect(page.locator("#audit-columns")).to_contain_text("agree with the hashed JSON")
    screenshot = tmp_path / "audit-event-3.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert screenshot.stat().st_size > 10_000

    # when they follow the request id, the list shows every event of that request
    page.locator("#event-request").click()
    page.wait_for_url("**/admin/audit/auditevent/?request_id=req_shared")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    expect(page.locator("#audit-lookups")).to_contain_text("request_id = req_shared")

    # and every look was recorded, with the auditor as the actor
    recorded = recorded_admin_events()
    assert {e["actor"]["display"] for e in recorded} == {AUDITOR}
    assert [(e["action"], e["object"]["id"]) for e in recorded if e["action"] == "audit.admin.viewed"] == [
        ("audit.admin.viewed", "evt_ledger_3")
    ]
    filters = [e["metadata"]["filters"] for e in recorded if e["action"] == "audit.admin.listed"]
    assert filters == [{}, {"outcome": "failure"}, {"request_id": "req_shared"}]
