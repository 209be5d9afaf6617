// Settings of the risk service, read once from the environment (the same names as the Python services).

export type AtriumEnv = "dev" | "test" | "production";

export interface Config {
  env: AtriumEnv;
  /** The risk database (libpq URL; `?host=/socket/dir` works). */
  databaseUrl: string;
  bindHost: string;
  port: number;
  /** How other processes reach this one: http://host:port. */
  serviceUrl: string;
  portalUrl: string;
  tokenUrl: string;
  jwksUrl: string;
  jwtIssuer: string;
  jwtAudience: string;
  /** The portal's revocation list (default: atrium-revocations.json beside the JWKS); "" turns the check off. */
  revocationsUrl: string;
  revocationsPollSeconds: number;
  clientId: string;
  clientSecret: string;
  catalogRegister: boolean;
  /** "json" (always in production) or "console": one readable line per event, as the Python services. */
  logFormat: "json" | "console";
  /** Console lines: the level in colour (ATRIUM_LOG_COLOR=1/0, else when stdout is a terminal). */
  logColor: boolean;
  logLevel: string;
  /** Largest request body accepted, in bytes (413 `payload_too_large` beyond). */
  bodyLimit: number;
  /** Connections in the pg pool. */
  poolSize: number;
  /** Published outbox rows are deleted this many days after they were written (the kit's setting, default 7). */
  outboxRetentionDays: number;
}

function flag(value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value.trim() === "") return fallback;
  return ["1", "true", "yes", "on"].includes(value.trim().toLowerCase());
}

function integer(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value.trim() === "") return fallback;
  const parsed = /^\s*\d+\s*$/.test(value) ? Number(value) : NaN; // digits only: Number() takes "1e3", "0x10"
  if (!Number.isSafeInteger(parsed)) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(value)}`);
  return parsed;
}

/** A whole number of at least `minimum` (refused with its name otherwise), or `fallback` when unset. */
function integerAtLeast(value: string | undefined, fallback: number, name: string, minimum: number): number {
  if (value === undefined || value.trim() === "") return fallback;
  const parsed = /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(parsed) || parsed < minimum) {
    throw new Error(`${name} must be a whole number of at least ${minimum}, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/** pino's level for LOG_LEVEL as every Atrium process reads it (Python's names, any case: WARNING, CRITICAL). */
export function logLevel(value: string): string {
  const name = value.trim().toLowerCase();
  const level = ({ warning: "warn", critical: "fatal", notset: "trace" } as Record<string, string>)[name] ?? name;
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(level)) {
    throw new Error(`LOG_LEVEL must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG (or pino's names), got ${JSON.stringify(value)}`);
  }
  return level;
}

/** ATRIUM_LOG_FORMAT: json or console; console is json in production (as the kit's logging_config). */
export function logFormat(value: string, env: AtriumEnv): "json" | "console" {
  const format = value.trim().toLowerCase();
  if (format !== "json" && format !== "console") throw new Error(`ATRIUM_LOG_FORMAT must be json or console, got ${JSON.stringify(value)}`);
  return env === "production" ? "json" : format;
}

function stripSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const atriumEnv = (env.ATRIUM_ENV ?? "dev") as AtriumEnv;
  if (!["dev", "test", "production"].includes(atriumEnv)) throw new Error(`ATRIUM_ENV must be dev, test or production, got ${atriumEnv}`);
  const base = integer(env.ATRIUM_PORT_BASE, 8000, "ATRIUM_PORT_BASE");
  const port = integer(env.RISK_PORT, base + 4, "RISK_PORT");
  const bindHost = env.BIND_HOST || "127.0.0.1";
  const portalUrl = stripSlash(env.ATRIUM_PORTAL_URL || `http://127.0.0.1:${base}`);
  const advertisedHost = bindHost === "0.0.0.0" || bindHost === "::" ? "127.0.0.1" : bindHost;
  return {
    env: atriumEnv,
    databaseUrl: env.RISK_DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/atrium_risk",
    bindHost,
    port,
    serviceUrl: stripSlash(env.RISK_SERVICE_URL || env.RISK_URL || `http://${advertisedHost}:${port}`),
    portalUrl,
    tokenUrl: env.ATRIUM_TOKEN_URL || `${portalUrl}/api/v1/auth/token`,
    jwksUrl: env.JWT_JWKS_URL || `${portalUrl}/.well-known/jwks.json`,
    jwtIssuer: env.JWT_ISSUER || "atrium-portal",
    jwtAudience: "risk",
    revocationsUrl: env.JWT_REVOCATIONS_URL ?? new URL("atrium-revocations.json", env.JWT_JWKS_URL || `${portalUrl}/.well-known/jwks.json`).toString(),
    revocationsPollSeconds: Number(env.JWT_REVOCATIONS_POLL_SECONDS || 2) > 0 ? Number(env.JWT_REVOCATIONS_POLL_SECONDS || 2) : 2,
    clientId: env.RISK_CLIENT_ID || "",
    clientSecret: env.RISK_CLIENT_SECRET || "",
    catalogRegister: flag(env.ATRIUM_CATALOG_REGISTER, true),
    logFormat: logFormat(env.ATRIUM_LOG_FORMAT || "json", atriumEnv),
    logColor: flag(env.ATRIUM_LOG_COLOR, process.stdout.isTTY === true),
    logLevel: logLevel(env.RISK_LOG_LEVEL || env.LOG_LEVEL || "info"),
    bodyLimit: integer(env.RISK_BODY_LIMIT, 2 * 1024 * 1024, "RISK_BODY_LIMIT"),
    poolSize: integer(env.RISK_DB_POOL_SIZE, 10, "RISK_DB_POOL_SIZE"),
    outboxRetentionDays: integerAtLeast(env.ATRIUM_OUTBOX_RETENTION_DAYS, 7, "ATRIUM_OUTBOX_RETENTION_DAYS", 1),
  };
}
