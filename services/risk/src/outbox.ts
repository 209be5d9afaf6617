// The audit outbox: the ONE writer of the risk service's audit events (auditPutMany), in the caller's
// transaction. The relay (src/platform/relay.ts) sends the rows to the portal's ingest in service_seq order.
//
// service_seq is gapless and in commit order: the writer first bumps the singleton's last_seq by N with
// UPDATE … RETURNING, which row-locks it until commit, so a second writer waits and numbers after it.
import type { Tx } from "./db.ts";
import { idNew } from "./ids.ts";
import { OUTBOX_INSERT, OUTBOX_SEQ_BUMP } from "./queries.ts";

export const SERVICE = "risk";

export type ActorType = "user" | "client" | "system";

export interface Actor {
  type: ActorType;
  id: string;
  display: string;
}

/** Who, from where, under which request: shared by the events of one request. */
export interface AuditContext {
  actor: Actor;
  request_id: string;
  source_ip: string;
  user_agent: string;
}

export interface AuditEventInput {
  action: string;
  outcome?: "success" | "failure";
  object: { type: string; id: string };
  changes?: Record<string, [unknown, unknown]>;
  metadata?: Record<string, unknown>;
}

/** An event as the relay sends it (services/kit/audit.py audit_event + event_expand). */
export interface AuditEvent {
  id: string;
  service: string;
  service_seq: number;
  occurred_at: string;
  action: string;
  outcome: "success" | "failure";
  actor: Actor;
  object: { type: string; id: string };
  request_id: string;
  source_ip: string;
  user_agent: string;
  changes: Record<string, [unknown, unknown]>;
  metadata: Record<string, unknown>;
}

const ACTION = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;
export const SYSTEM_CONTEXT: AuditContext = {
  actor: { type: "system", id: SERVICE, display: SERVICE },
  request_id: "",
  source_ip: "",
  user_agent: "",
};

/** UTC with microseconds and Z, like the kit's isoformat (JavaScript clocks have milliseconds). */
export function isoMicros(moment: Date = new Date()): string {
  return moment.toISOString().replace(/Z$/, "000Z");
}

/** Write `events` (all sharing `context`) to the outbox in `tx`; returns them as they will be sent. */
export async function auditPutMany(tx: Tx, context: AuditContext, events: AuditEventInput[]): Promise<AuditEvent[]> {
  if (events.length === 0) return [];
  for (const event of events) {
    if (!ACTION.test(event.action)) throw new Error(`audit action must be dotted lower-case words, got ${event.action}`);
  }
  const bumped = await tx.query<{ last_seq: string }>(OUTBOX_SEQ_BUMP, [events.length]);
  const last = Number(bumped.rows[0].last_seq);
  const first = last - events.length + 1;
  const occurredAt = isoMicros();
  const full: AuditEvent[] = events.map((event, index) => ({
    id: idNew("evt"),
    service: SERVICE,
    service_seq: first + index,
    occurred_at: occurredAt,
    action: event.action,
    outcome: event.outcome ?? "success",
    actor: context.actor,
    object: { type: event.object.type, id: String(event.object.id) },
    request_id: context.request_id,
    source_ip: context.source_ip,
    user_agent: context.user_agent,
    changes: event.changes ?? {},
    metadata: event.metadata ?? {},
  }));
  await tx.query(OUTBOX_INSERT, [full.map((e) => e.id), full.map((e) => e.service_seq), full.map((e) => JSON.stringify(e))]);
  return full;
}

/** Wakes the relay right after a commit that wrote events: the relay (src/platform) sets `listener`;
 * services call `outboxWritten.notify()` after their transaction committed. */
export const outboxWritten = {
  listener: null as null | (() => void),
  notify(): void {
    const listener = this.listener;
    if (listener) setImmediate(listener);
  },
};
