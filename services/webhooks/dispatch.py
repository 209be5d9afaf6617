"""The dispatcher: one asyncio process that sends every due delivery to its endpoint, concurrently.

``python services/webhooks/manage.py webhooks_dispatch`` runs :func:`dispatch_run`. Its parts:

* **claims** (one coroutine): wakes on ``LISTEN webhooks_due`` (the ingest's NOTIFY), on a freed slot of a
  saturated endpoint, on the soonest retry it wrote, or every ``poll`` seconds; claims due deliveries with
  ``FOR UPDATE SKIP LOCKED`` and a lease (``timeout + 30 s``), never more per endpoint than its free in-flight
  slots and its token bucket (``rate_limit`` messages/s) allow. An ordered endpoint gets only its lowest
  ``msg_seq`` pending delivery, and only while none of its is in flight: the next waits until the previous one
  succeeded or was given up. Each endpoint holds about a second's worth of claimed deliveries ahead of its
  free slots (2 to 20 rounds of ``max_in_flight``), so a freed slot is filled without a round trip to the
  database. A breaker holds the claims of an endpoint whose connections failed 5 times in a row (1 s,
  doubling to 30 s, then one probe): a dead endpoint's deliveries stay due instead of cycling at the speed of a
  refused connect. An expired lease (a dispatcher killed mid-send) makes a delivery due again:
  nothing is lost, and no sweep is needed (at-least-once: receivers dedupe on ``webhook-id``).
* **sends** (a task per attempt): one aiohttp ``ClientSession`` per endpoint (keep-alive, connector limit =
  ``max_in_flight``, no redirects, no proxies from the environment, ``WEBHOOKS_TIMEOUT_SECONDS`` for the whole
  exchange, at most 4 KiB of the answer read). Every connection goes through the kit's outbound guard
  (``services/kit/outbound.py``): the endpoint's host is resolved and every address checked
  (``WEBHOOKS_ALLOWED_NETWORKS`` is the allow-list), the answer is cached for ``dns_ttl`` seconds and checked
  again when it expires, and the connection is made to the address checked (the session's resolver answers
  with it alone: DNS rebinding cannot move a connection), with the Host header and TLS SNI the name. A
  refused target is attempt error ``ssrf_blocked``, and no connection is made.
* **results** (one coroutine): attempts, deliveries and endpoint statistics written in batches, one
  statement each (``queries.dispatch_results``). Outcomes: a 2xx in time succeeds; anything else fails and
  is retried on ``WEBHOOKS_RETRY_SCHEDULE`` (attempt n waits item n-1, ±``WEBHOOKS_RETRY_JITTER``), ``429``
  and ``503`` no sooner than their ``Retry-After`` (capped at ``WEBHOOKS_RETRY_AFTER_MAX_SECONDS``); after the
  last attempt the delivery is ``failed``. ``410`` disables the endpoint at once (reason ``gone``); an endpoint
  that has only failed for ``WEBHOOKS_DISABLE_AFTER_SECONDS`` since its first failure after its last success
  is disabled (reason ``failing``). A disable is audited through the outbox, in the same transaction.

Each attempt logs one line (``webhooks.attempt``) under its message's request id. SIGTERM stops claiming, lets
what is in flight finish (a few seconds at most), writes the results, and lets go of the leases of the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import email.utils
import logging
import math
import queue
import random
import signal
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging.handlers import QueueHandler, QueueListener
from typing import Any

import aiohttp
import httpx
import psycopg
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from services.kit.audit import audit_record
from services.kit.logs import get_logger
from services.kit.outbound import (
    BLOCKED,
    DNS,
    INVALID_URL,
    OutboundRefused,
    OutboundTarget,
    Resolver,
    allow_networks,
    outbound_target,
)
from services.webhooks import queries, secrets
from services.webhooks.signing import sign_v1, sign_v1a

log = get_logger(__name__)

# Attempt error kinds (Attempt.error); "" is a success.
TIMEOUT = "timeout"
CONNECT = "connect"
DNS_ERROR = "dns"
TLS = "tls"
SSRF_BLOCKED = "ssrf_blocked"
STATUS = "status"

RESPONSE_MAX_BYTES = 4096
# The breaker: after this many connection failures in a row (connect, dns, tls) an endpoint's claims are held.
BREAKER_AFTER = 5
BREAKER_MAX_SECONDS = 30.0
USER_AGENT = "Atrium-Webhooks/1"
CHANNEL = "webhooks_due"
TRIGGER_SCHEDULED = "scheduled"


# ---------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DispatchConfig:
    """What the dispatcher runs with (settings by default; tests give their own)."""

    timeout: float = 15.0
    schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    jitter: float = 0.2
    retry_after_max: float = 3600.0
    disable_after: float = 432000.0
    allow: tuple[str, ...] = ()
    require_https: bool = False
    dns_ttl: float = 30.0
    poll: float = 0.5
    endpoints_refresh: float = 1.0
    lease_extra: float = 30.0
    claim_max: int = 500  # per endpoint and claim
    batch_max: int = 1000  # results per write
    write_linger: float = 0.005  # seconds a write waits for more results to join it
    grace: float = 5.0  # how long a stop waits for what is in flight
    resolver: Resolver | None = None  # the kit guard's (host, port) → addresses; None: the system's
    ssl_context: ssl.SSLContext | None = None  # https: the CAs trusted (None: certifi's, as the kit's)

    @classmethod
    def from_settings(cls, **overrides: Any) -> DispatchConfig:
        allow = getattr(settings, "WEBHOOKS_ALLOWED_NETWORKS", None)
        if allow is None or (isinstance(allow, str) and not allow.strip()):
            allow = getattr(settings, "ATRIUM_OUTBOUND_ALLOW_NETWORKS", ())
        if isinstance(allow, str):
            allow = [part.strip() for part in allow.split(",") if part.strip()]
        values: dict[str, Any] = {
            "timeout": float(getattr(settings, "WEBHOOKS_TIMEOUT_SECONDS", 15)),
            "schedule": tuple(float(s) for s in getattr(settings, "WEBHOOKS_RETRY_SCHEDULE", cls.schedule)),
            "jitter": float(getattr(settings, "WEBHOOKS_RETRY_JITTER", 0.2)),
            "retry_after_max": float(getattr(settings, "WEBHOOKS_RETRY_AFTER_MAX_SECONDS", 3600)),
            "disable_after": float(getattr(settings, "WEBHOOKS_DISABLE_AFTER_SECONDS", 432000)),
            "allow": tuple(str(a) for a in allow),
            "require_https": getattr(settings, "ATRIUM_ENV", "") == "production",
            "dns_ttl": float(getattr(settings, "WEBHOOKS_DNS_TTL_SECONDS", 30)),
            "poll": float(getattr(settings, "WEBHOOKS_POLL_SECONDS", 0.5)),
        }
        values.update(overrides)
        return cls(**values)


def database_conninfo() -> str:
    """Django's default database as a libpq connection string (the dispatcher's own connections)."""
    params = connection.get_connection_params()
    return psycopg.conninfo.make_conninfo(
        **{k: v for k, v in params.items() if k not in ("cursor_factory", "context", "prepare_threshold")}
    )


# ---------------------------------------------------------------------------------------------------------
# Outcomes (pure)


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max((moment - now).total_seconds(), 0.0)


def next_attempt_delay(
    attempts: int,
    config: DispatchConfig,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until attempt ``attempts + 1`` after ``attempts`` failed ones, or None: given up.

    Attempt n waits ``schedule[n-1]`` (±jitter); a Retry-After (429/503) delays it to at least that many
    seconds, capped at ``retry_after_max``."""
    if attempts >= len(config.schedule):
        return None
    base = float(config.schedule[attempts])
    jitter = (rng or random).uniform(-config.jitter, config.jitter) if config.jitter else 0.0
    delay = base * (1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, config.retry_after_max))
    return max(delay, 0.0)


def error_kind(exc: BaseException) -> str:
    """The attempt error of a transport failure."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return TIMEOUT
    if isinstance(
        exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError
    ):
        return TLS
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return DNS_ERROR
    return CONNECT


# ---------------------------------------------------------------------------------------------------------
# Endpoints


@dataclass
class EndpointConfig:
    id: str
    url: str
    max_in_flight: int
    rate_limit: int | None
    ordered: bool
    secret: str
    previous_secret: str
    previous_expires_at: dt.datetime | None
    signing_key: Any  # services.webhooks.signing's private key, or None
    updated_at: dt.datetime

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """``webhook-signature``: the current secret's, the previous one's while the overlap lasts, ``v1a``."""
        parts = [sign_v1(self.secret, msg_id, timestamp, body)]
        if self.previous_secret and self.previous_expires_at is not None:
            if self.previous_expires_at.timestamp() > timestamp:
                parts.append(sign_v1(self.previous_secret, msg_id, timestamp, body))
        if self.signing_key is not None:
            parts.append(sign_v1a(self.signing_key, msg_id, timestamp, body))
        return " ".join(parts)


def endpoint_config(row: tuple[Any, ...]) -> EndpointConfig:
    """An endpoint row of ``queries.DISPATCH_ENDPOINTS_SQL``, its secrets decrypted."""
    (ep_id, url, max_in_flight, rate_limit, ordered, secret, previous, previous_expires, signing_key, v1a, updated) = (
        row
    )
    return EndpointConfig(
        id=ep_id,
        url=url,
        max_in_flight=max(int(max_in_flight or 1), 1),
        rate_limit=int(rate_limit) if rate_limit else None,
        ordered=bool(ordered),
        secret=secrets.decrypt(secret),
        previous_secret=secrets.decrypt(previous) if previous else "",
        previous_expires_at=previous_expires,
        signing_key=signing_key_load(signing_key) if (v1a and signing_key) else None,
        updated_at=updated,
    )


def signing_key_load(token: str) -> Any:
    """The endpoint's Ed25519 private key from its stored (encrypted, hex) form."""
    return secrets.signing_key_load(secrets.decrypt(token))


class TokenBucket:
    """``rate`` tokens a second, at most ``rate`` (one second's worth, at least 1) held."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.capacity = max(self.rate, 1.0)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def available(self, now: float) -> int:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return int(self.tokens)

    def take(self, count: int) -> None:
        self.tokens -= count

    def wait(self) -> float:
        """Seconds until the next whole token."""
        return max((1.0 - self.tokens) / self.rate, 0.0) if self.tokens < 1 else 0.0


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one endpoint's session: answers with the address the guard checked, nothing else
    (no lookup happens here: a connection can only go where the check said)."""

    def __init__(self, state: EndpointState) -> None:
        self.state = state

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        target = self.state.target
        if target is None or target.url.host != host.lower().rstrip("."):
            raise OSError("no checked address for this host")
        address = target.address
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


@dataclass
class EndpointState:
    config: EndpointConfig
    session: aiohttp.ClientSession | None = None
    in_flight: int = 0  # being sent
    queue: collections.deque[Claimed] = field(default_factory=collections.deque)  # claimed, waiting for a slot
    send_seconds: float = 1.0  # a moving average of how long a send takes
    refused_in_row: int = 0  # connection failures since the last answer
    held_until: float = 0.0  # the breaker: no claims before this (monotonic)

    def depth(self) -> int:
        """How many deliveries to hold (sending and claimed ahead): about a second's worth of sends, at least
        two rounds of the in-flight limit, at most 20 (a claimed delivery waits for a slot at most a second or
        one send's time, well within its lease)."""
        rounds = min(max(1.0 / max(self.send_seconds, 0.001), 2.0), 20.0)
        return int(self.config.max_in_flight * rounds)

    bucket: TokenBucket | None = None
    saturated: bool = False
    disabled: bool = False
    target: OutboundTarget | None = None
    target_error: str = ""
    target_expires: float = 0.0
    target_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    request_url: str = ""


# ---------------------------------------------------------------------------------------------------------
# Claims and results


@dataclass
class Claimed:
    delivery_id: int
    endpoint_id: str
    message_id: str
    attempts: int
    body: bytes
    request_id: str
    trigger: str


@dataclass
class Outcome:
    claimed: Claimed
    number: int
    at: dt.datetime
    duration_ms: int
    status_code: int | None
    response_body: str
    error: str
    retry_after: float | None
    ordered: bool


class Dispatcher:
    """The dispatcher of one process: :meth:`run` until ``stop`` is set (or ``once`` finds nothing left)."""

    def __init__(self, config: DispatchConfig | None = None, conninfo: str | None = None) -> None:
        self.config = config or DispatchConfig.from_settings()
        self.conninfo = conninfo or database_conninfo()
        self.endpoints: dict[str, EndpointState] = {}
        self.sent = 0
        self.succeeded = 0
        self.claims = 0
        self.claim_seconds = 0.0
        self.writes = 0
        self.write_seconds = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._results: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._unwritten = 0
        self._next_due = math.inf
        self._endpoints_at = 0.0
        self._claim_conn: psycopg.AsyncConnection[Any] | None = None
        self._result_conn: psycopg.AsyncConnection[Any] | None = None
        self._rng = random.Random()  # noqa: S311  (retry jitter, not a secret)
        self._retired: set[aiohttp.ClientSession] = set()
        self._closing: set[asyncio.Future[None]] = set()
        self._throttled = False  # a rate limit held back an endpoint in the last claim

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # -- the process --------------------------------------------------------------------------------------

    async def run(self, *, once: bool = False, max_seconds: float | None = None) -> None:
        started = time.monotonic()
        self._claim_conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        self._result_conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        listener = asyncio.create_task(self._listen())
        writer = asyncio.create_task(self._write_loop())
        log.info("webhooks.dispatcher.started", timeout=self.config.timeout, poll=self.config.poll)
        self._wake.set()  # a first claim at once
        try:
            while not self._stop.is_set():
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    break
                await self._wait()
                if self._stop.is_set():
                    break
                claimed = await self._claim_round()
                if once and not claimed and not self._tasks and self._unwritten == 0 and not self._throttled:
                    break
        finally:
            await self._shutdown(listener, writer)
        log.info(
            "webhooks.dispatcher.stopped",
            sent=self.sent,
            succeeded=self.succeeded,
            claims=self.claims,
            claim_ms=round(self.claim_seconds * 1000 / max(self.claims, 1), 2),
            writes=self.writes,
            write_ms=round(self.write_seconds * 1000 / max(self.writes, 1), 2),
        )

    async def _wait(self) -> None:
        now = time.monotonic()
        timeout = min(self.config.poll, max(self._next_due - now, 0.0))
        for state in self.endpoints.values():
            if state.saturated and state.bucket is not None and state.in_flight < state.config.max_in_flight:
                timeout = min(timeout, state.bucket.wait())
        if not self._wake.is_set() and timeout > 0:
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()
        if self._next_due <= time.monotonic():
            self._next_due = math.inf

    async def _shutdown(self, listener: asyncio.Task[None], writer: asyncio.Task[None]) -> None:
        listener.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks.values()), timeout=self.config.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        unsent = list(self._tasks)
        for state in self.endpoints.values():
            unsent.extend(c.delivery_id for c in state.queue)
            self._unwritten -= len(state.queue)
            state.queue.clear()
        await self._results.put(None)
        await writer
        if unsent and self._result_conn is not None:
            try:
                await queries.dispatch_release(self._result_conn, unsent)
            except psycopg.Error as exc:
                log.warning("webhooks.dispatcher.release_failed", error=type(exc).__name__, count=len(unsent))
        for state in self.endpoints.values():
            if state.session is not None:
                await state.session.close()
        for session in list(self._retired):
            await session.close()
        if self._closing:
            await asyncio.wait(list(self._closing))
        for conn in (self._claim_conn, self._result_conn):
            if conn is not None:
                await conn.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener  # its end is of no interest

    async def _listen(self) -> None:
        """Wake the claims on every NOTIFY; reconnect after a loss (the poll covers the gap)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("webhooks.dispatcher.listen_lost", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    # -- endpoints ----------------------------------------------------------------------------------------

    async def _endpoints_refresh(self) -> None:
        assert self._claim_conn is not None
        rows = await queries.dispatch_endpoints(self._claim_conn)
        seen: set[str] = set()
        for row in rows:
            ep_id, updated = row[0], row[10]
            seen.add(ep_id)
            state = self.endpoints.get(ep_id)
            if state is not None and state.config.updated_at == updated and not state.disabled:
                continue
            try:
                config = await asyncio.to_thread(endpoint_config, row)
            except Exception as exc:
                log.error("webhooks.endpoint.unusable", endpoint_id=ep_id, error=type(exc).__name__)
                continue
            if state is None:
                self.endpoints[ep_id] = EndpointState(config=config)
                state = self.endpoints[ep_id]
            else:
                if state.config.url != config.url or state.config.max_in_flight != config.max_in_flight:
                    self._session_retire(state)
                    state.target, state.target_expires = None, 0.0
                state.config = config
                state.disabled = False
            state.bucket = TokenBucket(config.rate_limit) if config.rate_limit else None
        for ep_id in list(self.endpoints):
            if ep_id not in seen:
                state = self.endpoints[ep_id]
                state.disabled = True
                if state.queue:  # claimed, not sent: let go of them (sent when the endpoint is enabled again)
                    await queries.dispatch_release(self._claim_conn, [c.delivery_id for c in state.queue])
                    self._unwritten -= len(state.queue)
                    state.queue.clear()
                if state.in_flight == 0:
                    self._session_retire(state)
                    del self.endpoints[ep_id]

    def _session_retire(self, state: EndpointState) -> None:
        session, state.session = state.session, None
        if session is not None:
            # closed once what is still in flight on it has ended (within the timeout), or at the stop
            self._retired.add(session)
            asyncio.get_running_loop().call_later(self.config.timeout + 1, self._session_close, session)

    def _session_close(self, session: aiohttp.ClientSession) -> None:
        if session in self._retired:
            self._retired.discard(session)
            task = asyncio.ensure_future(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _session(self, state: EndpointState) -> aiohttp.ClientSession:
        if state.session is None or state.session.closed:
            connector = aiohttp.TCPConnector(
                limit=state.config.max_in_flight,
                ssl=self.config.ssl_context or _default_ssl_context(),
                resolver=PinnedResolver(state),
                use_dns_cache=False,
                enable_cleanup_closed=False,
            )
            state.session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={
                    "content-type": "application/json",
                    "user-agent": USER_AGENT,
                    "accept-encoding": "identity",
                },
                trust_env=False,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept",),
            )
        return state.session

    async def _target_check(self, state: EndpointState) -> str:
        """The endpoint's checked target, resolved again when ``dns_ttl`` has passed; the error kind when the
        guard refuses it ("" when it may be sent to)."""
        if state.target_expires > time.monotonic():
            return state.target_error
        async with state.target_lock:
            if state.target_expires > time.monotonic():
                return state.target_error
            previous = state.target
            error = ""
            target: OutboundTarget | None = None
            try:
                target = await asyncio.to_thread(
                    outbound_target,
                    state.config.url,
                    allow=self.config.allow,
                    resolver=self.config.resolver,
                    timeout=min(5.0, self.config.timeout),
                )
                if (
                    self.config.require_https
                    and target.url.scheme != "https"
                    and not _allow_listed(target.address, self.config.allow)
                ):
                    target, error = None, SSRF_BLOCKED
            except OutboundRefused as refused:
                error = DNS_ERROR if refused.error == DNS else SSRF_BLOCKED
                if refused.error not in (BLOCKED, INVALID_URL, DNS):
                    error = SSRF_BLOCKED
            if target is not None and previous is not None and previous.address != target.address:
                self._session_retire(state)  # pooled connections went to the old address
            state.target, state.target_error = target, error
            state.target_expires = time.monotonic() + self.config.dns_ttl
            if target is not None:
                url = target.url
                host = f"[{url.host}]" if ":" in url.host else url.host
                state.request_url = f"{url.scheme}://{host}:{url.port}{url.target}"
            if error:
                log.warning("webhooks.endpoint.target_refused", endpoint_id=state.config.id, error=error)
            return error

    # -- claims -------------------------------------------------------------------------------------------

    async def _claim_round(self) -> int:
        """One claim for every endpoint with a free slot and a token; start a send for each delivery."""
        assert self._claim_conn is not None
        now = time.monotonic()
        if now - self._endpoints_at >= self.config.endpoints_refresh:
            self._endpoints_at = now
            try:
                await self._endpoints_refresh()
            except psycopg.Error as exc:
                log.warning("webhooks.dispatcher.refresh_failed", error=type(exc).__name__)
                await self._reconnect_claims()
                return 0
        slots: dict[str, int] = {}
        ordered: list[str] = []
        self._throttled = False
        for ep_id, state in self.endpoints.items():
            if state.disabled:
                continue
            held = state.in_flight + len(state.queue)
            if state.held_until > now:
                self._next_due = min(self._next_due, state.held_until)
                continue
            if state.config.ordered or state.refused_in_row >= BREAKER_AFTER:
                # ordered: one at a time; a breaker that has just let go: one probe until an answer comes
                free = 0 if held else 1
            else:
                # up to max_in_flight sending and as many claimed ahead: a freed slot is filled at once, not
                # after a round trip to the database (the lease covers the wait: at most one send's time)
                free = state.depth() - held
            if free <= 0:
                continue
            if state.bucket is not None:
                free = min(free, state.bucket.available(now))
                if free <= 0:
                    state.saturated = self._throttled = True
                    continue
            if state.config.ordered:
                ordered.append(ep_id)
            else:
                slots[ep_id] = min(free, self.config.claim_max)
        if not slots and not ordered:
            return 0
        started = time.monotonic()
        try:
            rows = await queries.dispatch_claim(
                self._claim_conn, slots, ordered, self.config.timeout + self.config.lease_extra
            )
        except psycopg.Error as exc:
            log.warning("webhooks.dispatcher.claim_failed", error=type(exc).__name__)
            await self._reconnect_claims()
            return 0
        self.claims += 1
        self.claim_seconds += time.monotonic() - started
        got: dict[str, int] = {}
        for delivery_id, ep_id, message_id, attempts, body, request_id, trigger in rows:
            state = self.endpoints[ep_id]
            got[ep_id] = got.get(ep_id, 0) + 1
            if state.bucket is not None:
                state.bucket.take(1)
            self._unwritten += 1
            state.queue.append(
                Claimed(delivery_id, ep_id, message_id, attempts, body.encode(), request_id or "", trigger)
            )
        for ep_id in got:
            self._start_sends(self.endpoints[ep_id])
        for ep_id, n in slots.items():
            state = self.endpoints[ep_id]
            state.saturated = got.get(ep_id, 0) >= n
            if state.saturated and state.bucket is not None:
                self._throttled = True
        for ep_id in ordered:
            self.endpoints[ep_id].saturated = False
        return len(rows)

    def _start_sends(self, state: EndpointState) -> None:
        """Send what the endpoint has claimed, as far as its in-flight limit allows."""
        while state.queue and state.in_flight < state.config.max_in_flight:
            claimed = state.queue.popleft()
            state.in_flight += 1
            self._tasks[claimed.delivery_id] = asyncio.create_task(self._send(state, claimed))

    async def _reconnect_claims(self) -> None:
        await asyncio.sleep(0.5)
        try:
            if self._claim_conn is not None:
                await self._claim_conn.close()
            self._claim_conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            log.warning("webhooks.dispatcher.reconnect_failed", error=type(exc).__name__)

    # -- sends --------------------------------------------------------------------------------------------

    async def _send(self, state: EndpointState, claimed: Claimed) -> None:
        at = timezone.now()
        started = time.monotonic()
        status: int | None = None
        body_text = ""
        retry_after: float | None = None
        error = ""
        try:
            error = await self._target_check(state)
            if not error:
                session = self._session(state)
                timestamp = int(time.time())
                headers = {
                    "webhook-id": claimed.message_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": state.config.signature(claimed.message_id, timestamp, claimed.body),
                }
                async with asyncio.timeout(self.config.timeout + 1.0):
                    async with session.post(
                        state.request_url, data=claimed.body, headers=headers, allow_redirects=False
                    ) as response:
                        status = response.status
                        raw, complete = await _read_bounded(response, RESPONSE_MAX_BYTES)
                        if not complete:
                            response.close()  # the rest is not read: the connection cannot be reused
                        body_text = raw.decode("utf-8", errors="replace")
                        if status in (429, 503):
                            retry_after = retry_after_seconds(response.headers.get("Retry-After"), at)
                if not 200 <= status < 300:
                    error = STATUS
        except asyncio.CancelledError:
            state.in_flight -= 1
            self._unwritten -= 1
            raise
        except Exception as exc:
            error = error_kind(exc)
            status = None
        elapsed = time.monotonic() - started
        duration_ms = int(elapsed * 1000)
        state.send_seconds += (elapsed - state.send_seconds) * 0.1
        if error in (CONNECT, DNS_ERROR, TLS):
            state.refused_in_row += 1
            if state.refused_in_row >= BREAKER_AFTER:
                # a dead endpoint fails at once and would cycle its slots as fast as a healthy one: hold its
                # claims (1 s, doubling to 30 s), then probe with one delivery; its deliveries stay due meanwhile
                hold = min(BREAKER_MAX_SECONDS, 2.0 ** min(state.refused_in_row - BREAKER_AFTER, 5))
                state.held_until = time.monotonic() + hold
        elif error != SSRF_BLOCKED:
            state.refused_in_row, state.held_until = 0, 0.0
        state.in_flight -= 1
        self._tasks.pop(claimed.delivery_id, None)
        if not state.disabled and not self._stop.is_set():  # a stop sends nothing new
            self._start_sends(state)
        if state.saturated and len(state.queue) <= state.depth() // 2:
            self._wake.set()
        self.sent += 1
        log.info(
            "webhooks.attempt",
            request_id=claimed.request_id or None,
            message_id=claimed.message_id,
            endpoint_id=claimed.endpoint_id,
            delivery_id=claimed.delivery_id,
            number=claimed.attempts + 1,
            status_code=status,
            error=error,
            duration_ms=duration_ms,
        )
        self._results.put_nowait(
            Outcome(
                claimed=claimed,
                number=claimed.attempts + 1,
                at=at,
                duration_ms=duration_ms,
                status_code=status,
                response_body=body_text,
                error=error,
                retry_after=retry_after,
                ordered=state.config.ordered,
            )
        )

    # -- results ------------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        done = False
        while not done:
            first = await self._results.get()
            if first is None:
                break
            batch = [first]
            # a few ms for more outcomes to join: fewer, fuller writes (one statement each)
            lingered = False
            while len(batch) < self.config.batch_max:
                if self._results.empty():
                    if lingered or self.config.write_linger <= 0 or self._stop.is_set():
                        break
                    lingered = True
                    await asyncio.sleep(self.config.write_linger)
                    continue
                item = self._results.get_nowait()
                if item is None:
                    done = True
                    break
                batch.append(item)
            await self._write(batch)

    async def _write(self, batch: list[Outcome]) -> None:
        now = timezone.now()
        attempts: list[list[Any]] = [[] for _ in range(11)]
        deliveries: list[list[Any]] = [[] for _ in range(7)]
        stats: dict[str, list[Any]] = {}  # endpoint → [success_at, failure_at, last_status, last_error]
        gone: list[str] = []
        soonest = math.inf
        wake = False
        for o in sorted(batch, key=lambda o: o.at):
            c = o.claimed
            for column, value in zip(
                attempts,
                (
                    c.delivery_id,
                    c.message_id,
                    c.endpoint_id,
                    o.number,
                    o.at,
                    o.duration_ms,
                    o.status_code,
                    o.response_body,
                    o.error,
                    c.trigger or TRIGGER_SCHEDULED,
                    c.request_id,
                ),
                strict=True,
            ):
                column.append(value)
            if not o.error:
                state, next_at, succeeded_at = "succeeded", now, now
            else:
                delay = next_attempt_delay(o.number, self.config, retry_after=o.retry_after, rng=self._rng)
                succeeded_at = None
                if delay is None:
                    state, next_at = "failed", now
                else:
                    state, next_at = "pending", now + dt.timedelta(seconds=delay)
                    soonest = min(soonest, time.monotonic() + delay)
                if o.status_code == 410:
                    gone.append(c.endpoint_id)
            for column, value in zip(
                deliveries,
                (c.delivery_id, state, o.number, next_at, o.status_code, o.error, succeeded_at),
                strict=True,
            ):
                column.append(value)
            entry = stats.setdefault(c.endpoint_id, [None, None, None, ""])
            if not o.error:
                entry[0], entry[1] = o.at, None
            elif entry[1] is None:
                entry[1] = o.at
            entry[2] = o.status_code
            entry[3] = _error_text(o)
            wake = wake or o.ordered
        endpoint_columns: list[list[Any]] = [list(stats), *([v[i] for v in stats.values()] for i in range(4))]
        failing: list[str] = []
        for attempt in range(5):
            try:
                assert self._result_conn is not None
                started = time.monotonic()
                failing = await queries.dispatch_results(
                    self._result_conn, attempts, deliveries, endpoint_columns, self.config.disable_after
                )
                self.writes += 1
                self.write_seconds += time.monotonic() - started
                break
            except psycopg.Error as exc:
                log.warning("webhooks.dispatcher.write_failed", error=type(exc).__name__, attempt=attempt + 1)
                await asyncio.sleep(0.2 * 2**attempt)
                try:
                    if self._result_conn is None or self._result_conn.closed:
                        self._result_conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                except psycopg.Error:
                    pass
        else:
            log.error("webhooks.dispatcher.results_lost", count=len(batch))  # their leases expire: sent again
        self._unwritten -= len(batch)
        self.succeeded += sum(1 for o in batch if not o.error)
        for reason, ids in (("gone", sorted(set(gone))), ("failing", sorted(set(failing) - set(gone)))):
            if ids:
                disabled = await asyncio.to_thread(
                    endpoints_disable, ids, reason, failing=reason == "failing", after=self.config.disable_after
                )
                for ep_id in disabled:
                    state_ = self.endpoints.get(ep_id)
                    if state_ is not None:
                        state_.disabled = True
        if soonest < self._next_due:
            self._next_due = soonest
            wake = True
        if wake or self._unwritten == 0:
            self._wake.set()


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the answer, and whether that was all of it."""
    data = bytearray()
    while len(data) < limit:
        chunk = await response.content.read(limit - len(data))
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), response.content.at_eof()


_ssl_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """One verifying context for every session (certifi's CAs, as the kit's outbound client)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def _allow_listed(address: Any, allow: Iterable[str]) -> bool:
    return any(address.version == net.version and address in net for net in allow_networks(allow))


def _error_text(outcome: Outcome) -> str:
    if not outcome.error:
        return ""
    if outcome.error == STATUS:
        return f"status {outcome.status_code}"
    return outcome.error


# ---------------------------------------------------------------------------------------------------------
# Disabling (Django's connection, with the audit event in the same transaction)


def endpoints_disable(ids: list[str], reason: str, *, failing: bool, after: float) -> list[str]:
    """Disable the endpoints (``gone``: a 410; ``failing``: only failures for ``after`` seconds), each with its
    audit event ``webhooks.endpoint.disabled`` (actor: the service); the ids actually disabled."""
    close_old_connections()
    try:
        with transaction.atomic():
            rows = queries.endpoints_disable(ids, reason, failing=failing, after=after)
            for ep_id, _url, first_failure_at, last_error in rows:
                audit_record(
                    "webhooks.endpoint.disabled",
                    object_type="endpoint",
                    object_id=ep_id,
                    changes={"enabled": [True, False], "disabled_reason": ["", reason]},
                    metadata={"reason": reason, "first_failure_at": first_failure_at, "last_error": last_error},
                )
                log.warning("webhooks.endpoint.disabled", endpoint_id=ep_id, reason=reason)
        return [row[0] for row in rows]
    finally:
        connection.close()


class _Handoff(QueueHandler):
    """Passes the record itself (same process: its extras and exception stay for the JSON formatter). When the
    writer is that far behind (stdout not read), records are dropped, and counted, rather than held."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            _Handoff.dropped += 1


def _logging_off_the_loop() -> QueueListener | None:
    """Hand log records to a thread that writes them: a slow reader of stdout (a pipe to a supervisor) must not
    stall every send. Records are stamped (service, request and task ids) here, formatted and written there."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    if not handlers:
        return None
    records: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=100_000)
    handler = _Handoff(records)
    for existing in handlers:
        for log_filter in existing.filters:
            if log_filter not in handler.filters:
                handler.addFilter(log_filter)
        root.removeHandler(existing)
    root.addHandler(handler)
    listener = QueueListener(records, *handlers, respect_handler_level=True)
    listener.start()
    return listener


def dispatch_run(*, once: bool = False, max_seconds: float | None = None, config: DispatchConfig | None = None) -> None:
    """Run a dispatcher in this thread until SIGTERM/SIGINT (or ``once`` idle, or ``max_seconds``)."""

    async def main() -> None:
        dispatcher = Dispatcher(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, dispatcher.stop)
        await dispatcher.run(once=once, max_seconds=max_seconds)

    listener = _logging_off_the_loop()
    try:
        asyncio.run(main())
    finally:
        if listener is not None:
            listener.stop()  # writes what is queued
            if _Handoff.dropped:
                log.warning("webhooks.dispatcher.log_lines_dropped", count=_Handoff.dropped)


__all__ = [
    "DispatchConfig",
    "Dispatcher",
    "dispatch_run",
    "next_attempt_delay",
    "retry_after_seconds",
]
