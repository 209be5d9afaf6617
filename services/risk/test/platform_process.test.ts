// The real thing in a real process: `node src/main.ts` against real PostgreSQL, a JWKS server and the fake portal.
// It registers and heartbeats; rules changed while the portal is stopped are audited, and their events arrive after
// it returns, in order, with no gap; the calls it served are reported per caller; SIGTERM stops it cleanly. It runs
// with ATRIUM_LOG_FORMAT=console, as `make up` starts it: its lines are readable ones, not JSON.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import type pg from "pg";

import { DEFAULT_RULES, ISSUER, jwksServe, keysNew, rulesWith, tokenMake, type Keys } from "./helpers.ts";
import { FakePortal } from "./helpers/fake_portal.ts";
import { DATABASE_URL, publishedSeq, testPool, until } from "./helpers/platform_db.ts";

const MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));

let portal: FakePortal;
let pool: pg.Pool;
let keys: Keys;
let jwks: Awaited<ReturnType<typeof jwksServe>>;
let child: ChildProcess | undefined;
let output = "";
let base = "";

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

before(async () => {
  portal = await new FakePortal().start();
  portal.heartbeatInterval = 0.2;
  pool = await testPool();
  await pool.query("DELETE FROM risk_rules_version WHERE version > 1"); // the seeded rules (deny 80) are current
  keys = await keysNew("process-key");
  jwks = await jwksServe([keys]);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  child = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH,
      ATRIUM_ENV: "test",
      ATRIUM_LOG_FORMAT: "console",
      ATRIUM_LOG_COLOR: "0",
      RISK_DATABASE_URL: DATABASE_URL,
      RISK_PORT: String(port),
      BIND_HOST: "127.0.0.1",
      RISK_URL: base,
      JWT_JWKS_URL: jwks.url,
      JWT_ISSUER: ISSUER,
      ATRIUM_PORTAL_URL: portal.url,
      RISK_CLIENT_ID: "risk",
      RISK_CLIENT_SECRET: "risk-secret",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  await until(async () => {
    try {
      return (await fetch(`${base}/health/ready`)).status === 200;
    } catch {
      return false;
    }
  }, 20_000, `the risk service at ${base}`).catch((error: Error) => {
    throw new Error(`${error.message}\n${output.slice(-3000)}`);
  });
});

after(async () => {
  if (child && child.exitCode === null) child.kill("SIGKILL");
  await pool.end();
  await portal.stop();
  await new Promise((resolve) => jwks.server.close(resolve));
});

async function rulesPut(deny: number): Promise<Response> {
  const token = await tokenMake({ keys, sub: "ops-console", scope: "risk:read risk:write" });
  return fetch(`${base}/api/v1/rules`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ rules: rulesWith((rules) => (rules.thresholds.deny = deny), DEFAULT_RULES) }),
  });
}

describe("the risk process", () => {
  test("registers its manifest and heartbeats", async () => {
    await until(() => portal.services.has("risk") && portal.heartbeats.length >= 2, 10_000, "registration and heartbeats");
    const manifest = portal.services.get("risk")!.manifest;
    assert.equal(manifest.base_url, base);
    assert.equal(manifest.health_url, `${base}/health/ready`);
    assert.equal(portal.heartbeats[0].body.pid, child!.pid);
  });

  test("ATRIUM_LOG_FORMAT=console: one readable line per event, no JSON", async () => {
    await until(() => output.includes("catalog.registered"), 10_000, "the catalog.registered line");
    assert.match(output, /^INFO {4}catalog\.registered slug=risk instance=\S+ version=\S+$/m);
    assert.deepEqual(output.split("\n").filter((line) => line.startsWith("{")), []);
  });

  test("rules changed while the portal is stopped: audited, delivered after it returns, in order, no gap", async () => {
    const before = (await pool.query("SELECT last_seq FROM risk_outbox_state")).rows[0].last_seq as string;
    const first = Number(before);
    for (const deny of [81, 82]) assert.equal((await rulesPut(deny)).status, 200);
    await until(() => portal.seqs().length >= first + 2, 10_000, "the first changes at the portal");
    const port = portal.port;
    await portal.stop();
    for (let deny = 83; deny <= 92; deny += 1) assert.equal((await rulesPut(deny)).status, 200);
    const last = first + 12;
    assert.equal(Number((await pool.query("SELECT last_seq FROM risk_outbox_state")).rows[0].last_seq), last);
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // the relay fails and backs off meanwhile
    assert.ok((await publishedSeq(pool)) < last);
    await portal.start(port);
    await until(() => portal.seqs().length === last, 40_000, `events 1..${last} at the portal`);
    assert.deepEqual(portal.seqs(), Array.from({ length: last }, (_, i) => i + 1));
    assert.deepEqual(portal.refusals.filter((r) => r.code.startsWith("audit_sequence")), []);
    const changes = portal.events.slice(first).map((e) => e.event.changes);
    const expected = [81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92].map((deny, i) => ({ "thresholds.deny": [i === 0 ? 80 : deny - 1, deny] }));
    assert.deepEqual(changes, expected);
    const stored = (await pool.query("SELECT id FROM risk_outbox ORDER BY service_seq")).rows.map((r) => r.id);
    assert.deepEqual(portal.events.map((e) => e.id), stored);
    await until(async () => (await publishedSeq(pool)) === last, 5_000, "published_seq");
  });

  test("the calls it served are reported per caller", async () => {
    const token = await tokenMake({ keys, sub: "payments", scope: "risk:read" });
    for (let i = 0; i < 3; i += 1) {
      assert.equal((await fetch(`${base}/api/v1/rules`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
    }
    await until(() => (portal.calls.get("payments") ?? 0) >= 3, 10_000, "payments in a calls report");
    assert.ok((portal.calls.get("ops-console") ?? 0) >= 12);
  });

  test("SIGTERM: a change made just before is delivered, and the process exits 0", async () => {
    assert.equal((await rulesPut(70)).status, 200);
    const exited = new Promise<number | null>((resolve) => child!.once("exit", (code) => resolve(code)));
    child!.kill("SIGTERM");
    const started = Date.now();
    const code = await exited;
    assert.equal(code, 0, output.slice(-2000));
    assert.ok(Date.now() - started < 10_000);
    const last = Number((await pool.query("SELECT last_seq FROM risk_outbox_state")).rows[0].last_seq);
    assert.equal(await publishedSeq(pool), last);
    assert.equal(portal.seqs().at(-1), last);
    await until(() => output.includes("risk.stopped"), 5_000, "the risk.stopped line, logged as the process ends");
    assert.match(output, /^INFO {4}risk\.stopping signal=SIGTERM$/m);
    assert.match(output, /^INFO {4}risk\.stopped$/m);
  });
});
