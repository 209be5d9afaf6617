// Rules as data: their shape (a JSON Schema, which the API validates), the checks a schema cannot say, and the
// leaf-by-leaf difference an audit event records.
import { fieldError, type FieldError } from "./errors.ts";

export interface VelocityRule {
  name: string;
  window_seconds: number;
  max_count: number | null;
  max_amount: number | null;
  weight: number;
}

export interface Rules {
  thresholds: { review: number; deny: number };
  velocity: VelocityRule[];
  new_payee: { enabled: boolean; weight: number };
  amount_outlier: { enabled: boolean; percentile: number; lookback_days: number; min_history: number; weight: number };
  amount_high: Record<string, { amount: number; weight: number }>;
}

/** The largest amount JavaScript numbers carry exactly (2^53 - 1 minor units). */
export const MAX_AMOUNT = Number.MAX_SAFE_INTEGER;
/** The longest velocity window rules may hold (retention keeps the minute buckets that long, src/retention.ts). */
export const WINDOW_MAX_SECONDS = 90 * 86400;
const NINETY_DAYS = WINDOW_MAX_SECONDS;
const weight = { type: "integer", minimum: 0, maximum: 100, description: "Points added to the score when the rule is hit." };

export const RULES_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["thresholds", "velocity", "new_payee", "amount_outlier", "amount_high"],
  properties: {
    thresholds: {
      type: "object",
      additionalProperties: false,
      required: ["review", "deny"],
      description: "Scores at or above `deny` deny, at or above `review` ask for review (review ≤ deny).",
      properties: { review: { type: "integer", minimum: 1, maximum: 100 }, deny: { type: "integer", minimum: 1, maximum: 100 } },
    },
    velocity: {
      type: "array",
      maxItems: 20,
      description: "Per source account over sliding windows: hit when the count or the amount, this payment included, passes the maximum.",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["name", "window_seconds", "max_count", "max_amount", "weight"],
        properties: {
          name: { type: "string", pattern: "^[a-z0-9_-]{1,40}$" },
          window_seconds: { type: "integer", minimum: 1, maximum: NINETY_DAYS },
          max_count: { type: ["integer", "null"], minimum: 1, maximum: 1_000_000_000 },
          max_amount: { type: ["integer", "null"], minimum: 1, maximum: MAX_AMOUNT },
          weight,
        },
      },
    },
    new_payee: {
      type: "object",
      additionalProperties: false,
      required: ["enabled", "weight"],
      description: "Hit when the source never paid this destination before.",
      properties: { enabled: { type: "boolean" }, weight },
    },
    amount_outlier: {
      type: "object",
      additionalProperties: false,
      required: ["enabled", "percentile", "lookback_days", "min_history", "weight"],
      description: "Hit when the amount is above the percentile of the source's amounts over the lookback (its latest 1000 payments at most), once it has min_history of them.",
      properties: {
        enabled: { type: "boolean" },
        percentile: { type: "number", minimum: 50, maximum: 99.9 },
        lookback_days: { type: "integer", minimum: 1, maximum: 90 },
        min_history: { type: "integer", minimum: 1, maximum: 1000 },
        weight,
      },
    },
    amount_high: {
      type: "object",
      maxProperties: 200,
      description: "Per currency (ISO 4217): hit when the amount (minor units) is above `amount`.",
      propertyNames: { pattern: "^[A-Z]{3}$" },
      additionalProperties: {
        type: "object",
        additionalProperties: false,
        required: ["amount", "weight"],
        properties: { amount: { type: "integer", minimum: 1, maximum: MAX_AMOUNT }, weight },
      },
    },
  },
} as const;

/** What the schema cannot say; field paths start at the request body (`rules.…`). */
export function rulesProblems(rules: Rules): FieldError[] {
  const errors: FieldError[] = [];
  if (rules.thresholds.review > rules.thresholds.deny) {
    errors.push(fieldError(["rules", "thresholds", "review"], "invalid", "The review threshold must not be above the deny threshold."));
  }
  const names = new Set<string>();
  rules.velocity.forEach((rule, index) => {
    if (names.has(rule.name)) errors.push(fieldError(["rules", "velocity", index, "name"], "unique", `Another velocity rule is named "${rule.name}".`));
    names.add(rule.name);
    if (rule.max_count === null && rule.max_amount === null) {
      errors.push(fieldError(["rules", "velocity", index], "invalid", "A velocity rule needs max_count, max_amount or both."));
    }
  });
  return errors;
}

function leaves(value: unknown, path: string, out: Map<string, unknown>): void {
  if (Array.isArray(value) && value.length > 0) {
    value.forEach((item, index) => leaves(item, `${path}[${index}]`, out));
  } else if (value !== null && typeof value === "object" && Object.keys(value).length > 0) {
    for (const [key, item] of Object.entries(value)) leaves(item, path ? `${path}.${key}` : key, out);
  } else {
    out.set(path, value);
  }
}

/** `{path: [before, after]}` for each leaf that differs (added leaves have before null, removed after null). */
export function rulesChanges(before: unknown, after: unknown): Record<string, [unknown, unknown]> {
  const a = new Map<string, unknown>();
  const b = new Map<string, unknown>();
  leaves(before, "", a);
  leaves(after, "", b);
  const changes: Record<string, [unknown, unknown]> = {};
  for (const path of new Set([...a.keys(), ...b.keys()])) {
    const old = a.has(path) ? a.get(path) : null;
    const now = b.has(path) ? b.get(path) : null;
    if (JSON.stringify(old) !== JSON.stringify(now)) changes[path] = [old, now];
  }
  return changes;
}

/** JSON with sorted keys: two rule sets are the same when these are equal. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
