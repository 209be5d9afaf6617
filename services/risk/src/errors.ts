// Domain errors: a stable machine-readable `code`, an HTTP status and a title (services/kit/errors.py).
// src/problems.ts turns them into RFC 9457 problem documents.

export interface FieldError {
  field: string | null;
  pointer: string;
  code: string;
  detail: string;
}

export class DomainError extends Error {
  status = 400;
  code = "domain_error";
  title = "Request refused";
  errors: FieldError[] | undefined;
  extra: Record<string, unknown>;
  headers: Record<string, string>;

  constructor(detail?: string, options: { errors?: FieldError[]; extra?: Record<string, unknown>; headers?: Record<string, string> } = {}) {
    super(detail ?? "");
    this.errors = options.errors;
    this.extra = options.extra ?? {};
    this.headers = options.headers ?? {};
  }

  get detail(): string {
    return this.message || this.title;
  }
}

function kind(status: number, code: string, title: string): typeof DomainError {
  return class extends DomainError {
    override status = status;
    override code = code;
    override title = title;
  };
}

export const ValidationFailed = kind(400, "validation_error", "Invalid input");
export const MalformedJson = kind(400, "malformed_json", "Malformed JSON");
export const InvalidCharacters = kind(400, "invalid_characters", "Invalid characters");
export const JsonTooDeep = kind(400, "json_too_deep", "JSON nested too deeply");
export const DuplicateKey = kind(400, "duplicate_key", "Duplicate key");
export const InvalidCursor = kind(400, "invalid_cursor", "Invalid cursor");
export const NotAuthenticated = kind(401, "not_authenticated", "Authentication required");
export const InvalidToken = kind(401, "invalid_token", "Invalid token");
export const TokenExpired = kind(401, "token_expired", "Token expired");
export const TokenRevoked = kind(401, "token_revoked", "Token revoked");
export const InvalidAudience = kind(403, "invalid_audience", "Token for another service");
export const InsufficientScope = kind(403, "insufficient_scope", "Insufficient scope");
export const NotFound = kind(404, "not_found", "Not found");
export const MethodNotAllowed = kind(405, "method_not_allowed", "Method not allowed");
export const VersionMismatch = kind(412, "version_mismatch", "Version mismatch");
export const PayloadTooLarge = kind(413, "payload_too_large", "Request body too large");
export const UnsupportedMediaType = kind(415, "unsupported_media_type", "Unsupported media type");
export const DatabaseUnavailable = kind(503, "database_unavailable", "Database unavailable");
export const JwksUnavailable = kind(503, "jwks_unavailable", "Signing keys unavailable");
export const RevocationsUnavailable = kind(503, "revocations_unavailable", "Revocation list unavailable");

/** One field error, named like the Python services do: `payments[0].amount` and `#/payments/0/amount`. */
export function fieldError(path: (string | number)[], code: string, detail: string): FieldError {
  let field = "";
  for (const part of path) field += typeof part === "number" ? `[${part}]` : field ? `.${part}` : part;
  return { field: field || null, pointer: "#/" + path.map((p) => String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("/"), code, detail };
}
