"""Every response carries an X-Request-ID: the caller's when it is safe, a fresh one otherwise."""

from __future__ import annotations

import re

import httpx
import pytest

from services.kit.context import request_id_clean, request_id_new, request_id_var

GENERATED = re.compile(r"req_[0-9a-f]{32}")


def test_request_without_id_gets_a_generated_one(client):
    # when a request carries no X-Request-ID
    first = client.get("/health/live")
    second = client.get("/health/live")

    # then each response names a fresh, well-formed id
    assert GENERATED.fullmatch(first["X-Request-ID"])
    assert GENERATED.fullmatch(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.parametrize("caller_id", ["abc", "trace-01.span:02_x", "A" * 128, "9f1c2e3d-7a4b-4c5d-8e9f-0a1b2c3d4e5f"])
def test_well_formed_caller_id_is_echoed(client, caller_id):
    # when the caller sends a safe request id
    response = client.get("/health/live", HTTP_X_REQUEST_ID=caller_id)

    # then the response carries the same id
    assert response.status_code == 200
    assert response["X-Request-ID"] == caller_id


@pytest.mark.parametrize(
    "caller_id",
    ["A" * 129, "two words", "abc\n", "abc\nSet-Cookie: x=1", "abc\r", "tab\there", "semi;colon", "émoji-✓", ""],
    ids=[
        "too-long",
        "space",
        "trailing-newline",
        "header-injection",
        "trailing-cr",
        "tab",
        "semicolon",
        "non-ascii",
        "empty",
    ],
)
def test_unsafe_caller_id_is_replaced_by_a_generated_one(client, caller_id):
    # when the caller sends an id that is too long or holds unsafe characters
    response = client.get("/health/live", HTTP_X_REQUEST_ID=caller_id)

    # then the request still succeeds, under a generated id
    assert response.status_code == 200
    assert GENERATED.fullmatch(response["X-Request-ID"])


@pytest.mark.urls("tests.kit.urls")
def test_request_id_is_the_same_in_header_body_and_error(client):
    # when a request fails validation
    response = client.post("/api/v1/echo", "{}", content_type="application/json", HTTP_X_REQUEST_ID="req-same")

    # then header and problem body name the same request
    assert response.status_code == 400
    assert response["X-Request-ID"] == "req-same"
    assert response.json()["request_id"] == "req-same"


def test_request_id_does_not_leak_out_of_the_request(client):
    # given no request id in the test's own context
    assert request_id_var.get() is None

    # when a request is handled
    client.get("/health/live", HTTP_X_REQUEST_ID="req-scoped")

    # then the context variable is reset afterwards
    assert request_id_var.get() is None


def test_caller_id_is_echoed_over_real_http(live_server):
    # when a caller sends its id over a real socket
    response = httpx.get(f"{live_server.url}/health/live", headers={"X-Request-ID": "edge-42"}, timeout=10)

    # then the same id comes back
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "edge-42"


def test_request_id_clean_accepts_only_whole_safe_values():
    # then a value is accepted only when all of it is safe
    assert request_id_clean("ok-1") == "ok-1"
    assert request_id_clean(None) is None
    assert request_id_clean("ok\n") is None
    assert request_id_clean("x" * 129) is None
    assert GENERATED.fullmatch(request_id_new())
