// The risk service (TypeScript on Node 24, run directly: Node strips the types; `tsc --noEmit` checks them).
//
//   node services/risk/src/main.ts        the web server (+ the outbox relay and catalog agent, src/platform,
//                                         and retention, src/retention.ts)
//   node services/risk/src/migrate.ts     migrations (idempotent, advisory-locked)
//   npm test  (in services/risk)          node --test against RISK_DATABASE_URL (a database it may wipe)
//   npx tsc --noEmit -p services/risk     types
//
// Layers as in the Python apps: config, db (pool, transactions), queries (all SQL), services (writes:
// assess, rules update), selectors (reads), outbox (the one audit writer), errors/problems (RFC 9457),
// auth (jose, JWKS), pagination, metrics, api/* (routes with JSON Schemas), app (buildApp).
//
// How a payment is assessed (src/services.ts, rules as data in risk_rules_version, PUT /api/v1/rules):
// - one transaction per call (1 to 1000 payments), holding a transaction advisory lock per source account (taken
//   in sorted order), so concurrent calls for one account count each other; idempotent on payment_id;
// - the payments of a call are assessed in creation order, as if one after the other; a payment's history is the
//   source's payments not denied: velocity counts those created after (created_at - window) — minute buckets
//   (risk_velocity_bucket) plus an exact scan of the partial minute —, new_payee looks for an earlier payment to
//   the destination, amount_outlier takes percentile_cont over the source's latest 1000 payments in lookback_days
//   (reused for 10 s per process once a source has 100 of them), amount_high compares per currency;
// - one `risk.assessment.decided` audit event per new assessment, through the outbox, in the same transaction.
// Environment: RISK_DATABASE_URL, RISK_PORT (ATRIUM_PORT_BASE + 4), BIND_HOST, JWT_JWKS_URL, JWT_ISSUER,
// ATRIUM_PORTAL_URL, ATRIUM_TOKEN_URL, RISK_CLIENT_ID, RISK_CLIENT_SECRET, ATRIUM_CATALOG_REGISTER, ATRIUM_ENV,
// JWT_REVOCATIONS_URL (default atrium-revocations.json beside the JWKS; "" off), JWT_REVOCATIONS_POLL_SECONDS (2),
// ATRIUM_OUTBOX_RETENTION_DAYS (7).
import { buildApp } from "./app.ts";
import { loadConfig } from "./config.ts";
import { poolCreate } from "./db.ts";
import { revocations as revocationCheck } from "./auth.ts";
import { startBackground } from "./platform/index.ts";
import { Retention } from "./retention.ts";
import { RevocationWatcher } from "./revocations.ts";

const config = loadConfig();
const pool = poolCreate(config.databaseUrl, config.poolSize);
const callers = new Map<string, number>();
const { app } = await buildApp({ config, pool, callers });

// Revoked clients and rotated secrets: polled from the portal, checked in memory on every token.
const watcher = config.revocationsUrl
  ? new RevocationWatcher({ url: config.revocationsUrl, intervalMs: config.revocationsPollSeconds * 1000, log: app.log })
  : null;
if (watcher) {
  revocationCheck.check = (claims) => watcher.refusal(claims);
  await watcher.refresh(); // bounded (2 s): if the portal is not up yet, tokens wait for the first list (503)
  watcher.start();
}

await app.listen({ host: config.bindHost, port: config.port });
const background = await startBackground({ config, pool, log: app.log, callers });
// Deletes published outbox rows and old velocity buckets, hourly (src/retention.ts); needs no machine identity.
const retention = new Retention({ pool, log: app.log, outboxDays: config.outboxRetentionDays }).start();

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  app.log.info({ signal }, "risk.stopping");
  const timer = setTimeout(() => process.exit(1), 15_000);
  timer.unref();
  try {
    await app.close(); // stop accepting; in-flight requests finish
    watcher?.stop();
    await Promise.all([background.stop(), retention.stop()]);
    await pool.end();
  } catch (error) {
    app.log.error({ err: error }, "risk.stop_failed");
    process.exitCode = 1;
  }
  app.log.info("risk.stopped");
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
