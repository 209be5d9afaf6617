"""The webhooks app's raw SQL: every statement its writes, reads and the dispatcher send as text, where one
set-based statement earns its keep. Depends on the models only, so every module of the app imports it and none
imports another for SQL. Sections: ingest (core), the API's writes (api), the dispatcher's (at the end).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from services.kit.db import execute as db_execute
from services.webhooks.models import Delivery, Endpoint, Message

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
