"""The token endpoint throttles failed client secrets per client id: a lockout after repeated failures (even for the
right secret), audited once, ended by its cool-off or by an operator (audited); storage bounded by expiry."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlencode

import pytest
import redis
from django.conf import settings
from django.test import Client

from portal.identity.models import MachineClient
from services.kit.models import OutboxEvent
from tests.portal.factories import machine_client, superuser, user_with_role
from tests.portal.helpers import CLIENTS_URL, TOKEN_URL
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture(autouse=True)
def _throttle(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"
    settings.ATRIUM_TOKEN_FAILURE_LIMIT = LIMIT
    settings.ATRIUM_TOKEN_FAILURE_WINDOW_SECONDS = 60
    settings.ATRIUM_TOKEN_LOCKOUT_SECONDS = 30


@pytest.fixture
def conn():
    connection = redis.Redis.from_url(settings.REDIS_URL)
    yield connection
    connection.close()


def _events(action: str) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if r.payload["action"] == action]


def _wrong(request_token, machine, **extra):
    return request_token({**machine.token_request("ledger"), "client_secret": "cs_wrong", **extra})


def test_repeated_failed_secrets_lock_the_client_id_out_even_for_the_right_secret(request_token):
    # given a working client, and another one
    machine, other = machine_client(), machine_client()

    # when its secret is got wrong LIMIT times
    statuses = [_wrong(request_token, machine).status_code for _ in range(LIMIT)]

    # then the last failure starts a lockout ...
    assert statuses == [401] * (LIMIT - 1) + [429]
    # ... during which even the right secret is refused, with when to try again
    response = request_token(machine.token_request("ledger"))
    body = assert_problem(response, 429, "too_many_attempts")
    assert 0 < int(response["Retry-After"]) <= 30
    assert body["retry_after"] == int(response["Retry-After"])
    assert body["error"] == "invalid_client"
    # and the other client is not affected
    assert request_token(other.token_request("ledger")).status_code == 200


def test_the_lockout_is_audited_once_not_per_request(request_token):
    machine = machine_client()
    OutboxEvent.objects.all().delete()

    for _ in range(LIMIT + 5):
        _wrong(request_token, machine)
    request_token(machine.token_request("ledger"))

    (locked,) = _events("auth.token.locked_out")
    assert locked["outcome"] == "failure"
    assert locked["metadata"]["code"] == "too_many_attempts"
    assert locked["metadata"]["failures"] == LIMIT
    assert locked["metadata"]["lockout_seconds"] == 30
    assert locked["actor"] == {"type": "client", "id": machine.id, "display": machine.id}
    # the failures up to the lockout are audited as before; the refused requests after it are not
    assert len(_events("auth.token.failed")) == LIMIT
    assert not _events("auth.token.issued")


def test_failures_outside_the_window_do_not_add_up(request_token, settings):
    settings.ATRIUM_TOKEN_FAILURE_WINDOW_SECONDS = 1
    machine = machine_client()

    for _ in range(LIMIT - 1):
        assert _wrong(request_token, machine).status_code == 401
    time.sleep(1.2)
    for _ in range(LIMIT - 1):
        assert _wrong(request_token, machine).status_code == 401

    assert request_token(machine.token_request("ledger")).status_code == 200


def test_an_unknown_client_id_is_treated_alike_and_its_state_expires(request_token, client, conn):
    # given a client id that does not exist
    unknown = {
        "grant_type": "client_credentials",
        "client_id": "cli_nobody",
        "client_secret": "x",
        "audience": "ledger",
    }

    statuses = [request_token(unknown).status_code for _ in range(LIMIT + 1)]

    # then it is locked out exactly like a real one (which ids exist is not revealed) ...
    assert statuses == [401] * (LIMIT - 1) + [429, 429]
    # ... and everything kept about it expires by itself: nothing grows without bound
    keys = list(conn.scan_iter(match="atrium:identity:token-*cli_nobody"))
    assert keys
    assert all(0 < conn.ttl(key) <= 60 for key in keys)

    # and an id of any length sent as Basic credentials (the body's is bounded) keeps its keys short
    basic = base64.b64encode(("x" * 5000 + ":wrong").encode()).decode()
    for _ in range(LIMIT):
        client.post(
            TOKEN_URL,
            urlencode({"grant_type": "client_credentials", "audience": "ledger"}),
            content_type="application/x-www-form-urlencoded",
            HTTP_AUTHORIZATION=f"Basic {basic}",
        )
    long_keys = list(conn.scan_iter(match="atrium:identity:token-*xxx"))
    assert long_keys
    assert all(len(key) < 120 and conn.ttl(key) > 0 for key in long_keys)


def test_a_redis_outage_does_not_stop_tokens_being_issued(request_token, settings, caplog):
    machine = machine_client()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    assert request_token(machine.token_request("ledger")).status_code == 200
    assert _wrong(request_token, machine).status_code == 401
    assert "identity.token_throttle_unavailable" in [r.getMessage() for r in caplog.records]


def test_throttling_can_be_turned_off(request_token, settings):
    settings.ATRIUM_TOKEN_FAILURE_LIMIT = 0
    machine = machine_client()

    assert {_wrong(request_token, machine).status_code for _ in range(LIMIT + 2)} == {401}
    assert request_token(machine.token_request("ledger")).status_code == 200


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_an_operator_unlocks_a_client_through_the_api_and_it_is_audited(request_token, role):
    # given a locked-out client
    machine = machine_client()
    for _ in range(LIMIT):
        _wrong(request_token, machine)
    assert request_token(machine.token_request("ledger")).status_code == 429
    staff = Client()
    staff.force_login(user_with_role("operator") if role == "operator" else superuser())

    # when an operator unlocks it
    response = staff.post(f"{CLIENTS_URL}/{machine.id}/unlock")

    # then the right secret works again, and who unlocked it is audited
    assert response.status_code == 200, response.content
    assert response.json() == {"client_id": machine.id, "was_locked": True}
    assert request_token(machine.token_request("ledger")).status_code == 200
    (unlocked,) = _events("auth.token.unlocked")
    assert unlocked["actor"]["type"] == "user"
    assert unlocked["object"] == {"type": "machine_client", "id": machine.id}
    assert unlocked["metadata"]["was_locked"] is True
    # and its count starts afresh
    assert _wrong(request_token, machine).status_code == 401


def test_a_viewer_cannot_unlock(request_token, client):
    machine = machine_client()
    for _ in range(LIMIT):
        _wrong(request_token, machine)
    client.force_login(user_with_role("viewer"))

    assert_problem(client.post(f"{CLIENTS_URL}/{machine.id}/unlock"), 403, "role_required")
    assert request_token(machine.token_request("ledger")).status_code == 429
    assert not _events("auth.token.unlocked")


def test_the_admin_shows_the_lockout_and_unlocks(request_token, client):
    machine = machine_client()
    for _ in range(LIMIT):
        _wrong(request_token, machine)
    client.force_login(user_with_role("operator"))
    page = f"/admin/identity/machineclient/{machine.id}/change/"
    assert "locked out for" in client.get(page).content.decode()

    response = client.post(
        "/admin/identity/machineclient/",
        {"action": "unlock_token_endpoint", "_selected_action": [machine.id]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Unlocked 1 client(s)" in response.content.decode()
    assert request_token(machine.token_request("ledger")).status_code == 200
    assert "locked out for" not in client.get(page).content.decode()
    assert len(_events("auth.token.unlocked")) == 1
    assert MachineClient.objects.get(pk=machine.id).is_active
