"""The trace against the real webhooks service: its API under gunicorn on its own database, trusting the test
signing key; the portal reads it with a machine token minted for its own client (audience ``webhooks``, scope
``webhooks:read``), as ``make up`` sets it up. A message sent for ``pay_1`` (and delivered to no one yet: its
delivery to the one subscribed endpoint is pending) shows in ``pay_1``'s trace with that delivery."""

from __future__ import annotations

import copy
import importlib
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client

from services.kit import http as kit_http
from tests.harness import AtriumProcess, ProcessHarness
from tests.portal.factories import user_with_role
from tests.portal.test_trace import flow  # noqa: F401  (the fixture: two payments, a transaction, a drain)
from tests.servers import LocalServer, Seen, json_reply
from tests.tokens import JWKSServer, SigningKey

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not (REPO / "services/webhooks/api/views.py").exists(), reason="the webhooks API is not in this tree yet"
    ),
]

PORTAL_CLIENT, PORTAL_SECRET = "cli_portal_live", "portal-live-secret"


@pytest.fixture(scope="module")
def module_key() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="module")
def live_webhooks(module_harness: ProcessHarness, module_key: SigningKey) -> Any:
    servers: list[LocalServer] = []

    def start(respond: Any) -> LocalServer:
        server = LocalServer(respond)
        servers.append(server)
        return server

    jwks = JWKSServer(start, [module_key])
    process = module_harness.web(
        "webhooks",
        env={"JWT_JWKS_URL": jwks.url, "ATRIUM_OUTBOX_RELAY": "off", "WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.1/32"},
    )
    yield process
    for server in servers:
        server.stop()


def _settled_payment(payment_id: str) -> dict[str, Any]:
    """The catalog's own example of a settled payment (valid against its schema), as ``payment_id``."""
    seeded = importlib.import_module("services.webhooks.migrations.0002_event_types")
    examples = {name: example for name, _, _, example in seeded.event_types()}
    return {**copy.deepcopy(examples["payment.settled"]), "id": payment_id}


def test_a_payment_s_trace_shows_its_message_and_pending_delivery_from_the_real_service(
    live_webhooks: AtriumProcess,
    module_key: SigningKey,
    local_server: Callable[..., LocalServer],
    settings: Any,
    flow: None,  # noqa: F811
):
    writer = module_key.mint(aud="webhooks", sub="cli_writer", scope="webhooks:read webhooks:write")
    with httpx.Client(base_url=live_webhooks.url, headers={"Authorization": f"Bearer {writer}"}) as api:
        endpoint = api.post("/api/v1/endpoints", json={"url": "http://127.0.0.1:9/hook", "event_types": ["payment.*"]})
        assert endpoint.status_code == 201, endpoint.text
        sent = api.post(
            "/api/v1/messages",
            json={"type": "payment.settled", "data": _settled_payment("pay_1"), "channels": ["acc_src"]},
            headers={"X-Request-ID": "req_pay1"},
        )
        assert sent.status_code == 202, sent.text

    def token(seen: Seen) -> Any:
        form = dict(urllib.parse.parse_qsl(seen.body.decode()))
        if (form.get("client_id"), form.get("client_secret")) != (PORTAL_CLIENT, PORTAL_SECRET):
            return json_reply(401, {"code": "invalid_client"})
        minted = module_key.mint(aud=form["audience"], sub=PORTAL_CLIENT, scope="webhooks:read")
        return json_reply(200, {"access_token": minted, "token_type": "Bearer", "expires_in": 300})

    tokens = local_server(token)
    settings.WEBHOOKS_URL = live_webhooks.url
    settings.ATRIUM_TOKEN_URL = tokens.url + "/api/v1/auth/token"
    settings.ATRIUM_CLIENT_ID, settings.ATRIUM_CLIENT_SECRET = PORTAL_CLIENT, PORTAL_SECRET
    kit_http._breakers.clear()
    kit_http._shared_clients.clear()
    client = Client()
    client.force_login(user_with_role("operator"))
    try:
        response = client.get("/api/v1/trace/pay_1")
        page = client.get("/admin/trace/", {"q": "pay_1"})
    finally:
        kit_http._shared_clients.clear()

    assert response.status_code == 200, response.content
    found = response.json()["webhooks"]
    assert (found["state"], found["detail"]) == ("ok", "")
    (message,) = found["messages"]
    assert (message["id"], message["type"], message["object_id"]) == (sent.json()["id"], "payment.settled", "pay_1")
    assert message["request_id"] == "req_pay1"
    assert message["pending"] is True
    assert [(d["endpoint"], d["state"], d["attempts"]) for d in message["deliveries"]] == [
        (endpoint.json()["id"], "pending", 0)
    ]
    assert message["attempts"] == []  # no dispatcher here: nothing was tried yet
    assert f'data-message-id="{message["id"]}"' in page.content.decode()
