// ATRIUM_LOG_FORMAT=console: the risk service's lines read as the kit's ConsoleFormatter writes them
// (services/kit/logs.py); production and the default stay JSON; another format is refused.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import Fastify from "fastify";

import { loggerOptions } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { consoleLine } from "../src/logformat.ts";

const LINES = fileURLToPath(new URL("./helpers/log_lines.ts", import.meta.url));

/** Run test/helpers/log_lines.ts (a few events logged, then process.exit) with these variables; its output. */
function logLines(env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [LINES], { env: { PATH: process.env.PATH, ...env }, encoding: "utf8", timeout: 20_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

test("a console line: level, event, fields quoted as the kit quotes them, [request id] last", () => {
  // The same record through services/kit/logs.py ConsoleFormatter prints exactly this line.
  const record = {
    level: "info", time: "2026-01-01T00:00:00.000Z", service: "risk", request_id: "req_1",
    score: 42, ratio: 1.5, ok: true, none: null, empty: "", spaced: "two words", quote: 'say "hi"', eq: "a=b", nl: "a\nb",
    plain: "abc", obj: { a: 1, api_key: "k", b: [1, "x y"] }, lst: [1, 2], uni: "café", event: "risk.assessed",
  };
  assert.equal(
    consoleLine(record, false),
    'INFO    risk.assessed score=42 ratio=1.5 ok=true none=null empty="" spaced="two words" quote="say \\"hi\\"" eq="a=b" ' +
      'nl="a\\nb" plain=abc obj="{\\"a\\": 1, \\"api_key\\": \\"[redacted]\\", \\"b\\": [1, \\"x y\\"]}" lst="[1, 2]" uni=café [req_1]',
  );
});

test("sensitive keys are redacted, at the top and inside objects, whatever their case", () => {
  const line = consoleLine({ level: "info", auth_token: "t", Authorization: "Bearer x", client_secret: "s", password: "p", body: { PRIVATE_KEY: "k", n: 1 }, event: "e" }, false);
  assert.equal(line, 'INFO    e auth_token=[redacted] Authorization=[redacted] client_secret=[redacted] password=[redacted] body="{\\"PRIVATE_KEY\\": \\"[redacted]\\", \\"n\\": 1}"');
  for (const secret of ["Bearer x", "\"s\"", "\"p\"", "\"k\""]) assert.ok(!line.includes(secret), line);
});

test("levels are named as Python names them, coloured only when asked", () => {
  const levels = { trace: "TRACE  ", debug: "DEBUG  ", info: "INFO   ", warn: "WARNING", error: "ERROR  ", fatal: "CRITICAL" };
  for (const [label, name] of Object.entries(levels)) assert.equal(consoleLine({ level: label, event: "e" }, false), `${name} e`);
  assert.equal(consoleLine({ level: "debug", event: "e" }, true), "\x1b[2mDEBUG  \x1b[0m e");
  assert.equal(consoleLine({ level: "info", event: "e" }, true), "INFO    e");
  assert.equal(consoleLine({ level: "warn", event: "e" }, true), "\x1b[33mWARNING\x1b[0m e");
  assert.equal(consoleLine({ level: "error", event: "e" }, true), "\x1b[31mERROR  \x1b[0m e");
  assert.equal(consoleLine({ level: "fatal", event: "e" }, true), "\x1b[1;31mCRITICAL\x1b[0m e");
});

test("an error's stack follows its line, as the kit's traceback does", () => {
  const line = consoleLine({ level: "error", err: { type: "Error", message: "boom", stack: "Error: boom\n    at here\n" }, event: "risk.stop_failed" }, false);
  assert.equal(line, "ERROR   risk.stop_failed\nError: boom\n    at here");
});

test("ATRIUM_LOG_FORMAT=console: the process prints readable lines, all of them before it exits", () => {
  const run = logLines({ ATRIUM_ENV: "dev", ATRIUM_LOG_FORMAT: "console", ATRIUM_LOG_COLOR: "0" });
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout.split("\n");
  assert.equal(lines[0], 'INFO    catalog.registered slug=risk note="two words" client_secret=[redacted]');
  assert.equal(lines[1], "WARNING outbox.relay_failed events=3 [req_abc]");
  assert.equal(lines[2], "ERROR   risk.stop_failed");
  assert.equal(lines[3], "Error: boom");
  assert.match(lines[4], /^ {4}at /);
  assert.ok(!run.stdout.includes("\x1b["), "ATRIUM_LOG_COLOR=0: no colour");
  assert.ok(!run.stdout.includes("{"), run.stdout);
});

test("ATRIUM_LOG_COLOR=1 colours the level; without it a pipe gets none", () => {
  const coloured = logLines({ ATRIUM_ENV: "dev", ATRIUM_LOG_FORMAT: "console", ATRIUM_LOG_COLOR: "1" });
  assert.equal(coloured.stdout.split("\n")[1], "\x1b[33mWARNING\x1b[0m outbox.relay_failed events=3 [req_abc]");
  const piped = logLines({ ATRIUM_ENV: "dev", ATRIUM_LOG_FORMAT: "console" });
  assert.equal(piped.stdout.split("\n")[1], "WARNING outbox.relay_failed events=3 [req_abc]");
});

test("production logs JSON lines even when ATRIUM_LOG_FORMAT=console; so does the default", () => {
  const envs: Record<string, string>[] = [{ ATRIUM_ENV: "production", ATRIUM_LOG_FORMAT: "console" }, { ATRIUM_ENV: "dev" }];
  for (const env of envs) {
    const run = logLines(env);
    assert.equal(run.status, 0, run.stderr);
    const records = run.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(records.map((r) => [r.level, r.event, r.request_id]), [
      ["info", "catalog.registered", undefined],
      ["warn", "outbox.relay_failed", "req_abc"],
      ["error", "risk.stop_failed", undefined],
    ]);
    assert.equal(records[0].service, "risk");
  }
  assert.equal(loadConfig({ ATRIUM_ENV: "production", ATRIUM_LOG_FORMAT: "console" }).logFormat, "json");
});

test("an ATRIUM_LOG_FORMAT other than json or console is refused at start", () => {
  assert.throws(() => loadConfig({ ATRIUM_LOG_FORMAT: "pretty" }), /^Error: ATRIUM_LOG_FORMAT must be json or console, got "pretty"$/);
  assert.throws(() => loadConfig({ ATRIUM_ENV: "production", ATRIUM_LOG_FORMAT: "text" }), /ATRIUM_LOG_FORMAT must be json or console/);
  assert.equal(loadConfig({ ATRIUM_LOG_FORMAT: "console" }).logFormat, "console");
  const run = logLines({ ATRIUM_ENV: "dev", ATRIUM_LOG_FORMAT: "pretty" });
  assert.notEqual(run.status, 0);
  assert.equal(run.stdout, "");
  assert.match(run.stderr, /ATRIUM_LOG_FORMAT must be json or console, got "pretty"/);
});

test("JSON lines redact sensitive keys at any depth, as the kit's JsonFormatter does, and keep a field named level", async () => {
  const lines: string[] = [];
  const stream = { write: (line: string) => void lines.push(line) };
  const options = loggerOptions(loadConfig({ ATRIUM_ENV: "production" })) as Record<string, unknown>;
  const app = Fastify({ logger: { ...options, stream } });
  app.log.info(
    {
      client_secret: "s3cret",
      Authorization: "Bearer abc",
      body: { password: "p4ss", amount: 12, items: [{ api_key: "k1", id: "a" }] },
      level: "high",
      err: new Error("kept"),
    },
    "risk.something",
  );
  await app.close();
  const record = JSON.parse(lines[0]) as Record<string, any>;
  assert.equal(record.client_secret, "[redacted]");
  assert.equal(record.Authorization, "[redacted]");
  assert.deepEqual(record.body, { password: "[redacted]", amount: 12, items: [{ api_key: "[redacted]", id: "a" }] });
  assert.equal(record.level, "info");
  assert.equal(record.level_, "high");
  assert.equal(record.event, "risk.something");
  assert.equal(record.err.message, "kept"); // errors still go through pino's serializer
  assert.doesNotMatch(lines.join(""), /s3cret|p4ss|Bearer abc|"k1"/);
});
