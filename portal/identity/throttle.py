"""Token-endpoint throttling: failed client secrets counted per client id, then a lockout.

After ``ATRIUM_TOKEN_FAILURE_LIMIT`` failed secrets for one client id within
``ATRIUM_TOKEN_FAILURE_WINDOW_SECONDS``, that client id is locked out for ``ATRIUM_TOKEN_LOCKOUT_SECONDS``: the
token endpoint answers 429 ``too_many_attempts`` with ``Retry-After``, even to the right secret. The lockout is
audited once (``auth.token.locked_out``), when it starts; an operator can end it early (``auth.token.unlocked``).

State is two Redis keys per client id, both expiring (the failure counter after the window, the lockout after the
cool-off), so client ids that do not exist cannot grow storage without bound, and an unknown id is treated
exactly like a known one (the lockout reveals nothing about which ids exist). The happy path costs one ``TTL``.
If Redis is away the endpoint keeps issuing tokens, unthrottled, and logs ``identity.token_throttle_unavailable``:
secrets are 256 random bits, so throttling is a second line, not the one that keeps them from being guessed.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from redis import RedisError

from portal.identity.errors import LockoutsUnavailable, TooManyAttempts
from portal.identity.store import identity_redis
from services.kit.audit import audit_record
from services.kit.logs import get_logger

log = get_logger(__name__)

MAX_KEY_ID = 64  # ids are bounded by the request serializer; Basic credentials are not, so cut here too
_FAILURES = "atrium:identity:token-failures:"
_LOCKOUT = "atrium:identity:token-lockout:"


def _id(client_id: str) -> str:
    return str(client_id)[:MAX_KEY_ID]


def token_lockout_remaining(client_id: str) -> int:
    """Seconds left of ``client_id``'s lockout (0: none; also when Redis cannot tell)."""
    try:
        ttl = identity_redis().ttl(_LOCKOUT + _id(client_id))
    except (RedisError, OSError) as exc:
        log.warning("identity.token_throttle_unavailable", error=str(exc)[:300])
        return 0
    return max(int(ttl), 0) if ttl is not None else 0


def token_lockout_check(client_id: str) -> None:
    """Refuse a token request for a locked-out client id (429), before its secret is even looked at."""
    remaining = token_lockout_remaining(client_id)
    if remaining > 0:
        log.warning("identity.token_locked_out", client_id=_id(client_id), retry_after=remaining)
        raise TooManyAttempts(retry_after=remaining)


def token_failure_record(client_id: str) -> None:
    """Count a failed secret for ``client_id``; at the limit, start its lockout (audited once) and refuse (429)."""
    limit = int(settings.ATRIUM_TOKEN_FAILURE_LIMIT)
    if limit <= 0:
        return
    window = int(settings.ATRIUM_TOKEN_FAILURE_WINDOW_SECONDS)
    cooloff = int(settings.ATRIUM_TOKEN_LOCKOUT_SECONDS)
    key_id = _id(client_id)
    try:
        conn = identity_redis()
        pipe = conn.pipeline(transaction=True)
        pipe.set(_FAILURES + key_id, 0, ex=window, nx=True)  # the window starts at the first failure
        pipe.incr(_FAILURES + key_id)
        _, failures = pipe.execute()
        if failures < limit:
            return
        # Only the request that sets the lockout audits it: a flood of refused requests is not a flood of events.
        started = conn.set(_LOCKOUT + key_id, failures, ex=cooloff, nx=True)
        conn.delete(_FAILURES + key_id)  # after the cool-off, a fresh count
    except (RedisError, OSError) as exc:
        log.warning("identity.token_throttle_unavailable", error=str(exc)[:300])
        return
    if started:
        log.warning("identity.token_lockout_started", client_id=key_id, failures=failures, seconds=cooloff)
        with transaction.atomic():
            audit_record(
                "auth.token.locked_out",
                outcome="failure",
                actor={"type": "client", "id": key_id, "display": key_id or "unknown"},
                object_type="machine_client",
                object_id=key_id,
                metadata={
                    "code": TooManyAttempts.code,
                    "client_id": key_id,
                    "failures": failures,
                    "window_seconds": window,
                    "lockout_seconds": cooloff,
                },
            )
    raise TooManyAttempts(retry_after=cooloff)


def token_lockout_clear(*, client_id: str) -> bool:
    """End ``client_id``'s lockout and forget its failures (an operator's decision, audited); whether it was
    locked out."""
    key_id = _id(client_id)
    try:
        pipe = identity_redis().pipeline(transaction=True)
        pipe.delete(_LOCKOUT + key_id)
        pipe.delete(_FAILURES + key_id)
        was_locked, _ = pipe.execute()
    except (RedisError, OSError) as exc:
        raise LockoutsUnavailable("Lockouts are kept in Redis, which did not answer; try again shortly.") from exc
    with transaction.atomic():
        audit_record(
            "auth.token.unlocked",
            object_type="machine_client",
            object_id=key_id,
            metadata={"client_id": key_id, "was_locked": bool(was_locked)},
        )
    log.info("identity.token_lockout_cleared", client_id=key_id, was_locked=bool(was_locked))
    return bool(was_locked)
