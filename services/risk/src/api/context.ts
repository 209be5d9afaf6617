// What routes read from a request: the audit context (actor, request id, address, user agent), the full URL.
import type { FastifyRequest } from "fastify";
import { actorOf } from "../auth.ts";
import type { AuditContext } from "../outbox.ts";

const MAX_USER_AGENT = 500;

export function auditContextOf(request: FastifyRequest): AuditContext {
  return {
    actor: actorOf(request.principal),
    request_id: String(request.id),
    source_ip: String(request.ip ?? "").slice(0, 64),
    user_agent: String(request.headers["user-agent"] ?? "").slice(0, MAX_USER_AGENT),
  };
}

export function fullUrl(request: FastifyRequest): string {
  return `${request.protocol}://${request.host}${request.url}`;
}
