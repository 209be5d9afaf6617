import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import { harness, outboxEvents, payment, rulesOnly, type Harness, type Json } from "./helpers.ts";

let h: Harness;
let base: string;
before(async () => {
  h = await harness();
  await h.app.listen({ host: "127.0.0.1", port: 0 });
  base = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
});
after(async () => { await h.close(); });
beforeEach(async () => { await h.reset(); });

async function rulesSet(rules: Json): Promise<void> {
  const response = await h.app.inject({ method: "PUT", url: "/api/v1/rules", headers: await h.auth(), payload: { rules } });
  assert.equal(response.statusCode, 200, response.body);
}

async function assess(body: Json): Promise<Json> {
  const response = await h.app.inject({ method: "POST", url: "/api/v1/assessments", headers: await h.auth({ scope: "risk:assess" }), payload: body });
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

async function decided(): Promise<Json[]> {
  return (await outboxEvents(h.pool)).filter((e) => e.action === "risk.assessment.decided");
}

const codes = (a: Json): string[] => a.reasons.map((r: Json) => r.code).sort();

describe("assessments", () => {
  test("one payment: an assessment with score, decision, reasons, rules version; one audit event", async () => {
    const p = payment({ source_account: "acc_one", destination_account: "acc_new" });
    const a = await assess(p);
    assert.match(a.id, /^rsk_[0-9a-z]{26}$/);
    assert.equal(a.payment_id, p.payment_id);
    assert.equal(a.score, 10);
    assert.equal(a.decision, "allow");
    assert.deepEqual(codes(a), ["new_payee"]);
    assert.equal(a.reasons[0].weight, 10);
    assert.equal(a.rules_version, 1);
    assert.match(a.assessed_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const events = await outboxEvents(h.pool);
    assert.equal(events.length, 1);
    assert.equal(events[0].action, "risk.assessment.decided");
    assert.deepEqual(events[0].object, { type: "payment", id: p.payment_id });
    assert.deepEqual(events[0].metadata, { assessment_id: a.id, score: 10, decision: "allow", reasons: ["new_payee"], rules_version: 1 });
    assert.deepEqual(events[0].actor, { type: "client", id: "cli_test", display: "cli_test" });
  });

  test("idempotent on payment_id: the stored assessment back, not counted again, no second event", async () => {
    await rulesSet(rulesOnly((r) => { r.velocity = [{ name: "tiny", window_seconds: 3600, max_count: 1, max_amount: null, weight: 90 }]; }));
    const p = payment({ source_account: "acc_idem" });
    const first = await assess(p);
    const again = await assess(p);
    assert.deepEqual(again, first);
    assert.equal(first.decision, "allow");
    const batch = await assess({ payments: [p, p] });
    assert.deepEqual(batch.assessments, [first, first]);
    assert.equal((await decided()).length, 1);
    const second = await assess(payment({ source_account: "acc_idem" }));
    assert.equal(second.decision, "deny", "the second distinct payment is the one over max_count 1");
  });

  test("velocity count under 20 concurrent requests from one account (max_count 10): exactly 10 allowed", async () => {
    await rulesSet(rulesOnly((r) => { r.velocity = [{ name: "burst", window_seconds: 60, max_count: 10, max_amount: null, weight: 60 }]; }));
    const headers = { "content-type": "application/json", authorization: `Bearer ${await h.token({ scope: "risk:assess" })}` };
    const replies = await Promise.all(Array.from({ length: 20 }, () =>
      fetch(`${base}/api/v1/assessments`, { method: "POST", headers, body: JSON.stringify(payment({ source_account: "acc_burst" })) })
        .then(async (r) => { assert.equal(r.status, 200); return (await r.json()) as Json; })));
    const allowed = replies.filter((a) => a.decision === "allow");
    const flagged = replies.filter((a) => a.decision === "review");
    assert.equal(allowed.length, 10);
    assert.equal(flagged.length, 10);
    for (const a of flagged) assert.deepEqual(codes(a), ["velocity_count"]);
    // Another account is not affected.
    assert.equal((await assess(payment({ source_account: "acc_other" }))).decision, "allow");
  });

  test("velocity windows slide: payments older than the window do not count", async () => {
    await rulesSet(rulesOnly((r) => { r.velocity = [{ name: "hour", window_seconds: 3600, max_count: 2, max_amount: null, weight: 90 }]; }));
    const now = Date.now();
    const at = (minutesAgo: number) => new Date(now - minutesAgo * 60_000).toISOString();
    assert.equal((await assess(payment({ source_account: "acc_w", created_at: at(120) }))).decision, "allow");
    assert.equal((await assess(payment({ source_account: "acc_w", created_at: at(90) }))).decision, "allow");
    // Two hours ago and 90 minutes ago are outside the hour before now: these two are under max_count 2.
    assert.equal((await assess(payment({ source_account: "acc_w", created_at: at(1) }))).decision, "allow");
    assert.equal((await assess(payment({ source_account: "acc_w", created_at: at(0) }))).decision, "allow");
    assert.equal((await assess(payment({ source_account: "acc_w" }))).decision, "deny");
  });

  test("velocity windows to the second, across minute buckets; the buckets match the payments", async () => {
    await rulesSet(rulesOnly((r) => { r.velocity = [{ name: "ninety", window_seconds: 90, max_count: 4, max_amount: 2000, weight: 90 }]; }));
    const now = Date.now();
    const at = (secondsAgo: number) => new Date(now - secondsAgo * 1000).toISOString();
    for (const [secondsAgo, amount] of [[600, 900], [100, 900], [89, 300], [61, 100], [30, 300]]) {
      assert.equal((await assess(payment({ source_account: "acc_sec", created_at: at(secondsAgo), amount }))).decision, "allow");
    }
    // In the 90 s before now: 89, 61 and 30 s ago; 100 s ago is out. With this one, 4 payments: allowed.
    assert.equal((await assess(payment({ source_account: "acc_sec", created_at: at(0), amount: 1 }))).decision, "allow");
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_sec", created_at: at(0), amount: 1 }))), ["velocity_count"]);
    // 95 s ago: 100 s ago is in its window too (and everything assessed after it): 6 payments, 2101.
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_sec", created_at: at(95), amount: 500 }))), ["velocity_amount", "velocity_count"]);
    const mismatch = await h.pool.query(`SELECT * FROM (SELECT source_account, date_trunc('minute', payment_created_at) AS minute, count(*)::int AS count, sum(amount) AS amount
        FROM risk_assessment WHERE decision <> 'deny' GROUP BY 1, 2) a FULL JOIN risk_velocity_bucket b USING (source_account, minute)
      WHERE a.count IS DISTINCT FROM b.count OR a.amount IS DISTINCT FROM b.amount`);
    assert.deepEqual(mismatch.rows, []);
  });

  test("velocity amount, and a batch counts its own earlier payments (denied ones do not count)", async () => {
    await rulesSet(rulesOnly((r) => { r.velocity = [{ name: "day", window_seconds: 86400, max_count: null, max_amount: 10_000, weight: 80 }]; }));
    const batch = await assess({ payments: [
      payment({ source_account: "acc_amt", amount: 4000 }),
      payment({ source_account: "acc_amt", amount: 4000 }),
      payment({ source_account: "acc_amt", amount: 4000 }), // 12000 > 10000: denied, not counted
      payment({ source_account: "acc_amt", amount: 2000 }), // 10000: allowed
      payment({ source_account: "acc_amt", amount: 1 }),
    ] });
    assert.deepEqual(batch.assessments.map((a: Json) => a.decision), ["allow", "allow", "deny", "allow", "deny"]);
    assert.deepEqual(codes(batch.assessments[2]), ["velocity_amount"]);
    assert.equal((await decided()).length, 5);
    assert.deepEqual((await outboxEvents(h.pool)).map((e) => e.service_seq), [1, 2, 3, 4, 5, 6]);
  });

  test("a batch answers in the request's order and assesses in creation order", async () => {
    await rulesSet(rulesOnly((r) => { r.velocity = [{ name: "b", window_seconds: 86400, max_count: 1, max_amount: null, weight: 90 }]; }));
    const late = payment({ source_account: "acc_ord", created_at: new Date(Date.now() - 1000).toISOString() });
    const early = payment({ source_account: "acc_ord", created_at: new Date(Date.now() - 5000).toISOString() });
    const batch = await assess({ payments: [late, early] });
    assert.deepEqual(batch.assessments.map((a: Json) => a.payment_id), [late.payment_id, early.payment_id]);
    assert.deepEqual(batch.assessments.map((a: Json) => a.decision), ["deny", "allow"]);
  });

  test("new payee: only the first payment to a destination (per source) is new", async () => {
    await rulesSet(rulesOnly((r) => { r.new_payee = { enabled: true, weight: 50 }; }));
    const first = await assess(payment({ source_account: "acc_p", destination_account: "acc_shop" }));
    assert.equal(first.decision, "review");
    assert.deepEqual(codes(first), ["new_payee"]);
    const second = await assess(payment({ source_account: "acc_p", destination_account: "acc_shop" }));
    assert.deepEqual(codes(second), []);
    assert.equal(second.decision, "allow");
    const otherSource = await assess(payment({ source_account: "acc_q", destination_account: "acc_shop" }));
    assert.deepEqual(codes(otherSource), ["new_payee"]);
    const batch = await assess({ payments: [payment({ source_account: "acc_p", destination_account: "acc_x" }), payment({ source_account: "acc_p", destination_account: "acc_x" })] });
    assert.deepEqual(batch.assessments.map((a: Json) => codes(a)), [["new_payee"], []]);
  });

  test("amount outlier: above the percentile of the source's history, only with min_history", async () => {
    await rulesSet(rulesOnly((r) => { r.amount_outlier = { enabled: true, percentile: 90, lookback_days: 30, min_history: 10, weight: 60 }; }));
    const history = Array.from({ length: 9 }, (_, i) => payment({ source_account: "acc_o", amount: 100 + i * 10 }));
    await assess({ payments: history });
    // 9 past payments < min_history 10: a big amount is not an outlier yet.
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_o", amount: 150 }))), []);
    // 10 past payments (100..180 and 150): p90 = 180 - a bit; 5000 is an outlier, 170 is not.
    const big = await assess(payment({ source_account: "acc_o", amount: 5000 }));
    assert.deepEqual(codes(big), ["amount_outlier"]);
    assert.equal(big.decision, "review");
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_o", amount: 170 }))), []);
    // Another source's history is its own.
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_o2", amount: 5000 }))), []);
  });

  test("amount_high per currency, and the score adds up to a deny", async () => {
    await rulesSet(rulesOnly((r) => {
      r.amount_high = { EUR: { amount: 100_000, weight: 60 }, USD: { amount: 50_000, weight: 30 } };
      r.new_payee = { enabled: true, weight: 30 };
    }));
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_h", destination_account: "d1", amount: 100_000 }))), ["new_payee"]);
    const high = await assess(payment({ source_account: "acc_h", destination_account: "d1", amount: 100_001 }));
    assert.deepEqual(codes(high), ["amount_high"]);
    assert.equal(high.decision, "review");
    const both = await assess(payment({ source_account: "acc_h", destination_account: "d2", amount: 200_000 }));
    assert.equal(both.score, 90);
    assert.equal(both.decision, "deny");
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_h", destination_account: "d1", amount: 60_000, currency: "USD" }))), ["amount_high"]);
    assert.deepEqual(codes(await assess(payment({ source_account: "acc_h", destination_account: "d1", amount: 9_999_999, currency: "GBP" }))), []);
  });

  test("a batch of 1000 in one call; list, filter, page and get", async () => {
    const payments = Array.from({ length: 1000 }, (_, i) => payment({ source_account: `acc_b${i % 40}`, destination_account: `acc_d${i % 7}`, amount: 100 + i }));
    const started = performance.now();
    const batch = await assess({ payments });
    const elapsed = performance.now() - started;
    assert.equal(batch.assessments.length, 1000);
    assert.equal(new Set(batch.assessments.map((a: Json) => a.id)).size, 1000);
    console.log(`# batch of 1000 assessed in ${elapsed.toFixed(0)} ms`);
    assert.equal((await outboxEvents(h.pool)).length, 1000);
    const headers = await h.auth({ scope: "risk:read" });
    const page = (await h.app.inject({ url: "/api/v1/assessments?limit=3", headers })).json();
    assert.equal(page.results.length, 3);
    assert.ok(page.results[0].id > page.results[1].id, "newest first");
    const next = new URL(page.next);
    const page2 = (await h.app.inject({ url: next.pathname + next.search, headers })).json();
    assert.ok(page2.results[0].id < page.results[2].id);
    const byPayment = (await h.app.inject({ url: `/api/v1/assessments?payment_id=${payments[5].payment_id}`, headers })).json();
    assert.deepEqual(byPayment.results.map((a: Json) => a.payment_id), [payments[5].payment_id]);
    const denied = (await h.app.inject({ url: "/api/v1/assessments?decision=deny", headers })).json();
    assert.deepEqual(denied.results, []);
    const one = await h.app.inject({ url: `/api/v1/assessments/${batch.assessments[7].id}`, headers });
    assert.equal(one.statusCode, 200);
    assert.deepEqual(one.json(), batch.assessments[7]);
    for (const id of ["rsk_00000000000000000000000000", "nope", "rlv_00000000000000000000000000"]) {
      const missing = await h.app.inject({ url: `/api/v1/assessments/${id}`, headers });
      assert.equal(missing.statusCode, 404);
      assert.equal(missing.json().code, "not_found");
    }
  });

  test("100-payment batches are fast (set-based SQL)", async () => {
    const times: number[] = [];
    for (let round = 0; round < 10; round++) {
      const payments = Array.from({ length: 100 }, () => payment({ source_account: `acc_f${Math.floor(Math.random() * 40)}`, destination_account: `acc_g${Math.floor(Math.random() * 40)}`, amount: 1 + Math.floor(Math.random() * 10_000) }));
      const started = performance.now();
      await assess({ payments });
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    console.log(`# 100-payment batch: median ${times[5].toFixed(1)} ms, max ${times[9].toFixed(1)} ms (HTTP in-process, auth, SQL, audit)`);
    assert.ok(times[5] < 400, `median ${times[5]} ms`);
  });
});
