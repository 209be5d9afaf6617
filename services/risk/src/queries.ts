// Every SQL statement of the risk service (raw SQL in one module, like the Python apps' queries.py).
// Timestamps are formatted here as RFC 3339 UTC with microseconds and Z.

const ts = (column: string): string => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

export const PING = "SELECT 1";

// ---- outbox
export const OUTBOX_SEQ_BUMP = "UPDATE risk_outbox_state SET last_seq = last_seq + $1 WHERE singleton RETURNING last_seq";
export const OUTBOX_INSERT =
  "INSERT INTO risk_outbox (id, service_seq, payload) SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[])";
export const OUTBOX_PENDING = "SELECT (last_seq - published_seq)::int AS pending FROM risk_outbox_state WHERE singleton";

// ---- locks: one transaction advisory lock per key, taken in the order given (the caller sorts them)
export const LOCKS_TAKE = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k";
// A session advisory lock on one connection (retention: one instance at a time), released by its unlock or the
// connection's end.
export const SESSION_LOCK_TRY = "SELECT pg_try_advisory_lock($1::bigint) AS ok";
export const SESSION_UNLOCK = "SELECT pg_advisory_unlock($1::bigint)";

// ---- rules
const RULES_COLUMNS = `id, version, rules, ${ts("created_at")} AS created_at, created_by`;
export const RULES_CURRENT = `SELECT ${RULES_COLUMNS} FROM risk_rules_version ORDER BY version DESC LIMIT 1`;
export const RULES_INSERT = `INSERT INTO risk_rules_version (id, version, rules, created_by) VALUES ($1, $2, $3, $4) RETURNING ${RULES_COLUMNS}`;
// Keyset pages of the history, newest first ($1: the cursor's version or null, $2: limit + 1).
export const RULES_PAGE_AFTER = `SELECT ${RULES_COLUMNS} FROM risk_rules_version WHERE ($1::int IS NULL OR version < $1) ORDER BY version DESC LIMIT $2`;
export const RULES_PAGE_BEFORE = `SELECT ${RULES_COLUMNS} FROM risk_rules_version WHERE version > $1 ORDER BY version ASC LIMIT $2`;

// ---- assessments
const ASSESSMENT_COLUMNS = `id, payment_id, score, decision, reasons, rules_version, ${ts("assessed_at")} AS assessed_at`;
export const ASSESSMENTS_BY_PAYMENT = `SELECT ${ASSESSMENT_COLUMNS} FROM risk_assessment WHERE payment_id = ANY($1::text[])`;
export const ASSESSMENT_GET = `SELECT ${ASSESSMENT_COLUMNS} FROM risk_assessment WHERE id = $1`;
// Newest first by id (ids are time-ordered); $1 payment_id filter, $2 decision filter, $3 cursor id, $4 limit + 1.
export const ASSESSMENTS_PAGE_AFTER = `SELECT ${ASSESSMENT_COLUMNS} FROM risk_assessment
  WHERE ($1::text IS NULL OR payment_id = $1) AND ($2::text IS NULL OR decision = $2) AND ($3::text IS NULL OR id < $3)
  ORDER BY id DESC LIMIT $4`;
export const ASSESSMENTS_PAGE_BEFORE = `SELECT ${ASSESSMENT_COLUMNS} FROM risk_assessment
  WHERE ($1::text IS NULL OR payment_id = $1) AND ($2::text IS NULL OR decision = $2) AND id > $3
  ORDER BY id ASC LIMIT $4`;

export const ASSESSMENTS_INSERT = `INSERT INTO risk_assessment
  (id, payment_id, amount, currency, source_account, destination_account, client_id, payment_created_at,
   score, decision, reasons, rules_version)
  SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::timestamptz[], $9::int[], $10::text[], $11::jsonb[], $12::int[])
  ON CONFLICT (payment_id) DO NOTHING
  RETURNING id, payment_id, ${ts("assessed_at")} AS assessed_at`;

// The source's history before this call, for a whole batch at once. Denied payments never count.
//
// Velocity: for each (source, window lower bound) pair, the count and sum of the source's payments created
// after the lower bound ($1 sources, $2 lower bounds; answers by `i`, the pair's position): the whole minutes
// after the bound from risk_velocity_bucket, and the partial minute at the bound from the payments themselves.
export const VELOCITY_TOTALS = `SELECT p.i::int AS i, (b.count + e.count)::int AS count, (b.total + e.total)::text AS total
  FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS p(source, lower_bound, i)
  CROSS JOIN LATERAL (
    SELECT coalesce(sum(v.count), 0) AS count, coalesce(sum(v.amount), 0) AS total FROM risk_velocity_bucket v
    WHERE v.source_account = p.source AND v.minute > p.lower_bound
  ) b
  CROSS JOIN LATERAL (
    SELECT count(*) AS count, coalesce(sum(a.amount), 0) AS total FROM risk_assessment a
    WHERE a.source_account = p.source AND a.decision <> 'deny' AND a.payment_created_at > p.lower_bound
      AND a.payment_created_at < date_trunc('minute', p.lower_bound) + interval '1 minute'
  ) e`;

// Add the payments just assessed (not denied) to their minutes ($1 sources, $2 created_at, $3 amounts).
export const VELOCITY_ADD = `INSERT INTO risk_velocity_bucket AS v (source_account, minute, count, amount)
  SELECT source, date_trunc('minute', at), count(*), sum(amount)
  FROM unnest($1::text[], $2::timestamptz[], $3::bigint[]) AS u(source, at, amount)
  GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (source_account, minute) DO UPDATE SET count = v.count + excluded.count, amount = v.amount + excluded.amount`;

// New payee: the (source, destination) pairs already paid ($1 sources, $2 destinations).
export const PAYEES_SEEN = `SELECT p.source, p.destination
  FROM (SELECT DISTINCT source, destination FROM unnest($1::text[], $2::text[]) AS u(source, destination)) p
  WHERE EXISTS (SELECT 1 FROM risk_assessment a WHERE a.source_account = p.source
                AND a.destination_account = p.destination AND a.decision <> 'deny')`;

// Outlier: per source, how many payments in the lookback (the latest $4 at most) and the $2 percentile of their
// amounts (continuous), computed in the database ($1 sources, $3 lookback days).
export const OUTLIER_STATS = `SELECT s.source, h.count::int AS count, h.threshold::float8 AS threshold
  FROM unnest($1::text[]) AS s(source)
  CROSS JOIN LATERAL (
    SELECT count(*) AS count, percentile_cont($2::float8) WITHIN GROUP (ORDER BY x.amount) AS threshold
    FROM (SELECT a.amount FROM risk_assessment a
          WHERE a.source_account = s.source AND a.decision <> 'deny'
            AND a.payment_created_at > now() - make_interval(days => $3::int)
          ORDER BY a.payment_created_at DESC LIMIT $4) x
  ) h`;

// ---- retention (src/retention.ts): bounded deletes, each batch a statement (and a transaction) of its own.
// Published outbox rows older than $3 days with service_seq in [$1, $2]: a range of sequence numbers at a time as the
// kit's outbox_purge, and never above the watermark read in the same statement (the relay may move it back).
export const RETENTION_OUTBOX_RANGE = `SELECT min(o.service_seq)::text AS low, (SELECT published_seq FROM risk_outbox_state WHERE singleton)::text AS watermark
  FROM risk_outbox o`;
export const RETENTION_OUTBOX_DELETE = `DELETE FROM risk_outbox
  WHERE service_seq >= $1::bigint AND service_seq <= $2::bigint
    AND service_seq <= (SELECT published_seq FROM risk_outbox_state WHERE singleton)
    AND created_at < now() - make_interval(days => $3::int)`;
// The velocity horizon: now minus the longest window any stored rules version holds or the rules may hold ($1
// seconds, the validator's bound), plus the margin ($2 seconds). Answers the horizon (RFC 3339) and its seconds.
export const RETENTION_VELOCITY_HORIZON = `SELECT h.seconds::text AS seconds, ${ts("(now() - make_interval(secs => h.seconds))")} AS horizon
  FROM (SELECT greatest($1::bigint, coalesce(max((v.rule->>'window_seconds')::bigint), 0)) + $2::bigint AS seconds
        FROM risk_rules_version r CROSS JOIN LATERAL jsonb_array_elements(r.rules->'velocity') AS v(rule)) h`;
// Minute buckets before the horizon ($1), oldest first, $2 at most (risk_velocity_bucket_minute, migration 0003).
export const RETENTION_VELOCITY_DELETE = `DELETE FROM risk_velocity_bucket
  WHERE (source_account, minute) IN (
    SELECT source_account, minute FROM risk_velocity_bucket WHERE minute < $1::timestamptz ORDER BY minute LIMIT $2)`;
