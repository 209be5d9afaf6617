"""POST /api/v1/diagnostics/ping: request → broker → worker → result, here with no worker running."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from tests.portal.factories import machine_client, superuser, user_with_role
from tests.portal.helpers import queued_messages
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

PING_URL = "/api/v1/diagnostics/ping"


def _ping(client: Client, body: dict, **headers: str):
    return client.post(PING_URL, json.dumps(body), content_type="application/json", **headers)


@pytest.mark.parametrize("role", ["viewer", "auditor"])
def test_roles_without_operations_rights_cannot_ping(client, broker, role):
    # given a viewer (or auditor)
    client.force_login(user_with_role(role))

    # when they ask for a ping
    response = _ping(client, {"timeout": 0.5})

    # then they are refused before anything is published
    body = assert_problem(response, 403, "role_required")
    assert "admin, operator" in body["detail"]
    assert queued_messages(broker) == []


def test_no_worker_answering_is_504_worker_timeout(client, broker):
    # given an operator and no portal worker running
    client.force_login(user_with_role("operator"))

    # when they ping with a short timeout
    started = time.monotonic()
    response = _ping(client, {"message": "anyone?", "timeout": 0.5}, HTTP_X_REQUEST_ID="diag-timeout-1")

    # then the portal gives up after about that long with a problem document
    elapsed = time.monotonic() - started
    body = assert_problem(response, 504, "worker_timeout")
    assert body["detail"] == "No portal worker answered within 0.5 s."
    assert 0.4 < elapsed < 5
    # and the task it published waits on the portal queue, stamped with the request's id
    (message,) = queued_messages(broker)
    assert message["headers"]["task"] == "portal.ping"
    assert message["headers"]["request_id"] == "diag-timeout-1"


def test_client_token_needs_portal_write_to_ping(broker, mint_token):
    # given a machine client token with only portal:read
    machine = machine_client(audiences=["portal"], scopes=["portal:read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal')}")

    # then it may not ping
    assert_problem(_ping(api, {"timeout": 0.5}), 403, "insufficient_scope")
    assert queued_messages(broker) == []


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"timeout": 0.01}, "timeout", "min_value"),
        ({"timeout": 31}, "timeout", "max_value"),
        ({"message": "x" * 201}, "message", "max_length"),
        ({"queue": "ledger"}, "queue", "unknown_field"),
    ],
)
def test_ping_request_is_validated(client, broker, body, field, code):
    client.force_login(superuser())

    response = _ping(client, body)

    problem_body = assert_problem(response, 400, "validation_error")
    assert [(e["field"], e["code"]) for e in problem_body["errors"]] == [(field, code)]
    assert queued_messages(broker) == []
