// The outbox relay against real PostgreSQL and a fake portal over real HTTP that checks sequences like the real
// one (a gap or a conflict is a 409): in order with no gap, under concurrent writers, across a portal outage, with
// two relays at once (each event sent exactly once), hostile answers (500, garbage, hanging), a lost tail re-sent,
// woken after a commit, a last pass at stop, the pending gauge.
import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";

import type pg from "pg";
import { Registry } from "prom-client";

import { PortalClient } from "../src/platform/http.ts";
import { Relay, relayWake, type RelayOptions } from "../src/platform/relay.ts";
import { ClientCredentials } from "../src/platform/token.ts";
import { FakePortal } from "./helpers/fake_portal.ts";
import { captureLog } from "./helpers/log.ts";
import { eventsWrite, outboxReset, publishedSeq, testPool, until } from "./helpers/platform_db.ts";

let portal: FakePortal;
let pool: pg.Pool;
const relays: Relay[] = [];

before(async () => {
  portal = await new FakePortal().start();
  pool = await testPool(20);
});
after(async () => {
  await pool.end();
  await portal.stop();
});
beforeEach(async () => {
  portal.reset();
  portal.registerAs("risk");
  await outboxReset(pool);
});
afterEach(async () => {
  await Promise.all(relays.splice(0).map((relay) => relay.stop(1_000)));
});

function relayFor(options: Partial<RelayOptions> = {}) {
  const log = captureLog();
  const registry = new Registry();
  const credentials = new ClientCredentials({ tokenUrl: `${portal.url}/api/v1/auth/token`, clientId: "risk", clientSecret: "risk-secret", timeoutMs: 1_000 });
  const client = new PortalClient({ baseUrl: portal.url, credentials });
  const relay = new Relay({ pool, client, log, registry, pollMs: 20, ...options });
  relays.push(relay);
  return { relay, log, registry };
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function pendingMetric(registry: Registry): Promise<number> {
  const metric = await registry.getSingleMetric("atrium_risk_outbox_pending")!.get();
  return metric.values[0].value;
}

describe("Relay", () => {
  test("sends every event once, in service_seq order, batches of at most 500, fields as stored", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i += 1) ids.push(...(await eventsWrite(pool, 200)));
    const { relay } = relayFor();
    relay.start();
    await until(() => portal.events.length === 1_200, 15_000, "1,200 events");
    assert.deepEqual(portal.seqs(), range(1, 1_200));
    assert.deepEqual(portal.events.map((e) => e.id), ids);
    assert.equal(portal.duplicates, 0);
    assert.deepEqual(portal.refusals, []);
    assert.ok(Math.max(...portal.batchSizes) <= 500, `batches ${portal.batchSizes}`);
    assert.deepEqual(portal.batchSizes.slice(0, 3), [500, 500, 200]);
    await until(async () => (await publishedSeq(pool)) === 1_200, 5_000, "published_seq");
    const event = portal.events[0].event;
    assert.equal(event.service, "risk");
    assert.equal(event.action, "risk.rules.updated");
    assert.deepEqual(event.actor, { type: "system", id: "risk", display: "risk" });
    assert.deepEqual(event.metadata, { version: 1, big: "9007199254740993" });
    // the envelope once per event (the stored copies are left out, the row's are sent)
    const raw = portal.ingestRaw[0];
    assert.equal(raw.match(/"service_seq"/g)?.length, 500);
    assert.equal(raw.match(/"id":"evt_/g)?.length, 500);
  });

  test("concurrent writers: everything arrives in order, with no gap", async () => {
    const { relay } = relayFor();
    relay.start();
    const writers = Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 25; i += 1) {
        await eventsWrite(pool, 1 + ((w + i) % 3));
        relayWake();
      }
    });
    await Promise.all(writers);
    const total = Number((await pool.query("SELECT last_seq FROM risk_outbox_state")).rows[0].last_seq);
    assert.ok(total >= 8 * 25);
    await until(() => portal.events.length === total, 15_000, `${total} events`);
    assert.deepEqual(portal.seqs(), range(1, total));
    assert.deepEqual(portal.refusals, []);
    assert.equal(portal.duplicates, 0);
  });

  test("portal down for a while: the events written meanwhile all arrive after, in order", async () => {
    const { relay, log, registry } = relayFor();
    relay.start();
    await eventsWrite(pool, 50);
    await until(() => portal.events.length === 50, 10_000, "the first 50");
    const port = portal.port;
    await portal.stop(); // connection refused from now on
    for (let i = 0; i < 20; i += 1) {
      await eventsWrite(pool, 10);
      relayWake();
    }
    await until(() => relay.failures >= 3, 10_000, "failures while down");
    assert.equal(await publishedSeq(pool), 50);
    assert.equal(await pendingMetric(registry), 200);
    const failed = log.named("outbox.relay_failed");
    assert.equal(failed[0].level, "warn");
    assert.match(String(failed[0].obj.error), /portal|unreachable|fetch failed|ECONNREFUSED/i);
    await portal.start(port);
    await until(() => portal.events.length === 250, 20_000, "all 250 after the outage");
    assert.deepEqual(portal.seqs(), range(1, 250));
    assert.deepEqual(portal.refusals, []);
    await until(async () => (await publishedSeq(pool)) === 250, 5_000, "published_seq 250");
    assert.equal(await pendingMetric(registry), 0);
    await until(() => log.named("outbox.relay_recovered").length === 1, 2_000, "outbox.relay_recovered");
  });

  test("two relays at once (two instances): each event sent exactly once, in order", async () => {
    const a = relayFor({ pollMs: 5, batch: 7 });
    const b = relayFor({ pollMs: 5, batch: 7 });
    a.relay.start();
    b.relay.start();
    for (let i = 0; i < 60; i += 1) {
      await eventsWrite(pool, 1 + (i % 4));
      if (i % 2) a.relay.wake();
      else b.relay.wake();
    }
    const total = Number((await pool.query("SELECT last_seq FROM risk_outbox_state")).rows[0].last_seq);
    await until(() => portal.events.length === total, 15_000, `${total} events`);
    await until(async () => (await publishedSeq(pool)) === total, 5_000, "published_seq");
    assert.deepEqual(portal.seqs(), range(1, total));
    assert.equal(portal.duplicates, 0);
    assert.deepEqual(portal.refusals, []);
    assert.equal(a.relay.published + b.relay.published, total);
  });

  test("500, garbage and a 200 that is no ingest result never move the watermark; delivered once the portal answers", async () => {
    for (const mode of ["500", "garbage"] as const) {
      await outboxReset(pool);
      portal.reset();
      portal.registerAs("risk");
      portal.routeModes.set("/api/v1/audit", mode);
      const { relay, log } = relayFor({ backoffMaxMs: 200 });
      await eventsWrite(pool, 5);
      relay.start();
      await until(() => relay.failures >= 2, 5_000, "failures");
      assert.equal(await publishedSeq(pool), 0);
      assert.match(String(log.named("outbox.relay_failed")[0].obj.error), mode === "500" ? /HTTP 500/ : /HTTP 200 without an ingest result/);
      portal.routeModes.clear();
      await until(() => portal.events.length === 5, 5_000, "delivery");
      await until(async () => (await publishedSeq(pool)) === 5, 5_000, "published_seq");
      await relay.stop(1_000);
    }
  });

  test("a hanging portal: each request ends at its timeout, stop is bounded", async () => {
    portal.routeModes.set("/api/v1/audit", "hang");
    const { relay } = relayFor({ timeoutMs: 300, backoffMaxMs: 100 });
    await eventsWrite(pool, 3);
    relay.start();
    await until(() => relay.failures >= 2, 5_000, "two timeouts");
    assert.equal(await publishedSeq(pool), 0);
    const started = Date.now();
    await relay.stop(800);
    const took = Date.now() - started;
    assert.ok(took < 2_000, `stop took ${took} ms`);
  });

  test("unregistered service (403): retried, and at once when told (the agent registered)", async () => {
    portal.services.clear();
    const { relay } = relayFor({ backoffBaseMs: 20_000, backoffMaxMs: 30_000 });
    await eventsWrite(pool, 4);
    relay.start();
    await until(() => relay.failures === 1, 5_000, "a refusal");
    assert.equal(portal.refusals[0].code, "audit_service_unregistered");
    portal.registerAs("risk");
    relay.wake(); // a wake does not cut a backoff short...
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(portal.events.length, 0);
    relay.retryNow(); // ...a registration does
    await until(() => portal.events.length === 4, 3_000, "delivery after registration");
  });

  test("a portal that lost the tail (409 audit_sequence_gap): logged loudly, the missing events sent again", async () => {
    const { relay, log } = relayFor();
    relay.start();
    await eventsWrite(pool, 10);
    await until(async () => (await publishedSeq(pool)) === 10, 10_000, "10 published");
    portal.loseEventsFrom("risk", 5); // restored from a backup holding 1..4
    await eventsWrite(pool, 2);
    relayWake();
    await until(() => portal.events.length === 12, 10_000, "1..12 at the portal");
    assert.deepEqual(portal.seqs(), range(1, 12));
    const gap = log.named("outbox.relay_sequence_gap");
    assert.equal(gap.length, 1);
    assert.equal(gap[0].level, "error");
    assert.equal(gap[0].obj.expected_seq, 5);
    assert.equal(gap[0].obj.received_seq, 11);
    assert.equal(log.named("outbox.relay_rewound")[0].obj.published_seq, 4);
    await until(async () => (await publishedSeq(pool)) === 12, 5_000, "published_seq 12");
  });

  test("a gap it cannot fill (the rows are gone) is never skipped: it stays pending and says so", async () => {
    const { relay, log } = relayFor({ backoffMaxMs: 100 });
    relay.start();
    await eventsWrite(pool, 6);
    await until(async () => (await publishedSeq(pool)) === 6, 10_000, "6 published");
    await pool.query("DELETE FROM risk_outbox WHERE service_seq <= 6"); // purged after publication
    portal.loseEventsFrom("risk", 3);
    await eventsWrite(pool, 1);
    await until(() => log.named("outbox.relay_gap_unrecoverable").length >= 2, 10_000, "the gap reported");
    assert.equal(await publishedSeq(pool), 6);
    assert.deepEqual(portal.seqs(), [1, 2]);
  });

  test("woken by relayWake() right after a commit, without waiting for the poll", async () => {
    const { relay } = relayFor({ pollMs: 60_000 });
    relay.start();
    await until(() => portal.ingestRequests === 0, 1_000); // the first pass found nothing
    await new Promise((resolve) => setTimeout(resolve, 50));
    await eventsWrite(pool, 3);
    const started = Date.now();
    relayWake();
    await until(() => portal.events.length === 3, 3_000, "delivery after the wake");
    assert.ok(Date.now() - started < 1_000);
  });

  test("stop makes a last pass: events written just before are delivered", async () => {
    const { relay } = relayFor({ pollMs: 60_000 });
    relay.start();
    await new Promise((resolve) => setTimeout(resolve, 100));
    await eventsWrite(pool, 7);
    assert.equal(portal.events.length, 0);
    await relay.stop(2_000);
    assert.deepEqual(portal.seqs(), range(1, 7));
    assert.equal(await publishedSeq(pool), 7);
  });

  test("a payload that is not an object is still sent, for the portal to park", async () => {
    await pool.query("UPDATE risk_outbox_state SET last_seq = 1");
    await pool.query(`INSERT INTO risk_outbox (id, service_seq, payload) VALUES ('evt_odd', 1, '"just a string"')`);
    const { relay } = relayFor();
    relay.start();
    await until(() => portal.events.length === 1, 5_000, "delivery");
    assert.deepEqual(portal.events[0].event, { id: "evt_odd", service: "risk", service_seq: 1, unparsable_payload: '"just a string"' });
  });
});
