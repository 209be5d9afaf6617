// Health, metrics, request ids, traceparent, logs, the OpenAPI document and the docs page.
import assert from "node:assert/strict";
import { connect } from "node:net";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { buildApp } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { poolCreate } from "../src/db.ts";
import { metricsBind } from "../src/metrics.ts";
import { DATABASE_URL, harness, payment, type Harness, type Json } from "./helpers.ts";

let h: Harness;
before(async () => { h = await harness(); });
after(async () => { await h.close(); });

describe("service contracts", () => {
  test("/health/live and /health/ready pass with the database up and migrated", async () => {
    const live = await h.app.inject({ url: "/health/live" });
    assert.equal(live.statusCode, 200);
    assert.deepEqual(live.json(), { status: "pass", service: "risk" });
    assert.match(String(live.headers["content-type"]), /^application\/health\+json/);
    const ready = await h.app.inject({ url: "/health/ready" });
    assert.equal(ready.statusCode, 200, ready.body);
    assert.equal(ready.json().status, "pass");
    assert.equal(ready.json().checks.database.status, "pass");
    const post = await h.app.inject({ method: "POST", url: "/health/live" });
    assert.equal(post.statusCode, 405);
    assert.equal(post.json().code, "method_not_allowed");
  });

  test("/health/ready is 503 when the database does not answer, or is not migrated", async () => {
    const config = { ...loadConfig({ RISK_DATABASE_URL: "postgresql://postgres@127.0.0.1:1/none", JWT_JWKS_URL: h.jwks.url }), logLevel: "silent" };
    const deadPool = poolCreate("postgresql://postgres@127.0.0.1:1/none", 1);
    const { app } = await buildApp({ config, pool: deadPool, callers: new Map(), logger: false });
    try {
      const ready = await app.inject({ url: "/health/ready" });
      assert.equal(ready.statusCode, 503);
      assert.equal(ready.json().status, "fail");
      assert.equal(ready.json().checks.database.status, "fail");
      const assess = await app.inject({ method: "POST", url: "/api/v1/assessments", headers: { ...(await h.auth()), "content-type": "application/json" }, payload: JSON.stringify(payment()) });
      assert.equal(assess.statusCode, 503);
      assert.equal(assess.json().code, "database_unavailable");
    } finally {
      await app.close();
      await deadPool.end();
    }
    await h.pool.query("ALTER TABLE risk_migrations RENAME TO risk_migrations_away");
    try {
      const ready = await h.app.inject({ url: "/health/ready" });
      assert.equal(ready.statusCode, 503);
      assert.match(ready.json().checks.database.output, /migrations not applied/);
    } finally {
      await h.pool.query("ALTER TABLE risk_migrations_away RENAME TO risk_migrations");
    }
  });

  test("/metrics: process metrics and the risk service's own", async () => {
    metricsBind(h.pool); // the gauge reads the pool of the app built last (one per process outside tests)
    await h.app.inject({ method: "POST", url: "/api/v1/assessments", headers: { ...(await h.auth()), "content-type": "application/json" }, payload: JSON.stringify(payment()) });
    const metrics = await h.app.inject({ url: "/metrics" });
    assert.equal(metrics.statusCode, 200);
    assert.match(String(metrics.headers["content-type"]), /^text\/plain/);
    for (const name of ["process_cpu_seconds_total", "nodejs_eventloop_lag_seconds", "atrium_risk_assessments_total", "atrium_risk_assessment_seconds_bucket", "atrium_risk_outbox_pending", "atrium_http_request_duration_seconds_bucket"]) {
      assert.ok(metrics.body.includes(name), name);
    }
    assert.match(metrics.body, /atrium_risk_assessments_total\{[^}]*decision="allow"[^}]*\} [1-9]/);
    assert.match(metrics.body, /atrium_risk_outbox_pending\{service="risk"\} [1-9]/);
  });

  test("X-Request-ID: echoed when well-formed, else generated; traceparent continued", async () => {
    const given = await h.app.inject({ url: "/health/live", headers: { "x-request-id": "abc-123.x:y" } });
    assert.equal(given.headers["x-request-id"], "abc-123.x:y");
    for (const bad of ["with space", "x".repeat(129), "semi;colon"]) {
      const made = await h.app.inject({ url: "/health/live", headers: { "x-request-id": bad } });
      assert.match(String(made.headers["x-request-id"]), /^req_[0-9a-f]{32}$/);
    }
    const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const traced = await h.app.inject({ url: "/health/live", headers: { traceparent: parent } });
    assert.match(String(traced.headers.traceparent), /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    assert.notEqual(traced.headers.traceparent, parent);
    const fresh = await h.app.inject({ url: "/health/live", headers: { traceparent: "junk" } });
    assert.match(String(fresh.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.doesNotMatch(String(fresh.headers.traceparent), /4bf92f35/);
  });

  test("JSON logs: one line per request with service and request_id", async () => {
    const lines: Json[] = [];
    const stream = new Writable({ write(chunk, _encoding, done) { for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line)); done(); } });
    const config = { ...loadConfig({ RISK_DATABASE_URL: DATABASE_URL }), logLevel: "info" };
    const { app } = await buildApp({ config, pool: h.pool, callers: new Map(), logger: { level: "info", base: { service: "risk" }, messageKey: "event", stream } });
    try {
      await app.inject({ url: "/api/v1/nothing", headers: { "x-request-id": "req-log-test" } });
    } finally {
      await app.close();
    }
    const line = lines.find((l) => l.event === "http.request");
    assert.ok(line, JSON.stringify(lines));
    assert.equal(line.service, "risk");
    assert.equal(line.request_id, "req-log-test");
    assert.equal(line.status, 404);
    assert.equal(line.path, "/api/v1/nothing");
  });

  test("requests Node's HTTP parser refuses are problem documents too (real HTTP)", async () => {
    const config = { ...loadConfig({ RISK_DATABASE_URL: DATABASE_URL, JWT_JWKS_URL: h.jwks.url }), logLevel: "silent" };
    const { app } = await buildApp({ config, pool: h.pool, callers: new Map(), logger: false });
    await app.listen({ host: "127.0.0.1", port: 0 });
    const { port } = app.server.address() as AddressInfo;
    const raw = (request: string) => new Promise<string>((resolve, reject) => {
      const socket = connect(port, "127.0.0.1", () => socket.end(request));
      let answer = "";
      socket.on("data", (chunk) => { answer += chunk; });
      socket.on("end", () => resolve(answer));
      socket.on("error", reject);
    });
    try {
      for (const request of [
        "POST /api/v1/assessments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
        "GET /health/live HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
      ]) {
        const answer = await raw(request);
        assert.match(answer, /^HTTP\/1\.1 400 /);
        assert.match(answer, /Content-Type: application\/problem\+json/i);
        assert.match(answer, /"code":"bad_request"/);
      }
    } finally {
      await app.close();
    }
  });

  test("OpenAPI at /api/schema (the slashed spelling redirects), Swagger UI at /api/docs", async () => {
    const schema = await h.app.inject({ url: "/api/schema" });
    assert.equal(schema.statusCode, 200);
    const doc = schema.json();
    assert.match(doc.openapi, /^3\./);
    for (const path of ["/api/v1/assessments", "/api/v1/assessments/{id}", "/api/v1/rules", "/api/v1/rules/versions"]) assert.ok(doc.paths[path], path);
    assert.ok(!doc.paths["/health/live"], "health and metrics are not API operations");
    assert.ok(doc.paths["/api/v1/rules"].put.requestBody);
    const slashed = await h.app.inject({ url: "/api/schema/" });
    assert.equal(slashed.statusCode, 308);
    assert.equal(slashed.headers.location, "/api/schema");
    const docs = await h.app.inject({ url: "/api/docs" });
    assert.equal(docs.statusCode, 200);
    assert.match(String(docs.headers["content-type"]), /^text\/html/);
    assert.equal((await h.app.inject({ url: "/api/docs/" })).statusCode, 308);
  });
});
