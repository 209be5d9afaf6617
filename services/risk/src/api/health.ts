// /health/live, /health/ready (application/health+json, the kit's shape) and /metrics.
import type { FastifyInstance } from "fastify";
import type { Pool } from "../db.ts";
import { registry } from "../metrics.ts";
import { migrationsPending } from "../migrate.ts";
import { PING } from "../queries.ts";

const HEALTH = "application/health+json";

export function healthRoutes(app: FastifyInstance, pool: Pool): void {
  app.get("/health/live", { schema: { hide: true }, logLevel: "warn" }, async (_request, reply) => {
    reply.header("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0").type(HEALTH);
    return JSON.stringify({ status: "pass", service: "risk" });
  });

  app.get("/health/ready", { schema: { hide: true }, logLevel: "warn" }, async (_request, reply) => {
    const started = performance.now();
    let database: Record<string, unknown>;
    try {
      await pool.query(PING);
      const pending = await migrationsPending(pool);
      database = pending.length ? { status: "fail", output: `migrations not applied: ${pending.join(", ")}` } : { status: "pass" };
    } catch (error) {
      database = { status: "fail", output: `${(error as Error).name}: ${(error as Error).message}`.slice(0, 500) };
    }
    database.latency_ms = Math.round((performance.now() - started) * 100) / 100;
    const ok = database.status === "pass";
    reply.code(ok ? 200 : 503).header("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0").type(HEALTH);
    return JSON.stringify({ status: ok ? "pass" : "fail", service: "risk", checks: { database } });
  });

  app.get("/metrics", { schema: { hide: true }, logLevel: "warn" }, async (_request, reply) => {
    reply.type(registry.contentType);
    return registry.metrics();
  });
}
