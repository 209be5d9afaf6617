"""Single sign-on in a real headless Chromium: the portal (OpenID Connect provider) and the payments service's admin
(its client) under gunicorn, real HTTP between them, the payments audit events relayed to the portal's trail by a
real audit worker (docs/sso.md).

A viewer signs in once, at the portal, and opens the payments admin without a second login, read-only; an operator
edits a screening rule there, and the change reaches the portal's audit trail with the operator's portal identity
as its actor. Hostile: a person with no role is refused (a page, audited), a forged state and a code issued to
another client are refused with a page, never a 500; logging out of the portal ends the payments session within the
refresh interval.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect

from devtools.infra import free_port
from portal.audit.models import AuditEvent
from tests.e2e.browser import in_thread, log_in
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url, wait_until
from tests.portal.factories import user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CLIENT_ID = "e2e-payments-admin"
CLIENT_SECRET = "e2e-payments-admin-secret-" + "x" * 20
OTHER_CLIENT_ID = "e2e-other-client"
OTHER_REDIRECT = "http://127.0.0.1:9/elsewhere/callback"
REFRESH_SECONDS = 4


class SSOStack:
    def __init__(self, portal: AtriumProcess, payments: AtriumProcess, database_url: str) -> None:
        self.portal, self.payments, self.database_url = portal, payments, database_url

    @property
    def portal_url(self) -> str:
        return self.portal.url or ""

    @property
    def payments_url(self) -> str:
        return self.payments.url or ""

    def payments_sql(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(sql, params or [])
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def sso_stack(live_portal: AtriumProcess, module_harness: ProcessHarness) -> SSOStack:
    """payments under gunicorn, signing people in at the live portal, relaying its audit events to it."""
    port = free_port()
    common = {
        "JWT_JWKS_URL": f"{live_portal.url}/.well-known/jwks.json",
        "ATRIUM_OUTBOX_RELAY": "thread",
        "ATRIUM_OUTBOX_POLL_SECONDS": "1",
    }
    payments = module_harness.web(
        "payments",
        port=port,
        env={
            **common,
            "ATRIUM_SSO_URL": live_portal.url or "",
            "PAYMENTS_OIDC_CLIENT_ID": CLIENT_ID,
            "PAYMENTS_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "ATRIUM_SSO_REFRESH_SECONDS": str(REFRESH_SECONDS),
        },
    )
    module_harness.worker("audit", database_url=current_test_database_url(), env=common)
    return SSOStack(live_portal, payments, payments.env["PAYMENTS_DATABASE_URL"])


@pytest.fixture
def clients(sso_stack: SSOStack, transactional_db: None) -> None:
    """The payments admin's client at the portal (as demo_setup makes it), and another client's."""
    from oauth2_provider.models import get_application_model

    Application = get_application_model()
    Application.objects.create(
        name="payments-admin",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=f"{sso_stack.payments_url}/oidc/callback",
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
    )
    Application.objects.create(
        name="another-service",
        client_id=OTHER_CLIENT_ID,
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=OTHER_REDIRECT,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
    )


@pytest.fixture
def rule(sso_stack: SSOStack) -> Iterator[int]:
    """A screening rule in the payments database: EUR payments up to 500000 minor units."""
    sso_stack.payments_sql("DELETE FROM payments_currency_limit WHERE currency = 'EUR'")
    ((pk,),) = sso_stack.payments_sql(
        "INSERT INTO payments_currency_limit (currency, max_amount, enabled, updated_at) "
        "VALUES ('EUR', 500000, true, now()) RETURNING id"
    )
    yield pk
    sso_stack.payments_sql("DELETE FROM payments_currency_limit WHERE id = %s", [pk])


def _events(action: str, **filters: Any) -> list[AuditEvent]:
    return in_thread(lambda: list(AuditEvent.objects.filter(action=action, service="payments", **filters)))


def _audited(action: str, timeout: float = 30, **filters: Any) -> AuditEvent:
    found = wait_until(lambda: _events(action, **filters), timeout, f"{action} {filters} in the portal's trail")
    return found[0]


def _open_payments_admin(page: Page, stack: SSOStack, path: str = "/admin/") -> None:
    page.goto(f"{stack.payments_url}{path}")
    assert page.url == f"{stack.payments_url}{path}", (page.url, page.content()[:3000])


def test_viewer_signs_in_once_and_reads_the_payments_admin_without_editing(
    sso_stack: SSOStack, clients: None, rule: int, browser: Browser
):
    # given a viewer signed in at the portal (their only login)
    viewer = in_thread(lambda: user_with_role("viewer"))
    page = log_in(browser, sso_stack.portal_url, viewer.username)
    seen: list[str] = []
    page.on("response", lambda r: seen.append(f"{r.status} {r.url}"))

    # when they open the payments admin
    _open_payments_admin(page, sso_stack)

    # then they are in, without a second login form, in an admin that names the service
    expect(page.locator("#site-name")).to_have_text("Atrium payments admin")
    assert page.title().endswith("Atrium payments admin")
    assert not any("/admin/login/local/" in url for url in seen)
    assert any(url.startswith(f"302 {sso_stack.portal_url}/o/authorize?") for url in seen), seen
    expect(page.locator("#user-tools")).to_contain_text(viewer.username)

    # and the screening rule is readable but not editable
    _open_payments_admin(page, sso_stack, f"/admin/payments/currencylimit/{rule}/change/")
    expect(page.locator("h1")).to_have_text("View currency limit")
    assert page.locator("input[name=_save]").count() == 0
    # and the server refuses a change posted anyway (with a valid CSRF token), leaving the rule as it was
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "atrium_payments_csrftoken")
    posted = page.context.request.post(
        f"{sso_stack.payments_url}/admin/payments/currencylimit/{rule}/change/",
        form={"currency": "EUR", "max_amount": "1", "enabled": "on", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{sso_stack.payments_url}/admin/"},
    )
    assert posted.status == 403
    assert posted.json()["code"] == "permission_denied"  # the admin's refusal, not a CSRF failure
    assert sso_stack.payments_sql("SELECT max_amount FROM payments_currency_limit WHERE id = %s", [rule]) == [(500000,)]
    # and what is secret (stored idempotent answers) is not even readable
    response = page.goto(f"{sso_stack.payments_url}/admin/payments/idempotencykey/")
    assert response is not None
    assert response.status == 403

    # and the sign-in reached the portal's audit trail under the viewer's portal identity, with the role it gave
    login = _audited("auth.login.succeeded", actor_display=viewer.username)
    assert login.actor_id == str(viewer.pk)
    changed = _audited("auth.role.changed", actor_display=viewer.username)
    assert changed.changes == {"roles": [[], ["viewer"]]}


def test_operator_edits_a_screening_rule_audited_with_their_portal_identity(
    sso_stack: SSOStack, clients: None, rule: int, browser: Browser
):
    # given an operator signed in at the portal
    operator = in_thread(lambda: user_with_role("operator"))
    page = log_in(browser, sso_stack.portal_url, operator.username)

    # when they change the EUR limit in the payments admin
    _open_payments_admin(page, sso_stack, f"/admin/payments/currencylimit/{rule}/change/")
    expect(page.locator("h1")).to_have_text("Change currency limit")
    page.fill("#id_max_amount", "250000")
    page.locator("input[name=_save]").click()
    page.wait_for_url(f"{sso_stack.payments_url}/admin/payments/currencylimit/")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")

    # then the rule changed
    assert sso_stack.payments_sql("SELECT max_amount FROM payments_currency_limit WHERE id = %s", [rule]) == [(250000,)]
    # and the change is in the portal's audit trail, its actor the operator's portal identity
    event = _audited("payments.admin.change", object_id=str(rule))
    assert (event.actor_type, event.actor_id, event.actor_display) == ("user", str(operator.pk), operator.username)
    assert event.object_type == "payments.currencylimit"
    assert "Max amount" in event.metadata["change_message"]


def test_a_person_with_no_role_is_refused_with_a_page_and_audited(sso_stack: SSOStack, clients: None, browser: Browser):
    # given a portal user holding no role (staff, so the portal itself lets them log in)
    nobody = in_thread(lambda: user_with_role(None))
    page = log_in(browser, sso_stack.portal_url, nobody.username)

    # when they open the payments admin
    response = page.goto(f"{sso_stack.payments_url}/admin/")

    # then a page says why, not the admin and not a 500
    assert response is not None
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Sign-in refused")
    expect(page.locator("[data-reason]")).to_have_attribute("data-reason", "no_role")
    # and the refusal is audited with their portal identity
    refused = _audited("auth.login.refused", actor_display=nobody.username)
    assert refused.outcome == "failure"
    assert refused.actor_id == str(nobody.pk)
    assert refused.metadata["reason"] == "no_role"
    # and no user was made for them in payments
    rows = sso_stack.payments_sql("SELECT is_staff FROM auth_user WHERE username = %s", [nobody.username])
    assert rows == []


def test_a_forged_state_and_a_code_for_another_client_are_refused_with_a_page(
    sso_stack: SSOStack, clients: None, browser: Browser
):
    viewer = in_thread(lambda: user_with_role("viewer"))
    page = log_in(browser, sso_stack.portal_url, viewer.username)
    request = page.context.request

    # a state this browser never started (a forged callback link)
    response = page.goto(f"{sso_stack.payments_url}/oidc/callback?code=abc&state={secrets.token_urlsafe(16)}")
    assert response is not None
    assert response.status == 400
    expect(page.locator("h1")).to_have_text("Sign-in refused")
    expect(page.locator("[data-reason]")).to_have_attribute("data-reason", "bad_state")

    # a callback without its code
    response = page.goto(f"{sso_stack.payments_url}/oidc/callback?state=x")
    assert response is not None
    assert response.status == 400

    # a real state of this browser, with a code the portal issued to another client
    started = request.get(f"{sso_stack.payments_url}/oidc/authenticate", max_redirects=0)
    assert started.status == 302
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": OTHER_CLIENT_ID,
            "redirect_uri": OTHER_REDIRECT,
            "scope": "openid profile",
            "state": "theirs",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    issued = request.get(f"{sso_stack.portal_url}/o/authorize?{query}", max_redirects=0)
    assert issued.status == 302, issued.text()
    code = parse_qs(urlsplit(issued.headers["location"]).query)["code"][0]
    response = page.goto(f"{sso_stack.payments_url}/oidc/callback?{urlencode({'code': code, 'state': state})}")
    assert response is not None
    assert response.status == 400
    expect(page.locator("[data-reason]")).to_have_attribute("data-reason", "code_refused")
    # and none of it signed the browser in to payments
    admin_index = request.get(f"{sso_stack.payments_url}/admin/", max_redirects=0)
    assert admin_index.status == 302
    assert admin_index.headers["location"].startswith("/admin/login/")

    # and the refusals are audited
    reasons = {e.metadata["reason"] for e in _events("auth.login.refused")}
    wait_until(
        lambda: (
            {"bad_state", "bad_request", "code_refused"}
            <= {e.metadata["reason"] for e in _events("auth.login.refused")}
        ),
        30,
        f"the three refusals audited (so far {reasons})",
    )


def test_an_authorization_request_without_pkce_is_refused_by_the_portal(
    sso_stack: SSOStack, clients: None, browser: Browser
):
    viewer = in_thread(lambda: user_with_role("viewer"))
    page = log_in(browser, sso_stack.portal_url, viewer.username)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": f"{sso_stack.payments_url}/oidc/callback",
            "scope": "openid",
            "state": "s",
        }
    )
    answer = page.context.request.get(f"{sso_stack.portal_url}/o/authorize?{query}", max_redirects=0)
    assert answer.status == 302
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["invalid_request"]


def test_logging_out_of_the_portal_ends_the_payments_session_within_the_refresh_interval(
    sso_stack: SSOStack, clients: None, browser: Browser
):
    # given a viewer signed in to the portal and to the payments admin
    viewer = in_thread(lambda: user_with_role("viewer"))
    page = log_in(browser, sso_stack.portal_url, viewer.username)
    _open_payments_admin(page, sso_stack)

    # when they log out of the portal
    page.goto(f"{sso_stack.portal_url}/admin/")
    page.locator("#logout-form button").click()
    expect(page.locator("h1")).to_contain_text("Logged out")

    # then, once the refresh interval has passed, the payments admin sends them to the portal's login
    page.wait_for_timeout((REFRESH_SECONDS + 1) * 1000)
    page.goto(f"{sso_stack.payments_url}/admin/")
    assert page.url.startswith(f"{sso_stack.portal_url}/admin/login/?next="), (page.url, page.content()[:3000])
    # and payments no longer has a session for them
    page.goto(f"{sso_stack.payments_url}/admin/", wait_until="commit")
    assert not page.url.startswith(f"{sso_stack.payments_url}/admin/")


def test_a_role_taken_away_at_the_portal_is_taken_away_in_payments_at_the_next_refresh(
    sso_stack: SSOStack, clients: None, browser: Browser
):
    # given an operator signed in to the payments admin
    operator = in_thread(lambda: user_with_role("operator"))
    page = log_in(browser, sso_stack.portal_url, operator.username)
    _open_payments_admin(page, sso_stack)

    # when the portal makes them a viewer instead
    def demote() -> None:
        from django.contrib.auth.models import Group

        user = get_user_model().objects.get(pk=operator.pk)
        user.groups.set([Group.objects.get(name="viewer")])

    in_thread(demote)

    # then after the refresh interval the payments admin has re-synced their role (audited)
    page.wait_for_timeout((REFRESH_SECONDS + 1) * 1000)
    _open_payments_admin(page, sso_stack)
    changed = _audited("auth.role.changed", actor_display=operator.username, changes__roles__1=["viewer"])
    assert changed.changes["roles"] == [["operator"], ["viewer"]]
    # and the screening rules are read-only for them now
    response = page.goto(f"{sso_stack.payments_url}/admin/payments/currencylimit/add/")
    assert response is not None
    assert response.status == 403
