"""``Idempotency-Key`` with Stripe's semantics, per calling client, kept ``PAYMENTS_IDEMPOTENCY_TTL_HOURS``.

* first request with a key: the key is claimed (``in_flight``, in a transaction of its own, so concurrent
  requests see it at once); the request runs; its response is saved **in the same transaction** that
  creates the payment, so a crash can never leave a payment without its saved response or the reverse;
* same key, same request (method, route and canonical JSON body): the saved response again (same status,
  same body, header ``Idempotent-Replayed: true``) — also long after the payment moved on. The route is the
  matched URL pattern's canonical path, never the raw one: how the client spelled the URL does not matter;
* same key, different request: ``422 idempotency_key_reused``;
* same key while the first is still running: ``409 idempotency_key_in_progress``. A claim whose request
  died (no response after ``PAYMENTS_IDEMPOTENCY_LOCK_SECONDS``) is taken over by the next request.
* a request refused before it created anything (validation, unknown account, ledger unreachable) saves
  nothing: the claim is released and the key may be used again, as Stripe does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from services.payments import queries
from services.payments.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidIdempotencyKey
from services.payments.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


@dataclass
class Claim:
    """This request owns the key until it finishes or releases it."""

    id: int
    token: str


@dataclass
class Replay:
    status: int
    body: Any


def key_check(value: str) -> str:
    """The header's value, if usable: 1-255 visible ASCII characters."""
    if not value or len(value) > MAX_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in value):
        raise InvalidIdempotencyKey(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters.")
    return value


def request_route(request: HttpRequest) -> str:
    """The route ``request`` resolved to, as its URL pattern's canonical path (rebuilt from the resolver match,
    not read from the request). Equal to the path a canonical request had, so keys saved before keep matching."""
    match = request.resolver_match
    if match is None:
        raise ValueError("request_route needs a request that went through URL resolution")
    return reverse(match.view_name, args=match.args, kwargs=match.kwargs)


def request_hash(method: str, route: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {route}\n{canonical}".encode()).hexdigest()


def claim(*, client_id: str, key: str, fingerprint: str) -> Claim | Replay:
    """Claim ``key`` for this request, or say what to answer instead (a replay; or raise 409/422)."""
    now = timezone.now()
    token = secrets.token_hex(16)
    lock_until = now + dt.timedelta(seconds=settings.PAYMENTS_IDEMPOTENCY_LOCK_SECONDS)
    expires_at = now + dt.timedelta(hours=settings.PAYMENTS_IDEMPOTENCY_TTL_HOURS)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(queries.KEY_CLAIM_SQL, [client_id, key, fingerprint, lock_until, now, expires_at, token])
            inserted = cursor.fetchone()
        if inserted is not None:
            return Claim(inserted[0], token)
        row = IdempotencyKey.objects.select_for_update().get(client_id=client_id, key=key)
        if row.expires_at <= now:  # an expired key is a new key
            _take(row, fingerprint=fingerprint, token=token, lock_until=lock_until, expires_at=expires_at, now=now)
            return Claim(row.id, token)
        if row.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                f"{HEADER} {key!r} was used with a different request; use a new key for a new request."
            )
        if row.state == IdempotencyKey.State.DONE:
            return Replay(row.response_status or 200, row.response_body)
        if row.locked_until > now:
            raise IdempotencyKeyInProgress(
                f"The first request with {HEADER} {key!r} is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        # The first request died without an answer: this one takes over.
        _take(row, fingerprint=fingerprint, token=token, lock_until=lock_until, expires_at=row.expires_at, now=now)
        return Claim(row.id, token)


def begin(*, client_id: str, header: str | None, method: str, route: str, body: Any) -> Claim | Replay | None:
    """What a request carrying ``header`` (None: no key) may do: proceed holding a claim, proceed without a
    key, or answer the saved response (raises 400/409/422 as :func:`claim` and :func:`key_check` do)."""
    if header is None:
        return None
    key = key_check(header)
    return claim(client_id=client_id, key=key, fingerprint=request_hash(method, route, body))


@contextlib.contextmanager
def released_on_error(held: Claim | None) -> Iterator[None]:
    """Release ``held`` if the block raises: the request created nothing, so the key may be used again."""
    try:
        yield
    except BaseException:
        if held is not None:
            release(held)
        raise


def _take(
    row: IdempotencyKey,
    *,
    fingerprint: str,
    token: str,
    lock_until: dt.datetime,
    expires_at: dt.datetime,
    now: dt.datetime,
) -> None:
    row.request_hash = fingerprint
    row.state = IdempotencyKey.State.IN_FLIGHT
    row.lock_token = token
    row.locked_until = lock_until
    row.expires_at = expires_at
    row.response_status = None
    row.response_body = None
    row.payment = None
    row.created_at = now
    row.save()


def finish_queue(pipeline: Any, held: Claim | None, *, status: int, body: Any, payment_id: str) -> int | None:
    """Save the response with the key, as a statement on the pipeline of the transaction that makes the payment;
    return its handle (None without a claim). :func:`finish_check` it after the pipeline ran, before the
    commit: a claim taken over meanwhile rolls the payment back."""
    if held is None:
        return None
    return pipeline.add(
        queries.KEY_FINISH_SQL,
        [status, json.dumps(body, separators=(",", ":"), ensure_ascii=False), payment_id, held.id, held.token],
    )


def finish_check(pipeline: Any, handle: int) -> None:
    """Raise ``IdempotencyKeyInProgress`` if the queued :func:`finish_queue` found the claim taken over."""
    if not pipeline.rows(handle):
        raise IdempotencyKeyInProgress("This request's idempotency key was taken over by a later request.")


def release(held: Claim) -> None:
    """Forget the claim of a request that created nothing (the key may be used again)."""
    IdempotencyKey.objects.filter(id=held.id, lock_token=held.token, state="in_flight").delete()


def purge(*, limit: int = 10_000) -> int:
    """Delete expired keys (at most ``limit``); return how many."""
    ids = list(IdempotencyKey.objects.filter(expires_at__lt=timezone.now()).values_list("id", flat=True)[:limit])
    return IdempotencyKey.objects.filter(id__in=ids).delete()[0] if ids else 0
