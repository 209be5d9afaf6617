// JSON calls to the portal with this process's token: bounded in time, never throwing anything but `PortalError`.
import { ClientCredentials, TokenUnavailable, describe } from "./token.ts";

/** A logger shaped like Fastify's (pino): `log.info({fields}, "event.name")`. */
export interface Log {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** A portal call failed: `status` when the portal answered, `code` its problem code (or ours). */
export class PortalError extends Error {
  readonly status: number | undefined;
  readonly code: string;
  readonly body: unknown;

  constructor(message: string, options: { status?: number; code: string; body?: unknown }) {
    super(message);
    this.name = "PortalError";
    this.status = options.status;
    this.code = options.code;
    this.body = options.body;
  }
}

export interface PortalAnswer {
  status: number;
  /** The parsed JSON body, or undefined when it was not JSON. */
  body: unknown;
  text: string;
}

export interface PortalClientOptions {
  baseUrl: string;
  credentials: ClientCredentials;
  audience?: string;
  timeoutMs?: number;
  userAgent?: string;
}

export class PortalClient {
  readonly baseUrl: string;
  readonly credentials: ClientCredentials;
  readonly audience: string;
  readonly timeoutMs: number;
  private readonly userAgent: string;

  constructor(options: PortalClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.credentials = options.credentials;
    this.audience = options.audience ?? "portal";
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.userAgent = options.userAgent ?? "atrium-risk";
  }

  /** Send `body` as JSON with a bearer token; the answer whatever its status. Throws `PortalError` when there is no
   * answer (token unavailable, unreachable, timed out — `timeoutMs` covers the whole exchange, body included). */
  async request(
    method: string,
    path: string,
    body?: unknown,
    options: { signal?: AbortSignal; timeoutMs?: number; json?: string } = {},
  ): Promise<PortalAnswer> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
    let token: string;
    try {
      token = await this.credentials.tokenFor(this.audience, undefined, signal);
    } catch (error) {
      if (timeout.aborted) {
        throw new PortalError(`${method} ${path}: token endpoint: no answer within ${timeoutMs} ms`, { code: "token_unavailable" });
      }
      if (error instanceof TokenUnavailable) throw new PortalError(error.message, { status: error.status, code: error.code });
      throw new PortalError(`token: ${describe(error)}`, { code: "token_unavailable" });
    }
    let response: Response;
    let text: string;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          accept: "application/json",
          "user-agent": this.userAgent,
          ...(body === undefined && options.json === undefined ? {} : { "content-type": "application/json" }),
        },
        // `json`: a body already in JSON text (the relay splices stored payloads without parsing them).
        body: options.json ?? (body === undefined ? undefined : JSON.stringify(body)),
        signal,
        redirect: "error",
      });
      text = await response.text();
    } catch (error) {
      const why = timeout.aborted ? `no answer within ${timeoutMs} ms` : options.signal?.aborted ? "stopped" : describe(error);
      throw new PortalError(`${method} ${path}: ${why}`, { code: timeout.aborted ? "portal_timeout" : "portal_unreachable" });
    }
    if (response.status === 401) this.credentials.invalidate(this.audience); // revoked or re-keyed: a fresh one next time
    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return { status: response.status, body: parsed, text };
  }
}

/** The problem code of an answer (`code` of an RFC 9457 body), else `http_<status>`. */
export function problemCode(answer: PortalAnswer): string {
  const body = answer.body as { code?: unknown } | undefined;
  return body && typeof body === "object" && typeof body.code === "string" ? body.code : `http_${answer.status}`;
}

/** An error for an answer that is not what was wanted: status, code and the start of the body. */
export function refused(doing: string, answer: PortalAnswer): PortalError {
  return new PortalError(`${doing}: HTTP ${answer.status} ${problemCode(answer)}: ${answer.text.slice(0, 300)}`, {
    status: answer.status,
    code: problemCode(answer),
    body: answer.body,
  });
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
