/**
 * ClickHouse migrations checked out with CRLF line endings (git
 * `core.autocrlf=true`, an editor on Windows), review 31. The `-- @if`,
 * `-- @else` and `-- @end` lines end in "\r"; they must still be read as
 * directives (else both branches are kept and the server gets duplicate
 * columns, and a TTL clause 18.16 does not know), with the same line numbers
 * in errors, while checksums stay those of the file's bytes.
 */

import assert from "node:assert/strict";
import type { ClickHouseClient } from "@clickhouse/client";
import {
  type ClickHouseCapabilities,
  createClickHouse,
  quoteIdentifier,
  quoteString,
} from "../adapters/clickhouse.ts";
import {
  checkConditionals,
  loadMigrations,
  Migrator,
  renderConditionals,
  sha256Hex,
} from "../adapters/migrator.ts";
import { migratedDatabase } from "./_postgres.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const REPO_CH = new URL("../migrations/clickhouse/", import.meta.url).pathname;

const OLD: ClickHouseCapabilities = {
  version: "18.16.1",
  major: 18,
  minor: 16,
  datetime64: false,
  ttl: false,
  queryParams: false,
  lowCardinality: false,
};

Deno.test("@if/@else/@end lines with CRLF endings still select one branch", () => {
  const lf = "CREATE TABLE t (\n-- @if lowcardinality\n  a LowCardinality(String)\n" +
    "-- @else\n  a String\n-- @end\n) ENGINE = Log\n-- @if ttl\nTTL d + 1\n-- @end\n;\n";
  const crlf = lf.replaceAll("\n", "\r\n");
  const rendered = renderConditionals(crlf, OLD);
  assert.ok(!rendered.includes("LowCardinality"), `kept the @if branch:\n${rendered}`);
  assert.ok(!rendered.includes("TTL"), `kept the TTL block:\n${rendered}`);
  assert.equal(rendered.replaceAll("\r", ""), renderConditionals(lf, OLD));
  assert.equal(rendered.split("\n").length, crlf.split("\n").length, "line count kept");
  // An unbalanced block is caught with CRLF too, at the same line as with LF.
  assert.throws(() => checkConditionals("-- @if ttl\r\nTTL d\r\n"), SyntaxError);
  assert.throws(() => checkConditionals("SELECT 1\r\n-- @else\r\n"), /^SyntaxError: line 2: /);
  assert.throws(() => checkConditionals("\r\n-- @if nope\r\n-- @end\r\n"), /line 2: .*"nope"/);
});

Deno.test("a CRLF migration's checksum is that of its bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tw_crlf_" });
  try {
    await Deno.mkdir(`${dir}/clickhouse`);
    const text = "-- @if ttl\r\nCREATE TABLE a (d Date) ENGINE = Log\r\n-- @end\r\n";
    await Deno.writeTextFile(`${dir}/clickhouse/0001_a.sql`, text);
    const [file] = await loadMigrations(dir, "clickhouse");
    assert.equal(file?.checksum, await sha256Hex(new TextEncoder().encode(text)));
    assert.equal(file?.up, text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the repository's ClickHouse migration with CRLF endings applies", async () => {
  await using pg = await migratedDatabase(3);
  const client: ClickHouseClient = createClickHouse({ url: CH_URL, request_timeout_ms: 10_000 }, {
    database: "default",
  });
  const database = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const dir = await Deno.makeTempDir({ prefix: "tw_crlf_" });
  try {
    await Deno.mkdir(`${dir}/clickhouse`);
    for (const name of ["0001_market_data.sql", "0001_market_data.down.sql"]) {
      const text = await Deno.readTextFile(`${REPO_CH}${name}`);
      await Deno.writeTextFile(`${dir}/clickhouse/${name}`, text.replaceAll("\n", "\r\n"));
    }
    const migrator = new Migrator(pg.sql, { dir, clickhouse: { client, database } });
    const run = await migrator.up(undefined, { only: "clickhouse" });
    assert.deepEqual(run.clickhouse?.applied.map((m) => m.version), [1]);
    const result = await client.query({
      query: `SELECT name FROM system.tables WHERE database = ${quoteString(database)} ` +
        "ORDER BY name",
      format: "JSONEachRow",
    });
    const names = (await result.json<{ name: string }>()).map((r) => r.name);
    for (const table of ["market_trades", "orderbook_snapshots", "quotes", "bars", "candles"]) {
      assert.ok(names.includes(table), `${table} missing: ${names}`);
    }
    // Its down file, CRLF as well, drops them again.
    const down = await migrator.down(0, { only: "clickhouse" });
    assert.deepEqual(down.clickhouse?.reverted.map((m) => m.version), [1]);
  } finally {
    await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
    await client.close();
    await Deno.remove(dir, { recursive: true });
  }
});
