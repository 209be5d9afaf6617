// The risk database: one pg Pool per process, a transaction helper, and the mapping of "the database does not
// answer" to 503 `database_unavailable` (never a 500).
import pg from "pg";
import { DatabaseUnavailable } from "./errors.ts";

export type Pool = pg.Pool;
export type Tx = pg.PoolClient;

// int8 (count(*), sums) as JavaScript numbers would lose precision: keep them as strings (pg's default) and
// convert where read. timestamptz are read as text formatted in SQL (microseconds, Z).
export function poolCreate(databaseUrl: string, max = 10): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max,
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30000,
    application_name: "atrium-risk",
    // Bounded waits: a statement (a lock wait included) past 15 s is cancelled and answered 503.
    statement_timeout: 15_000,
    idle_in_transaction_session_timeout: 60_000,
  });
  // An idle client losing its connection (the database restarted) must not crash the process.
  pool.on("error", () => {});
  return pool;
}

// 57014: a statement cancelled by statement_timeout (the database is too slow to answer in time).
const UNAVAILABLE_SQLSTATES = new Set(["57014", "57P01", "57P02", "57P03", "53300", "08000", "08001", "08003", "08004", "08006", "3D000"]);
const UNAVAILABLE_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "ETIMEDOUT", "EPIPE", "ENOENT", "EHOSTUNREACH"]);

/** Whether `error` says the database is away (connection refused/lost/timed out, shutting down, too many clients). */
export function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_ERRNOS.has(code))) return true;
  return /timeout exceeded when trying to connect|Connection terminated|connection timeout|Client has encountered a connection error/i.test(error.message);
}

export function unavailableOr(error: unknown): unknown {
  return isUnavailable(error) ? new DatabaseUnavailable("The risk database does not answer; try again shortly.") : error;
}

/** Run `work` in one transaction on a pooled connection: COMMIT on success, ROLLBACK on any error. */
export async function transaction<T>(pool: pg.Pool, work: (tx: pg.PoolClient) => Promise<T>): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (error) {
    throw unavailableOr(error);
  }
  let broken = false;
  try {
    await client.query("BEGIN");
    const result = await work(client);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    broken = isUnavailable(error);
    if (!broken) await client.query("ROLLBACK").catch(() => { broken = true; });
    throw unavailableOr(error);
  } finally {
    client.release(broken ? true : undefined);
  }
}

/** One query outside a transaction, with the same error mapping. */
export async function query<R extends pg.QueryResultRow = pg.QueryResultRow>(pool: pg.Pool, text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
  try {
    return await pool.query<R>(text, values);
  } catch (error) {
    throw unavailableOr(error);
  }
}
