"""Revoked machine clients and rotated secrets, known in every process that verifies tokens.

A token is verified locally and stays valid until it expires, so revoking its client (or rotating its secret
past the grace period) must reach every verifier some other way. The portal publishes, per machine client whose
tokens must be cut off, a :class:`RevocationEntry`:

- ``not_before``: tokens issued (``iat``) at or before it are refused — set when the client is revoked;
- ``secret_generation`` and ``previous_valid_until``: tokens name the generation of the secret that obtained them
  (claim ``sgen``); those of older generations are refused, those of the generation just replaced only once its
  grace period is over (at once after a rotation without grace);
- ``until``: when the entry stops mattering (every token it could refuse has expired); then it is dropped.

Where it is published:

- a Redis hash on ``REDIS_URL`` (``JWT_REVOCATIONS_KEY``: one field per client id, plus ``_version``, bumped by
  every change, and ``_complete``, set when the portal wrote its whole list), and a pub/sub channel of the same
  name announcing each change;
- the portal's public endpoint ``JWT_REVOCATIONS_URL`` (by default ``atrium-revocations.json`` next to
  ``JWT_JWKS_URL``), read from the portal's database. Public like a certificate revocation list: a service whose
  own client was revoked must still learn revocations, and the list holds client ids and times, no secret.

Every process keeps an in-memory copy, refreshed by one background thread of its own (:class:`RevocationWatcher`,
started on first use and again in a forked child): it subscribes to the channel and reads the hash when told of a
change, and in any case every ``JWT_REVOCATIONS_POLL_SECONDS`` (one ``HMGET`` of the version). When the hash is not
complete (Redis was flushed or lost its data) or Redis is away, it reads the portal's endpoint instead, and it
reads the endpoint every ``JWT_REVOCATIONS_RECONCILE_SECONDS`` anyway, which catches an announcement lost while
Redis was unreachable. Copies only ever merge (an entry is never loosened), so no source can undo a revocation.
If both sources are away the process keeps its last copy and logs ``revocations.stale``: revocations made since
then are not enforced by it until one source answers again. A process that never obtained a copy refuses tokens
with 503 ``revocations_unavailable`` rather than accept one it cannot check.

The per-request check (:meth:`RevocationWatcher.refusal`) is a dict lookup in memory: no Redis or HTTP call.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import redis
from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework import exceptions

from services.kit.background import BackgroundThread
from services.kit.logs import get_logger

log = get_logger(__name__)

VERSION_FIELD = "_version"
COMPLETE_FIELD = "_complete"
DOCUMENT_NAME = "atrium-revocations.json"
# A process that never obtained a list tries again on a request at most this often (the thread keeps trying).
FIRST_LOAD_RETRY_SECONDS = 1.0
STALE_LOG_SECONDS = 60.0
# Announcements read in one go before the list is read again.
MAX_DRAIN = 1000

_wall_clock = time.time  # module-level so tests can move this module's clock alone
_monotonic = time.monotonic


class RevocationsUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "The list of revoked clients could not be obtained yet; try again shortly."
    default_code = "revocations_unavailable"


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


@dataclass(frozen=True)
class RevocationEntry:
    """What one machine client's tokens must satisfy to be accepted."""

    not_before: float | None = None
    secret_generation: int = 0
    previous_valid_until: float | None = None
    until: float = 0.0

    def refusal(self, claims: Mapping[str, Any], now: float) -> str | None:
        """Why a token with ``claims`` is refused (``revoked``, ``rotated``), or None."""
        if self.not_before is not None:
            iat = claims.get("iat")
            # iat has whole seconds: a token minted in the second of the revocation is refused too.
            if isinstance(iat, bool) or not isinstance(iat, int | float) or iat <= self.not_before:
                return "revoked"
        if self.secret_generation > 0:
            generation = claims.get("sgen", 0)  # tokens from before generations were named: the first secret's
            if isinstance(generation, bool) or not isinstance(generation, int):
                return "rotated"
            if generation < self.secret_generation - 1:
                return "rotated"
            if generation == self.secret_generation - 1 and (
                self.previous_valid_until is None or now >= self.previous_valid_until
            ):
                return "rotated"
        return None

    def merge(self, other: RevocationEntry) -> RevocationEntry:
        """The stricter of two entries for one client: the later revocation, the newer rotation."""
        not_before = max((v for v in (self.not_before, other.not_before) if v is not None), default=None)
        newer = other if other.secret_generation > self.secret_generation else self
        return RevocationEntry(
            not_before=not_before,
            secret_generation=newer.secret_generation,
            previous_valid_until=newer.previous_valid_until,
            until=max(self.until, other.until),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "not_before": self.not_before,
            "secret_generation": self.secret_generation,
            "previous_secret_valid_until": self.previous_valid_until,
            "until": self.until,
        }

    @classmethod
    def from_json(cls, data: Any) -> RevocationEntry:
        if not isinstance(data, dict):
            raise ValueError("a revocation entry is a JSON object")
        generation = data.get("secret_generation", 0)
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"bad secret_generation: {generation!r}")
        until = _number(data.get("until"))
        if until is None:
            raise ValueError("a revocation entry needs 'until'")
        return cls(
            not_before=_number(data.get("not_before")),
            secret_generation=generation,
            previous_valid_until=_number(data.get("previous_secret_valid_until")),
            until=until,
        )


def revocations_document(entries: Mapping[str, RevocationEntry], *, now: float | None = None) -> dict[str, Any]:
    """The JSON document the portal serves at ``JWT_REVOCATIONS_URL``."""
    return {
        "generated_at": _wall_clock() if now is None else now,
        "clients": {client_id: entry.as_json() for client_id, entry in sorted(entries.items())},
    }


def revocations_parse(document: Any) -> dict[str, RevocationEntry]:
    """The entries of a document from ``JWT_REVOCATIONS_URL`` (raises ValueError if it is not one)."""
    if not isinstance(document, dict) or not isinstance(document.get("clients"), dict):
        raise ValueError("the revocation list is not a JSON object with a 'clients' object")
    return {str(client_id): RevocationEntry.from_json(data) for client_id, data in document["clients"].items()}


def revocations_url() -> str:
    """``JWT_REVOCATIONS_URL``, else the document next to the JWKS (``…/.well-known/atrium-revocations.json``)."""
    explicit = getattr(settings, "JWT_REVOCATIONS_URL", "")
    if explicit:
        return explicit
    jwks_url = getattr(settings, "JWT_JWKS_URL", "")
    return urljoin(jwks_url, DOCUMENT_NAME) if jwks_url else ""


def _key() -> str:
    return settings.JWT_REVOCATIONS_KEY


def _decoded(stored: Mapping[bytes | str, bytes | str]) -> tuple[dict[str, RevocationEntry], dict[str, str]]:
    """The hash's entries (junk skipped, logged) and its bookkeeping fields."""
    entries: dict[str, RevocationEntry] = {}
    meta: dict[str, str] = {}
    for raw_field, raw_value in stored.items():
        field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
        value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        if field.startswith("_"):
            meta[field] = value
            continue
        try:
            entries[field] = RevocationEntry.from_json(json.loads(value))
        except ValueError as exc:
            log.warning("revocations.entry_skipped", client_id=field[:64], error=str(exc)[:200])
    return entries, meta


def revocations_store(
    conn: redis.Redis, entries: Mapping[str, RevocationEntry], *, complete: bool = False, now: float | None = None
) -> int:
    """Merge ``entries`` into the published hash and announce the change; return how many fields changed.

    An entry is never loosened (see :meth:`RevocationEntry.merge`), and entries past their ``until`` are dropped.
    ``complete``: ``entries`` is the portal's whole list, so the hash now holds everything (``_complete``).
    Optimistic (WATCH): a concurrent writer makes this one read again, so neither loses the other's entries.
    """
    key = _key()
    now = _wall_clock() if now is None else now
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                stored, meta = _decoded(pipe.hgetall(key))
                changed: dict[str, RevocationEntry] = {}
                for client_id, entry in entries.items():
                    if entry.until <= now:
                        continue
                    before = stored.get(client_id)
                    after = before.merge(entry) if before is not None else entry
                    if after != before:
                        changed[client_id] = after
                expired = [client_id for client_id, entry in stored.items() if entry.until <= now]
                mark = complete and COMPLETE_FIELD not in meta
                if not (changed or expired or mark):
                    pipe.unwatch()
                    return 0
                pipe.multi()
                if changed:
                    pipe.hset(
                        key,
                        mapping={c: json.dumps(e.as_json(), separators=(",", ":")) for c, e in changed.items()},
                    )
                if expired:
                    pipe.hdel(key, *expired)
                if mark:
                    pipe.hset(key, COMPLETE_FIELD, "1")
                pipe.hincrby(key, VERSION_FIELD, 1)
                pipe.publish(key, ",".join(sorted(changed)) or "*")
                pipe.execute()
                return len(changed) + len(expired)
            except redis.WatchError:
                continue


class RevocationWatcher(BackgroundThread):
    """This process's copy of the published revocations, and the thread that keeps it fresh."""

    def __init__(self) -> None:
        super().__init__(name="jwt-revocations")
        self._entries: dict[str, RevocationEntry] = {}
        self.after_fork()

    def after_fork(self) -> None:
        # In a forked child: no thread, no connection, and a list that must be read again (the parent's may be old).
        self._lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._loaded = False
        self._load_attempt = -FIRST_LOAD_RETRY_SECONDS
        self._version: str | None = None
        self._redis: redis.Redis | None = None
        self._redis_url = ""
        self._portal_at = _monotonic()  # the endpoint is read when Redis cannot answer, else after a while
        self.refreshed_at: float | None = None  # monotonic time of the last successful read
        self._stale_logged = 0.0

    # --- the per-request check ------------------------------------------------------------------------------
    def refusal(self, claims: Mapping[str, Any]) -> str | None:
        """Why this token must be refused (``revoked``, ``rotated``), or None. In memory, no I/O once loaded."""
        self.start()
        if not self._loaded:
            self._load_first()
        subject = claims.get("sub")
        entry = self._entries.get(subject) if isinstance(subject, str) else None
        return entry.refusal(claims, _wall_clock()) if entry is not None else None

    def _load_first(self) -> None:
        with self._lock:
            if self._loaded:
                return
            if _monotonic() - self._load_attempt < FIRST_LOAD_RETRY_SECONDS:
                raise RevocationsUnavailable()
            self._load_attempt = _monotonic()
            if not self.refresh(force=True):
                raise RevocationsUnavailable()

    @property
    def entries(self) -> dict[str, RevocationEntry]:
        return dict(self._entries)

    # --- reading the published list -------------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Read what is published: Redis when it holds the whole list, else (and now and then anyway) the portal.
        Whether a complete list was read; if not, the last copy is kept."""
        complete = False
        errors: dict[str, str] = {}
        try:
            complete = self._read_redis(force=force)
        except (redis.RedisError, OSError, ValueError) as exc:
            errors["redis"] = str(exc)[:200]
        if not complete or _monotonic() - self._portal_at >= float(settings.JWT_REVOCATIONS_RECONCILE_SECONDS):
            try:
                self._read_portal()
                complete = True
            except Exception as exc:  # the portal away, or its answer unusable: keep what we have
                errors["portal"] = str(exc)[:200]
        if complete:
            if not self._loaded:
                log.info("revocations.loaded", clients=len(self._entries))
            self._loaded = True
            self.refreshed_at = _monotonic()
        elif _monotonic() - self._stale_logged >= STALE_LOG_SECONDS:
            self._stale_logged = _monotonic()
            age = None if self.refreshed_at is None else round(_monotonic() - self.refreshed_at, 1)
            log.warning("revocations.stale", last_read_seconds_ago=age, clients=len(self._entries), **errors)
        return complete

    def _client(self) -> redis.Redis | None:
        url = settings.REDIS_URL
        if not url:
            return None
        if self._redis is None or self._redis_url != url:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=2, socket_connect_timeout=1, health_check_interval=30
            )
            self._redis_url = url
        return self._redis

    def _read_redis(self, *, force: bool) -> bool:
        conn = self._client()
        if conn is None:
            return False
        key = _key()
        version, complete = conn.hmget(key, VERSION_FIELD, COMPLETE_FIELD)
        if complete is not None and not force and version is not None and version.decode() == self._version:
            return True
        entries, meta = _decoded(conn.hgetall(key))
        self._merge(entries)  # what it holds counts even if it is not the whole list
        self._version = meta.get(VERSION_FIELD)
        # Not complete (flushed, or never written whole by the portal): not to be trusted alone.
        return COMPLETE_FIELD in meta

    def _read_portal(self) -> None:
        provider = getattr(settings, "JWT_REVOCATIONS_PROVIDER", "")
        if provider:  # the identity provider itself reads its database
            try:
                document = import_string(provider)()
            finally:
                if self.in_thread():
                    from django.db import connections

                    connections.close_all()  # this thread's own connections: none left open between reads
        else:
            url = revocations_url()
            if not url:
                raise ValueError("no JWT_REVOCATIONS_URL (nor JWT_JWKS_URL to find it next to)")
            response = httpx.get(url, timeout=2.0, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        self._merge(revocations_parse(document))
        self._portal_at = _monotonic()

    def _merge(self, entries: Mapping[str, RevocationEntry]) -> None:
        now = _wall_clock()
        with self._merge_lock:
            merged = {c: e for c, e in self._entries.items() if e.until > now}
            for client_id, entry in entries.items():
                if entry.until <= now:
                    continue
                before = merged.get(client_id)
                merged[client_id] = before.merge(entry) if before is not None else entry
            self._entries = merged  # one assignment: readers see the old dict or the new one

    # --- the thread -----------------------------------------------------------------------------------------
    def run(self) -> None:
        pubsub: Any = None
        subscribed = ""  # the channel (and Redis) listened to; settings may change under a test
        failures = 0
        while not self.halt.is_set():
            poll = float(settings.JWT_REVOCATIONS_POLL_SECONDS)
            announced = False
            try:
                if pubsub is not None and subscribed != f"{settings.REDIS_URL} {_key()}":
                    pubsub.close()
                    pubsub = None
                if pubsub is None:
                    conn = self._client()
                    if conn is not None:
                        pubsub = conn.pubsub(ignore_subscribe_messages=True)
                        pubsub.subscribe(_key())
                        subscribed = f"{settings.REDIS_URL} {_key()}"
                        announced = True  # what was announced while not subscribed is read now
                if pubsub is not None:
                    message = pubsub.get_message(timeout=poll)
                    drained = 0
                    while message is not None and drained < MAX_DRAIN:
                        announced = True
                        drained += 1
                        message = pubsub.get_message(timeout=0)
                else:
                    self.halt.wait(poll)
                failures = 0
            except (redis.RedisError, OSError) as exc:
                failures += 1
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (redis.RedisError, OSError):
                        pass
                pubsub = None
                if failures == 1:
                    log.warning("revocations.subscribe_failed", error=str(exc)[:200])
                self.halt.wait(min(poll, 0.25 * 2**failures))
                announced = True
            try:
                self.refresh(force=announced)
            except Exception as exc:  # never let the thread die: the next round tries again
                log.warning("revocations.refresh_failed", error=str(exc)[:300])
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError):
                pass

    def clear(self) -> None:
        """Forget everything (tests): the next check reads the published list again (the thread keeps running)."""
        with self._lock, self._merge_lock:
            self._entries = {}
            self._loaded = False
            self._load_attempt = -FIRST_LOAD_RETRY_SECONDS
            self._version = None
            self._portal_at = _monotonic()
            self.refreshed_at = None
            self._stale_logged = 0.0


_watcher = RevocationWatcher()


def revocation_watcher() -> RevocationWatcher:
    """This process's watcher (one per process)."""
    return _watcher


def revocations_watch() -> None:
    """Start watching now and read the list once (a server's start-up hook), so the first request does not wait.
    Never raises: a failure is logged and the thread keeps trying."""
    watcher = revocation_watcher()
    watcher.start()
    try:
        watcher._load_first()
    except RevocationsUnavailable:
        log.warning("revocations.unavailable_at_start")
    finally:
        from django.db import connections

        connections.close_all()  # this (start-up) thread's, if a provider read the database: it serves no request
