// startBackground as src/main.ts calls it, against real PostgreSQL and a fake portal over real HTTP: the agent
// registers, the relay's events (refused until then) go out as soon as it has, events written by the service's
// own writer are sent right after commit, callers are reported, stop is clean and bounded; without credentials
// nothing starts (said once); ATRIUM_CATALOG_REGISTER=false stops the agent, not the relay.
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";

import type { FastifyBaseLogger } from "fastify";
import type pg from "pg";

import { loadConfig } from "../src/config.ts";
import { transaction } from "../src/db.ts";
import { registry } from "../src/metrics.ts";
import { auditPutMany, outboxWritten, SYSTEM_CONTEXT } from "../src/outbox.ts";
import { relayWake, startBackground } from "../src/platform/index.ts";
import { FakePortal } from "./helpers/fake_portal.ts";
import { captureLog } from "./helpers/log.ts";
import { DATABASE_URL, eventsWrite, outboxReset, publishedSeq, testPool, until } from "./helpers/platform_db.ts";

let portal: FakePortal;
let pool: pg.Pool;

before(async () => {
  portal = await new FakePortal().start();
  pool = await testPool();
});
after(async () => {
  await pool.end();
  await portal.stop();
});
beforeEach(async () => {
  portal.reset();
  portal.heartbeatInterval = 0.05;
  await outboxReset(pool);
});

function configWith(env: Record<string, string> = {}) {
  return loadConfig({
    ATRIUM_ENV: "test",
    RISK_DATABASE_URL: DATABASE_URL,
    ATRIUM_PORTAL_URL: portal.url,
    RISK_CLIENT_ID: "risk",
    RISK_CLIENT_SECRET: "risk-secret",
    RISK_URL: "http://127.0.0.1:8204",
    ...env,
  });
}

async function pendingMetric(): Promise<number> {
  return (await registry.getSingleMetric("atrium_risk_outbox_pending")!.get()).values[0].value;
}

describe("startBackground", () => {
  test("registers, then the events waiting in the outbox go out; new ones right after commit; callers reported", async () => {
    await eventsWrite(pool, 5); // written before the process started: the portal refuses them until registered
    const log = captureLog();
    const callers = new Map<string, number>([["payments", 3]]);
    const started = Date.now();
    const background = await startBackground({ config: configWith(), pool, log: log as unknown as FastifyBaseLogger, callers });
    try {
      await until(() => portal.events.length === 5, 5_000, "the 5 waiting events");
      assert.ok(Date.now() - started < 2_000, "delivery waited for a backoff instead of the registration");
      const registered = portal.services.get("risk");
      assert.ok(registered);
      assert.equal(registered.manifest.base_url, "http://127.0.0.1:8204");
      assert.equal(registered.manifest.part_of, "risk");
      await until(() => portal.calls.get("payments") === 3, 5_000, "the calls report");
      // the service's own writer, in a transaction, then the notify it makes after commit
      const written = await transaction(pool, (tx) =>
        auditPutMany(tx, SYSTEM_CONTEXT, [
          { action: "risk.rules.updated", object: { type: "risk_rules", id: "risk" }, changes: { "thresholds.deny": [80, 70] }, metadata: { version: 2 } },
        ]),
      );
      assert.equal(outboxWritten.listener, relayWake); // the writer's notify wakes the relay (timing: relay tests)
      outboxWritten.notify();
      await until(() => portal.events.length === 6, 3_000, "the new event");
      const event = portal.events[5];
      assert.equal(event.id, written[0].id);
      assert.equal(event.service_seq, 6);
      assert.deepEqual(event.event.changes, { "thresholds.deny": [80, 70] });
      assert.equal(event.event.occurred_at, written[0].occurred_at);
      await until(async () => (await publishedSeq(pool)) === 6, 3_000, "published_seq");
      await until(async () => (await pendingMetric()) === 0, 3_000, "the gauge at 0");
    } finally {
      const stopping = Date.now();
      callers.set("demo", 1);
      await background.stop();
      assert.ok(Date.now() - stopping < 3_000);
    }
    assert.equal(portal.calls.get("demo"), 1); // the last report at stop
    assert.equal(outboxWritten.listener, null);
  });

  test("without credentials nothing starts, and it says so once", async () => {
    const log = captureLog();
    const background = await startBackground({
      config: configWith({ RISK_CLIENT_SECRET: "" }),
      pool,
      log: log as unknown as FastifyBaseLogger,
      callers: new Map(),
    });
    await eventsWrite(pool, 2);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await background.stop();
    assert.equal(portal.registrations, 0);
    assert.equal(portal.ingestRequests, 0);
    assert.equal(portal.tokensIssued, 0);
    const skipped = log.named("platform.background_skipped");
    assert.equal(skipped.length, 1);
    assert.equal(skipped[0].level, "warn");
    assert.equal(await publishedSeq(pool), 0); // the events wait for a process that can relay them
  });

  test("ATRIUM_CATALOG_REGISTER=false: no agent, the relay still delivers (to a service registered otherwise)", async () => {
    portal.registerAs("risk");
    const log = captureLog();
    const background = await startBackground({
      config: configWith({ ATRIUM_CATALOG_REGISTER: "false" }),
      pool,
      log: log as unknown as FastifyBaseLogger,
      callers: new Map([["payments", 1]]),
    });
    try {
      await eventsWrite(pool, 3);
      outboxWritten.notify();
      await until(() => portal.events.length === 3, 5_000, "delivery");
    } finally {
      await background.stop();
    }
    assert.equal(portal.registrations, 0);
    assert.equal(portal.heartbeats.length, 0);
    assert.equal(portal.callReports.length, 0);
    assert.equal(log.named("catalog.registration_off").length, 1);
  });

  test("stop is bounded when the portal hangs", async () => {
    portal.mode = "hang";
    const log = captureLog();
    await eventsWrite(pool, 2);
    const background = await startBackground({ config: configWith(), pool, log: log as unknown as FastifyBaseLogger, callers: new Map() });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stopping = Date.now();
    await background.stop(1_000);
    const took = Date.now() - stopping;
    assert.ok(took < 3_500, `stop took ${took} ms`);
    assert.equal(await publishedSeq(pool), 0);
  });
});
