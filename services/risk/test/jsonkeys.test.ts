// Duplicate keys in JSON bodies: refused as the kit refuses them (400 duplicate_key, the key and where it is).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { duplicateKey } from "../src/jsonkeys.ts";

describe("duplicateKey", () => {
  test("finds the first key named twice, at any depth, with its pointer and field path", () => {
    assert.deepEqual(duplicateKey('{"a": 1, "a": 2}'), { key: "a", pointer: "", field: "a" });
    assert.deepEqual(duplicateKey('{"payments": [{"x": 1}, {"amount": 1, "amount": 2}]}'), {
      key: "amount",
      pointer: "/payments/1",
      field: "payments[1].amount",
    });
    assert.deepEqual(duplicateKey('{"rules": {"amount_high": {"EUR": {}, "EUR": {}}}}'), {
      key: "EUR",
      pointer: "/rules/amount_high",
      field: "rules.amount_high.EUR",
    });
    assert.deepEqual(duplicateKey('[[{"k": 1}], {"a/b~": 1, "a/b~": 2}]'), { key: "a/b~", pointer: "/1", field: "[1].a/b~" });
  });

  test("an escaped spelling of the same key is the same key", () => {
    assert.equal(duplicateKey('{"amount": 1, "\\u0061mount": 2}')?.key, "amount");
    assert.equal(duplicateKey('{"a\\"b": 1, "a\\u0022b": 2}')?.key, 'a"b');
  });

  test("the same key in different objects, and strings that look like keys, are not duplicates", () => {
    assert.equal(duplicateKey('{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}'), null);
    assert.equal(duplicateKey('{"a": "\\"a\\": 1", "b": ["a", "a"], "c": "{\\"a\\":1,\\"a\\":2}"}'), null);
    assert.equal(duplicateKey('{"": 1, "x": {}, "y": [], "z": [[], {}]}'), null);
    assert.equal(duplicateKey("[1, 2, 3]"), null);
    assert.equal(duplicateKey('"a"'), null);
  });
});
