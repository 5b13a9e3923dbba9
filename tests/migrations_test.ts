/**
 * PostgreSQL adapter, migrator and migrations actor, against a real
 * PostgreSQL (`TW_TEST_POSTGRES_URL`, default the local server's `postgres`
 * database). Each test gets its own `tw_test_<random>` database.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import {
  createPostgres,
  databaseErrorKind,
  ensureDatabase,
  pingPostgres,
  waitForPostgres,
} from "../adapters/postgres.ts";
import {
  loadMigrations,
  MigrationApplyError,
  MigrationChecksumError,
  MigrationFileError,
  MigrationPendingError,
  Migrator,
  sha256Hex,
} from "../adapters/migrator.ts";
import { createClickHouse } from "../adapters/clickhouse.ts";
import { migrationsActor } from "../actors/migrations.ts";
import { RecordingClock } from "../lib/clock.ts";
import { memoryLogger, nullLogger } from "../lib/log.ts";
import { databaseUrl, dropDatabase, scratchDatabase, scratchName } from "./_postgres.ts";

const FIXTURES = new URL("./fixtures/migrations/", import.meta.url).pathname;
const REPO_MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;

/** A pool closed on dispose. */
function pool(url: string, size = 4): { sql: Sql } & AsyncDisposable {
  const sql = createPostgres({ url, pool_size: size, sslmode: "disable" });
  return { sql, [Symbol.asyncDispose]: () => sql.end({ timeout: 5 }) };
}

/** A copy of fixture folders, removed on dispose. `sets` maps engine to fixture set. */
async function fixtureCopy(
  sets: { postgres?: string; clickhouse?: string },
): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "tw_migrations_" });
  for (const [engine, set] of Object.entries(sets)) {
    await Deno.mkdir(`${dir}/${engine}`, { recursive: true });
    for await (const entry of Deno.readDir(`${FIXTURES}${set}/${engine}`)) {
      await Deno.copyFile(
        `${FIXTURES}${set}/${engine}/${entry.name}`,
        `${dir}/${engine}/${entry.name}`,
      );
    }
  }
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** Waits until `check` is true, polling, failing after `timeoutMs`. */
async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("Condition not met before the deadline");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Tables, columns, indexes, constraints, enums and functions of schema public. */
async function catalogDump(sql: Sql): Promise<unknown> {
  const columns = await sql`
    select table_name, column_name, data_type, udt_name, is_nullable, column_default,
      numeric_precision, numeric_scale
    from information_schema.columns where table_schema = 'public'
    order by table_name, ordinal_position`;
  const indexes = await sql`
    select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'
    order by tablename, indexname`;
  const constraints = await sql`
    select c.conrelid::regclass::text as tbl, c.conname, c.contype, pg_get_constraintdef(c.oid) as def
    from pg_constraint c join pg_namespace n on n.oid = c.connamespace
    where n.nspname = 'public' order by 1, 2`;
  const enums = await sql`
    select t.typname, array_agg(e.enumlabel order by e.enumsortorder) as labels
    from pg_type t join pg_enum e on e.enumtypid = t.oid
    join pg_namespace n on n.oid = t.typnamespace
    where n.nspname = 'public' group by t.typname order by t.typname`;
  const functions = await sql`
    select p.proname, pg_get_function_identity_arguments(p.oid) as args
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' order by 1, 2`;
  return JSON.parse(JSON.stringify({ columns, indexes, constraints, enums, functions }));
}

async function tableExists(sql: Sql, name: string): Promise<boolean> {
  const [row] = await sql`select to_regclass(${name}) is not null as present`;
  return row?.present === true;
}

// ---------------------------------------------------------------------------
// adapters/postgres.ts
// ---------------------------------------------------------------------------

Deno.test("createPostgres returns numeric and bigint as strings and sets session parameters", async () => {
  await using db = await scratchDatabase();
  const sql = createPostgres({
    url: db.url,
    pool_size: 2,
    statement_timeout_ms: 1234,
    application_name: "tw-test",
    sslmode: "prefer",
  });
  try {
    const [row] = await sql`select 1.5::numeric(20,8) as price, 12345678901234567::bigint as big,
      array[0.1, 0.2]::numeric[] as many,
      current_setting('statement_timeout') as timeout,
      current_setting('application_name') as app`;
    assert.equal(row?.price, "1.50000000");
    assert.equal(row?.big, "12345678901234567");
    assert.deepEqual(row?.many, ["0.1", "0.2"]);
    assert.equal(row?.timeout, "1234ms");
    assert.equal(row?.app, "tw-test");
    assert.ok((await pingPostgres(sql)) >= 0);
  } finally {
    await sql.end();
  }
});

Deno.test("createPostgres routes server notices to the logger at debug level", async () => {
  await using db = await scratchDatabase();
  const { log, lines } = memoryLogger();
  const sql = createPostgres({ url: db.url, sslmode: "disable" }, log);
  try {
    await sql`create table if not exists t (id int)`;
    await sql`create table if not exists t (id int)`;
    const notice = lines.find((line) => line.message === "PostgreSQL notice");
    assert.equal(notice?.level, "debug");
    assert.equal(notice?.code, "42P07");
  } finally {
    await sql.end();
  }
});

Deno.test("waitForPostgres retries an unreachable server with backoff, then gives up", async () => {
  const { log, lines } = memoryLogger();
  const clock = new RecordingClock();
  await assert.rejects(
    waitForPostgres(
      { url: "postgres://app:hunter2@127.0.0.1:1/tw", connect_timeout_s: 2, sslmode: "disable" },
      { log, clock, maxAttempts: 4, initialMs: 100, maxMs: 300, jitter: 0 },
    ),
    (error: unknown) => databaseErrorKind(error) === "connection",
  );
  assert.deepEqual(clock.sleeps, [100, 200, 300]);
  const retries = lines.filter((line) => line.message === "PostgreSQL unreachable, retrying");
  assert.equal(retries.length, 3);
  assert.deepEqual(retries.map((line) => line.attempt), [1, 2, 3]);
  assert.equal(retries[0]?.url, "postgres://app:***@127.0.0.1:1/tw");
  assert.ok(!JSON.stringify(lines).includes("hunter2"));
});

Deno.test("waitForPostgres stops waiting when its signal aborts", async () => {
  const controller = new AbortController();
  const clock = new RecordingClock();
  const waiting = waitForPostgres(
    { url: "postgres://postgres@127.0.0.1:1/tw", sslmode: "disable" },
    { clock, signal: controller.signal, initialMs: 10 },
  );
  await waitFor(() => clock.sleeps.length >= 2);
  controller.abort(new Error("shutdown"));
  await assert.rejects(waiting, /shutdown/);
});

Deno.test("waitForPostgres returns a connected pool when the server answers", async () => {
  await using db = await scratchDatabase();
  const sql = await waitForPostgres({ url: db.url, sslmode: "disable" });
  try {
    const [row] = await sql`select current_database() as name`;
    assert.equal(row?.name, db.name);
  } finally {
    await sql.end();
  }
});

Deno.test("ensureDatabase creates a missing database once", async () => {
  const name = scratchName();
  try {
    assert.equal(await ensureDatabase(databaseUrl(name), { sslmode: "disable" }), true);
    assert.equal(await ensureDatabase(databaseUrl(name), { sslmode: "disable" }), false);
    await using p = pool(databaseUrl(name));
    assert.ok((await pingPostgres(p.sql)) >= 0);
  } finally {
    await dropDatabase(name);
  }
});

Deno.test("databaseErrorKind classifies real errors by SQLSTATE and errno", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const { sql } = p;
  await sql`create table k (id int primary key, v int not null, check (v >= 0))`;
  await sql`insert into k values (1, 1)`;
  const kindOf = async (run: () => Promise<unknown>) => {
    try {
      await run();
    } catch (error) {
      return databaseErrorKind(error);
    }
    throw new Error("Expected an error");
  };
  assert.equal(await kindOf(() => sql`insert into k values (1, 2)`), "conflict");
  assert.equal(await kindOf(() => sql`insert into k values (2, null)`), "integrity");
  assert.equal(await kindOf(() => sql`insert into k values (3, -1)`), "integrity");
  assert.equal(
    await kindOf(() =>
      sql.begin((tx) => [tx`set local statement_timeout = 10`, tx`select pg_sleep(1)`])
    ),
    "timeout",
  );
  assert.equal(await kindOf(() => sql`select * from missing_table`), "other");
  const down = createPostgres({ url: "postgres://postgres@127.0.0.1:1/x", sslmode: "disable" });
  try {
    assert.equal(await kindOf(() => down`select 1`), "connection");
  } finally {
    await down.end();
  }
  const withCode = (code: string) => Object.assign(new Error(code), { code });
  assert.equal(databaseErrorKind(withCode("40001")), "serialization");
  assert.equal(databaseErrorKind(withCode("40P01")), "serialization");
  // The same kinds as mapDbError's classes: not retried, data errors.
  assert.equal(databaseErrorKind(withCode("40003")), "other");
  assert.equal(databaseErrorKind(withCode("40002")), "integrity");
  assert.equal(databaseErrorKind(withCode("22P02")), "integrity");
  assert.equal(databaseErrorKind(withCode("08006")), "connection");
  assert.equal(databaseErrorKind(new Error("x", { cause: withCode("57P01") })), "connection");
  assert.equal(databaseErrorKind(new AggregateError([withCode("ECONNREFUSED")])), "connection");
  assert.equal(databaseErrorKind("nope"), "other");
});

// ---------------------------------------------------------------------------
// Loading files
// ---------------------------------------------------------------------------

Deno.test("loadMigrations sorts files by version with sha256 checksums and down files", async () => {
  const files = await loadMigrations(`${FIXTURES}basic`, "postgres");
  assert.deepEqual(files.map((f) => [f.version, f.name, f.file, f.downFile]), [
    [1, "accounts", "0001_accounts.sql", "0001_accounts.down.sql"],
    [2, "orders", "0002_orders.sql", "0002_orders.down.sql"],
    [3, "order_status", "0003_order_status.sql", "0003_order_status.down.sql"],
  ]);
  const bytes = await Deno.readFile(`${FIXTURES}basic/postgres/0001_accounts.sql`);
  assert.equal(files[0]?.checksum, await sha256Hex(bytes));
  assert.match(files[0]?.checksum ?? "", /^[0-9a-f]{64}$/);
  assert.match(files[0]?.down ?? "", /DROP TYPE account_kind/);
  assert.deepEqual(await loadMigrations(`${FIXTURES}basic`, "clickhouse"), []);
});

Deno.test("loadMigrations refuses a PostgreSQL migration without its down file", async () => {
  await assert.rejects(
    loadMigrations(`${FIXTURES}missing_down`, "postgres"),
    (error: unknown) =>
      error instanceof MigrationFileError && error.file === "0001_lonely.sql" &&
      /no down file 0001_lonely\.down\.sql/.test(error.message),
  );
});

Deno.test("loadMigrations refuses bad names, duplicate versions and orphan down files", async () => {
  await assert.rejects(
    loadMigrations(`${FIXTURES}bad_name`, "postgres"),
    (error: unknown) =>
      error instanceof MigrationFileError && /Bad migration file name/.test(error.message),
  );
  await assert.rejects(
    loadMigrations(`${FIXTURES}duplicate`, "postgres"),
    (error: unknown) =>
      error instanceof MigrationFileError &&
      /Duplicate PostgreSQL migration version 0001/.test(error.message),
  );
  await assert.rejects(
    loadMigrations(`${FIXTURES}orphan_down`, "postgres"),
    (error: unknown) => error instanceof MigrationFileError && error.file === "0002_b.down.sql",
  );
});

Deno.test("the repository's PostgreSQL migrations load, each with its down file", async () => {
  const files = await loadMigrations(REPO_MIGRATIONS, "postgres");
  assert.ok(files.length >= 1);
  assert.equal(files[0]?.file, "0001_engine_runs.sql");
  assert.ok(files.every((f) => f.down !== null));
  await loadMigrations(REPO_MIGRATIONS, "clickhouse");
});

// ---------------------------------------------------------------------------
// Migrator (PostgreSQL)
// ---------------------------------------------------------------------------

Deno.test("up applies every pending migration on a fresh database, then a re-run is a no-op", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: `${FIXTURES}basic` });
  const first = await migrator.up();
  assert.deepEqual(first.postgres?.applied.map((m) => m.version), [1, 2, 3]);
  assert.equal(first.postgres?.total, 3);
  assert.equal(first.clickhouse, undefined);
  assert.ok(await tableExists(p.sql, "orders"));
  const rows = await p.sql`select version, name, checksum, applied_at, execution_ms
    from schema_migrations order by version`;
  const files = await loadMigrations(`${FIXTURES}basic`, "postgres");
  assert.deepEqual(
    rows.map((r) => [r.version, r.name, r.checksum]),
    files.map((f) => [f.version, f.name, f.checksum]),
  );
  assert.ok(rows.every((r) => r.applied_at instanceof Date && Number.isInteger(r.execution_ms)));

  const second = await migrator.up();
  assert.deepEqual(second.postgres?.applied, []);
  assert.equal(second.postgres?.total, 3);
  const again = await p.sql`select version, applied_at from schema_migrations order by version`;
  assert.deepEqual(
    again.map((r) => [r.version, r.applied_at.getTime()]),
    rows.map((r) => [r.version, r.applied_at.getTime()]),
  );
  const [{ n } = { n: 0 }] = await p.sql`select count(*)::int as n from accounts`;
  assert.equal(n, 1);
});

Deno.test("up refuses an applied file whose checksum changed and applies nothing", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  await using copy = await fixtureCopy({ postgres: "basic" });
  await Deno.remove(`${copy.dir}/postgres/0003_order_status.sql`);
  await Deno.remove(`${copy.dir}/postgres/0003_order_status.down.sql`);
  const migrator = new Migrator(p.sql, { dir: copy.dir });
  await migrator.up();

  await Deno.writeTextFile(`${copy.dir}/postgres/0001_accounts.sql`, "-- edited\n", {
    append: true,
  });
  await Deno.copyFile(
    `${FIXTURES}basic/postgres/0003_order_status.sql`,
    `${copy.dir}/postgres/0003_order_status.sql`,
  );
  await Deno.copyFile(
    `${FIXTURES}basic/postgres/0003_order_status.down.sql`,
    `${copy.dir}/postgres/0003_order_status.down.sql`,
  );
  await assert.rejects(
    migrator.up(),
    (error: unknown) =>
      error instanceof MigrationChecksumError && error.file === "0001_accounts.sql" &&
      /0001_accounts\.sql was changed after it was applied/.test(error.message),
  );
  const versions = await p.sql`select version from schema_migrations order by version`;
  assert.deepEqual(versions.map((r) => r.version), [1, 2]);
  assert.ok(!(await tableExists(p.sql, "order_notional")));
  const [status] = await p.sql`select count(*)::int as n from information_schema.columns
    where table_name = 'orders' and column_name = 'status'`;
  assert.equal(status?.n, 0);

  const report = await migrator.status();
  assert.deepEqual(report.postgres?.applied.map((m) => [m.version, m.checksumMismatch]), [
    [1, true],
    [2, false],
  ]);
  assert.deepEqual(report.postgres?.pending.map((m) => m.version), [3]);
  await assert.rejects(migrator.down(-1), MigrationChecksumError);
});

Deno.test("up refuses a set with a missing down file before touching the database", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: `${FIXTURES}missing_down` });
  await assert.rejects(migrator.up(), MigrationFileError);
  assert.ok(!(await tableExists(p.sql, "schema_migrations")));
  assert.ok(!(await tableExists(p.sql, "lonely")));
});

Deno.test("a failing file is rolled back with its row and stops the run", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: `${FIXTURES}failing` });
  await assert.rejects(
    migrator.up(),
    (error: unknown) =>
      error instanceof MigrationApplyError && error.file === "0002_broken.sql" &&
      /no_such_table/.test(error.message) && databaseErrorKind(error) === "other",
  );
  assert.ok(await tableExists(p.sql, "first_ok"));
  assert.ok(!(await tableExists(p.sql, "half_done")));
  const versions = await p.sql`select version from schema_migrations`;
  assert.deepEqual(versions.map((r) => r.version), [1]);
  // The reserved connection went back to the pool with its statement_timeout restored.
  const [row] = await p.sql`select current_setting('statement_timeout') as t`;
  assert.equal(row?.t, "30s");
});

Deno.test("two migrators racing on separate pools apply each file exactly once", async () => {
  await using db = await scratchDatabase();
  await using a = pool(db.url, 1);
  await using b = pool(db.url, 3);
  const dir = `${FIXTURES}basic`;
  const [ra, rb] = await Promise.all([
    new Migrator(a.sql, { dir }).up(),
    new Migrator(b.sql, { dir }).up(),
  ]);
  const appliedVersions = [...(ra.postgres?.applied ?? []), ...(rb.postgres?.applied ?? [])]
    .map((m) => m.version).sort();
  assert.deepEqual(appliedVersions, [1, 2, 3]);
  assert.ok(ra.postgres?.applied.length === 0 || rb.postgres?.applied.length === 0);
  const [counts] = await a.sql`select
    (select count(*)::int from schema_migrations) as migrations,
    (select count(*)::int from accounts) as accounts`;
  assert.deepEqual({ ...counts }, { migrations: 3, accounts: 1 });
});

Deno.test("up, down to 0, then up again leaves the same schema", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: `${FIXTURES}basic` });
  const empty = await catalogDump(p.sql);
  await migrator.up();
  const migrated = await catalogDump(p.sql);
  const down = await migrator.down(0);
  assert.deepEqual(down.postgres?.reverted.map((m) => m.version), [3, 2, 1]);
  assert.equal(down.postgres?.total, 0);
  const afterDown = (await catalogDump(p.sql)) as { columns: Array<{ table_name: string }> };
  afterDown.columns = afterDown.columns.filter((c) => c.table_name !== "schema_migrations");
  const emptyTables = empty as { columns: unknown[] };
  assert.deepEqual(afterDown.columns, emptyTables.columns);
  await migrator.up();
  assert.deepEqual(await catalogDump(p.sql), migrated);
});

Deno.test("down -1 reverts one step and down N reverts to version N", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: `${FIXTURES}basic` });
  await migrator.up();
  const one = await migrator.down(-1);
  assert.deepEqual(one.postgres?.reverted.map((m) => m.version), [3]);
  assert.deepEqual((await migrator.status()).postgres?.applied.map((m) => m.version), [1, 2]);
  const [col] = await p.sql`select count(*)::int as n from information_schema.columns
    where table_name = 'orders' and column_name = 'status'`;
  assert.equal(col?.n, 0);
  const toOne = await migrator.down(1);
  assert.deepEqual(toOne.postgres?.reverted.map((m) => m.version), [2]);
  assert.ok(!(await tableExists(p.sql, "orders")));
  assert.deepEqual((await migrator.down(5)).postgres?.reverted, []);
  const upTo2 = await migrator.up(2);
  assert.deepEqual(upTo2.postgres?.applied.map((m) => m.version), [2]);
  const status = await migrator.status();
  assert.deepEqual(status.postgres?.applied.map((m) => m.version), [1, 2]);
  assert.deepEqual(status.postgres?.pending.map((m) => m.version), [3]);
  await assert.rejects(migrator.down(-2), RangeError);
  await assert.rejects(migrator.up(-1), RangeError);
});

Deno.test("status lists applied and pending migrations without creating anything", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: `${FIXTURES}basic` });
  const before = await migrator.status();
  assert.deepEqual(before.postgres?.applied, []);
  assert.deepEqual(before.postgres?.pending.map((m) => m.file), [
    "0001_accounts.sql",
    "0002_orders.sql",
    "0003_order_status.sql",
  ]);
  assert.ok(!(await tableExists(p.sql, "schema_migrations")));
  await migrator.up(1);
  const after = await migrator.status({ only: "postgres" });
  assert.deepEqual(
    after.postgres?.applied.map((m) => [m.version, m.name, m.file, m.checksumMismatch]),
    [
      [1, "accounts", "0001_accounts.sql", false],
    ],
  );
  assert.ok(after.postgres?.applied[0]?.appliedAt instanceof Date);
  assert.deepEqual(after.postgres?.pending.map((m) => m.version), [2, 3]);
});

Deno.test("a run waiting for the advisory lock goes on when it is released and stops when aborted", async () => {
  await using db = await scratchDatabase();
  await using holder = pool(db.url, 1);
  await using p = pool(db.url);
  const lockKey = 4242;
  const holding = await holder.sql.reserve();
  await holding`select pg_advisory_lock(${lockKey})`;
  const waitingForLock = async () => {
    const rows = await holding`select count(*)::int as n from pg_locks
      where locktype = 'advisory' and not granted`;
    return rows[0]?.n === 1;
  };
  try {
    const controller = new AbortController();
    const aborted = new Migrator(p.sql, { dir: `${FIXTURES}basic`, lockKey }).up(undefined, {
      signal: controller.signal,
    });
    await waitFor(waitingForLock);
    controller.abort(new Error("shutdown"));
    await assert.rejects(aborted, /shutdown/);
    assert.ok(!(await tableExists(p.sql, "accounts")));

    let finished = false;
    const waiting = new Migrator(p.sql, { dir: `${FIXTURES}basic`, lockKey }).up().then((run) => {
      finished = true;
      return run;
    });
    await waitFor(waitingForLock);
    assert.equal(finished, false);
    await holding`select pg_advisory_unlock(${lockKey})`;
    const run = await waiting;
    assert.deepEqual(run.postgres?.applied.map((m) => m.version), [1, 2, 3]);
  } finally {
    holding.release();
  }
});

Deno.test("the repository's migrations apply, revert and re-apply on PostgreSQL", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: REPO_MIGRATIONS });
  await migrator.up(undefined, { only: "postgres" });
  const [run] = await p
    .sql`insert into engine_runs (instance_id, version, host, pid, config_checksum)
    values (${crypto.randomUUID()}, '0.1.0', 'host', 42, 'abc') returning id, started_at, stopped_at`;
  assert.ok(run?.started_at instanceof Date);
  assert.equal(run?.stopped_at, null);
  assert.equal(typeof run?.id, "string");
  const [index] = await p
    .sql`select indexdef from pg_indexes where indexname = 'engine_runs_started_at_idx'`;
  assert.match(index?.indexdef ?? "", /\(started_at\)/);
  await migrator.down(0, { only: "postgres" });
  assert.ok(!(await tableExists(p.sql, "engine_runs")));
  await migrator.up(undefined, { only: "postgres" });
  assert.ok(await tableExists(p.sql, "engine_runs"));
});

Deno.test("0004 gives existing positions their cost basis (qty × avg entry) and reverts cleanly", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: REPO_MIGRATIONS });
  await migrator.up(3, { only: "postgres" });
  const before = await catalogDump(p.sql);
  await p.sql`insert into symbols (symbol) values ('AAPL'), ('MSFT'), ('BTC-USDT')`;
  await p.sql`insert into positions (symbol, qty, avg_entry_price, realized_pnl) values
    ('AAPL', 3000000000, 0.00001235, 0), ('MSFT', -2.5, 400.12345678, 1), ('BTC-USDT', 0, 0, 7)`;
  const up = await migrator.up(4, { only: "postgres" });
  assert.deepEqual(up.postgres?.applied.map((m) => [m.version, m.name]), [[
    4,
    "position_cost_basis",
  ]]);
  const rows = await p.sql<{ symbol: string; cost_basis: string }[]>`
    select symbol, cost_basis::text as cost_basis from positions order by symbol`;
  assert.deepEqual(rows.map((r) => [r.symbol, r.cost_basis]), [
    ["AAPL", "37050.0000000000000000"],
    ["BTC-USDT", "0.0000000000000000"],
    ["MSFT", "-1000.3086419500000000"],
  ]);
  const [column] = await p.sql`select numeric_precision, numeric_scale, is_nullable
    from information_schema.columns where table_name = 'positions' and column_name = 'cost_basis'`;
  assert.deepEqual({ ...column }, { numeric_precision: 38, numeric_scale: 16, is_nullable: "NO" });
  // A basis on the wrong side of the quantity, or an open position written without one, is refused.
  await assert.rejects(
    p.sql`update positions set cost_basis = -1 where symbol = 'AAPL'`,
    /positions_cost_basis_sign/,
  );
  await assert.rejects(
    p.sql`update positions set qty = 1, avg_entry_price = 1 where symbol = 'BTC-USDT'`,
    /positions_cost_basis_sign/,
  );
  const down = await migrator.down(-1, { only: "postgres" });
  assert.deepEqual(down.postgres?.reverted.map((m) => m.version), [4]);
  assert.deepEqual(await catalogDump(p.sql), before);
  await migrator.up(undefined, { only: "postgres" });
  const [again] = await p.sql<{ cost_basis: string }[]>`
    select cost_basis::text as cost_basis from positions where symbol = 'AAPL'`;
  assert.equal(again?.cost_basis, "37050.0000000000000000");
});

Deno.test("0005 gives used portfolios the starting cash their figures tell, leaves a pristine one unset, and reverts cleanly", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const migrator = new Migrator(p.sql, { dir: REPO_MIGRATIONS });
  await migrator.up(4, { only: "postgres" });
  const before = await catalogDump(p.sql);
  await p.sql`insert into symbols (symbol) values ('AAPL'), ('BTC-USDT')`;
  // `used`: from 1,000, bought 3 AAPL @ 100 (fee 1) and sold 1 @ 110: realized 10 − 1, cash 809,
  // a basis of 200 left; plus a flat BTC-USDT position. `fresh`: nothing but zeros.
  await p.sql`insert into portfolios (id, cash, equity, realized_pnl)
    values ('used', 809, 1009, 9), ('fresh', 0, 0, 0)`;
  await p.sql`insert into positions (portfolio_id, symbol, qty, avg_entry_price, cost_basis,
      realized_pnl) values
    ('used', 'AAPL', 2, 100, 200, 9), ('used', 'BTC-USDT', 0, 0, 0, 0)`;
  const up = await migrator.up(5, { only: "postgres" });
  assert.deepEqual(up.postgres?.applied.map((m) => [m.version, m.name]), [[
    5,
    "portfolio_starting_cash",
  ]]);
  const rows = await p.sql<{ id: string; starting_cash: string | null }[]>`
    select id, starting_cash::text as starting_cash from portfolios order by id`;
  assert.deepEqual(rows.map((r) => [r.id, r.starting_cash]), [
    ["default", null],
    ["fresh", null],
    ["used", "1000.00000000"],
  ]);
  const down = await migrator.down(-1, { only: "postgres" });
  assert.deepEqual(down.postgres?.reverted.map((m) => m.version), [5]);
  assert.deepEqual(await catalogDump(p.sql), before);
});

// ---------------------------------------------------------------------------
// actors/migrations.ts
// ---------------------------------------------------------------------------

Deno.test("migrations actor is ready once PostgreSQL migrations are applied", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const spec = migrationsActor({
    sql: p.sql,
    clickhouse: null,
    options: { dir: REPO_MIGRATIONS, apply_on_start: true, lock_key: 99, database: "unused" },
    log: nullLogger,
  });
  assert.equal(spec.name, "migrations");
  assert.equal(spec.restart, "transient");
  const running = spec.start(new AbortController().signal);
  await running.ready;
  assert.equal(spec.state.postgres, "applied");
  assert.ok(spec.state.postgresApplied >= 1);
  assert.ok(await tableExists(p.sql, "engine_runs"));
  await running.done;
  assert.equal(spec.state.clickhouse, "unavailable");
  assert.deepEqual(running.stats(), { kind: "worker" });
});

Deno.test("migrations actor is ready while ClickHouse is unreachable and keeps retrying until stopped", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  await using copy = await fixtureCopy({ postgres: "basic", clickhouse: "ch_basic" });
  const clickhouse = createClickHouse({ url: "http://127.0.0.1:1", request_timeout_ms: 2000 });
  try {
    const { log, lines } = memoryLogger();
    const clock = new RecordingClock();
    const spec = migrationsActor({
      sql: p.sql,
      clickhouse,
      options: { dir: copy.dir, lock_key: 77, database: "tw_unreachable" },
      log,
      clock,
      retry: { initialMs: 100, maxMs: 400, jitter: 0 },
      clickhouseStartWaitMs: 60_000,
    });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    await running.ready;
    assert.equal(spec.state.postgres, "applied");
    await waitFor(() => spec.state.clickhouse === "unavailable");
    assert.match(spec.state.lastError ?? "", /unreachable/i);
    await waitFor(() => clock.sleeps.length >= 5);
    assert.deepEqual(clock.sleeps.slice(0, 5), [60_000, 100, 200, 400, 400]);
    assert.ok(
      lines.some((l) => l.level === "warn" && /ClickHouse unreachable/.test(String(l.message))),
    );
    let chReady = false;
    spec.state.clickhouseReady.then(() => chReady = true);
    controller.abort();
    await running.done;
    assert.equal(chReady, false);
    assert.equal(spec.state.snapshot().clickhouse, "unavailable");
  } finally {
    await clickhouse.close();
  }
});

Deno.test("migrations actor retries while PostgreSQL is unreachable and exits promptly on shutdown", async () => {
  const { log, lines } = memoryLogger();
  const clock = new RecordingClock();
  const sql = createPostgres({ url: "postgres://postgres@127.0.0.1:1/x", sslmode: "disable" });
  try {
    const spec = migrationsActor({
      sql,
      clickhouse: null,
      options: { dir: `${FIXTURES}basic`, database: "x" },
      log,
      clock,
      retry: { initialMs: 50, maxMs: 100, jitter: 0 },
    });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    await waitFor(() => clock.sleeps.length >= 3);
    assert.deepEqual(clock.sleeps.slice(0, 3), [50, 100, 100]);
    assert.ok(
      lines.some((l) => l.message === "PostgreSQL unreachable, retrying" && l.level === "warn"),
    );
    assert.equal(spec.state.postgres, "pending");
    controller.abort(new Error("shutdown"));
    await running.done;
    await assert.rejects(running.ready, /shutdown/);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("migrations actor fails on a changed checksum so the engine exits", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  await using copy = await fixtureCopy({ postgres: "basic" });
  await new Migrator(p.sql, { dir: copy.dir }).up();
  await Deno.writeTextFile(`${copy.dir}/postgres/0002_orders.sql`, "-- edited\n", { append: true });
  const spec = migrationsActor({
    sql: p.sql,
    clickhouse: null,
    options: { dir: copy.dir, database: "x" },
  });
  const running = spec.start(new AbortController().signal);
  await assert.rejects(running.ready, MigrationChecksumError);
  await assert.rejects(running.done, MigrationChecksumError);
  assert.equal(spec.state.postgres, "failed");
});

Deno.test("migrations actor without apply_on_start refuses pending migrations", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  const spec = migrationsActor({
    sql: p.sql,
    clickhouse: null,
    options: { dir: `${FIXTURES}basic`, apply_on_start: false, database: "x" },
  });
  const running = spec.start(new AbortController().signal);
  await assert.rejects(running.ready, MigrationPendingError);
  await assert.rejects(running.done, MigrationPendingError);
  assert.ok(!(await tableExists(p.sql, "accounts")));

  await new Migrator(p.sql, { dir: `${FIXTURES}basic` }).up();
  const again = migrationsActor({
    sql: p.sql,
    clickhouse: null,
    options: { dir: `${FIXTURES}basic`, apply_on_start: false, database: "x" },
  });
  const ok = again.start(new AbortController().signal);
  await ok.ready;
  await ok.done;
  assert.equal(again.state.postgresApplied, 3);
});

/** A TCP server that accepts connections and never answers, closed on dispose. */
function blackHole(): { port: number; accepted: () => number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) conns.push(conn);
    } catch {
      // closed
    }
  })();
  return {
    port: listener.addr.port,
    accepted: () => conns.length,
    [Symbol.asyncDispose]: async () => {
      listener.close();
      for (const conn of conns) conn.close();
      await accepting;
    },
  };
}

Deno.test("migrations actor does not wait long for a ClickHouse that never answers, and stops promptly", async () => {
  await using db = await scratchDatabase();
  await using p = pool(db.url);
  await using hole = blackHole();
  await using copy = await fixtureCopy({ clickhouse: "ch_basic" });
  const clickhouse = createClickHouse({
    url: `http://127.0.0.1:${hole.port}`,
    request_timeout_ms: 30_000,
  });
  try {
    const spec = migrationsActor({
      sql: p.sql,
      clickhouse,
      options: { dir: copy.dir, database: "tw_black_hole" },
      clickhouseStartWaitMs: 50,
    });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    const started = Date.now();
    await running.ready;
    assert.equal(spec.state.postgres, "applied");
    assert.equal(spec.state.clickhouse, "pending");
    await waitFor(() => hole.accepted() > 0);
    controller.abort();
    await running.done;
    assert.ok(Date.now() - started < 5000);
  } finally {
    await clickhouse.close();
  }
});

Deno.test("migrations actor stops promptly while PostgreSQL never answers", async () => {
  await using hole = blackHole();
  const sql = createPostgres({
    url: `postgres://postgres@127.0.0.1:${hole.port}/x`,
    connect_timeout_s: 30,
    sslmode: "disable",
  });
  try {
    const spec = migrationsActor({
      sql,
      clickhouse: null,
      options: { dir: `${FIXTURES}basic`, database: "x" },
    });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    const started = Date.now();
    await waitFor(() => hole.accepted() > 0);
    controller.abort();
    await running.done;
    await assert.rejects(running.ready);
    assert.ok(Date.now() - started < 5000);
    assert.equal(spec.state.postgres, "pending");
  } finally {
    await sql.end({ timeout: 0 });
  }
});
