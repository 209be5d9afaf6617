// The token source against a fake portal over real HTTP: cached, single flight, renewed before expiry, clear
// failures (refused, garbage, hanging, unreachable), forgotten after a 401.
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";

import { PortalClient } from "../src/platform/http.ts";
import { ClientCredentials, TokenUnavailable } from "../src/platform/token.ts";
import { FakePortal } from "./helpers/fake_portal.ts";

let portal: FakePortal;

before(async () => {
  portal = await new FakePortal().start();
});
after(async () => {
  await portal.stop();
});
beforeEach(() => {
  portal.mode = "ok";
  portal.tokensIssued = 0;
  portal.tokenForms = [];
  portal.expiresIn = 900;
});

function credentials(options: Partial<ConstructorParameters<typeof ClientCredentials>[0]> = {}): ClientCredentials {
  return new ClientCredentials({ tokenUrl: `${portal.url}/api/v1/auth/token`, clientId: "risk", clientSecret: "risk-secret", ...options });
}

describe("ClientCredentials", () => {
  test("sends the kit's form and caches the token per audience", async () => {
    const source = credentials();
    const first = await source.tokenFor("portal");
    assert.equal(await source.tokenFor("portal"), first);
    assert.equal(await source.tokenFor("portal"), first);
    assert.equal(portal.tokensIssued, 1);
    const form = portal.tokenForms[0];
    assert.deepEqual(Object.fromEntries(form), {
      grant_type: "client_credentials",
      client_id: "risk",
      client_secret: "risk-secret",
      audience: "portal",
    });
    const other = await source.tokenFor("ledger");
    assert.notEqual(other, first);
    assert.equal(portal.tokensIssued, 2);
    await source.tokenFor("portal", "audit:ingest");
    assert.equal(portal.tokenForms[2].get("scope"), "audit:ingest");
    assert.equal(portal.tokensIssued, 3);
  });

  test("concurrent callers share one request (single flight)", async () => {
    const source = credentials();
    const tokens = await Promise.all(Array.from({ length: 20 }, () => source.tokenFor("portal")));
    assert.equal(new Set(tokens).size, 1);
    assert.equal(portal.tokensIssued, 1);
  });

  test("renewed 30 s before it expires, not before", async () => {
    let now = 1_000_000;
    const source = credentials({ now: () => now });
    portal.expiresIn = 300;
    const first = await source.tokenFor("portal");
    now += 269_000; // 269 s: still fresh (renewal at 270 s)
    assert.equal(await source.tokenFor("portal"), first);
    assert.equal(portal.tokensIssued, 1);
    now += 2_000; // 271 s
    const second = await source.tokenFor("portal");
    assert.notEqual(second, first);
    assert.equal(portal.tokensIssued, 2);
  });

  test("a very short lifetime is still used for 5 s", async () => {
    let now = 0;
    const source = credentials({ now: () => now });
    portal.expiresIn = 10;
    const first = await source.tokenFor("portal");
    now += 4_900;
    assert.equal(await source.tokenFor("portal"), first);
    now += 200;
    assert.notEqual(await source.tokenFor("portal"), first);
  });

  test("refused credentials: token_unavailable with the status and the portal's code", async () => {
    const source = credentials({ clientSecret: "wrong" });
    await assert.rejects(source.tokenFor("portal"), (error: unknown) => {
      assert.ok(error instanceof TokenUnavailable);
      assert.equal(error.code, "token_unavailable");
      assert.equal(error.status, 401);
      assert.match(error.message, /refused client risk for audience portal \(401 invalid_client\)/);
      return true;
    });
    // a failure is not cached: right credentials work at once
    assert.ok(await credentials().tokenFor("portal"));
  });

  test("a 200 that is not JSON and a 500 are token_unavailable", async () => {
    for (const mode of ["garbage", "500"] as const) {
      portal.mode = mode;
      await assert.rejects(credentials().tokenFor("portal"), (error: unknown) => error instanceof TokenUnavailable);
    }
  });

  test("a hanging token endpoint fails within the timeout", async () => {
    portal.mode = "hang";
    const started = Date.now();
    await assert.rejects(credentials({ timeoutMs: 300 }).tokenFor("portal"), (error: unknown) => {
      assert.ok(error instanceof TokenUnavailable);
      assert.match(error.message, /no answer within 300 ms/);
      return true;
    });
    const took = Date.now() - started;
    assert.ok(took >= 290 && took < 2_000, `took ${took} ms`);
  });

  test("an unreachable endpoint is token_unavailable, not a raw fetch error", async () => {
    const source = new ClientCredentials({ tokenUrl: "http://127.0.0.1:9/api/v1/auth/token", clientId: "risk", clientSecret: "x" });
    await assert.rejects(source.tokenFor("portal"), (error: unknown) => {
      assert.ok(error instanceof TokenUnavailable);
      assert.match(error.message, /unreachable/);
      return true;
    });
  });

  test("a 401 from the portal forgets the cached token: the next call gets a new one", async () => {
    const source = credentials();
    const client = new PortalClient({ baseUrl: portal.url, credentials: source, timeoutMs: 2_000 });
    portal.services.clear();
    const registered = await client.request("PUT", "/api/v1/catalog/services/risk", { display_name: "Risk" });
    assert.equal(registered.status, 201);
    assert.equal(portal.tokensIssued, 1);
    portal.revokeTokens();
    const refused = await client.request("PUT", "/api/v1/catalog/services/risk", { display_name: "Risk" });
    assert.equal(refused.status, 401);
    const again = await client.request("PUT", "/api/v1/catalog/services/risk", { display_name: "Risk" });
    assert.equal(again.status, 200);
    assert.equal(portal.tokensIssued, 2);
  });
});
