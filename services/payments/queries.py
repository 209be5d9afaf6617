"""The payments app's raw SQL: every statement its writes (``services``), processing (``processing``),
idempotency keys and screening send as text, where one set-based statement earns its keep.

Row locks and the one-statement write of the payments' mutable columns that status changes use, claims and
drain slots, the creation insert, the repair park, the idempotency claim and finish, and screening's account
locks. Depends on the models only, so every module of the app imports it and none imports another for SQL.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from services.kit.db import execute as db_execute
from services.payments.models import IdempotencyKey, Payment

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
    ("risk_decision", "text"),
    ("risk_score", "integer"),
    ("risk_assessment_id", "text"),
    ("risk_reasons", "jsonb"),
)
# (Not the lease: only claims, renewals and releases write ``lease_until`` and ``lease_owner`` — a row written back
# as a run loaded it would undo the renewals made since.)
_TRANSITION_SQL = (
    "UPDATE payments_payment AS p SET "  # noqa: S608  (column names from _MUTABLE only)
    + ", ".join(f"{name} = v.{name}" + ("::jsonb" if kind == "jsonb" else "") for name, kind in _MUTABLE)
    + " FROM unnest(%s::text[], "
    + ", ".join(f"%s::{'text' if kind == 'jsonb' else kind}[]" for _, kind in _MUTABLE)
    + ") AS v(id, "
    + ", ".join(name for name, _ in _MUTABLE)
    + ") WHERE p.id = v.id"
)
# The same, compare-and-set on the lease: a worker that lost a payment's lease to another writes nothing to it.
_TRANSITION_OWNED_SQL = _TRANSITION_SQL + " AND p.lease_owner = %s"

# Status changes lock the rows and read their status and lease owner again under the lock.
LOCK_SQL = "SELECT id, status, lease_owner FROM payments_payment WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE"


def rows_write(payments: list[Payment], *, owner: str | None = None) -> list[str]:
    """Write the payments' mutable columns (status, history, hold, failure, attempts) with one UPDATE; with
    ``owner``, only the rows whose lease it still holds. Return the ids written. No events: callers that change
    the status use ``services.transition_many``."""
    if not payments:
        return []
    columns: list[list[Any]] = [[p.id for p in payments]]
    for name, kind in _MUTABLE:
        values = [getattr(p, name) for p in payments]
        if kind == "jsonb":
            values = [json.dumps(v, separators=(",", ":")) for v in values]
        elif kind == "text":
            values = [None if v is None else str(v) for v in values]  # choices enums as their values
        columns.append(values)
    if owner is None:
        db_execute(_TRANSITION_SQL, columns)
        return [p.id for p in payments]
    return [row[0] for row in db_execute(_TRANSITION_OWNED_SQL + " RETURNING p.id", [*columns, owner])]


def drain_running() -> bool:
    """Whether some drain holds a slot now (it claims at least once more before it ends)."""
    rows = db_execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = %s::bigint::oid AND objsubid = 2)",
        [DRAIN_LOCK % 2**32],
    )
    return bool(rows[0][0])


# ---- claims and drains (processing) ----
OPEN_SQL = "('created', 'screening', 'processing')"
# What a worker may have to do: an open payment, or a final one whose hold is still to be voided. The same
# predicate as the partial index ``payment_open``, so claims read that index only.
WORK_SQL = f"(status IN {OPEN_SQL} OR hold_status = 'pending')"
# Leases are timed by the database's clock (``now()``), the one clock every worker shares: a node whose clock is
# off can neither shorten another's lease nor keep one past its time. ``lease_owner`` names the claim (see
# processing.lease_owner_new); renewals, writes and the release compare-and-set on it.
CLAIM_SQL = (
    "UPDATE payments_payment SET lease_until = now() + make_interval(secs => %(lease)s::float8),"  # noqa: S608  (constants)
    " lease_owner = %(owner)s WHERE id IN ("
    f" SELECT id FROM payments_payment WHERE {WORK_SQL}"
    "  AND (lease_until IS NULL OR lease_until < now()) {extra}"
    "  ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    ") RETURNING id"
)
NEXT_DUE_SQL = f"SELECT min(next_attempt_at) FROM payments_payment WHERE {WORK_SQL} AND next_attempt_at > now()"  # noqa: S608
# Extend the leases this owner still holds (expired or not: nobody took them meanwhile); the ids it lost are
# those not returned.
LEASE_RENEW_SQL = (
    "UPDATE payments_payment SET lease_until = now() + make_interval(secs => %s::float8)"
    " WHERE id = ANY(%s::text[]) AND lease_owner = %s RETURNING id"
)
LEASE_RELEASE_SQL = (
    "UPDATE payments_payment SET lease_until = NULL, lease_owner = '' WHERE id = ANY(%s::text[]) AND lease_owner = %s"
)
# A payment that met an unexpected error: counted (payments.process retries it alone, then parks it).
PROCESSING_ERROR_COUNT_SQL = (
    "UPDATE payments_payment SET processing_errors = processing_errors + 1, updated_at = now()"
    " WHERE id = %s RETURNING processing_errors, status"
)
RETRY_AT_SQL = "UPDATE payments_payment SET next_attempt_at = %s WHERE id = %s"
HOLD_RETRY_AT_SQL = (
    "UPDATE payments_payment SET next_attempt_at = created_at + %s WHERE id = %s AND hold_status = 'pending'"
)
SLOT_TAKE_SQL = "SELECT pg_try_advisory_lock(%s, %s)"
SLOT_RELEASE_SQL = "SELECT pg_advisory_unlock(%s, %s)"

# ---- the payment's own rows (services) ----
# A new payment's row: one prepared INSERT (the ORM's save costs more than the rest of the transaction).
INSERT_COLUMNS = (
    "id",
    "client_id",
    "amount",
    "currency",
    "source_account",
    "destination_account",
    "description",
    "status",
    "request_id",
    "created_at",
    "updated_at",
    "ledger_transaction",
    "hold_status",
    "failure_code",
    "failure_message",
    "attempts",
    "trace_parent",
)
INSERT_SQL = (
    f"INSERT INTO payments_payment ({', '.join(INSERT_COLUMNS)}, metadata, status_history) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(INSERT_COLUMNS))}, %s::jsonb, %s::jsonb)"
)

# A park that cannot rely on the row: status_history is repaired to an array if it is not one, and the events
# carry the columns read back rather than the whole payment (see processing._park).
PARK_SQL = (
    "UPDATE payments_payment SET status = 'failed', failure_code = %(code)s, failure_message = %(message)s,"
    " processing_errors = %(errors)s, next_attempt_at = NULL, updated_at = %(now)s,"
    " status_history = (CASE WHEN jsonb_typeof(status_history) = 'array' THEN status_history ELSE '[]'::jsonb END)"
    "   || jsonb_build_array(jsonb_build_object('status', 'failed', 'at', %(at)s::text))"
    " WHERE id = %(id)s AND status IN ('created', 'screening', 'processing')"
    " RETURNING amount, currency, source_account, destination_account, description, metadata, ledger_transaction,"
    " hold_status, status_history, created_at, request_id"
)

# ---- idempotency keys ----
KEY_CLAIM_SQL = (
    f"INSERT INTO {IdempotencyKey._meta.db_table} "  # noqa: S608  (no user input in the SQL text)
    "(client_id, key, request_hash, state, locked_until, created_at, expires_at, lock_token) "
    "VALUES (%s, %s, %s, 'in_flight', %s, %s, %s, %s) "
    "ON CONFLICT (client_id, key) DO NOTHING RETURNING id"
)
KEY_FINISH_SQL = (
    f"UPDATE {IdempotencyKey._meta.db_table} SET state = 'done', response_status = %s, "  # noqa: S608  (constants)
    "response_body = %s::jsonb, payment_id = %s WHERE id = %s AND lock_token = %s AND state = 'in_flight' "
    "RETURNING id"
)

# ---- screening: one transaction advisory lock per source account, taken in one statement ----
ACCOUNTS_LOCK_SQL = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k"
