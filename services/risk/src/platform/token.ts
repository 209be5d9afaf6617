// This process's machine identity: access tokens from the portal's token endpoint (OAuth 2.0 client-credentials
// grant), one per audience, cached until shortly before they expire — the Node twin of the kit's
// `ClientCredentials` (services/kit/http.py).
//
// - The form is the kit's: grant_type=client_credentials, client_id, client_secret, audience (and scope, only when
//   asked for: without it the portal grants every scope the client holds for the audience, so the catalog agent and
//   the outbox relay share one `portal` token, as the Python processes do).
// - A cached token is renewed 30 s before `expires_in` runs out (at least 5 s of use), so it never expires in flight.
// - Concurrent callers wanting the same token share one request (single flight).
// - Every failure is a `TokenUnavailable` (code `token_unavailable`) saying what went wrong, never a raw error.

export class TokenUnavailable extends Error {
  readonly code = "token_unavailable";
  /** The token endpoint's HTTP status when it answered, else undefined (unreachable, timed out). */
  readonly status: number | undefined;

  constructor(message: string, status?: number) {
    super(message);
    this.name = "TokenUnavailable";
    this.status = status;
  }
}

export interface ClientCredentialsOptions {
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  /** Per token request, in milliseconds (default 5 s, the kit's). */
  timeoutMs?: number;
  /** Seconds before expiry a cached token is renewed (default 30, the kit's). */
  renewBeforeSeconds?: number;
  /** The clock, in milliseconds (tests). */
  now?: () => number;
}

interface Cached {
  token: string;
  renewAt: number;
}

const MIN_LIFETIME_SECONDS = 5;

export class ClientCredentials {
  readonly tokenUrl: string;
  readonly clientId: string;
  private readonly clientSecret: string;
  private readonly timeoutMs: number;
  private readonly renewBefore: number;
  private readonly now: () => number;
  private readonly cache = new Map<string, Cached>();
  private readonly inflight = new Map<string, Promise<string>>();
  /** Tokens obtained from the endpoint so far (diagnostics, tests). */
  fetched = 0;

  constructor(options: ClientCredentialsOptions) {
    this.tokenUrl = options.tokenUrl;
    this.clientId = options.clientId;
    this.clientSecret = options.clientSecret;
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.renewBefore = options.renewBeforeSeconds ?? 30;
    this.now = options.now ?? Date.now;
  }

  /** A bearer token for `audience` (with exactly `scope` when given), from the cache while it is fresh. */
  async tokenFor(audience: string, scope?: string, signal?: AbortSignal): Promise<string> {
    const key = scope ? `${audience} ${scope}` : audience;
    const cached = this.cache.get(key);
    if (cached && cached.renewAt > this.now()) return cached.token;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.fetchToken(key, audience, scope, signal).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  /** Forget the cached token for `audience` (an upstream answered 401 with it: the next call gets a new one). */
  invalidate(audience: string, scope?: string): void {
    this.cache.delete(scope ? `${audience} ${scope}` : audience);
  }

  private async fetchToken(key: string, audience: string, scope: string | undefined, signal?: AbortSignal): Promise<string> {
    const form = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: this.clientId,
      client_secret: this.clientSecret,
      audience,
    });
    if (scope) form.set("scope", scope);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    let response: Response;
    let text: string;
    try {
      response = await fetch(this.tokenUrl, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body: form,
        signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
        redirect: "error",
      });
      text = await response.text();
    } catch (error) {
      const why = timeout.aborted ? `no answer within ${this.timeoutMs} ms` : describe(error);
      throw new TokenUnavailable(`Token endpoint ${this.tokenUrl} unreachable: ${why}`);
    }
    if (response.status !== 200) {
      let code = "";
      try {
        const problem = JSON.parse(text) as { code?: unknown; error?: unknown };
        code = String(problem.code ?? problem.error ?? "");
      } catch {
        // not JSON: the status says enough
      }
      throw new TokenUnavailable(
        `Token endpoint refused client ${this.clientId} for audience ${audience} (${response.status}${code ? ` ${code}` : ""}).`,
        response.status,
      );
    }
    let body: { access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new TokenUnavailable(`Token endpoint answered 200 with a body that is not JSON: ${text.slice(0, 100)}`, 200);
    }
    if (!body || typeof body !== "object" || typeof body.access_token !== "string" || body.access_token === "") {
      throw new TokenUnavailable("Token endpoint answered 200 without an access_token.", 200);
    }
    const expiresIn = Number(body.expires_in ?? 60);
    const lifetime = Math.max((Number.isFinite(expiresIn) ? expiresIn : 60) - this.renewBefore, MIN_LIFETIME_SECONDS);
    this.cache.set(key, { token: body.access_token, renewAt: this.now() + lifetime * 1000 });
    this.fetched += 1;
    return body.access_token;
  }
}

export function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? `: ${cause.message}` : "";
    return `${error.name}: ${error.message}${detail}`.slice(0, 300);
  }
  return String(error).slice(0, 300);
}
