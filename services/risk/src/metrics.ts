// Prometheus metrics (prom-client): process metrics and the risk service's own, on one registry.
import client from "prom-client";
import type { Pool } from "./db.ts";
import { OUTBOX_PENDING } from "./queries.ts";

export const registry = new client.Registry();
registry.setDefaultLabels({ service: "risk" });
client.collectDefaultMetrics({ register: registry });

export const httpLatency = new client.Histogram({
  name: "atrium_http_request_duration_seconds",
  help: "Time from request in to response out, by route.",
  labelNames: ["method", "view", "status"],
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});

export const assessmentsTotal = new client.Counter({
  name: "atrium_risk_assessments_total",
  help: "Payments assessed (new assessments only, not idempotent replays), by decision.",
  labelNames: ["decision"],
  registers: [registry],
});

export const assessmentSeconds = new client.Histogram({
  name: "atrium_risk_assessment_seconds",
  help: "Time to assess one call (a payment or a batch), transaction included.",
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  registers: [registry],
});

export const retentionDeleted = new client.Counter({
  name: "atrium_risk_retention_deleted_total",
  help: "Rows deleted by retention (src/retention.ts), by table: published outbox rows and velocity minute buckets.",
  labelNames: ["table"],
  registers: [registry],
});

let pendingPool: Pool | null = null;

/** Outbox rows not yet accepted by the portal: read from the database at each scrape. */
export const outboxPending = new client.Gauge({
  name: "atrium_risk_outbox_pending",
  help: "Audit events written to the outbox and not yet accepted by the portal.",
  registers: [registry],
  async collect() {
    if (!pendingPool) return;
    try {
      const row = (await pendingPool.query(OUTBOX_PENDING)).rows[0];
      if (row) this.set(row.pending);
    } catch {
      // the database is away: keep the last value
    }
  },
});

export function metricsBind(pool: Pool): void {
  pendingPool = pool;
}
