// Apply migrations/*.sql in name order, once each, under a session advisory lock (two runs at once: the second
// waits, then finds nothing to do). Idempotent; exit 0. Usage: node src/migrate.ts (RISK_DATABASE_URL).
import { readdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import pg from "pg";

const MIGRATIONS_DIR = fileURLToPath(new URL("../migrations/", import.meta.url));
const LOCK_KEY = 7_215_404_771; // the risk service's migration lock

export async function migrationNames(): Promise<string[]> {
  return (await readdir(MIGRATIONS_DIR)).filter((name) => name.endsWith(".sql")).sort();
}

/** Apply what is missing; return the names applied. */
export async function migrate(databaseUrl: string, log: (line: string) => void = () => {}): Promise<string[]> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: "atrium-risk-migrate" });
  await client.connect();
  const applied: string[] = [];
  try {
    await client.query("SELECT pg_advisory_lock($1)", [LOCK_KEY]);
    await client.query(
      "CREATE TABLE IF NOT EXISTS risk_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    const done = new Set((await client.query<{ name: string }>("SELECT name FROM risk_migrations")).rows.map((r) => r.name));
    for (const name of await migrationNames()) {
      if (done.has(name)) continue;
      const sql = await readFile(MIGRATIONS_DIR + name, "utf8");
      await client.query("BEGIN");
      try {
        await client.query(sql);
        await client.query("INSERT INTO risk_migrations (name) VALUES ($1)", [name]);
        await client.query("COMMIT");
      } catch (error) {
        await client.query("ROLLBACK");
        throw new Error(`migration ${name} failed: ${(error as Error).message}`, { cause: error });
      }
      applied.push(name);
      log(`applied ${name}`);
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [LOCK_KEY]).catch(() => {});
    await client.end();
  }
  return applied;
}

/** Whether every migration is applied (readiness). */
export async function migrationsPending(db: { query: pg.Pool["query"] }): Promise<string[]> {
  const rows = await db.query<{ name: string }>("SELECT name FROM risk_migrations").catch((error: { code?: string }) => {
    if (error.code === "42P01") return { rows: [] as { name: string }[] };
    throw error;
  });
  const done = new Set(rows.rows.map((r) => r.name));
  return (await migrationNames()).filter((name) => !done.has(name));
}

if (import.meta.main) {
  const url = process.env.RISK_DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/atrium_risk";
  try {
    const applied = await migrate(url, (line) => console.log(JSON.stringify({ service: "risk", event: "migrate", detail: line })));
    console.log(JSON.stringify({ service: "risk", event: "migrate.done", applied: applied.length }));
  } catch (error) {
    console.error(JSON.stringify({ service: "risk", event: "migrate.failed", error: String((error as Error).message) }));
    process.exit(1);
  }
}
