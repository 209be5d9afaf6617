import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { harness, payment, type Harness, type Json } from "./helpers.ts";

let h: Harness;
let headers: Record<string, string>;
before(async () => {
  h = await harness();
  headers = { ...(await h.auth()), "content-type": "application/json" };
});
after(async () => { await h.close(); });

async function post(payload: string | Buffer, extra: Record<string, string> = {}, url = "/api/v1/assessments") {
  return h.app.inject({ method: "POST", url, headers: { ...headers, ...extra }, payload });
}

function problem(response: { statusCode: number; headers: Record<string, unknown>; json: () => Json; body: string }, status: number, code: string): Json {
  assert.equal(response.statusCode, status, response.body);
  assert.match(String(response.headers["content-type"]), /^application\/problem\+json/);
  const body = response.json();
  assert.equal(body.code, code);
  assert.equal(body.status, status);
  assert.equal(body.type, `urn:atrium:problem:${code}`);
  assert.equal(typeof body.title, "string");
  assert.equal(typeof body.detail, "string");
  assert.equal(body.request_id, response.headers["x-request-id"]);
  assert.equal(typeof body.instance, "string");
  return body;
}

function hasError(body: Json, field: string, code: string): void {
  assert.ok(body.errors?.some((e: Json) => e.field === field && e.code === code), `${field}/${code} in ${JSON.stringify(body.errors)}`);
}

describe("bad input answers problem details, never a 500", () => {
  test("malformed JSON: 400 malformed_json", async () => {
    for (const text of ["{", "{\"payment_id\": }", "[1,", "nul", "   ", "\u0000", "{'a': 1}"]) {
      problem(await post(text), 400, "malformed_json");
    }
    problem(await h.app.inject({ method: "POST", url: "/api/v1/assessments", headers }), 400, "malformed_json");
    problem(await post(Buffer.from([0xff, 0xfe, 0x7b])), 400, "malformed_json");
  });

  test("NUL characters, unpaired surrogates, deep nesting: 400 invalid_characters, json_too_deep", async () => {
    problem(await post('{"payment_id": "a\\u0000b"}'), 400, "invalid_characters");
    problem(await post('{"payment_id": "a\\ud800b"}'), 400, "invalid_characters");
    problem(await post('{"a\\u0000": 1}'), 400, "invalid_characters");
    problem(await post("[".repeat(100) + "]".repeat(100)), 400, "json_too_deep");
    const deep = "[".repeat(200_000) + "]".repeat(200_000);
    const answer = await post(deep);
    assert.equal(answer.statusCode, 400);
    assert.ok(["json_too_deep", "malformed_json"].includes(answer.json().code));
    const read = await h.auth({ scope: "risk:read" });
    problem(await h.app.inject({ url: "/api/v1/assessments?payment_id=%00", headers: read }), 400, "invalid_characters");
    problem(await h.app.inject({ url: "/api/v1/assessments?payment_id=%ED%A0%80", headers: read }), 400, "invalid_characters");
    problem(await h.app.inject({ url: "/api/v1/assessments?payment_id=%E0%A4%A", headers: read }), 400, "invalid_characters");
  });

  test("a key named twice: 400 duplicate_key with the key and where it is, as the kit answers", async () => {
    const single = JSON.stringify(payment()).replace('"amount":', '"amount": 5, "amount":');
    const body = problem(await post(single), 400, "duplicate_key");
    assert.deepEqual(body.errors, [
      { field: "amount", pointer: "#/amount", code: "duplicate_key", detail: body.detail },
    ]);
    assert.match(body.detail, /Key "amount" appears more than once at the top level/);
    const second = JSON.stringify(payment()).replace('"currency":"EUR"', '"currency":"EUR","currency":"USD"');
    const twice = `{"payments": [${JSON.stringify(payment())}, ${second}]}`;
    hasError(problem(await post(twice), 400, "duplicate_key"), "payments[1].currency", "duplicate_key");
    const rules = await h.auth({ scope: "risk:write" });
    const put = await h.app.inject({
      method: "PUT",
      url: "/api/v1/rules",
      headers: { ...rules, "content-type": "application/json" },
      payload: '{"rules": {}, "rules": {}}',
    });
    hasError(problem(put, 400, "duplicate_key"), "rules", "duplicate_key");
  });

  test("unknown fields: 400 validation_error, unknown_field, at any depth", async () => {
    hasError(problem(await post(JSON.stringify(payment({ colour: "red" }))), 400, "validation_error"), "colour", "unknown_field");
    const body = problem(await post(JSON.stringify({ payments: [payment(), payment({ extra: 1 })] })), 400, "validation_error");
    hasError(body, "payments[1].extra", "unknown_field");
    assert.ok(body.errors.some((e: Json) => e.pointer === "#/payments/1/extra"));
    hasError(problem(await post(JSON.stringify({ payments: [payment()], more: true })), 400, "validation_error"), "more", "unknown_field");
  });

  test("absurd amounts: 400 validation_error", async () => {
    for (const [amount, code] of [[0, "min_value"], [-5, "min_value"], [1.5, "invalid"], ["100", "invalid"], [2 ** 63, "max_value"], [1e300, "max_value"], [null, "null"]] as [unknown, string][]) {
      hasError(problem(await post(JSON.stringify(payment({ amount }))), 400, "validation_error"), "amount", code);
    }
    problem(await post('{"payment_id":"p","amount":99999999999999999999999999999,"currency":"EUR","source_account":"a","destination_account":"b"}'), 400, "validation_error");
  });

  test("wrong currency, missing and overlong fields, bad timestamps", async () => {
    for (const currency of ["eur", "EURO", "E1R", "", 978]) {
      hasError(problem(await post(JSON.stringify(payment({ currency }))), 400, "validation_error"), "currency", "invalid");
    }
    const missing = problem(await post(JSON.stringify({ amount: 5 })), 400, "validation_error");
    for (const field of ["payment_id", "currency", "source_account", "destination_account"]) hasError(missing, field, "required");
    hasError(problem(await post(JSON.stringify(payment({ payment_id: "p".repeat(65) }))), 400, "validation_error"), "payment_id", "max_length");
    hasError(problem(await post(JSON.stringify(payment({ source_account: "" }))), 400, "validation_error"), "source_account", "blank");
    hasError(problem(await post(JSON.stringify(payment({ created_at: "yesterday" }))), 400, "validation_error"), "created_at", "invalid");
    hasError(problem(await post(JSON.stringify(payment({ created_at: "2026-13-45T99:00:00Z" }))), 400, "validation_error"), "created_at", "invalid");
    for (const created_at of ["0000-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2024-02-29T23:59:60Z", "9999-12-31T23:59:59Z", new Date(Date.now() + 7200_000).toISOString()]) {
      hasError(problem(await post(JSON.stringify(payment({ created_at }))), 400, "validation_error"), "created_at", "invalid");
    }
    hasError(problem(await post(JSON.stringify({ payments: [payment(), payment({ created_at: "0001-01-01T00:00:00Z" })] })), 400, "validation_error"), "payments[1].created_at", "invalid");
    problem(await post(JSON.stringify([payment()])), 400, "validation_error");
    problem(await post(JSON.stringify("a string")), 400, "validation_error");
  });

  test("batches: empty, too large, or not a list", async () => {
    hasError(problem(await post(JSON.stringify({ payments: [] })), 400, "validation_error"), "payments", "min_length");
    const big = { payments: Array.from({ length: 1001 }, () => payment()) };
    hasError(problem(await post(JSON.stringify(big)), 400, "validation_error"), "payments", "max_length");
    hasError(problem(await post(JSON.stringify({ payments: {} })), 400, "validation_error"), "payments", "invalid");
  });

  test("wrong content type: 415 unsupported_media_type", async () => {
    const body = JSON.stringify(payment());
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x"]) {
      problem(await post(body, { "content-type": type }), 415, "unsupported_media_type");
    }
  });

  test("a Content-Encoding the service does not decode: 415", async () => {
    problem(await post(JSON.stringify(payment()), { "content-encoding": "gzip" }), 415, "unsupported_media_type");
    assert.equal((await post(JSON.stringify(payment()), { "content-encoding": "identity" })).statusCode, 200);
  });

  test("a body over the limit: 413 payload_too_large", async () => {
    const body = problem(await post(JSON.stringify({ payments: [payment({ client_id: "x".repeat(3 * 1024 * 1024) })] })), 413, "payload_too_large");
    assert.equal(typeof body.max_body_bytes, "number");
  });

  test("bad cursors and query parameters: 400", async () => {
    const read = await h.auth({ scope: "risk:read" });
    for (const cursor of ["garbage!", "WzAsWzNdXQ", "bm90IGpzb24", "WzIsWyJyc2tfMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAiXV0", "x".repeat(600)]) {
      const response = await h.app.inject({ url: `/api/v1/assessments?cursor=${encodeURIComponent(cursor)}`, headers: read });
      assert.ok(response.statusCode === 400, `${cursor}: ${response.statusCode}`);
      assert.ok(["invalid_cursor", "validation_error"].includes(response.json().code));
    }
    problem(await h.app.inject({ url: "/api/v1/assessments?cursor=WzAsWzNdXQ", headers: read }), 400, "invalid_cursor");
    problem(await h.app.inject({ url: "/api/v1/rules/versions?cursor=WzAsWyJ4Il1d", headers: read }), 400, "invalid_cursor");
    hasError(problem(await h.app.inject({ url: "/api/v1/assessments?limit=0", headers: read }), 400, "validation_error"), "limit", "min_value");
    hasError(problem(await h.app.inject({ url: "/api/v1/assessments?limit=abc", headers: read }), 400, "validation_error"), "limit", "invalid");
    hasError(problem(await h.app.inject({ url: "/api/v1/assessments?decision=maybe", headers: read }), 400, "validation_error"), "decision", "invalid_choice");
    hasError(problem(await h.app.inject({ url: "/api/v1/assessments?colour=red", headers: read }), 400, "validation_error"), "colour", "unknown_field");
  });

  test("unknown paths 404, wrong methods 405 with Allow, slashed spellings 308", async () => {
    problem(await h.app.inject({ url: "/api/v1/nothing", headers }), 404, "not_found");
    problem(await h.app.inject({ url: "/", headers }), 404, "not_found");
    const wrong = problem(await h.app.inject({ method: "DELETE", url: "/api/v1/assessments", headers }), 405, "method_not_allowed");
    assert.equal(wrong.instance, "/api/v1/assessments");
    const patch = await h.app.inject({ method: "PATCH", url: "/api/v1/rules", headers });
    problem(patch, 405, "method_not_allowed");
    assert.equal(patch.headers.allow, "GET, HEAD, PUT");
    const slashed = await h.app.inject({ url: "/api/v1/rules/?x=1", headers });
    assert.equal(slashed.statusCode, 308);
    assert.equal(slashed.headers.location, "/api/v1/rules?x=1");
    const slashedPost = await h.app.inject({ method: "POST", url: "/api/v1/assessments/", headers, payload: "{}" });
    assert.equal(slashedPost.statusCode, 308);
  });
});
