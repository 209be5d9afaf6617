"""Instants in query parameters are read as UTC everywhere: offsets PostgreSQL would refuse, or that overflow
when converted, are the client's 400 (or a valid UTC instant), never a database error's 500."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import OperationalError
from django.test import Client

from portal.catalog.models import Service
from services.kit.errors import problem_exception_handler
from services.kit.timestamps import timestamp_parse
from tests.portal.factories import machine_client
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-04T10:00:00Z", "2026-12-04T10:00:00+00:00"),
        ("2026-12-04T10:00:00", "2026-12-04T10:00:00+00:00"),
        ("4020-04-29T20:15:08.134-21:28", "4020-04-30T17:43:08.134000+00:00"),
        ("2026-12-04T10:00:00+23:59", "2026-12-03T10:01:00+00:00"),
    ],
)
def test_an_instant_is_read_as_utc_whatever_its_offset(text, utc):
    assert timestamp_parse(text).isoformat() == utc


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "yesterday", ""])
def test_an_instant_that_cannot_be_one_in_utc_is_refused(text):
    with pytest.raises(ValueError):  # noqa: PT011  (the message names the value)
        timestamp_parse(text)


def _reader(mint_token, *scopes: str) -> Client:
    machine = machine_client(audiences=["portal"], scopes=list(scopes))
    return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal', scope=' '.join(scopes))}")


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/api/v1/jobs/failures", "jobs:read"),
        ("/api/v1/jobs/tasks", "jobs:read"),
        ("/api/v1/audit/events", "audit:read"),
    ],
)
def test_far_offsets_in_filters_are_answered_not_a_500(mint_token, path, scope):
    client = _reader(mint_token, scope)
    since = "occurred_after" if "audit" in path else "since"
    until = "occurred_before" if "audit" in path else "until"

    far = client.get(path, {since: "2026-12-04T15:07:55Z", until: "4020-04-29T20:15:08.134-21:28"})
    assert far.status_code == 200, far.content

    overflow = client.get(path, {until: "9999-12-31T23:59:59-01:00"})
    assert_problem(overflow, 400, "validation_error")


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/api/v1/jobs/throughput", "jobs:read"),
        ("/api/v1/catalog/services/ledger/health/hours", "portal:read"),
    ],
)
def test_far_offsets_in_time_windows_are_answered_not_a_500(mint_token, path, scope):
    # given a service to ask about, and a reader
    Service.objects.create(slug="ledger", display_name="Ledger")
    client = _reader(mint_token, scope)

    # when a window's ends carry offsets PostgreSQL refuses, or overflow in UTC
    far = client.get(path, {"since": "2026-12-04T10:00:00+23:59", "until": "2026-12-03T10:30:00Z"})
    overflow = client.get(path, {"until": "9999-12-31T23:59:59-01:00"})

    # then the first is an answer, the second the client's 400
    assert far.status_code == 200, far.content
    assert far.json()["since"].startswith("2026-12-03T10:")
    problem = assert_problem(overflow, 400, "validation_error")
    assert {e["field"] for e in problem["errors"]} == {"until"}


def test_a_model_validation_error_is_a_400_and_an_unreachable_database_a_503():
    from django.core.exceptions import ValidationError

    invalid = problem_exception_handler(ValidationError({"name": ["Already taken."]}), {})
    assert (invalid.status_code, invalid.data["code"], invalid.data["errors"][0]["field"]) == (
        400,
        "validation_error",
        "name",
    )
    away = problem_exception_handler(OperationalError("connection refused"), {})
    assert (away.status_code, away.data["code"], away["Retry-After"]) == (503, "database_unavailable", "1")


def test_naive_instants_in_forms_are_utc():
    from services.kit.timestamps import UTCDateTimeField

    assert UTCDateTimeField().clean("2026-12-04T10:00:00") == dt.datetime(2026, 12, 4, 10, tzinfo=dt.UTC)
