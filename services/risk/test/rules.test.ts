import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { DEFAULT_RULES, harness, outboxEvents, rulesWith, type Harness, type Json } from "./helpers.ts";

let h: Harness;
before(async () => { h = await harness(); });
after(async () => { await h.close(); });
beforeEach(async () => { await h.reset(); });

async function put(rules: Json, headers: Record<string, string> = {}) {
  return h.app.inject({ method: "PUT", url: "/api/v1/rules", headers: { ...(await h.auth({ sub: "cli_ops" })), ...headers }, payload: { rules } });
}

describe("rules", () => {
  test("GET answers version 1, the seeded defaults, with an ETag", async () => {
    const response = await h.app.inject({ url: "/api/v1/rules", headers: await h.auth() });
    assert.equal(response.statusCode, 200);
    const body = response.json();
    assert.equal(body.version, 1);
    assert.match(body.id, /^rlv_[0-9a-z]{26}$/);
    assert.deepEqual(body.rules, DEFAULT_RULES);
    assert.equal(body.created_by.type, "system");
    assert.match(body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.equal(response.headers.etag, '"1"');
  });

  test("PUT makes a new version, audited with before and after of each changed leaf", async () => {
    const rules = rulesWith((r) => { r.thresholds.review = 40; r.velocity[0].max_count = 30; r.amount_high.USD = { amount: 500000, weight: 50 }; });
    const response = await put(rules, { "if-match": '"1"', "user-agent": "ops-console/1" });
    assert.equal(response.statusCode, 200, response.body);
    const body = response.json();
    assert.equal(body.version, 2);
    assert.deepEqual(body.rules, rules);
    assert.deepEqual(body.created_by, { type: "client", id: "cli_ops", display: "cli_ops" });
    assert.equal(response.headers.etag, '"2"');
    const events = await outboxEvents(h.pool);
    assert.equal(events.length, 1);
    const [event] = events;
    assert.equal(event.action, "risk.rules.updated");
    assert.equal(event.service, "risk");
    assert.equal(event.service_seq, 1);
    assert.match(event.id, /^evt_[0-9a-z]{26}$/);
    assert.match(event.occurred_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.deepEqual(event.object, { type: "risk_rules", id: "risk" });
    assert.deepEqual(event.actor, { type: "client", id: "cli_ops", display: "cli_ops" });
    assert.equal(event.user_agent, "ops-console/1");
    assert.equal(event.request_id, response.headers["x-request-id"]);
    assert.deepEqual(event.changes, {
      "thresholds.review": [50, 40],
      "velocity[0].max_count": [1000, 30],
      "amount_high.USD.amount": [null, 500000],
      "amount_high.USD.weight": [null, 50],
    });
    assert.equal(event.metadata.version, 2);
    const current = await h.app.inject({ url: "/api/v1/rules", headers: await h.auth() });
    assert.equal(current.json().version, 2);
  });

  test("PUT with a stale If-Match is 412 version_mismatch and changes nothing", async () => {
    assert.equal((await put(rulesWith((r) => { r.thresholds.deny = 90; }), { "if-match": '"1"' })).statusCode, 200);
    const stale = await put(rulesWith((r) => { r.thresholds.deny = 95; }), { "if-match": '"1"' });
    assert.equal(stale.statusCode, 412);
    assert.equal(stale.json().code, "version_mismatch");
    assert.equal(stale.json().current_version, 2);
    assert.match(String(stale.headers["content-type"]), /^application\/problem\+json/);
    const wrong = await put(rulesWith((r) => { r.thresholds.deny = 95; }), { "if-match": "7" });
    assert.equal(wrong.statusCode, 412);
    const current = await h.app.inject({ url: "/api/v1/rules", headers: await h.auth() });
    assert.equal(current.json().rules.thresholds.deny, 90);
    assert.equal((await outboxEvents(h.pool)).length, 1);
  });

  test("PUT of the current rules is a no-op: same version, no event", async () => {
    const response = await put(structuredClone(DEFAULT_RULES));
    assert.equal(response.statusCode, 200);
    assert.equal(response.json().version, 1);
    assert.equal((await outboxEvents(h.pool)).length, 0);
  });

  test("absurd or inconsistent rules are 400 validation_error naming the field", async () => {
    const cases: [Json, string, string][] = [
      [rulesWith((r) => { r.thresholds.review = 0; }), "rules.thresholds.review", "min_value"],
      [rulesWith((r) => { r.thresholds.deny = 101; }), "rules.thresholds.deny", "max_value"],
      [rulesWith((r) => { r.thresholds.review = 90; r.thresholds.deny = 80; }), "rules.thresholds.review", "invalid"],
      [rulesWith((r) => { r.velocity[0].window_seconds = 0; }), "rules.velocity[0].window_seconds", "min_value"],
      [rulesWith((r) => { r.velocity[1].window_seconds = 91 * 86400; }), "rules.velocity[1].window_seconds", "max_value"],
      [rulesWith((r) => { r.velocity[0].weight = 1000; }), "rules.velocity[0].weight", "max_value"],
      [rulesWith((r) => { r.velocity[1].name = "burst"; }), "rules.velocity[1].name", "unique"],
      [rulesWith((r) => { r.velocity[0].max_count = null; }), "rules.velocity[0]", "invalid"],
      [rulesWith((r) => { r.amount_outlier.percentile = 100; }), "rules.amount_outlier.percentile", "max_value"],
      [rulesWith((r) => { r.amount_outlier.percentile = 10; }), "rules.amount_outlier.percentile", "min_value"],
      [rulesWith((r) => { r.amount_high.eur = { amount: 1, weight: 1 }; }), "rules.amount_high.eur", "invalid"],
      [rulesWith((r) => { r.new_payee.surprise = true; }), "rules.new_payee.surprise", "unknown_field"],
      [rulesWith((r) => { delete r.thresholds; }), "rules.thresholds", "required"],
      [rulesWith((r) => { r.new_payee.enabled = "yes"; }), "rules.new_payee.enabled", "invalid"],
    ];
    for (const [rules, field, code] of cases) {
      const response = await put(rules);
      assert.equal(response.statusCode, 400, `${field}: ${response.body}`);
      const body = response.json();
      assert.equal(body.code, "validation_error");
      assert.ok(body.errors.some((e: Json) => e.field === field && e.code === code), `${field} ${code}: ${JSON.stringify(body.errors)}`);
    }
    assert.equal((await outboxEvents(h.pool)).length, 0);
    const malformed = await put(structuredClone(DEFAULT_RULES), { "if-match": "version two" });
    assert.equal(malformed.statusCode, 400);
    assert.equal(malformed.json().code, "validation_error");
  });

  test("versions are listed newest first and cursor-paged", async () => {
    for (const deny of [81, 82, 83]) assert.equal((await put(rulesWith((r) => { r.thresholds.deny = deny; }))).statusCode, 200);
    const first = await h.app.inject({ url: "/api/v1/rules/versions?limit=2", headers: await h.auth() });
    assert.equal(first.statusCode, 200);
    const page = first.json();
    assert.deepEqual(page.results.map((v: Json) => v.version), [4, 3]);
    assert.equal(page.previous, null);
    assert.ok(page.next.startsWith("http://localhost/api/v1/rules/versions?limit=2&cursor="), page.next);
    const next = new URL(page.next);
    const second = (await h.app.inject({ url: next.pathname + next.search, headers: await h.auth() })).json();
    assert.deepEqual(second.results.map((v: Json) => v.version), [2, 1]);
    assert.equal(second.next, null);
    const back = new URL(second.previous);
    const again = (await h.app.inject({ url: back.pathname + back.search, headers: await h.auth() })).json();
    assert.deepEqual(again.results.map((v: Json) => v.version), [4, 3]);
    const events = await outboxEvents(h.pool);
    assert.deepEqual(events.map((e) => e.service_seq), [1, 2, 3]);
  });

  test("reads need risk:read, writes risk:write", async () => {
    const read = await h.app.inject({ url: "/api/v1/rules", headers: await h.auth({ scope: "risk:assess" }) });
    assert.equal(read.statusCode, 403);
    assert.equal(read.json().code, "insufficient_scope");
    const write = await h.app.inject({ method: "PUT", url: "/api/v1/rules", headers: await h.auth({ scope: "risk:read" }), payload: { rules: DEFAULT_RULES } });
    assert.equal(write.statusCode, 403);
    assert.equal(write.json().code, "insufficient_scope");
  });
});
