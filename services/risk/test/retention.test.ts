// Retention against real PostgreSQL: published outbox rows past ATRIUM_OUTBOX_RETENTION_DAYS are deleted in batches
// and nothing else (unpublished or recent rows stay); velocity buckets past the horizon (the longest window rules may
// hold, plus a day) are deleted and those inside kept; an instance finds another holding the lock and skips; the
// timer runs passes and stop() ends them.
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";

import type pg from "pg";

import { registry } from "../src/metrics.ts";
import { Retention, retentionLockKey, type RetentionOptions } from "../src/retention.ts";
import { captureLog } from "./helpers/log.ts";
import { eventsWrite, outboxReset, testPool, until } from "./helpers/platform_db.ts";

const DAY = 86_400_000;
let pool: pg.Pool;

before(async () => {
  pool = await testPool(5);
});
after(async () => {
  await pool.end();
});
beforeEach(async () => {
  await outboxReset(pool);
  await pool.query("TRUNCATE risk_velocity_bucket");
  await pool.query("DELETE FROM risk_rules_version WHERE version > 1");
});

function retentionFor(options: Partial<RetentionOptions> = {}) {
  const log = captureLog();
  return { retention: new Retention({ pool, log, outboxDays: 7, batch: 2, ...options }), log };
}

/** Outbox rows `seqs` written `days` days ago. */
async function outboxAge(seqs: number[], days: number): Promise<void> {
  await pool.query("UPDATE risk_outbox SET created_at = now() - make_interval(days => $2) WHERE service_seq = ANY($1::bigint[])", [seqs, days]);
}

async function outboxSeqs(): Promise<number[]> {
  return (await pool.query<{ s: string }>("SELECT service_seq AS s FROM risk_outbox ORDER BY 1")).rows.map((r) => Number(r.s));
}

async function published(seq: number): Promise<void> {
  await pool.query("UPDATE risk_outbox_state SET published_seq = $1", [seq]);
}

/** One bucket per entry, for source `src`, at now minus the given milliseconds (truncated to the minute). */
async function bucketsAt(agesMs: number[]): Promise<void> {
  for (const [i, age] of agesMs.entries()) {
    await pool.query(
      "INSERT INTO risk_velocity_bucket (source_account, minute, count, amount) VALUES ($1, date_trunc('minute', now() - make_interval(secs => $2::float8 / 1000)), 1, 100)",
      [`acct_${i}`, age],
    );
  }
}

async function bucketSources(): Promise<string[]> {
  return (await pool.query<{ s: string }>("SELECT source_account AS s FROM risk_velocity_bucket ORDER BY 1")).rows.map((r) => r.s);
}

async function deletedTotal(table: string): Promise<number> {
  const metric = await registry.getSingleMetric("atrium_risk_retention_deleted_total")!.get();
  return metric.values.find((v) => v.labels.table === table)?.value ?? 0;
}

describe("Retention", () => {
  test("deletes published outbox rows older than the retention, in batches; keeps unpublished and recent ones", async () => {
    await eventsWrite(pool, 9);
    await outboxAge([1, 2, 3, 4, 5, 6, 7], 8); // past 7 days; 8 and 9 recent
    await published(6); // 7 is old but not yet accepted by the portal: it stays however old it is
    const before = await deletedTotal("risk_outbox");
    const { retention, log } = retentionFor();

    const result = await retention.pass();

    assert.deepEqual(result, { busy: false, outbox: 6, buckets: 0 });
    assert.deepEqual(await outboxSeqs(), [7, 8, 9]);
    assert.equal((await deletedTotal("risk_outbox")) - before, 6);
    assert.equal(log.named("retention.purged")[0]?.obj.outbox_rows, 6);
    // once published, 7 goes too (8 and 9, published too, are recent)
    await published(9);
    assert.equal((await retention.pass()).outbox, 1);
    assert.deepEqual(await outboxSeqs(), [8, 9]);
  });

  test("an old row above the watermark stays, also when one batch would span it", async () => {
    await eventsWrite(pool, 4);
    await outboxAge([1, 2, 3, 4], 30);
    await published(2);

    assert.equal((await retentionFor({ batch: 1_000 }).retention.pass()).outbox, 2);
    assert.deepEqual(await outboxSeqs(), [3, 4]);
  });

  test("ATRIUM_OUTBOX_RETENTION_DAYS decides what is old: rows 8 days old stay with 10 days", async () => {
    await eventsWrite(pool, 3);
    await outboxAge([1, 2, 3], 8);
    await published(3);

    assert.equal((await retentionFor({ outboxDays: 10 }).retention.pass()).outbox, 0);
    assert.deepEqual(await outboxSeqs(), [1, 2, 3]);
    assert.equal((await retentionFor({ outboxDays: 7 }).retention.pass()).outbox, 3);
    assert.deepEqual(await outboxSeqs(), []);
  });

  test("deletes velocity buckets past the horizon (90-day windows + 1 day), keeps those inside, in batches", async () => {
    // acct_0..2 past the horizon of 91 days; acct_3..5 inside it (a 90-day window may read them)
    await bucketsAt([200 * DAY, 92 * DAY, 91 * DAY + 3_600_000, 91 * DAY - 3_600_000, 89 * DAY, 60_000]);
    const before = await deletedTotal("risk_velocity_bucket");
    const { retention, log } = retentionFor();

    const result = await retention.pass();

    assert.deepEqual(result, { busy: false, outbox: 0, buckets: 3 });
    assert.deepEqual(await bucketSources(), ["acct_3", "acct_4", "acct_5"]);
    assert.equal((await deletedTotal("risk_velocity_bucket")) - before, 3);
    assert.equal(log.named("retention.purged")[0]?.obj.velocity_buckets, 3);
  });

  test("a stored rules version with a window longer than the bound moves the horizon back", async () => {
    const rules = (await pool.query("SELECT rules FROM risk_rules_version WHERE version = 1")).rows[0].rules;
    rules.velocity[1].window_seconds = 120 * 86_400; // as if the bound were once wider
    await pool.query(
      `INSERT INTO risk_rules_version (id, version, rules, created_by) VALUES ('rlv_retention_test', 2, $1, '{"type": "system", "id": "test", "display": "test"}')`,
      [rules],
    );
    await bucketsAt([122 * DAY, 100 * DAY]);

    assert.equal((await retentionFor().retention.pass()).buckets, 1);
    assert.deepEqual(await bucketSources(), ["acct_1"]);
  });

  test("skips the pass while another instance holds the retention lock", async () => {
    await eventsWrite(pool, 2);
    await outboxAge([1, 2], 8);
    await published(2);
    await bucketsAt([100 * DAY]);
    const other = await pool.connect();
    try {
      assert.equal((await other.query("SELECT pg_try_advisory_lock($1::bigint) AS ok", [retentionLockKey("risk")])).rows[0].ok, true);

      const result = await retentionFor().retention.pass();

      assert.deepEqual(result, { busy: true, outbox: 0, buckets: 0 });
      assert.deepEqual(await outboxSeqs(), [1, 2]);
      assert.deepEqual(await bucketSources(), ["acct_0"]);
    } finally {
      await other.query("SELECT pg_advisory_unlock($1::bigint)", [retentionLockKey("risk")]);
      other.release();
    }
    assert.deepEqual(await retentionFor().retention.pass(), { busy: false, outbox: 2, buckets: 1 });
  });

  test("runs on its timer until stopped, and leaves no timer behind", async () => {
    await eventsWrite(pool, 2);
    await outboxAge([1, 2], 8);
    await published(2);
    const { retention, log } = retentionFor({ firstPassMs: 10, intervalMs: 30 });
    retention.start();
    await until(async () => (await outboxSeqs()).length === 0, 5_000, "the first pass");
    await until(() => log.named("retention.purged").length >= 3, 5_000, "passes every 30 ms");

    await retention.stop();
    const passes = log.named("retention.purged").length;
    await new Promise((resolve) => setTimeout(resolve, 150));

    assert.equal(log.named("retention.purged").length, passes);
  });
});
