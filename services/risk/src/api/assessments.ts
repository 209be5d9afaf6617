// POST/GET /api/v1/assessments, GET /api/v1/assessments/{id}.
import type { FastifyInstance } from "fastify";
import type { Auth } from "../auth.ts";
import type { Pool } from "../db.ts";
import { fieldError, ValidationFailed, type FieldError } from "../errors.ts";
import { assessmentSeconds } from "../metrics.ts";
import { pageEnvelope, PAGE_SIZE } from "../pagination.ts";
import { assess, type PaymentInput } from "../services.ts";
import { assessmentGet, assessmentsPage } from "../selectors.ts";
import { auditContextOf, fullUrl } from "./context.ts";
import { ASSESS_BODY, ASSESSMENT, BATCH_MAX, PAGE_QUERY, pageOf, problems } from "./schemas.ts";

const EARLIEST = Date.parse("2000-01-01T00:00:00Z");
const FUTURE_SKEW_MS = 3600_000;

/** Why a created_at the schema let through (an RFC 3339 date-time) cannot be used, or null. */
export function createdAtProblem(value: string | undefined): string | null {
  if (value === undefined) return null;
  const at = Date.parse(value);
  if (Number.isNaN(at)) return "Not a date-time this service can read (a leap second?).";
  if (at < EARLIEST) return "Before 2000-01-01.";
  if (at > Date.now() + FUTURE_SKEW_MS) return "More than an hour in the future.";
  return null;
}

export function assessmentRoutes(app: FastifyInstance, pool: Pool, auth: Auth): void {
  app.post("/api/v1/assessments", {
    preHandler: auth.requireScope("risk:assess"),
    schema: {
      summary: "Assess a payment or a batch",
      description: `Scores one payment, or a batch of 1 to ${BATCH_MAX} ({"payments": [...]}, answered in the same order as {"assessments": [...]}). Idempotent on payment_id: a payment assessed before gets its stored assessment. Scope risk:assess.`,
      tags: ["assessments"],
      security: [{ bearer: [] }],
      body: ASSESS_BODY,
      response: {
        200: { description: "The assessment(s).", anyOf: [ASSESSMENT, { type: "object", required: ["assessments"], properties: { assessments: { type: "array", items: ASSESSMENT } } }] },
        ...problems("write"),
      },
    },
  }, async (request) => {
    const body = request.body as PaymentInput | { payments: PaymentInput[] };
    const batch = "payments" in body;
    const payments = batch ? body.payments : [body];
    const errors: FieldError[] = [];
    payments.forEach((p, index) => {
      const problem = createdAtProblem(p.created_at);
      if (problem) errors.push(fieldError(batch ? ["payments", index, "created_at"] : ["created_at"], "invalid", problem));
    });
    if (errors.length) throw new ValidationFailed("The request has invalid fields; see errors.", { errors });
    const started = performance.now();
    const results = await assess(pool, payments, auditContextOf(request));
    assessmentSeconds.observe((performance.now() - started) / 1000);
    return batch ? { assessments: results } : results[0];
  });

  app.get("/api/v1/assessments", {
    preHandler: auth.requireScope("risk:read"),
    schema: {
      summary: "List assessments",
      description: "Newest first, cursor-paged. Scope risk:read.",
      tags: ["assessments"],
      security: [{ bearer: [] }],
      querystring: {
        type: "object",
        additionalProperties: false,
        properties: {
          ...PAGE_QUERY,
          payment_id: { type: "string", maxLength: 64, pattern: "^[^\\u0000]*$" },
          decision: { type: "string", enum: ["allow", "review", "deny"] },
        },
      },
      response: { 200: pageOf(ASSESSMENT), ...problems("read") },
    },
  }, async (request) => {
    const query = request.query as { limit?: number; cursor?: string; payment_id?: string; decision?: string };
    const page = await assessmentsPage(pool, { payment_id: query.payment_id, decision: query.decision }, query.cursor, query.limit ?? PAGE_SIZE);
    return pageEnvelope(page, fullUrl(request));
  });

  app.get("/api/v1/assessments/:id", {
    preHandler: auth.requireScope("risk:read"),
    schema: {
      summary: "Get an assessment",
      tags: ["assessments"],
      security: [{ bearer: [] }],
      params: { type: "object", properties: { id: { type: "string" } } },
      response: { 200: ASSESSMENT, ...problems("read") },
    },
  }, async (request) => assessmentGet(pool, (request.params as { id: string }).id));
}
