"""What an integrator reads in the webhooks API reference: the routes, the scopes each needs (the secret is a
write), the refusals with their codes, and that the secret is in no answer but its own (docs/api.md)."""

from __future__ import annotations

import pytest

ROUTES = {
    "/api/v1/endpoints": {"get", "post"},
    "/api/v1/endpoints/{id}": {"get", "patch", "delete"},
    "/api/v1/endpoints/{id}/enable": {"post"},
    "/api/v1/endpoints/{id}/disable": {"post"},
    "/api/v1/endpoints/{id}/secret": {"get"},
    "/api/v1/endpoints/{id}/secret/rotate": {"post"},
    "/api/v1/endpoints/{id}/public-key": {"get"},
    "/api/v1/endpoints/{id}/recover": {"post"},
    "/api/v1/recoveries/{id}": {"get"},
    "/api/v1/event-types": {"get"},
    "/api/v1/event-types/{name}": {"get"},
    "/api/v1/messages": {"get", "post"},
    "/api/v1/messages/{id}": {"get"},
    "/api/v1/messages/{id}/resend": {"post"},
    "/api/v1/attempts": {"get"},
}


@pytest.fixture
def schema(client) -> dict:
    return client.get("/api/schema", HTTP_ACCEPT="application/json").json()


def _codes(operation: dict, status: str) -> set[str]:
    return set(operation["responses"][status]["content"]["application/problem+json"]["examples"])


def _scopes(operation: dict) -> list[str]:
    return next(s["oauth2"] for s in operation["security"] if "oauth2" in s)


def test_every_route_of_the_contract_is_documented(schema):
    documented = {path: set(ops) for path, ops in schema["paths"].items() if path != "/api/v1/whoami"}
    assert documented == ROUTES


def test_reads_need_read_writes_need_write_and_the_secret_is_a_write(schema):
    for path, methods in ROUTES.items():
        for method in methods:
            operation = schema["paths"][path][method]
            expected = "webhooks:read" if method == "get" and not path.endswith("/secret") else "webhooks:write"
            assert _scopes(operation) == [expected], (method, path)


def test_the_refusals_are_documented_with_their_codes(schema):
    create = schema["paths"]["/api/v1/endpoints"]["post"]
    assert {"endpoint_url_not_allowed", "unknown_event_type", "invalid_secret", "invalid_metadata"} <= _codes(
        create, "422"
    )
    send = schema["paths"]["/api/v1/messages"]["post"]
    assert {"unknown_event_type", "invalid_payload"} <= _codes(send, "422")
    assert "payload_too_large" in _codes(send, "413")
    assert set(send["responses"]) >= {"202", "400", "401", "403", "413", "422"}
    resend = schema["paths"]["/api/v1/messages/{id}/resend"]["post"]
    assert {"message_not_found", "endpoint_not_found"} <= _codes(resend, "404")
    assert "endpoint_disabled" in _codes(resend, "409")
    assert "endpoint_not_subscribed" in _codes(resend, "422")
    recover = schema["paths"]["/api/v1/endpoints/{id}/recover"]["post"]
    assert "202" in recover["responses"]
    assert "invalid_recovery_window" in _codes(recover, "422")
    assert "public_key_not_found" in _codes(schema["paths"]["/api/v1/endpoints/{id}/public-key"]["get"], "404")


def test_no_endpoint_answer_but_the_secrets_own_carries_a_secret(schema):
    endpoint = schema["components"]["schemas"]["Endpoint"]["properties"]
    assert not {"secret", "previous_secret", "signing_key"} & set(endpoint)
    secret = schema["paths"]["/api/v1/endpoints/{id}/secret"]["get"]["responses"]["200"]["content"]
    assert (
        "secret"
        in schema["components"]["schemas"][secret["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]["properties"]
    )
