"""A live ledger under gunicorn (own database), spoken to over real HTTP with a valid token."""

from __future__ import annotations

from typing import Any

import httpx

from tests.harness import AtriumProcess, ProcessHarness
from tests.tokens import JWKSServer, SigningKey


class LiveLedger:
    """One gunicorn ledger process trusting ``signing_key`` through ``jwks_server``."""

    def __init__(self, harness: ProcessHarness, jwks_server: JWKSServer, signing_key: SigningKey) -> None:
        self.process: AtriumProcess = harness.web("ledger", env={"JWT_JWKS_URL": jwks_server.url})
        self.token = signing_key.mint()
        self.database_url = self.process.env["LEDGER_DATABASE_URL"]

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """A new HTTP client (one per thread) with the token and the API base URL."""
        return httpx.Client(
            base_url=f"{self.process.url}/api/v1/",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
        )

    def account(self, http: httpx.Client, **fields: Any) -> dict[str, Any]:
        body = {"name": "account", "currency": "EUR", "normal_balance": "credit", **fields}
        response = http.post("accounts", json=body)
        assert response.status_code == 201, response.text
        return response.json()


def pay(source: str, destination: str, amount: int, reference: str, **fields: Any) -> dict[str, Any]:
    """A transaction body debiting ``source`` and crediting ``destination``."""
    return {
        "reference": reference,
        "postings": [
            {"account": source, "direction": "debit", "amount": amount},
            {"account": destination, "direction": "credit", "amount": amount},
        ],
        **fields,
    }
