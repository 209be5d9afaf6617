"""The machine-client admin in a real headless Chromium against the portal under gunicorn.

The browser creates a client and rotates its secret through the admin; the secret it is
shown must really work at the token endpoint, must never reappear on another page, and the
admin must be styled by static files the app serves itself (no CDN).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from portal.identity import services as identity
from portal.identity.models import MachineClient
from tests.e2e.browser import TIMEOUT_MS, in_thread
from tests.harness import AtriumProcess

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@dataclass
class AdminSession:
    """A logged-in admin page plus everything the browser fetched while the test ran."""

    page: Page
    base_url: str
    responses: list[tuple[str, int]] = field(default_factory=list)
    requested_urls: list[str] = field(default_factory=list)


@pytest.fixture
def superuser_credentials(transactional_db: None) -> tuple[str, str]:
    """A superuser committed to the test database, which the live portal shares."""
    username, password = "e2e-admin", secrets.token_urlsafe(18)  # 24 characters
    get_user_model().objects.create_superuser(username=username, email="e2e-admin@example.test", password=password)
    return username, password


@pytest.fixture
def admin_session(superuser_credentials: tuple[str, str], browser: Browser, live_portal: AtriumProcess) -> AdminSession:
    """Headless Chromium logged in to the live portal's admin as the superuser (every request and response the
    page makes recorded, the login form's included)."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    session = AdminSession(page=page, base_url=live_portal.url)
    page.on("request", lambda request: session.requested_urls.append(request.url))
    page.on("response", lambda response: session.responses.append((response.url, response.status)))

    # Log in through the real login form.
    page.goto(f"{live_portal.url}/admin/login/")
    username, password = superuser_credentials
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_portal.url}/admin/")
    return session


def _token(base_url: str, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "audience": "ledger",
        },
        timeout=10,
    )


def _shown_credentials(page: Page) -> tuple[str, str]:
    """The client id and secret on the show-once page."""
    return page.locator("code#client-id").inner_text().strip(), page.locator("code#client-secret").inner_text().strip()


def _assert_static_served_by_app(session: AdminSession) -> None:
    css = f"{session.base_url}/static/admin/css/base.css"
    assert (css, 200) in session.responses, [r for r in session.responses if "/static/" in r[0]]
    # Everything the admin needed came from the portal itself: no CDN, no third-party host.
    portal_host = urlsplit(session.base_url).netloc
    foreign = [u for u in session.requested_urls if u.startswith("http") and urlsplit(u).netloc != portal_host]
    assert foreign == []


def test_admin_creates_a_client_whose_secret_is_shown_once_and_works(admin_session: AdminSession, tmp_path: Path):
    page, base = admin_session.page, admin_session.base_url

    # given the logged-in superuser on the admin index
    # when they open "Machine clients" → "Add machine client" and fill the form
    page.get_by_role("link", name="Machine clients", exact=True).first.click()
    page.wait_for_url(f"{base}/admin/identity/machineclient/")
    page.get_by_role("link", name="Add machine client").click()
    page.wait_for_url(f"{base}/admin/identity/machineclient/add/")
    page.fill("#id_name", "browser-created-client")
    page.check("input[name=allowed_audiences][value='ledger']")
    page.check("input[name=allowed_scopes][value='ledger:read']")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/add/")) as posted:
        page.locator("input[name=_save]").click()

    # then the show-once page names the new client and its secret, and is never cached
    response = posted.value
    assert response.status == 200
    assert "no-store" in response.headers.get("cache-control", "")
    expect(page.get_by_role("heading", name="Machine client created")).to_be_visible()
    client_id, secret = _shown_credentials(page)
    assert client_id.startswith("cli_"), client_id
    assert secret.startswith("cs_"), secret
    screenshot = tmp_path / "machine-client-created.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.is_file()
    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # and the shown secret really obtains a ledger token with exactly the granted scope
    token = _token(base, client_id, secret)
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "ledger:read"

    # and the client's change page ("Done, I have stored it") never shows the secret again
    page.get_by_role("link", name="Done, I have stored it").click()
    page.wait_for_url(f"{base}/admin/identity/machineclient/{client_id}/change/")
    html = page.content()
    assert "browser-created-client" in html
    assert secret not in html
    assert secret[3:] not in html  # not even without its prefix

    # and the admin was styled by static files the portal served itself
    _assert_static_served_by_app(admin_session)


@pytest.fixture
def existing_client(transactional_db: None) -> tuple[str, str]:
    """A ledger client created before the browser starts: (client_id, secret)."""
    client, secret = identity.client_create(name="browser-rotated-client", audiences=["ledger"], scopes=["ledger:read"])
    return client.id, secret


def test_admin_rotate_action_shows_a_new_secret_and_retires_the_old_after_its_grace(
    existing_client: tuple[str, str], admin_session: AdminSession
):
    page, base = admin_session.page, admin_session.base_url
    client_id, old_secret = existing_client
    assert _token(base, client_id, old_secret).status_code == 200

    # given the changelist with the client's row selected
    page.goto(f"{base}/admin/identity/machineclient/")
    page.check(f"input[name=_selected_action][value='{client_id}']")

    # when the "Rotate secret" action is run on it
    page.select_option("select[name=action]", "rotate_secret")
    page.get_by_role("button", name="Go").click()

    # then a new secret is shown once, different from the old one
    expect(page.get_by_role("heading", name="Secret rotated")).to_be_visible()
    shown_id, new_secret = _shown_credentials(page)
    assert shown_id == client_id
    assert new_secret.startswith("cs_")
    assert new_secret != old_secret

    # and the new secret obtains tokens; the old one only until its grace period is over
    assert _token(base, client_id, old_secret).status_code == 200
    in_thread(  # (Playwright's sync API runs an event loop here: the ORM wants a thread of its own)
        lambda: MachineClient.objects.filter(pk=client_id).update(previous_secret_valid_until=timezone.now())
    )
    refused = _token(base, client_id, old_secret)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "invalid_client"
    accepted = _token(base, client_id, new_secret)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["scope"] == "ledger:read"

    # and the changelist does not repeat the new secret
    page.goto(f"{base}/admin/identity/machineclient/")
    assert new_secret not in page.content()
    _assert_static_served_by_app(admin_session)
