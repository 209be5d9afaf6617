"""Cross-process tests: the portal under gunicorn on this run's test database, services and
workers on their own databases, all talking over real HTTP and the real broker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, sync_playwright

from portal.identity import services as identity
from services.kit.tracking import tracker
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url


@pytest.fixture(scope="module")
def live_portal(django_db_setup: None, module_harness: ProcessHarness) -> AtriumProcess:
    """The portal under gunicorn on this run's test database; tests using it commit their
    data (``transactional_db``) so the portal sees it, and the flush after each test
    leaves the next one a clean database."""
    return module_harness.web("portal", database_url=current_test_database_url())


@pytest.fixture(scope="module")
def jwks_env(live_portal: AtriumProcess) -> dict[str, str]:
    """Environment that makes a service trust the live portal's keys."""
    return {"JWT_JWKS_URL": f"{live_portal.url}/.well-known/jwks.json"}


@pytest.fixture
def stream(settings: Any) -> Iterator[str]:
    """This test's job-tracking stream, for this process (a publisher) and every process it starts: a job monitor
    on it records only what this test's processes do."""
    name = f"atrium:jobs:e2e-{uuid.uuid4().hex[:8]}"
    settings.JOBS_STREAM = name
    yield name
    tracker.close()
    redis.Redis.from_url(settings.REDIS_URL).delete(name)


@pytest.fixture
def all_access_client(transactional_db: None) -> tuple[str, str]:
    """A machine client allowed every audience and scope: (client_id, secret)."""
    from django.conf import settings

    audiences = list(settings.ATRIUM_AUDIENCE_SCOPES)
    scopes = sorted({s for v in settings.ATRIUM_AUDIENCE_SCOPES.values() for s in v})
    client, secret = identity.client_create(name="e2e-all-access", audiences=audiences, scopes=scopes)
    return client.id, secret


@pytest.fixture
def get_token(live_portal: AtriumProcess, transactional_db: None) -> Callable[..., str]:
    """Obtain a token from the live portal over HTTP."""

    def fetch(client_id: str, secret: str, audience: str, **extra: Any) -> str:
        response = httpx.post(
            f"{live_portal.url}/api/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "audience": audience,
                **extra,
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    return fetch


@pytest.fixture
def chromium() -> Path:
    """The system Chromium; skipped without it locally, a failure on CI (which installs it)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: install the Debian 'chromium' package to run browser tests"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must provide it)")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def browser(chromium: Path, live_portal: AtriumProcess) -> Iterator[Browser]:
    """Headless Chromium, for tests against the live portal."""
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
