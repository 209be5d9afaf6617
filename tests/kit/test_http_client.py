"""The inter-service HTTP client against real local servers: retries, idempotency, circuit breaker, tokens."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs

import pytest

from devtools.infra import free_port
from services.kit.context import request_id_var
from services.kit.http import CircuitBreaker, CircuitOpen, ClientCredentials, ServiceClient, UpstreamUnavailable
from tests.servers import LocalServer, Responder, json_reply


def scripted(*replies) -> Responder:
    """Answer with ``replies`` in order, then keep repeating the last one."""
    queue = list(replies)

    def respond(seen):
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return respond


OK = json_reply(200, {"ok": True})
CREATED = json_reply(201, {"id": "txn_1"})
UNAVAILABLE = json_reply(503, {"code": "busy"})
CLOSE = None  # close the connection without answering


@pytest.fixture
def breaker() -> CircuitBreaker:
    return CircuitBreaker("t", failure_threshold=3, reset_timeout=0.2)


@pytest.fixture
def make_client(breaker: CircuitBreaker) -> Iterator[Callable[..., ServiceClient]]:
    """ServiceClients with fast backoff and this test's own breaker; closed afterwards."""
    clients: list[ServiceClient] = []

    def make(base_url: str, **kwargs) -> ServiceClient:
        options = {"retries": 3, "backoff": 0.01, "backoff_max": 0.05, "breaker": breaker, "timeout": 5.0}
        client = ServiceClient(base_url=base_url, **{**options, **kwargs})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_get_is_retried_until_it_succeeds(local_server, make_client, breaker):
    # given an upstream that is busy twice, then answers
    server = local_server(scripted(UNAVAILABLE, UNAVAILABLE, OK))

    # when the client GETs
    response = make_client(server.url).get("/api/v1/thing")

    # then it retried through the 503s and got the answer
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert len(server.calls("/api/v1/thing")) == 3
    assert breaker.state == "closed"
    assert breaker.failures == 0


def test_get_is_retried_when_the_connection_drops(local_server, make_client):
    # given an upstream that closes the first connection without answering
    server = local_server(scripted(CLOSE, OK))

    # when the client GETs
    response = make_client(server.url).get("/api/v1/thing")

    # then the second attempt succeeded
    assert response.status_code == 200
    assert len(server.calls()) == 2


def test_retries_exhausted_return_the_last_busy_response(local_server, make_client):
    # given an upstream that is always busy (breaker threshold out of reach)
    server = local_server(scripted(UNAVAILABLE))
    client = make_client(server.url, retries=2, breaker=CircuitBreaker("t2", failure_threshold=100))

    # when the client GETs
    response = client.get("/api/v1/thing")

    # then it gave up after 1 + 2 attempts and handed back the upstream's answer
    assert response.status_code == 503
    assert response.json() == {"code": "busy"}
    assert len(server.calls()) == 3


def test_server_error_that_is_not_transient_is_returned_without_retry(local_server, make_client, breaker):
    # given an upstream that fails with 500
    server = local_server(scripted(json_reply(500, {"code": "internal_error"})))

    # when the client GETs
    response = make_client(server.url).get("/api/v1/thing")

    # then the 500 comes back at once; it does not count against the circuit (the upstream is up: it answered)
    assert response.status_code == 500
    assert len(server.calls()) == 1
    assert breaker.failures == 0


def test_repeated_500s_never_open_the_circuit_for_the_other_requests(local_server, make_client, breaker):
    # given an upstream that fails on one request, again and again (a poisoned item), and serves the others
    def respond(seen):
        return json_reply(500, {"code": "internal_error"}) if "poison" in seen.path else json_reply(200, {})

    client = make_client(local_server(respond).url)

    # when the poisoned request is sent more times than the breaker's threshold
    for _ in range(breaker.failure_threshold + 2):
        assert client.get("/api/v1/poison").status_code == 500

    # then the circuit stays closed and the other requests go through
    assert breaker.state == "closed"
    assert client.get("/api/v1/fine").status_code == 200


def test_client_error_is_returned_and_counts_as_upstream_health(local_server, make_client, breaker):
    # given an upstream that answers 404
    server = local_server(scripted(json_reply(404, {"code": "not_found"})))

    # when the client GETs
    response = make_client(server.url).get("/api/v1/missing")

    # then the 404 is returned once and the circuit stays closed
    assert response.status_code == 404
    assert len(server.calls()) == 1
    assert breaker.state == "closed"
    assert breaker.failures == 0


def test_post_without_idempotency_key_is_not_retried(local_server, make_client):
    # given an upstream that is busy
    server = local_server(scripted(UNAVAILABLE, CREATED))

    # when the client POSTs without an idempotency key
    response = make_client(server.url).post("/api/v1/transfers", json={"amount": 5})

    # then it was sent exactly once (a retry could duplicate the transfer)
    assert response.status_code == 503
    calls = server.calls()
    assert len(calls) == 1
    assert json.loads(calls[0].body) == {"amount": 5}
    assert "idempotency-key" not in calls[0].headers


def test_post_without_idempotency_key_is_not_retried_after_a_dropped_connection(local_server, make_client):
    # given an upstream that drops the connection (it may have done the work)
    server = local_server(scripted(CLOSE, CREATED))

    # when the client POSTs without an idempotency key
    with pytest.raises(UpstreamUnavailable) as raised:
        make_client(server.url).post("/api/v1/transfers", json={"amount": 5})

    # then it did not send it again
    assert raised.value.code == "upstream_unavailable"
    assert len(server.calls()) == 1


def test_post_with_idempotency_key_is_retried_with_the_same_key(local_server, make_client):
    # given an upstream that is busy once
    server = local_server(scripted(UNAVAILABLE, CREATED))

    # when the client POSTs with an idempotency key
    response = make_client(server.url).post("/api/v1/transfers", json={"amount": 5}, idempotency_key="idem-123")

    # then it was retried, every attempt carrying the key
    assert response.status_code == 201
    calls = server.calls()
    assert len(calls) == 2
    assert [c.headers["idempotency-key"] for c in calls] == ["idem-123", "idem-123"]
    assert all(json.loads(c.body) == {"amount": 5} for c in calls)


def test_current_request_id_is_sent_upstream(local_server, make_client):
    # given a request id in the current context
    server = local_server(scripted(OK))
    token = request_id_var.set("req-upstream-7")
    try:
        # when the client calls upstream
        make_client(server.url).get("/api/v1/thing", params={"q": "1"}, headers={"X-Extra": "yes"})
    finally:
        request_id_var.reset(token)

    # then the upstream saw it, with the caller's headers and JSON accept
    (seen,) = server.calls()
    assert seen.headers["x-request-id"] == "req-upstream-7"
    assert seen.headers["x-extra"] == "yes"
    assert seen.headers["accept"] == "application/json"
    assert seen.path == "/api/v1/thing?q=1"


def test_no_request_id_header_outside_a_request(local_server, make_client):
    # given no request id in context
    server = local_server(scripted(OK))

    # when the client calls upstream
    make_client(server.url).get("/api/v1/thing")

    # then no empty header is invented
    assert "x-request-id" not in server.calls()[0].headers


def test_circuit_opens_after_consecutive_failures_and_stops_calling(local_server, make_client, breaker):
    # given an upstream that is always busy
    server = local_server(scripted(UNAVAILABLE))
    client = make_client(server.url, retries=5)

    # when the client GETs, the third failure opens the circuit mid-retry
    with pytest.raises(CircuitOpen) as raised:
        client.get("/api/v1/thing")
    assert raised.value.code == "circuit_open"
    assert raised.value.status == 503
    assert len(server.calls()) == 3
    assert breaker.state == "open"

    # then further calls fail fast without contacting the upstream
    started = time.monotonic()
    with pytest.raises(CircuitOpen):
        client.get("/api/v1/thing")
    with pytest.raises(CircuitOpen):
        client.post("/api/v1/other", json={}, idempotency_key="k")
    assert time.monotonic() - started < 0.1
    assert len(server.calls()) == 3


def test_rate_limiting_is_retried_but_does_not_open_the_circuit(local_server, make_client, breaker):
    # given an upstream that answers 429 three times (the breaker's threshold), then 200
    too_many = json_reply(429, {"code": "throttled"})
    server = local_server(scripted(too_many, too_many, too_many, OK))
    client = make_client(server.url, retries=3)

    # when the client GETs
    response = client.get("/api/v1/thing")

    # then it waited it out, and a live-but-busy upstream never tripped the breaker
    assert response.status_code == 200
    assert len(server.calls()) == 4
    assert breaker.state == "closed"


def test_half_open_trial_that_succeeds_closes_the_circuit(local_server, make_client, breaker):
    # given an open circuit to an upstream that has since recovered
    state = {"healthy": False}
    server = local_server(lambda seen: OK if state["healthy"] else UNAVAILABLE)
    client = make_client(server.url, retries=0)
    for _ in range(3):
        client.get("/api/v1/thing")
    assert breaker.state == "open"
    state["healthy"] = True

    # when the reset timeout has passed and a call is made
    time.sleep(breaker.reset_timeout + 0.05)
    response = client.get("/api/v1/thing")

    # then the trial went through and closed the circuit
    assert response.status_code == 200
    assert breaker.state == "closed"
    assert breaker.failures == 0
    assert client.get("/api/v1/thing").status_code == 200
    assert len(server.calls()) == 5


def test_half_open_trial_that_fails_reopens_the_circuit(local_server, make_client, breaker):
    # given an open circuit to an upstream that is still busy
    server = local_server(scripted(UNAVAILABLE))
    client = make_client(server.url, retries=0)
    for _ in range(3):
        client.get("/api/v1/thing")
    assert breaker.state == "open"

    # when the reset timeout has passed and a call (with retries) is made
    time.sleep(breaker.reset_timeout + 0.05)
    with pytest.raises(CircuitOpen):
        make_client(server.url, retries=3).get("/api/v1/thing")

    # then only the one trial reached the upstream, and the circuit is open again
    assert len(server.calls()) == 4
    assert breaker.state == "open"


def test_connection_refused_raises_upstream_unavailable_after_retries(make_client):
    # given nothing listening on the upstream's port
    client = make_client(
        f"http://127.0.0.1:{free_port()}", retries=2, breaker=CircuitBreaker("t3", failure_threshold=100)
    )

    # when the client GETs
    with pytest.raises(UpstreamUnavailable) as raised:
        client.get("/api/v1/thing")

    # then it tried 1 + 2 times and says the upstream is unavailable (not that the circuit is open)
    assert type(raised.value) is UpstreamUnavailable
    assert raised.value.code == "upstream_unavailable"
    assert raised.value.status == 503
    assert "3 attempt(s)" in raised.value.detail
    assert client.breaker.failures == 3


def token_endpoint(local_server, *, access_token: str = "tok-1", expires_in: int = 3600) -> LocalServer:
    return local_server(
        scripted(json_reply(200, {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}))
    )


def test_client_credentials_token_is_sent_and_cached(local_server, make_client):
    # given a token endpoint and an upstream
    tokens = token_endpoint(local_server)
    upstream = local_server(scripted(OK))
    credentials = ClientCredentials(token_url=f"{tokens.url}/api/v1/auth/token", client_id="cli_me", client_secret="s3")
    client = make_client(upstream.url, audience="ledger", credentials=credentials)

    # when two calls are made
    client.get("/api/v1/a")
    client.get("/api/v1/b")

    # then both carried the bearer token, fetched once with a client-credentials grant
    assert [c.headers["authorization"] for c in upstream.calls()] == ["Bearer tok-1", "Bearer tok-1"]
    (grant,) = tokens.calls()
    assert grant.method == "POST"
    assert grant.path == "/api/v1/auth/token"
    assert parse_qs(grant.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["cli_me"],
        "client_secret": ["s3"],
        "audience": ["ledger"],
    }


def test_client_credentials_fetch_one_token_per_audience(local_server):
    # given a token endpoint
    tokens = token_endpoint(local_server)
    credentials = ClientCredentials(token_url=f"{tokens.url}/token", client_id="cli_me", client_secret="s3")

    # when tokens for two audiences are asked twice each
    for audience in ("ledger", "payments", "ledger", "payments"):
        assert credentials.token_for(audience) == "tok-1"

    # then each audience was fetched once
    audiences = [parse_qs(c.body.decode())["audience"][0] for c in tokens.calls()]
    assert audiences == ["ledger", "payments"]


def rotating_token_endpoint(local_server) -> LocalServer:
    """A token endpoint handing out tok-1, then tok-2, then tok-3..."""
    issued: list[int] = []

    def respond(seen):
        issued.append(1)
        return json_reply(200, {"access_token": f"tok-{len(issued)}", "token_type": "Bearer", "expires_in": 3600})

    return local_server(respond)


REFUSED = json_reply(401, {"code": "token_revoked"})


@pytest.mark.parametrize(
    ("method", "reply"), [("GET", OK), ("POST", CREATED)], ids=["get", "post-without-idempotency-key"]
)
def test_a_cached_token_refused_with_401_is_renewed_and_the_call_sent_once_more(
    local_server, make_client, method, reply
):
    # given a client whose cached token the upstream stops accepting (revoked, or signed with a retired key)
    tokens = rotating_token_endpoint(local_server)
    upstream = local_server(scripted(OK, REFUSED, reply))
    credentials = ClientCredentials(token_url=f"{tokens.url}/token", client_id="cli_me", client_secret="s3")
    credentials.RENEW_AFTER_REFUSAL = 0.0  # the cached token counts as old at once
    client = make_client(upstream.url, audience="ledger", credentials=credentials, retries=0)
    assert client.get("/api/v1/warm").status_code == 200

    # when the next call is refused with 401
    response = client.request(method, "/api/v1/next", json={"a": 1} if method == "POST" else None)

    # then a new token was fetched and the same call sent again with it, once (even a POST: a 401 did nothing)
    assert response.status_code == reply[0]
    calls = upstream.calls()
    assert [(c.method, c.headers["authorization"]) for c in calls[1:]] == [
        (method, "Bearer tok-1"),
        (method, "Bearer tok-2"),
    ]
    assert len(tokens.calls()) == 2
    # and the new token is the one cached
    client.get("/api/v1/after")
    assert upstream.calls()[-1].headers["authorization"] == "Bearer tok-2"


def test_a_401_to_the_renewed_token_is_returned_not_renewed_again(local_server, make_client, breaker):
    # given an upstream that refuses every token
    tokens = rotating_token_endpoint(local_server)
    upstream = local_server(scripted(REFUSED))
    credentials = ClientCredentials(token_url=f"{tokens.url}/token", client_id="cli_me", client_secret="s3")
    credentials.RENEW_AFTER_REFUSAL = 0.0
    client = make_client(upstream.url, audience="ledger", credentials=credentials)

    # when a call is made
    response = client.get("/api/v1/a")

    # then the 401 is the answer after one renewal (no loop, no retry of a 401), and the circuit stays closed
    assert response.status_code == 401
    assert [c.headers["authorization"] for c in upstream.calls()] == ["Bearer tok-1", "Bearer tok-2"]
    assert len(tokens.calls()) == 2
    assert breaker.state == "closed"


def test_a_token_fetched_moments_ago_is_not_renewed_on_401(local_server, make_client):
    # given an upstream that refuses the client's tokens (say it expects another audience): a new token would be
    # refused the same way
    tokens = rotating_token_endpoint(local_server)
    upstream = local_server(scripted(REFUSED))
    credentials = ClientCredentials(token_url=f"{tokens.url}/token", client_id="cli_me", client_secret="s3")
    client = make_client(upstream.url, audience="ledger", credentials=credentials)

    # when three calls are made in a row
    statuses = [client.get(f"/api/v1/{n}").status_code for n in range(3)]

    # then each got its 401 with the one token, fetched once: refusals do not turn into token requests
    assert statuses == [401, 401, 401]
    assert [c.headers["authorization"] for c in upstream.calls()] == ["Bearer tok-1"] * 3
    assert len(tokens.calls()) == 1


def test_client_credentials_refused_raises_token_unavailable_without_calling_upstream(local_server, make_client):
    # given a token endpoint that refuses the credentials
    tokens = local_server(scripted(json_reply(401, {"code": "invalid_client"})))
    upstream = local_server(scripted(OK))
    credentials = ClientCredentials(token_url=f"{tokens.url}/token", client_id="cli_me", client_secret="wrong")

    # when a call is made
    with pytest.raises(UpstreamUnavailable) as raised:
        make_client(upstream.url, audience="ledger", credentials=credentials).get("/api/v1/a")

    # then it says the token is unavailable, and the upstream never saw the call
    assert raised.value.code == "token_unavailable"
    assert upstream.calls() == []


def test_token_failure_during_half_open_trial_does_not_wedge_the_circuit(local_server, make_client, breaker):
    # given an open circuit to an upstream, shared by two clients (breakers are per upstream)
    state = {"healthy": False}
    upstream = local_server(lambda seen: OK if state["healthy"] else UNAVAILABLE)
    plain = make_client(upstream.url, retries=0)
    for _ in range(3):
        plain.get("/api/v1/thing")
    assert breaker.state == "open"

    # and, once the reset timeout passed, a call whose token endpoint is unreachable
    unreachable = ClientCredentials(token_url=f"http://127.0.0.1:{free_port()}/token", client_id="c", client_secret="s")
    authed = make_client(upstream.url, audience="ledger", credentials=unreachable)
    time.sleep(breaker.reset_timeout + 0.05)
    with pytest.raises(UpstreamUnavailable):
        authed.get("/api/v1/thing")

    # when the upstream has recovered and the next call is made
    state["healthy"] = True
    response = plain.get("/api/v1/thing")

    # then the circuit lets the trial through and closes, instead of staying half-open forever
    assert response.status_code == 200
    assert breaker.state == "closed"


def test_garbled_response_body_is_an_upstream_failure(local_server, make_client, breaker):
    # given an upstream whose body is not the gzip it claims to be
    server = local_server(scripted((200, {"Content-Encoding": "gzip", "Content-Type": "application/json"}, b"{}")))

    # when the client GETs
    with pytest.raises(UpstreamUnavailable) as raised:
        make_client(server.url, retries=1).get("/api/v1/thing")

    # then it is reported as the upstream being unavailable (retried), not an httpx error leaking out
    assert raised.value.code == "upstream_unavailable"
    assert len(server.calls()) == 2
    assert breaker.failures == 2


def test_unsendable_body_in_a_half_open_trial_does_not_wedge_the_circuit(local_server, make_client, breaker):
    # given an open circuit to an upstream that has since recovered
    state = {"healthy": False}
    server = local_server(lambda seen: CREATED if state["healthy"] else UNAVAILABLE)
    client = make_client(server.url, retries=0)
    for _ in range(3):
        client.get("/api/v1/thing")
    state["healthy"] = True
    time.sleep(breaker.reset_timeout + 0.05)

    # when a caller's bug (a body that is not JSON-serialisable) fails the first call after the timeout
    with pytest.raises(TypeError):
        client.post("/api/v1/transfers", json={"when": object()}, idempotency_key="k1")

    # then the next call is still let through as the trial, and closes the circuit
    assert client.post("/api/v1/transfers", json={"amount": 1}, idempotency_key="k2").status_code == 201
    assert breaker.state == "closed"
