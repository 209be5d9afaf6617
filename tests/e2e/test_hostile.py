"""Hostile tests, one per hardening rule, against real processes (slow: `make test` runs them in CI).

Each rule is proved with more than one case, and with cases other than the ones that revealed it: several
kinds of poisoned item, several spellings of an inside address, several kinds of malformed body.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest

from tests.problems import assert_problem

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


# ----------------------------------------------------------------------------------------------------------
# 1. Poison isolation: one item never stops a batch


# ----------------------------------------------------------------------------------------------------------
# 2. Identity: revocation and least privilege
#
# A live portal (gunicorn, the test database), and a live ledger and payments service trusting its keys: every
# rule is checked where it must hold, over HTTP, with tokens the portal really issued. Revocation is measured from
# the moment the request that revokes is sent until every service refuses the token (401 token_revoked).

IDENTITY_PROPAGATION_SECONDS = 5.0


@pytest.fixture(scope="module")
def identity_services(module_harness, live_portal, jwks_env):
    """Where each audience tells who called it: a live ledger and a live payments service (they only verify
    tokens here) and the live portal itself."""
    ledger = module_harness.web("ledger", env=jwks_env)
    payments = module_harness.web("payments", env=jwks_env)
    return {
        "ledger": f"{ledger.url}/api/v1/whoami",
        "payments": f"{payments.url}/api/v1/whoami",
        "portal": f"{live_portal.url}/api/v1/me",
    }


def _identity_client(**grants):
    """A machine client created in the portal's (test) database: (id, secret)."""
    from portal.identity import services as identity

    made, secret = identity.client_create(name=f"hostile-{uuid.uuid4().hex[:8]}", **grants)
    return made.id, secret


@pytest.fixture
def identity_manager(live_portal, get_token):
    """An all-access client that manages clients (as `make up`'s demo client), and its portal API."""
    from django.conf import settings

    client_id, secret = _identity_client(
        audiences=list(settings.ATRIUM_AUDIENCE_SCOPES),
        scopes=sorted({s for v in settings.ATRIUM_AUDIENCE_SCOPES.values() for s in v}),
    )
    token = get_token(client_id, secret, "portal")
    api = httpx.Client(base_url=live_portal.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    yield client_id, api
    api.close()


def _identity_whoami(url: str, token: str) -> httpx.Response:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _identity_refused_everywhere(tokens: dict[str, str], since: float, limit: float) -> dict[str, float]:
    """Seconds after ``since`` (monotonic) at which each ``{who-am-i url: token}`` was first refused as revoked;
    fails if one is still accepted after ``limit`` seconds."""
    refused: dict[str, float] = {}
    while len(refused) < len(tokens):
        for url, token in tokens.items():
            if url in refused:
                continue
            response = _identity_whoami(url, token)
            if response.status_code == 401:
                assert_problem(response, 401, "token_revoked")
                refused[url] = time.monotonic() - since
            else:
                assert response.status_code == 200, response.text
        waited = time.monotonic() - since
        assert waited <= limit + 1, f"still accepted after {waited:.1f} s: {sorted(set(tokens) - set(refused))}"
        time.sleep(0.05)
    return refused


def _identity_accepted(tokens: dict[str, str]) -> None:
    for url, token in tokens.items():
        response = _identity_whoami(url, token)
        assert response.status_code == 200, (url, response.text)


def _identity_audited(action: str) -> list[dict]:
    from services.kit.models import OutboxEvent

    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if r.payload["action"] == action]


def test_revocation_reaches_the_ledger_payments_and_the_portal_within_5_s_also_for_cached_tokens(
    live_portal, identity_services, identity_manager, get_token
):
    # given a client whose tokens were used on each service, so each sits in that service's verified cache
    victim, secret = _identity_client(audiences=["ledger", "payments", "portal"], scopes=["ledger:read", "portal:read"])
    bystander, other_secret = _identity_client(audiences=["ledger", "payments", "portal"], scopes=[])
    tokens = {url: get_token(victim, secret, audience) for audience, url in identity_services.items()}
    others = {url: get_token(bystander, other_secret, audience) for audience, url in identity_services.items()}
    for _ in range(3):
        _identity_accepted(tokens | others)

    # when it is revoked through the portal's API
    _, api = identity_manager
    since = time.monotonic()
    response = api.post(f"/api/v1/identity/clients/{victim}/revoke")
    assert response.status_code == 200, response.text

    # then every service refuses its tokens within 5 s, and another client's tokens still work
    refused = _identity_refused_everywhere(tokens, since, IDENTITY_PROPAGATION_SECONDS)
    assert max(refused.values()) <= IDENTITY_PROPAGATION_SECONDS, refused
    _identity_accepted(others)
    refusal = httpx.post(
        f"{live_portal.url}/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": victim, "client_secret": secret, "audience": "ledger"},
        timeout=10,
    )
    assert_problem(refusal, 401, "invalid_client")


def test_a_revocation_made_by_another_process_reaches_tokens_never_seen_before(
    identity_services, get_token, transactional_db
):
    # given tokens issued but never presented anywhere (nothing cached)
    from portal.identity import services as identity
    from portal.identity.models import MachineClient

    victim, secret = _identity_client(audiences=["ledger", "payments"], scopes=["ledger:write", "payments:write"])
    tokens = {identity_services[a]: get_token(victim, secret, a) for a in ("ledger", "payments")}

    # when the client is revoked by a process other than the portal's web server (here: this test, committing)
    since = time.monotonic()
    identity.client_revoke(client=MachineClient.objects.get(pk=victim))

    # then the first use of each token, on each service, is refused within 5 s
    refused = _identity_refused_everywhere(tokens, since, IDENTITY_PROPAGATION_SECONDS)
    assert max(refused.values()) <= IDENTITY_PROPAGATION_SECONDS, refused


@pytest.mark.parametrize("lost", ["the-announcement", "the-whole-list"])
def test_a_revocation_arrives_within_5_s_when_redis_lost_the_announcement_or_the_list(
    identity_services, get_token, lost
):
    # given a client whose tokens the ledger and payments accepted (cached)
    import redis
    from django.conf import settings
    from django.utils import timezone

    from portal.identity.models import MachineClient
    from portal.identity.revocations import KEEP, revocation_entry
    from services.kit.revocations import VERSION_FIELD

    victim, secret = _identity_client(audiences=["ledger", "payments"], scopes=["ledger:read"])
    tokens = {identity_services[a]: get_token(victim, secret, a) for a in ("ledger", "payments")}
    _identity_accepted(tokens)
    conn = redis.Redis.from_url(settings.REDIS_URL)
    key = settings.JWT_REVOCATIONS_KEY

    # when the client is revoked in the database ...
    now = timezone.now()
    MachineClient.objects.filter(pk=victim).update(
        is_active=False, revoked_at=now, tokens_not_before=now, revocation_until=now + KEEP
    )
    since = time.monotonic()
    if lost == "the-announcement":
        # ... and its entry reaches the hash but nobody hears of it (no message on the channel)
        entry = revocation_entry(MachineClient.objects.get(pk=victim))
        conn.hset(key, victim, json.dumps(entry.as_json()))
        conn.hincrby(key, VERSION_FIELD, 1)
    else:
        # ... and Redis loses everything it knew of revocations (FLUSHALL, a restart without persistence)
        conn.delete(key)
    conn.close()

    # then the ledger and payments refuse its tokens within 5 s all the same (their poll; the portal's endpoint)
    refused = _identity_refused_everywhere(tokens, since, IDENTITY_PROPAGATION_SECONDS)
    assert max(refused.values()) <= IDENTITY_PROPAGATION_SECONDS, refused


@pytest.mark.parametrize("grace_seconds", [5, 0], ids=["past-its-grace", "without-grace"])
def test_a_rotated_secret_s_tokens_are_refused_once_its_grace_ends_and_the_new_secret_s_are_not(
    identity_services, identity_manager, get_token, grace_seconds
):
    # given a client with tokens for the ledger and payments, used once (cached)
    audiences = ("ledger", "payments")
    client_id, old_secret = _identity_client(audiences=list(audiences), scopes=["ledger:read"])
    before = {identity_services[a]: get_token(client_id, old_secret, a) for a in audiences}
    _identity_accepted(before)

    # when its secret is rotated through the portal's API
    _, api = identity_manager
    sent = time.monotonic()  # the grace ends no earlier than this plus its length
    rotated = api.post(f"/api/v1/identity/clients/{client_id}/rotate-secret", json={"grace_seconds": grace_seconds})
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    new = {identity_services[a]: get_token(client_id, new_secret, a) for a in audiences}
    during: dict[str, str] = {}
    if grace_seconds:
        # during the grace period the old secret still obtains tokens, and every token works
        during = {identity_services[a]: get_token(client_id, old_secret, a) for a in audiences}
        _identity_accepted(before)
        _identity_accepted(during)
        _identity_accepted(new)
        assert time.monotonic() - sent < grace_seconds

    # then, once the grace is over, the old secret's tokens are refused within 5 s on both services
    grace_end = sent + grace_seconds
    time.sleep(max(0.0, grace_end - time.monotonic()))
    refused = _identity_refused_everywhere(before, grace_end, IDENTITY_PROPAGATION_SECONDS)
    assert max(refused.values()) <= IDENTITY_PROPAGATION_SECONDS, refused
    for url, token in during.items():
        assert_problem(_identity_whoami(url, token), 401, "token_revoked")
    # and the new secret's tokens keep working
    _identity_accepted(new)


def test_no_client_can_mint_a_broader_client_and_each_attempt_is_audited(live_portal, get_token):
    # given the probe's case (portal:write only) and a manager narrower than what it asks for
    writer, writer_secret = _identity_client(audiences=["portal"], scopes=["portal:read", "portal:write"])
    narrow, narrow_secret = _identity_client(audiences=["portal", "ledger"], scopes=["identity:manage", "ledger:read"])
    broad, _ = _identity_client(audiences=["ledger"], scopes=["ledger:read", "ledger:write"])
    attempts = [
        (
            writer,
            writer_secret,
            "post",
            "/api/v1/identity/clients",
            {"name": "minted", "allowed_audiences": ["ledger"]},
        ),
        (
            narrow,
            narrow_secret,
            "post",
            "/api/v1/identity/clients",
            {"name": "wider", "allowed_audiences": ["ledger"], "allowed_scopes": ["ledger:write"]},
        ),
        (
            narrow,
            narrow_secret,
            "post",
            "/api/v1/identity/clients",
            {"name": "other", "allowed_audiences": ["payments"]},
        ),
        (narrow, narrow_secret, "post", f"/api/v1/identity/clients/{broad}/rotate-secret", None),
    ]
    expected = ["insufficient_scope", "grant_escalation", "grant_escalation", "grant_escalation"]

    # when each tries, with a token the live portal issued it
    codes = []
    for client_id, secret, method, path, body in attempts:
        token = get_token(client_id, secret, "portal")
        response = httpx.request(
            method.upper(), f"{live_portal.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        codes.append(response.json()["code"])
        assert_problem(response, 403, response.json()["code"])

    # then each is refused with its code, audited with it, and nothing was minted or taken over
    from portal.identity.models import MachineClient

    assert codes == expected
    refusals = _identity_audited("portal.client.refused")
    assert [(e["metadata"]["code"], e["actor"]["id"], e["outcome"]) for e in refusals] == [
        (code, attempt[0], "failure") for code, attempt in zip(expected, attempts, strict=True)
    ]
    assert not MachineClient.objects.filter(name__in=["minted", "wider", "other"]).exists()
    assert MachineClient.objects.get(pk=broad).secret_generation == 0


def test_a_token_naming_several_audiences_is_refused_by_every_service(identity_services):
    # given tokens signed with the portal's real key, naming audiences as lists
    from django.conf import settings

    from portal.identity.keys import signing_key

    key = signing_key()
    client_id, _ = _identity_client(audiences=["ledger", "payments", "portal"], scopes=["ledger:read"])

    def signed(aud) -> str:
        now = int(time.time())
        claims = {"iss": settings.JWT_ISSUER, "sub": client_id, "aud": aud, "iat": now, "exp": now + 300, "sgen": 0}
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})

    for name, url in identity_services.items():
        # a single audience is accepted (the control) ...
        assert _identity_whoami(url, signed(name)).status_code == 200, name
        # ... and any list is refused, even of one, even holding this service
        for aud in ([name], [name, "webhooks"], ["webhooks", name, "ledger"]):
            body = assert_problem(_identity_whoami(url, signed(aud)), 401, "invalid_token")
            assert "one audience" in body["detail"], (name, aud)


def test_the_token_endpoint_locks_a_client_id_out_after_repeated_failed_secrets(
    live_portal, identity_manager, transactional_db
):
    from django.conf import settings

    limit = settings.ATRIUM_TOKEN_FAILURE_LIMIT
    victim, secret = _identity_client(audiences=["ledger"], scopes=["ledger:read"])
    bystander, other_secret = _identity_client(audiences=["ledger"], scopes=[])

    def token(client_id: str, client_secret: str) -> httpx.Response:
        body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
        return httpx.post(f"{live_portal.url}/api/v1/auth/token", data={**body, "audience": "ledger"}, timeout=10)

    # when one client id gets its secret wrong again and again, and an id that does not exist too
    statuses = [token(victim, "cs_wrong").status_code for _ in range(limit + 3)]
    nobody = f"cli_hostile{uuid.uuid4().hex}"  # Redis outlives the test database: an id of this run's own
    unknown = [token(nobody, "cs_wrong").status_code for _ in range(limit + 1)]

    # then both are locked out after the limit, the right secret included, and others are not
    assert statuses == [401] * (limit - 1) + [429] * 4
    assert unknown == [401] * (limit - 1) + [429] * 2
    locked = token(victim, secret)
    body = assert_problem(locked, 429, "too_many_attempts")
    assert 0 < int(locked.headers["Retry-After"]) <= settings.ATRIUM_TOKEN_LOCKOUT_SECONDS
    assert body["retry_after"] == int(locked.headers["Retry-After"])
    assert token(bystander, other_secret).status_code == 200
    # and each lockout was audited once, not once per refused request
    lockouts = _identity_audited("auth.token.locked_out")
    assert sorted(e["object"]["id"] for e in lockouts) == sorted([victim, nobody])

    # when a manager unlocks the client (audited), its right secret works again
    _, api = identity_manager
    unlocked = api.post(f"/api/v1/identity/clients/{victim}/unlock")
    assert unlocked.status_code == 200, unlocked.text
    assert unlocked.json() == {"client_id": victim, "was_locked": True}
    assert token(victim, secret).status_code == 200
    (event,) = _identity_audited("auth.token.unlocked")
    assert event["object"]["id"] == victim


# ----------------------------------------------------------------------------------------------------------
# 3. SSRF: one outbound-request guard in the kit


# ----------------------------------------------------------------------------------------------------------
# 4. The audit verifier cannot be stalled


# ----------------------------------------------------------------------------------------------------------
# 5. Bounded input, the same in every service


# ----------------------------------------------------------------------------------------------------------
# 6. Throttled logins


# ----------------------------------------------------------------------------------------------------------
# 7. The dev runner keeps going when one process dies


# ----------------------------------------------------------------------------------------------------------
# 8. Fuzzing: see tests/e2e/test_fuzz.py
