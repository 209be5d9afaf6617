// Settings read from the environment as every Atrium process reads them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadConfig, logLevel } from "../src/config.ts";

test("LOG_LEVEL takes Python's level names in any case, and pino's", () => {
  assert.equal(logLevel("WARNING"), "warn");
  assert.equal(logLevel("warning"), "warn");
  assert.equal(logLevel("CRITICAL"), "fatal");
  assert.equal(logLevel("INFO"), "info");
  assert.equal(logLevel(" debug "), "debug");
  assert.equal(logLevel("trace"), "trace");
  assert.equal(loadConfig({ LOG_LEVEL: "WARNING" }).logLevel, "warn");
  assert.equal(loadConfig({ LOG_LEVEL: "ERROR", RISK_LOG_LEVEL: "DEBUG" }).logLevel, "debug");
});

test("an unknown LOG_LEVEL is refused with a message naming the accepted ones", () => {
  assert.throws(() => logLevel("loud"), /LOG_LEVEL must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG/);
  assert.throws(() => loadConfig({ LOG_LEVEL: "7" }), /LOG_LEVEL/);
});

test("ports and URLs follow ATRIUM_PORT_BASE and the portal's URL unless set", () => {
  const config = loadConfig({ ATRIUM_PORT_BASE: "8100" });
  assert.equal(config.port, 8104);
  assert.equal(config.portalUrl, "http://127.0.0.1:8100");
  assert.equal(config.jwksUrl, "http://127.0.0.1:8100/.well-known/jwks.json");
  assert.equal(config.revocationsUrl, "http://127.0.0.1:8100/.well-known/atrium-revocations.json");
  assert.equal(loadConfig({ RISK_PORT: "9000", BIND_HOST: "0.0.0.0" }).serviceUrl, "http://127.0.0.1:9000");
  assert.throws(() => loadConfig({ RISK_PORT: "-1" }), /RISK_PORT must be a non-negative integer/);
  for (const bad of ["1e3", "0x10", "1.5", "-0", "eighty"]) {
    assert.throws(() => loadConfig({ RISK_BODY_LIMIT: bad }), /RISK_BODY_LIMIT must be a non-negative integer/, bad);
  }
  assert.throws(() => loadConfig({ ATRIUM_ENV: "staging" }), /ATRIUM_ENV must be dev, test or production/);
});

test("ATRIUM_OUTBOX_RETENTION_DAYS: 7 unless set, a whole number of at least 1, anything else refused by name", () => {
  assert.equal(loadConfig({}).outboxRetentionDays, 7);
  assert.equal(loadConfig({ ATRIUM_OUTBOX_RETENTION_DAYS: "" }).outboxRetentionDays, 7);
  assert.equal(loadConfig({ ATRIUM_OUTBOX_RETENTION_DAYS: "30" }).outboxRetentionDays, 30);
  assert.equal(loadConfig({ ATRIUM_OUTBOX_RETENTION_DAYS: "1" }).outboxRetentionDays, 1);
  for (const bad of ["0", "-1", "1.5", "7 days", "1e3", "seven", "0x10"]) {
    assert.throws(
      () => loadConfig({ ATRIUM_OUTBOX_RETENTION_DAYS: bad }),
      new RegExp(`ATRIUM_OUTBOX_RETENTION_DAYS must be a whole number of at least 1, got "${bad.replace(/[.+]/g, "\\$&")}"`),
      bad,
    );
  }
});
