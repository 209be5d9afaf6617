// The platform seam (owned by riskplat): the relay, the catalog agent and revocations start here.
// This placeholder starts nothing; riskplat replaces it.
import type { Pool } from "pg";
import type { FastifyBaseLogger } from "fastify";
import type { Config } from "../config.ts";

export interface BackgroundContext {
  config: Config;
  pool: Pool;
  log: FastifyBaseLogger;
  /** client id → verified calls since the last report (auth increments it). */
  callers: Map<string, number>;
}

export interface Background {
  stop(): Promise<void>;
}

export async function startBackground(_ctx: BackgroundContext): Promise<Background> {
  return { async stop() {} };
}
