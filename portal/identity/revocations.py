"""Publishing revocations: from the portal's database to every token verifier.

What a verifier must refuse is kept on the client's row (``tokens_not_before``, ``secret_generation``,
``previous_secret_valid_until``, ``revocation_until``):

- :func:`revocation_publish` writes it to Redis and announces it once the change commits (and, while Redis
  refuses, again from a thread of this process until it takes it);
- :func:`revocations_current` is what the public endpoint serves;
- :func:`revocations_reconcile` — the portal's own processes read revocations through it when Redis cannot tell
  them, and every ``JWT_REVOCATIONS_RECONCILE_SECONDS`` — also writes the whole list to Redis, so a Redis that was
  flushed or missed an announcement is made whole again.

The format and the merge rule belong to the kit (``services/kit/revocations.py``), which verifies.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import redis
from django.db import transaction
from django.utils import timezone

from portal.identity.models import MachineClient
from portal.identity.store import identity_redis
from services.kit.background import BackgroundThread
from services.kit.logs import get_logger
from services.kit.revocations import RevocationEntry, revocations_document, revocations_store

log = get_logger(__name__)

# A client stays published this long after its last cut-off: the longest token lifetime
# (MachineClient.token_ttl_seconds ≤ 3600) plus a margin for verifiers' clock leeway.
KEEP = dt.timedelta(seconds=3600 + 300)

_FIELDS = ("id", "tokens_not_before", "secret_generation", "previous_secret_valid_until", "revocation_until")


def _ts(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def revocation_entry(client: MachineClient) -> RevocationEntry | None:
    """What verifiers must refuse of ``client``'s tokens (None: nothing, or nothing any more)."""
    if client.revocation_until is None or (client.tokens_not_before is None and client.secret_generation == 0):
        return None
    return RevocationEntry(
        not_before=_ts(client.tokens_not_before),
        secret_generation=client.secret_generation,
        previous_valid_until=_ts(client.previous_secret_valid_until) if client.secret_generation else None,
        until=client.revocation_until.timestamp(),
    )


def revocation_until(client: MachineClient, cutoff: dt.datetime) -> dt.datetime:
    """How long ``client`` must stay published once tokens before ``cutoff`` are cut off."""
    until = cutoff + KEEP
    return max(until, client.revocation_until) if client.revocation_until is not None else until


def revocations_current() -> dict[str, RevocationEntry]:
    """Every client whose tokens verifiers must still check (an index scan on ``revocation_until``)."""
    entries: dict[str, RevocationEntry] = {}
    for client in MachineClient.objects.filter(revocation_until__gt=timezone.now()).only(*_FIELDS):
        entry = revocation_entry(client)
        if entry is not None:
            entries[client.id] = entry
    return entries


def revocation_publish_on_commit(client_id: str) -> None:
    """Publish ``client_id``'s entry once the current transaction commits (never one that rolls back)."""
    transaction.on_commit(lambda: revocation_publish(client_id))


def revocation_publish(client_id: str) -> bool:
    """Write ``client_id``'s entry to Redis and announce it; whether Redis took it.

    A failure is logged, not raised (the change is committed): this process tries again every second or so until
    Redis takes it (:class:`_Republisher`); meanwhile verifiers that cannot read Redis read the endpoint, and all
    of them read it every ``JWT_REVOCATIONS_RECONCILE_SECONDS`` anyway.
    """
    client = MachineClient.objects.filter(pk=client_id).only(*_FIELDS).first()
    entry = revocation_entry(client) if client is not None else None
    if entry is None:
        return True
    try:
        revocations_store(identity_redis(), {client_id: entry})
    except (redis.RedisError, OSError) as exc:
        log.error("identity.revocation_publish_failed", client_id=client_id, error=str(exc)[:300])
        _republisher.add(client_id, entry)
        return False
    log.info("identity.revocation_published", client_id=client_id)
    return True


class _Republisher(BackgroundThread):
    """Entries Redis refused, written again by a thread of this process until it takes them (then it waits)."""

    RETRY_SECONDS = (0.25, 0.5, 1.0)

    def __init__(self) -> None:
        super().__init__(name="revocations-republish")
        self.after_fork()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, RevocationEntry] = {}

    def add(self, client_id: str, entry: RevocationEntry) -> None:
        with self._lock:
            before = self._pending.get(client_id)
            self._pending[client_id] = before.merge(entry) if before is not None else entry
        self.start()
        self.wake.set()

    def pending(self) -> set[str]:
        with self._lock:
            return set(self._pending)

    def run(self) -> None:
        while not self.halt.is_set():
            self.wake.wait()
            self.wake.clear()  # before reading what is pending: an entry added later wakes the loop again
            attempt = 0
            while self.pending() and not self.halt.is_set():
                self.halt.wait(self.RETRY_SECONDS[min(attempt, len(self.RETRY_SECONDS) - 1)])
                with self._lock:
                    batch = dict(self._pending)
                try:
                    revocations_store(identity_redis(), batch)
                except (redis.RedisError, OSError) as exc:
                    attempt += 1
                    if attempt % 60 == 0:
                        log.error("identity.revocation_publish_failed", clients=len(batch), error=str(exc)[:300])
                    continue
                log.info("identity.revocation_published", clients=sorted(batch)[:100], retried=attempt + 1)
                with self._lock:
                    for client_id, entry in batch.items():
                        if self._pending.get(client_id) == entry:  # not replaced by a newer one meanwhile
                            del self._pending[client_id]
                attempt = 0


_republisher = _Republisher()


def revocations_reconcile() -> dict[str, Any]:
    """The current list as the endpoint serves it, also written whole to Redis (``JWT_REVOCATIONS_PROVIDER``
    of the portal: its processes read their database, and mend Redis on the way)."""
    entries = revocations_current()
    try:
        changed = revocations_store(identity_redis(), entries, complete=True)
    except (redis.RedisError, OSError) as exc:
        log.warning("identity.revocations_reconcile_failed", error=str(exc)[:300])
    else:
        if changed:
            log.info("identity.revocations_reconciled", changed=changed)
    return revocations_document(entries)
