"""The portal publishes what verifiers must refuse — revoked clients, secrets rotated out — on real Redis once the
change commits and at its public endpoint; its own reads honour it within seconds, and its writes check the calling
client's row at once."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import redis
from django.db import transaction
from django.test import Client
from django.utils import timezone

from portal.identity import services
from portal.identity.models import MachineClient
from portal.identity.revocations import _republisher, revocation_publish, revocations_reconcile
from services.kit.models import OutboxEvent
from services.kit.revocations import COMPLETE_FIELD, revocation_watcher, revocations_parse, revocations_store
from tests.harness import wait_until
from tests.portal.factories import machine_client
from tests.portal.helpers import CLIENTS_URL
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

ENDPOINT = "/.well-known/atrium-revocations.json"
HEARTBEAT = "/api/v1/catalog/services/nowhere/instances/host-1/heartbeat"


@pytest.fixture
def published(settings):
    """A Redis hash and channel of this test's own, holding the (empty) whole list, so the portal's watcher trusts
    it and reads it afresh (rather than this test's uncommitted rows through the portal's own reconcile)."""
    settings.JWT_REVOCATIONS_KEY = f"atrium:test:revocations:{uuid.uuid4().hex}"
    settings.JWT_REVOCATIONS_POLL_SECONDS = 0.2
    settings.ATRIUM_OUTBOX_RELAY = "off"
    conn = redis.Redis.from_url(settings.REDIS_URL)
    revocations_store(conn, {}, complete=True)
    revocation_watcher().clear()
    try:
        yield conn
    finally:
        conn.delete(settings.JWT_REVOCATIONS_KEY)
        revocation_watcher().clear()
        conn.close()


def _stored(conn: redis.Redis, key: str) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in conn.hgetall(key).items() if not k.startswith(b"_")}


def _api(token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def _audited(action: str) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if r.payload["action"] == action]


def test_a_revocation_is_published_once_it_commits(published, settings, django_capture_on_commit_callbacks):
    machine = machine_client()
    listener = published.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(settings.JWT_REVOCATIONS_KEY)
    listener.get_message(timeout=1)

    # when the client is revoked, nothing is published before the commit
    with django_capture_on_commit_callbacks(execute=False) as pending:
        services.client_revoke(client=machine.client)
    assert _stored(published, settings.JWT_REVOCATIONS_KEY) == {}

    # and once it commits, the cut-off is in the hash and announced on the channel
    for callback in pending:
        callback()
    row = MachineClient.objects.get(pk=machine.id)
    entry = _stored(published, settings.JWT_REVOCATIONS_KEY)[machine.id]
    assert entry["not_before"] == row.revoked_at.timestamp() == row.tokens_not_before.timestamp()
    assert entry["until"] == row.revocation_until.timestamp()
    assert entry["until"] >= entry["not_before"] + 3600  # as long as a token it refuses may live
    assert listener.get_message(timeout=1)["data"] == machine.id.encode()
    listener.close()


def test_a_revocation_rolled_back_is_never_published(published, settings, django_capture_on_commit_callbacks):
    machine = machine_client()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):  # noqa: PT012
        with transaction.atomic():
            services.client_revoke(client=machine.client)
            raise RuntimeError("something after it failed")

    assert _stored(published, settings.JWT_REVOCATIONS_KEY) == {}
    assert MachineClient.objects.get(pk=machine.id).is_active


def test_tokens_name_the_secret_that_obtained_them_and_rotations_are_published(
    published, settings, mint_token, django_capture_on_commit_callbacks
):
    machine = machine_client()
    first = jwt.decode(mint_token(machine, "ledger"), options={"verify_signature": False})
    assert first["sgen"] == 0

    # when the secret is rotated with a grace period
    with django_capture_on_commit_callbacks(execute=True):
        new_secret = services.client_rotate_secret(client=machine.client, grace_seconds=120)

    # then the old secret's tokens say generation 0, the new one's 1, and the cut-off is published
    old_token = jwt.decode(mint_token(machine, "ledger"), options={"verify_signature": False})
    renewed = type(machine)(client=machine.client, secret=new_secret)
    new_token = jwt.decode(mint_token(renewed, "ledger"), options={"verify_signature": False})
    assert (old_token["sgen"], new_token["sgen"]) == (0, 1)
    row = MachineClient.objects.get(pk=machine.id)
    entry = _stored(published, settings.JWT_REVOCATIONS_KEY)[machine.id]
    assert entry["secret_generation"] == 1
    assert entry["previous_secret_valid_until"] == row.previous_secret_valid_until.timestamp()
    assert entry["not_before"] is None
    assert entry["until"] >= row.previous_secret_valid_until.timestamp() + 3600


def test_the_endpoint_is_public_and_lists_only_clients_whose_tokens_must_be_checked(client, published):
    revoked = machine_client(revoked=True)
    rotated = machine_client()
    services.client_rotate_secret(client=rotated.client, grace_seconds=0)
    untouched = machine_client()
    long_ago = machine_client(revoked=True)
    MachineClient.objects.filter(pk=long_ago.id).update(revocation_until=timezone.now())

    # when anyone (no credentials at all) reads the list
    response = client.get(ENDPOINT)

    # then it answers, uncached, with exactly the clients verifiers must still check
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    entries = revocations_parse(response.json())
    assert set(entries) == {revoked.id, rotated.id}
    assert entries[revoked.id].not_before == MachineClient.objects.get(pk=revoked.id).revoked_at.timestamp()
    assert entries[rotated.id].secret_generation == 1
    assert entries[rotated.id].previous_valid_until is None  # no grace: cut off at once
    assert untouched.id not in response.content.decode()
    assert revoked.secret not in response.content.decode()
    assert_problem(client.post(ENDPOINT), 405, "method_not_allowed")
    assert client.head(ENDPOINT).status_code == 200


def test_the_portal_s_own_reads_refuse_a_revoked_client_s_token_within_seconds(
    published, mint_token, django_capture_on_commit_callbacks
):
    # given a client whose token reads the portal
    reader = machine_client(audiences=["portal"], scopes=["portal:read"])
    api = _api(mint_token(reader, "portal"))
    assert api.get("/api/v1/me").status_code == 200

    # when it is revoked (and the revocation commits)
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        services.client_revoke(client=reader.client)

    # then its token is refused on reads too, within seconds
    wait_until(lambda: api.get("/api/v1/me").status_code == 401, timeout=5, what="the refusal", every=0.05)
    assert time.monotonic() - started < 5
    assert_problem(api.get(CLIENTS_URL), 401, "token_revoked")


def test_reconciling_mends_a_redis_that_lost_the_list(published, settings):
    # given revocations in the database that Redis lost (e.g. FLUSHALL), and a stray entry Redis alone knows
    revoked = machine_client(revoked=True)
    rotated = machine_client()
    services.client_rotate_secret(client=rotated.client, grace_seconds=60)
    published.delete(settings.JWT_REVOCATIONS_KEY)
    published.hset(settings.JWT_REVOCATIONS_KEY, "cli_stray", json.dumps({"not_before": 1.0, "until": 9e9}))

    # when the portal reconciles (its processes do when Redis is not complete, and every minute)
    document = revocations_reconcile()

    # then Redis holds the whole list again, marked complete, the stray entry kept (nothing is ever loosened)
    assert set(revocations_parse(document)) == {revoked.id, rotated.id}
    assert set(_stored(published, settings.JWT_REVOCATIONS_KEY)) == {revoked.id, rotated.id, "cli_stray"}
    assert published.hget(settings.JWT_REVOCATIONS_KEY, COMPLETE_FIELD) == b"1"


def test_a_publish_redis_refused_is_logged_and_made_again_once_redis_is_back(published, settings, caplog):
    # given a committed revocation whose publication Redis refuses
    revoked = machine_client(revoked=True)
    redis_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    # then the caller is not failed: it is logged, and kept to be published again
    assert revocation_publish(revoked.id) is False
    assert "identity.revocation_publish_failed" in [r.getMessage() for r in caplog.records]
    time.sleep(0.6)
    assert revoked.id in _republisher.pending()

    # and once Redis is back, it is published without anyone asking
    settings.REDIS_URL = redis_url
    wait_until(
        lambda: revoked.id in _stored(published, settings.JWT_REVOCATIONS_KEY), timeout=5, what="the publication"
    )
    wait_until(lambda: not _republisher.pending(), timeout=2, what="nothing left to publish")


# ------------------------------------------------------------------------------ the caller's status on writes


def test_a_revoked_client_s_token_cannot_write_on_the_portal_even_before_the_revocation_spreads(published, mint_token):
    # given a client allowed to manage clients and to heartbeat, with tokens for both
    machine = machine_client(audiences=["portal", "ledger"], scopes=["identity:manage", "catalog:register"])
    manage = _api(mint_token(machine, "portal", scope="identity:manage"))
    register = _api(mint_token(machine, "portal", scope="catalog:register"))
    body = json.dumps({"name": "made-by-a-ghost", "allowed_audiences": ["ledger"]})
    assert_problem(register.post(HEARTBEAT, "{}", content_type="application/json"), 404, "service_not_found")

    # when it is revoked in the database and the revocation has not reached any copy yet (nothing published)
    services.client_revoke(client=machine.client)
    assert machine.id not in revocation_watcher().entries

    # then each write is refused at once from the client's row, and audited; reads wait for the copy
    assert_problem(manage.post(CLIENTS_URL, body, content_type="application/json"), 403, "client_revoked")
    assert_problem(register.post(HEARTBEAT, "{}", content_type="application/json"), 403, "client_revoked")
    assert manage.get("/api/v1/me").status_code == 200
    assert not MachineClient.objects.filter(name="made-by-a-ghost").exists()
    refusals = _audited("auth.request.refused")
    assert [(e["metadata"]["code"], e["metadata"]["method"], e["outcome"]) for e in refusals] == [
        ("client_revoked", "POST", "failure"),
        ("client_revoked", "POST", "failure"),
    ]
    assert {e["actor"]["id"] for e in refusals} == {machine.id}


def test_a_token_of_a_secret_rotated_out_cannot_write_at_once_but_the_new_secret_s_can(published, mint_token):
    machine = machine_client(audiences=["portal"], scopes=["catalog:register"])
    old = _api(mint_token(machine, "portal"))

    # when the secret is rotated without grace (nothing published: the row decides)
    new_secret = services.client_rotate_secret(client=machine.client, grace_seconds=0)
    new = _api(mint_token(type(machine)(client=machine.client, secret=new_secret), "portal"))

    # then the old secret's token cannot write, the new one's can
    assert_problem(old.post(HEARTBEAT, "{}", content_type="application/json"), 401, "token_revoked")
    assert_problem(new.post(HEARTBEAT, "{}", content_type="application/json"), 404, "service_not_found")
    assert [e["metadata"]["code"] for e in _audited("auth.request.refused")] == ["token_revoked"]


def test_during_the_grace_period_both_secrets_tokens_write(published, mint_token):
    machine = machine_client(audiences=["portal"], scopes=["catalog:register"])
    old = _api(mint_token(machine, "portal"))
    new_secret = services.client_rotate_secret(client=machine.client, grace_seconds=300)
    new = _api(mint_token(type(machine)(client=machine.client, secret=new_secret), "portal"))

    for api in (old, new):
        assert_problem(api.post(HEARTBEAT, "{}", content_type="application/json"), 404, "service_not_found")
    assert not _audited("auth.request.refused")
