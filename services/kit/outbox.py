"""Transactional outbox: events written with the change, published after commit, at least once.

``outbox_put(topic, payload)`` inserts a row in the service's own database inside the caller's
transaction, so the event exists exactly when the change does (a broker outage loses nothing).
After commit a relay thread in the same process is woken; it numbers committed rows per topic with
a gapless sequence, publishes them to the topic's Celery task in batches and moves the topic's
published watermark past them.
A periodic task (``<service>.outbox_relay`` on beat) sweeps whatever a dead process or a broker
outage left behind. Relays of several processes take turns through a PostgreSQL advisory lock.

Topics and the task each one is delivered to come from ``ATRIUM_OUTBOX_TOPICS``
(``{"audit": "audit.ingest"}`` by default). The task receives ``events``: a list of
``[id, service, service_seq, payload JSON text]`` — ``id`` globally unique, ``service_seq`` gapless per
service and topic; :func:`event_expand` turns one into the payload with those three fields added.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from services.kit.background import BackgroundThread
from services.kit.db import Pipeline, WriteTransaction
from services.kit.db import execute as db_execute
from services.kit.ids import id_new
from services.kit.logs import get_logger
from services.kit.models import OutboxEvent

log = get_logger(__name__)

DEFAULT_TOPICS = {"audit": "audit.ingest"}
_TABLE = OutboxEvent._meta.db_table
# The columns every writer fills (outbox_put, outbox_put_many, outbox_copy); seq is set by the relay.
_COLUMNS = "id, topic, payload, created_at, attempts, last_error"
_COUNTER_CREATE = (
    "INSERT INTO kit_outbox_counter (topic, last_seq, published_seq) VALUES (%s, 0, 0) ON CONFLICT (topic) DO NOTHING"
)


def topics() -> dict[str, str]:
    """topic → Celery task name that receives its events."""
    return dict(getattr(settings, "ATRIUM_OUTBOX_TOPICS", DEFAULT_TOPICS))


def _topics_check(names: Iterable[str]) -> None:
    known = topics()
    for topic in names:
        if topic not in known:
            raise ValueError(f"unknown outbox topic {topic!r}; configure it in ATRIUM_OUTBOX_TOPICS")


def outbox_put(
    topic: str,
    payload: dict[str, Any],
    *,
    pipeline: Pipeline | None = None,
    tx: WriteTransaction | None = None,
    event_id: str | None = None,
) -> str:
    """Write ``payload`` to the outbox in the current transaction; return the event id.

    With ``pipeline`` the INSERT joins the caller's pipelined statements (same transaction, no extra
    round trip); otherwise it runs now. The relay is woken after commit (``tx``'s when given).
    """
    _topics_check([topic])
    event_id = event_id or id_new("evt")
    params = [event_id, topic, json.dumps(payload, separators=(",", ":"), ensure_ascii=False), timezone.now()]
    sql = f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES (%s, %s, %s::jsonb, %s, 0, '')"  # noqa: S608
    if pipeline is not None:
        pipeline.add(sql, params)
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
    if tx is not None:
        tx.on_commit(relay_kick)
    else:
        transaction.on_commit(relay_kick)
    return event_id


def outbox_put_many(
    events: list[tuple[str, dict[str, Any]]],
    *,
    pipeline: Pipeline | None = None,
    tx: WriteTransaction | None = None,
) -> list[str]:
    """Write many ``(topic, payload)`` events to the outbox in the current transaction with one INSERT (the
    rows as arrays: the statement is the same for any count, prepared once); return their ids in order. The
    relay is woken once after commit. With ``pipeline`` the INSERT joins the caller's pipelined statements
    (and ``tx``'s commit wakes the relay)."""
    if not events:
        return []
    _topics_check(topic for topic, _ in events)
    ids = [id_new("evt") for _ in events]
    params = [
        timezone.now(),
        ids,
        [topic for topic, _ in events],
        [json.dumps(payload, separators=(",", ":"), ensure_ascii=False) for _, payload in events],
    ]
    if pipeline is not None:
        pipeline.add(_INSERT_MANY, params)
    else:
        db_execute(_INSERT_MANY, params)
    if tx is not None:
        tx.on_commit(relay_kick)
    else:
        transaction.on_commit(relay_kick)
    return ids


_INSERT_MANY = (
    f"INSERT INTO {_TABLE} ({_COLUMNS}) "  # noqa: S608  (constants)
    "SELECT id, topic, payload::jsonb, %s, 0, '' "
    "FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(id, topic, payload)"
)


def outbox_copy(
    cursor: Any, events: list[tuple[str, dict[str, Any]]], *, tx: WriteTransaction | None = None
) -> list[str]:
    """Write many ``(topic, payload)`` events to the outbox with COPY on ``cursor`` (a raw psycopg cursor of the
    current transaction, for writers already on a COPY path); return their ids in order. The relay is woken
    once after commit (``tx``'s when given)."""
    if not events:
        return []
    _topics_check(topic for topic, _ in events)
    now = timezone.now()
    ids: list[str] = []
    with cursor.copy(f"COPY {_TABLE} ({_COLUMNS}) FROM STDIN") as copy:
        for topic, payload in events:
            event_id = id_new("evt")
            ids.append(event_id)
            copy.write_row(
                (event_id, topic, json.dumps(payload, separators=(",", ":"), ensure_ascii=False), now, 0, "")
            )
    if tx is not None:
        tx.on_commit(relay_kick)
    else:
        transaction.on_commit(relay_kick)
    return ids


# ------------------------------------------------------------------------------------- relay


def _lock_key(topic: str) -> int:
    digest = hashlib.sha256(f"atrium-outbox:{topic}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# One statement: pick the oldest unnumbered rows, number them after the topic's counter (row-locked), and
# move the counter by as many. Rows are picked in (created_at, id) order straight from the partial index.
# With nothing to number it writes nothing (no lock, no counter update): idle relays poll often.
_NUMBER = f"""
WITH picked AS (
    SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM (
        SELECT id, created_at FROM {_TABLE} WHERE topic = %(topic)s AND seq IS NULL
        ORDER BY topic, created_at, id LIMIT %(limit)s
    ) AS oldest
), counter AS (
    SELECT last_seq FROM kit_outbox_counter
    WHERE topic = %(topic)s AND EXISTS (SELECT 1 FROM picked) FOR UPDATE
), numbered AS (
    UPDATE {_TABLE} AS e SET seq = counter.last_seq + picked.n FROM picked, counter
    WHERE e.id = picked.id RETURNING e.seq
), bump AS (
    UPDATE kit_outbox_counter SET last_seq = last_seq + (SELECT count(*) FROM numbered)
    WHERE topic = %(topic)s AND EXISTS (SELECT 1 FROM numbered) RETURNING 1
)
SELECT (SELECT count(*) FROM numbered), (SELECT count(*) FROM picked)
"""  # noqa: S608


def _number(topic: str, limit: int) -> int:
    """Give committed, unnumbered rows of ``topic`` the next sequence numbers (caller holds the topic lock)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_NUMBER, {"topic": topic, "limit": limit})
        numbered, picked = cursor.fetchone()
        if picked and not numbered:  # the topic's first events: create its counter, then number
            cursor.execute(_COUNTER_CREATE, [topic])
            cursor.execute(_NUMBER, {"topic": topic, "limit": limit})
            numbered, picked = cursor.fetchone()
    return int(numbered)


def _publish(topic: str, task_name: str, limit: int, publish: Callable[[str, list[dict[str, Any]]], None]) -> int:
    """Publish the numbered rows above the topic's watermark in sequence order, then move the
    watermark past them (caller holds the topic lock). Return how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.id, e.seq, e.payload::text FROM {_TABLE} e "  # noqa: S608
            "JOIN kit_outbox_counter c ON c.topic = e.topic "
            "WHERE e.topic = %s AND e.seq > c.published_seq ORDER BY e.seq LIMIT %s",
            [topic, limit],
        )
        rows = cursor.fetchall()
    if not rows:
        return 0
    service = settings.ATRIUM_SERVICE
    # Compact form, so the relay never parses payloads: [id, service, service_seq, payload JSON text].
    events: list[Any] = [[event_id, service, seq, payload] for event_id, seq, payload in rows]
    first, last = rows[0][1], rows[-1][1]
    try:
        publish(task_name, events)
    except Exception as exc:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {_TABLE} SET attempts = attempts + 1, last_error = %s "  # noqa: S608
                "WHERE topic = %s AND seq BETWEEN %s AND %s",
                [f"{type(exc).__name__}: {exc}"[:500], topic, first, last],
            )
        raise
    # A crash before this line re-publishes the batch with the same numbers: consumers de-duplicate.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE kit_outbox_counter SET published_seq = GREATEST(published_seq, %s) WHERE topic = %s", [last, topic]
        )
    return len(rows)


def event_expand(item: Any) -> Any:
    """A relayed event as a dict (``[id, service, service_seq, payload text]`` or an already expanded dict)."""
    if isinstance(item, list) and len(item) == 4 and isinstance(item[3], str):
        try:
            body = json.loads(item[3])
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to read: the consumer says so
            return {"id": item[0], "service": item[1], "service_seq": item[2], "unparsable_payload": item[3]}
        if isinstance(body, dict):
            return {**body, "id": item[0], "service": item[1], "service_seq": item[2]}
    return item


def celery_publish(task_name: str, events: list[dict[str, Any]]) -> None:
    """Send one batch of events to ``task_name`` by name through the current Celery app (the kit's, see
    ``services.kit.celery_app``; its queue comes from routing); fail fast when the broker is away."""
    current_app.send_task(
        task_name,
        args=[events],
        ignore_result=True,  # nobody waits for it (and a sender that may wait subscribes to every result)
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
    )


def relay_run(
    *,
    batch: int | None = None,
    max_batches: int = 50,
    publish: Callable[[str, list[dict[str, Any]]], None] | None = None,
) -> dict[str, int] | None:
    """Number and publish pending outbox rows of every topic. Return published counts per topic, or
    ``None`` when another relay holds a topic's lock (it will deliver what is pending)."""
    publish = publish or celery_publish
    batch = batch or int(getattr(settings, "ATRIUM_OUTBOX_BATCH", 1000))
    published: dict[str, int] = {}
    busy = False
    for topic, task_name in topics().items():
        key = _lock_key(topic)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                busy = True
                continue
        try:
            count = 0
            for _ in range(max_batches):
                _number(topic, batch)
                sent = _publish(topic, task_name, batch, publish)
                count += sent
                if sent < batch:
                    break
            published[topic] = count
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
    if published and any(published.values()):
        log.info("outbox.published", **{f"{t}_events": n for t, n in published.items()})
    return None if busy and not any(published.values()) else published


def outbox_backlog() -> dict[str, dict[str, Any]]:
    """Pending (unpublished) rows per topic and the age of the oldest, for health and metrics."""
    with connection.cursor() as cursor:
        # two index range scans: rows not numbered yet, and numbered rows above the topic's watermark
        cursor.execute(
            f"SELECT topic, count(*), min(created_at) FROM ("  # noqa: S608
            f"SELECT topic, created_at FROM {_TABLE} WHERE seq IS NULL UNION ALL "
            f"SELECT e.topic, e.created_at FROM kit_outbox_counter c JOIN {_TABLE} e "
            "ON e.topic = c.topic AND e.seq > c.published_seq) AS pending GROUP BY topic"
        )
        now = timezone.now()
        return {
            topic: {"pending": count, "oldest_age_seconds": (now - oldest).total_seconds() if oldest else 0.0}
            for topic, count, oldest in cursor.fetchall()
        }


class _RelayThread(BackgroundThread):
    """One per process: wakes on ``kick`` (after a commit) and every ``poll`` seconds, delivers, sleeps."""

    def __init__(self) -> None:
        super().__init__(name="atrium-outbox-relay")

    def kick(self) -> None:
        if getattr(settings, "ATRIUM_OUTBOX_RELAY", "thread") != "thread":
            return
        self.start()
        self.wake.set()

    def run(self) -> None:
        poll = float(getattr(settings, "ATRIUM_OUTBOX_POLL_SECONDS", 5.0))
        while not self.halt.is_set():
            self.wake.wait(timeout=poll)
            self.wake.clear()
            if not self.halt.is_set():
                self._deliver()
        connection.close()

    def _deliver(self) -> None:
        if getattr(settings, "ATRIUM_OUTBOX_RELAY", "thread") != "thread":
            return
        # Another process's relay may hold the lock and be finishing: retry briefly so our rows go out now.
        deadline = time.monotonic() + 2.0
        try:
            close_old_connections()
            while True:
                result = relay_run()
                if result is not None or time.monotonic() > deadline:
                    return
                time.sleep(0.05)
        except Exception as exc:  # the broker or database is away: the rows wait for the next kick or sweep
            log.warning("outbox.relay_failed", error=f"{type(exc).__name__}: {exc}")
            connection.close()


_relay = _RelayThread()


def relay_kick() -> None:
    """Wake this process's relay thread (called after commit; never blocks the caller)."""
    _relay.kick()


def isoformat(moment: dt.datetime) -> str:
    """UTC, microseconds, ``Z``: the one timestamp format events carry."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------------- retention

# One range of a topic's published rows, by the (topic, seq) unique index: at most ``batch`` numbers, none above
# the watermark (unpublished rows and unnumbered ones are never touched), none younger than the cutoff.
_PURGE = (
    f"DELETE FROM {_TABLE} WHERE topic = %(topic)s AND seq >= %(low)s AND seq <= %(high)s "  # noqa: S608
    "AND created_at < %(cutoff)s"
)


def outbox_purge(*, days: int | None = None, batch: int = 10_000, max_batches: int = 1000) -> int:
    """Delete published outbox rows older than ``days`` (``ATRIUM_OUTBOX_RETENTION_DAYS``, 7 by default), a
    range of sequence numbers under each topic's watermark at a time, each range in a transaction of its own;
    return how many rows went."""
    days = int(getattr(settings, "ATRIUM_OUTBOX_RETENTION_DAYS", 7)) if days is None else days
    cutoff = timezone.now() - dt.timedelta(days=days)
    removed = 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT topic, published_seq FROM kit_outbox_counter")
        watermarks = cursor.fetchall()
    for topic, watermark in watermarks:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT min(seq) FROM {_TABLE} WHERE topic = %s AND seq IS NOT NULL", [topic])  # noqa: S608
            low = cursor.fetchone()[0]
        for _ in range(max_batches):
            if low is None or low > watermark:
                break
            high = min(low + batch - 1, watermark)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_PURGE, {"topic": topic, "low": low, "high": high, "cutoff": cutoff})
                deleted = cursor.rowcount
            removed += deleted
            if not deleted:  # sequence numbers follow creation: the rows from here on are within retention
                break
            low = high + 1
    log.info("outbox.purged", rows=removed, retention_days=days)
    return removed
