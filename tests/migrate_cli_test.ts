// deno-lint-ignore-file no-console -- the tests capture a command-line tool's output
import assert from "node:assert/strict";
import { INSTANCE_LOCK_KEY_OFFSET } from "../actors/instance_lock.ts";
import { loadConfig } from "../config/mod.ts";
import { main, parseMigrateArgs, UsageError } from "../scripts/migrate.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("migrate down names the one database it reverts", () => {
  assert.deepEqual(parseMigrateArgs(["down", "-1", "--only", "postgres"]), {
    command: "down",
    version: -1,
    only: "postgres",
    configArgs: [],
  });
  // Without --only it would revert both, dropping ClickHouse's market data with PostgreSQL's step.
  assert.throws(() => parseMigrateArgs(["down", "-1"]), UsageError);
  assert.throws(() => parseMigrateArgs(["down", "2", "--config", "prod.yaml"]), /--only postgres/);
  assert.deepEqual(parseMigrateArgs(["up"]), { command: "up", configArgs: [] });
  assert.deepEqual(parseMigrateArgs(["status", "--only=clickhouse"]), {
    command: "status",
    only: "clickhouse",
    configArgs: [],
  });
});

Deno.test("migrate down refuses while an engine holds the database's instance lock, and runs once it is free", async () => {
  await using db = await migratedDatabase();
  const config = await loadConfig({ args: [], env: {} });
  const key = BigInt(config.migrations.lock_key) + BigInt(INSTANCE_LOCK_KEY_OFFSET);
  const engine = await db.sql.reserve(); // stands for a running engine's lock connection
  const applied = async () =>
    (await db.sql`select count(*)::int as n from schema_migrations`)[0]!.n as number;
  const before = await applied();
  const args = ["down", "-1", "--only", "postgres", `--postgres.url=${db.url}`];
  try {
    await engine`select pg_advisory_lock(${key.toString()}::bigint)`;
    const errors: string[] = [];
    const original = console.error;
    console.error = (...parts: unknown[]) => errors.push(parts.join(" "));
    let code: number;
    try {
      code = await main(args);
    } finally {
      console.error = original;
    }
    assert.equal(code, 1);
    assert.match(errors.join("\n"), /An engine is running on this database \(backend \d+/);
    assert.equal(await applied(), before, "nothing reverted");
    await engine`select pg_advisory_unlock(${key.toString()}::bigint)`;
  } finally {
    engine.release();
  }
  const log = console.log;
  console.log = () => {};
  try {
    assert.equal(await main(args), 0);
  } finally {
    console.log = log;
  }
  assert.equal(await applied(), before - 1);
});
