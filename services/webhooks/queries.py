"""The webhooks app's raw SQL: every statement its writes, reads and the dispatcher send as text, where one
set-based statement earns its keep. Depends on the models only, so every module of the app imports it and none
imports another for SQL. Sections: ingest (core), the API's writes (api), the dispatcher's (at the end).
"""

from __future__ import annotations

import hashlib

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
