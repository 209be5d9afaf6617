"""The job dashboard's raw SQL: what the ORM does not say well (grouping over a filtered query, time buckets,
percentiles, batched deletes). Each function runs one statement and returns its rows as the database gives them;
:mod:`portal.jobs.selectors` and :mod:`portal.jobs.retention` shape and use them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction

from portal.jobs.models import JobState


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
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {table} WHERE id IN (
                SELECT id FROM {table} WHERE {column} < %s ORDER BY {column} LIMIT %s
            )
            """,  # noqa: S608  (fixed table and column names, parameters bound)
            [before, batch],
        )
        return cursor.rowcount
