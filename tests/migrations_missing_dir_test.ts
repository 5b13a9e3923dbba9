// deno-lint-ignore-file no-console -- the test captures a command-line tool's output
/**
 * A migrations folder that is not there (review 31). `migrations.dir` is
 * relative to the working directory: an engine started from elsewhere, or a
 * typo in the setting, must not pass for "no migrations" (PostgreSQL reported
 * applied with 0 applied, every later write failing); the engine refuses to
 * start and `deno task migrate up` exits 1, naming the folder. A folder with
 * one database's subfolder only is accepted: the other has none, with a warning.
 */

import assert from "node:assert/strict";
import { createPostgres } from "../adapters/postgres.ts";
import { loadMigrations, MigrationFileError, Migrator } from "../adapters/migrator.ts";
import { migrationsActor } from "../actors/migrations.ts";
import { memoryLogger } from "../lib/log.ts";
import { main } from "../scripts/migrate.ts";
import { databaseUrl, dropDatabase, scratchDatabase, scratchName } from "./_postgres.ts";

const MISSING = "/nonexistent/tradewire/migrations";
const FIXTURES = new URL("./fixtures/migrations/", import.meta.url).pathname;

Deno.test("the migrations actor refuses to start when the migrations folder does not exist", async () => {
  await using db = await scratchDatabase();
  const name = db.name;
  const sql = createPostgres({ url: db.url, pool_size: 3, sslmode: "disable" });
  try {
    const spec = migrationsActor({
      sql,
      clickhouse: null,
      options: { dir: MISSING, database: name },
    });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    const outcome = await running.ready.then(
      () => "ready",
      (error: unknown) => `rejected: ${(error as Error).message}`,
    );
    controller.abort();
    await running.done.catch(() => {});
    assert.match(
      outcome,
      /^rejected/,
      `the engine went on with no schema (state ${JSON.stringify(spec.state.snapshot())})`,
    );
    assert.match(outcome, new RegExp(`Migrations folder ${MISSING} does not exist`));
    assert.equal(spec.state.postgres, "failed");
  } finally {
    await sql.end({ timeout: 5 });
  }
});

Deno.test("loadMigrations refuses a missing folder or one holding no database's folder, naming it", async () => {
  await assert.rejects(
    loadMigrations(`${MISSING}/`, "postgres"),
    (error: unknown) =>
      error instanceof MigrationFileError && error.file === MISSING &&
      error.message === `Migrations folder ${MISSING} does not exist: check migrations.dir`,
  );
  await assert.rejects(
    loadMigrations("no_such_migrations_dir", "clickhouse"),
    (error: unknown) =>
      error instanceof MigrationFileError &&
      error.message.startsWith(
        `Migrations folder no_such_migrations_dir does not exist (relative to the working ` +
          `directory ${Deno.cwd()})`,
      ),
  );
  const empty = await Deno.makeTempDir({ prefix: "tw_migrations_" });
  try {
    // migrations.dir pointing one level too deep, or at the repository's root.
    await assert.rejects(
      loadMigrations(empty, "postgres"),
      (error: unknown) =>
        error instanceof MigrationFileError &&
        error.message === `Migrations folder ${empty} holds neither postgres/ nor clickhouse/: ` +
            "check migrations.dir",
    );
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("a migrations folder with one database's folder only has none for the other, with one warning", async () => {
  const missing: string[] = [];
  const files = await loadMigrations(`${FIXTURES}ch_basic`, "postgres", {
    onMissingFolder: (folder) => missing.push(folder),
  });
  assert.deepEqual(files, []);
  assert.deepEqual(missing, [`${FIXTURES}ch_basic/postgres`]);

  // Loading files opens no connection.
  const sql = createPostgres({ url: "postgres://postgres@127.0.0.1:1/x", sslmode: "disable" });
  try {
    const { log, lines } = memoryLogger();
    const migrator = new Migrator(sql, { dir: `${FIXTURES}basic`, log });
    assert.equal((await migrator.load("postgres")).length, 3);
    assert.deepEqual(await migrator.load("clickhouse"), []);
    assert.deepEqual(await migrator.load("clickhouse"), []);
    assert.deepEqual(lines.filter((l) => l.level === "warn").map((l) => [l.message, l.folder]), [
      ["No ClickHouse migrations folder; none to apply", `${FIXTURES}basic/clickhouse`],
    ]);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("`migrate up` with a migrations folder that does not exist exits 1 naming it", async () => {
  const name = scratchName();
  const url = databaseUrl(name);
  const errors: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = () => {};
  console.error = (...parts: unknown[]) => errors.push(parts.join(" "));
  let code: number;
  try {
    code = await main([
      "up",
      "--only",
      "postgres",
      `--postgres.url=${url}`,
      `--migrations.dir=${MISSING}`,
    ]);
  } finally {
    console.log = log;
    console.error = error;
    await dropDatabase(name);
  }
  assert.equal(code, 1, `stderr: ${errors.join(" | ")}`);
  assert.match(errors.join("\n"), new RegExp(`Migrations folder ${MISSING} does not exist`));
});
