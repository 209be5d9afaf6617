"""The kit's URL rule (services/kit/canonical_urls.py): one spelling per route, 308 from the slashed one.

tests/url_rule.py proves it route by route for each process; these tests pin the mechanism down.
"""

from __future__ import annotations

import re

import pytest
from django.test import override_settings
from django.urls import get_resolver, resolve

from services.kit.canonical_urls import id_segment

pytestmark = pytest.mark.urls("tests.kit.urls")

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@pytest.mark.parametrize("method", METHODS)
def test_the_slashed_spelling_answers_308_to_the_canonical_url_with_its_query_string(client, method):
    # when a route is called with a trailing slash
    response = client.generic(method, "/api/v1/echo/?a=1&b=%C3%A9", '{"name": "x", "amount": 1}')

    # then the answer is a permanent redirect that keeps the method and body, with the query string as sent
    assert response.status_code == 308
    assert response["Location"] == "/api/v1/echo?a=1&b=%C3%A9"


def test_a_followed_redirect_reaches_the_route_with_the_same_method_and_body(client):
    response = client.post("/api/v1/echo/", {"name": "x", "amount": 3}, content_type="application/json", follow=True)

    assert response.redirect_chain == [("/api/v1/echo", 308)]
    assert (response.status_code, response.json()) == (201, {"name": "x", "amount": 3})


def test_the_redirect_comes_before_the_body_is_read_or_limited(client):
    # given a body over the service's limit, sent to the slashed spelling
    with override_settings(ATRIUM_MAX_BODY_BYTES=10):
        response = client.post("/api/v1/echo/", "x" * 100, content_type="application/json")

    # then the client learns where to send it, not that it is too large for a URL it should not use
    assert (response.status_code, response["Location"]) == (308, "/api/v1/echo")


def test_a_percent_encoded_path_stays_encoded_in_the_location(client):
    response = client.get("/api/v1/accounts/acc%20x/")

    assert (response.status_code, response["Location"]) == (308, "/api/v1/accounts/acc%20x")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/echo",  # the canonical spelling
        "/api/v1/nothing-here/",  # no route without the slash either
        "/api/v1/echo//",  # one slash too many is not a spelling of the route
        "/api/v1/",
        "/",
    ],
)
def test_only_the_slashed_spelling_of_an_existing_route_is_redirected(client, path):
    response = client.get(path)

    assert response.status_code != 308
    if path != "/api/v1/echo":
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"


@pytest.mark.django_db
@pytest.mark.urls("services.ledger.urls")
def test_the_admin_keeps_its_own_trailing_slash(client):
    assert client.get("/admin/login/").status_code == 200


@pytest.mark.urls("services.ledger.urls")
def test_transactions_batch_is_never_a_transaction_id(client):
    # the batch endpoints resolve to themselves, in either order of the patterns
    assert resolve("/api/v1/transactions/batch").url_name == "transaction-batch"
    assert resolve("/api/v1/transactions/batch/settle").url_name == "transaction-batch-settle"
    detail = next(
        entry
        for entry in get_resolver("services.ledger.api.urls").url_patterns
        if getattr(entry, "name", None) == "transaction-detail"
    )
    assert detail.pattern.match("transactions/batch") is None
    assert detail.pattern.match("transactions/txn_0000000000000000000000000a") is not None
    # and the slashed spelling, which used to be the transaction "batch", is sent to the batch endpoint
    response = client.post("/api/v1/transactions/batch/", "{}", content_type="application/json")
    assert (response.status_code, response["Location"]) == (308, "/api/v1/transactions/batch")


def test_id_segment_refuses_the_reserved_words_as_a_whole_segment_only():
    segment = re.compile(rf"^(?P<id>{id_segment('batch', 'retry')})$")

    assert not segment.match("batch")
    assert not segment.match("retry")
    assert segment.match("batches")
    assert segment.match("txn_batch")
    assert segment.match("acc_0000000000000000000000000a")
    assert not segment.match("a/b")
    assert re.fullmatch(id_segment(), "anything")
