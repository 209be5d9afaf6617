// GET/PUT /api/v1/rules, GET /api/v1/rules/versions.
import type { FastifyInstance } from "fastify";
import type { Auth } from "../auth.ts";
import type { Pool } from "../db.ts";
import { pageEnvelope, PAGE_SIZE } from "../pagination.ts";
import type { Rules } from "../rules.ts";
import { ifMatchVersion, rulesUpdate } from "../services.ts";
import { rulesGet, rulesVersionsPage } from "../selectors.ts";
import { auditContextOf, fullUrl } from "./context.ts";
import { PAGE_QUERY, pageOf, problems, RULES_BODY, RULES_VERSION } from "./schemas.ts";

export function rulesRoutes(app: FastifyInstance, pool: Pool, auth: Auth): void {
  app.get("/api/v1/rules", {
    preHandler: auth.requireScope("risk:read"),
    schema: { summary: "The current rules", description: "Scope risk:read. ETag is the version (for If-Match).", tags: ["rules"], security: [{ bearer: [] }], response: { 200: RULES_VERSION, ...problems("read") } },
  }, async (_request, reply) => {
    const current = await rulesGet(pool);
    reply.header("ETag", `"${current.version}"`);
    return current;
  });

  app.put("/api/v1/rules", {
    preHandler: auth.requireScope("risk:write"),
    schema: {
      summary: "Replace the rules",
      description: "A new version (audited with before and after of each changed leaf). If-Match: \"<version>\" refuses a stale write (412 version_mismatch). The same rules as the current ones are a no-op. Scope risk:write.",
      tags: ["rules"],
      security: [{ bearer: [] }],
      headers: { type: "object", properties: { "if-match": { type: "string", pattern: '^\\s*(W/)?"?[0-9]{1,9}"?\\s*$', description: 'The version the change is based on, e.g. "3" (the ETag of GET).' } } },
      body: RULES_BODY,
      response: { 200: RULES_VERSION, ...problems("write", 412) },
    },
  }, async (request, reply) => {
    const expected = ifMatchVersion(request.headers["if-match"] as string | undefined);
    const saved = await rulesUpdate(pool, (request.body as { rules: Rules }).rules, expected, auditContextOf(request));
    reply.header("ETag", `"${saved.version}"`);
    return saved;
  });

  app.get("/api/v1/rules/versions", {
    preHandler: auth.requireScope("risk:read"),
    schema: {
      summary: "The rules' history",
      description: "Newest first, cursor-paged. Scope risk:read.",
      tags: ["rules"],
      security: [{ bearer: [] }],
      querystring: { type: "object", additionalProperties: false, properties: PAGE_QUERY },
      response: { 200: pageOf(RULES_VERSION), ...problems("read") },
    },
  }, async (request) => {
    const query = request.query as { limit?: number; cursor?: string };
    return pageEnvelope(await rulesVersionsPage(pool, query.cursor, query.limit ?? PAGE_SIZE), fullUrl(request));
  });
}
