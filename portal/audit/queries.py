"""The audit app's raw SQL, in one place: what the ORM cannot say, or says too slowly at millions of rows.

Plain strings and string builders, free of Django: the verification stream's second process imports them too.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------ reads for the admin

# The planner's row estimate of a table (never a COUNT(*)).
TABLE_ESTIMATE = "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)"
# Columns whose distinct values are read by a loose index scan (each leads an index of audit_event).
DISTINCT_COLUMNS = frozenset({"service", "object_type"})


def distinct_values_sql(column: str) -> str:
    """A loose index scan over ``audit_event.<column>``: one index probe per distinct value (``%s``: limit)."""
    if column not in DISTINCT_COLUMNS:
        raise ValueError(f"no loose index scan for {column!r}")
    return (
        f"WITH RECURSIVE t(v) AS ((SELECT {column} FROM audit_event ORDER BY {column} LIMIT 1) "  # noqa: S608
        f"UNION ALL SELECT (SELECT e.{column} FROM audit_event e WHERE e.{column} > t.v ORDER BY e.{column} LIMIT 1) "
        "FROM t WHERE t.v IS NOT NULL) SELECT v FROM t WHERE v IS NOT NULL LIMIT %s"
    )
