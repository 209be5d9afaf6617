"""Driving the live portal in a real headless Chromium (Debian's ``chromium`` through Playwright): shared by every
browser test. The ``chromium`` and ``browser`` fixtures are in ``tests/e2e/conftest.py``."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from django.db import connections
from playwright.sync_api import Browser, Page

from tests.portal.factories import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1280, "height": 800}
T = TypeVar("T")


def in_thread(work: Callable[[], T]) -> T:
    """Run ORM work in another thread (Playwright's sync API runs an event loop in this one, where Django
    refuses database calls)."""

    def run() -> T:
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def log_in(browser: Browser, base: str, username: str, password: str = PASSWORD, **context: object) -> Page:
    """A new browser context logged in to the admin through the real login form; its page on the admin index."""
    page = browser.new_context(**({"viewport": VIEWPORT} | context)).new_page()
    page.context.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/admin/")
    return page


def save_screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    """A full-page PNG in ``ATRIUM_SCREENSHOTS_DIR`` (or ``tmp_path``), checked to be a real picture."""
    directory = Path(os.environ.get("ATRIUM_SCREENSHOTS_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 10_000, path
    return path
