import assert from "node:assert/strict";
import { parseMigrateArgs, UsageError } from "../scripts/migrate.ts";

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
