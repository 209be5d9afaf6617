"""A service's API docs in a real headless Chromium: "Authorize" gets a token from the live portal with a
machine client's id and secret (OAuth 2.0 client credentials, cross-origin), and "Try it out" calls the live
ledger with it (docs/api.md).

The portal and the ledger run under gunicorn on ports of their own; the portal allows the ledger's origin at its
token endpoint (ATRIUM_TOKEN_CORS_ORIGINS), the ledger's schema names the portal's token URL (ATRIUM_TOKEN_URL).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from devtools.infra import free_port
from portal.identity import services as identity
from tests.e2e.browser import CHROMIUM_ARGS, TIMEOUT_MS, VIEWPORT, in_thread
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def docs_stack(django_db_setup: None, module_harness: ProcessHarness) -> tuple[AtriumProcess, AtriumProcess]:
    """(portal, ledger): the portal lets the ledger's docs page ask it for tokens, the ledger trusts its keys."""
    ledger_port = free_port()
    ledger_origin = f"http://127.0.0.1:{ledger_port}"
    portal = module_harness.web(
        "portal", database_url=current_test_database_url(), env={"ATRIUM_TOKEN_CORS_ORIGINS": ledger_origin}
    )
    ledger = module_harness.web(
        "ledger",
        port=ledger_port,
        env={
            "JWT_JWKS_URL": f"{portal.url}/.well-known/jwks.json",
            "ATRIUM_TOKEN_URL": f"{portal.url}/api/v1/auth/token",
        },
    )
    return portal, ledger


@pytest.fixture
def docs_browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _oauth(page: Page) -> Locator:
    """The client-credentials form of the "Available authorizations" dialog."""
    return page.locator(".auth-container").filter(has_text="oauth2 (OAuth2, clientCredentials)")


def _authorize(page: Page, client_id: str, secret: str, *, scope: str) -> None:
    page.locator(".auth-wrapper button.authorize").click()
    oauth = _oauth(page)
    oauth.locator("#client_id_clientCredentials").fill(client_id)
    oauth.locator("#client_secret_clientCredentials").fill(secret)
    oauth.locator(f"label[for='{scope}-clientCredentials-checkbox-oauth2']").click()
    oauth.locator("button.authorize").click()


def test_authorize_then_try_it_out_calls_the_ledger_with_a_portal_token(docs_stack, docs_browser):
    # given a machine client allowed to read the ledger, and the ledger's API docs open in Chromium
    portal, ledger = docs_stack
    client, secret = in_thread(
        lambda: identity.client_create(name="docs-reader", audiences=["ledger"], scopes=["ledger:read"])
    )
    page = docs_browser.new_context(viewport=VIEWPORT).new_page()
    page.context.set_default_timeout(TIMEOUT_MS)
    token_calls: list[tuple[str, int, str | None]] = []
    page.on(
        "response",
        lambda r: (
            token_calls.append((r.request.method, r.status, r.headers.get("access-control-allow-origin")))
            if r.url.startswith(f"{portal.url}/api/v1/auth/token?audience=ledger")
            else None
        ),
    )
    page.goto(f"{ledger.url}/api/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()

    # when "Authorize" gets a token with the client's id and secret (posted cross-origin to the portal)
    _authorize(page, client.id, secret, scope="ledger:read")

    # then the portal issued it to the ledger's page (preflight then POST, both allowed for that origin)
    oauth = _oauth(page)
    expect(oauth.locator("button", has_text="Logout")).to_be_visible()
    assert ("POST", 200, ledger.url) in token_calls, token_calls
    oauth.locator("button.btn-done").click()

    # and "Try it out" on who-am-i reaches the ledger as that client
    operation = page.locator(".opblock").filter(has=page.locator(".opblock-summary-path", has_text="/api/v1/whoami"))
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    live = operation.locator(".live-responses-table tr.response")
    expect(live.locator(".response-col_status").first).to_have_text("200")
    expect(live.locator(".response-col_description").first).to_contain_text(client.id)
    expect(live.locator(".response-col_description").first).to_contain_text("ledger:read")


def test_authorize_with_a_wrong_secret_shows_the_refusal(docs_stack, docs_browser):
    # given a client, and its secret mistyped (hostile: guessing at the token endpoint from the docs page)
    _portal, ledger = docs_stack
    client, _secret = in_thread(
        lambda: identity.client_create(name="docs-guesser", audiences=["ledger"], scopes=["ledger:read"])
    )
    page = docs_browser.new_context(viewport=VIEWPORT).new_page()
    page.context.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{ledger.url}/api/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()

    # when "Authorize" is tried with it
    _authorize(page, client.id, "not-the-secret", scope="ledger:read")

    # then Swagger UI shows the portal's refusal (readable cross-origin), and no token is held
    oauth = _oauth(page)
    expect(oauth.locator(".errors")).to_contain_text("invalid_client")
    expect(oauth.locator("button", has_text="Logout")).to_have_count(0)
