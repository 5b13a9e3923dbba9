// deno-lint-ignore-file no-console -- the test silences a command-line tool's output
/**
 * Two `deno task migrate up` started at once against a database that does not
 * exist yet (review 31). Both call `ensureDatabase`; the CREATE DATABASE that
 * loses the race fails with SQLSTATE 23505 (unique violation on
 * pg_database_datname_index), not only 42P04, and must count as "exists".
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { ensureDatabase } from "../adapters/postgres.ts";
import { main } from "../scripts/migrate.ts";
import { databaseUrl, dropDatabase, scratchName } from "./_postgres.ts";

Deno.test("ensureDatabase racing itself counts a concurrent creation as existing", async () => {
  // Several rounds: with three callers at once the race is the common case.
  for (let round = 0; round < 5; round++) {
    const name = scratchName();
    try {
      const results = await Promise.allSettled(
        [1, 2, 3].map(() => ensureDatabase(databaseUrl(name), { sslmode: "disable" })),
      );
      const errors = results.flatMap((r) =>
        r.status === "rejected"
          ? [`${(r.reason as { code?: string }).code}: ${(r.reason as Error).message}`]
          : []
      );
      assert.deepEqual(errors, [], `round ${round}: concurrent ensureDatabase failed`);
      const created = results.filter((r) => r.status === "fulfilled" && r.value === true);
      assert.equal(created.length, 1, "exactly one caller created it");
    } finally {
      await dropDatabase(name);
    }
  }
});

Deno.test("two `migrate up` started at once on a new database both succeed", async () => {
  const name = scratchName();
  const args = ["up", "--only", "postgres", `--postgres.url=${databaseUrl(name)}`];
  const log = console.log;
  const error = console.error;
  const errors: string[] = [];
  console.log = () => {};
  console.error = (...parts: unknown[]) => errors.push(parts.join(" "));
  let codes: number[];
  try {
    codes = await Promise.all([main(args), main(args)]);
  } finally {
    console.log = log;
    console.error = error;
  }
  try {
    assert.deepEqual(codes, [0, 0], `exit codes ${codes}; stderr: ${errors.join(" | ")}`);
    const sql = postgres(databaseUrl(name), { max: 1, onnotice: () => {} });
    try {
      const files = [...Deno.readDirSync(new URL("../migrations/postgres/", import.meta.url))]
        .filter((e) => /^\d+_.*(?<!\.down)\.sql$/.test(e.name)).length;
      const [row] = await sql`select count(*)::int as n from schema_migrations`;
      assert.equal(row?.n, files);
    } finally {
      await sql.end();
    }
  } finally {
    await dropDatabase(name);
  }
});
