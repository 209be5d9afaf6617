"""Hostile tests, one per hardening rule, against real processes (slow: `make test` runs them in CI).

Each rule is proved with more than one case, and with cases other than the ones that revealed it: several
kinds of poisoned item, several spellings of an inside address, several kinds of malformed body.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.hostile_input import CountedBody, check_problem, raw_request
from tests.e2e.hostile_input import server_errors as server_errors_in
from tests.harness import AtriumProcess

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


# ----------------------------------------------------------------------------------------------------------
# 1. Poison isolation: one item never stops a batch


# ----------------------------------------------------------------------------------------------------------
# 2. Identity: revocation and least privilege


# ----------------------------------------------------------------------------------------------------------
# 3. SSRF: one outbound-request guard in the kit


# ----------------------------------------------------------------------------------------------------------
# 4. The audit verifier cannot be stalled


# ----------------------------------------------------------------------------------------------------------
# 5. Bounded input, the same in every service
# The portal, the ledger and payments under real gunicorn (the project's gunicorn.conf.py, so the kit's worker),
# each sent the same hostile bodies and requests: deep JSON, duplicate keys, chunked bodies under and over its
# limit, an oversized Content-Length, a huge header, malformed requests; and the ledger invalid currencies.
# Every answer is a problem document with a stable code; no process logs a 5xx or an unhandled error.


@dataclass
class InputTarget:
    """A service, one of its routes that parses a JSON body, what a call needs, and its body limit."""

    process: AtriumProcess
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    limit: int

    @property
    def url(self) -> str:
        return f"{self.process.url}{self.path}"

    def post(self, content: Any, **headers: str) -> httpx.Response:
        merged = {"Content-Type": "application/json", **self.headers, **headers}
        return httpx.post(self.url, content=content, headers=merged, timeout=30)

    def raw_head(self, method: str = "POST", **headers: str) -> bytes:
        lines = [f"{method} {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.process.url.rsplit(':', 1)[1]}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **headers}.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture(scope="module")
def input_services(live_portal: AtriumProcess, module_harness: Any, jwks_env: dict[str, str]) -> dict[str, Any]:
    ledger = module_harness.web("ledger", env=jwks_env)
    payments = module_harness.web("payments", env={**jwks_env, "LEDGER_URL": ledger.url or ""})
    return {"portal": live_portal, "ledger": ledger, "payments": payments}


@pytest.fixture
def input_targets(input_services: dict[str, Any], all_access_client: Any, get_token: Any) -> dict[str, InputTarget]:
    client_id, secret = all_access_client
    bearer = {name: {"Authorization": f"Bearer {get_token(client_id, secret, audience=name)}"} for name in SERVICES}
    grant = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "audience": "ledger"}
    # payments refuses this body (same account) after reading every field, before it would call the ledger
    payment = {"amount": 100, "currency": "EUR", "source_account": "acc_x", "destination_account": "acc_x"}
    return {
        "portal": InputTarget(input_services["portal"], "/api/v1/auth/token", {}, grant, 1024 * 1024),
        "ledger": InputTarget(
            input_services["ledger"],
            "/api/v1/accounts",
            bearer["ledger"],
            {"name": "hostile", "currency": "EUR", "normal_balance": "credit"},
            1024 * 1024,
        ),
        "payments": InputTarget(
            input_services["payments"], "/api/v1/payments/", bearer["payments"], payment, 256 * 1024
        ),
    }


@pytest.fixture
def input_no_server_errors(input_services: dict[str, Any]) -> Iterator[None]:
    """After the test, no service logged a 5xx answer or an unhandled error while it ran."""
    seen = {name: len(process.log_records()) for name, process in input_services.items()}
    yield
    time.sleep(0.3)  # the last request's log line
    for name, process in input_services.items():
        errors = server_errors_in(process.log_records()[seen[name] :])
        assert not errors, f"{name} failed requests: {errors[:3]}"


SERVICES = ("portal", "ledger", "payments")


def _nest(shape: str, depth: int) -> str:
    levels = range(depth)
    if shape == "arrays":
        return "[" * depth + "]" * depth
    if shape == "objects":
        return '{"a":' * depth + "1" + "}" * depth
    opening = "".join('{"a":' if level % 2 == 0 else "[" for level in levels)
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(levels))
    return opening + "1" + closing


def _with(body: dict[str, Any], tail: str) -> str:
    """``body`` as JSON text with ``tail`` (raw JSON members) added at its end."""
    return json.dumps(body)[:-1] + ", " + tail + "}"


@pytest.mark.parametrize("shape", ["arrays", "objects", "mixed"])
def test_input_every_service_refuses_json_nested_too_deep(input_targets, input_no_server_errors, shape):
    for name, target in input_targets.items():
        for depth in (33, 500, 20_000):
            # when a body nests objects/arrays deeper than the limit (32), far deeper than Python's recursion
            started = time.monotonic()
            response = target.post(_with(target.body, f'"metadata": {_nest(shape, depth)}'))

            # then it is refused at once with the stable code
            problem = check_problem(response.status_code, response.headers, response.content, 400, "json_too_deep")
            assert problem["max_depth"] == 32, name
            assert time.monotonic() - started < 5, (name, depth)


def test_input_every_service_refuses_duplicate_keys(input_targets, input_no_server_errors):
    for name, target in input_targets.items():
        first = next(iter(target.body))
        cases = {
            f"#/{first}": _with(target.body, f'"{first}": {json.dumps(target.body[first])}'),
            "#/metadata/a": _with(target.body, '"metadata": {"a": 1, "b": 2, "a": 3}'),
            "#/tags/1/x": _with(target.body, '"tags": [{"x": 1}, {"y": 1, "x": 2, "x": 3}]'),
        }
        for pointer, text in cases.items():
            response = target.post(text)

            problem = check_problem(response.status_code, response.headers, response.content, 400, "duplicate_key")
            assert problem["errors"][0]["pointer"] == pointer, (name, problem)


def _chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_input_every_service_reads_a_small_chunked_body(input_targets, input_no_server_errors):
    portal, ledger, payments = (input_targets[name] for name in SERVICES)

    # the portal issues a token from a chunked JSON body, and from a chunked form body
    response = portal.post(_chunks(json.dumps(portal.body).encode()))
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]
    form = urllib.parse.urlencode(portal.body).encode()
    response = portal.post(_chunks(form), **{"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text

    # the ledger opens the account the chunked body describes
    name = f"chunked-{uuid.uuid4().hex[:8]}"
    response = ledger.post(_chunks(json.dumps({**ledger.body, "name": name}).encode()))
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name

    # payments judges the fields it was sent (an empty body would be "required" field errors)
    response = payments.post(_chunks(json.dumps(payments.body).encode()))
    check_problem(response.status_code, response.headers, response.content, 422, "same_account")
    response = payments.post(_chunks(json.dumps({**payments.body, "metadata": {"k" * 41: 1}}).encode()))
    problem = check_problem(response.status_code, response.headers, response.content, 422, "invalid_metadata")
    assert problem["errors"][0]["code"] == "metadata_key_too_long"

    # and a chunked body the route's larger limit allows goes through: 2 MiB on the ledger's batch endpoint
    batch = json.dumps({"transactions": [], "atomic": False}).encode()
    stream = CountedBody(total=2 * 1024 * 1024, prefix=batch[:-1])
    response = httpx.post(
        f"{ledger.process.url}/api/v1/transactions/batch",
        content=itertools.chain(stream, [b"}"]),
        headers={**ledger.headers, "Content-Type": "application/json"},
        timeout=30,
    )
    # read whole (2 MiB + 1 byte), parsed, and judged: an empty list of transactions is a field error
    problem = check_problem(response.status_code, response.headers, response.content, 400, "validation_error")
    assert problem["errors"][0]["field"] == "transactions"


def test_input_every_service_refuses_a_chunked_body_over_its_limit_while_it_streams(
    input_targets, input_no_server_errors
):
    for name, target in input_targets.items():
        # given an endless-looking chunked body (64 MiB)
        stream = CountedBody(total=64 * 1024 * 1024, prefix=b'{"padding": "')

        # when it is sent
        response = target.post(iter(stream))

        # then the service answers 413 once the stream passes its limit, long before the body's end
        problem = check_problem(response.status_code, response.headers, response.content, 413, "payload_too_large")
        assert problem["max_body_bytes"] == target.limit, name
        assert stream.sent < 32 * 1024 * 1024, (name, stream.sent)


def test_input_every_service_refuses_an_oversized_content_length_without_waiting_for_the_body(
    input_targets, input_no_server_errors
):
    for name, target in input_targets.items():
        for length in (target.limit + 1, 10**12):
            # when a request announces a body over the limit and sends only its first bytes
            head = target.raw_head(**{"Content-Type": "application/json", "Content-Length": str(length)})
            answer = raw_request(target.process.url, head + b'{"a": ', half_close=False, timeout=10)

            # then the answer comes at once (the socket is still open, the body unsent)
            problem = check_problem(answer.status, answer.headers, answer.body, 413, "payload_too_large")
            assert str(length) in problem["detail"], name


def test_input_the_ledger_answers_a_2_mib_account_with_413_not_a_field_error(input_targets, input_no_server_errors):
    ledger = input_targets["ledger"]

    response = ledger.post(json.dumps({**ledger.body, "name": "n" * (2 * 1024 * 1024)}))

    check_problem(response.status_code, response.headers, response.content, 413, "payload_too_large")


def test_input_every_service_answers_a_huge_header_with_a_431_problem(input_targets, input_no_server_errors):
    for target in input_targets.values():
        for header in ("Authorization", "X-Padding"):
            head = target.raw_head(**{header: "Bearer " + "a" * 65536, "Content-Length": "0"})

            answer = raw_request(target.process.url, head)

            check_problem(answer.status, answer.headers, answer.body, 431, "header_too_large")


def test_input_every_service_answers_malformed_requests_with_400_problems(input_targets, input_no_server_errors):
    for name, target in input_targets.items():
        host = f"Host: {target.process.url.rsplit('/', 1)[1]}\r\n".encode()
        auth = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items()).encode()
        malformed = {
            "request line": b"GARBAGE\r\n\r\n",
            "http version": f"GET {target.path} HTTP/7.0\r\n".encode() + host + b"\r\n",
            "header name": f"POST {target.path} HTTP/1.1\r\n".encode() + host + b"Bad Header: v\r\n\r\n",
            "folded header": f"GET {target.path} HTTP/1.1\r\n".encode() + host + b"X-A: v\r\n  w\r\n\r\n",
            "content length": f"POST {target.path} HTTP/1.1\r\n".encode() + host + b"Content-Length: 1x\r\n\r\n",
            "length and chunked": f"POST {target.path} HTTP/1.1\r\n".encode()
            + host
            + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            # framing gunicorn reads only when the application reads the body: the kit's middleware answers
            "chunk size": f"POST {target.path} HTTP/1.1\r\n".encode()
            + host
            + auth
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b'5\r\n{"a":\r\nzz\r\n1}\r\n0\r\n\r\n',
        }
        for what, data in malformed.items():
            answer = raw_request(target.process.url, data)

            assert answer.status == 400, (name, what, answer.body[:300])
            check_problem(answer.status, answer.headers, answer.body, 400, "bad_request")


@pytest.mark.parametrize("currency", ["XXX", "XTS", "XAU", "XDR", "ABC"])
def test_input_the_ledger_refuses_a_currency_outside_iso_4217(input_targets, input_no_server_errors, currency):
    ledger = input_targets["ledger"]

    response = ledger.post(json.dumps({**ledger.body, "currency": currency}))

    problem = check_problem(response.status_code, response.headers, response.content, 422, "invalid_currency")
    assert problem["errors"][0]["field"] == "currency"
    assert ledger.post(json.dumps(ledger.body)).status_code == 201  # an active code still opens an account


# ----------------------------------------------------------------------------------------------------------
# 6. Throttled logins


# ----------------------------------------------------------------------------------------------------------
# 7. The dev runner keeps going when one process dies


# ----------------------------------------------------------------------------------------------------------
# 8. Fuzzing: see tests/e2e/test_fuzz.py
