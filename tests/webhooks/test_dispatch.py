"""The dispatcher against real local HTTP receivers and the real database: what it sends (Standard Webhooks,
verified with the ``standardwebhooks`` package and ``cryptography``'s Ed25519), how it counts outcomes, retries,
Retry-After, 410, redirects, timeouts, refused connections, in-flight limits, rate limits, ordering, isolation."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from services.kit.models import OutboxEvent
from services.webhooks.dispatch import DispatchConfig, next_attempt_delay, retry_after_seconds
from services.webhooks.models import Delivery, Endpoint
from services.webhooks.secrets import encrypt as secret_encrypt
from services.webhooks.secrets import secret_new
from tests.harness import base_env, current_test_database_url
from tests.servers import LocalServer, Seen
from tests.webhooks.dispatching import (
    FAST,
    attempts_of,
    dispatch_once,
    dispatching,
    endpoint_new,
    message_make,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def ok(seen: Seen) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/plain"}, b"thanks"


@pytest.fixture
def receiver():
    servers: list[LocalServer] = []

    def make(respond=ok, **kwargs) -> LocalServer:
        server = LocalServer(respond, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _headers(seen: Seen) -> dict[str, str]:
    return {k: v for k, v in seen.headers.items() if k.startswith("webhook-")}


# ---------------------------------------------------------------------------------------------------------
# What is sent


def test_a_delivery_is_standard_webhooks_verified_by_the_standardwebhooks_package(receiver):
    server = receiver()
    endpoint, secret = endpoint_new(f"{server.url}/hooks?x=1")
    message = message_make([endpoint], data={"id": "pay_1", "note": "é ✓"})

    dispatch_once()

    [seen] = server.requests
    assert seen.method == "POST"
    assert seen.path == "/hooks?x=1"
    assert seen.body == message.body.encode()  # the stored bytes, exactly
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == "Atrium-Webhooks/1"
    assert seen.headers["webhook-id"] == message.id
    assert abs(int(seen.headers["webhook-timestamp"]) - time.time()) < 10
    payload = Webhook(secret).verify(seen.body, _headers(seen))
    assert payload["type"] == "payment.created"
    assert payload["data"] == {"id": "pay_1", "note": "é ✓"}
    with pytest.raises(Exception):  # noqa: B017,PT011  (the package's own error type)
        Webhook(secret_new()).verify(seen.body, _headers(seen))

    delivery = Delivery.objects.get(message=message, endpoint=endpoint)
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.leased_until) == (
        "succeeded",
        1,
        200,
        None,
    )
    assert delivery.succeeded_at is not None
    [attempt] = attempts_of(endpoint)
    assert (attempt.number, attempt.status_code, attempt.error, attempt.response_body) == (1, 200, "", "thanks")
    assert attempt.message_id == message.id
    assert attempt.request_id == message.request_id
    assert attempt.trigger == "scheduled"
    assert attempt.duration_ms >= 0
    endpoint.refresh_from_db()
    assert endpoint.last_success_at is not None
    assert endpoint.first_failure_at is None
    assert endpoint.last_status == 200


def test_v1a_signatures_verify_with_ed25519(receiver):
    server = receiver()
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes_raw().hex()
    endpoint, secret = endpoint_new(server.url, v1a=True, signing_key=secret_encrypt(raw))
    message = message_make([endpoint])

    dispatch_once()

    [seen] = server.requests
    Webhook(secret).verify(seen.body, _headers(seen))  # the v1 one still verifies beside it
    signatures = dict(part.split(",", 1) for part in seen.headers["webhook-signature"].split(" "))
    assert set(signatures) == {"v1", "v1a"}
    signed = f"{message.id}.{seen.headers['webhook-timestamp']}.".encode() + seen.body
    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw)).public_key()
    public.verify(base64.b64decode(signatures["v1a"]), signed)  # raises when it does not verify
    assert len(public.public_bytes(Encoding.Raw, PublicFormat.Raw)) == 32


def test_during_a_rotation_overlap_both_secrets_sign_and_both_verify(receiver):
    server = receiver()
    old, new = secret_new(), secret_new()
    during, _ = endpoint_new(
        server.url + "/during",
        secret=new,
        previous_secret=secret_encrypt(old),
        previous_secret_expires_at=timezone.now() + dt.timedelta(hours=1),
    )
    after, _ = endpoint_new(
        server.url + "/after",
        secret=new,
        previous_secret=secret_encrypt(old),
        previous_secret_expires_at=timezone.now() - dt.timedelta(seconds=1),
    )
    message_make([during, after])

    dispatch_once()

    [seen] = server.calls("/during")
    assert len(seen.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(seen.body, _headers(seen))
    Webhook(old).verify(seen.body, _headers(seen))
    [seen] = server.calls("/after")
    assert len(seen.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(seen.body, _headers(seen))
    with pytest.raises(Exception):  # noqa: B017,PT011
        Webhook(old).verify(seen.body, _headers(seen))


def test_the_response_body_is_kept_up_to_4_kib(receiver):
    server = receiver(lambda seen: (500, {}, b"x" * 100_000))
    endpoint, _ = endpoint_new(server.url)
    message_make([endpoint])

    dispatch_once(replace(FAST, schedule=(0,)))

    [attempt] = attempts_of(endpoint)
    assert (attempt.status_code, attempt.error, attempt.response_body) == (500, "status", "x" * 4096)


# ---------------------------------------------------------------------------------------------------------
# Outcomes


def test_failures_are_retried_on_the_schedule_then_succeed(receiver):
    answers = iter([500, 502, 200])
    server = receiver(lambda seen: (next(answers), {}, b""))
    endpoint, _ = endpoint_new(server.url)
    message = message_make([endpoint])

    with dispatching(replace(FAST, schedule=(0, 0.5, 0.5, 0.5))):
        wait_for(lambda: Delivery.objects.filter(message=message, state="succeeded").exists())

    attempts = attempts_of(endpoint)
    assert [(a.number, a.status_code, a.error) for a in attempts] == [
        (1, 500, "status"),
        (2, 502, "status"),
        (3, 200, ""),
    ]
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert all(0.45 <= gap < 2.0 for gap in gaps), gaps
    endpoint.refresh_from_db()
    assert endpoint.first_failure_at is None
    assert endpoint.last_success_at is not None


def test_after_the_last_attempt_the_delivery_is_failed(receiver):
    server = receiver(lambda seen: (500, {}, b"no"))
    endpoint, _ = endpoint_new(server.url)
    message = message_make([endpoint])

    with dispatching(replace(FAST, schedule=(0, 0.1, 0.1))):
        wait_for(lambda: Delivery.objects.filter(message=message, state="failed").exists())
        time.sleep(0.3)

    assert len(server.requests) == 3
    delivery = Delivery.objects.get(message=message)
    assert (delivery.attempts, delivery.last_status, delivery.last_error) == (3, 500, "status")
    endpoint.refresh_from_db()
    assert endpoint.enabled
    assert endpoint.first_failure_at is not None
    assert endpoint.last_error == "status 500"


def test_redirects_are_failures_never_followed(receiver):
    elsewhere = receiver()
    server = receiver(lambda seen: (302, {"Location": f"{elsewhere.url}/stolen"}, b""))
    endpoint, _ = endpoint_new(server.url)
    message_make([endpoint])

    dispatch_once(replace(FAST, schedule=(0,)))

    [attempt] = attempts_of(endpoint)
    assert (attempt.status_code, attempt.error) == (302, "status")
    assert elsewhere.requests == []


def test_410_disables_the_endpoint_at_once_and_audits_it(receiver):
    server = receiver(lambda seen: (410, {}, b"gone"))
    endpoint, _ = endpoint_new(server.url)
    message_make([endpoint])
    message_make([endpoint])

    dispatch_once()

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "gone")
    assert endpoint.disabled_at is not None
    assert 1 <= len(server.requests) <= 2  # both may have been in flight together; none after
    events = [json.loads(e.payload) if isinstance(e.payload, str) else e.payload for e in OutboxEvent.objects.all()]
    [event] = [e for e in events if e.get("action") == "webhooks.endpoint.disabled"]
    assert event["object"] == {"type": "endpoint", "id": endpoint.id}
    assert event["actor"]["type"] == "system"
    assert event["metadata"]["reason"] == "gone"


def test_an_endpoint_that_only_failed_for_the_disable_period_is_disabled(receiver):
    server = receiver(lambda seen: (500, {}, b""))
    endpoint, _ = endpoint_new(server.url)
    for _ in range(3):
        message_make([endpoint])

    config = replace(FAST, schedule=(0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3), disable_after=1.0)
    with dispatching(config):
        wait_for(lambda: not Endpoint.objects.get(pk=endpoint.pk).enabled, timeout=10)

    endpoint.refresh_from_db()
    assert endpoint.disabled_reason == "failing"
    assert any(
        (e.payload if isinstance(e.payload, dict) else json.loads(e.payload)).get("action")
        == "webhooks.endpoint.disabled"
        for e in OutboxEvent.objects.all()
    )


def test_429_retry_after_delays_the_next_attempt(receiver):
    answers = iter([(429, {"Retry-After": "2"}), (200, {})])

    def respond(seen: Seen):
        status, headers = next(answers)
        return status, headers, b""

    server = receiver(respond)
    endpoint, _ = endpoint_new(server.url)
    message = message_make([endpoint])

    with dispatching(replace(FAST, schedule=(0, 0.1, 0.1))):
        wait_for(lambda: Delivery.objects.filter(message=message, state="succeeded").exists(), timeout=10)

    first, second = attempts_of(endpoint)
    assert first.status_code == 429
    assert (second.at - first.at).total_seconds() >= 1.9


def test_a_slow_answer_times_out(receiver):
    server = receiver(lambda seen: (time.sleep(2), (200, {}, b""))[1])
    endpoint, _ = endpoint_new(server.url)
    message_make([endpoint])

    started = time.monotonic()
    dispatch_once(replace(FAST, timeout=0.5, schedule=(0,)))

    [attempt] = attempts_of(endpoint)
    assert (attempt.error, attempt.status_code) == ("timeout", None)
    assert 450 <= attempt.duration_ms < 1500
    assert time.monotonic() - started < 5


def test_a_refused_connection_is_error_connect(receiver):
    server = receiver()
    server.stop()  # the port is free now: connections to it are refused
    endpoint, _ = endpoint_new(server.url)
    message = message_make([endpoint])

    dispatch_once(replace(FAST, schedule=(0, 60)))

    [attempt] = attempts_of(endpoint)
    assert (attempt.error, attempt.status_code) == ("connect", None)
    delivery = Delivery.objects.get(message=message)
    assert delivery.state == "pending"
    assert delivery.attempts == 1
    assert delivery.leased_until is None
    assert delivery.next_attempt_at > timezone.now() + dt.timedelta(seconds=50)


def test_an_expired_lease_is_due_again(receiver):
    """A dispatcher killed mid-send leaves its lease: once it expires, another dispatcher sends the delivery."""
    server = receiver()
    endpoint, _ = endpoint_new(server.url)
    live, expired = message_make([endpoint]), message_make([endpoint])
    Delivery.objects.filter(message=live).update(leased_until=timezone.now() + dt.timedelta(minutes=5))
    Delivery.objects.filter(message=expired).update(leased_until=timezone.now() - dt.timedelta(seconds=1))

    dispatch_once()

    assert [s.headers["webhook-id"] for s in server.requests] == [expired.id]


# ---------------------------------------------------------------------------------------------------------
# Limits, isolation, ordering


class Concurrency:
    """A responder that takes ``delay`` seconds and records how many requests it held at once."""

    def __init__(self, delay: float, status: int = 200) -> None:
        self.delay, self.status = delay, status
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, seen: Seen):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
        return self.status, {}, b""


def test_the_in_flight_limit_is_respected(receiver):
    counter = Concurrency(0.3)
    server = receiver(counter)
    endpoint, _ = endpoint_new(server.url, max_in_flight=3)
    for _ in range(12):
        message_make([endpoint])

    dispatch_once()

    assert len(server.requests) == 12
    assert counter.peak == 3


def test_the_rate_limit_spaces_deliveries(receiver):
    server = receiver()
    endpoint, _ = endpoint_new(server.url, rate_limit=5)
    for _ in range(10):
        message_make([endpoint])

    started = time.monotonic()
    dispatch_once()
    elapsed = time.monotonic() - started

    assert len(server.requests) == 10
    assert elapsed >= 0.9  # 5 at once (the bucket's second), then 5 more at 5/s


def test_a_hanging_endpoint_does_not_delay_another(receiver):
    hanging = receiver(Concurrency(10.0))
    healthy = receiver()
    slow, _ = endpoint_new(hanging.url, max_in_flight=2)
    fast, _ = endpoint_new(healthy.url)

    with dispatching(replace(FAST, timeout=8.0)):
        for _ in range(4):  # fills the hanging endpoint's slots, and queues behind them
            message_make([slow, fast])
        time.sleep(0.3)
        created = time.monotonic()
        for _ in range(20):
            message_make([slow, fast])
        wait_for(lambda: len(healthy.requests) == 24, timeout=5)
        elapsed = time.monotonic() - created

    assert elapsed < 2.0
    assert len(hanging.requests) <= 2


def test_an_ordered_endpoint_receives_in_creation_order_under_random_failures(receiver):
    rng = random.Random(19)
    succeeded: list[str] = []
    inflight = Concurrency(0.0)

    def respond(seen: Seen):
        inflight(seen)
        if rng.random() < 0.3:
            return 500, {}, b""
        succeeded.append(seen.headers["webhook-id"])
        return 200, {}, b""

    server = receiver(respond)
    endpoint, _ = endpoint_new(server.url, ordered=True, max_in_flight=10)
    messages = [message_make([endpoint]) for _ in range(30)]

    with dispatching(replace(FAST, schedule=(0, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02))):
        wait_for(lambda: not Delivery.objects.filter(endpoint=endpoint, state="pending").exists(), timeout=30)

    delivered = [m.id for m in messages if Delivery.objects.get(message=m, endpoint=endpoint).state == "succeeded"]
    assert succeeded == delivered  # creation order; a given-up one (failed) let the next go
    assert len(delivered) >= 28
    assert inflight.peak == 1


def test_an_ordered_endpoint_waits_for_a_retry_before_the_next(receiver):
    answers = iter([500] + [200] * 10)
    order: list[str] = []

    def respond(seen: Seen):
        order.append(seen.headers["webhook-id"])
        return next(answers), {}, b""

    server = receiver(respond)
    endpoint, _ = endpoint_new(server.url, ordered=True)
    first, second = message_make([endpoint]), message_make([endpoint])

    with dispatching(replace(FAST, schedule=(0, 0.5, 0.5))):
        wait_for(lambda: Delivery.objects.filter(endpoint=endpoint, state="succeeded").count() == 2)

    assert order == [first.id, first.id, second.id]


# ---------------------------------------------------------------------------------------------------------
# Pure parts


def test_retry_after_reads_seconds_and_http_dates():
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Thu, 01 Jan 2026 12:01:30 GMT", now) == 90
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_the_retry_schedule_with_jitter_and_retry_after():
    config = DispatchConfig()
    rng = random.Random(1)
    for attempts, base in enumerate(config.schedule):
        for _ in range(50):
            delay = next_attempt_delay(attempts, config, rng=rng)
            assert delay is not None
            assert base * 0.8 <= delay <= base * 1.2
    assert next_attempt_delay(len(config.schedule), config) is None
    assert next_attempt_delay(1, config, retry_after=100, rng=rng) >= 100
    assert next_attempt_delay(1, config, retry_after=10**6, rng=rng) == 3600
    assert next_attempt_delay(2, config, retry_after=1, rng=rng) >= 240  # the schedule, when it is later


# ---------------------------------------------------------------------------------------------------------
# Triggers and the process


def test_a_resent_delivery_attempt_carries_its_trigger_then_goes_back_to_scheduled(receiver):
    server = receiver()
    endpoint, _ = endpoint_new(server.url)
    message = message_make([endpoint])
    Delivery.objects.filter(message=message).update(trigger="manual")

    dispatch_once()

    [attempt] = attempts_of(endpoint)
    assert attempt.trigger == "manual"
    assert Delivery.objects.get(message=message).trigger == "scheduled"


@pytest.mark.slow
def test_the_command_stops_cleanly_on_sigterm_finishing_what_is_in_flight(receiver):
    """``manage.py webhooks_dispatch`` as a process: SIGTERM lets the send in flight finish and be written, lets go
    of the lease of what it had claimed ahead (sent at once by the next dispatcher), and exits 0."""
    slow = Concurrency(2.0)
    server = receiver(slow)
    endpoint, _ = endpoint_new(server.url, max_in_flight=1)
    messages = [message_make([endpoint]) for _ in range(3)]
    env = base_env("webhooks", current_test_database_url(), WEBHOOKS_ALLOWED_NETWORKS="127.0.0.0/8")
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "services/webhooks/manage.py", "webhooks_dispatch"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(server.requests) == 1, timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    states = [Delivery.objects.get(message=m) for m in messages]
    assert [d.state for d in states] == ["succeeded", "pending", "pending"]
    assert all(d.leased_until is None for d in states)
    assert len(server.requests) == 1
