"""Every error, from the parser to an unhandled bug, is an RFC 9457 problem document with a stable code."""

from __future__ import annotations

import re

import httpx
import pytest
from django.conf import settings
from django.test import Client

from devtools.infra import free_port
from services.kit.ids import id_new
from tests.problems import assert_problem

pytestmark = pytest.mark.urls("tests.kit.urls")

PROBLEM = "application/problem+json"
ECHO = "/api/v1/echo"


def test_valid_body_is_accepted_and_echoed(client):
    # when a well-formed body is posted
    response = client.post(ECHO, {"name": "rent", "amount": 12}, content_type="application/json")

    # then the strict parser and serializer let it through
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"name": "rent", "amount": 12}


def test_malformed_json_gives_problem_details_not_500(client):
    # when the body is not JSON
    response = client.post(ECHO, '{"name": "rent", ', content_type="application/json", HTTP_X_REQUEST_ID="req-bad-1")

    # then it is a 400 problem document naming the request
    body = assert_problem(response, 400, "malformed_json")
    assert body["request_id"] == "req-bad-1"
    assert body["instance"] == ECHO
    assert "not valid JSON" in body["detail"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_number_literals_are_malformed_json(client, literal):
    # when the body uses a JavaScript number literal that JSON does not have
    response = client.post(ECHO, f'{{"name": "rent", "amount": {literal}}}', content_type="application/json")

    # then it is refused as malformed JSON
    body = assert_problem(response, 400, "malformed_json")
    assert literal.lstrip("-") in body["detail"]


def test_body_that_is_not_utf8_is_malformed_json(client):
    # when the body is Latin-1 encoded
    response = client.post(ECHO, '{"name": "caf\xe9", "amount": 1}'.encode("latin-1"), content_type="application/json")

    # then it is refused as malformed JSON
    body = assert_problem(response, 400, "malformed_json")
    assert "UTF-8" in body["detail"]


def test_nul_character_in_a_string_gives_invalid_characters(client):
    # when a string holds U+0000, which PostgreSQL text cannot store
    response = client.post(ECHO, '{"name": "a\\u0000b", "amount": 1}', content_type="application/json")

    # then it is refused before it reaches the database
    body = assert_problem(response, 400, "invalid_characters")
    assert "NUL" in body["detail"]


def test_nul_character_in_a_nested_key_gives_invalid_characters(client):
    # when an object key deep in the document holds U+0000
    response = client.post(ECHO, '{"name": "a", "amount": 1, "x": [{"k\\u0000": 1}]}', content_type="application/json")

    # then it is refused as invalid characters, not as an unknown field
    assert_problem(response, 400, "invalid_characters")


@pytest.mark.parametrize(
    "document",
    [
        '{"name": "a\\ud800b", "amount": 1}',
        '{"name": "a", "amount": 1, "x\\udfff": 1}',
        '{"name": "a", "amount": 1, "tags": ["\\ud83d"]}',
    ],
    ids=["in-a-value", "in-a-key", "nested"],
)
def test_lone_surrogate_gives_invalid_characters_not_500(document):
    # given a client that returns 500 responses instead of re-raising
    client = Client(raise_request_exception=False)

    # when a string holds an unpaired UTF-16 surrogate, which no UTF-8 text (nor PostgreSQL) can hold
    response = client.post(ECHO, document, content_type="application/json")

    # then it is refused like NUL, instead of failing when the text is stored or echoed in an error
    body = assert_problem(response, 400, "invalid_characters")
    assert "surrogate" in body["detail"]


def test_surrogate_pair_is_one_valid_character(client):
    # when a string holds a correctly paired surrogate escape (U+1F600)
    response = client.post(ECHO, '{"name": "ok \\ud83d\\ude00", "amount": 1}', content_type="application/json")

    # then it is accepted as the character it encodes
    assert response.status_code == 201
    assert response.json()["name"] == "ok \U0001f600"


def test_whitespace_only_body_is_malformed_json(client):
    # when the body holds only whitespace
    response = client.post(ECHO, "  \n ", content_type="application/json")

    # then the parser says a JSON document was expected
    body = assert_problem(response, 400, "malformed_json")
    assert "empty" in body["detail"]


def test_empty_body_is_a_400_naming_the_required_fields(client):
    # when the body is empty (DRF treats it as an empty object without calling the parser)
    response = client.post(ECHO, "", content_type="application/json")

    # then the required fields are reported missing
    body = assert_problem(response, 400, "validation_error")
    assert {(e["field"], e["code"]) for e in body["errors"]} == {("name", "required"), ("amount", "required")}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("name=rent&amount=1", "text/plain"), ("name=rent&amount=1", "application/x-www-form-urlencoded")],
)
def test_non_json_content_type_gives_unsupported_media_type(client, body, content_type):
    # when the body is sent as something other than JSON
    response = client.post(ECHO, body, content_type=content_type)

    # then it is a 415 problem, not a parse of the wrong format
    body = assert_problem(response, 415, "unsupported_media_type")
    assert content_type in body["detail"]


def test_multipart_body_gives_unsupported_media_type(client):
    # when a form is posted as multipart/form-data (the test client's default)
    response = client.post(ECHO, {"name": "rent", "amount": "1"})

    # then it is a 415 problem
    body = assert_problem(response, 415, "unsupported_media_type")
    assert "multipart/form-data" in body["detail"]


def test_unknown_field_gives_validation_error_with_unknown_field_code(client):
    # when the body carries a field the serializer does not declare
    response = client.post(ECHO, {"name": "rent", "amount": 1, "amout": 2}, content_type="application/json")

    # then it is refused (not silently dropped), with the field named
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"] == [
        {"field": "amout", "pointer": "#/amout", "code": "unknown_field", "detail": "Unknown field."}
    ]


def test_missing_and_out_of_range_fields_give_one_error_each_with_a_pointer(client):
    # when a required field is missing and another breaks its minimum
    response = client.post(ECHO, {"amount": 0}, content_type="application/json")

    # then each field has its own error with a JSON pointer and a stable code
    body = assert_problem(response, 400, "validation_error")
    errors = {e["field"]: e for e in body["errors"]}
    assert set(errors) == {"name", "amount"}
    assert errors["name"]["code"] == "required"
    assert errors["name"]["pointer"] == "#/name"
    assert errors["amount"]["code"] == "min_value"
    assert errors["amount"]["pointer"] == "#/amount"
    assert "amount: " in body["detail"]
    assert "name: " in body["detail"]


def test_non_object_body_gives_validation_error_not_500(client):
    # when the JSON document is a list instead of an object
    response = client.post(ECHO, "[1, 2]", content_type="application/json")

    # then it is a validation error
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["field"] is None


def test_body_at_the_size_limit_is_accepted(client):
    # given a valid document padded with whitespace to exactly the limit
    document = '{"name": "rent", "amount": 3}'
    padded = document + " " * (settings.ATRIUM_MAX_BODY_BYTES - len(document))

    # when it is posted
    response = client.post(ECHO, padded, content_type="application/json")

    # then it is parsed
    assert response.status_code == 201
    assert response.json() == {"name": "rent", "amount": 3}


def test_body_over_the_size_limit_gives_payload_too_large(client):
    # when the body is one byte over ATRIUM_MAX_BODY_BYTES
    size = settings.ATRIUM_MAX_BODY_BYTES + 1
    response = client.post(ECHO, b" " * size, content_type="application/json")

    # then it is refused with 413 before being parsed
    body = assert_problem(response, 413, "payload_too_large")
    assert str(size) in body["detail"]


def test_invalid_content_length_gives_bad_request(client):
    # when the Content-Length header is not a number
    response = client.post(ECHO, "{}", content_type="application/json", CONTENT_LENGTH="12abc")

    # then it is a 400 problem
    body = assert_problem(response, 400, "bad_request")
    assert "Content-Length" in body["detail"]


def test_unknown_route_gives_not_found_problem(client):
    # when nothing is routed at the path
    response = client.get("/api/v1/nothing-here", HTTP_ACCEPT="text/html")

    # then it is a problem document (never an HTML page), naming the path
    body = assert_problem(response, 404, "not_found")
    assert body["instance"] == "/api/v1/nothing-here"
    assert "/api/v1/nothing-here" in body["detail"]


def test_wrong_method_gives_method_not_allowed_with_allow_header(client):
    # when the echo view (POST only) is asked with GET
    response = client.get(ECHO)

    # then it is a 405 problem listing the allowed methods
    body = assert_problem(response, 405, "method_not_allowed")
    assert "GET" in body["detail"]
    assert "POST" in response["Allow"]


def test_domain_error_gives_its_status_code_and_extra_fields(client):
    # when a view raises a DomainError subclass
    response = client.post("/api/v1/pay", {}, content_type="application/json")

    # then its status, code, title, detail and extra fields make the problem
    body = assert_problem(response, 409, "insufficient_funds")
    assert body["title"] == "Insufficient funds"
    assert body["detail"] == "Account acc_1 holds 5, the transfer needs 10."
    assert body["available"] == 5
    assert body["instance"] == "/api/v1/pay"


def test_domain_error_headers_reach_the_response(client):
    # when a view raises a DomainError that carries a header
    response = client.get("/api/v1/busy")

    # then the problem document comes with it
    assert_problem(response, 429, "rate_limited")
    assert response["Retry-After"] == "30"


def test_unreachable_upstream_gives_503_upstream_unavailable(client):
    # when a view's call to an upstream where nothing listens fails after its retries
    response = client.get("/api/v1/relay", {"upstream": f"http://127.0.0.1:{free_port()}"})

    # then the caller gets a 503 problem, not a 500
    body = assert_problem(response, 503, "upstream_unavailable")
    assert "2 attempt(s)" in body["detail"]


def test_unhandled_exception_gives_internal_error_problem_without_traceback():
    # given a client that returns 500 responses instead of re-raising
    client = Client(raise_request_exception=False)

    # when the view hits a bug
    response = client.get("/api/v1/bug", HTTP_X_REQUEST_ID="req-bug-1")

    # then the caller gets a generic problem document with the request id and nothing internal
    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "req-bug-1"
    assert body["instance"] == "/api/v1/bug"
    text = response.content.decode()
    assert "ZeroDivisionError" not in text
    assert "Traceback" not in text
    assert "division" not in text


def test_malformed_id_in_the_path_gives_not_found(client):
    # when the path holds something that is not an account id
    response = client.get("/api/v1/accounts/not-an-id")

    # then it is a 404 problem, not a 500 from the lookup
    body = assert_problem(response, 404, "not_found")
    assert "not-an-id" in body["detail"]


def test_well_formed_id_in_the_path_reaches_the_view(client):
    # given a well-formed account id
    account_id = id_new("acc")

    # when it is looked up
    response = client.get(f"/api/v1/accounts/{account_id}")

    # then the view answers
    assert response.status_code == 200
    assert response.json() == {"id": account_id}


def test_malformed_json_over_real_http_gives_problem_details(live_server):
    # when malformed JSON is posted over a real socket
    response = httpx.post(
        f"{live_server.url}{ECHO}", content=b'{"name": ', headers={"Content-Type": "application/json"}, timeout=10
    )

    # then the wire response is the problem document, its request id in body and header
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == "malformed_json"
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
    assert body["request_id"] == response.headers["x-request-id"]


def test_unhandled_exception_over_real_http_gives_internal_error_problem(live_server):
    # when a view hits a bug behind a real server
    response = httpx.get(f"{live_server.url}/api/v1/bug", headers={"X-Request-ID": "req-live-bug"}, timeout=10)

    # then the wire response is a generic 500 problem with the caller's request id
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-request-id"] == "req-live-bug"
    body = response.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "req-live-bug"
    assert "ZeroDivisionError" not in response.text


def test_unknown_route_over_real_http_gives_not_found_problem(live_server):
    # when an unknown path is asked over a real socket
    response = httpx.get(f"{live_server.url}/nope/nothing", timeout=10)

    # then it is a problem document
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "not_found"


def test_id_with_an_encoded_trailing_newline_gives_not_found(client):
    # given a well-formed account id followed by a percent-encoded newline
    account_id = id_new("acc")

    # when it is looked up
    response = client.get(f"/api/v1/accounts/{account_id}%0A")

    # then it is not taken for the id
    assert_problem(response, 404, "not_found")


def test_openapi_schema_declares_bearer_auth_for_jwt_views(client):
    # when the OpenAPI schema is fetched
    schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()

    # then JWT-protected operations name the bearer scheme
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert {"bearerAuth": []} in schema["paths"]["/api/v1/whoami"]["get"]["security"]
