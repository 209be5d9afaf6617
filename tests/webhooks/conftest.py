"""Webhooks suite fixtures: an API client holding a webhooks token (the JWKS of a local key), and endpoints made
straight in the database with encrypted secrets (``endpoint_make``), for tests below the API.

The code under test runs in this process (its API through Django's test client); deliveries go to real local
HTTP receivers over real sockets, as in production.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps
from django.test import Client

from services.webhooks import secrets
from services.webhooks.models import Endpoint, EventType
from tests.tokens import JWKSServer, SigningKey

WEBHOOKS_SCOPES = "webhooks:read webhooks:write"
_SEED = importlib.import_module("services.webhooks.migrations.0002_event_types")


@pytest.fixture(autouse=True)
def _event_types_seeded(request: pytest.FixtureRequest) -> None:
    """Every test with the database finds the migrations' event-type catalog: a transactional test's flush
    (``django_db(transaction=True)``) empties every table, migration data included, for the tests after it."""
    uses_db = request.node.get_closest_marker("django_db") is not None
    if not uses_db and not {"db", "transactional_db", "live_server"} & set(request.fixturenames):
        return
    request.getfixturevalue("db")
    if not EventType.objects.exists():
        _SEED.seed(apps, None)


class WebhooksAPI:
    """The webhooks API through Django's test client, with a webhooks token for ``client_id``, speaking JSON."""

    def __init__(self, client: Client, key: SigningKey, client_id: str = "cli_test", scope: str = WEBHOOKS_SCOPES):
        self.client = client
        self.key = key
        self.client_id = client_id
        token = key.mint(aud="webhooks", sub=client_id, scope=scope)
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def as_client(self, client_id: str, scope: str = WEBHOOKS_SCOPES) -> WebhooksAPI:
        return WebhooksAPI(self.client, self.key, client_id, scope)

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(f"/api/v1/{path}", params, **self.headers)

    def post(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body) if body is not None else ""
        return self.client.post(f"/api/v1/{path}", data, content_type="application/json", **self.headers)

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(f"/api/v1/{path}", json.dumps(body), content_type="application/json", **self.headers)

    def delete(self, path: str) -> Any:
        return self.client.delete(f"/api/v1/{path}", **self.headers)

    def all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a cursor-paginated list, following ``next`` links."""
        response = self.get(path, **params)
        items: list[dict[str, Any]] = []
        while True:
            assert response.status_code == 200, response.content
            page = response.json()
            items.extend(page["results"])
            if not page["next"]:
                return items
            response = self.client.get(page["next"], **self.headers)


@pytest.fixture
def api(client: Client, jwks_server: JWKSServer, signing_key: SigningKey, settings: Any, db: None) -> WebhooksAPI:
    settings.ATRIUM_OUTBOX_RELAY = "off"
    return WebhooksAPI(client, signing_key)


@pytest.fixture
def endpoint_make(db: None) -> Callable[..., Endpoint]:
    """``endpoint_make(url=..., event_types=[...], channels=[...], **fields)``: an endpoint saved directly (a new
    ``whsec_`` secret, encrypted; ``secret=`` to choose it), enabled unless told otherwise."""

    def make(
        url: str = "http://127.0.0.1:9/hook",
        event_types: list[str] | None = None,
        secret: str | None = None,
        **fields: Any,
    ) -> Endpoint:
        return Endpoint.objects.create(
            url=url,
            event_types=event_types or ["*"],
            secret=secrets.encrypt(secret or secrets.secret_new()),
            **fields,
        )

    return make
