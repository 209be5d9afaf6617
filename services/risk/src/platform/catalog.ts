// This service in the portal's catalog: registration, heartbeats and the calls it received — the Node twin of the
// kit's `CatalogAgent` (services/kit/catalog.py), speaking the same HTTP API with the same bodies:
//
// 1. registers: `PUT /api/v1/catalog/services/risk` with services/risk/manifest.json plus what only the running
//    process knows — `version` (package.json's), `base_url`, `health_url` (`/health/ready`) and `openapi_url`;
//    retried with capped backoff for as long as the portal does not answer (a portal outage never stops the service);
// 2. heartbeats its instance (`<host>:<pid>`): `POST .../instances/{instance}/heartbeat` with host, pid, version and
//    started_at, every `heartbeat_interval_seconds` the portal answers with; a 404 (the portal lost the service, e.g.
//    restored from a backup) registers again;
// 3. reports, after each heartbeat, the machine clients that called this process since the last report
//    (`POST .../calls` `{"callers": {client_id: count}}`), taken from the callers map auth increments; a failed report
//    is put back and goes out with the next one. At most 1,000 callers per report (the portal's limit); the rest wait.
import { readFileSync } from "node:fs";
import os from "node:os";

import { PortalClient, PortalError, refused, sleep, type Log, type PortalAnswer } from "./http.ts";

export const SLUG = "risk";
/** Callers remembered between reports (and sent in one report) at most: the kit's and the portal's limit. */
export const MAX_CALLERS = 1_000;
const MAX_CALLER_ID = 200;
const MAX_COUNT = 10 ** 12;
export const BACKOFF_MAX_SECONDS = 30;

const MANIFEST_URL = new URL("../../manifest.json", import.meta.url);
const PACKAGE_URL = new URL("../../package.json", import.meta.url);

/** Count one verified call from `clientId` in `callers` (what auth does per request): a new caller is only added
 * while fewer than MAX_CALLERS are remembered, and this process's own client is no edge. */
export function callerCount(callers: Map<string, number>, clientId: string, ownClientId = ""): void {
  if (!clientId || clientId === ownClientId) return;
  const count = callers.get(clientId);
  if (count !== undefined) callers.set(clientId, count + 1);
  else if (callers.size < MAX_CALLERS) callers.set(clientId, 1);
}

/** The package's version (package.json), "" when unreadable. */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(PACKAGE_URL, "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "";
  } catch {
    return "";
  }
}

/** The manifest kept with the code (services/risk/manifest.json). */
export function manifestLoad(): Record<string, unknown> {
  return JSON.parse(readFileSync(MANIFEST_URL, "utf8")) as Record<string, unknown>;
}

/** What this web process registers: the code's manifest, its version and the URLs it serves on (as the kit's
 * `web_manifest`). */
export function webManifest(serviceUrl: string, version = packageVersion()): Record<string, unknown> {
  const manifest = manifestLoad();
  if (manifest.version === undefined && version) manifest.version = version;
  const base = serviceUrl.replace(/\/+$/, "");
  if (base) {
    manifest.base_url = base;
    manifest.health_url = `${base}/health/ready`;
    manifest.openapi_url = `${base}/api/schema`;
  }
  return manifest;
}

export interface CatalogAgentOptions {
  client: PortalClient;
  callers: Map<string, number>;
  log: Log;
  manifest: Record<string, unknown> | (() => Record<string, unknown>);
  slug?: string;
  instance?: string;
  pid?: number;
  startedAt?: Date;
  /** Seconds between heartbeats until the portal says otherwise (default 10). */
  interval?: number;
  /** Per call, in milliseconds (default 3 s, the kit's). */
  timeoutMs?: number;
  /** Told each time the service is (re-)registered. */
  onRegistered?: () => void;
}

export class CatalogAgent {
  readonly slug: string;
  readonly instance: string;
  readonly pid: number;
  readonly startedAt: Date;
  interval: number;
  registered = false;
  registrations = 0;
  beats = 0;
  reports = 0;
  failures = 0;
  version = "";
  private readonly client: PortalClient;
  private readonly callers: Map<string, number>;
  private readonly log: Log;
  private readonly manifestSource: CatalogAgentOptions["manifest"];
  private readonly timeoutMs: number;
  private readonly onRegistered: (() => void) | undefined;
  private readonly path: string;
  private readonly halt = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(options: CatalogAgentOptions) {
    this.slug = options.slug ?? SLUG;
    this.pid = options.pid ?? process.pid;
    this.instance = options.instance ?? `${os.hostname()}:${this.pid}`;
    this.startedAt = options.startedAt ?? new Date();
    this.interval = options.interval ?? 10;
    this.client = options.client;
    this.callers = options.callers;
    this.log = options.log;
    this.manifestSource = options.manifest;
    this.timeoutMs = options.timeoutMs ?? 3_000;
    this.onRegistered = options.onRegistered;
    this.path = `/api/v1/catalog/services/${encodeURIComponent(this.slug)}`;
  }

  start(): this {
    this.loop ??= this.run();
    return this;
  }

  /** Stop the loop (waiting for its call in flight, `timeoutMs` at most), then send the calls counted since the last
   * report (best effort, bounded by `timeoutMs`). */
  async stop(options: { report?: boolean } = {}): Promise<void> {
    this.halt.abort();
    if (this.loop) await this.loop;
    if ((options.report ?? true) && this.registered) {
      try {
        await this.report(AbortSignal.timeout(this.timeoutMs));
      } catch (error) {
        this.log.warn({ slug: this.slug, error: String((error as Error).message ?? error).slice(0, 300) }, "catalog.agent_final_report_failed");
      }
    }
  }

  private async run(): Promise<void> {
    while (!this.halt.signal.aborted) {
      let wait: number;
      try {
        await this.cycle(this.halt.signal);
        this.failures = 0;
        wait = this.interval;
      } catch (error) {
        if (this.halt.signal.aborted) break;
        this.failures += 1;
        wait = Math.min(BACKOFF_MAX_SECONDS, 0.5 * 2 ** Math.min(this.failures, 6));
        const fields = { slug: this.slug, attempt: this.failures, retry_in: wait, error: String((error as Error).message ?? error).slice(0, 300) };
        if (this.failures === 1 || this.failures % 10 === 0) this.log.warn(fields, "catalog.agent_failed");
        else this.log.debug(fields, "catalog.agent_failed");
      }
      await sleep(wait * 1000, this.halt.signal);
    }
  }

  /** One turn of the loop: register if needed, heartbeat, report. */
  async cycle(signal?: AbortSignal): Promise<void> {
    if (!this.registered) await this.register(signal);
    await this.heartbeat(signal);
    await this.report(signal);
  }

  private manifest(): Record<string, unknown> {
    return typeof this.manifestSource === "function" ? this.manifestSource() : { ...this.manifestSource };
  }

  private call(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<PortalAnswer> {
    return this.client.request(method, path, body, { signal, timeoutMs: this.timeoutMs });
  }

  async register(signal?: AbortSignal): Promise<void> {
    const manifest = this.manifest();
    const answer = await this.call("PUT", this.path, manifest, signal);
    if (answer.status !== 200 && answer.status !== 201) throw refused("registration", answer);
    if (!answer.body || typeof answer.body !== "object") {
      throw new PortalError(`registration: HTTP ${answer.status} with a body that is not JSON`, { status: answer.status, code: "portal_bad_answer" });
    }
    this.version = String(manifest.version ?? "").slice(0, 100);
    this.registered = true;
    this.registrations += 1;
    const version = (answer.body as { version?: unknown } | undefined)?.version;
    this.log.info({ slug: this.slug, instance: this.instance, version: version ?? this.version }, "catalog.registered");
    this.onRegistered?.();
  }

  async heartbeat(signal?: AbortSignal): Promise<void> {
    const answer = await this.call(
      "POST",
      `${this.path}/instances/${encodeURIComponent(this.instance)}/heartbeat`,
      { host: os.hostname().slice(0, 255), pid: this.pid, version: this.version, started_at: this.startedAt.toISOString() },
      signal,
    );
    if (answer.status === 404) this.registered = false; // the portal lost the service: register again
    if (answer.status !== 200 && answer.status !== 201) throw refused("heartbeat", answer);
    if (!answer.body || typeof answer.body !== "object") throw new PortalError(`heartbeat: HTTP ${answer.status} with a body that is not JSON`, { status: answer.status, code: "portal_bad_answer" });
    this.beats += 1;
    const interval = (answer.body as { heartbeat_interval_seconds?: unknown }).heartbeat_interval_seconds;
    if (typeof interval === "number" && Number.isFinite(interval) && interval > 0) this.interval = Math.min(interval, 3600);
  }

  /** Send the calls counted since the last report; on failure they are put back for the next one. */
  async report(signal?: AbortSignal): Promise<void> {
    const counts = takeCallers(this.callers);
    if (counts.size === 0) return;
    let answer: PortalAnswer;
    try {
      answer = await this.call("POST", `${this.path}/calls`, { callers: Object.fromEntries(counts) }, signal);
    } catch (error) {
      giveBack(this.callers, counts);
      throw error;
    }
    if (answer.status === 200 && answer.body && typeof answer.body === "object") {
      this.reports += 1;
      return;
    }
    if (answer.status === 400) {
      // Refused as invalid: sending it again would be refused again, forever. Say so and drop it.
      this.log.error({ slug: this.slug, callers: counts.size, detail: answer.text.slice(0, 300) }, "catalog.calls_report_refused");
      return;
    }
    giveBack(this.callers, counts);
    throw refused("calls report", answer);
  }
}

/** Up to MAX_CALLERS valid entries of `callers`, removed from it (the rest stay for the next report). Invalid
 * entries (an empty or over-long id, a count that is not a positive integer) are dropped: the portal would refuse
 * the whole report for them. */
export function takeCallers(callers: Map<string, number>): Map<string, number> {
  const taken = new Map<string, number>();
  for (const [caller, count] of callers) {
    if (taken.size >= MAX_CALLERS) break;
    callers.delete(caller);
    if (!caller || caller.length > MAX_CALLER_ID || !Number.isInteger(count) || count <= 0) continue;
    taken.set(caller, Math.min(count, MAX_COUNT));
  }
  return taken;
}

/** Put back counts taken for a report that failed (bounded like `callerCount`). */
export function giveBack(callers: Map<string, number>, counts: Map<string, number>): void {
  for (const [caller, count] of counts) {
    const current = callers.get(caller);
    if (current !== undefined) callers.set(caller, Math.min(current + count, MAX_COUNT));
    else if (callers.size < MAX_CALLERS) callers.set(caller, count);
  }
}
