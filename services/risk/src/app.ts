// buildApp: the Fastify application (routes, validation, problem details, request ids, logs, metrics, docs).
import { randomBytes, randomUUID } from "node:crypto";
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from "fastify";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import { Ajv } from "ajv";
import addFormatsModule from "ajv-formats";
import type { JWTVerifyGetKey } from "jose";
import { assessmentRoutes } from "./api/assessments.ts";
import { healthRoutes } from "./api/health.ts";
import { rulesRoutes } from "./api/rules.ts";
import { authCreate, type Auth } from "./auth.ts";
import type { Config } from "./config.ts";
import type { Pool } from "./db.ts";
import { DuplicateKey, InvalidCharacters, JsonTooDeep, MalformedJson, UnsupportedMediaType } from "./errors.ts";
import { duplicateKey } from "./jsonkeys.ts";
import { consoleStream, jsonStream, redactFields } from "./logformat.ts";
import { httpLatency, metricsBind } from "./metrics.ts";
import { errorHandler, problemSend } from "./problems.ts";

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const QUIET = /^\/(health\/|metrics$)/;

declare module "fastify" {
  interface FastifyRequest {
    traceparent?: string;
    startedAt?: number;
  }
}

export interface AppOptions {
  config: Config;
  pool: Pool;
  callers: Map<string, number>;
  /** Tests: a key set instead of fetching JWT_JWKS_URL. */
  keySet?: JWTVerifyGetKey;
  /** false: no logs (tests); default JSON logs to stdout. */
  logger?: FastifyServerOptions["logger"];
}

export function loggerOptions(config: Config): FastifyServerOptions["logger"] {
  return {
    level: config.logLevel,
    base: { service: "risk" },
    messageKey: "event",
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
    formatters: { level: (label: string) => ({ level: label }), log: redactFields }, // secrets never logged
    stream: config.logFormat === "console" ? consoleStream({ colour: config.logColor }) : jsonStream(),
  };
}

/** A W3C traceparent for this request: the caller's trace id kept (a new span id), or a new trace. */
function traceparentFor(header: string | string[] | undefined): string {
  const match = typeof header === "string" ? TRACEPARENT.exec(header.trim().toLowerCase()) : null;
  const valid = match && match[1] !== "ff" && !/^0+$/.test(match[2]) && !/^0+$/.test(match[3]);
  const traceId = valid ? match[2] : randomBytes(16).toString("hex");
  const flags = valid ? match[4] : "01";
  return `00-${traceId}-${randomBytes(8).toString("hex")}-${flags}`;
}

export async function buildApp(options: AppOptions): Promise<{ app: FastifyInstance; auth: Auth }> {
  const { config, pool, callers } = options;
  // Bodies: no coercion, no defaults, no silent removal (an unknown field is an error); every error reported.
  const bodyAjv = new Ajv({ allErrors: true, coerceTypes: false, removeAdditional: false, useDefaults: false, strict: false, verbose: true });
  // Query strings and headers are text: integers coerced from it.
  const queryAjv = new Ajv({ allErrors: true, coerceTypes: true, removeAdditional: false, useDefaults: true, strict: false, verbose: true });
  addFormats(bodyAjv);
  addFormats(queryAjv);

  const app = Fastify({
    logger: options.logger === undefined ? loggerOptions(config) : options.logger,
    bodyLimit: config.bodyLimit,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: "request_id" }),
    genReqId: (request) => {
      const given = request.headers["x-request-id"];
      return typeof given === "string" && REQUEST_ID.test(given) ? given : `req_${randomUUID().replaceAll("-", "")}`;
    },
    trustProxy: false,
    return503OnClosing: true,
    routerOptions: { maxParamLength: 200 },
    // Requests Node's HTTP parser refuses (a bad Content-Length, request line or header) are problems too.
    clientErrorHandler: (error, socket) => {
      if (!socket.writable) return socket.destroy(error);
      const tooLarge = (error as { code?: string }).code === "HPE_HEADER_OVERFLOW";
      const [status, code, title] = tooLarge ? [431, "header_too_large", "Header fields too large"] : [400, "bad_request", "Bad request"];
      const body = JSON.stringify({ type: `urn:atrium:problem:${code}`, title, status, detail: tooLarge ? "The header fields are too large." : "The request could not be parsed.", code });
      socket.end(`HTTP/1.1 ${status} ${title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    },
  });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === "body" ? bodyAjv : queryAjv).compile(schema));
  // A path no route claims answers 404/405/308 even when its body could not be parsed.
  app.setErrorHandler((error, request, reply) => (request.is404 ? routeMiss(request, reply) : errorHandler(error as FastifyError, request, reply)));
  metricsBind(pool);

  // JSON bodies: our own parser so that every failure has the kit's code.
  app.removeContentTypeParser(["application/json", "text/plain"]);
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    const text = body as string;
    if (text.trim() === "") return done(new MalformedJson("The body is empty."), undefined);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      const tooDeep = error instanceof RangeError;
      return done(tooDeep ? new JsonTooDeep("The body nests deeper than the parser allows.") : new MalformedJson(`The body is not JSON: ${(error as Error).message}`.slice(0, 200)), undefined);
    }
    const bad = badCharacters(parsed, 0);
    if (bad) return done(bad, undefined);
    const twice = duplicateKey(text);
    if (twice) {
      const where = twice.pointer ? `in ${twice.pointer}` : "at the top level";
      const detail = `Key ${JSON.stringify(twice.key)} appears more than once ${where}; each key may appear once.`;
      const pointer = `#${twice.pointer}/${twice.key.replace(/~/g, "~0").replace(/\//g, "~1")}`;
      return done(new DuplicateKey(detail, { errors: [{ field: twice.field, pointer, code: "duplicate_key", detail }] }), undefined);
    }
    done(null, parsed);
  });

  // Known routes, for 308 (trailing slash), 405 (wrong method) and 404.
  const routes: { pattern: RegExp; methods: Set<string> }[] = [];
  app.addHook("onRoute", (route) => {
    const source = "^" + route.url.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\/:[^/]+/g, "/[^/]+").replace(/\*/g, ".*") + "$";
    let entry = routes.find((r) => r.pattern.source === source);
    if (!entry) routes.push((entry = { pattern: new RegExp(source), methods: new Set() }));
    for (const method of [route.method].flat()) entry.methods.add(method);
  });
  const methodsFor = (path: string): Set<string> => {
    const methods = new Set<string>();
    for (const route of routes) if (route.pattern.test(path)) for (const m of route.methods) methods.add(m);
    return methods;
  };

  app.addHook("onRequest", async (request, reply) => {
    request.startedAt = performance.now();
    request.traceparent = traceparentFor(request.headers.traceparent);
    reply.header("X-Request-ID", String(request.id));
    reply.header("traceparent", request.traceparent);
    const [path, query] = splitUrl(request.url);
    if (query) {
      let decoded = "";
      try {
        decoded = decodeURIComponent(query.replace(/\+/g, " "));
      } catch {
        throw new InvalidCharacters("The query string is not valid percent-encoded UTF-8.");
      }
      if (textBad(decoded)) throw new InvalidCharacters("The query string holds a NUL character or an unpaired surrogate.");
    }
    const encoding = request.headers["content-encoding"];
    if (encoding !== undefined && String(encoding).trim().toLowerCase() !== "identity") {
      throw new UnsupportedMediaType(`Content-Encoding "${String(encoding).slice(0, 40)}" is not supported: send the body unencoded.`);
    }
    if (path === "/api/docs/" || path === "/api/schema/") return reply.code(308).header("Location", path.slice(0, -1) + query).send();
  });

  // A POST or PUT without a body is malformed JSON (as in the kit), not a schema error about "undefined".
  app.addHook("preValidation", async (request) => {
    if ((request.method === "POST" || request.method === "PUT") && request.body === undefined && request.routeOptions.schema?.body) {
      throw new MalformedJson("The body is empty.");
    }
  });

  app.addHook("onResponse", async (request, reply) => {
    const elapsed = (performance.now() - (request.startedAt ?? performance.now())) / 1000;
    const view = request.routeOptions.url ?? "unmatched";
    httpLatency.observe({ method: request.method, view, status: String(reply.statusCode) }, elapsed);
    const [path] = splitUrl(request.url);
    if (!QUIET.test(path)) {
      request.log.info({ method: request.method, path, view, status: reply.statusCode, duration_ms: Math.round(elapsed * 100000) / 100, traceparent: request.traceparent }, "http.request");
    }
  });

  function routeMiss(request: FastifyRequest, reply: FastifyReply): FastifyReply {
    const [path, query] = splitUrl(request.url);
    if (path.length > 1 && path.endsWith("/") && methodsFor(path.slice(0, -1)).size) {
      return reply.code(308).header("Location", path.slice(0, -1) + query).send();
    }
    const methods = methodsFor(path);
    if (methods.size) {
      return problemSend(request, reply, { status: 405, code: "method_not_allowed", title: "Method not allowed", detail: `Method "${request.method}" not allowed.`, headers: { Allow: [...methods].sort().join(", ") } });
    }
    return problemSend(request, reply, { status: 404, code: "not_found", title: "Not found", detail: "No such resource or path." });
  }
  app.setNotFoundHandler(routeMiss);

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "Atrium risk API",
        version: "1.0.0",
        description: "Payment risk scoring (velocity, new payees, amount outliers, per-currency limits) with versioned rules. Errors are RFC 9457 problem documents with a stable `code` (docs/errors.md).",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } } },
      tags: [{ name: "assessments" }, { name: "rules" }],
    },
  });
  await app.register(swaggerUi, { routePrefix: "/api/docs", uiConfig: { url: "/api/schema" } as Record<string, unknown> });
  app.get("/api/schema", { schema: { hide: true } }, async () => app.swagger());

  const auth = authCreate({ jwksUrl: config.jwksUrl, issuer: config.jwtIssuer, audience: config.jwtAudience, callers, ownClientId: config.clientId, keySet: options.keySet });
  healthRoutes(app, pool);
  assessmentRoutes(app, pool, auth);
  rulesRoutes(app, pool, auth);
  await app.ready();
  return { app, auth };
}

const UNPAIRED_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const MAX_DEPTH = 64;

function textBad(value: string): boolean {
  return value.includes("\u0000") || UNPAIRED_SURROGATE.test(value);
}

/** A NUL or an unpaired surrogate anywhere in the body (keys too), or nesting past MAX_DEPTH: the kit's codes. */
function badCharacters(value: unknown, depth: number): Error | null {
  if (typeof value === "string") return textBad(value) ? new InvalidCharacters("The body holds a NUL character or an unpaired surrogate.") : null;
  if (value === null || typeof value !== "object") return null;
  if (depth >= MAX_DEPTH) return new JsonTooDeep(`The body nests deeper than ${MAX_DEPTH} levels.`);
  for (const [key, item] of Object.entries(value)) {
    if (textBad(key)) return new InvalidCharacters("The body holds a NUL character or an unpaired surrogate.");
    const bad = badCharacters(item, depth + 1);
    if (bad) return bad;
  }
  return null;
}

function splitUrl(url: string): [string, string] {
  const index = url.indexOf("?");
  return index < 0 ? [url, ""] : [url.slice(0, index), url.slice(index)];
}
