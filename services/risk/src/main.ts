// The risk service (TypeScript on Node 24, run directly: Node strips the types; `tsc --noEmit` checks them).
//
//   node services/risk/src/main.ts        the web server (+ the outbox relay and catalog agent, src/platform)
//   node services/risk/src/migrate.ts     migrations (idempotent, advisory-locked)
//   npm test  (in services/risk)          node --test against RISK_DATABASE_URL (a database it may wipe)
//   npx tsc --noEmit -p services/risk     types
//
// Layers as in the Python apps: config, db (pool, transactions), queries (all SQL), services (writes:
// assess, rules update), selectors (reads), outbox (the one audit writer), errors/problems (RFC 9457),
// auth (jose, JWKS), pagination, metrics, api/* (routes with JSON Schemas), app (buildApp).
// Environment: RISK_DATABASE_URL, RISK_PORT (ATRIUM_PORT_BASE + 4), BIND_HOST, JWT_JWKS_URL, JWT_ISSUER,
// ATRIUM_PORTAL_URL, ATRIUM_TOKEN_URL, RISK_CLIENT_ID, RISK_CLIENT_SECRET, ATRIUM_CATALOG_REGISTER, ATRIUM_ENV.
import { buildApp } from "./app.ts";
import { loadConfig } from "./config.ts";
import { poolCreate } from "./db.ts";
import { startBackground } from "./platform/index.ts";

const config = loadConfig();
const pool = poolCreate(config.databaseUrl, config.poolSize);
const callers = new Map<string, number>();
const { app } = await buildApp({ config, pool, callers });

await app.listen({ host: config.bindHost, port: config.port });
const background = await startBackground({ config, pool, log: app.log, callers });

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  app.log.info({ signal }, "risk.stopping");
  const timer = setTimeout(() => process.exit(1), 15_000);
  timer.unref();
  try {
    await app.close(); // stop accepting; in-flight requests finish
    await background.stop();
    await pool.end();
  } catch (error) {
    app.log.error({ err: error }, "risk.stop_failed");
    process.exitCode = 1;
  }
  app.log.info("risk.stopped");
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
