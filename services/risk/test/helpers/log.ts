// A logger shaped like Fastify's that keeps what it was told (tests read the lines).
import type { Log } from "../../src/platform/http.ts";

export interface Line {
  level: "debug" | "info" | "warn" | "error";
  msg: string;
  obj: Record<string, unknown>;
}

export function captureLog(): Log & { lines: Line[]; named(msg: string): Line[] } {
  const lines: Line[] = [];
  const at = (level: Line["level"]) => (obj: object, msg: string) => void lines.push({ level, msg, obj: obj as Record<string, unknown> });
  return {
    lines,
    named: (msg: string) => lines.filter((line) => line.msg === msg),
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
  };
}
