"""The payments app's raw SQL shared by its writes (``services``) and the processing (``processing``).

Row locks and the one-statement write of the payments' mutable columns that status changes use, and the
drain slots' advisory lock key. Depends on the models only, so both modules import it and not each other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from services.kit.db import execute as db_execute
from services.payments.models import Payment

# Drains take session advisory locks (this key, slot) — at most PAYMENTS_DRAINERS at once.
DRAIN_LOCK = int.from_bytes(hashlib.sha256(b"atrium-payments-drain").digest()[:4], "big", signed=True)

# What a status change may set besides the status: the columns ``services.transition_many`` writes.
_MUTABLE = (
    ("status", "text"),
    ("status_history", "jsonb"),
    ("updated_at", "timestamptz"),
    ("ledger_transaction", "text"),
    ("hold_status", "text"),
    ("failure_code", "text"),
    ("failure_message", "text"),
    ("attempts", "integer"),
    ("processing_errors", "integer"),
    ("next_attempt_at", "timestamptz"),
    ("lease_until", "timestamptz"),
)
_TRANSITION_SQL = (
    "UPDATE payments_payment AS p SET "  # noqa: S608  (column names from _MUTABLE only)
    + ", ".join(f"{name} = v.{name}" + ("::jsonb" if kind == "jsonb" else "") for name, kind in _MUTABLE)
    + " FROM unnest(%s::text[], "
    + ", ".join(f"%s::{'text' if kind == 'jsonb' else kind}[]" for _, kind in _MUTABLE)
    + ") AS v(id, "
    + ", ".join(name for name, _ in _MUTABLE)
    + ") WHERE p.id = v.id"
)

LOCK_SQL = "SELECT id, status FROM payments_payment WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE"


def rows_write(payments: list[Payment]) -> None:
    """Write the payments' mutable columns (status, history, hold, failure, attempts, lease) with one UPDATE.
    No events: callers that change the status use ``services.transition_many``."""
    if not payments:
        return
    columns: list[list[Any]] = [[p.id for p in payments]]
    for name, kind in _MUTABLE:
        values = [getattr(p, name) for p in payments]
        if kind == "jsonb":
            values = [json.dumps(v, separators=(",", ":")) for v in values]
        elif kind == "text":
            values = [None if v is None else str(v) for v in values]  # choices enums as their values
        columns.append(values)
    db_execute(_TRANSITION_SQL, columns)


def drain_running() -> bool:
    """Whether some drain holds a slot now (it claims at least once more before it ends)."""
    rows = db_execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = %s::bigint::oid AND objsubid = 2)",
        [DRAIN_LOCK % 2**32],
    )
    return bool(rows[0][0])
