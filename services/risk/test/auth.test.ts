import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { base64url, SignJWT } from "jose";
import { buildApp } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { poolCreate } from "../src/db.ts";
import { DATABASE_URL, harness, ISSUER, keysNew, tokenMake, type Harness } from "./helpers.ts";

let h: Harness;
before(async () => { h = await harness(); });
after(async () => { await h.close(); });

async function get(authorization?: string) {
  return h.app.inject({ url: "/api/v1/rules", headers: authorization === undefined ? {} : { authorization } });
}

async function refused(authorization: string | undefined, status: number, code: string): Promise<void> {
  const response = await get(authorization);
  assert.equal(response.statusCode, status, response.body);
  const body = response.json();
  assert.equal(body.code, code);
  assert.equal(body.status, status);
  assert.match(String(response.headers["content-type"]), /^application\/problem\+json/);
  if (status === 401) assert.equal(response.headers["www-authenticate"], 'Bearer realm="risk"');
}

describe("JWT verification", () => {
  test("a good token passes and counts its client for the catalog", async () => {
    h.callers.clear();
    assert.equal((await get(`Bearer ${await h.token({ sub: "cli_payments", scope: "risk:read" })}`)).statusCode, 200);
    assert.equal((await get(`Bearer ${await h.token({ sub: "cli_payments", scope: "risk:read" })}`)).statusCode, 200);
    assert.equal(h.callers.get("cli_payments"), 2);
  });

  test("the newer Ed25519 algorithm name is accepted too", async () => {
    assert.equal((await get(`Bearer ${await h.token({ alg: "Ed25519" })}`)).statusCode, 200);
  });

  test("no token, or not a bearer one: 401 not_authenticated", async () => {
    await refused(undefined, 401, "not_authenticated");
    await refused("Basic dXNlcjpwYXNz", 401, "not_authenticated");
  });

  test("malformed: 401 invalid_token", async () => {
    await refused("Bearer", 401, "invalid_token");
    await refused("Bearer a b", 401, "invalid_token");
    await refused("Bearer not.a.jwt", 401, "invalid_token");
    await refused("Bearer xyz", 401, "invalid_token");
  });

  test("wrong audience: 403 invalid_audience", async () => {
    await refused(`Bearer ${await h.token({ aud: "ledger" })}`, 403, "invalid_audience");
    await refused(`Bearer ${await h.token({ aud: "portal" })}`, 403, "invalid_audience");
  });

  test("a list audience, even of risk alone: 401 invalid_token", async () => {
    await refused(`Bearer ${await h.token({ aud: ["risk"] })}`, 401, "invalid_token");
    await refused(`Bearer ${await h.token({ aud: ["risk", "ledger"] })}`, 401, "invalid_token");
  });

  test("expired: 401 token_expired", async () => {
    await refused(`Bearer ${await h.token({ expiresIn: -120 })}`, 401, "token_expired");
  });

  test("wrong issuer: 401 invalid_token", async () => {
    await refused(`Bearer ${await h.token({ iss: "someone-else" })}`, 401, "invalid_token");
  });

  test("unknown kid (a key the JWKS does not publish): 401 invalid_token", async () => {
    const stranger = await keysNew("stranger-key");
    await refused(`Bearer ${await tokenMake({ keys: stranger })}`, 401, "invalid_token");
    // A key with a published kid but another secret: the signature does not verify.
    const impostor = { ...(await keysNew("test-key-1")) };
    await refused(`Bearer ${await tokenMake({ keys: impostor })}`, 401, "invalid_token");
  });

  test("tampered payload or signature: 401 invalid_token", async () => {
    const token = await h.token({ scope: "risk:read" });
    const [header, payload, signature] = token.split(".");
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(payload)));
    claims.scope = "risk:read risk:write";
    await refused(`Bearer ${header}.${base64url.encode(JSON.stringify(claims))}.${signature}`, 401, "invalid_token");
    const flipped = (signature[0] === "A" ? "B" : "A") + signature.slice(1);
    await refused(`Bearer ${header}.${payload}.${flipped}`, 401, "invalid_token");
    await refused(`Bearer ${header}.${payload}.`, 401, "invalid_token");
  });

  test("alg none (unsigned) and other algorithms: 401 invalid_token", async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: "cli_x", iss: ISSUER, aud: "risk", iat: now, exp: now + 300, scope: "risk:read" };
    const encode = (value: object) => base64url.encode(JSON.stringify(value));
    await refused(`Bearer ${encode({ alg: "none", typ: "JWT" })}.${encode(claims)}.`, 401, "invalid_token");
    await refused(`Bearer ${encode({ alg: "none", kid: "test-key-1" })}.${encode(claims)}.`, 401, "invalid_token");
    const hs = await new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid: "test-key-1" }).sign(new TextEncoder().encode("x".repeat(32)));
    await refused(`Bearer ${hs}`, 401, "invalid_token");
  });

  test("a token without the route's scope: 403 insufficient_scope", async () => {
    await refused(`Bearer ${await h.token({ scope: "risk:assess" })}`, 403, "insufficient_scope");
  });

  test("the JWKS refetched on an unknown kid (key rotation), at most every few seconds", async () => {
    const fetchesBefore = h.jwks.fetches();
    const stranger = await keysNew("rotation-key");
    await refused(`Bearer ${await tokenMake({ keys: stranger })}`, 401, "invalid_token");
    await refused(`Bearer ${await tokenMake({ keys: stranger })}`, 401, "invalid_token");
    assert.ok(h.jwks.fetches() - fetchesBefore <= 1, "no refetch storm on junk kids");
  });

  test("the JWKS away at the first use: 503 jwks_unavailable", async () => {
    const config = { ...loadConfig({ RISK_DATABASE_URL: DATABASE_URL, JWT_JWKS_URL: "http://127.0.0.1:9/jwks.json" }), logLevel: "silent" };
    const pool = poolCreate(DATABASE_URL, 1);
    const { app } = await buildApp({ config, pool, callers: new Map(), logger: false });
    try {
      const response = await app.inject({ url: "/api/v1/rules", headers: { authorization: `Bearer ${await h.token()}` } });
      assert.equal(response.statusCode, 503);
      assert.equal(response.json().code, "jwks_unavailable");
    } finally {
      await app.close();
      await pool.end();
    }
  });
});

describe("revocations (atrium-revocations.json beside the JWKS)", () => {
  test("a revoked client's older tokens and a rotated-out secret's tokens are refused; before a first list, 503", async () => {
    const { RevocationWatcher, revocationsUrlFor } = await import("../src/revocations.ts");
    const { revocations } = await import("../src/auth.ts");
    const watcher = new RevocationWatcher({ url: revocationsUrlFor(h.jwks.url), intervalMs: 50 });
    revocations.check = (claims) => watcher.refusal(claims);
    try {
      await refused(`Bearer ${await h.token({ sub: "cli_early" })}`, 503, "revocations_unavailable");
      await watcher.refresh();
      assert.equal(watcher.ready, true);
      const before = await h.token({ sub: "cli_revoked" });
      const now = Math.floor(Date.now() / 1000);
      h.jwks.revocations.cli_revoked = { not_before: now + 1, secret_generation: 0, previous_secret_valid_until: null, until: now + 3600 };
      h.jwks.revocations.cli_rotated = { not_before: null, secret_generation: 2, previous_secret_valid_until: null, until: now + 3600 };
      assert.equal((await get(`Bearer ${before}`)).statusCode, 200, "not refused until the list says so");
      await watcher.refresh();
      await refused(`Bearer ${before}`, 401, "token_revoked");
      await refused(`Bearer ${await h.token({ sub: "cli_rotated" })}`, 401, "token_revoked");
      assert.equal((await get(`Bearer ${await h.token({ sub: "cli_other" })}`)).statusCode, 200);
      // The list never loosens: an entry dropped from the document (before its until) still refuses.
      delete h.jwks.revocations.cli_revoked;
      await watcher.refresh();
      await refused(`Bearer ${before}`, 401, "token_revoked");
      // The portal away: the last list is kept.
      h.jwks.fail(true);
      await watcher.refresh();
      await refused(`Bearer ${before}`, 401, "token_revoked");
      h.jwks.fail(false);
    } finally {
      watcher.stop();
      revocations.check = () => null;
    }
  });

  test("entry rules: not_before against iat, secret generations with a grace period", async () => {
    const { entryRefusal } = await import("../src/revocations.ts");
    const entry = { not_before: 1000, secret_generation: 0, previous_valid_until: null, until: 9999 };
    assert.equal(entryRefusal(entry, { iat: 1000 }, 1500), "revoked");
    assert.equal(entryRefusal(entry, { iat: 1001 }, 1500), null);
    const rotated = { not_before: null, secret_generation: 3, previous_valid_until: 2000, until: 9999 };
    assert.equal(entryRefusal(rotated, { sgen: 3 }, 1500), null);
    assert.equal(entryRefusal(rotated, { sgen: 2 }, 1500), null, "the previous secret within its grace");
    assert.equal(entryRefusal(rotated, { sgen: 2 }, 2000), "rotated");
    assert.equal(entryRefusal(rotated, { sgen: 1 }, 1500), "rotated");
    assert.equal(entryRefusal(rotated, {}, 1500), "rotated");
  });
});
