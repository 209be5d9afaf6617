import assert from "node:assert/strict";
import { describe, test } from "node:test";
import pg from "pg";
import { migrate, migrationNames } from "../src/migrate.ts";
import { DATABASE_URL, databaseFresh, databaseName, databaseUrlWith } from "./helpers.ts";

describe("migrations", () => {
  test("applied once each, under a lock: two runs at once, then a third that finds nothing to do", async () => {
    const name = `${databaseName(DATABASE_URL)}_migrate`;
    const url = databaseUrlWith(DATABASE_URL, name);
    const client = new pg.Client({ connectionString: databaseUrlWith(DATABASE_URL, "postgres") });
    await client.connect();
    try {
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.query(`CREATE DATABASE ${name}`);
      const [a, b] = await Promise.all([migrate(url), migrate(url)]);
      const names = await migrationNames();
      assert.deepEqual([...a, ...b].sort(), names);
      assert.deepEqual(await migrate(url), []);
      const db = new pg.Client({ connectionString: url });
      await db.connect();
      try {
        const rules = await db.query("SELECT version, rules->'thresholds' AS thresholds FROM risk_rules_version");
        assert.deepEqual(rules.rows, [{ version: 1, thresholds: { review: 50, deny: 80 } }]);
        const state = await db.query("SELECT last_seq, published_seq FROM risk_outbox_state");
        assert.deepEqual(state.rows, [{ last_seq: "0", published_seq: "0" }]);
      } finally {
        await db.end();
      }
    } finally {
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    }
  });

  test("the test helper recreates RISK_DATABASE_URL's database", async () => {
    await databaseFresh();
    const db = new pg.Client({ connectionString: DATABASE_URL });
    await db.connect();
    try {
      const applied = await db.query("SELECT name FROM risk_migrations ORDER BY name");
      assert.deepEqual(applied.rows.map((r) => r.name), await migrationNames());
    } finally {
      await db.end();
    }
  });
});
