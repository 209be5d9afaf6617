"""The catalog's raw SQL: upserts that add to counters, the health roll-up, uptime and health-history sums. Each
function runs its statement and returns what the database gives (a count, ids, rows); the callers
(:mod:`~portal.catalog.services`, :mod:`~portal.catalog.graph`, :mod:`~portal.catalog.health`,
:mod:`~portal.catalog.selectors`) shape them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction

_CALLS_ADD = """
INSERT INTO catalog_observed_call AS o (callee_id, caller_client, calls, first_seen, last_seen)
SELECT %s, caller, n, %s, %s FROM unnest(%s::text[], %s::bigint[]) AS v(caller, n)
ON CONFLICT (callee_id, caller_client) DO UPDATE SET calls = o.calls + EXCLUDED.calls, last_seen = EXCLUDED.last_seen
"""


def calls_add(*, service_id: int, at: dt.datetime, callers: list[str], counts: list[int]) -> None:
    """Add ``counts[i]`` calls from the client ``callers[i]`` to what ``service_id`` received, seen ``at``."""
    with connection.cursor() as cursor:
        cursor.execute(_CALLS_ADD, [service_id, at, at, callers, counts])


# pg_advisory_xact_lock(classid, objid) namespace of the catalog's registrations: one per slug at a time.
_REGISTER_NAMESPACE = 0x0CA7A106


def service_register_lock(*, slug: str) -> None:
    """Take the transaction-scoped lock on registering ``slug``. ``SELECT ... FOR UPDATE`` locks nothing while
    the slug has no row yet, so without it two first registrations both insert and one fails on the unique key."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_REGISTER_NAMESPACE, slug])


_HEARTBEAT = """
INSERT INTO catalog_instance AS i
    (service_id, instance, host, pid, version, started_at, first_heartbeat, last_heartbeat, heartbeats, status)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, 'passing')
ON CONFLICT (service_id, instance) DO UPDATE SET
    host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version, started_at = EXCLUDED.started_at,
    last_heartbeat = EXCLUDED.last_heartbeat, heartbeats = i.heartbeats + 1, status = 'passing'
RETURNING id, (xmax = 0) AS inserted
"""


def instance_heartbeat(
    *,
    service_id: int,
    instance: str,
    host: str,
    pid: int | None,
    version: str,
    started_at: dt.datetime | None,
    now: dt.datetime,
) -> tuple[int, bool]:
    """Insert the instance or count its heartbeat (``passing`` again); its id and whether it was inserted."""
    with connection.cursor() as cursor:
        cursor.execute(_HEARTBEAT, [service_id, instance, host, pid, version, started_at, now, now])
        instance_id, inserted = cursor.fetchone()
    return instance_id, bool(inserted)


_REPLACED = """
UPDATE catalog_instance AS old SET status = 'gone'
WHERE old.status <> 'gone' AND old.host <> '' AND old.last_heartbeat < %s AND EXISTS (
    SELECT 1 FROM catalog_instance AS new
    WHERE new.service_id = old.service_id AND new.host = old.host AND new.status = 'passing'
      AND new.first_heartbeat > old.last_heartbeat
)
"""


def instances_mark_replaced(*, before: dt.datetime) -> int:
    """Mark ``gone`` every instance silent since ``before`` that a newer passing instance on its host replaced;
    how many."""
    with connection.cursor() as cursor:
        cursor.execute(_REPLACED, [before])
        return cursor.rowcount


# A check covers the time until the next check of its service, at most ``grace`` check intervals (the last one:
# until now, with the same bound). Time no check covers (the poller or the whole stack stopped, a gap longer
# than ``grace`` intervals) is unknown: neither up nor down.
_SPAN = """
LEAST(
    EXTRACT(EPOCH FROM coalesce(lead(c.checked_at) OVER (PARTITION BY c.service_id ORDER BY c.checked_at, c.id),
                                %(now)s) - c.checked_at),
    s.health_interval_seconds * %(grace)s
)
"""

_ROLL_UP = f"""
WITH spans AS (
    SELECT c.id, GREATEST({_SPAN}, 0) AS covered
    FROM catalog_health_check c JOIN catalog_service s ON s.id = c.service_id
), old AS (
    DELETE FROM catalog_health_check WHERE checked_at < %(before)s
    RETURNING id, service_id, date_trunc('hour', checked_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, status,
              latency_ms
)
INSERT INTO catalog_health_hour AS h
    (service_id, hour, passing, warning, critical, latency_ms_total, latency_count, covered_seconds, up_seconds)
SELECT service_id, hour,
       count(*) FILTER (WHERE status = 'passing'), count(*) FILTER (WHERE status = 'warning'),
       count(*) FILTER (WHERE status = 'critical'), coalesce(sum(latency_ms), 0), count(latency_ms),
       coalesce(sum(spans.covered), 0), coalesce(sum(spans.covered) FILTER (WHERE status <> 'critical'), 0)
FROM old JOIN spans USING (id) GROUP BY service_id, hour
ON CONFLICT (service_id, hour) DO UPDATE SET
    passing = h.passing + EXCLUDED.passing, warning = h.warning + EXCLUDED.warning,
    critical = h.critical + EXCLUDED.critical, latency_ms_total = h.latency_ms_total + EXCLUDED.latency_ms_total,
    latency_count = h.latency_count + EXCLUDED.latency_count,
    covered_seconds = h.covered_seconds + EXCLUDED.covered_seconds, up_seconds = h.up_seconds + EXCLUDED.up_seconds
"""  # noqa: S608 (fixed text and placeholders only)


def health_roll_up(*, before: dt.datetime, now: dt.datetime, grace: float) -> int:
    """Delete the checks older than ``before`` and add them to their hours' counts and covered time (each
    check's span, as :func:`uptime_totals` reads it), in one statement; how many hours were written."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_ROLL_UP, {"before": before, "now": now, "grace": grace})
        return cursor.rowcount


def uptime_totals(
    *, ids: list[int], since: list[dt.datetime], now: dt.datetime, grace: float
) -> dict[int, list[float]]:
    """Service id → ``[seconds covered, seconds covered up]`` for each start in ``since``, in order: from the single
    checks (each covering the time to its service's next check, at most ``grace`` check intervals; the latest,
    until ``now``) and the hourly roll-ups' covered time (zeros for a service without any). A check covers
    ``up`` time unless it was ``critical``."""
    sums = ", ".join(
        f"coalesce(sum(covered) FILTER (WHERE checked_at >= %(since_{i})s), 0), "
        f"coalesce(sum(covered) FILTER (WHERE checked_at >= %(since_{i})s AND status <> 'critical'), 0)"
        for i in range(len(since))
    )
    hour_sums = ", ".join(
        f"coalesce(sum(covered_seconds) FILTER (WHERE hour >= %(since_{i})s), 0), "
        f"coalesce(sum(up_seconds) FILTER (WHERE hour >= %(since_{i})s), 0)"
        for i in range(len(since))
    )
    params: dict[str, Any] = {
        "ids": ids,
        "now": now,
        "grace": grace,
        "earliest": min(since),
        **{f"since_{i}": moment for i, moment in enumerate(since)},
    }
    raw = (
        f"SELECT service_id, {sums} FROM ("  # noqa: S608 (only placeholders and fixed text)
        f" SELECT c.service_id, c.checked_at, c.status, GREATEST({_SPAN}, 0) AS covered"
        " FROM catalog_health_check c JOIN catalog_service s ON s.id = c.service_id"
        " WHERE c.service_id = ANY(%(ids)s) AND c.checked_at >= %(earliest)s AND c.checked_at <= %(now)s"
        ") AS spans GROUP BY service_id"
    )
    rolled = (
        f"SELECT service_id, {hour_sums} FROM catalog_health_hour"  # noqa: S608
        " WHERE service_id = ANY(%(ids)s) GROUP BY service_id"
    )
    totals: dict[int, list[float]] = {i: [0.0] * (2 * len(since)) for i in ids}
    with connection.cursor() as cursor:
        for statement in (raw, rolled):
            cursor.execute(statement, params)
            for service_id, *values in cursor.fetchall():
                totals[service_id] = [a + float(b) for a, b in zip(totals[service_id], values, strict=True)]
    return totals


def health_slots(
    *, service_id: int, width: dt.timedelta, start: dt.datetime, end: dt.datetime
) -> list[tuple[Any, ...]]:
    """``(slot start, passing, warning, critical, latency total, latency count)`` for each slot of ``width`` from
    ``start`` to ``end`` holding a single check of ``service_id`` (the hourly counts are not read)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT date_bin(%(width)s, checked_at, %(start)s) AS slot,"
            " count(*) FILTER (WHERE status = 'passing'), count(*) FILTER (WHERE status = 'warning'),"
            " count(*) FILTER (WHERE status = 'critical'), coalesce(sum(latency_ms), 0), count(latency_ms)"
            " FROM catalog_health_check WHERE service_id = %(id)s AND checked_at >= %(start)s"
            " AND checked_at < %(end)s GROUP BY slot",
            {"width": width, "start": start, "end": end, "id": service_id},
        )
        return cursor.fetchall()
