// deno-lint-ignore-file no-console -- the test captures a command-line tool's output
/**
 * `--print-config` is the engine's flag (`deno task start --print-config`
 * prints the configuration and exits). Given to `deno task migrate`, which
 * passes its config flags to the configuration loader, it was taken without
 * a word and the command ran: `migrate down -1 --only postgres
 * --print-config`, typed to see which database it would touch, reverted a
 * migration. It is now a usage error (exit 2) and nothing is done.
 */

import assert from "node:assert/strict";
import { main, parseMigrateArgs, UsageError } from "../scripts/migrate.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("migrate refuses --print-config as a usage error", () => {
  for (const argv of [["up", "--print-config"], ["status", "--print-config=1"]]) {
    assert.throws(() => parseMigrateArgs(argv), UsageError);
  }
});

Deno.test("migrate down with --print-config reverts nothing and exits 2", async () => {
  await using db = await migratedDatabase();
  const applied = async () =>
    (await db.sql`select count(*)::int as n from schema_migrations`)[0]!.n as number;
  const before = await applied();
  const errors: string[] = [];
  const original = { error: console.error, log: console.log };
  console.error = (...parts: unknown[]) => errors.push(parts.join(" "));
  console.log = () => {};
  let code: number;
  try {
    code = await main([
      "down",
      "-1",
      "--only",
      "postgres",
      "--print-config",
      `--postgres.url=${db.url}`,
    ]);
  } finally {
    console.error = original.error;
    console.log = original.log;
  }
  assert.equal(code, 2);
  assert.match(errors.join("\n"), /--print-config/);
  assert.equal(await applied(), before, "nothing reverted");
});
