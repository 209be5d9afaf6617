"""Payments suite fixtures: a live ledger (gunicorn, its own database) trusting a test signing key, a token
endpoint minting this service's ledger tokens with that key, and clients for both APIs.

The payments code under test runs in this process (its API through Django's test client, its processing
by calling :func:`services.payments.processing.advance`), and reaches the ledger over real HTTP with a
real JWT, exactly as in production; the portal's own token issuance is tested in the portal suite and
end to end in ``tests/e2e``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from django.test import Client

from services.kit import auth
from services.payments import metrics
from services.payments.ledger import ledger_reset
from tests.harness import AtriumProcess, ProcessHarness
from tests.proxy import LedgerProxy
from tests.servers import LocalServer, Seen, json_reply
from tests.tokens import JWKSServer, SigningKey

PAYMENTS_CLIENT = "cli_payments_service"


class TokenServer:
    """The portal's token endpoint as payments uses it: client credentials in, a signed JWT out."""

    path = "/api/v1/auth/token"

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.server = LocalServer(self._respond)
        self.url = self.server.url + self.path

    def _respond(self, seen: Seen) -> Any:
        form = dict(urllib.parse.parse_qsl(seen.body.decode()))
        if seen.path != self.path or form.get("client_id") != PAYMENTS_CLIENT:
            return json_reply(401, {"code": "invalid_client"})
        audience = form.get("audience", "")
        token = self.key.mint(aud=audience, sub=PAYMENTS_CLIENT, scope=f"{audience}:read {audience}:write")
        return json_reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})


@pytest.fixture(scope="module")
def module_key() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="module")
def token_servers(module_key: SigningKey) -> Iterator[tuple[JWKSServer, TokenServer]]:
    servers: list[LocalServer] = []

    def start(respond: Any) -> LocalServer:
        server = LocalServer(respond)
        servers.append(server)
        return server

    jwks = JWKSServer(start, [module_key])
    tokens = TokenServer(module_key)
    yield jwks, tokens
    tokens.server.stop()
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def live_ledger(module_harness: ProcessHarness, token_servers: tuple[JWKSServer, TokenServer]) -> AtriumProcess:
    """The ledger under gunicorn on a fresh database, trusting the test key."""
    jwks, _ = token_servers
    return module_harness.web("ledger", env={"JWT_JWKS_URL": jwks.url, "ATRIUM_OUTBOX_RELAY": "off"})


class LedgerAdmin:
    """Direct calls to the live ledger (accounts, funding, balances) with a ledger token."""

    def __init__(self, url: str, key: SigningKey) -> None:
        self.http = httpx.Client(
            base_url=url,
            timeout=10,
            headers={"Authorization": f"Bearer {key.mint(aud='ledger', exp=int(time.time()) + 7200)}"},
        )
        self._funding: dict[str, str] = {}

    def account(self, currency: str = "EUR", **fields: Any) -> str:
        body = {"name": f"acct-{uuid.uuid4().hex[:6]}", "currency": currency, "normal_balance": "credit", **fields}
        response = self.http.post("/api/v1/accounts", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def funded(self, amount: int, currency: str = "EUR") -> str:
        """A new account holding ``amount`` (moved in from a funding account that may go negative)."""
        if currency not in self._funding:
            self._funding[currency] = self.account(currency, allow_negative=True, normal_balance="credit")
        account = self.account(currency)
        if amount:
            response = self.http.post(
                "/api/v1/transactions",
                json={
                    "reference": f"fund-{uuid.uuid4().hex}",
                    "postings": [
                        {"account": self._funding[currency], "direction": "debit", "amount": amount},
                        {"account": account, "direction": "credit", "amount": amount},
                    ],
                },
            )
            assert response.status_code == 201, response.text
        return account

    def balance(self, account: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/accounts/{account}/balance")
        assert response.status_code == 200, response.text
        return response.json()

    def transaction_by_reference(self, reference: str) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/transactions", params={"reference": reference})
        assert response.status_code == 200, response.text
        return response.json()["results"]


@pytest.fixture(scope="module")
def ledger_admin(live_ledger: AtriumProcess, module_key: SigningKey) -> LedgerAdmin:
    return LedgerAdmin(live_ledger.url or "", module_key)


@pytest.fixture
def payments_env(
    settings: Any, live_ledger: AtriumProcess, token_servers: tuple[JWKSServer, TokenServer]
) -> Iterator[None]:
    """This process's payments settings pointed at the live ledger, the token endpoint and the JWKS."""
    jwks, tokens = token_servers
    settings.JWT_JWKS_URL = jwks.url
    settings.LEDGER_URL = live_ledger.url
    settings.ATRIUM_TOKEN_URL = tokens.url
    settings.ATRIUM_CLIENT_ID = PAYMENTS_CLIENT
    settings.ATRIUM_CLIENT_SECRET = "payments-secret"
    settings.ATRIUM_OUTBOX_RELAY = "off"
    settings.PAYMENTS_LEDGER_RETRIES = 0
    settings.PAYMENTS_RETRY_BASE_SECONDS = 0.01
    auth._caches.clear()
    auth.verified_cache().clear()
    ledger_reset()
    yield
    ledger_reset()
    auth._caches.clear()
    auth.verified_cache().clear()


class PaymentsAPI:
    """The payments API through Django's test client, with a payments token for ``client``."""

    def __init__(self, client: Client, key: SigningKey, client_id: str = "cli_merchant") -> None:
        self.client = client
        self.key = key
        self.client_id = client_id
        token = key.mint(aud="payments", sub=client_id, scope="payments:read payments:write")
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def as_client(self, client_id: str) -> PaymentsAPI:
        return PaymentsAPI(self.client, self.key, client_id)

    def create(self, body: Any, *, key: str | None = None, raw: str | None = None) -> Any:
        extra = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
        data = raw if raw is not None else json.dumps(body)
        return self.client.post("/api/v1/payments", data, content_type="application/json", **self.headers, **extra)

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(f"/api/v1/{path}", params, **self.headers)

    def cancel(self, payment_id: str) -> Any:
        return self.client.post(
            f"/api/v1/payments/{payment_id}/cancel", "", content_type="application/json", **self.headers
        )


@pytest.fixture
def api(client: Client, payments_env: None, module_key: SigningKey) -> PaymentsAPI:
    return PaymentsAPI(client, module_key)


@pytest.fixture(scope="session", autouse=True)
def _kicker_stopped(django_db_setup: None) -> Iterator[None]:
    """The kick thread keeps a database connection of its own: closed before the test database is dropped."""
    yield
    from services.payments.services import kick

    kick.stop()


@pytest.fixture
def proxy(live_ledger: AtriumProcess, settings: Any) -> Iterator[LedgerProxy]:
    """The payments code reaches the ledger through a proxy the test can make misbehave."""
    proxy = LedgerProxy(live_ledger.url)
    settings.LEDGER_URL = proxy.url
    ledger_reset()
    yield proxy
    proxy.stop()
    ledger_reset()


@pytest.fixture
def counters_cleared(settings: Any) -> None:
    """The payments counters (kept in Redis, shared by processes) start at zero."""
    redis.Redis.from_url(settings.REDIS_URL).delete(metrics.KEY)
