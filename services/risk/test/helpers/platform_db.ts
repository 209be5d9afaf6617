// Real PostgreSQL for the platform tests: RISK_DATABASE_URL (a database the tests may wipe), else
// postgresql://postgres@127.0.0.1:5432/atrium_risk_platform_test, created when missing and migrated with the
// service's own migrations.
import { randomUUID } from "node:crypto";

import pg from "pg";

import { migrate } from "../../src/migrate.ts";

export const DATABASE_URL = process.env.RISK_DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/atrium_risk_platform_test";

async function databaseEnsure(url: string): Promise<void> {
  const probe = new pg.Client({ connectionString: url });
  try {
    await probe.connect();
    await probe.end();
    return;
  } catch (error) {
    await probe.end().catch(() => {});
    if ((error as { code?: string }).code !== "3D000") throw error; // anything but "database does not exist"
  }
  // Not `new URL`: libpq forms such as postgresql://postgres@/atrium_risk?host=/socket/dir are no WHATWG URL.
  const match = /^(postgres(?:ql)?:\/\/[^/]*\/)([^?]*)(.*)$/.exec(url);
  if (!match) throw new Error(`RISK_DATABASE_URL names no database: ${url}`);
  const name = decodeURIComponent(match[2]);
  const admin = new pg.Client({ connectionString: `${match[1]}postgres${match[3]}` });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name.replaceAll('"', '""')}"`);
  } catch (error) {
    if ((error as { code?: string }).code !== "42P04") throw error; // created meanwhile
  } finally {
    await admin.end();
  }
}

/** A pool on the migrated test database, its outbox emptied. */
export async function testPool(max = 10): Promise<pg.Pool> {
  await databaseEnsure(DATABASE_URL);
  await migrate(DATABASE_URL);
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max, application_name: "risk-platform-test" });
  await outboxReset(pool);
  return pool;
}

export async function outboxReset(pool: pg.Pool): Promise<void> {
  await pool.query("TRUNCATE risk_outbox");
  await pool.query("UPDATE risk_outbox_state SET last_seq = 0, published_seq = 0");
}

/** Write `count` audit events in one transaction, as the service's writer does (bump last_seq under its row lock,
 * insert the rows); returns their ids. */
export async function eventsWrite(pool: pg.Pool, count: number, action = "risk.rules.updated"): Promise<string[]> {
  const db = await pool.connect();
  try {
    await db.query("BEGIN");
    const bumped = await db.query<{ last_seq: string }>(
      "UPDATE risk_outbox_state SET last_seq = last_seq + $1 RETURNING last_seq",
      [count],
    );
    const last = Number(bumped.rows[0].last_seq);
    const ids: string[] = [];
    const seqs: number[] = [];
    const payloads: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const id = `evt_${randomUUID().replaceAll("-", "").slice(0, 26)}`;
      const seq = last - count + 1 + i;
      ids.push(id);
      seqs.push(seq);
      payloads.push(
        JSON.stringify({
          id,
          service: "risk",
          service_seq: seq,
          occurred_at: new Date().toISOString().replace(/Z$/, "000Z"),
          action,
          outcome: "success",
          actor: { type: "system", id: "risk", display: "risk" },
          object: { type: "risk_rules", id: "risk" },
          request_id: "",
          source_ip: "",
          user_agent: "",
          changes: {},
          metadata: { version: seq, big: 9007199254740993n.toString() },
        }),
      );
    }
    await db.query(
      "INSERT INTO risk_outbox (id, service_seq, payload) SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[])",
      [ids, seqs, payloads],
    );
    await db.query("COMMIT");
    return ids;
  } catch (error) {
    await db.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    db.release();
  }
}

export async function publishedSeq(pool: pg.Pool): Promise<number> {
  const state = await pool.query<{ published_seq: string }>("SELECT published_seq FROM risk_outbox_state");
  return Number(state.rows[0].published_seq);
}

/** Wait until `check` is true (polling every 20 ms), failing after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
