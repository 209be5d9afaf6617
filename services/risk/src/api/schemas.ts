// JSON Schemas of the API (request validation with ajv, the OpenAPI document, response serialization).
import { MAX_AMOUNT, RULES_SCHEMA } from "../rules.ts";

export const BATCH_MAX = 1000;
const text = (max: number, description: string) => ({ type: "string", minLength: 1, maxLength: max, pattern: "^[^\\u0000]*$", description });

export const PAYMENT_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["payment_id", "amount", "currency", "source_account", "destination_account"],
  properties: {
    payment_id: text(64, "The payment's id (assessments are idempotent on it)."),
    amount: { type: "integer", minimum: 1, maximum: MAX_AMOUNT, description: "Minor units (cents), at most 2^53 - 1." },
    currency: { type: "string", pattern: "^[A-Z]{3}$", description: "ISO 4217 code." },
    source_account: text(40, "The account paying."),
    destination_account: text(40, "The account paid."),
    client_id: { type: "string", maxLength: 200, pattern: "^[^\\u0000]*$", description: "The machine client that created the payment." },
    created_at: { type: "string", format: "date-time", maxLength: 40, description: "When the payment was created (RFC 3339); now if absent." },
  },
} as const;

export const ASSESS_BODY = {
  type: "object",
  description: `One payment, or {"payments": [...]} with 1 to ${BATCH_MAX}.`,
  if: { type: "object", required: ["payments"] },
  then: {
    type: "object",
    additionalProperties: false,
    required: ["payments"],
    properties: { payments: { type: "array", minItems: 1, maxItems: BATCH_MAX, items: PAYMENT_SCHEMA } },
  },
  else: PAYMENT_SCHEMA,
} as const;

export const REASON = {
  type: "object",
  required: ["code", "message", "weight"],
  properties: {
    code: { type: "string", enum: ["velocity_count", "velocity_amount", "new_payee", "amount_outlier", "amount_high"] },
    message: { type: "string" },
    weight: { type: "integer" },
  },
} as const;

export const ASSESSMENT = {
  type: "object",
  required: ["id", "payment_id", "score", "decision", "reasons", "rules_version", "assessed_at"],
  properties: {
    id: { type: "string", description: "rsk_…" },
    payment_id: { type: "string" },
    score: { type: "integer", minimum: 0, maximum: 100 },
    decision: { type: "string", enum: ["allow", "review", "deny"] },
    reasons: { type: "array", items: REASON },
    rules_version: { type: "integer" },
    assessed_at: { type: "string", format: "date-time" },
  },
} as const;

export const ACTOR = {
  type: "object",
  required: ["type", "id", "display"],
  properties: { type: { type: "string" }, id: { type: "string" }, display: { type: "string" } },
} as const;

export const RULES_VERSION = {
  type: "object",
  required: ["version", "id", "rules", "created_at", "created_by"],
  properties: {
    version: { type: "integer" },
    id: { type: "string", description: "rlv_…" },
    rules: RULES_SCHEMA,
    created_at: { type: "string", format: "date-time" },
    created_by: ACTOR,
  },
} as const;

export const RULES_BODY = {
  type: "object",
  additionalProperties: false,
  required: ["rules"],
  properties: { rules: RULES_SCHEMA },
} as const;

export function pageOf(item: object) {
  return {
    type: "object",
    required: ["next", "previous", "results"],
    properties: {
      next: { type: ["string", "null"], description: "The next page (same filters, a cursor), or null on the last page." },
      previous: { type: ["string", "null"], description: "The previous page, or null on the first page." },
      results: { type: "array", items: item },
    },
  };
}

export const PAGE_QUERY = {
  limit: { type: "integer", minimum: 1, maximum: 200, description: "Page size (default 50)." },
  cursor: { type: "string", maxLength: 500, pattern: "^[A-Za-z0-9_-]+={0,2}$", description: "A cursor from `next` or `previous` (opaque)." },
} as const;

export const PROBLEM = {
  description: "An RFC 9457 problem document (application/problem+json); `code` is stable (docs/errors.md).",
} as const;

const PROBLEM_SCHEMA = {
  type: "object",
  description: "An RFC 9457 problem document (application/problem+json). Branch on `code`: it is stable.",
  required: ["type", "title", "status", "detail", "code"],
  properties: {
    type: { type: "string", description: "`urn:atrium:problem:<code>`." },
    title: { type: "string" },
    status: { type: "integer" },
    detail: { type: "string" },
    code: { type: "string" },
    instance: { type: "string", description: "The request's path." },
    request_id: { type: "string", description: "The request id (X-Request-ID)." },
    errors: {
      type: "array",
      description: "validation_error: one per field.",
      items: {
        type: "object",
        required: ["pointer", "code", "detail"],
        properties: { field: { type: ["string", "null"] }, pointer: { type: "string" }, code: { type: "string" }, detail: { type: "string" } },
      },
    },
  },
} as const;

const PROBLEM_WHEN: Record<number, string> = {
  400: "Malformed JSON (`malformed_json`) or invalid fields (`validation_error` with `errors`), a bad cursor (`invalid_cursor`)",
  401: "No token, or an invalid or expired one (`not_authenticated`, `invalid_token`, `token_expired`, `token_revoked`)",
  403: "The token is for another service or lacks the scope (`invalid_audience`, `insufficient_scope`)",
  404: "No such resource (`not_found`)",
  405: "Method not allowed (`method_not_allowed`)",
  412: "If-Match names another version than the current one (`version_mismatch`)",
  413: "Request body too large (`payload_too_large`)",
  415: "The body is not application/json (`unsupported_media_type`)",
  503: "The database or the portal's signing keys are unavailable (`database_unavailable`, `jwks_unavailable`); retry",
};

/** The problem responses an operation may answer (reads: 400 401 403 404 405 503; writes add 413 415). */
export function problems(kind: "read" | "write", ...more: number[]): Record<number, object> {
  const statuses = [400, 401, 403, 404, 405, 503, ...(kind === "write" ? [413, 415] : []), ...more];
  return Object.fromEntries(statuses.map((status) => [status, {
    description: PROBLEM_WHEN[status],
    content: { "application/problem+json": { schema: PROBLEM_SCHEMA } },
  }]));
}
