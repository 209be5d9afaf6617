"""The webhooks app's raw SQL: every statement its writes, reads and the dispatcher send as text, where one
set-based statement earns its keep. Depends on the models only, so every module of the app imports it and none
imports another for SQL. Sections: ingest (core), the API's writes (api), the dispatcher's (at the end).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from django.db import connection

from services.kit.db import execute as db_execute
from services.webhooks.models import Attempt, Delivery, Endpoint, EventType, Message

MESSAGE_TABLE = Message._meta.db_table
DELIVERY_TABLE = Delivery._meta.db_table
ENDPOINT_TABLE = Endpoint._meta.db_table

# The channel deliveries wake the dispatchers on (NOTIFY in the transaction that makes deliveries due).
DUE_CHANNEL = "webhooks_due"
NOTIFY_DUE = f"SELECT pg_notify('{DUE_CHANNEL}', '')"

# ------------------------------------------------------------------------------------------------- ingest

# Ingest transactions take this lock (transaction-scoped) so that messages commit in ``seq`` order: an ordered
# endpoint's dispatcher never sees a later message before an earlier one that is still being written.
INGEST_LOCK = int.from_bytes(hashlib.sha256(b"atrium-webhooks-ingest").digest()[:8], "big", signed=True)
INGEST_XACT_LOCK = "SELECT pg_advisory_xact_lock(%s)"

# The SQL condition "endpoint ``e`` wants message ``m``": enabled, one of its event-type patterns matches
# (``*``, the exact name, or ``prefix.*`` for every type below the prefix), and its channels are empty or
# overlap the message's.
ENDPOINT_MATCHES = (
    "e.enabled"
    " AND (cardinality(e.channels) = 0 OR e.channels && m.channels)"
    " AND EXISTS (SELECT 1 FROM unnest(e.event_types) AS p(pattern) WHERE p.pattern = '*' OR p.pattern = m.type"
    " OR (right(p.pattern, 2) = '.*' AND starts_with(m.type, left(p.pattern, -1))))"
)

# Messages in, one statement (the batch as one JSON array of rows: no per-value escaping of array literals on
# the client): rows whose event_id exists already are skipped (a redelivered event creates nothing); the new ones
# are fanned out to every endpoint that wants them, due now. Returns, per new message, its id, seq and how many
# deliveries it got.
MESSAGES_INGEST = f"""
WITH input AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS i(
        n integer, id text, event_id text, type text, channels varchar(128)[], body text, occurred_at timestamptz,
        source text, request_id text, object_id text
    )
), created AS (
    INSERT INTO {MESSAGE_TABLE}
        (id, event_id, type, channels, payload, body, occurred_at, source, request_id, object_id, created_at)
    SELECT id, event_id, type, channels, (body::jsonb) -> 'data', body, occurred_at, source, request_id, object_id,
           %(now)s
    FROM input ORDER BY n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id, seq, type, channels
), fanned AS (
    INSERT INTO {DELIVERY_TABLE}
        (message_id, endpoint_id, msg_seq, state, attempts, next_attempt_at, leased_until, last_status, last_error,
         trigger, created_at, updated_at, succeeded_at)
    SELECT m.id, e.id, m.seq, 'pending', 0, %(now)s, NULL, NULL, '', 'scheduled', %(now)s, %(now)s, NULL
    FROM created AS m JOIN {ENDPOINT_TABLE} AS e ON {ENDPOINT_MATCHES}
    ON CONFLICT (message_id, endpoint_id) DO NOTHING
    RETURNING message_id
)
SELECT m.id, m.seq, (SELECT count(*) FROM fanned AS f WHERE f.message_id = m.id)
FROM created AS m ORDER BY m.seq
"""  # noqa: S608  (table names from the models, the rest parameters)

# The catalog's live type names, which every ingest batch checks its events against (raw: a quarter of the ORM's
# CPU for the same rows, once per task).
KNOWN_TYPES_SQL = f"SELECT name FROM {EventType._meta.db_table} WHERE NOT archived"  # noqa: S608

# The messages of the given event ids (what a redelivery or a repeated POST finds).
MESSAGES_BY_EVENT_ID = f"SELECT event_id, id FROM {MESSAGE_TABLE} WHERE event_id = ANY(%s::text[])"  # noqa: S608


# ------------------------------------------------------------------------------------------------- api
# Resend and recovery (services/webhooks/services/sends.py, recoveries.py).

# The first message created at or after an instant: a recovery's cursor starts just before it (messages are
# created in seq order, so the recovery skips what came before its window along the message_created index).
FIRST_SEQ_SINCE_SQL = f"SELECT min(seq) FROM {MESSAGE_TABLE} WHERE created_at >= %(since)s"  # noqa: S608

# One batch of a recovery: the endpoint's next failed deliveries after the cursor (in message order, along the
# (endpoint, state, msg_seq) index) whose messages were created in the window, made pending now with a fresh
# schedule, their next attempt marked "recovery". The UPDATE re-checks the state under the row lock, so a delivery
# resent meanwhile is left alone. Returns how many were made pending and the last message seq looked at.
RECOVER_BATCH_SQL = f"""
WITH picked AS (
    SELECT d.id, d.msg_seq
    FROM {DELIVERY_TABLE} d
    JOIN {MESSAGE_TABLE} m ON m.id = d.message_id
    WHERE d.endpoint_id = %(endpoint)s AND d.state = 'failed' AND d.msg_seq > %(after)s
      AND m.created_at >= %(since)s AND m.created_at < %(until)s
    ORDER BY d.msg_seq
    LIMIT %(limit)s
), made AS (
    UPDATE {DELIVERY_TABLE} d
    SET state = 'pending', attempts = 0, next_attempt_at = %(now)s, leased_until = NULL, trigger = 'recovery',
        updated_at = %(now)s
    FROM picked
    WHERE d.id = picked.id AND d.state = 'failed'
    RETURNING d.id
)
SELECT (SELECT count(*) FROM made), (SELECT max(msg_seq) FROM picked), (SELECT count(*) FROM picked)
"""  # noqa: S608  (table names from the models, the rest parameters)


def notify_due() -> None:
    """Wake the dispatchers (``LISTEN webhooks_due``) when the current transaction commits."""
    db_execute(NOTIFY_DUE, [])


def first_seq_since(since: dt.datetime) -> int | None:
    """The seq of the first message created at or after ``since`` (None: none yet)."""
    return db_execute(FIRST_SEQ_SINCE_SQL, {"since": since})[0][0]


def deliveries_recover(
    *, endpoint_id: str, after_seq: int, since: dt.datetime, until: dt.datetime, limit: int, now: dt.datetime
) -> tuple[int, int | None, int]:
    """Make up to ``limit`` failed deliveries of the endpoint pending (see :data:`RECOVER_BATCH_SQL`); return how
    many were, the last message seq picked (None: none) and how many were picked."""
    made, last_seq, picked = db_execute(
        RECOVER_BATCH_SQL,
        {"endpoint": endpoint_id, "after": after_seq, "since": since, "until": until, "limit": limit, "now": now},
    )[0]
    return int(made), last_seq, int(picked)


# -------------------------------------------------------------------------------------------- dispatcher
# The dispatcher's SQL (services/webhooks/dispatch.py; owner: the dispatcher). Claims take due deliveries with
# FOR UPDATE SKIP LOCKED and a lease; results are written in batches (attempts by one INSERT … unnest, deliveries
# by one UPDATE … FROM unnest, the endpoints' stats likewise). These run on the dispatcher's own psycopg
# AsyncConnection (autocommit; a transaction where several statements must land together), except the disable
# and the retention purge, which run on Django's connection.

_D = Delivery._meta.db_table
_M = Message._meta.db_table
_E = Endpoint._meta.db_table
_A = Attempt._meta.db_table
# Resends and recoveries mark the delivery they reset (``Delivery.trigger``, the api's): its next attempt carries
# that trigger, and the delivery goes back to ``scheduled`` with that attempt's result.

# Every enabled endpoint, with what the dispatcher needs to send to it (secrets still encrypted).
DISPATCH_ENDPOINTS_SQL = (
    "SELECT id, url, max_in_flight, rate_limit, ordered, secret, previous_secret, previous_secret_expires_at, "  # noqa: S608
    f"signing_key, v1a, updated_at FROM {_E} WHERE enabled"
)

# A delivery is due when pending, its time has come and nobody holds a live lease on it (an expired lease is a
# dispatcher that died mid-send: its delivery is due again, so no separate sweep is needed).
# Unordered endpoints: up to ``n`` due deliveries each, soonest first, skipping rows another dispatcher is
# claiming, along the per-endpoint index ``delivery_due_endpoint`` ("due" as a row comparison on (endpoint_id,
# next_attempt_at): a range of that index only). An index on due time alone would let the planner walk another
# endpoint's backlog (a slow endpoint's thousands of due rows) on every claim of a healthy one: migration 0004
# dropped the global one. Ordered endpoints: only the lowest msg_seq pending
# delivery, and only when it is due and not leased (leased = in flight): it is picked without SKIP LOCKED
# semantics reaching past it (the head is chosen first, then locked; a locked or changed head yields nothing
# this round, never the one after it).
DISPATCH_CLAIM_SQL = f"""
WITH free AS (
    SELECT * FROM unnest(%(ids)s::text[], %(slots)s::int[]) AS f(endpoint_id, n)
), unordered AS (
    SELECT c.id FROM free CROSS JOIN LATERAL (
        SELECT d.id FROM {_D} d
        WHERE d.endpoint_id = free.endpoint_id AND d.state = 'pending'
          AND (d.endpoint_id, d.next_attempt_at) <= (free.endpoint_id, now())
          AND (d.leased_until IS NULL OR d.leased_until < now())
        ORDER BY d.next_attempt_at
        LIMIT free.n
        FOR UPDATE SKIP LOCKED
    ) c
), heads AS (
    SELECT h.id FROM unnest(%(ordered)s::text[]) AS o(endpoint_id) CROSS JOIN LATERAL (
        SELECT d.id FROM {_D} d WHERE d.endpoint_id = o.endpoint_id AND d.state = 'pending'
        ORDER BY d.endpoint_id, d.state, d.msg_seq LIMIT 1
    ) h
), ordered AS (
    SELECT d.id FROM {_D} d
    WHERE d.id = ANY(ARRAY(SELECT id FROM heads)) AND d.state = 'pending' AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
    FOR UPDATE SKIP LOCKED
)
UPDATE {_D} d SET leased_until = now() + make_interval(secs => %(lease)s)
WHERE d.id = ANY(ARRAY(SELECT id FROM unordered UNION ALL SELECT id FROM ordered))
RETURNING d.id, d.endpoint_id, d.message_id, d.attempts,
    (SELECT m.body FROM {_M} m WHERE m.id = d.message_id),
    (SELECT m.request_id FROM {_M} m WHERE m.id = d.message_id),
    d.trigger
"""  # noqa: S608

# One batch of results, one statement (autocommit: atomic on its own, one round trip instead of BEGIN, three
# statements and COMMIT): the attempt rows (INSERT … unnest), the deliveries (UPDATE … FROM unnest; a delivery
# another hand ended meanwhile — canceled, or succeeded through another dispatcher — keeps its state), and per
# endpoint of the batch its latest success, its first failure after that success (or in the batch when none),
# the last answer's status and the last error. ``first_failure_at`` is the first failure after the last success:
# a success clears it. Data-modifying CTEs always run to completion, read or not. Returns the endpoints that have
# only failed for ``disable_after`` seconds.
DISPATCH_RESULTS_SQL = f"""
WITH attempts AS (
    INSERT INTO {_A} (delivery_id, message_id, endpoint_id, number, at, duration_ms, status_code, response_body,
                      error, trigger, request_id)
    SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::int[], %s::timestamptz[], %s::int[], %s::int[],
                         %s::text[], %s::text[], %s::text[], %s::text[])
), deliveries AS (
    UPDATE {_D} d SET state = v.state, attempts = GREATEST(d.attempts, v.attempts),
        next_attempt_at = v.next_attempt_at, leased_until = NULL, last_status = v.last_status,
        last_error = v.last_error, succeeded_at = COALESCE(v.succeeded_at, d.succeeded_at), updated_at = now(),
        trigger = 'scheduled'
    FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::timestamptz[], %s::int[], %s::text[], %s::timestamptz[])
        AS v(id, state, attempts, next_attempt_at, last_status, last_error, succeeded_at)
    WHERE d.id = v.id AND d.state = 'pending'
)
UPDATE {_E} e SET
    last_success_at = COALESCE(v.success_at, e.last_success_at),
    first_failure_at = CASE WHEN v.success_at IS NOT NULL THEN v.failure_at
                            ELSE COALESCE(e.first_failure_at, v.failure_at) END,
    last_status = v.last_status,
    last_error = CASE WHEN v.last_error = '' THEN e.last_error ELSE v.last_error END
FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[], %s::text[])
    AS v(id, success_at, failure_at, last_status, last_error)
WHERE e.id = v.id
RETURNING e.id, (e.enabled AND e.first_failure_at IS NOT NULL
                 AND e.first_failure_at <= now() - make_interval(secs => %s)) AS failing
"""  # noqa: S608

# Disable (Django's connection, with the audit event in the same transaction): only endpoints still enabled.
# ``failing`` re-checks the condition, so a success that landed meanwhile keeps the endpoint on.
DISPATCH_DISABLE_SQL = f"""
UPDATE {_E} SET enabled = false, disabled_reason = %(reason)s, disabled_at = now(), updated_at = now()
WHERE id = ANY(%(ids)s::text[]) AND enabled
  AND (NOT %(failing)s OR (first_failure_at IS NOT NULL
                           AND first_failure_at <= now() - make_interval(secs => %(after)s)))
RETURNING id, url, first_failure_at, last_error
"""  # noqa: S608

# A dispatcher that stops lets go of the leases of what it did not send (another one sends them at once).
DISPATCH_RELEASE_SQL = f"UPDATE {_D} SET leased_until = NULL WHERE id = ANY(%s::bigint[]) AND state = 'pending'"  # noqa: S608

# Retention: attempts older than a cutoff, a batch at a time (the BRIN index on ``at`` finds them).
ATTEMPTS_PURGE_SQL = f"DELETE FROM {_A} WHERE id IN (SELECT id FROM {_A} WHERE at < %s LIMIT %s)"  # noqa: S608


async def dispatch_endpoints(conn: Any) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(DISPATCH_ENDPOINTS_SQL)
    return await cursor.fetchall()


async def dispatch_claim(
    conn: Any, slots: dict[str, int], ordered: list[str], lease_seconds: float
) -> list[tuple[Any, ...]]:
    """Claim due deliveries: up to ``slots[endpoint]`` for unordered endpoints, the head for ``ordered`` ones.
    Rows: (delivery id, endpoint id, message id, attempts so far, body, request id, trigger)."""
    params = {
        "ids": list(slots),
        "slots": list(slots.values()),
        "ordered": ordered,
        "lease": float(lease_seconds),
    }
    cursor = await conn.execute(DISPATCH_CLAIM_SQL, params)
    return await cursor.fetchall()


async def dispatch_results(
    conn: Any,
    attempts: list[list[Any]],
    deliveries: list[list[Any]],
    endpoints: list[list[Any]],
    disable_after: float,
) -> list[str]:
    """Write one batch of results in one statement (:data:`DISPATCH_RESULTS_SQL`; columns as lists, in its order)
    on an autocommit connection; return the endpoints due for the failing disable."""
    cursor = await conn.execute(DISPATCH_RESULTS_SQL, [*attempts, *deliveries, *endpoints, float(disable_after)])
    rows = await cursor.fetchall()
    return [row[0] for row in rows if row[1]]


async def dispatch_release(conn: Any, delivery_ids: list[int]) -> None:
    if delivery_ids:
        await conn.execute(DISPATCH_RELEASE_SQL, [delivery_ids])


def endpoints_disable(ids: list[str], reason: str, *, failing: bool, after: float) -> list[tuple[Any, ...]]:
    """Disable ``ids`` (Django's connection, in the caller's transaction); rows of those that were disabled."""
    return db_execute(DISPATCH_DISABLE_SQL, {"ids": ids, "reason": reason, "failing": failing, "after": float(after)})


def attempts_purge_batch(cutoff: Any, batch: int) -> int:
    """Delete up to ``batch`` attempts older than ``cutoff`` (Django's connection); how many went."""
    with connection.cursor() as cursor:
        cursor.execute(ATTEMPTS_PURGE_SQL, [cutoff, batch])
        return int(cursor.rowcount)
