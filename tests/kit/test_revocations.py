"""Revoked clients and rotated secrets reach every verifier: published on real Redis (hash + channel) and at the
portal's endpoint (a real HTTP server here), kept in memory by each process's watcher thread, checked on every
request — verified-cache hits included. And a token names exactly one audience."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
import redis

from devtools.infra import free_port
from services.kit import auth
from services.kit.revocations import (
    COMPLETE_FIELD,
    VERSION_FIELD,
    RevocationEntry,
    revocation_watcher,
    revocations_document,
    revocations_parse,
    revocations_store,
    revocations_url,
)
from tests.harness import wait_until
from tests.problems import assert_problem

pytestmark = pytest.mark.urls("tests.kit.urls")

WHOAMI = "/api/v1/whoami"
KEEP = 3900.0


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def revoked_at(moment: float) -> RevocationEntry:
    return RevocationEntry(not_before=moment, until=moment + KEEP)


def rotated(generation: int, grace_until: float | None) -> RevocationEntry:
    return RevocationEntry(secret_generation=generation, previous_valid_until=grace_until, until=time.time() + KEEP)


@pytest.fixture
def published(settings, jwks_server):
    """A Redis hash of this test's own, holding the portal's (empty) list, and a watcher that reads it afresh."""
    settings.JWT_REVOCATIONS_KEY = f"atrium:test:revocations:{uuid.uuid4().hex}"
    settings.JWT_REVOCATIONS_POLL_SECONDS = 0.2
    conn = redis.Redis.from_url(settings.REDIS_URL)
    revocations_store(conn, {}, complete=True)
    revocation_watcher().clear()
    try:
        yield conn
    finally:
        conn.delete(settings.JWT_REVOCATIONS_KEY)
        revocation_watcher().clear()
        conn.close()


def _refused_within(client, token: str, seconds: float) -> float:
    """Seconds until ``token`` is refused as revoked (fails after ``seconds``)."""
    started = time.monotonic()

    def refused() -> bool:
        response = client.get(WHOAMI, **bearer(token))
        if response.status_code == 200:
            return False
        assert_problem(response, 401, "token_revoked")
        return True

    wait_until(refused, timeout=seconds, what="the token to be refused", every=0.05)
    return time.monotonic() - started


# ------------------------------------------------------------------------------------ the rule, entry by entry


@pytest.mark.parametrize(
    ("claims", "refused"),
    [
        pytest.param({"iat": 999}, "revoked", id="issued-before"),
        pytest.param({"iat": 1000}, "revoked", id="issued-in-the-second-of-the-revocation"),
        pytest.param({"iat": 1001}, None, id="issued-after-a-reactivation"),
        pytest.param({}, "revoked", id="no-iat"),
        pytest.param({"iat": "999"}, "revoked", id="iat-not-a-number"),
    ],
)
def test_a_revoked_client_s_tokens_issued_until_the_revocation_are_refused(claims, refused):
    entry = RevocationEntry(not_before=1000.0, until=9e9)

    assert entry.refusal({"sub": "cli_x", **claims}, now=2000.0) == refused


@pytest.mark.parametrize(
    ("generation", "now", "refused"),
    [
        pytest.param(3, 100.0, None, id="current-secret"),
        pytest.param(2, 100.0, None, id="previous-secret-in-its-grace"),
        pytest.param(2, 200.0, "rotated", id="previous-secret-grace-over"),
        pytest.param(1, 100.0, "rotated", id="older-secret-at-once"),
        pytest.param(None, 100.0, "rotated", id="no-claim-reads-as-the-first-secret"),
        pytest.param(True, 100.0, "rotated", id="claim-not-an-integer"),
    ],
)
def test_tokens_of_a_rotated_secret_are_refused_once_its_grace_is_over(generation, now, refused):
    entry = RevocationEntry(secret_generation=3, previous_valid_until=150.0, until=9e9)
    claims = {"sub": "cli_x", "iat": 50} | ({"sgen": generation} if generation is not None else {})

    assert entry.refusal(claims, now=now) == refused


def test_a_rotation_without_grace_refuses_the_previous_secret_s_tokens_at_once():
    entry = RevocationEntry(secret_generation=1, previous_valid_until=None, until=9e9)

    assert entry.refusal({"sgen": 0, "iat": 1}, now=0.0) == "rotated"
    assert entry.refusal({"sgen": 1, "iat": 1}, now=0.0) is None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            RevocationEntry(not_before=10.0, until=50.0), RevocationEntry(not_before=5.0, until=40.0), id="nb"
        ),
        pytest.param(rotated(3, 100.0), rotated(2, 500.0), id="older-rotation"),
        pytest.param(revoked_at(10.0), rotated(1, None), id="revoked-then-rotated"),
    ],
)
def test_merging_never_loosens_an_entry_in_either_order(first, second):
    for merged in (first.merge(second), second.merge(first)):
        for claims, now in [({"iat": 7, "sgen": 1}, 0.0), ({"iat": 7, "sgen": 2}, 200.0), ({"iat": 12}, 0.0)]:
            if first.refusal(claims, now) or second.refusal(claims, now):
                assert merged.refusal(claims, now), (merged, claims)
        assert merged.until == max(first.until, second.until)


def test_the_endpoint_document_round_trips_and_junk_is_refused():
    entries = {"cli_a": revoked_at(1000.0), "cli_b": rotated(2, 1500.0)}

    assert revocations_parse(json.loads(json.dumps(revocations_document(entries)))) == entries
    junk = {
        "not a JSON object": [],
        "'clients' object": {"clients": []},
        "bad secret_generation": {"clients": {"cli_a": {"secret_generation": -1, "until": 1}}},
        "needs 'until'": {"clients": {"cli_a": {"not_before": 1}}},
        "not a number": {"clients": {"cli_a": {"not_before": "soon", "until": 1}}},
    }
    for reason, document in junk.items():
        with pytest.raises(ValueError, match=reason):
            revocations_parse(document)


def test_the_endpoint_is_found_next_to_the_key_set_unless_set(settings):
    settings.JWT_REVOCATIONS_URL = ""
    settings.JWT_JWKS_URL = "http://portal.internal:8000/.well-known/jwks.json"
    assert revocations_url() == "http://portal.internal:8000/.well-known/atrium-revocations.json"

    settings.JWT_REVOCATIONS_URL = "https://idp.example/revoked.json"
    assert revocations_url() == "https://idp.example/revoked.json"


# ------------------------------------------------------------------------------------ the Redis hash and channel


def test_storing_merges_with_what_is_there_drops_what_expired_and_announces(published, settings):
    key = settings.JWT_REVOCATIONS_KEY
    listener = published.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(key)
    listener.get_message(timeout=1)
    now = time.time()
    stale = RevocationEntry(not_before=now - 10, until=now + 0.5)
    newer = RevocationEntry(secret_generation=3, until=now + KEEP)
    assert revocations_store(published, {"cli_new": newer, "cli_stale": stale}) == 2

    # when an older rotation of the same client is stored later (a writer that read the database earlier)
    older = RevocationEntry(secret_generation=2, previous_valid_until=now + 60, until=now + KEEP)
    assert revocations_store(published, {"cli_new": older}) == 0
    # and the short-lived entry has expired by the next write
    time.sleep(0.6)
    assert revocations_store(published, {"cli_other": revoked_at(now)}) == 2

    # then the newer rotation is kept, the expired entry is gone, and every change was announced
    stored = published.hgetall(key)
    assert json.loads(stored[b"cli_new"])["secret_generation"] == 3
    assert b"cli_stale" not in stored
    assert stored[COMPLETE_FIELD.encode()] == b"1"
    assert int(stored[VERSION_FIELD.encode()]) == 3  # the complete (empty) list, then two changes
    messages = [listener.get_message(timeout=1) for _ in range(2)]
    assert [m["data"] for m in messages] == [b"cli_new,cli_stale", b"cli_other"]
    listener.close()


# ------------------------------------------------------------------------------------ through a service


def test_a_revoked_client_s_token_is_refused_within_seconds_even_from_the_verified_cache(
    client, published, signing_key
):
    # given a token the ledger accepted, so it sits in the verified-token cache
    token = signing_key.mint(sub="cli_gone")
    other = signing_key.mint(sub="cli_kept")
    assert client.get(WHOAMI, **bearer(token)).status_code == 200
    assert auth.verified_cache().get("ledger", token) is not None

    # when the portal publishes the client's revocation
    revocations_store(published, {"cli_gone": revoked_at(time.time())})

    # then the ledger refuses it within seconds, and still accepts another client's token
    assert _refused_within(client, token, seconds=5) < 5
    assert auth.verified_cache().get("ledger", token) is None
    assert client.get(WHOAMI, **bearer(other)).status_code == 200


def test_after_a_rotation_only_tokens_of_the_secret_rotated_out_are_refused(client, published, signing_key):
    now = int(time.time())
    old = signing_key.mint(sub="cli_rot", sgen=0, iat=now - 5)
    new = signing_key.mint(sub="cli_rot", sgen=1)
    legacy = signing_key.mint(sub="cli_rot")  # minted before tokens named their secret
    for token in (old, new, legacy):
        assert client.get(WHOAMI, **bearer(token)).status_code == 200

    # while the old secret is in its grace period (a short one), both keep working
    grace_over = time.time() + 4.0
    revocations_store(published, {"cli_rot": rotated(1, grace_over)})
    wait_until(lambda: "cli_rot" in revocation_watcher().entries, timeout=5, what="the rotation", every=0.05)
    assert client.get(WHOAMI, **bearer(old)).status_code == 200
    assert time.time() < grace_over

    # once it is over, old-secret tokens are refused (without anything published again) and new-secret ones not
    _refused_within(client, old, seconds=5)
    assert time.time() >= grace_over
    _refused_within(client, legacy, seconds=1)
    assert client.get(WHOAMI, **bearer(new)).status_code == 200


def test_when_redis_lost_the_list_the_portal_endpoint_is_read(client, settings, jwks_server, signing_key):
    # given a Redis hash holding a stray entry but not the portal's whole list (e.g. after FLUSHALL)
    settings.JWT_REVOCATIONS_KEY = f"atrium:test:revocations:{uuid.uuid4().hex}"
    conn = redis.Redis.from_url(settings.REDIS_URL)
    revocations_store(conn, {"cli_elsewhere": revoked_at(time.time())})
    assert conn.hget(settings.JWT_REVOCATIONS_KEY, COMPLETE_FIELD) is None
    jwks_server.revocations = {"cli_endpoint": revoked_at(time.time())}
    revocation_watcher().clear()
    try:
        # then a revocation known only to the portal's endpoint is enforced, and the stray one too
        assert_problem(client.get(WHOAMI, **bearer(signing_key.mint(sub="cli_endpoint", iat=1))), 401, "token_revoked")
        assert revocation_watcher().entries.keys() >= {"cli_endpoint", "cli_elsewhere"}
        assert client.get(WHOAMI, **bearer(signing_key.mint(sub="cli_fine"))).status_code == 200
    finally:
        conn.delete(settings.JWT_REVOCATIONS_KEY)
        revocation_watcher().clear()
        conn.close()


def test_with_redis_and_the_portal_away_the_last_list_is_kept_and_that_is_logged(
    client, published, settings, jwks_server, signing_key, caplog
):
    # given a process that learnt a revocation
    revocations_store(published, {"cli_gone": revoked_at(time.time())})
    token = signing_key.mint(sub="cli_gone", iat=int(time.time()) - 5)
    _refused_within(client, token, seconds=5)
    fine = signing_key.mint(sub="cli_fine")
    assert client.get(WHOAMI, **bearer(fine)).status_code == 200  # the key set is cached too

    # when Redis and the portal both stop answering
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    jwks_server.server.stop()
    assert revocation_watcher().refresh(force=True) is False

    # then the revocation still holds, other tokens still work, and the staleness is in the log
    assert_problem(client.get(WHOAMI, **bearer(token)), 401, "token_revoked")
    assert client.get(WHOAMI, **bearer(fine)).status_code == 200
    stale = [r for r in caplog.records if r.getMessage() == "revocations.stale"]
    assert stale, [r.getMessage() for r in caplog.records]


def test_a_process_that_never_read_the_list_refuses_tokens_until_it_can(client, published, settings, signing_key):
    # given a fresh process (nothing read yet) while neither Redis nor the endpoint answers
    redis_url = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.JWT_REVOCATIONS_URL = f"http://127.0.0.1:{free_port()}/.well-known/atrium-revocations.json"
    revocation_watcher().clear()
    token = signing_key.mint(sub="cli_any")

    # then it does not accept a token it cannot check
    assert_problem(client.get(WHOAMI, **bearer(token)), 503, "revocations_unavailable")

    # and once Redis is back it does
    settings.REDIS_URL = redis_url
    wait_until(lambda: client.get(WHOAMI, **bearer(token)).status_code == 200, timeout=5, what="recovery")


def test_a_forked_child_reads_the_list_again_with_a_thread_of_its_own(published, signing_key):
    # given a parent process whose watcher is running and loaded
    revocations_store(published, {"cli_gone": revoked_at(time.time())})
    watcher = revocation_watcher()
    assert watcher.refusal({"sub": "cli_other", "iat": 1}) is None
    parent_thread = watcher._thread
    assert parent_thread is not None
    assert parent_thread.is_alive()

    # when the process forks (as gunicorn forks its workers)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave at once
        try:
            before = {"thread": watcher._thread is not None, "loaded": watcher._loaded}
            refused = watcher.refusal({"sub": "cli_gone", "iat": 1})
            after = {"alive": watcher._thread is not None and watcher._thread.is_alive()}
            os.write(write, json.dumps({**before, "refused": refused, **after}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        seen = json.loads(pipe.read())
    os.waitpid(pid, 0)

    # then the child had no thread and no list, read the list itself and started its own thread
    assert seen == {"thread": False, "loaded": False, "refused": "revoked", "alive": True}
    assert parent_thread.is_alive()


# ------------------------------------------------------------------------------------ one audience per token


@pytest.mark.parametrize(
    "aud",
    [
        pytest.param(["ledger"], id="a-list-of-one-that-is-ours"),
        pytest.param(["ledger", "payments"], id="ours-among-others"),
        pytest.param(["payments", "portal"], id="others-only"),
        pytest.param([], id="empty-list"),
        pytest.param(7, id="not-a-string"),
    ],
)
def test_a_token_naming_anything_but_one_audience_is_refused(client, published, signing_key, aud):
    response = client.get(WHOAMI, **bearer(signing_key.mint(aud=aud)))

    body = assert_problem(response, 401, "invalid_token")
    assert "audience" in body["detail"]


def test_a_token_naming_this_service_alone_is_accepted_and_another_alone_is_403(client, published, signing_key):
    assert client.get(WHOAMI, **bearer(signing_key.mint(aud="ledger"))).status_code == 200
    assert_problem(client.get(WHOAMI, **bearer(signing_key.mint(aud="payments"))), 403, "invalid_audience")
