// Retention: what the risk service deletes, and when. Runs in the web process (src/main.ts), every hour, the first
// pass a minute after start; one instance at a time across replicas (the session advisory lock `retentionLockKey`,
// taken with pg_try_advisory_lock on a connection of its own, as the relay does: an instance that finds it taken
// skips the pass, the holder is doing it).
//
// - risk_outbox: published rows (service_seq <= risk_outbox_state.published_seq) written more than
//   ATRIUM_OUTBOX_RETENTION_DAYS days ago (default 7), by ranges of service_seq from the oldest, as the kit's
//   outbox_purge (services/kit/outbox.py). A row not yet accepted by the portal is never deleted, however old.
// - risk_velocity_bucket: minutes before the velocity horizon, oldest first. The horizon is now minus the longest
//   window a velocity rule may hold (90 days, WINDOW_MAX_SECONDS in src/rules.ts; or a stored version's, if longer)
//   plus a day. Not the current rules' longest window: the buckets are a summary of risk_assessment that nothing
//   rebuilds, so a PUT that widens a window would read minutes already deleted and under-count until the new window
//   has filled again. Keeping what any accepted window can read costs at most one row per source and minute with
//   payments (fewer rows than the assessments, which are kept). The day of margin is for payments assessed late:
//   a window is measured back from the payment's created_at, not from now.
// - risk_assessment: kept (new_payee and the 90-day outlier history read it; it is the record of every decision).
//
// Each batch is a statement of its own (at most `batch` rows, `maxBatches` a table per pass), so a pass never holds
// locks on many rows for long. Logs `retention.purged` per pass; counts `atrium_risk_retention_deleted_total{table}`.
import { createHash } from "node:crypto";

import type { Pool, PoolClient } from "pg";

import { retentionDeleted } from "./metrics.ts";
import type { Log } from "./platform/http.ts";
import {
  RETENTION_OUTBOX_DELETE,
  RETENTION_OUTBOX_RANGE,
  RETENTION_VELOCITY_DELETE,
  RETENTION_VELOCITY_HORIZON,
  SESSION_LOCK_TRY,
  SESSION_UNLOCK,
} from "./queries.ts";
import { WINDOW_MAX_SECONDS } from "./rules.ts";

export const INTERVAL_MS = 3_600_000;
export const FIRST_PASS_MS = 60_000;
export const BATCH = 5_000;
export const MAX_BATCHES = 1_000;
/** Kept beyond the longest velocity window: how late a payment may be assessed and still see its whole window. */
export const VELOCITY_MARGIN_SECONDS = 86_400;

/** The advisory lock key of a service's retention (64 bits of sha256, signed, as the relay's). */
export function retentionLockKey(service: string): string {
  return createHash("sha256").update(`atrium-retention:${service}`).digest().readBigInt64BE(0).toString();
}

export interface RetentionOptions {
  pool: Pool;
  log: Log;
  /** ATRIUM_OUTBOX_RETENTION_DAYS. */
  outboxDays: number;
  intervalMs?: number;
  firstPassMs?: number;
  batch?: number;
  maxBatches?: number;
}

export interface RetentionResult {
  /** Another instance holds the retention lock: this pass did nothing. */
  busy: boolean;
  outbox: number;
  buckets: number;
}

export class Retention {
  readonly lockKey = retentionLockKey("risk");
  private readonly pool: Pool;
  private readonly log: Log;
  private readonly outboxDays: number;
  private readonly intervalMs: number;
  private readonly firstPassMs: number;
  private readonly batch: number;
  private readonly maxBatches: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private halted = false;

  constructor(options: RetentionOptions) {
    if (!Number.isInteger(options.outboxDays) || options.outboxDays < 1) throw new Error("outboxDays must be a whole number of at least 1");
    this.pool = options.pool;
    this.log = options.log;
    this.outboxDays = options.outboxDays;
    this.intervalMs = options.intervalMs ?? INTERVAL_MS;
    this.firstPassMs = options.firstPassMs ?? FIRST_PASS_MS;
    this.batch = Math.max(1, options.batch ?? BATCH);
    this.maxBatches = Math.max(1, options.maxBatches ?? MAX_BATCHES);
  }

  /** Schedule the passes: the first after `firstPassMs`, then every `intervalMs` after the previous one ended. */
  start(): this {
    if (!this.halted && !this.timer && !this.running) this.schedule(this.firstPassMs);
    return this;
  }

  /** No further pass; the one in flight ends after its current batch. */
  async stop(): Promise<void> {
    this.halted = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.pass()
        .then(
          () => undefined,
          (error: unknown) => this.log.warn({ error: error instanceof Error ? error.message : String(error) }, "retention.failed"),
        )
        .finally(() => {
          this.running = undefined;
          if (!this.halted) this.schedule(this.intervalMs);
        });
    }, ms);
    this.timer.unref(); // never what keeps the process alive: stop() clears it anyway
  }

  /** One pass under the retention lock. Throws on a database error (what was deleted before stays deleted). */
  async pass(): Promise<RetentionResult> {
    const db = await this.pool.connect();
    let broken: Error | undefined;
    try {
      const locked = await db.query<{ ok: boolean }>(SESSION_LOCK_TRY, [this.lockKey]);
      if (!locked.rows[0]?.ok) {
        this.log.debug({}, "retention.busy");
        return { busy: true, outbox: 0, buckets: 0 };
      }
      try {
        const outbox = await this.outboxPurge(db);
        const { deleted: buckets, horizon } = await this.bucketsPurge(db);
        this.log.info({ outbox_rows: outbox, velocity_buckets: buckets, retention_days: this.outboxDays, velocity_horizon: horizon }, "retention.purged");
        return { busy: false, outbox, buckets };
      } finally {
        try {
          await db.query(SESSION_UNLOCK, [this.lockKey]);
        } catch (error) {
          broken = error as Error; // the connection is dropped below, which frees the lock
        }
      }
    } catch (error) {
      broken ??= error as Error;
      throw error;
    } finally {
      db.release(broken);
    }
  }

  private async outboxPurge(db: PoolClient): Promise<number> {
    const range = (await db.query<{ low: string | null; watermark: string }>(RETENTION_OUTBOX_RANGE)).rows[0];
    if (!range?.low) return 0;
    const watermark = Number(range.watermark);
    let low = Number(range.low);
    let removed = 0;
    for (let i = 0; i < this.maxBatches && low <= watermark && !this.halted; i += 1) {
      const high = Math.min(low + this.batch - 1, watermark);
      const deleted = (await db.query(RETENTION_OUTBOX_DELETE, [low, high, this.outboxDays])).rowCount ?? 0;
      removed += deleted;
      retentionDeleted.inc({ table: "risk_outbox" }, deleted);
      if (!deleted) break; // service_seq follows creation: the rows from here on are within retention (or unpublished)
      low = high + 1;
    }
    return removed;
  }

  private async bucketsPurge(db: PoolClient): Promise<{ deleted: number; horizon: string }> {
    const { horizon } = (await db.query<{ horizon: string }>(RETENTION_VELOCITY_HORIZON, [WINDOW_MAX_SECONDS, VELOCITY_MARGIN_SECONDS])).rows[0];
    let removed = 0;
    for (let i = 0; i < this.maxBatches && !this.halted; i += 1) {
      const deleted = (await db.query(RETENTION_VELOCITY_DELETE, [horizon, this.batch])).rowCount ?? 0;
      removed += deleted;
      retentionDeleted.inc({ table: "risk_velocity_bucket" }, deleted);
      if (deleted < this.batch) break;
    }
    return { deleted: removed, horizon };
  }
}
