/**
 * A market-data client that goes away while its ClickHouse query runs (a
 * dashboard reloaded, curl interrupted, a proxy's timeout), through the real
 * HTTP server: the request is logged at debug level, not as an engine error,
 * and its query is killed on ClickHouse (ClickHouse does not stop an HTTP
 * SELECT when its connection closes: 18.16 cannot, later releases only with
 * `cancel_http_readonly_queries_on_client_close`, off by default).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { ClickHouseClient } from "@clickhouse/client";
import { createClickHouse, literal, quoteIdentifier } from "../adapters/clickhouse.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";
import { createApp } from "../api/app.ts";
import { API_QUERY_ID_PREFIX, marketDataRoutes } from "../api/market_data.ts";
import { httpServer } from "../api/server.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import type { Exchange } from "../market/events.ts";
import { RecordingClock } from "../lib/clock.ts";
import { memoryLogger } from "../lib/log.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";
import { healthyServices, waitFor } from "./_helpers.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const PG_ADMIN_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
const BASE = "/api/v1/market-data";
/** Code of a query stopped by KILL QUERY (QUERY_WAS_CANCELLED), on 18.16 as on current servers. */
const QUERY_WAS_CANCELLED = 394;
/** First minute of the data (2023-01-01T00:00Z). */
const START_S = 1_672_531_200;
/** One year of minutes. */
const MINUTES = 365 * 1440;

/** The engine's app with the market-data routes over `clickhouse`, served on a free port. */
async function serve(clickhouse: ClickHouseClient, database: string, nowMs: number) {
  const { log, lines } = memoryLogger("debug");
  const app = createApp({
    name: "tw",
    health: healthyServices(),
    log,
    routes: {
      [BASE]: marketDataRoutes({
        clickhouse,
        database,
        cache: new LatestCache(),
        status: new MarketStatus(),
        clock: new RecordingClock(nowMs),
        symbols: () => new Map<Exchange, string[]>([["binance", ["BTC-USDT"]]]),
      }),
    },
  });
  let port = 0;
  const stop = new AbortController();
  const running = httpServer(app, { host: "127.0.0.1", port: 0 }, {
    log,
    onListen: (address) => port = address.port,
  }).start(stop.signal);
  await running.ready;
  return {
    lines,
    url: (path: string) => `http://127.0.0.1:${port}${BASE}${path}`,
    async [Symbol.asyncDispose]() {
      stop.abort();
      await running.done;
    },
  };
}

/** `client`, with every query logged in `system.query_log` (the API's SQL and query ids kept). */
function logged(client: ClickHouseClient): ClickHouseClient {
  return new Proxy(client, {
    get(target, prop, receiver) {
      if (prop !== "query") return Reflect.get(target, prop, receiver);
      return (params: Parameters<ClickHouseClient["query"]>[0]) =>
        target.query({
          ...params,
          clickhouse_settings: { ...params.clickhouse_settings, log_queries: 1 },
        } as never);
    },
  });
}

async function rows<T>(client: ClickHouseClient, query: string): Promise<T[]> {
  const result = await client.query({ query, format: "JSONEachRow" });
  return await result.json<T>();
}

Deno.test("a market-data request whose client goes away is logged at debug level, not as an engine error", async () => {
  const upstream = new URL(CH_URL);
  await using proxy = startTcpProxy({ hostname: upstream.hostname, port: Number(upstream.port) });
  const client = createClickHouse({ url: proxy.url, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  try {
    await using server = await serve(client, "tw_test_client_gone_unused", Date.now());
    proxy.stall(); // ClickHouse is slow to answer; the client gives up first.
    const abort = new AbortController();
    const answer = fetch(server.url("/ticks/BTC-USDT"), { signal: abort.signal });
    await waitFor(() => proxy.accepted > 0, 5_000, "the ticks query sent to ClickHouse");
    abort.abort();
    await assert.rejects(answer);
    const path = `${BASE}/ticks/BTC-USDT`;
    await waitFor(
      () => server.lines.some((line) => line.path === path),
      10_000,
      "the abandoned request logged",
    );
    const errors = server.lines.filter((line) => line.level === "error");
    assert.deepEqual(errors, [], "a client's own abort is not an engine error");
    const gone = server.lines.filter((line) => line.path === path);
    assert.deepEqual(gone.map((line) => [line.level, line.message]), [
      ["debug", "request abandoned by the client"],
    ]);
    assert.ok(gone.every((line) => !JSON.stringify(line).includes("    at ")), "without a stack");
  } finally {
    proxy.restore();
    await client.close();
  }
});

Deno.test("the ClickHouse query of a market-data client that goes away is killed, not left running", async () => {
  const client = createClickHouse({ url: CH_URL, request_timeout_ms: 120_000 }, {
    database: "default",
  });
  const sql = createPostgres({ url: PG_ADMIN_URL, pool_size: 2, sslmode: "disable" });
  const database = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const ours = `position(query, ${literal(database)}) > 0 AND position(query, 'argMinMerge') > 0`;
  const running = () =>
    rows<{ query_id: string }>(
      client,
      `SELECT query_id FROM system.processes WHERE ${ours}
        AND position(query, 'system.processes') = 0`,
    );
  try {
    await new Migrator(sql, { dir: MIGRATIONS, clickhouse: { client, database } })
      .up(undefined, { only: "clickhouse" });
    // A year of one trade a minute: the daily candles of the year merge every minute (seconds).
    await client.command({
      query: `INSERT INTO ${quoteIdentifier(database)}.market_trades
        (exchange, symbol, venue_symbol, side, ts_exchange, ts_local, trade_id, price, qty)
        SELECT 'binance', 'BTC-USDT', 'BTCUSDT', 'buy',
          toInt64(${START_S} + number * 60) * 1000000, toInt64(${START_S} + number * 60) * 1000000,
          toString(number + 1), toDecimal128(42000, 18), toDecimal128(1, 18)
        FROM system.numbers LIMIT ${MINUTES}`,
    });
    await using server = await serve(logged(client), database, (START_S + MINUTES * 60) * 1000);
    const abort = new AbortController();
    const answer = fetch(server.url("/candles/BTC-USDT?interval=1d&limit=365"), {
      signal: abort.signal,
    });
    let queryId = "";
    await waitFor(
      async () => {
        queryId = (await running())[0]?.query_id ?? "";
        return queryId !== "";
      },
      10_000,
      "the candles query running",
    );
    abort.abort();
    await assert.rejects(answer);
    await waitFor(async () => (await running()).length === 0, 60_000, "the candles query over");
    // Its end as logged (flushed until it is there; 18.16's query_log has no exception_code,
    // the code is read from the message).
    let ended: Array<{ type: number | string; exception: string }> = [];
    await waitFor(
      async () => {
        await client.command({ query: "SYSTEM FLUSH LOGS" });
        ended = await rows(
          client,
          `SELECT type, exception FROM system.query_log
          WHERE query_id = ${literal(queryId)} AND type != 1`,
        );
        return ended.length > 0;
      },
      20_000,
      "the end of the candles query in the query log",
    );
    // 3 or 4: killed before or while it processed, with the code of a cancelled query.
    assert.deepEqual(
      ended.map((row) => [
        Number(row.type) === 3 || Number(row.type) === 4,
        /\bCode: (\d+)/.exec(row.exception)?.[1] ?? null,
      ]),
      [[true, String(QUERY_WAS_CANCELLED)]],
      `the query of the client that went away (${queryId}) was killed, not run to its end: ` +
        JSON.stringify(ended),
    );
    assert.ok(queryId.startsWith(API_QUERY_ID_PREFIX), `an API query id: ${queryId}`);
    await waitFor(
      () => server.lines.some((line) => line.message === "request abandoned by the client"),
      10_000,
      "the abandoned request logged",
    );
    assert.deepEqual(server.lines.filter((line) => line.level === "error"), []);
  } finally {
    try {
      await waitFor(async () => (await running()).length === 0, 60_000).catch(() => {});
      await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
    } finally {
      await client.close();
      await sql.end({ timeout: 5 });
    }
  }
});
