// Revoked machine clients and rotated secrets (services/kit/revocations.py, the HTTP half): the portal publishes
// `atrium-revocations.json` beside its JWKS; this process polls it every JWT_REVOCATIONS_POLL_SECONDS (2 s) and
// refuses, in memory, tokens of a revoked client (issued at or before its `not_before`) or minted with a secret
// rotated out (claim `sgen`). Entries only ever merge (never loosened) and are dropped after their `until`.
// Until a first list is had, tokens are refused with 503 `revocations_unavailable` (as the kit does); if the
// portal goes away later, the last list is kept (logged as stale).
import type { FastifyBaseLogger } from "fastify";
import type { JWTPayload } from "jose";

export interface RevocationEntry {
  not_before: number | null;
  secret_generation: number;
  previous_valid_until: number | null;
  until: number;
}

export type Refusal = "revoked" | "rotated" | "unavailable" | null;

const FIRST_LOAD_RETRY_MS = 1000;
const STALE_LOG_MS = 60_000;

function num(value: unknown, name: string): number | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== "number" || !Number.isFinite(value)) throw new Error(`${name} is not a number`);
  return value;
}

/** The entries of a revocations document (throws on anything else). */
export function revocationsParse(document: unknown): Map<string, RevocationEntry> {
  const clients = (document as { clients?: unknown } | null)?.clients;
  if (clients === null || typeof clients !== "object" || Array.isArray(clients)) throw new Error("not a revocations document");
  const entries = new Map<string, RevocationEntry>();
  for (const [clientId, raw] of Object.entries(clients as Record<string, unknown>)) {
    if (raw === null || typeof raw !== "object") throw new Error("a revocation entry is a JSON object");
    const data = raw as Record<string, unknown>;
    const generation = data.secret_generation ?? 0;
    if (typeof generation !== "number" || !Number.isInteger(generation) || generation < 0) throw new Error("bad secret_generation");
    const until = num(data.until, "until");
    if (until === null) throw new Error("a revocation entry needs until");
    entries.set(clientId, {
      not_before: num(data.not_before, "not_before"),
      secret_generation: generation,
      previous_valid_until: num(data.previous_secret_valid_until, "previous_secret_valid_until"),
      until,
    });
  }
  return entries;
}

/** Why `claims` are refused by `entry` at `now` (seconds), or null. */
export function entryRefusal(entry: RevocationEntry, claims: JWTPayload, now: number): "revoked" | "rotated" | null {
  if (entry.not_before !== null) {
    const iat = claims.iat;
    if (typeof iat !== "number" || iat <= entry.not_before) return "revoked";
  }
  if (entry.secret_generation > 0) {
    const generation = claims.sgen ?? 0;
    if (typeof generation !== "number" || !Number.isInteger(generation)) return "rotated";
    if (generation < entry.secret_generation - 1) return "rotated";
    if (generation === entry.secret_generation - 1 && (entry.previous_valid_until === null || now >= entry.previous_valid_until)) return "rotated";
  }
  return null;
}

function merged(a: RevocationEntry, b: RevocationEntry): RevocationEntry {
  const notBefores = [a.not_before, b.not_before].filter((v): v is number => v !== null);
  const newer = b.secret_generation > a.secret_generation ? b : a;
  return {
    not_before: notBefores.length ? Math.max(...notBefores) : null,
    secret_generation: newer.secret_generation,
    previous_valid_until: newer.previous_valid_until,
    until: Math.max(a.until, b.until),
  };
}

export function revocationsUrlFor(jwksUrl: string): string {
  return new URL("atrium-revocations.json", jwksUrl).toString();
}

export class RevocationWatcher {
  readonly url: string;
  readonly intervalMs: number;
  private log: FastifyBaseLogger | null;
  private entries = new Map<string, RevocationEntry>();
  private loaded = false;
  private lastAttempt = 0;
  private lastSuccess = 0;
  private lastStaleLog = 0;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(options: { url: string; intervalMs?: number; log?: FastifyBaseLogger }) {
    this.url = options.url;
    this.intervalMs = options.intervalMs ?? 2000;
    this.log = options.log ?? null;
  }

  get ready(): boolean {
    return this.loaded;
  }

  /** Read the document once (concurrent callers share one fetch); never throws. */
  refresh(): Promise<void> {
    this.running ??= this.fetchOnce().finally(() => { this.running = null; });
    return this.running;
  }

  private async fetchOnce(): Promise<void> {
    this.lastAttempt = Date.now();
    try {
      const response = await fetch(this.url, { headers: { accept: "application/json" }, signal: AbortSignal.timeout(2000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const fresh = revocationsParse(await response.json());
      const now = Date.now() / 1000;
      for (const [clientId, entry] of fresh) {
        const known = this.entries.get(clientId);
        this.entries.set(clientId, known ? merged(known, entry) : entry);
      }
      for (const [clientId, entry] of this.entries) if (entry.until < now) this.entries.delete(clientId);
      if (!this.loaded) this.log?.info({ url: this.url, clients: this.entries.size }, "revocations.loaded");
      this.loaded = true;
      this.lastSuccess = Date.now();
    } catch (error) {
      const now = Date.now();
      if (now - this.lastStaleLog > STALE_LOG_MS) {
        this.lastStaleLog = now;
        this.log?.warn({ url: this.url, error: String((error as Error).message).slice(0, 200), loaded: this.loaded, since_success_ms: this.lastSuccess ? now - this.lastSuccess : null }, this.loaded ? "revocations.stale" : "revocations.unavailable");
      }
    }
  }

  start(): this {
    if (!this.timer) {
      this.timer = setInterval(() => void this.refresh(), this.intervalMs);
      this.timer.unref();
    }
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Why a verified token's claims are refused: an in-memory lookup, no I/O. */
  refusal(claims: JWTPayload): Refusal {
    if (!this.loaded) {
      if (Date.now() - this.lastAttempt > FIRST_LOAD_RETRY_MS) void this.refresh();
      return "unavailable";
    }
    const entry = this.entries.get(String(claims.sub ?? ""));
    return entry ? entryRefusal(entry, claims, Date.now() / 1000) : null;
  }
}
