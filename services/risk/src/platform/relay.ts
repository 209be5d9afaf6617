// The outbox relay: risk's audit events, written to `risk_outbox` in the transaction of the change (src/outbox.ts,
// gapless `service_seq`), delivered to the portal over HTTP — `POST /api/v1/audit/events:ingest` — in service_seq
// order, at least once, never skipping one. The same guarantee as the kit's relay (services/kit/outbox.py): a portal
// outage loses nothing, it only delays.
//
// - Runs in the web process. Wakes every 0.5 s, and at once when `relayWake()` is called — the outbox writer calls
//   it after a commit that wrote events (in-process; other instances find the rows on their next poll).
// - One relay at a time across instances: each pass takes the session advisory lock `relayLockKey` on a connection
//   of its own (`pg_try_advisory_lock`; another instance holding it is relaying, so this one lets it), reads the rows
//   above `risk_outbox_state.published_seq` in service_seq order (≤ 500 a request, ≤ 1 MB), sends them, and on a 200
//   moves published_seq past them — all under the lock, so two relays never send out of order.
// - Events are sent as stored, with `id`, `service` ("risk") and `service_seq` set from the row (the kit's
//   `event_expand`); payloads are spliced as JSON text, never parsed (no number loses precision on the way).
// - Anything but a well-formed 200 (network error, timeout, 5xx, 4xx, garbage) is a failure: logged, and the same
//   rows are retried after a backoff (exponential from 0.25 s, jittered, capped 30 s; wakes do not cut it short).
//   A 409 `audit_sequence_gap` is logged as an error with the portal's `expected_seq` and our `received_seq`; when
//   the portal expects an event we still hold (it lost some, e.g. restored from a backup), published_seq is moved
//   back so the next pass sends them again (re-sending is idempotent on event id).
// - `atrium_risk_outbox_pending` (last_seq − published_seq) is set after every pass and read on each scrape.
import { createHash } from "node:crypto";

import type { Pool, PoolClient } from "pg";
import { Gauge, register as defaultRegistry, type Registry } from "prom-client";

import { PortalClient, PortalError, problemCode, refused, sleep, type Log } from "./http.ts";
import { describe } from "./token.ts";

export const INGEST_PATH = "/api/v1/audit/events:ingest";
export const BATCH_MAX = 500;
const BATCH_BYTES_MAX = 1_000_000;
export const POLL_MS = 500;
export const BACKOFF_BASE_MS = 250;
export const BACKOFF_MAX_MS = 30_000;
/** After a wake finds another instance relaying, try again this long (its pass may have missed our rows). */
const BUSY_RETRY_MS = 2_000;
const PENDING_METRIC = "atrium_risk_outbox_pending";

/** The advisory lock key of a service's relay (64 bits of sha256, signed, as the kit derives its own). */
export function relayLockKey(service: string): string {
  const digest = createHash("sha256").update(`atrium-outbox:${service}`).digest();
  return digest.readBigInt64BE(0).toString();
}

export interface RelayOptions {
  pool: Pool;
  client: PortalClient;
  log: Log;
  service?: string;
  batch?: number;
  pollMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Per ingest request, in milliseconds (default 10 s). */
  timeoutMs?: number;
  registry?: Registry;
}

export interface PassResult {
  /** Events the portal accepted in this pass. */
  sent: number;
  /** Another instance holds the relay lock. */
  busy: boolean;
}

interface Row {
  id: string;
  service_seq: string;
  payload: string;
}

let current: Relay | undefined;

/** Wake this process's relay now (call it after a commit that wrote outbox rows; never blocks, never throws). */
export function relayWake(): void {
  current?.wake();
}

export class Relay {
  readonly service: string;
  readonly lockKey: string;
  /** Consecutive failed passes (0 when the last one succeeded). */
  failures = 0;
  /** Events accepted by the portal since start. */
  published = 0;
  private readonly pool: Pool;
  private readonly client: PortalClient;
  private readonly log: Log;
  private readonly batch: number;
  private readonly pollMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly timeoutMs: number;
  private readonly gauge: Gauge;
  private halted = false;
  private readonly abort = new AbortController();
  private woken = false;
  private forced = false;
  private wakeUp: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(options: RelayOptions) {
    this.pool = options.pool;
    this.client = options.client;
    this.log = options.log;
    this.service = options.service ?? "risk";
    this.lockKey = relayLockKey(this.service);
    this.batch = Math.max(1, Math.min(options.batch ?? BATCH_MAX, 1000));
    this.pollMs = options.pollMs ?? POLL_MS;
    this.backoffBaseMs = options.backoffBaseMs ?? BACKOFF_BASE_MS;
    this.backoffMaxMs = options.backoffMaxMs ?? BACKOFF_MAX_MS;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.gauge = pendingGauge(options.registry ?? defaultRegistry, this.pool);
  }

  /** Start the loop; this relay is the one `relayWake()` wakes. */
  start(): this {
    current = this;
    this.loop ??= this.run();
    return this;
  }

  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Try again now even when backing off (what blocked delivery was fixed, e.g. the catalog agent registered). */
  retryNow(): void {
    this.woken = true;
    this.forced = true;
    this.wakeUp?.();
  }

  /** Stop: let the pass in flight end (or abort it at half the budget), then one last pass to send what is
   * pending; the whole within `timeoutMs`. */
  async stop(timeoutMs = 5_000): Promise<void> {
    if (current === this) current = undefined;
    const deadline = Date.now() + timeoutMs;
    this.halted = true;
    this.wakeUp?.();
    if (this.loop) {
      if (!(await settledWithin(this.loop, timeoutMs / 2))) {
        this.abort.abort();
        await settledWithin(this.loop, Math.max(0, deadline - Date.now()));
      }
    }
    const left = deadline - Date.now();
    if (left > 100 && !this.abort.signal.aborted) {
      const final = this.pass(AbortSignal.timeout(left)).then(
        (result) => {
          if (result.sent) this.log.info({ events: result.sent }, "outbox.relay_final_pass");
        },
        (error: unknown) => this.log.warn({ error: describe(error) }, "outbox.relay_final_pass_failed"),
      );
      await settledWithin(final, left);
    }
    this.abort.abort();
  }

  private async run(): Promise<void> {
    while (!this.halted) {
      await this.deliver(this.abort.signal);
      if (this.halted) break;
      if (this.failures > 0) {
        const ceiling = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** Math.min(this.failures - 1, 20));
        await this.waitFor(ceiling / 2 + Math.random() * (ceiling / 2), false);
      } else {
        await this.waitFor(this.pollMs, true);
      }
    }
  }

  /** Sleep `ms`, or less when woken (if `wakeable`) or stopped. */
  private waitFor(ms: number, wakeable: boolean): Promise<void> {
    return new Promise((resolve) => {
      if (this.halted || this.forced || (wakeable && this.woken)) {
        this.woken = false;
        this.forced = false;
        return resolve();
      }
      const done = (): void => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        this.woken = false;
        this.forced = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = () => {
        if (wakeable || this.halted || this.forced) done();
      };
    });
  }

  /** Passes until one is not refused for the lock (for up to 2 s: the holder may have missed our rows), recording
   * success or failure. Never throws. */
  async deliver(signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + BUSY_RETRY_MS;
    try {
      for (;;) {
        const result = await this.pass(signal);
        if (!result.busy || Date.now() > deadline || this.halted) break;
        await sleep(50, signal);
      }
      if (this.failures > 0) this.log.info({ after_failures: this.failures }, "outbox.relay_recovered");
      this.failures = 0;
    } catch (error) {
      this.failures += 1;
      const fields: Record<string, unknown> = { attempt: this.failures, error: describe(error) };
      if (error instanceof PortalError) Object.assign(fields, { status: error.status, code: error.code });
      if (this.failures === 1 || this.failures % 10 === 0) this.log.warn(fields, "outbox.relay_failed");
      else this.log.debug(fields, "outbox.relay_failed");
    }
  }

  /** One pass: under the relay lock, send every pending event in order, a batch at a time. Throws on failure
   * (what was accepted before stays accepted; the rest is sent by a later pass). */
  async pass(signal?: AbortSignal): Promise<PassResult> {
    const pending = await this.pending(this.pool);
    if (pending <= 0) return { sent: 0, busy: false };
    const db = await this.pool.connect();
    let broken: Error | undefined;
    let sent = 0;
    try {
      const locked = await db.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1::bigint) AS ok", [this.lockKey]);
      if (!locked.rows[0]?.ok) return { sent: 0, busy: true };
      try {
        for (;;) {
          const batch = await this.batchRead(db);
          if (batch.rows.length === 0) break;
          await this.send(db, batch, signal);
          await db.query("UPDATE risk_outbox_state SET published_seq = GREATEST(published_seq, $1::bigint)", [batch.last]);
          sent += batch.rows.length;
          this.published += batch.rows.length;
          if (!batch.full || this.halted) break;
        }
      } finally {
        try {
          await db.query("SELECT pg_advisory_unlock($1::bigint)", [this.lockKey]);
        } catch (error) {
          broken = error as Error; // the connection is dropped below, which frees the lock
        }
      }
    } catch (error) {
      if (!(error instanceof PortalError)) broken ??= error as Error;
      throw error;
    } finally {
      db.release(broken);
      await this.pending(this.pool).catch(() => 0);
      if (sent) this.log.info({ events: sent }, "outbox.published");
    }
    return { sent, busy: false };
  }

  /** last_seq − published_seq, also set on the gauge. */
  private async pending(db: Pool | PoolClient): Promise<number> {
    const state = await db.query<{ last_seq: string; published_seq: string }>(
      "SELECT last_seq, published_seq FROM risk_outbox_state LIMIT 1",
    );
    const row = state.rows[0];
    if (!row) throw new Error("risk_outbox_state has no row: run the migrations (node src/migrate.ts)");
    const pending = Number(row.last_seq) - Number(row.published_seq);
    this.gauge.set(pending);
    return pending;
  }

  private async batchRead(db: PoolClient): Promise<{ rows: Row[]; first: number; last: number; full: boolean; json: string }> {
    const result = await db.query<Row>(
      // The payload's own copies of the envelope fields (the writer stores whole events) are left out: the row's win.
      "SELECT o.id, o.service_seq::text AS service_seq, (CASE jsonb_typeof(o.payload) WHEN 'object' " +
        "THEN o.payload - 'id' - 'service' - 'service_seq' ELSE o.payload END)::text AS payload " +
        "FROM risk_outbox o, risk_outbox_state s " +
        "WHERE o.service_seq > s.published_seq ORDER BY o.service_seq LIMIT $1",
      [this.batch],
    );
    const rows: Row[] = [];
    const parts: string[] = [];
    let bytes = 0;
    for (const row of result.rows) {
      const event = eventJson(row, this.service);
      if (rows.length > 0 && bytes + event.length > BATCH_BYTES_MAX) break;
      rows.push(row);
      parts.push(event);
      bytes += event.length + 1;
    }
    const full = rows.length < result.rows.length || result.rows.length === this.batch;
    const first = rows.length ? Number(rows[0].service_seq) : 0;
    const last = rows.length ? Number(rows[rows.length - 1].service_seq) : 0;
    return { rows, first, last, full, json: `{"events":[${parts.join(",")}]}` };
  }

  private async send(db: PoolClient, batch: { rows: Row[]; first: number; last: number; json: string }, signal?: AbortSignal): Promise<void> {
    const answer = await this.client.request("POST", INGEST_PATH, undefined, { json: batch.json, signal, timeoutMs: this.timeoutMs });
    if (answer.status === 200) {
      const body = answer.body as { inserted?: unknown; duplicates?: unknown } | undefined;
      if (body && typeof body === "object" && Number.isInteger(body.inserted) && Number.isInteger(body.duplicates)) return;
      throw new PortalError(`ingest: HTTP 200 without an ingest result: ${answer.text.slice(0, 200)}`, {
        status: 200,
        code: "portal_bad_answer",
      });
    }
    if (answer.status === 409 && problemCode(answer) === "audit_sequence_gap") {
      const body = answer.body as { expected_seq?: unknown; received_seq?: unknown };
      const expected = Number(body.expected_seq);
      this.log.error(
        {
          service: this.service,
          expected_seq: body.expected_seq,
          received_seq: body.received_seq,
          first_seq: batch.first,
          last_seq: batch.last,
        },
        "outbox.relay_sequence_gap",
      );
      if (Number.isInteger(expected) && expected >= 1 && expected < batch.first) await this.rewind(db, expected);
    }
    throw refused("ingest", answer);
  }

  /** The portal lacks events from `expected` on that we marked published: if we still hold that event, move the
   * watermark back so they are sent again (never forward: nothing is skipped). */
  private async rewind(db: PoolClient, expected: number): Promise<void> {
    const held = await db.query("SELECT 1 FROM risk_outbox WHERE service_seq = $1::bigint", [expected]);
    if (held.rowCount === 0) {
      this.log.error({ service: this.service, expected_seq: expected }, "outbox.relay_gap_unrecoverable");
      return;
    }
    await db.query("UPDATE risk_outbox_state SET published_seq = LEAST(published_seq, $1::bigint)", [expected - 1]);
    this.log.error({ service: this.service, published_seq: expected - 1 }, "outbox.relay_rewound");
  }
}

/** One stored event as the JSON text the portal ingests: the payload (without envelope fields) with `id`,
 * `service` and `service_seq` from the row appended, without parsing it. */
export function eventJson(row: Row, service: string): string {
  const envelope = `"id":${JSON.stringify(row.id)},"service":${JSON.stringify(service)},"service_seq":${Number(row.service_seq)}`;
  const text = row.payload.trim();
  if (text.startsWith("{") && text.endsWith("}")) {
    const inner = text.slice(1, -1).trim();
    return inner ? `{${inner},${envelope}}` : `{${envelope}}`;
  }
  // Not an object (a writer bug): sent as the kit sends an unparsable payload, for the portal to park.
  return `{${envelope},"unparsable_payload":${JSON.stringify(text)}}`;
}

const gauges = new WeakMap<Registry, { gauge: Gauge; pool: { current: Pool } }>();

/** The pending gauge in `registry` (one per registry, reused when the service already declared it). On a scrape it
 * reads the state row (bounded to 1 s) so it is right even when no relay runs here. */
function pendingGauge(registry: Registry, pool: Pool): Gauge {
  const known = gauges.get(registry);
  if (known) {
    known.pool.current = pool;
    return known.gauge;
  }
  const existing = registry.getSingleMetric(PENDING_METRIC);
  if (existing instanceof Gauge) {
    gauges.set(registry, { gauge: existing, pool: { current: pool } });
    return existing;
  }
  const source = { current: pool };
  const gauge = new Gauge({
    name: PENDING_METRIC,
    help: "Audit events in risk's outbox not yet accepted by the portal.",
    registers: [registry],
    async collect() {
      const query = source.current.query<{ pending: string }>(
        "SELECT last_seq - published_seq AS pending FROM risk_outbox_state LIMIT 1",
      );
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<undefined>((resolve) => (timer = setTimeout(resolve, 1_000, undefined)));
      const result = await Promise.race([query.catch(() => undefined), late]);
      clearTimeout(timer);
      const row = result?.rows[0];
      if (row) this.set(Number(row.pending));
    },
  });
  gauges.set(registry, { gauge, pool: source });
  return gauge;
}

async function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  const cancel = new AbortController();
  const watched = promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await Promise.race([watched, sleep(ms, cancel.signal)]);
  cancel.abort();
  return settled;
}
