"""The jobs app's raw SQL: what the ORM does not say well (grouping over a filtered query, time buckets,
percentiles, batched deletes, the recorder's array upserts). Each function runs its statement and returns what
the database gives; :mod:`~portal.jobs.selectors`, :mod:`~portal.jobs.retention` and
:mod:`~portal.jobs.recorder` shape and use it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction

from portal.jobs.models import JobState
from services.kit.db import execute


def failures_grouped(inner_sql: str, params: list[Any] | tuple[Any, ...], *, limit: int) -> list[tuple[Any, ...]]:
    """``(exception_type, name, count, last seen_at, an example task_id)`` per group of the rows of ``inner_sql``
    (a Django query's SQL selecting those columns), the biggest group first."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT exception_type, name, count(*), max(seen_at),
                   (array_agg(task_id ORDER BY seen_at DESC))[1]
            FROM ({inner_sql}) AS failed
            GROUP BY exception_type, name
            ORDER BY count(*) DESC, max(seen_at) DESC
            LIMIT %s
            """,  # noqa: S608  (the inner query is Django's, parameters bound)
            [*params, limit],
        )
        return cursor.fetchall()


def throughput(
    *, since: dt.datetime, until: dt.datetime, bucket_seconds: int, queue: str = ""
) -> list[tuple[Any, ...]]:
    """``(bucket, queue, succeeded, failed, retried, started, queued)`` per epoch-aligned bucket and queue, summed
    from the per-minute counts."""
    where = "minute >= %s AND minute < %s" + (" AND queue = %s" if queue else "")
    params: list[Any] = [bucket_seconds, since, until, *([queue] if queue else [])]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT to_timestamp(floor(extract(epoch FROM minute) / %s) * %s) AS bucket, queue,
                   sum(succeeded), sum(failed), sum(retried), sum(started), sum(queued)
            FROM jobs_minute WHERE {where}
            GROUP BY bucket, queue ORDER BY bucket, queue
            """,  # noqa: S608  (fixed clauses, parameters bound)
            [params[0], *params],
        )
        return cursor.fetchall()


def task_stats(*, since: dt.datetime, group_by: str) -> list[tuple[Any, ...]]:
    """``(key, total, a count per state (in :class:`~portal.jobs.models.JobState`'s order)..., p50 runtime, p95
    runtime)`` per queue or task name of the jobs seen since ``since`` (``group_by``: ``queue`` or ``name``; the
    percentiles of finished tasks)."""
    if group_by not in ("queue", "name"):
        raise ValueError(group_by)
    states = [s.value for s in JobState]
    counts = ", ".join(f"count(*) FILTER (WHERE state = '{s}')" for s in states)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT {group_by}, count(*), {counts},
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY runtime_ms) FILTER (WHERE finished_at IS NOT NULL),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY runtime_ms) FILTER (WHERE finished_at IS NOT NULL)
            FROM jobs_job WHERE seen_at >= %s
            GROUP BY {group_by} ORDER BY {group_by}
            """,  # noqa: S608  (group_by is checked, states are the enum's)
            [since],
        )
        return cursor.fetchall()


def batch_delete(table: str, column: str, *, before: dt.datetime, batch: int) -> int:
    """Delete up to ``batch`` rows of ``table`` whose ``column`` is before ``before``, oldest first; how many."""
    # jobs_link's key is (value, task_id), without an id column: its rows are found again by their ctid (within the
    # statement; ``= ANY(ARRAY(...))`` is a TID scan, where ``ctid IN (SELECT ...)`` would scan the table).
    key = "ctid" if table == "jobs_link" else "id"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {table} WHERE {key} = ANY(ARRAY(
                SELECT {key} FROM {table} WHERE {column} < %s ORDER BY {column} LIMIT %s
            ))
            """,  # noqa: S608  (fixed table and column names, parameters bound)
            [before, batch],
        )
        return cursor.rowcount


# --- what the recorder writes (in its transaction; arrays of thousands of values go through the kit's execute:
# server-side, binary binding)


def advisory_xact_lock(key: int) -> None:
    """Take the transaction-scoped advisory lock ``key`` (one recorder writes at a time)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


_EVENTS_ADD = """
INSERT INTO jobs_event (stream_id, task_id, state, at, worker, detail)
SELECT * FROM unnest(%b::varchar[], %b::varchar[], %b::varchar[], %b::timestamptz[], %b::varchar[], %b::jsonb[])
ON CONFLICT (stream_id) DO NOTHING
RETURNING stream_id
"""


def events_add(columns: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Insert events (``stream_id, task_id, state, at, worker, detail``, a list per column), each stream id once;
    the ``(stream_id,)`` of those that were new."""
    return execute(_EVENTS_ADD, columns)


def links_add(columns: list[list[Any]]) -> int:
    """Link jobs to what they carried (``value, task_id, kind, at``, a list per column), each pair once; how many
    were new."""
    rows = execute(
        "INSERT INTO jobs_link (value, task_id, kind, at) "
        "SELECT * FROM unnest(%b::varchar[], %b::varchar[], %b::varchar[], %b::timestamptz[]) "
        "ON CONFLICT (value, task_id) DO NOTHING RETURNING 1",
        columns,
    )
    return len(rows)


def carried_totals(columns: list[list[Any]]) -> None:
    """Raise jobs' carried totals (``task_id, requests, objects``, a list per column) to what was reported."""
    execute(
        "UPDATE jobs_job j SET carried_requests = GREATEST(j.carried_requests, t.requests), "
        "carried_objects = GREATEST(j.carried_objects, t.objects) "
        "FROM unnest(%b::varchar[], %b::int[], %b::int[]) AS t(task_id, requests, objects) "
        "WHERE j.task_id = t.task_id",
        columns,
    )


def deadletters_add(columns: list[list[Any]]) -> None:
    """Park entries (``stream_id, reason, attempts, raw, raw_sha256, raw_bytes``, a list per column), each stream
    id once."""
    execute(
        "INSERT INTO jobs_deadletter (stream_id, reason, attempts, raw, raw_sha256, raw_bytes, parked_at) "
        "SELECT *, now() FROM unnest(%b::varchar[], %b::text[], %b::int[], %b::bytea[], %b::varchar[], %b::int8[]) "
        "ON CONFLICT (stream_id) DO NOTHING",
        columns,
    )


def jobs_upsert(*, columns: list[str], casts: list[str], values: list[list[Any]]) -> None:
    """Insert or overwrite jobs by ``task_id`` (``columns``: the model's own column names, ``task_id`` first;
    ``casts``: each one's array type; ``values``: a list per column), in one statement."""
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "task_id")
    execute(
        f"INSERT INTO jobs_job ({', '.join(columns)}) "  # noqa: S608  (the model's own column names)
        f"SELECT * FROM unnest({', '.join(f'%b::{cast}' for cast in casts)}) "
        f"ON CONFLICT (task_id) DO UPDATE SET {updates}",
        values,
    )


_MINUTES_ADD = """
INSERT INTO jobs_minute AS m (minute, service, queue, name, queued, started, succeeded, failed, retried, revoked,
                              rejected, runtime_ms_total, runtime_count)
SELECT * FROM unnest(%b::timestamptz[], %b::varchar[], %b::varchar[], %b::varchar[], %b::int[], %b::int[], %b::int[],
                     %b::int[], %b::int[], %b::int[], %b::int[], %b::float8[], %b::int[])
ON CONFLICT (minute, service, queue, name) DO UPDATE SET
    queued = m.queued + EXCLUDED.queued, started = m.started + EXCLUDED.started,
    succeeded = m.succeeded + EXCLUDED.succeeded, failed = m.failed + EXCLUDED.failed,
    retried = m.retried + EXCLUDED.retried, revoked = m.revoked + EXCLUDED.revoked,
    rejected = m.rejected + EXCLUDED.rejected, runtime_ms_total = m.runtime_ms_total + EXCLUDED.runtime_ms_total,
    runtime_count = m.runtime_count + EXCLUDED.runtime_count
"""


def minutes_add(columns: list[list[Any]]) -> None:
    """Add to the per-minute counts (``minute, service, queue, name``, the seven state counts, ``runtime_ms_total,
    runtime_count``: a list per column)."""
    execute(_MINUTES_ADD, columns)


_ADD_ARRAYS = (
    "(SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i) FROM unnest({0}, {1}) WITH ORDINALITY AS u(a, b, i))"
)

_TOTALS_ADD = f"""
INSERT INTO jobs_total AS t (service, queue, name, succeeded, failed, retried, revoked, rejected,
                             runtime_seconds_sum, runtime_buckets, latency_seconds_sum, latency_buckets)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (service, queue, name) DO UPDATE SET
    succeeded = t.succeeded + EXCLUDED.succeeded, failed = t.failed + EXCLUDED.failed,
    retried = t.retried + EXCLUDED.retried, revoked = t.revoked + EXCLUDED.revoked,
    rejected = t.rejected + EXCLUDED.rejected,
    runtime_seconds_sum = t.runtime_seconds_sum + EXCLUDED.runtime_seconds_sum,
    runtime_buckets = {_ADD_ARRAYS.format("t.runtime_buckets", "EXCLUDED.runtime_buckets")},
    latency_seconds_sum = t.latency_seconds_sum + EXCLUDED.latency_seconds_sum,
    latency_buckets = {_ADD_ARRAYS.format("t.latency_buckets", "EXCLUDED.latency_buckets")}
"""  # noqa: S608  (column expressions only, no input)


def totals_add(rows: list[list[Any]]) -> None:
    """Add to the per-name totals, a statement per ``(service, queue, name)`` row (its five state counts, runtime
    sum and buckets, latency sum and buckets)."""
    with connection.cursor() as cursor:
        for row in rows:
            cursor.execute(_TOTALS_ADD, row)


def periodic_last_jobs(names: list[str]) -> list[int]:
    """The id of the newest job each periodic task in ``names`` sent: one ``LIMIT 1`` on ``jobs_job_periodic_seen``
    per name (a ``DISTINCT ON`` would read every run of every task)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT last.id FROM unnest(%s::text[]) AS p(name)
            CROSS JOIN LATERAL (
                SELECT id FROM jobs_job
                WHERE periodic = p.name AND NOT periodic = ''  -- lets the planner use the partial index
                ORDER BY seen_at DESC LIMIT 1
            ) AS last
            """,
            [names],
        )
        return [row[0] for row in cursor.fetchall()]
