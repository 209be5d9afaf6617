// The catalog agent against a fake portal over real HTTP: register → heartbeat (at the portal's interval) →
// register again on a 404 → calls report, carried over after a failed one; bounded callers; a hostile portal
// (500, garbage, hanging) never stops it, and every call is bounded in time.
import assert from "node:assert/strict";
import os from "node:os";
import { after, before, beforeEach, describe, test } from "node:test";

import {
  CatalogAgent,
  MAX_CALLERS,
  callerCount,
  manifestLoad,
  packageVersion,
  takeCallers,
  webManifest,
} from "../src/platform/catalog.ts";
import { PortalClient } from "../src/platform/http.ts";
import { ClientCredentials } from "../src/platform/token.ts";
import { FakePortal } from "./helpers/fake_portal.ts";
import { captureLog } from "./helpers/log.ts";
import { until } from "./helpers/platform_db.ts";

let portal: FakePortal;

before(async () => {
  portal = await new FakePortal().start();
});
after(async () => {
  await portal.stop();
});
beforeEach(() => {
  portal.mode = "ok";
  portal.routeModes.clear();
  portal.failNext.clear();
  portal.services.clear();
  portal.registrations = 0;
  portal.heartbeats = [];
  portal.heartbeatInterval = 10;
  portal.calls.clear();
  portal.callReports = [];
});

function agentFor(callers = new Map<string, number>(), options: { timeoutMs?: number; interval?: number } = {}) {
  const log = captureLog();
  const credentials = new ClientCredentials({ tokenUrl: `${portal.url}/api/v1/auth/token`, clientId: "risk", clientSecret: "risk-secret", timeoutMs: 1_000 });
  const client = new PortalClient({ baseUrl: portal.url, credentials });
  const agent = new CatalogAgent({
    client,
    callers,
    log,
    manifest: () => webManifest("http://127.0.0.1:8204/"),
    timeoutMs: options.timeoutMs ?? 1_000,
    interval: options.interval ?? 10,
  });
  return { agent, log, callers };
}

describe("manifest", () => {
  test("the code's manifest plus version and URLs, as the kit's web_manifest", () => {
    const manifest = webManifest("http://127.0.0.1:8204/");
    const code = manifestLoad();
    assert.equal(manifest.display_name, code.display_name);
    assert.equal(manifest.part_of, "risk");
    assert.equal(manifest.role, "web");
    assert.deepEqual(manifest.dependencies, [{ service: "portal" }, { resource: "postgres" }]);
    assert.equal(manifest.version, packageVersion());
    assert.match(String(manifest.version), /^\d+\.\d+\.\d+/);
    assert.equal(manifest.base_url, "http://127.0.0.1:8204");
    assert.equal(manifest.health_url, "http://127.0.0.1:8204/health/ready");
    assert.equal(manifest.openapi_url, "http://127.0.0.1:8204/api/schema");
  });
});

describe("CatalogAgent", () => {
  test("registers, heartbeats with the kit's body, at the interval the portal answers with", async () => {
    portal.heartbeatInterval = 0.05;
    const { agent, log } = agentFor();
    agent.start();
    try {
      await until(() => portal.heartbeats.length >= 5, 5_000, "5 heartbeats");
    } finally {
      await agent.stop();
    }
    assert.equal(portal.registrations, 1);
    const registered = portal.services.get("risk");
    assert.ok(registered);
    assert.equal(registered.registeredBy, "risk");
    assert.equal(registered.manifest.base_url, "http://127.0.0.1:8204");
    const beat = portal.heartbeats[0];
    assert.equal(beat.instance, `${os.hostname()}:${process.pid}`);
    assert.deepEqual(Object.keys(beat.body).sort(), ["host", "pid", "started_at", "version"]);
    assert.equal(beat.body.pid, process.pid);
    assert.equal(beat.body.version, packageVersion());
    assert.match(String(beat.body.started_at), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
    assert.equal(agent.interval, 0.05);
    assert.equal(log.named("catalog.registered").length, 1);
  });

  test("registers again when the portal lost the service (heartbeat 404)", async () => {
    const { agent, log } = agentFor();
    await agent.cycle();
    assert.equal(portal.registrations, 1);
    portal.forget("risk");
    await assert.rejects(agent.cycle(), /heartbeat: HTTP 404/);
    assert.equal(agent.registered, false);
    await agent.cycle();
    assert.equal(portal.registrations, 2);
    assert.ok(portal.services.has("risk"));
    assert.equal(portal.heartbeats.length, 2);
    assert.equal(log.named("catalog.registered").length, 2);
  });

  test("the loop re-registers by itself after a 404", async () => {
    portal.heartbeatInterval = 0.05;
    const { agent } = agentFor();
    agent.start();
    try {
      await until(() => portal.heartbeats.length >= 2, 5_000, "heartbeats");
      portal.forget("risk");
      await until(() => portal.registrations === 2 && portal.services.has("risk"), 5_000, "a second registration");
      const beats = portal.heartbeats.length;
      await until(() => portal.heartbeats.length > beats + 1, 5_000, "heartbeats after it");
    } finally {
      await agent.stop();
    }
  });

  test("calls report: counted callers sent, a failed report carried over to the next one", async () => {
    const { agent, callers } = agentFor();
    await agent.cycle(); // registered, nothing to report
    assert.equal(portal.callReports.length, 0);
    callers.set("payments", 3);
    callers.set("demo", 1);
    portal.failNext.set("/api/v1/catalog/services/risk/calls", { status: 503, count: 1 });
    await assert.rejects(agent.cycle(), /calls report: HTTP 503/);
    assert.deepEqual(Object.fromEntries(callers), { payments: 3, demo: 1 }); // given back
    callerCount(callers, "payments");
    callerCount(callers, "payments");
    await agent.cycle();
    assert.deepEqual(portal.callReports, [{ payments: 5, demo: 1 }]);
    assert.equal(callers.size, 0);
    await agent.cycle(); // nothing new: no empty report
    assert.equal(portal.callReports.length, 1);
  });

  test("a report refused as invalid (400) is dropped and said, not retried forever", async () => {
    const { agent, callers, log } = agentFor();
    await agent.cycle();
    callers.set("payments", 2);
    portal.failNext.set("/api/v1/catalog/services/risk/calls", { status: 400, count: 1 });
    await agent.cycle();
    assert.equal(callers.size, 0);
    assert.equal(log.named("catalog.calls_report_refused").length, 1);
  });

  test("a report unreachable (portal down) is carried over too", async () => {
    const { agent, callers } = agentFor();
    await agent.cycle();
    callers.set("payments", 7);
    portal.routeModes.set("/api/v1/catalog/services/risk/calls", "down");
    await assert.rejects(agent.cycle());
    assert.equal(callers.get("payments"), 7);
    portal.routeModes.clear();
    await agent.cycle();
    assert.deepEqual(portal.callReports, [{ payments: 7 }]);
  });

  test("stop sends what was counted since the last report", async () => {
    const { agent, callers } = agentFor();
    agent.start();
    await until(() => portal.heartbeats.length >= 1, 5_000, "a heartbeat");
    callers.set("payments", 4);
    await agent.stop();
    assert.deepEqual(portal.callReports, [{ payments: 4 }]);
  });

  test("callers are bounded: at most 1,000 remembered, 1,000 per report, invalid ids dropped", () => {
    const callers = new Map<string, number>();
    for (let i = 0; i < 1_500; i += 1) callerCount(callers, `client-${i}`);
    assert.equal(callers.size, MAX_CALLERS);
    callerCount(callers, "client-0");
    assert.equal(callers.get("client-0"), 2); // a known caller still counts
    callerCount(callers, "risk", "risk"); // this process's own client is no edge
    assert.equal(callers.has("risk"), false);
    // a map filled by someone else, beyond the bound, with invalid entries
    const crowded = new Map<string, number>([["", 1], ["x".repeat(201), 1], ["zero", 0]]);
    for (let i = 0; i < 1_200; i += 1) crowded.set(`c${i}`, 1);
    const taken = takeCallers(crowded);
    assert.equal(taken.size, 1_000);
    assert.equal(crowded.size, 200); // the 3 invalid entries dropped, 200 wait for the next report
    assert.ok(![...taken.keys()].some((k) => k === "" || k.length > 200 || k === "zero"));
  });

  test("a portal answering 500 or garbage never stops the agent; it registers once the portal is back", async () => {
    for (const [route, mode, error] of [
      ["/api/v1/catalog", "500", /registration: HTTP 500/],
      ["/api/v1/catalog", "garbage", /registration: HTTP 200 with a body that is not JSON/],
      ["/api/v1/auth", "500", /Token endpoint refused client risk for audience portal \(500/],
      ["/api/v1/auth", "garbage", /Token endpoint answered 200 with a body that is not JSON/],
    ] as const) {
      portal.services.clear();
      portal.registrations = 0;
      portal.routeModes.set(route, mode);
      const { agent, log } = agentFor();
      agent.start();
      try {
        await until(() => agent.failures >= 1, 5_000, "a failure");
        assert.equal(agent.registered, false);
        portal.routeModes.clear();
        await until(() => agent.registered && portal.heartbeats.length > 0, 8_000, "registration after the outage");
      } finally {
        await agent.stop();
        portal.heartbeats = [];
      }
      const failed = log.named("catalog.agent_failed");
      assert.ok(failed.length >= 1);
      assert.equal(failed[0].level, "warn");
      assert.match(String(failed[0].obj.error), error);
    }
  });

  test("a hanging portal: each call ends at its timeout, and stop returns at once", async () => {
    portal.mode = "hang";
    const { agent } = agentFor(new Map(), { timeoutMs: 200 });
    const started = Date.now();
    await assert.rejects(agent.cycle(), /no answer within 200 ms/);
    const took = Date.now() - started;
    assert.ok(took < 1_500, `took ${took} ms`);
    agent.start();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const stopping = Date.now();
    await agent.stop();
    assert.ok(Date.now() - stopping < 1_000, "stop waited for a hanging call");
  });
});
