// JWT authentication: portal-issued tokens verified locally with jose against the portal's JWKS (cached,
// refetched on an unknown kid), issuer JWT_ISSUER, audience exactly "risk" (a string: a list is refused like
// the kit does), algorithms EdDSA / Ed25519. Each verified call counts its client in `callers` (the catalog's
// observed dependencies).
import type { FastifyReply, FastifyRequest } from "fastify";
import { createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import {
  InsufficientScope, InvalidAudience, InvalidToken, JwksUnavailable, NotAuthenticated, RevocationsUnavailable, TokenExpired, TokenRevoked,
} from "./errors.ts";
import type { Actor } from "./outbox.ts";
import { callerCount } from "./platform/catalog.ts";

export const ALGORITHMS = ["EdDSA", "Ed25519"];

export interface Principal {
  clientId: string;
  scopes: Set<string>;
  claims: JWTPayload;
}

/** Revocations (src/main.ts points `check` at a RevocationWatcher, src/revocations.ts): a reason to refuse the
 * claims ("revoked", "rotated", or "unavailable" before a first list was had), or null. Off by default (tests). */
export const revocations: { check: (claims: JWTPayload) => string | null } = { check: () => null };

declare module "fastify" {
  interface FastifyRequest {
    principal?: Principal;
  }
}

export interface AuthOptions {
  jwksUrl: string;
  issuer: string;
  audience: string;
  callers: Map<string, number>;
  /** This process's own client id: its calls to itself are no catalog edge. */
  ownClientId?: string;
  /** For tests: a key set instead of the URL. */
  keySet?: JWTVerifyGetKey;
}

export interface Auth {
  verify(token: string): Promise<Principal>;
  authenticate(request: FastifyRequest): Promise<Principal>;
  requireScope(scope: string): (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
}

export function authCreate(options: AuthOptions): Auth {
  const remote = options.keySet ?? createRemoteJWKSet(new URL(options.jwksUrl), {
    timeoutDuration: 2000,
    cooldownDuration: 5000, // an unknown kid refetches at most this often
    cacheMaxAge: 300_000,
  });
  // "EdDSA" and "Ed25519" name the same signature (RFC 9864): a key published under one name verifies a token
  // whose header uses the other.
  const keySet: JWTVerifyGetKey = async (header, token) => {
    try {
      return await remote(header, token);
    } catch (error) {
      if (!(error instanceof joseErrors.JWKSNoMatchingKey) || !ALGORITHMS.includes(String(header.alg))) throw error;
      return remote({ ...header, alg: header.alg === "EdDSA" ? "Ed25519" : "EdDSA" }, token);
    }
  };
  const challenge = { "WWW-Authenticate": `Bearer realm="${options.audience}"` };

  async function verify(token: string): Promise<Principal> {
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new InvalidToken("Malformed bearer token.", { headers: challenge });
    }
    if (typeof header.kid !== "string" || typeof header.alg !== "string" || !ALGORITHMS.includes(header.alg)) {
      throw new InvalidToken("Token has no usable key id or algorithm.", { headers: challenge });
    }
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(token, keySet, {
        issuer: options.issuer,
        algorithms: ALGORITHMS,
        requiredClaims: ["exp", "iat", "iss", "aud", "sub"],
        clockTolerance: 30,
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw new TokenExpired("Token has expired.", { headers: challenge });
      if (error instanceof joseErrors.JWKSNoMatchingKey) throw new InvalidToken("Token signed by an unknown key.", { headers: challenge });
      if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid || !(error instanceof joseErrors.JOSEError)
        || /JSON Web Key Set HTTP response/.test((error as Error).message)) {
        throw new JwksUnavailable("The token signing keys could not be fetched; try again shortly.");
      }
      throw new InvalidToken(`Invalid token: ${(error as Error).message}`, { headers: challenge });
    }
    if (typeof claims.aud !== "string") throw new InvalidToken("A token must name exactly one audience.", { headers: challenge });
    if (claims.aud !== options.audience) throw new InvalidAudience(`Token is not valid for the '${options.audience}' service.`);
    const reason = revocations.check(claims);
    if (reason === "unavailable") throw new RevocationsUnavailable("The list of revoked clients could not be obtained yet; try again shortly.");
    if (reason !== null) {
      const what = reason === "revoked" ? "was revoked" : "obtained it with a secret that was rotated out";
      throw new TokenRevoked(`Token no longer valid: its client ${what}.`, { headers: challenge });
    }
    const clientId = String(claims.sub);
    callerCount(options.callers, clientId, options.ownClientId ?? "");
    return { clientId, scopes: new Set(String(claims.scope ?? "").split(" ").filter(Boolean)), claims };
  }

  async function authenticate(request: FastifyRequest): Promise<Principal> {
    if (request.principal) return request.principal;
    const header = request.headers.authorization;
    if (!header) throw new NotAuthenticated("Authentication credentials were not provided.", { headers: challenge });
    const parts = header.trim().split(/\s+/);
    if (parts[0].toLowerCase() !== "bearer") throw new NotAuthenticated("Authentication credentials were not provided.", { headers: challenge });
    if (parts.length !== 2) throw new InvalidToken("Authorization header must be 'Bearer <token>'.", { headers: challenge });
    request.principal = await verify(parts[1]);
    return request.principal;
  }

  return {
    verify,
    authenticate,
    requireScope(scope: string) {
      return async (request: FastifyRequest) => {
        const principal = await authenticate(request);
        if (!principal.scopes.has(scope)) throw new InsufficientScope(`Token lacks the scope(s): ${scope}.`);
      };
    },
  };
}

export function actorOf(principal: Principal | undefined): Actor {
  if (!principal) return { type: "system", id: "anonymous", display: "anonymous" };
  return { type: "client", id: principal.clientId, display: principal.clientId };
}
