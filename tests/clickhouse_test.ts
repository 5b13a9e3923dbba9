/**
 * ClickHouse adapter, escaping and ClickHouse migrations, against a real
 * ClickHouse (`TW_TEST_CLICKHOUSE_URL`, default `http://127.0.0.1:8123`) and
 * PostgreSQL (`TW_TEST_POSTGRES_URL`; it holds the migration lock). Each test
 * gets its own `tw_test_<random>` databases.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import type { ClickHouseClient } from "@clickhouse/client";
import {
  type ClickHouseCapabilities,
  clickHouseErrorCode,
  ClickHouseUnavailableError,
  createClickHouse,
  detectCapabilities,
  ensureClickHouseDatabase,
  isClickHouseUnavailable,
  literal,
  pingClickHouse,
  quoteIdentifier,
  quoteString,
  toUnixSeconds,
} from "../adapters/clickhouse.ts";
import { createPostgres } from "../adapters/postgres.ts";
import {
  checkConditionals,
  loadMigrations,
  MigrationApplyError,
  MigrationChecksumError,
  MigrationError,
  MigrationFileError,
  Migrator,
  renderConditionals,
  splitStatements,
} from "../adapters/migrator.ts";
import { migrationsActor } from "../actors/migrations.ts";
import { memoryLogger } from "../lib/log.ts";
import { scratchDatabase, scratchName } from "./_postgres.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const FIXTURES = new URL("./fixtures/migrations/", import.meta.url).pathname;
const UNREACHABLE = "http://127.0.0.1:1";

/** An admin client (bound to `default`) and a fresh database name, dropped on dispose. */
function testClickHouse(): { client: ClickHouseClient; database: string } & AsyncDisposable {
  const client = createClickHouse({ url: CH_URL, request_timeout_ms: 10_000 }, {
    database: "default",
  });
  const database = scratchName();
  return {
    client,
    database,
    [Symbol.asyncDispose]: async () => {
      try {
        await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
      } finally {
        await client.close();
      }
    },
  };
}

/** A fresh PostgreSQL database with a pool, both dropped on dispose. */
async function testPostgres(): Promise<{ sql: Sql; url: string } & AsyncDisposable> {
  const db = await scratchDatabase();
  const sql = createPostgres({ url: db.url, pool_size: 3, sslmode: "disable" });
  return {
    sql,
    url: db.url,
    [Symbol.asyncDispose]: async () => {
      try {
        await sql.end({ timeout: 5 });
      } finally {
        await db.drop();
      }
    },
  };
}

/** A copy of a fixture set's `clickhouse/` folder, removed on dispose. */
async function fixtureCopy(set: string): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "tw_migrations_" });
  await Deno.mkdir(`${dir}/clickhouse`);
  for await (const entry of Deno.readDir(`${FIXTURES}${set}/clickhouse`)) {
    await Deno.copyFile(
      `${FIXTURES}${set}/clickhouse/${entry.name}`,
      `${dir}/clickhouse/${entry.name}`,
    );
  }
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function select<T>(client: ClickHouseClient, query: string): Promise<T[]> {
  const result = await client.query({ query, format: "JSONEachRow" });
  return await result.json<T>();
}

async function tables(client: ClickHouseClient, database: string): Promise<string[]> {
  const rows = await select<{ name: string }>(
    client,
    `SELECT name FROM system.tables WHERE database = ${quoteString(database)} ORDER BY name`,
  );
  return rows.map((row) => row.name);
}

async function columnTypes(
  client: ClickHouseClient,
  database: string,
  table: string,
): Promise<Record<string, string>> {
  const rows = await select<{ name: string; type: string }>(
    client,
    `SELECT name, type FROM system.columns WHERE database = ${quoteString(database)} ` +
      `AND table = ${quoteString(table)}`,
  );
  return Object.fromEntries(rows.map((row) => [row.name, row.type]));
}

const OLD: ClickHouseCapabilities = {
  version: "18.16.1",
  major: 18,
  minor: 16,
  datetime64: false,
  ttl: false,
  queryParams: false,
  lowCardinality: false,
};
const NEW: ClickHouseCapabilities = {
  version: "24.8.1",
  major: 24,
  minor: 8,
  datetime64: true,
  ttl: true,
  queryParams: true,
  lowCardinality: true,
};

/** Strings that have broken naive escaping somewhere. */
const TRICKY = [
  "",
  "plain",
  "it's",
  "it''s",
  "back\\slash",
  "\\",
  "\\'",
  "ends with backslash \\",
  "'; DROP TABLE victims; --",
  "\\'; DROP TABLE victims; --",
  "\0",
  "\0" + "1",
  "a\0b",
  "\x01ab",
  "\x1f\x7f",
  "line\nbreak\r\ttab\b\f\v",
  "unicode ☃ é 𝄞 中文",
  "\\x41 \\0 \\n",
  "`backtick`",
  '"double"',
  "-- comment",
  "/* block */",
  "{x:String}",
  "?",
  "$1",
];

// ---------------------------------------------------------------------------
// Escaping (unit)
// ---------------------------------------------------------------------------

Deno.test("quoteString escapes backslash, quote, NUL and control characters", () => {
  assert.equal(quoteString("plain"), "'plain'");
  assert.equal(quoteString("it's"), "'it\\'s'");
  assert.equal(quoteString("a\\b"), "'a\\\\b'");
  assert.equal(quoteString("\0"), "'\\x00'");
  assert.equal(quoteString("a\nb\tc\rd"), "'a\\nb\\tc\\rd'");
  assert.equal(quoteString("\x01\x7f"), "'\\x01\\x7f'");
  assert.equal(quoteString("`"), "'`'");
  assert.equal(quoteString("☃"), "'☃'");
  assert.throws(() => quoteString("\ud800"), TypeError);
  assert.throws(() => quoteString(5 as unknown as string), TypeError);
});

Deno.test("quoteIdentifier backquotes names and escapes backquotes and backslashes", () => {
  assert.equal(quoteIdentifier("ticks"), "`ticks`");
  assert.equal(quoteIdentifier("we`ird"), "`we\\`ird`");
  assert.equal(quoteIdentifier("a\\b"), "`a\\\\b`");
  assert.equal(quoteIdentifier("db.table"), "`db.table`");
  assert.equal(quoteIdentifier("it's"), "`it's`");
  assert.throws(() => quoteIdentifier(""), TypeError);
});

Deno.test("literal writes strings, numbers, bigints, booleans, null, dates and arrays", () => {
  assert.equal(literal("x"), "'x'");
  assert.equal(literal(42), "42");
  assert.equal(literal(-1.5), "-1.5");
  assert.equal(literal(-0), "0");
  assert.equal(literal(1e-7), "1e-7");
  assert.equal(literal(2n ** 64n - 1n), "18446744073709551615");
  assert.equal(literal(true), "1");
  assert.equal(literal(false), "0");
  assert.equal(literal(null), "NULL");
  assert.equal(literal(undefined), "NULL");
  assert.equal(literal(new Date(1_700_000_000_123)), "toDateTime(1700000000)");
  assert.equal(literal(["a", 1, null, [true]]), "['a', 1, NULL, [1]]");
  assert.equal(literal([]), "[]");
  assert.throws(() => literal(NaN), RangeError);
  assert.throws(() => literal(Infinity), RangeError);
  assert.throws(() => literal(-Infinity), RangeError);
  assert.throws(() => literal([1, NaN]), RangeError);
  assert.throws(() => literal(new Date(NaN)), RangeError);
  assert.throws(() => literal({} as unknown as string), TypeError);
  assert.throws(() => literal(Symbol("s") as unknown as string), TypeError);
  assert.equal(toUnixSeconds(new Date(1_000)), 1);
});

Deno.test("clickHouseErrorCode reads old and new server error formats", () => {
  assert.equal(
    clickHouseErrorCode(
      new Error("Code: 81, e.displayText() = DB::Exception: Database x doesn't exist"),
    ),
    81,
  );
  assert.equal(
    clickHouseErrorCode(
      new Error("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)"),
    ),
    60,
  );
  assert.equal(clickHouseErrorCode(Object.assign(new Error("x"), { code: "62" })), 62);
  assert.equal(clickHouseErrorCode(new Error("connect ECONNREFUSED")), null);
  assert.equal(
    isClickHouseUnavailable(Object.assign(new Error("x"), { code: "ECONNREFUSED" })),
    true,
  );
  assert.equal(isClickHouseUnavailable(new Error("Code: 60, e.displayText() = x")), false);
});

// ---------------------------------------------------------------------------
// Escaping against the real server
// ---------------------------------------------------------------------------

Deno.test("string literals round-trip exactly through the real server", async () => {
  await using ch = testClickHouse();
  for (const value of TRICKY) {
    const rows = await select<{ v: string; n: number }>(
      ch.client,
      `SELECT ${literal(value)} AS v, length(${literal(value)}) AS n`,
    );
    assert.equal(rows[0]?.v, value, `round trip of ${JSON.stringify(value)}`);
    assert.equal(Number(rows[0]?.n), new TextEncoder().encode(value).length);
  }
  const [row] = await select<{ v: string[]; n: string; b: number; d: number; f: number }>(
    ch.client,
    `SELECT ${literal(TRICKY)} AS v, toString(${literal(2n ** 64n - 1n)}) AS n,
      ${literal(true)} AS b, toUInt32(${literal(new Date(1_700_000_000_999))}) AS d,
      ${literal(-1.25)} AS f`,
  );
  assert.deepEqual(row?.v, TRICKY);
  assert.equal(row?.n, "18446744073709551615");
  assert.equal(Number(row?.b), 1);
  assert.equal(Number(row?.d), 1_700_000_000);
  assert.equal(row?.f, -1.25);
});

Deno.test("identifiers with quotes and backquotes round-trip through the real server", async () => {
  await using ch = testClickHouse();
  await ensureClickHouseDatabase(ch.client, ch.database);
  await ensureClickHouseDatabase(ch.client, ch.database);
  const names = ["we`ird", "it's", "back\\slash", "semi;colon", "dot.ted", "spa ce"];
  for (const name of names) {
    await ch.client.command({
      query: `CREATE TABLE ${quoteIdentifier(ch.database)}.${quoteIdentifier(name)} ` +
        `(${quoteIdentifier(name)} String) ENGINE = TinyLog`,
    });
  }
  assert.deepEqual(await tables(ch.client, ch.database), [...names].sort());
  for (const name of names) {
    const types = await columnTypes(ch.client, ch.database, name);
    assert.deepEqual(Object.keys(types), [name]);
  }
});

Deno.test("an injection attempt through literal() is stored as data and drops nothing", async () => {
  await using ch = testClickHouse();
  await ensureClickHouseDatabase(ch.client, ch.database);
  const table = `${quoteIdentifier(ch.database)}.${quoteIdentifier("victims")}`;
  await ch.client.command({ query: `CREATE TABLE ${table} (s String) ENGINE = TinyLog` });
  const attacks = [
    `'; DROP TABLE ${ch.database}.victims; --`,
    `\\'; DROP TABLE ${ch.database}.victims; --`,
    `\0'); DROP TABLE ${ch.database}.victims; --`,
    `x' OR 1 = 1 --`,
  ];
  for (const attack of attacks) {
    await ch.client.command({ query: `INSERT INTO ${table} (s) VALUES (${literal(attack)})` });
    const rows = await select<{ n: string | number }>(
      ch.client,
      `SELECT count() AS n FROM ${table} WHERE s = ${literal(attack)}`,
    );
    assert.equal(Number(rows[0]?.n), 1);
  }
  assert.deepEqual(await tables(ch.client, ch.database), ["victims"]);
  const stored = await select<{ s: string }>(ch.client, `SELECT s FROM ${table}`);
  assert.deepEqual(stored.map((row) => row.s), attacks);
});

// ---------------------------------------------------------------------------
// Adapter
// ---------------------------------------------------------------------------

Deno.test("pingClickHouse measures latency and throws ClickHouseUnavailableError when down", async () => {
  await using ch = testClickHouse();
  assert.ok((await pingClickHouse(ch.client)) >= 0);
  const down = createClickHouse({ url: UNREACHABLE, request_timeout_ms: 2000 });
  try {
    await assert.rejects(pingClickHouse(down), ClickHouseUnavailableError);
    await assert.rejects(detectCapabilities(down), ClickHouseUnavailableError);
    await assert.rejects(ensureClickHouseDatabase(down, "x"), ClickHouseUnavailableError);
  } finally {
    await down.close();
  }
});

Deno.test("an authenticated pingClickHouse fails for a wrong password, which GET /ping lets through", async () => {
  const wrong = createClickHouse({ url: CH_URL, user: "default", password: "not-the-password" });
  try {
    // ClickHouse answers GET /ping to anyone: health showed ClickHouse up for a wrong password.
    assert.ok((await pingClickHouse(wrong)) >= 0);
    await assert.rejects(
      pingClickHouse(wrong, { authenticated: true }),
      (error: unknown) =>
        error instanceof ClickHouseUnavailableError &&
        error.message.startsWith("ClickHouse refused the client: ") &&
        !error.message.includes("not-the-password"),
    );
  } finally {
    await wrong.close();
  }
  await using ch = testClickHouse();
  assert.ok((await pingClickHouse(ch.client, { authenticated: true })) >= 0);
  const down = createClickHouse({ url: UNREACHABLE, request_timeout_ms: 2000 });
  try {
    await assert.rejects(
      pingClickHouse(down, { authenticated: true }),
      /^ClickHouseUnavailableError: ClickHouse is unreachable/,
    );
  } finally {
    await down.close();
  }
});

Deno.test("createClickHouse routes the client library's logs to the logger", async () => {
  const { log, lines } = memoryLogger();
  const down = createClickHouse({ url: UNREACHABLE }, { log });
  try {
    await assert.rejects(down.query({ query: "SELECT 1" }));
    assert.ok(lines.length > 0);
    assert.ok(lines.every((line) => line.level === "debug"));
  } finally {
    await down.close();
  }
});

Deno.test("detectCapabilities reports the version and features consistent with it", async () => {
  await using ch = testClickHouse();
  const caps = await detectCapabilities(ch.client);
  assert.match(caps.version, /^\d+\.\d+/);
  const [major, minor] = caps.version.split(".").map(Number);
  assert.equal(caps.major, major);
  assert.equal(caps.minor, minor);
  if (caps.major <= 18) {
    assert.deepEqual(
      [caps.datetime64, caps.ttl, caps.queryParams, caps.lowCardinality],
      [false, false, false, false],
    );
  }
  if (caps.major >= 21) {
    assert.deepEqual(
      [caps.datetime64, caps.ttl, caps.queryParams, caps.lowCardinality],
      [true, true, true, true],
    );
  }
  if (caps.datetime64) {
    const [row] = await select<{ t: string }>(ch.client, "SELECT toTypeName(now64(3)) AS t");
    assert.equal(row?.t, "DateTime64(3)");
  }
});

Deno.test("rows with DateTime as Unix seconds and UInt64 insert and read back on every server", async () => {
  await using ch = testClickHouse();
  await ensureClickHouseDatabase(ch.client, ch.database);
  const table = `${quoteIdentifier(ch.database)}.${quoteIdentifier("events")}`;
  await ch.client.command({
    query: `CREATE TABLE ${table} (t DateTime, n UInt64, s String) ENGINE = MergeTree ORDER BY t`,
  });
  const when = new Date(1_700_000_000_000);
  await ch.client.insert({
    table: `${ch.database}.events`,
    values: [{ t: toUnixSeconds(when), n: "18446744073709551615", s: "it's \\ ok" }],
    format: "JSONEachRow",
  });
  const [row] = await select<{ t: number; n: string; s: string }>(
    ch.client,
    `SELECT toUInt32(t) AS t, n, s FROM ${table}`,
  );
  assert.equal(Number(row?.t), toUnixSeconds(when));
  assert.equal(row?.n, "18446744073709551615");
  assert.equal(row?.s, "it's \\ ok");
});

// ---------------------------------------------------------------------------
// Migration files (pure)
// ---------------------------------------------------------------------------

Deno.test("splitStatements splits on semicolons outside quotes and comments", () => {
  const text = [
    "-- leading comment; not a statement",
    "CREATE TABLE a (s String DEFAULT 'x;y', `c;d` UInt8) ENGINE = Log;",
    "/* block; comment */",
    "INSERT INTO a VALUES ('it\\'s; fine', 1);",
    'SELECT "q;q" FROM a -- trailing; comment',
    ";",
    "  -- only a comment",
    "",
  ].join("\n");
  assert.deepEqual(splitStatements(text), [
    "-- leading comment; not a statement\nCREATE TABLE a (s String DEFAULT 'x;y', `c;d` UInt8) ENGINE = Log",
    "/* block; comment */\nINSERT INTO a VALUES ('it\\'s; fine', 1)",
    'SELECT "q;q" FROM a -- trailing; comment',
  ]);
  assert.deepEqual(splitStatements("SELECT 1"), ["SELECT 1"]);
  assert.deepEqual(splitStatements("-- nothing\n"), []);
  assert.throws(() => splitStatements("SELECT 'open"), SyntaxError);
  assert.throws(() => splitStatements("/* open"), SyntaxError);
});

Deno.test("renderConditionals keeps the branch the server supports", () => {
  const text = [
    "CREATE TABLE t (",
    "-- @if datetime64",
    "  ts DateTime64(3)",
    "-- @else",
    "  ts DateTime",
    "-- @end",
    "-- @if !lowcardinality",
    "  , v String",
    "-- @end",
    "-- @if ttl",
    "-- @if datetime64",
    ") TTL toDateTime(ts) + INTERVAL 1 DAY",
    "-- @end",
    "-- @end",
    ")",
  ].join("\n");
  const lines = (caps: ClickHouseCapabilities) =>
    renderConditionals(text, caps).split("\n").filter((line) => line.trim() !== "");
  assert.deepEqual(lines(OLD), ["CREATE TABLE t (", "  ts DateTime", "  , v String", ")"]);
  assert.deepEqual(lines(NEW), [
    "CREATE TABLE t (",
    "  ts DateTime64(3)",
    ") TTL toDateTime(ts) + INTERVAL 1 DAY",
    ")",
  ]);
  assert.equal(renderConditionals(text, OLD).split("\n").length, text.split("\n").length);
  assert.throws(() => checkConditionals("-- @if tll\n-- @end"), /unknown condition/);
  assert.throws(() => checkConditionals("-- @if ttl\n"), /without @end/);
  assert.throws(() => checkConditionals("-- @end"), /without @if/);
  assert.throws(() => checkConditionals("-- @if ttl\n-- @else\n-- @else\n-- @end"), /@else/);
  assert.throws(() => checkConditionals("-- @fi ttl"), /unknown directive/);
});

Deno.test("loadMigrations keeps ClickHouse down files optional and checks @if blocks", async () => {
  const files = await loadMigrations(`${FIXTURES}ch_failing`, "clickhouse");
  assert.deepEqual(files.map((f) => [f.version, f.downFile]), [[1, null], [2, null]]);
  await using copy = await fixtureCopy("ch_failing");
  await Deno.writeTextFile(
    `${copy.dir}/clickhouse/0003_bad_if.sql`,
    "-- @if datetime65\n-- @end\n",
  );
  await assert.rejects(
    loadMigrations(copy.dir, "clickhouse"),
    (error: unknown) => error instanceof MigrationFileError && error.file === "0003_bad_if.sql",
  );
});

// ---------------------------------------------------------------------------
// Migrator (ClickHouse)
// ---------------------------------------------------------------------------

Deno.test("ClickHouse migrations apply with the variant the server supports, then re-run as a no-op", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  const migrator = new Migrator(pg.sql, {
    dir: `${FIXTURES}ch_basic`,
    clickhouse: { client: ch.client, database: ch.database },
  });
  const run = await migrator.up(undefined, { only: "clickhouse" });
  assert.deepEqual(run.clickhouse?.applied.map((m) => m.version), [1, 2]);
  assert.equal(run.postgres, undefined);
  assert.deepEqual(await tables(ch.client, ch.database), [
    "bars",
    "schema_migrations",
    "ticks",
    "ticks_meta",
  ]);

  const caps = await detectCapabilities(ch.client);
  const types = await columnTypes(ch.client, ch.database, "ticks");
  assert.equal(types.ts, caps.datetime64 ? "DateTime64(3)" : "DateTime");
  assert.equal(types.venue, caps.lowCardinality ? "LowCardinality(String)" : "String");
  const [meta] = await select<{ k: string; v: string }>(
    ch.client,
    `SELECT k, v FROM ${quoteIdentifier(ch.database)}.ticks_meta`,
  );
  assert.deepEqual(meta, { k: "semi;colon", v: "it's; ok" });
  const [def] = await select<{ d: string }>(
    ch.client,
    `SELECT default_expression AS d FROM system.columns WHERE database = ${
      quoteString(ch.database)
    } AND table = 'ticks' AND name = 'note'`,
  );
  assert.equal(def?.d, "'a;b -- not a comment'");

  const again = await migrator.up(undefined, { only: "clickhouse" });
  assert.deepEqual(again.clickhouse?.applied, []);
  assert.equal(again.clickhouse?.total, 2);
  const status = await migrator.status({ only: "clickhouse" });
  assert.deepEqual(status.clickhouse?.applied.map((m) => [m.version, m.file, m.checksumMismatch]), [
    [1, "0001_ticks.sql", false],
    [2, "0002_bars.sql", false],
  ]);
  assert.deepEqual(status.clickhouse?.pending, []);
});

Deno.test("ClickHouse migrations refuse a changed checksum and apply nothing", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  await using copy = await fixtureCopy("ch_basic");
  const migrator = new Migrator(pg.sql, {
    dir: copy.dir,
    clickhouse: { client: ch.client, database: ch.database },
  });
  await migrator.up(1);
  await Deno.writeTextFile(`${copy.dir}/clickhouse/0001_ticks.sql`, "-- edited\n", {
    append: true,
  });
  await assert.rejects(
    migrator.up(),
    (error: unknown) => error instanceof MigrationChecksumError && error.file === "0001_ticks.sql",
  );
  assert.ok(!(await tables(ch.client, ch.database)).includes("bars"));
  const status = await migrator.status({ only: "clickhouse" });
  assert.deepEqual(status.clickhouse?.applied.map((m) => m.checksumMismatch), [true]);
  assert.deepEqual(status.clickhouse?.pending.map((m) => m.version), [2]);
});

Deno.test("ClickHouse down -1, down to 0 and up again restore the tables", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  await using copy = await fixtureCopy("ch_basic");
  const migrator = new Migrator(pg.sql, {
    dir: copy.dir,
    clickhouse: { client: ch.client, database: ch.database },
  });
  await migrator.up();
  const columnsBefore = await columnTypes(ch.client, ch.database, "ticks");
  const one = await migrator.down(-1, { only: "clickhouse" });
  assert.deepEqual(one.clickhouse?.reverted.map((m) => m.version), [2]);
  assert.ok(!(await tables(ch.client, ch.database)).includes("bars"));
  assert.deepEqual(
    (await migrator.status({ only: "clickhouse" })).clickhouse?.pending.map((m) => m.version),
    [2],
  );
  await migrator.down(0, { only: "clickhouse" });
  assert.deepEqual(await tables(ch.client, ch.database), ["schema_migrations"]);
  const reapplied = await migrator.up(undefined, { only: "clickhouse" });
  assert.deepEqual(reapplied.clickhouse?.applied.map((m) => m.version), [1, 2]);
  assert.deepEqual(await columnTypes(ch.client, ch.database, "ticks"), columnsBefore);

  await Deno.remove(`${copy.dir}/clickhouse/0002_bars.down.sql`);
  await assert.rejects(
    migrator.down(-1, { only: "clickhouse" }),
    (error: unknown) => error instanceof MigrationFileError && /no down file/.test(error.message),
  );
  assert.ok((await tables(ch.client, ch.database)).includes("bars"));
});

Deno.test("a failing ClickHouse file is a MigrationApplyError, not unavailability", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  const migrator = new Migrator(pg.sql, {
    dir: `${FIXTURES}ch_failing`,
    clickhouse: { client: ch.client, database: ch.database },
  });
  await assert.rejects(
    migrator.up(undefined, { only: "clickhouse" }),
    (error: unknown) =>
      error instanceof MigrationApplyError && error.file === "0002_broken.sql" &&
      /statement 2 of 2/.test(error.message) && !isClickHouseUnavailable(error),
  );
  const status = await migrator.status({ only: "clickhouse" });
  assert.deepEqual(status.clickhouse?.applied.map((m) => m.version), [1]);
  assert.deepEqual(status.clickhouse?.pending.map((m) => m.version), [2]);
});

Deno.test("ClickHouse migrations against an unreachable server throw ClickHouseUnavailableError", async () => {
  await using pg = await testPostgres();
  const down = createClickHouse({ url: UNREACHABLE, request_timeout_ms: 2000 });
  try {
    const migrator = new Migrator(pg.sql, {
      dir: `${FIXTURES}ch_basic`,
      clickhouse: { client: down, database: "tw_nowhere" },
    });
    await assert.rejects(
      migrator.up(undefined, { only: "clickhouse" }),
      ClickHouseUnavailableError,
    );
    await assert.rejects(migrator.status({ only: "clickhouse" }), ClickHouseUnavailableError);
    const none = new Migrator(pg.sql, { dir: `${FIXTURES}ch_basic` });
    await assert.rejects(none.up(undefined, { only: "clickhouse" }), ClickHouseUnavailableError);
  } finally {
    await down.close();
  }
});

Deno.test("a client bound to the missing target database is refused with a hint", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  const bound = createClickHouse({ url: CH_URL, database: ch.database });
  try {
    const migrator = new Migrator(pg.sql, {
      dir: `${FIXTURES}ch_basic`,
      clickhouse: { client: bound, database: ch.database },
    });
    await assert.rejects(
      migrator.up(undefined, { only: "clickhouse" }),
      (error: unknown) =>
        error instanceof MigrationError && /bound to "default"/.test(error.message),
    );
    // Once the database exists, a client bound to it works too.
    await ensureClickHouseDatabase(ch.client, ch.database);
    const run = await migrator.up(undefined, { only: "clickhouse" });
    assert.deepEqual(run.clickhouse?.applied.map((m) => m.version), [1, 2]);
  } finally {
    await bound.close();
  }
});

Deno.test("two migrators racing on ClickHouse apply each file exactly once", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  const other = createPostgres({ url: pg.url, pool_size: 1, sslmode: "disable" });
  try {
    const target = { client: ch.client, database: ch.database };
    const [a, b] = await Promise.all([
      new Migrator(pg.sql, { dir: `${FIXTURES}ch_basic`, clickhouse: target }).up(undefined, {
        only: "clickhouse",
      }),
      new Migrator(other, { dir: `${FIXTURES}ch_basic`, clickhouse: target }).up(undefined, {
        only: "clickhouse",
      }),
    ]);
    const versions = [...(a.clickhouse?.applied ?? []), ...(b.clickhouse?.applied ?? [])]
      .map((m) => m.version).sort();
    assert.deepEqual(versions, [1, 2]);
    const [row] = await select<{ n: string | number }>(
      ch.client,
      `SELECT count() AS n FROM ${quoteIdentifier(ch.database)}.ticks_meta`,
    );
    assert.equal(Number(row?.n), 1);
  } finally {
    await other.end();
  }
});

// ---------------------------------------------------------------------------
// Actor with a reachable ClickHouse
// ---------------------------------------------------------------------------

Deno.test("migrations actor applies both databases, resolves clickhouseReady and exits normally", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  const spec = migrationsActor({
    sql: pg.sql,
    clickhouse: ch.client,
    options: { dir: `${FIXTURES}ch_basic`, database: ch.database },
  });
  const running = spec.start(new AbortController().signal);
  await running.ready;
  await spec.state.clickhouseReady;
  await running.done;
  assert.deepEqual(spec.state.snapshot(), {
    postgres: "applied",
    clickhouse: "applied",
    postgres_applied: 0,
    clickhouse_applied: 2,
    last_error: null,
  });
});

Deno.test("migrations actor exits abnormally when a reachable ClickHouse rejects a file", async () => {
  await using pg = await testPostgres();
  await using ch = testClickHouse();
  const spec = migrationsActor({
    sql: pg.sql,
    clickhouse: ch.client,
    options: { dir: `${FIXTURES}ch_failing`, database: ch.database },
  });
  const running = spec.start(new AbortController().signal);
  await assert.rejects(running.ready, MigrationApplyError);
  await assert.rejects(running.done, MigrationApplyError);
  assert.equal(spec.state.postgres, "applied");
  assert.equal(spec.state.clickhouse, "failed");
});
