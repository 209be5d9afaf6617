"""The token endpoint takes what Swagger UI's "Authorize" sends from a service's API docs (docs/api.md).

Swagger UI's client-credentials request is a form body with ``grant_type`` and ``scope`` only, the client id and
secret as HTTP Basic credentials (or in the body), posted to the token URL the service's schema names — with the
service's audience in its query string — from the service's origin, so after a CORS preflight.
"""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import jwt
import pytest
from django.test import override_settings

from tests.portal.factories import machine_client
from tests.portal.helpers import TOKEN_URL
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

DOCS_ORIGIN = "http://127.0.0.1:9502"
OTHER_ORIGIN = "http://evil.example"
SWAGGER_HEADERS = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", "HTTP_ORIGIN": DOCS_ORIGIN}


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _claims(response) -> dict:
    assert response.status_code == 200, response.content
    return jwt.decode(response.json()["access_token"], options={"verify_signature": False})


@override_settings(ATRIUM_TOKEN_CORS_ORIGINS=[DOCS_ORIGIN])
def test_swagger_ui_basic_request_with_the_audience_in_the_token_url_gets_a_token(client):
    # given a payments client
    machine = machine_client(audiences=["payments"], scopes=["payments:read", "payments:write"])

    # when Swagger UI posts grant_type and the scopes picked, Basic credentials, to the schema's token URL
    response = client.post(
        f"{TOKEN_URL}?audience=payments",
        urlencode({"grant_type": "client_credentials", "scope": "payments:read"}),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=_basic(machine.id, machine.secret),
        **SWAGGER_HEADERS,
    )

    # then it gets a payments token with that scope, readable by the docs' origin
    claims = _claims(response)
    assert claims["aud"] == "payments"
    assert claims["scope"] == "payments:read"
    assert response["Access-Control-Allow-Origin"] == DOCS_ORIGIN
    assert "Origin" in response["Vary"]


@override_settings(ATRIUM_TOKEN_CORS_ORIGINS=[DOCS_ORIGIN])
def test_swagger_ui_request_body_credentials_and_no_scope_get_every_scope_of_the_audience(client):
    # given a client allowed two ledger scopes
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read", "ledger:write"])

    # when Swagger UI sends the credentials in the body and no scope was ticked (scope is then empty)
    response = client.post(
        f"{TOKEN_URL}?audience=ledger",
        urlencode(
            {"grant_type": "client_credentials", "scope": "", "client_id": machine.id, "client_secret": machine.secret}
        ),
        content_type="application/x-www-form-urlencoded",
        **SWAGGER_HEADERS,
    )

    # then the token carries every ledger scope the client holds
    assert sorted(_claims(response)["scope"].split()) == ["ledger:read", "ledger:write"]


def test_audience_in_query_and_a_different_one_in_the_body_is_400_invalid_request(client):
    # given a client allowed both audiences (hostile: the query string tries to override the body)
    machine = machine_client(audiences=["ledger", "payments"], scopes=["ledger:read", "payments:read"])

    # when the two audiences differ
    response = client.post(
        f"{TOKEN_URL}?audience=payments",
        urlencode(machine.token_request("ledger")),
        content_type="application/x-www-form-urlencoded",
    )

    # then nothing is issued
    assert_problem(response, 400, "invalid_request")


def test_audience_in_the_query_string_is_still_checked_against_the_client(client):
    # given a client allowed the ledger only
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"])

    # when it asks for a payments token through the query string
    response = client.post(
        f"{TOKEN_URL}?audience=payments",
        urlencode({"grant_type": "client_credentials"}),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=_basic(machine.id, machine.secret),
    )

    # then it is refused as with the audience in the body
    assert_problem(response, 403, "audience_not_allowed")


@override_settings(ATRIUM_TOKEN_CORS_ORIGINS=[DOCS_ORIGIN])
def test_preflight_from_a_services_docs_origin_allows_the_post_with_basic_credentials(client):
    # when the browser asks before posting from a service's API docs
    response = client.options(
        f"{TOKEN_URL}?audience=ledger",
        HTTP_ORIGIN=DOCS_ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type,x-requested-with",
    )

    # then the portal allows that origin, POST and the headers Swagger UI sends; never every origin
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == DOCS_ORIGIN
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-requested-with"} <= allowed
    assert not response.has_header("Access-Control-Allow-Credentials")


@override_settings(ATRIUM_TOKEN_CORS_ORIGINS=[DOCS_ORIGIN])
def test_another_origin_gets_no_cors_permission_for_the_preflight_or_the_answer(client):
    # given a client (hostile: a page elsewhere tries to use the token endpoint from a browser)
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"])

    # when that origin preflights and posts
    preflight = client.options(TOKEN_URL, HTTP_ORIGIN=OTHER_ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    response = client.post(
        TOKEN_URL,
        urlencode(machine.token_request("ledger")),
        content_type="application/x-www-form-urlencoded",
        HTTP_ORIGIN=OTHER_ORIGIN,
    )

    # then neither answer lets the browser hand it to that page
    assert not preflight.has_header("Access-Control-Allow-Origin")
    assert not preflight.has_header("Access-Control-Allow-Methods")
    assert not response.has_header("Access-Control-Allow-Origin")


@override_settings(ATRIUM_TOKEN_CORS_ORIGINS=[DOCS_ORIGIN])
def test_a_refusal_is_readable_by_the_docs_origin_as_a_problem(client):
    # when Swagger UI sends a wrong secret
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    response = client.post(
        f"{TOKEN_URL}?audience=ledger",
        urlencode({"grant_type": "client_credentials"}),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=_basic(machine.id, "wrong"),
        **SWAGGER_HEADERS,
    )

    # then the page can read the problem (and show it) instead of a CORS error
    assert_problem(response, 401, "invalid_client")
    assert response["Access-Control-Allow-Origin"] == DOCS_ORIGIN
