// The platform seam: what joins this Node service to the Atrium platform, started by src/main.ts once the server
// listens — the outbox relay (src/platform/relay.ts: audit events to the portal's ingest endpoint) and the catalog
// agent (src/platform/catalog.ts: registration, heartbeats, calls report), both speaking with this process's own
// machine identity (src/platform/token.ts: RISK_CLIENT_ID / RISK_CLIENT_SECRET at ATRIUM_TOKEN_URL).
//
// Wake-up: the outbox writer calls `outboxWritten.notify()` after a commit that wrote events; startBackground points
// its listener at `relayWake()` (in-process, no LISTEN/NOTIFY: the other instances find the rows on their 0.5 s poll,
// and only the one holding the relay lock sends anyway).
//
// As in the kit: without credentials nothing starts (said once in the log; audit events wait in the outbox, counted
// by `atrium_risk_outbox_pending`, until a process with credentials relays them); ATRIUM_CATALOG_REGISTER=false
// turns the agent off, not the relay (the audit guarantee does not depend on the catalog — but the portal accepts a
// service's events only once it is registered, so events then wait until it is, by this or another instance).
import type { Pool } from "pg";
import type { FastifyBaseLogger } from "fastify";
import type { Registry } from "prom-client";

import type { Config } from "../config.ts";
import { registry as serviceRegistry } from "../metrics.ts";
import { outboxWritten } from "../outbox.ts";
import { CatalogAgent, SLUG, packageVersion, webManifest } from "./catalog.ts";
import { PortalClient } from "./http.ts";
import { Relay, relayWake } from "./relay.ts";
import { ClientCredentials } from "./token.ts";

export { relayWake } from "./relay.ts";
export { callerCount } from "./catalog.ts";

export interface BackgroundContext {
  config: Config;
  pool: Pool;
  log: FastifyBaseLogger;
  /** client id → verified calls since the last report (auth increments it, ideally with `callerCount`). */
  callers: Map<string, number>;
  /** Where `atrium_risk_outbox_pending` is (default: the service's registry, src/metrics.ts, which declares it). */
  registry?: Registry;
}

export interface Background {
  relay?: Relay;
  agent?: CatalogAgent;
  /** Stop the agent (a last calls report) and the relay (a last pass), `timeoutMs` at most (default 5 s). */
  stop(timeoutMs?: number): Promise<void>;
}

export async function startBackground(ctx: BackgroundContext): Promise<Background> {
  const { config, log } = ctx;
  if (!config.clientId || !config.clientSecret || !config.tokenUrl || !config.portalUrl) {
    log.warn(
      { slug: SLUG, reason: "no machine credentials (RISK_CLIENT_ID / RISK_CLIENT_SECRET, ATRIUM_TOKEN_URL, ATRIUM_PORTAL_URL)" },
      "platform.background_skipped",
    );
    return { async stop() {} };
  }
  const version = packageVersion();
  const credentials = new ClientCredentials({ tokenUrl: config.tokenUrl, clientId: config.clientId, clientSecret: config.clientSecret });
  const portal = (timeoutMs: number): PortalClient =>
    new PortalClient({ baseUrl: config.portalUrl, credentials, timeoutMs, userAgent: `atrium-risk/${version}` });
  const relay = new Relay({ pool: ctx.pool, client: portal(10_000), log, registry: ctx.registry ?? serviceRegistry }).start();
  // The outbox writer (src/outbox.ts) tells after each commit that wrote events: the relay sends them at once.
  outboxWritten.listener = relayWake;
  let agent: CatalogAgent | undefined;
  if (config.catalogRegister) {
    const interval = Number(process.env.ATRIUM_CATALOG_HEARTBEAT_SECONDS || 10);
    agent = new CatalogAgent({
      client: portal(3_000),
      callers: ctx.callers,
      log,
      manifest: () => webManifest(config.serviceUrl, version),
      interval: Number.isFinite(interval) && interval > 0 ? interval : 10,
      // The portal refuses a service's audit events until it is registered: retry them as soon as it is.
      onRegistered: () => relay.retryNow(),
    }).start();
  } else {
    log.info({ slug: SLUG }, "catalog.registration_off");
  }
  return {
    relay,
    agent,
    async stop(timeoutMs = 5_000) {
      if (outboxWritten.listener === relayWake) outboxWritten.listener = null;
      await Promise.all([agent?.stop(), relay.stop(timeoutMs)]);
    },
  };
}
