"""What an integrator reads in the payments API reference about money, retries and refusals (docs/api.md)."""

from __future__ import annotations

import pytest

from services.kit.currencies import CURRENCIES


@pytest.fixture
def schema(client) -> dict:
    return client.get("/api/schema", HTTP_ACCEPT="application/json").json()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node or ("allOf" in node and len(node["allOf"]) == 1 and "$ref" in node["allOf"][0]):
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        merged = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
        node = {**schema["components"]["schemas"][ref.rsplit("/", 1)[1]], **merged}
    return node


def test_amount_is_integer_minor_units_and_currency_an_iso_4217_code_in_and_out(schema):
    for component in ("PaymentCreateRequest", "Payment"):
        properties = schema["components"]["schemas"][component]["properties"]
        # then amount is an integer of at least 1, said to be in minor units
        amount = properties["amount"]
        assert (amount["type"], amount["minimum"]) == ("integer", 1)
        assert "minor units" in amount["description"]
        # and currency is a three-letter code from the kit's list
        currency = _resolve(schema, properties["currency"])
        assert currency["pattern"] == "^[A-Z]{3}$"
        assert set(currency["enum"]) == set(CURRENCIES)
        assert "XXX" not in currency["enum"]


def test_create_documents_idempotency_request_ids_and_its_refusals(schema):
    operation = schema["paths"]["/api/v1/payments"]["post"]
    parameters = [
        schema["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
        for p in operation["parameters"]
    ]
    headers = {p["name"] for p in parameters if p["in"] == "header"}
    assert {"Idempotency-Key", "X-Request-ID"} <= headers

    created = operation["responses"]["201"]
    assert set(created["headers"]) == {"X-Request-ID", "Idempotent-Replayed"}
    assert created["content"]["application/json"]["examples"]

    refusals = operation["responses"]["422"]["content"]["application/problem+json"]["examples"]
    assert {"invalid_amount", "unsupported_currency", "idempotency_key_reused", "same_account"} <= set(refusals)
    assert "idempotency_key_in_progress" in operation["responses"]["409"]["description"]
    # a read takes no Idempotency-Key and answers no Idempotent-Replayed
    listed = schema["paths"]["/api/v1/payments"]["get"]
    assert "Idempotent-Replayed" not in listed["responses"]["200"]["headers"]


def test_the_security_scheme_is_client_credentials_at_the_portals_token_url(schema, settings):
    flow = schema["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]

    assert flow["tokenUrl"].startswith(("http://", "https://"))
    assert flow["tokenUrl"].endswith("/api/v1/auth/token?audience=payments")
    assert set(flow["scopes"]) == {"payments:read", "payments:write"}
    create = schema["paths"]["/api/v1/payments"]["post"]
    assert {"oauth2": ["payments:write"]} in create["security"]
