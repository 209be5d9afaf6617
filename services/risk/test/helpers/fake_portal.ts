// A fake Atrium portal for the platform tests, a real HTTP server on 127.0.0.1: the token endpoint, the catalog's
// registration / heartbeat / calls endpoints, and the audit ingest with the contract's checks (envelope, identity,
// duplicates, conflicts, gaps with expected_seq / received_seq). Its `mode` makes it hostile: "down" (connections
// dropped), "500", "garbage" (200 with a body that is not JSON), "hang" (never answers).
import http from "node:http";
import type { AddressInfo } from "node:net";

export type Mode = "ok" | "down" | "500" | "garbage" | "hang";

export interface Recorded {
  id: string;
  service: string;
  service_seq: number;
  event: Record<string, unknown>;
}

const MANIFEST_FIELDS = new Set([
  "display_name", "description", "part_of", "role", "team", "tier", "lifecycle", "repository_url", "docs_url",
  "base_url", "health_url", "openapi_url", "version", "queues", "tags", "health_interval_seconds", "dependencies",
]);
const HEARTBEAT_FIELDS = new Set(["host", "pid", "version", "started_at"]);

export class FakePortal {
  server: http.Server;
  port = 0;
  mode: Mode = "ok";
  /** Modes per route prefix, winning over `mode` (e.g. {"/api/v1/audit": "500"}). */
  routeModes = new Map<string, Mode>();
  clients = new Map<string, string>([["risk", "risk-secret"]]);
  expiresIn = 900;
  tokensIssued = 0;
  tokenForms: URLSearchParams[] = [];
  private tokens = new Map<string, { clientId: string; audience: string }>();
  /** slug → manifest, registered_by */
  services = new Map<string, { manifest: Record<string, unknown>; registeredBy: string }>();
  registrations = 0;
  heartbeats: { instance: string; body: Record<string, unknown> }[] = [];
  heartbeatInterval = 10;
  calls = new Map<string, number>();
  callReports: Record<string, number>[] = [];
  /** Every accepted event in the order chained. */
  events: Recorded[] = [];
  private byId = new Map<string, Recorded>();
  private byPlace = new Map<string, Recorded>();
  private highest = new Map<string, number>();
  ingestRequests = 0;
  /** The raw bodies of the ingest requests and the number of events in each. */
  ingestRaw: string[] = [];
  batchSizes: number[] = [];
  duplicates = 0;
  refusals: { code: string; status: number; detail?: unknown }[] = [];
  /** Fail the next N requests to a path prefix with this status (then answer normally). */
  failNext = new Map<string, { status: number; count: number }>();
  private sockets = new Set<import("node:net").Socket>();

  constructor() {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** Really stop listening (connection refused) until `start(this.port)` again. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  /** Forget everything recorded (between tests). */
  reset(): void {
    this.mode = "ok";
    this.routeModes.clear();
    this.failNext.clear();
    this.services.clear();
    this.registrations = 0;
    this.heartbeats = [];
    this.calls.clear();
    this.callReports = [];
    this.events = [];
    this.byId.clear();
    this.byPlace.clear();
    this.highest.clear();
    this.ingestRequests = 0;
    this.ingestRaw = [];
    this.batchSizes = [];
    this.duplicates = 0;
    this.refusals = [];
    this.tokensIssued = 0;
    this.tokenForms = [];
  }

  /** Register `slug` as owned by `clientId` (what the catalog agent does first). */
  registerAs(slug: string, clientId = "risk"): void {
    this.services.set(slug, { manifest: { display_name: slug }, registeredBy: clientId });
  }

  /** Forget a service (as a portal restored from an old backup). */
  forget(slug: string): void {
    this.services.delete(slug);
  }

  /** Forget the events of `service` from `fromSeq` on (a portal restored from a backup). */
  loseEventsFrom(service: string, fromSeq: number): void {
    this.events = this.events.filter((e) => !(e.service === service && e.service_seq >= fromSeq));
    for (const [id, e] of this.byId) {
      if (e.service === service && e.service_seq >= fromSeq) {
        this.byId.delete(id);
        this.byPlace.delete(`${e.service}#${e.service_seq}`);
      }
    }
    this.highest.set(service, fromSeq - 1);
  }

  seqs(service = "risk"): number[] {
    return this.events.filter((e) => e.service === service).map((e) => e.service_seq);
  }

  private modeFor(path: string): Mode {
    for (const [prefix, mode] of this.routeModes) if (path.startsWith(prefix)) return mode;
    return this.mode;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname;
    const mode = this.modeFor(path);
    if (mode === "down") {
      req.socket.destroy();
      return;
    }
    if (mode === "hang") return; // never answers (the socket is destroyed by stop())
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    if (mode === "500") return send(res, 500, { code: "internal_error", status: 500 });
    if (mode === "garbage") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>not a portal</html>");
      return;
    }
    for (const [prefix, failure] of this.failNext) {
      if (path.startsWith(prefix) && failure.count > 0) {
        failure.count -= 1;
        return send(res, failure.status, { code: `forced_${failure.status}`, status: failure.status });
      }
    }
    if (req.method === "POST" && path === "/api/v1/auth/token") return this.token(res, new URLSearchParams(raw));
    const caller = this.bearer(req);
    if (!caller) return send(res, 401, { code: "not_authenticated", status: 401 });
    let body: unknown;
    try {
      body = raw ? JSON.parse(raw) : {};
    } catch {
      return send(res, 400, { code: "malformed_json", status: 400 });
    }
    const catalog = path.match(/^\/api\/v1\/catalog\/services\/([^/]+)(?:\/(calls)|\/instances\/([^/]+)\/heartbeat)?$/);
    if (catalog) {
      if (caller.audience !== "portal") return send(res, 403, { code: "invalid_audience", status: 403 });
      const slug = decodeURIComponent(catalog[1]);
      if (req.method === "PUT" && !catalog[2] && !catalog[3]) return this.register(res, slug, body, caller.clientId);
      const service = this.services.get(slug);
      if (!service) return send(res, 404, { code: "not_found", status: 404 });
      if (service.registeredBy !== caller.clientId) return send(res, 403, { code: "service_registered_by_another_client", status: 403 });
      if (req.method === "POST" && catalog[2] === "calls") return this.callsReport(res, body);
      if (req.method === "POST" && catalog[3]) return this.heartbeat(res, decodeURIComponent(catalog[3]), body);
    }
    if (req.method === "POST" && path === "/api/v1/audit/events:ingest") {
      this.ingestRaw.push(raw);
      return this.ingest(res, body, caller.clientId);
    }
    return send(res, 404, { code: "not_found", status: 404 });
  }

  private bearer(req: http.IncomingMessage): { clientId: string; audience: string } | undefined {
    const header = req.headers.authorization ?? "";
    return header.startsWith("Bearer ") ? this.tokens.get(header.slice(7)) : undefined;
  }

  private token(res: http.ServerResponse, form: URLSearchParams): void {
    this.tokenForms.push(form);
    const clientId = form.get("client_id") ?? "";
    if (form.get("grant_type") !== "client_credentials") return send(res, 400, { code: "unsupported_grant_type", status: 400 });
    if (!clientId || this.clients.get(clientId) !== form.get("client_secret")) return send(res, 401, { code: "invalid_client", status: 401 });
    this.tokensIssued += 1;
    const token = `tok-${this.tokensIssued}-${Math.random().toString(36).slice(2)}`;
    this.tokens.set(token, { clientId, audience: form.get("audience") ?? "" });
    send(res, 200, { access_token: token, token_type: "Bearer", expires_in: this.expiresIn, scope: "catalog:register audit:ingest" });
  }

  /** Revoke every token issued so far (the next call with one is a 401). */
  revokeTokens(): void {
    this.tokens.clear();
  }

  private register(res: http.ServerResponse, slug: string, body: unknown, clientId: string): void {
    if (!body || typeof body !== "object") return send(res, 400, { code: "validation_error", status: 400 });
    const unknown = Object.keys(body).filter((k) => !MANIFEST_FIELDS.has(k));
    if (unknown.length) return send(res, 400, { code: "validation_error", status: 400, errors: unknown.map((f) => ({ field: f, code: "unknown_field" })) });
    const manifest = body as Record<string, unknown>;
    if (typeof manifest.display_name !== "string") return send(res, 400, { code: "validation_error", status: 400 });
    const existing = this.services.get(slug);
    if (existing && existing.registeredBy !== clientId) return send(res, 403, { code: "service_registered_by_another_client", status: 403 });
    this.services.set(slug, { manifest, registeredBy: clientId });
    this.registrations += 1;
    send(res, existing ? 200 : 201, { slug, ...manifest });
  }

  private heartbeat(res: http.ServerResponse, instance: string, body: unknown): void {
    const fields = body && typeof body === "object" ? Object.keys(body) : [];
    if (fields.some((k) => !HEARTBEAT_FIELDS.has(k))) return send(res, 400, { code: "validation_error", status: 400 });
    const beat = body as Record<string, unknown>;
    if (typeof beat.started_at === "string" && Number.isNaN(Date.parse(beat.started_at))) return send(res, 400, { code: "validation_error", status: 400 });
    this.heartbeats.push({ instance, body: beat });
    send(res, this.heartbeats.length === 1 ? 201 : 200, { instance: { instance }, heartbeat_interval_seconds: this.heartbeatInterval });
  }

  private callsReport(res: http.ServerResponse, body: unknown): void {
    const callers = (body as { callers?: unknown }).callers;
    if (!callers || typeof callers !== "object" || Object.keys(body as object).length !== 1) return send(res, 400, { code: "validation_error", status: 400 });
    const entries = Object.entries(callers as Record<string, unknown>);
    if (entries.length > 1000) return send(res, 400, { code: "validation_error", status: 400 });
    for (const [caller, count] of entries) {
      if (!caller || caller.length > 200 || !Number.isInteger(count) || (count as number) < 0) return send(res, 400, { code: "validation_error", status: 400 });
    }
    this.callReports.push(callers as Record<string, number>);
    for (const [caller, count] of entries) this.calls.set(caller, (this.calls.get(caller) ?? 0) + (count as number));
    send(res, 200, { callers: entries.length });
  }

  private ingest(res: http.ServerResponse, body: unknown, clientId: string): void {
    this.ingestRequests += 1;
    const refuse = (status: number, payload: Record<string, unknown>): void => {
      this.refusals.push({ code: String(payload.code), status, detail: payload });
      send(res, status, { status, ...payload });
    };
    const events = (body as { events?: unknown }).events;
    if (!Array.isArray(events) || events.length < 1 || events.length > 1000) return refuse(400, { code: "validation_error" });
    this.batchSizes.push(events.length);
    for (const [i, e] of events.entries()) {
      const ev = e as Record<string, unknown>;
      if (!ev || typeof ev.id !== "string" || typeof ev.service !== "string" || !Number.isInteger(ev.service_seq)) {
        return refuse(400, { code: "validation_error", errors: [{ pointer: `/events/${i}` }] });
      }
    }
    for (const e of events as Recorded["event"][]) {
      const service = this.services.get(e.service as string);
      if (!service) return refuse(403, { code: "audit_service_unregistered" });
      if (service.registeredBy !== clientId) return refuse(403, { code: "audit_service_mismatch" });
    }
    const fresh: Record<string, unknown>[] = [];
    let duplicates = 0;
    for (const e of events as Record<string, unknown>[]) {
      const known = this.byId.get(e.id as string);
      const place = this.byPlace.get(`${e.service}#${e.service_seq}`);
      if (known && known.service === e.service && known.service_seq === e.service_seq) duplicates += 1;
      else if (known || place) return refuse(409, { code: "audit_sequence_conflict" });
      else fresh.push(e);
    }
    fresh.sort((a, b) => (a.service_seq as number) - (b.service_seq as number));
    const next = new Map(this.highest);
    for (const e of fresh) {
      const service = e.service as string;
      const expected = (next.get(service) ?? 0) + 1;
      if (e.service_seq !== expected) return refuse(409, { code: "audit_sequence_gap", expected_seq: expected, received_seq: e.service_seq });
      next.set(service, expected);
    }
    for (const e of fresh) {
      const recorded = { id: e.id as string, service: e.service as string, service_seq: e.service_seq as number, event: e };
      this.events.push(recorded);
      this.byId.set(recorded.id, recorded);
      this.byPlace.set(`${recorded.service}#${recorded.service_seq}`, recorded);
    }
    this.highest = next;
    this.duplicates += duplicates;
    send(res, 200, {
      inserted: fresh.length,
      duplicates,
      parked: 0,
      first_seq: fresh.length ? fresh[0].service_seq : null,
      last_seq: fresh.length ? fresh[fresh.length - 1].service_seq : null,
    });
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": status >= 400 ? "application/problem+json" : "application/json" });
  res.end(text);
}
