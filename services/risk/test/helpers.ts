// Test support: a fresh, migrated database from RISK_DATABASE_URL (dropped and recreated: point it at a database
// the tests may wipe), a local JWKS served over real HTTP with Ed25519 keys made by jose, tokens, and the app.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import pg from "pg";
import { buildApp } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { poolCreate, type Pool } from "../src/db.ts";
import { migrate } from "../src/migrate.ts";
import type { FastifyInstance } from "fastify";

export type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const DATABASE_URL = process.env.RISK_DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/atrium_risk_test";
export const ISSUER = "atrium-portal";

/** `url` with its database name replaced (libpq URLs such as `postgresql://postgres@/db?host=/socket` are not
 * WHATWG URLs, so this is done on the text). */
export function databaseUrlWith(url: string, name: string): string {
  const match = /^(postgres(?:ql)?:\/\/[^/?]*)(?:\/([^?]*))?(\?.*)?$/.exec(url);
  if (!match) throw new Error(`not a postgres URL: ${url}`);
  return `${match[1]}/${name}${match[3] ?? ""}`;
}

export function databaseName(url: string): string {
  const match = /^postgres(?:ql)?:\/\/[^/?]*\/([^?]*)/.exec(url);
  return decodeURIComponent(match?.[1] ?? "");
}

/** Drop and create the database RISK_DATABASE_URL names, then migrate it. */
export async function databaseFresh(url = DATABASE_URL): Promise<void> {
  const name = databaseName(url);
  if (!/^[A-Za-z0-9_]+$/.test(name)) throw new Error(`refusing to recreate database ${JSON.stringify(name)}`);
  const client = new pg.Client({ connectionString: databaseUrlWith(url, "postgres") });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  await migrate(url);
}

export interface Keys {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

export async function keysNew(kid: string): Promise<Keys> {
  const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, use: "sig", alg: "EdDSA" };
  return { kid, privateKey, jwk };
}

/** The portal's two public key documents served by a tiny node:http server (real HTTP, like the portal's):
 * the JWKS at /.well-known/jwks.json and the revocation list beside it (`revocations` is what it lists). */
export async function jwksServe(keys: Keys[]): Promise<{
  url: string; server: Server; fetches: () => number; fail: (on: boolean) => void; revocations: Record<string, Json>;
}> {
  let fetches = 0;
  let failing = false;
  const revocations: Record<string, Json> = {};
  const server = createServer((request, response) => {
    if (failing) {
      response.writeHead(503).end();
      return;
    }
    if (request.url === "/.well-known/jwks.json") {
      fetches += 1;
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: keys.map((k) => k.jwk) }));
    } else if (request.url === "/.well-known/atrium-revocations.json") {
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ generated_at: Date.now() / 1000, clients: revocations }));
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/.well-known/jwks.json`, server, fetches: () => fetches, fail: (on) => { failing = on; }, revocations };
}

export interface TokenOptions {
  keys: Keys;
  sub?: string;
  aud?: string | string[];
  scope?: string;
  iss?: string;
  expiresIn?: number; // seconds from now (negative: expired)
  alg?: string;
}

export async function tokenMake(options: TokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ scope: options.scope ?? "risk:assess risk:read risk:write" })
    .setProtectedHeader({ alg: options.alg ?? "EdDSA", kid: options.keys.kid, typ: "JWT" })
    .setSubject(options.sub ?? "cli_test")
    .setIssuer(options.iss ?? ISSUER)
    .setAudience(options.aud ?? "risk")
    .setIssuedAt(now - 5)
    .setExpirationTime(now + (options.expiresIn ?? 300))
    .sign(options.keys.privateKey);
}

export interface Harness {
  app: FastifyInstance;
  pool: Pool;
  keys: Keys;
  jwks: Awaited<ReturnType<typeof jwksServe>>;
  callers: Map<string, number>;
  token: (options?: Partial<TokenOptions>) => Promise<string>;
  auth: (options?: Partial<TokenOptions>) => Promise<Record<string, string>>;
  reset: () => Promise<void>;
  close: () => Promise<void>;
}

/** The app on a fresh database, with a JWKS server; `reset` empties the tables between tests. */
export async function harness(): Promise<Harness> {
  await databaseFresh();
  const keys = await keysNew("test-key-1");
  const jwks = await jwksServe([keys]);
  const config = { ...loadConfig({ ...process.env, RISK_DATABASE_URL: DATABASE_URL, JWT_JWKS_URL: jwks.url, JWT_ISSUER: ISSUER }), logLevel: "silent" };
  const pool = poolCreate(DATABASE_URL, 10);
  const callers = new Map<string, number>();
  const { app } = await buildApp({ config, pool, callers, logger: false });
  const token = (options: Partial<TokenOptions> = {}) => tokenMake({ keys, ...options });
  return {
    app, pool, keys, jwks, callers, token,
    auth: async (options = {}) => ({ authorization: `Bearer ${await token(options)}` }),
    reset: async () => {
      await pool.query("TRUNCATE risk_assessment, risk_outbox, risk_velocity_bucket");
      await pool.query("UPDATE risk_outbox_state SET last_seq = 0, published_seq = 0");
      await pool.query("DELETE FROM risk_rules_version WHERE version > 1");
    },
    close: async () => {
      await app.close();
      await pool.end();
      jwks.server.closeAllConnections();
      await new Promise((resolve) => jwks.server.close(resolve));
    },
  };
}

/** Outbox events, in service_seq order. */
export async function outboxEvents(pool: Pool): Promise<Json[]> {
  return (await pool.query("SELECT payload FROM risk_outbox ORDER BY service_seq")).rows.map((r) => r.payload);
}

let counter = 0;
export function payment(fields: Json = {}): Json {
  counter += 1;
  return {
    payment_id: `pay_test${process.pid}_${counter}`,
    amount: 1000,
    currency: "EUR",
    source_account: "acc_source",
    destination_account: "acc_dest",
    client_id: "cli_payments",
    ...fields,
  };
}

/** The default rules with changes, for PUT bodies. */
export function rulesWith(changes: (rules: Json) => void, base?: Json): Json {
  const rules: Json = structuredClone(base ?? DEFAULT_RULES);
  changes(rules);
  return rules;
}

export const DEFAULT_RULES: Json = {
  thresholds: { review: 50, deny: 80 },
  velocity: [
    { name: "burst", window_seconds: 60, max_count: 1000, max_amount: null, weight: 40 },
    { name: "daily", window_seconds: 86400, max_count: null, max_amount: 100000000000, weight: 40 },
  ],
  new_payee: { enabled: true, weight: 10 },
  amount_outlier: { enabled: true, percentile: 99, lookback_days: 90, min_history: 20, weight: 30 },
  amount_high: { EUR: { amount: 10000000, weight: 60 } },
};

/** Only the rules a test names: everything else off. */
export function rulesOnly(changes: (rules: Json) => void): Json {
  return rulesWith((rules) => {
    rules.velocity = [];
    rules.new_payee.enabled = false;
    rules.amount_outlier.enabled = false;
    rules.amount_high = {};
    changes(rules);
  });
}
