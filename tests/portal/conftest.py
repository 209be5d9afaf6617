"""Fixtures for the portal suite: token requests, key caches, the real broker's portal queue."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from tests.portal.helpers import PORTAL_QUEUE, TOKEN_URL, clear_key_caches


@pytest.fixture(autouse=True)
def _token_lockouts_forgotten() -> None:
    """Failed secrets are counted in Redis, which outlives a test: each test starts with none counted."""
    conn = redis.Redis.from_url(settings.REDIS_URL)
    try:
        stale = list(conn.scan_iter(match="atrium:identity:token-*", count=1000))
        if stale:
            conn.delete(*stale)
    finally:
        conn.close()


@pytest.fixture
def request_token(client: Client) -> Callable[..., Any]:
    """POST a JSON body to the token endpoint with the Django test client."""

    def post(body: dict[str, Any], **headers: str) -> Any:
        return client.post(TOKEN_URL, json.dumps(body), content_type="application/json", **headers)

    return post


@pytest.fixture
def mint_token(request_token: Callable[..., Any]) -> Callable[..., str]:
    """An access token from the real token endpoint for a factories.ClientWithSecret."""

    def mint(machine: Any, audience: str, **extra: str) -> str:
        response = request_token(machine.token_request(audience, **extra))
        assert response.status_code == 200, response.content
        return response.json()["access_token"]

    return mint


@pytest.fixture
def fresh_key_caches() -> Iterator[None]:
    """Reload the signing key and key set (both cached per process) before and after the test."""
    clear_key_caches()
    try:
        yield
    finally:
        clear_key_caches()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The real Redis broker, with the ``portal`` queue emptied before and after the test so no
    worker ever receives what a test published."""
    conn = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    conn.delete(PORTAL_QUEUE)
    try:
        yield conn
    finally:
        conn.delete(PORTAL_QUEUE)
        conn.close()


@pytest.fixture
def migrations_restored(transactional_db: None) -> Iterator[None]:
    """For a test that migrates an app back to check a data migration: afterwards (pass or fail) every app is
    migrated forward again, so the transactional tests after it find the schema of the code (a test left the
    catalog at 0005, and later tests failed on a missing column)."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
