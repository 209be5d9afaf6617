"""Ledger suite fixtures: an API client holding a valid ledger token, and account/transfer helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tests.tokens import JWKSServer, SigningKey


class LedgerAPI:
    """The Django test client, authenticated with a ledger token, speaking JSON."""

    def __init__(self, client: Client, token: str) -> None:
        self.client = client
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(f"/api/v1/{path}", params, **self.headers)

    def post(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body) if body is not None else ""
        return self.client.post(f"/api/v1/{path}", data, content_type="application/json", **self.headers)

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(f"/api/v1/{path}", json.dumps(body), content_type="application/json", **self.headers)

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

    def account(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "account", "currency": "EUR", "normal_balance": "credit", **fields}
        response = self.post("accounts", body)
        assert response.status_code == 201, response.content
        return response.json()

    def transfer(self, source: str, destination: str, amount: int, **fields: Any) -> Any:
        body = {
            "reference": fields.pop("reference", None) or f"ref-{source}-{destination}-{amount}-{id(fields)}",
            "postings": [
                {"account": source, "direction": "debit", "amount": amount},
                {"account": destination, "direction": "credit", "amount": amount},
            ],
            **fields,
        }
        return self.post("transactions", body)


@pytest.fixture
def api(client: Client, jwks_server: JWKSServer, signing_key: SigningKey, db: None) -> LedgerAPI:
    return LedgerAPI(client, signing_key.mint())


@pytest.fixture
def funded(api: LedgerAPI) -> tuple[dict[str, Any], dict[str, Any]]:
    """A world account (may go negative) and a customer account holding 1,000."""
    world = api.account(name="world", allow_negative=True)
    customer = api.account(name="customer")
    assert api.transfer(world["id"], customer["id"], 1000, reference="fund-customer").status_code == 201
    return world, customer
