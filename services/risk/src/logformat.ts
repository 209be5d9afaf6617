// ATRIUM_LOG_FORMAT=console: pino's JSON lines turned into the readable lines of the kit's ConsoleFormatter
// (services/kit/logs.py), so `make up` prints one shape for every process: level (coloured), event, key=value
// fields quoted by the same rules, sensitive keys redacted, `[request id]` last, an error's stack below.
// Used as pino's destination stream (app.ts loggerOptions); each line is written with writeSync, so a line logged
// right before process.exit is not lost.
import { writeSync } from "node:fs";

const SENSITIVE = ["password", "secret", "token", "authorization", "api_key", "private_key"];
// What pino writes on every line that the kit's console line leaves out (the time and the process name are put in
// front by `make up`) or places elsewhere (the event, the request id, the error's stack).
const SKIPPED = new Set(["level", "time", "pid", "hostname", "service", "request_id", "task_id", "event", "msg"]);
const LEVELS: Record<string, string> = { trace: "TRACE", debug: "DEBUG", info: "INFO", warn: "WARNING", error: "ERROR", fatal: "CRITICAL" };
const COLOURS: Record<string, string> = { TRACE: "\x1b[2m", DEBUG: "\x1b[2m", WARNING: "\x1b[33m", ERROR: "\x1b[31m", CRITICAL: "\x1b[1;31m" };
const RESET = "\x1b[0m";

function sensitive(key: string): boolean {
  const lower = key.toLowerCase();
  return SENSITIVE.some((word) => lower.includes(word));
}

/** A record's fields as the kit's JsonFormatter keeps them (pino's `formatters.log`, every format): a sensitive key's
 * value, at any depth of plain objects and arrays, becomes "[redacted]"; a field named `level` or `time` becomes
 * `level_` / `time_` (pino writes its own, and a reader keeps the last of two equal keys). Errors and other class
 * instances are left to pino's serializers. */
export function redactFields(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) {
    out[key === "level" || key === "time" ? `${key}_` : key] = sensitive(key) ? "[redacted]" : redactValue(value);
  }
  return out;
}

function redactValue(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactValue);
  if (value === null || typeof value !== "object") return value;
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k, sensitive(k) ? "[redacted]" : redactValue(v)]),
  );
}

/** JSON as Python's json.dumps writes it (", " and ": " separators), sensitive keys of objects redacted. */
function pythonJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    const items = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${sensitive(k) ? '"[redacted]"' : pythonJson(v)}`);
    return `{${items.join(", ")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** A field's value as the kit's `_console_value` writes it: bare, or JSON-quoted when empty or holding ` "=\n`. */
export function consoleValue(value: unknown): string {
  const text = typeof value === "string" ? value : pythonJson(value);
  return text === "" || /[ "=\n]/.test(text) ? JSON.stringify(text) : text;
}

/** One of pino's JSON records as a console line (no trailing newline). */
export function consoleLine(record: Record<string, unknown>, colour: boolean): string {
  const label = typeof record.level === "string" ? record.level : "info";
  const name = LEVELS[label] ?? label.toUpperCase();
  let level = name.padEnd(7);
  if (colour && COLOURS[name]) level = `${COLOURS[name]}${level}${RESET}`;
  const parts = [level, String(record.event ?? record.msg ?? "")];
  let stack = "";
  for (const [key, value] of Object.entries(record)) {
    if (SKIPPED.has(key)) continue;
    if (key === "err" && value !== null && typeof value === "object" && typeof (value as { stack?: unknown }).stack === "string") {
      stack = (value as { stack: string }).stack; // pino's error serializer: the stack holds the type and message
      continue;
    }
    parts.push(`${key}=${sensitive(key) ? "[redacted]" : consoleValue(value)}`);
  }
  if (record.request_id) parts.push(`[${String(record.request_id)}]`);
  const line = parts.join(" ");
  return stack ? `${line}\n${stack.replace(/\n+$/, "")}` : line;
}

function writeAll(fd: number, text: string): void {
  let buffer = Buffer.from(text);
  while (buffer.length > 0) {
    try {
      buffer = buffer.subarray(writeSync(fd, buffer));
    } catch (error) {
      // stdout may be a non-blocking pipe: wait for the reader a moment rather than drop the line. Any other error
      // (EPIPE: the reader is gone) drops it: a log call must never fail the work that logs.
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

/** pino's destination for JSON lines: each written to `fd` (stdout) at once, in order. pino's default destination
 * writes asynchronously and, on process.exit, flushes what is queued synchronously while a write may still be in
 * flight: lines came out of order (and an exit right after a log call could reorder the last ones). */
export function jsonStream(options: { fd?: number } = {}): { write(chunk: string): void } {
  const fd = options.fd ?? 1;
  return { write: (chunk: string): void => writeAll(fd, chunk) };
}

/** pino's destination for console lines: each JSON line it writes, reformatted, to `fd` (stdout) at once. */
export function consoleStream(options: { colour: boolean; fd?: number }): { write(chunk: string): void } {
  const fd = options.fd ?? 1;
  return {
    write(chunk: string): void {
      let out = "";
      for (const json of chunk.split("\n")) {
        if (json === "") continue;
        let record: Record<string, unknown>;
        try {
          record = JSON.parse(json) as Record<string, unknown>;
        } catch {
          out += `${json}\n`; // not one of pino's records: shown as it came
          continue;
        }
        out += `${consoleLine(record, options.colour)}\n`;
      }
      if (out) writeAll(fd, out);
    },
  };
}
