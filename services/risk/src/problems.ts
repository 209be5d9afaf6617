// RFC 9457 problem details (docs/errors.md): every error this service answers is application/problem+json
// with type, title, status, detail, instance, code, request_id (and errors[] for field errors). Bad input is
// always a 4xx with a stable code, never a 500.
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import type { ErrorObject } from "ajv";
import { isUnavailable } from "./db.ts";
import { DomainError, fieldError, type FieldError } from "./errors.ts";

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

export interface ProblemInit {
  status: number;
  code: string;
  title: string;
  detail?: string;
  errors?: FieldError[];
  extra?: Record<string, unknown>;
  headers?: Record<string, string>;
}

export function problemSend(request: FastifyRequest, reply: FastifyReply, problem: ProblemInit): FastifyReply {
  const body: Record<string, unknown> = {
    type: `urn:atrium:problem:${problem.code}`,
    title: problem.title,
    status: problem.status,
    detail: problem.detail || problem.title,
    code: problem.code,
    instance: request.url.split("?")[0],
    request_id: String(request.id),
  };
  if (problem.errors?.length) body.errors = problem.errors;
  Object.assign(body, problem.extra ?? {});
  for (const [name, value] of Object.entries(problem.headers ?? {})) reply.header(name, value);
  return reply.code(problem.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(body));
}

function decodePointer(instancePath: string): (string | number)[] {
  if (!instancePath) return [];
  return instancePath.slice(1).split("/").map((part) => {
    const text = part.replace(/~1/g, "/").replace(/~0/g, "~");
    return /^\d+$/.test(text) ? Number(text) : text;
  });
}

const CODES: Record<string, string> = {
  maximum: "max_value", exclusiveMaximum: "max_value", minimum: "min_value", exclusiveMinimum: "min_value",
  maxLength: "max_length", minLength: "min_length", maxItems: "max_length", minItems: "min_length",
  maxProperties: "max_length", minProperties: "min_length", enum: "invalid_choice", const: "invalid_choice",
  pattern: "invalid", format: "invalid", multipleOf: "invalid", propertyNames: "invalid",
};

/** ajv's errors as the Python services' field errors: {field, pointer, code, detail}. */
export function ajvFieldErrors(errors: ErrorObject[], context: string | undefined): FieldError[] {
  const prefix: (string | number)[] = context === "querystring" || context === "params" || context === "headers" ? [] : [];
  const out: FieldError[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    if (error.keyword === "if" || error.keyword === "propertyNames") continue; // the branch's own errors follow
    let path = [...prefix, ...decodePointer(error.instancePath)];
    let code = CODES[error.keyword] ?? "invalid";
    let detail = error.message ? `Must ${error.message.replace(/^must /, "")}.` : "Invalid value.";
    if (error.keyword === "additionalProperties") {
      path = [...path, String(error.params.additionalProperty)];
      code = "unknown_field";
      detail = "Unknown field.";
    } else if (error.keyword === "required") {
      path = [...path, String(error.params.missingProperty)];
      code = "required";
      detail = "This field is required.";
    } else if (error.keyword === "type") {
      code = error.data === null ? "null" : "invalid";
      detail = error.data === null ? "This field may not be null." : `Must be ${error.params.type}.`;
    } else if (error.keyword === "pattern" && error.propertyName !== undefined) {
      path = [...path, error.propertyName];
      detail = `The key does not match ${error.params.pattern}.`;
    } else if (error.keyword === "minLength" && error.data === "") {
      code = "blank";
      detail = "This field may not be blank.";
    }
    const item = fieldError(path, code, detail);
    const key = `${item.pointer} ${item.code}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(item);
    }
  }
  return out;
}

const FASTIFY_CODES: Record<string, ProblemInit> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: "unsupported_media_type", title: "Unsupported media type", detail: "The body must be application/json." },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: "payload_too_large", title: "Request body too large" },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: "malformed_json", title: "Malformed JSON", detail: "The body is empty." },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: "malformed_json", title: "Malformed JSON", detail: "The body is not JSON." },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: "bad_request", title: "Bad request", detail: "Invalid Content-Length." },
  FST_ERR_CTP_EMPTY_TYPE: { status: 415, code: "unsupported_media_type", title: "Unsupported media type", detail: "The body must be application/json." },
  FST_ERR_CTP_INVALID_TYPE: { status: 415, code: "unsupported_media_type", title: "Unsupported media type", detail: "The body must be application/json." },
};

/** The one error handler: domain errors, validation, parser errors, database outages, and bugs (500). */
export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (error instanceof DomainError) {
    return problemSend(request, reply, { status: error.status, code: error.code, title: error.title, detail: error.detail, errors: error.errors, extra: error.extra, headers: error.headers });
  }
  if (error.validation) {
    const errors = ajvFieldErrors(error.validation as ErrorObject[], error.validationContext);
    return problemSend(request, reply, { status: 400, code: "validation_error", title: "Invalid input", detail: "The request has invalid fields; see errors.", errors });
  }
  const known = error.code ? FASTIFY_CODES[error.code] : undefined;
  if (known) {
    if (known.code === "payload_too_large") {
      const limit = request.routeOptions.bodyLimit;
      return problemSend(request, reply, { ...known, detail: `The body is over the limit of ${limit} bytes.`, extra: { max_body_bytes: limit } });
    }
    return problemSend(request, reply, known);
  }
  if (isUnavailable(error)) {
    request.log.warn({ err: error }, "database.unavailable");
    return problemSend(request, reply, { status: 503, code: "database_unavailable", title: "Database unavailable", detail: "The risk database does not answer; try again shortly.", headers: { "Retry-After": "1" } });
  }
  const status = typeof error.statusCode === "number" ? error.statusCode : 500;
  if (status >= 400 && status < 500) {
    return problemSend(request, reply, { status, code: "bad_request", title: "Bad request", detail: error.message });
  }
  request.log.error({ err: error }, "http.internal_error");
  return problemSend(request, reply, { status: 500, code: "internal_error", title: "Internal error", detail: "Something went wrong on our side; the request id finds it in the logs." });
}

export { fieldError };
