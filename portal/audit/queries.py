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


# The newest events of one object id whatever its type (the trace): the object index leads with object_type, so
# each known type is its own index range read newest first (a LATERAL per type), never a scan of the table.
# %s: the types, the object id, the limit per type, the overall limit.
OBJECT_EVENTS_LATEST = (
    "SELECT e.seq, e.request_id FROM unnest(%s::text[]) AS t(object_type) CROSS JOIN LATERAL ("
    "SELECT seq, request_id FROM audit_event WHERE object_type = t.object_type AND object_id = %s "
    "ORDER BY seq DESC LIMIT %s) AS e ORDER BY e.seq DESC LIMIT %s"
)


# ------------------------------------------------------------------------------------ the sequencer (chain.py)

# The sequencer's state, row-locked; a last stamp no datetime holds (the row was tampered with) reads as NULL.
CHAIN_STATE_LOCK = (
    "SELECT size, last_hash, frontier, CASE WHEN updated_at BETWEEN '2000-01-01Z' AND '9999-12-31Z' "
    "THEN updated_at END FROM audit_chain_state WHERE id = 1 FOR UPDATE"
)
CHAIN_STATE_CREATE = (
    "INSERT INTO audit_chain_state (id, size, last_hash, frontier, updated_at) "
    "VALUES (1, 0, %s, '{}', now()) ON CONFLICT (id) DO NOTHING"
)
CHAIN_STATE_UPDATE = (
    "UPDATE audit_chain_state SET size = %s, last_hash = %s, frontier = %s::jsonb, updated_at = %s WHERE id = 1"
)
XACT_LOCK = "SELECT pg_advisory_xact_lock(%s)"
EVENT_IDS_KNOWN = "SELECT event_id FROM audit_event WHERE event_id = ANY(%s)"
SERVICE_PLACES_TAKEN = (
    "SELECT service, service_seq FROM audit_event WHERE (service, service_seq) IN "
    "(SELECT * FROM unnest(%s::text[], %s::bigint[]))"
)
# HTTP ingest (intake.py), under the sequencer lock: where these ids were recorded, who holds these places, and
# each service's highest recorded number (one backward probe of the (service, service_seq) index per service).
PLACES_OF_IDS = "SELECT event_id, service, service_seq FROM audit_event WHERE event_id = ANY(%s)"
IDS_AT_PLACES = (
    "SELECT service, service_seq, event_id FROM audit_event WHERE (service, service_seq) IN "
    "(SELECT * FROM unnest(%s::text[], %s::bigint[]))"
)
SERVICE_SEQ_HIGHEST = (
    "SELECT s.service, (SELECT max(e.service_seq) FROM audit_event e WHERE e.service = s.service) "
    "FROM unnest(%s::text[]) AS s(service)"
)
EVENT_COLUMNS = (
    "seq, event_id, service, service_seq, occurred_at, recorded_at, actor_type, actor_id, actor_display, action, "
    "outcome, object_type, object_id, request_id, source_ip, user_agent, changes, metadata, canonical, leaf_hash, "
    "hash, prev_hash"
)
EVENT_COPY_IN = f"COPY audit_event ({EVENT_COLUMNS}) FROM STDIN"
NODE_COPY_IN = "COPY audit_node (level, index, hash) FROM STDIN"
# Stored complete subtree roots at the (level, index) pairs of two arrays.
NODES_AT = (
    "SELECT n.level, n.index, n.hash FROM audit_node n JOIN unnest(%s::smallint[], %s::bigint[]) AS w(l, i) "
    "ON n.level = w.l AND n.index = w.i"
)

# ------------------------------------------------------------------------------------ seals (seal.py)

EVENT_XMIN = "SELECT xmin::text::bigint FROM audit_event WHERE seq = %s"
SEAL_INSERT = (
    "INSERT INTO audit_seal (first_seq, last_seq, row_xmin, key_id, mac, created_at) VALUES (%s, %s, %s, %s, %s, now())"
)
SEALS_AFTER = "SELECT first_seq, last_seq, row_xmin, key_id, mac FROM audit_seal WHERE last_seq > %s ORDER BY first_seq"

# ------------------------------------------------------------------------------------ archival (archive.py)

ARCHIVE_EVENTS = (
    "SELECT seq, canonical, leaf_hash, hash, prev_hash FROM audit_event WHERE seq BETWEEN %s AND %s ORDER BY seq"
)
NODE_WINDOW = 'SELECT "index", hash FROM audit_node WHERE level = %s AND "index" >= %s AND "index" < %s'
# The one door the append-only trigger has (this transaction only).
ARCHIVAL_DOOR_OPEN = "SET LOCAL atrium.audit_archival = 'on'"
ARCHIVED_DELETE = (
    "DELETE FROM audit_event WHERE seq IN (SELECT seq FROM audit_event WHERE seq <= %s ORDER BY seq LIMIT %s)"
)
SESSION_LOCK_TRY = "SELECT pg_try_advisory_lock(%s)"
SESSION_LOCK_RELEASE = "SELECT pg_advisory_unlock(%s)"

# ------------------------------------------------------------------------------------ verification

# The live log, streamed in seq order for (start, end]: binary COPY. The two timestamps come as PostgreSQL sends a
# timestamptz in binary (microseconds since 2000-01-01 UTC, read as plain integers; see parallel_stream.py).
STREAM_COPY = (
    "COPY (SELECT seq, convert_to(canonical, 'UTF8'), hash, prev_hash, leaf_hash, xmin::text::bigint, "
    "occurred_at, recorded_at FROM audit_event WHERE seq > %s AND seq <= %s ORDER BY seq) TO STDOUT (FORMAT BINARY)"
)
# Rows in seq order straight off the primary key: without statistics (a freshly loaded table) the planner
# may otherwise sort the whole range before sending the first row.
ORDERED_SCAN = "SET LOCAL enable_sort = off"
READ_ONLY_REPEATABLE = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
BEGIN_READ_ONLY_REPEATABLE = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
COMMIT = "COMMIT"
SNAPSHOT_EXPORT = "SELECT pg_export_snapshot()"


def snapshot_set(snapshot: str) -> str:
    """Join an exported snapshot (the caller checked the id's shape: it is spliced into the statement)."""
    return f"SET TRANSACTION SNAPSHOT '{snapshot}'"


# Where the live log's column check starts (after the archived prefix) and ends.
LIVE_BOUNDS = (
    "SELECT greatest(coalesce(min(seq), 1), (SELECT coalesce(max(last_seq), 0) + 1 FROM audit_archive)), "
    "coalesce(max(seq), 0) FROM audit_event"
)
SEQ_FIRST_AFTER = "SELECT min(seq) FROM audit_event WHERE seq > %s"
# What a row claims at a seq: its chain hash and recorded_at (a time no datetime holds reads as NULL).
EVENT_CLAIMS_AT = (
    "SELECT hash, CASE WHEN recorded_at BETWEEN '2000-01-01Z' AND '9999-12-31Z' THEN recorded_at END "
    "FROM audit_event WHERE seq = %s"
)
# The columns copied out of the canonical JSON for search, as PostgreSQL compares them with it.
# (``seq`` apart: a renumbered row disagrees on it alone, and the stream has already said why.)
COLUMNS_MATCH = """(
    c->>'id' = event_id AND c->>'service' = service AND (c->>'service_seq')::bigint = service_seq
    AND c->>'action' = action AND c->>'outcome' = outcome
    AND c->'actor'->>'type' = actor_type AND c->'actor'->>'id' = actor_id
    AND c->'actor'->>'display' = actor_display AND c->'object'->>'type' = object_type
    AND c->'object'->>'id' = object_id AND c->>'request_id' = request_id AND c->>'source_ip' = source_ip
    AND c->>'user_agent' = user_agent AND c->'changes' = changes AND c->'metadata' = metadata
    AND (c->>'occurred_at')::timestamptz = occurred_at AND (c->>'recorded_at')::timestamptz = recorded_at
)"""
# Rows whose columns no longer say what their hashed JSON says (a missing key compares as NULL: disagrees).
# OFFSET 0 keeps the subquery from being inlined: the JSON is parsed once per row, not once per comparison.
COLUMNS_DISAGREE = (
    f"SELECT seq, (c->>'seq')::bigint, coalesce({COLUMNS_MATCH}, false) "  # noqa: S608
    "FROM audit_event, LATERAL (SELECT canonical::jsonb AS c OFFSET 0) AS j WHERE seq BETWEEN %s AND %s "
    f"AND NOT (coalesce((c->>'seq')::bigint = seq, false) AND coalesce({COLUMNS_MATCH}, false)) "
    "ORDER BY seq LIMIT %s"
)
# Each service's sequence, row by row in (service, service_seq) order (the unique index's): every row whose
# number does not follow the one before it — a gap, a duplicate (the unique index dropped), a number below 1.
# Linear in the rows present, whatever the numbers are (no series is built over them). Before any archival a
# service's sequence starts at 1; after it, at the lowest number still live.
SERVICE_SEQUENCE = """
    SELECT service, service_seq, seq, prev, prev_seq FROM (
        SELECT service, service_seq, seq,
               lag(service_seq) OVER w AS prev, lag(seq) OVER w AS prev_seq
        FROM audit_event WINDOW w AS (PARTITION BY service ORDER BY service_seq)
    ) AS s
    WHERE service_seq < 1 OR (prev IS NULL AND service_seq <> 1 AND NOT %s) OR service_seq <> prev + 1
    ORDER BY service, service_seq LIMIT %s
"""
# Rows of a chunk of the column check: how many, and the last one's seq (chunks are counted in rows, not seqs).
COLUMN_CHUNK_ROWS = (
    "SELECT count(*), max(seq) FROM (SELECT seq FROM audit_event WHERE seq BETWEEN %s AND %s ORDER BY seq LIMIT %s) c"
)
SEQS_BETWEEN = "SELECT seq FROM audit_event WHERE seq BETWEEN %s AND %s ORDER BY seq"
# Rows below 1: the stream never reads them (it starts after the archived prefix, at seq 1 at the lowest).
SEQS_BELOW_ONE = "SELECT seq FROM audit_event WHERE seq < 1 ORDER BY seq LIMIT 100"
