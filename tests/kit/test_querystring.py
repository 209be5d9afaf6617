"""NUL in a query parameter or the path is the client's 400 invalid_characters before any view sees it (the
fuzzer's find: a filter took it to PostgreSQL, which refused it with a 500)."""

from __future__ import annotations

import pytest

from tests.problems import assert_problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/whoami?service=%00",
        "/api/v1/whoami?service=ab%00cd&x=1",
        "/api/v1/whoami?%00=1",
        "/health/live?x=%00",
    ],
)
def test_nul_in_the_query_string_is_invalid_characters(client, path):
    assert_problem(client.get(path), 400, "invalid_characters")


def test_an_encoded_percent_before_zeros_is_not_nul(client):
    # "%2500" is the text "%00", not a NUL: it goes through
    assert client.get("/health/live?x=%2500").status_code == 200
