/**
 * The market-data HTTP API against a real ClickHouse (`TW_TEST_CLICKHOUSE_URL`,
 * default `http://127.0.0.1:8123`): the repository's ClickHouse migrations are
 * applied to a fresh `tw_test_<random>` database (the migrator's lock lives in
 * PostgreSQL, `TW_TEST_POSTGRES_URL`), rows are inserted directly, and the
 * database is dropped afterwards.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import type { ClickHouseClient } from "@clickhouse/client";
import { createClickHouse, literal, quoteIdentifier } from "../adapters/clickhouse.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";
import {
  type CandleRow,
  dateTimeBound,
  decodeTickCursor,
  encodeTickCursor,
  marketDataRoutes,
  MAX_DATETIME_S,
  parseTimeParam,
  type TickRow,
} from "../api/market_data.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { DROPPED_DEGRADED_MS, MarketStatus } from "../market/status.ts";
import type { Exchange, TopEvent, TradeEvent } from "../market/events.ts";
import { MAX_TRADE_ID_LENGTH, tradeRow } from "../market/rows.ts";
import { RecordingClock } from "../lib/clock.ts";
import { createLogger, nullLogger } from "../lib/log.ts";
/** Set TW_TEST_DEBUG=1 to see the errors behind 500 answers. */
const DEBUG = Deno.env.get("TW_TEST_DEBUG") === "1";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const PG_ADMIN_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
const DEAD_URL = "http://127.0.0.1:1";
const BASE = "/api/v1/market-data";

/** Start of the data, in seconds: a multiple of 5 and 15 minutes. */
const T0 = 1_700_000_100;
const T0_US = T0 * 1_000_000;

const CONFIGURED = new Map<Exchange, string[]>([
  ["binance", ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]],
  ["coinbase", ["BTC-USD"]],
  ["kraken", ["BTC-USD"]],
]);

function randomName(): string {
  return `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
}

type Trade = Pick<
  TradeEvent,
  "exchange" | "symbol" | "trade_id" | "price" | "qty" | "side" | "ts_exchange" | "ts_local"
>;

/** Decimal text placed as is into VALUES (18.16 parses it exactly); checked first. */
function decimal(text: string): string {
  if (!/^\d+(\.\d+)?$/.test(text)) throw new TypeError(`Not a decimal: ${text}`);
  return text;
}

async function insertTrades(
  client: ClickHouseClient,
  database: string,
  trades: readonly Trade[],
): Promise<void> {
  const values = trades.map((t) =>
    `(${literal(t.exchange)}, ${literal(t.symbol)}, ${literal(t.symbol.replace("-", ""))}, ` +
    `${literal(t.side)}, ${literal(t.ts_exchange)}, ${literal(t.ts_local)}, ` +
    `${literal(t.trade_id)}, ${decimal(t.price)}, ${decimal(t.qty)})`
  );
  await client.command({
    query: `INSERT INTO ${quoteIdentifier(database)}.market_trades ` +
      "(exchange, symbol, venue_symbol, side, ts_exchange, ts_local, trade_id, price, qty) " +
      `VALUES ${values.join(", ")}`,
  });
}

// -- The data set -----------------------------------------------------------

/** BTC-USDT on binance: trades 1..250, three per microsecond (9, 10, 11 share one). */
function btcUsdt(i: number): Trade {
  return {
    exchange: "binance",
    symbol: "BTC-USDT",
    trade_id: String(i),
    price: i === 250
      ? "98765432109876543210.123456789012345678"
      : `42000.${String(i).padStart(8, "0")}`,
    qty: "0.00100000",
    side: i % 2 ? "buy" : "sell",
    ts_exchange: T0_US + Math.floor(i / 3) * 1_000,
    ts_local: T0_US + Math.floor(i / 3) * 1_000 + 700,
  };
}
const BTC_USDT = Array.from({ length: 250 }, (_, n) => btcUsdt(n + 1));

/** BTC-USD on coinbase and kraken: the same ids and times on both. */
const BTC_USD: Trade[] = (["coinbase", "kraken"] as const).flatMap((exchange) =>
  Array.from({ length: 5 }, (_, n) => ({
    exchange,
    symbol: "BTC-USD",
    trade_id: String(n + 1),
    price: exchange === "kraken" ? `41000.${n}` : `41001.${n}`,
    qty: "1",
    side: "buy" as const,
    ts_exchange: T0_US + n * 1_000_000,
    ts_local: T0_US + n * 1_000_000 + 5,
  }))
);

/**
 * ETH-USDT on binance: minutes 0..9 from T0, three trades each
 * (at :05 `3000+m.5` 0.1, at :30 `3010+m` 0.2, at :50 `2990+m.25` 0.3).
 */
const ETH_USDT: Trade[] = Array.from({ length: 10 }, (_, m) =>
  [
    [5, `${3000 + m}.5`, "0.1"],
    [30, `${3010 + m}`, "0.2"],
    [50, `${2990 + m}.25`, "0.3"],
  ].map(([second, price, qty], k) => ({
    exchange: "binance" as const,
    symbol: "ETH-USDT",
    trade_id: String(m * 3 + k + 1),
    price: price as string,
    qty: qty as string,
    side: "buy" as const,
    ts_exchange: (T0 + m * 60 + (second as number)) * 1_000_000,
    ts_local: (T0 + m * 60 + (second as number)) * 1_000_000 + 1,
  }))).flat();

/** "Now" for the XRP-USDT trades, which lie in every window of a ticks query. */
const NOW_S = T0 + 400 * 86_400;
const XRP_AGES_S = [
  30,
  1_800,
  3_600,
  7_200,
  43_200,
  86_400,
  3 * 86_400,
  10 * 86_400,
  40 * 86_400,
  200 * 86_400,
];
const XRP_USDT: Trade[] = XRP_AGES_S.flatMap((age, w) =>
  [0, 1, 2].map((k) => ({
    exchange: "binance" as const,
    symbol: "XRP-USDT",
    trade_id: String(w * 3 + k + 1),
    price: `0.5${w}${k}`,
    qty: "100",
    side: "buy" as const,
    ts_exchange: (NOW_S - age) * 1_000_000 + k,
    ts_local: (NOW_S - age) * 1_000_000 + k + 1,
  }))
);

function appFor(
  clickhouse: ClickHouseClient,
  database: string,
  cache = new LatestCache(),
  status = new MarketStatus(),
  clock = new RecordingClock(NOW_S * 1000),
): Hono {
  const app = new Hono();
  app.onError(errorHandler(DEBUG ? createLogger({}) : nullLogger));
  app.notFound(notFound);
  app.route(
    BASE,
    marketDataRoutes({ clickhouse, database, cache, status, clock, symbols: () => CONFIGURED }),
  );
  return app;
}

// deno-lint-ignore no-explicit-any
async function getJson(app: Hono, path: string): Promise<{ status: number; body: any }> {
  const res = await app.request(`${BASE}${path}`);
  return { status: res.status, body: await res.json() };
}

async function allPages(app: Hono, path: string, limit: number): Promise<TickRow[][]> {
  const pages: TickRow[][] = [];
  let cursor: string | null = null;
  const sep = path.includes("?") ? "&" : "?";
  for (let guard = 0; guard < 1_000; guard++) {
    const url: string = `${path}${sep}limit=${limit}` +
      (cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`);
    const { status, body } = await getJson(app, url);
    assert.equal(status, 200, JSON.stringify(body));
    pages.push(body.ticks);
    cursor = body.next_cursor;
    if (cursor === null) return pages;
  }
  throw new Error("Pagination did not end");
}

function key(row: TickRow): string {
  return `${row.exchange}/${row.trade_id}`;
}

/** Sorted as the API promises: ts_exchange, exchange, numeric trade id, all descending. */
function newestFirst(trades: readonly Trade[]): Trade[] {
  return [...trades].sort((a, b) =>
    b.ts_exchange - a.ts_exchange ||
    (a.exchange < b.exchange ? 1 : a.exchange > b.exchange ? -1 : 0) ||
    Number(b.trade_id) - Number(a.trade_id)
  );
}

// -- Pure helpers -----------------------------------------------------------

Deno.test("from/to accept ISO-8601 and ms or µs epoch numbers, and refuse anything else", () => {
  const us = 1_704_067_200_500_000;
  assert.equal(parseTimeParam("2024-01-01T00:00:00.5Z", "from"), us);
  assert.equal(parseTimeParam("2024-01-01T01:00:00.500000+01:00", "from"), us);
  assert.equal(parseTimeParam("1704067200500", "from"), us);
  assert.equal(parseTimeParam("1704067200500000", "from"), us);
  assert.equal(parseTimeParam("2024-01-01", "from"), 1_704_067_200_000_000);
  assert.equal(parseTimeParam("2024-01-01T00:00Z", "from"), 1_704_067_200_000_000);
  // Beyond the microsecond, up to the next one (an inclusive from, an exclusive to).
  assert.equal(parseTimeParam("2024-01-01T00:00:00.123456789Z", "to"), 1_704_067_200_123_457);
  assert.equal(parseTimeParam("2024-01-01T00:00:00.123456000Z", "to"), 1_704_067_200_123_456);
  assert.equal(parseTimeParam("2024-01-01T00:00:00.9999991Z", "from"), 1_704_067_201_000_000);
  for (
    const bad of [
      "",
      "yesterday",
      "2024-02-30",
      "2024-13-01T00:00:00Z",
      "2024-01-01T24:00:00Z",
      "2024-01-01T00:00:00",
      "-5",
      "1.5",
      "1e12",
      "12345678901234567",
      "2024-01-01T00:00:00Z' OR 1=1",
    ]
  ) {
    assert.throws(
      () => parseTimeParam(bad, "from"),
      (e: Error & { status?: number }) => e.status === 400 && /^from must be/.test(e.message),
      bad,
    );
  }
});

Deno.test("DateTime bounds past 2106 or before 1970 are dropped or made false, never wrapped", () => {
  assert.equal(dateTimeBound("t", "<", MAX_DATETIME_S + 1), null);
  assert.equal(dateTimeBound("t", "<=", MAX_DATETIME_S), null);
  assert.equal(dateTimeBound("t", ">=", 0), null);
  assert.equal(dateTimeBound("t", ">=", MAX_DATETIME_S + 1), "0");
  assert.equal(dateTimeBound("t", "<", 0), "0");
  assert.equal(dateTimeBound("t", "<=", -1), "0");
  assert.equal(dateTimeBound("t", "<", MAX_DATETIME_S), `t < toDateTime(${MAX_DATETIME_S})`);
  assert.equal(dateTimeBound("t", ">=", 1_700_000_000), "t >= toDateTime(1700000000)");
});

Deno.test("tick cursors round-trip and forged ones are refused", () => {
  const cursor = { ts_exchange: T0_US, exchange: "kraken" as const, trade_id: "x'y" };
  const token = encodeTickCursor(cursor);
  assert.match(token, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(decodeTickCursor(token), cursor);
  const forge = (value: unknown) =>
    btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  for (
    const bad of [
      "%%%",
      "bm90IGpzb24",
      forge({ ts: 1 }),
      forge([1.5, "binance", "1"]),
      forge([1, "nyse", "1"]),
      forge([1, "binance", 7]),
      forge(["1 OR 1=1", "binance", "1"]),
      // JSON escapes a lone surrogate, so the token is plain ASCII; no query may be built of it.
      forge([1, "binance", "\ud800"]),
    ]
  ) {
    assert.throws(() => decodeTickCursor(bad), /cursor is not a next_cursor/, bad);
  }
});

Deno.test("tick cursors hold every trade id the writer stores, however long or unusual", () => {
  // Each UTF-16 unit the longest way: a control character (a 6-byte `\u` escape in the JSON),
  // a 3-byte character, a surrogate pair (4 bytes for two units).
  for (const unit of ["\u0001", "\u20ac", "\u{1f600}", "L"]) {
    const tradeId = unit.repeat(MAX_TRADE_ID_LENGTH / unit.length);
    assert.equal(tradeId.length, MAX_TRADE_ID_LENGTH);
    const cursor = {
      ts_exchange: -9_007_199_254_740_991,
      exchange: "coinbase" as const,
      trade_id: tradeId,
    };
    assert.deepEqual(decodeTickCursor(encodeTickCursor(cursor)), cursor, JSON.stringify(unit));
  }
  const tooLong = {
    ts_exchange: T0_US,
    exchange: "binance" as const,
    trade_id: "L".repeat(MAX_TRADE_ID_LENGTH + 1),
  };
  assert.throws(() => decodeTickCursor(encodeTickCursor(tooLong)), /cursor is not a next_cursor/);
  assert.throws(() => decodeTickCursor("A".repeat(4096)), /cursor is not a next_cursor/);
});

// -- Against ClickHouse -------------------------------------------------------

Deno.test("market data the stream dropped is a health problem for 10 minutes after the writer found it", () => {
  const status = new MarketStatus();
  assert.equal(status.droppedRecently(1_700_000_000_000), null, "nothing dropped");
  status.writer.dropped_messages = 30;
  status.writer.last_dropped_at = 1_700_000_000_000;
  assert.equal(
    status.droppedRecently(1_700_000_060_000),
    "the stream dropped 30 messages of market data before they were written " +
      "(stream limits; last 60 s ago)",
  );
  assert.notEqual(status.droppedRecently(1_700_000_000_000 + DROPPED_DEGRADED_MS - 1), null);
  assert.equal(status.droppedRecently(1_700_000_000_000 + DROPPED_DEGRADED_MS), null);
  assert.equal(DROPPED_DEGRADED_MS, 10 * 60_000);
  assert.equal(status.droppedRecently(1_700_000_001_000, 500), null, "a shorter window");
});

Deno.test("market-data API against ClickHouse", async (t) => {
  const client = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  const dead = createClickHouse({ url: DEAD_URL, request_timeout_ms: 2_000 });
  const sql = createPostgres({ url: PG_ADMIN_URL, pool_size: 2, sslmode: "disable" });
  const database = randomName();
  try {
    await new Migrator(sql, { dir: MIGRATIONS, clickhouse: { client, database } })
      .up(undefined, { only: "clickhouse" });
    // Two inserts each, so candles merge partial states; trade 100 twice
    // (a redelivered batch): FINAL must collapse it.
    await insertTrades(client, database, BTC_USDT.slice(0, 120));
    await insertTrades(client, database, BTC_USDT.slice(99));
    await insertTrades(client, database, BTC_USD);
    await insertTrades(client, database, ETH_USDT.slice(0, 14));
    await insertTrades(client, database, ETH_USDT.slice(14));
    await insertTrades(client, database, XRP_USDT);

    const cache = new LatestCache({ clock: new RecordingClock(T0 * 1000 + 1_000) });
    const status = new MarketStatus();
    const app = appFor(client, database, cache, status);
    const deadApp = appFor(dead, database, cache, status);

    await t.step("ticks come newest first with exact decimal strings", async () => {
      const { status, body } = await getJson(app, "/ticks/BTC-USDT");
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.symbol, "BTC-USDT");
      assert.deepEqual(body.exchanges, ["binance"]);
      assert.equal(body.ticks.length, 100, "default limit");
      const expected = newestFirst(BTC_USDT).slice(0, 100);
      assert.deepEqual(body.ticks.map((r: TickRow) => r.trade_id), expected.map((e) => e.trade_id));
      // 250 and 249 share the newest microsecond: by number, 250 first (and 11, 10, 9 later).
      const first: TickRow = body.ticks[0];
      assert.deepEqual(first, {
        exchange: "binance",
        symbol: "BTC-USDT",
        trade_id: "250",
        price: "98765432109876543210.123456789012345678",
        qty: "0.001",
        side: "sell",
        ts_exchange: T0_US + 83_000,
        ts_local: T0_US + 83_700,
        time: "2023-11-14T22:15:00.083000Z",
      });
      assert.equal(body.ticks[1].price, "42000.00000249");
      assert.equal(typeof body.next_cursor, "string");
    });

    await t.step("the cursor pages through every trade once, without gaps", async () => {
      const pages = await allPages(app, "/ticks/BTC-USDT", 37);
      assert.equal(pages.length, 7);
      assert.ok(pages.slice(0, -1).every((page) => page.length === 37));
      const rows = pages.flat();
      assert.equal(rows.length, 250, "trade 100 was inserted twice but is read once");
      assert.deepEqual(rows.map((r) => r.trade_id), newestFirst(BTC_USDT).map((e) => e.trade_id));
      // Exactly `limit` rows left: the last full page says there is no more.
      const exact = await allPages(app, "/ticks/BTC-USDT", 125);
      assert.deepEqual(exact.map((p) => p.length), [125, 125]);
    });

    await t.step("without exchange, ticks of every venue interleave with stable ties", async () => {
      const pages = await allPages(app, "/ticks/BTC-USD", 3);
      const rows = pages.flat();
      assert.equal(rows.length, 10);
      assert.equal(new Set(rows.map(key)).size, 10, "no duplicates across pages");
      assert.deepEqual(
        rows.map(key),
        newestFirst(BTC_USD).map((e) => `${e.exchange}/${e.trade_id}`),
      );
      assert.deepEqual(rows.slice(0, 2).map(key), ["kraken/5", "coinbase/5"]);
      const { body } = await getJson(app, "/ticks/BTC-USD?exchange=coinbase&limit=10");
      assert.deepEqual(body.exchanges, ["coinbase"]);
      assert.ok(body.ticks.every((r: TickRow) => r.exchange === "coinbase"));
      assert.equal(body.ticks.length, 5);
      assert.equal(body.next_cursor, null);
    });

    await t.step(
      "from (inclusive) and to (exclusive) filter on venue time in every form",
      async () => {
        // Trades 30..59: times T0 + 10 ms … T0 + 19 ms.
        const fromUs = T0_US + 10_000;
        const toUs = T0_US + 20_000;
        const forms = [
          `from=${fromUs}&to=${toUs}`,
          `from=${fromUs / 1000}&to=${toUs / 1000}`,
          `from=${encodeURIComponent(new Date(fromUs / 1000).toISOString())}&to=${
            encodeURIComponent(new Date(toUs / 1000).toISOString())
          }`,
        ];
        for (const range of forms) {
          const { status, body } = await getJson(app, `/ticks/BTC-USDT?${range}&limit=1000`);
          assert.equal(status, 200, JSON.stringify(body));
          const ids = body.ticks.map((r: TickRow) => Number(r.trade_id)).sort((
            a: number,
            b: number,
          ) => a - b);
          assert.deepEqual(ids, Array.from({ length: 30 }, (_, n) => n + 30), range);
          assert.equal(body.next_cursor, null);
        }
        // Pages inside a range stay inside it.
        const pages = await allPages(app, `/ticks/BTC-USDT?from=${fromUs}&to=${toUs}`, 7);
        assert.equal(pages.flat().length, 30);
        const empty = await getJson(app, `/ticks/BTC-USDT?from=${toUs}&to=${toUs}`);
        assert.deepEqual(empty.body.ticks, []);
      },
    );

    await t.step(
      "a from or to past ClickHouse's DateTime (2106) filters right, not wrapped",
      async () => {
        const far = ["2150-01-01", "5680281600000", "5680281600000000", "9999-12-31T23:59:59Z"];
        const ticks = await getJson(app, "/ticks/BTC-USDT?limit=1000");
        const candles = await getJson(app, "/candles/BTC-USDT");
        assert.equal(ticks.body.ticks.length, 250);
        assert.ok(candles.body.candles.length > 0);
        for (const to of far) {
          const farTicks = await getJson(app, `/ticks/BTC-USDT?limit=1000&to=${to}`);
          assert.equal(farTicks.status, 200, JSON.stringify(farTicks.body));
          assert.deepEqual(farTicks.body.ticks, ticks.body.ticks, `ticks to=${to}`);
          const farCandles = await getJson(app, `/candles/BTC-USDT?to=${to}`);
          assert.equal(farCandles.status, 200, JSON.stringify(farCandles.body));
          assert.deepEqual(farCandles.body.candles, candles.body.candles, `candles to=${to}`);
          const after = await getJson(app, `/ticks/BTC-USDT?from=${to}`);
          assert.deepEqual([after.status, after.body.ticks], [200, []], `ticks from=${to}`);
          const afterCandles = await getJson(app, `/candles/BTC-USDT?from=${to}&to=${to}`);
          assert.deepEqual([afterCandles.status, afterCandles.body.candles], [200, []]);
        }
        // Pages of a far `to` are whole too, and the cursor stays inside the range.
        const pages = await allPages(app, "/ticks/BTC-USDT?to=2150-01-01", 100);
        assert.deepEqual(pages.flat(), ticks.body.ticks);
      },
    );

    await t.step("pages are whole across the time windows a query reads", async () => {
      const expected = newestFirst(XRP_USDT).map((e) => e.trade_id);
      for (const limit of [1, 2, 4, 5, 1000]) {
        const rows = (await allPages(app, "/ticks/XRP-USDT", limit)).flat();
        assert.deepEqual(rows.map((r) => r.trade_id), expected, `limit ${limit}`);
      }
      // A "now" long after the data: every trade is in the last, open window.
      const later = appFor(client, database, cache, status, new RecordingClock(Date.now() * 10));
      const all = (await allPages(later, "/ticks/XRP-USDT", 5)).flat();
      assert.deepEqual(all.map((r) => r.trade_id), expected);
      // A "now" before the data (a skewed clock): the newest window is open above.
      const early = appFor(client, database, cache, status, new RecordingClock(T0 * 1000));
      const first = await getJson(early, "/ticks/XRP-USDT?limit=3");
      assert.deepEqual(first.body.ticks.map((r: TickRow) => r.trade_id), expected.slice(0, 3));
      // from and to cut across windows.
      const from = (NOW_S - 5 * 86_400) * 1_000_000;
      const to = (NOW_S - 1_800) * 1_000_000 + 1;
      const ranged = (await allPages(app, `/ticks/XRP-USDT?from=${from}&to=${to}`, 2)).flat();
      assert.deepEqual(
        ranged.map((r) => r.trade_id),
        newestFirst(XRP_USDT.filter((e) => e.ts_exchange >= from && e.ts_exchange < to))
          .map((e) => e.trade_id),
      );
      assert.equal(ranged.length, 16);
    });

    await t.step("limit is bounded: 1 and 1000 are accepted", async () => {
      const one = await getJson(app, "/ticks/BTC-USDT?limit=1");
      assert.equal(one.body.ticks.length, 1);
      const max = await getJson(app, "/ticks/BTC-USDT?limit=1000");
      assert.equal(max.body.ticks.length, 250);
      assert.equal(max.body.next_cursor, null);
    });

    await t.step("bad parameters are 400 with the reason, before any query", async () => {
      const cases: [string, RegExp][] = [
        ["/ticks/DOGE-USDT", /Unknown symbol "DOGE-USDT"/],
        ["/ticks/BTC-USDT'%20OR%201=1", /Unknown symbol "BTC-USDT' OR 1=1"/],
        ["/ticks/BTC-USDT?exchange=nyse", /Unknown exchange "nyse"; expected one of binance/],
        ["/ticks/BTC-USDT?exchange=binance'--", /Unknown exchange/],
        ["/ticks/BTC-USDT?exchange=alpaca", /Exchange alpaca is not enabled/],
        ["/ticks/BTC-USDT?exchange=coinbase", /Unknown symbol "BTC-USDT" on coinbase/],
        [`/ticks/BTC-USDT?from=${T0_US + 1}&to=${T0_US}`, /from \(\d+\) is after to/],
        ["/ticks/BTC-USDT?from=soon", /from must be an ISO-8601 time/],
        ["/ticks/BTC-USDT?to=1%20OR%201=1", /to must be an ISO-8601 time/],
        ["/ticks/BTC-USDT?limit=0", /limit must be from 1 to 1000; got 0/],
        ["/ticks/BTC-USDT?limit=5000", /limit must be from 1 to 1000; got 5000/],
        ["/ticks/BTC-USDT?limit=ten", /limit must be an integer/],
        ["/ticks/BTC-USDT?limit=-1", /limit must be an integer/],
        ["/ticks/BTC-USDT?cursor=abc'", /cursor is not a next_cursor/],
        ["/ticks/BTC-USDT?form=1", /Unknown parameter "form"/],
        ["/candles/ETH-USDT?interval=2m", /Unknown interval "2m"; expected one of 1m, 5m/],
        ["/candles/ETH-USDT?interval=toString", /Unknown interval/],
        ["/candles/ETH-USDT?limit=1001", /limit must be from 1 to 1000/],
        ["/candles/ETH-USDT?from=2024-01-02&to=2024-01-01", /is after to/],
        ["/candles/NOPE", /Unknown symbol "NOPE"/],
        ["/latest/NOPE", /Unknown symbol "NOPE"/],
        ["/latest/BTC-USDT?exchange=mtgox", /Unknown exchange "mtgox"/],
        ["/stream_status?x=1", /Unknown parameter "x"/],
        [
          "/ticks/BTC-USDT?exchange=binance&exchange=coinbase",
          /Parameter "exchange" is given 2 times; give it once/,
        ],
        ["/candles/ETH-USDT?interval=1m&interval=5m", /Parameter "interval" is given 2 times/],
        ["/latest/BTC-USDT?exchange=binance&exchange=kraken", /"exchange" is given 2 times/],
      ];
      for (const [path, reason] of cases) {
        // The app with a dead ClickHouse answers 400, not 503: nothing was queried.
        for (const target of [app, deadApp]) {
          const { status, body } = await getJson(target, path);
          assert.equal(status, 400, `${path}: ${JSON.stringify(body)}`);
          assert.equal(body.error.code, "bad_request", path);
          assert.match(body.error.message, reason, path);
        }
      }
    });

    await t.step("1m candles come from the trades through the view, oldest first", async () => {
      const { status, body } = await getJson(app, "/candles/ETH-USDT");
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.interval, "1m");
      assert.equal(body.candles.length, 10);
      body.candles.forEach((candle: CandleRow, m: number) => {
        assert.deepEqual(candle, {
          exchange: "binance",
          start: (T0 + m * 60) * 1_000_000,
          time: new Date((T0 + m * 60) * 1000).toISOString().replace("Z", "000Z"),
          open: `${3000 + m}.5`,
          high: `${3010 + m}`,
          low: `${2990 + m}.25`,
          close: `${2990 + m}.25`,
          volume: "0.6",
          trades: 3,
        });
      });
      const newest = await getJson(app, "/candles/ETH-USDT?interval=1m&limit=3");
      assert.deepEqual(
        newest.body.candles.map((c: CandleRow) => c.open),
        ["3007.5", "3008.5", "3009.5"],
      );
      const ranged = await getJson(
        app,
        `/candles/ETH-USDT?from=${(T0 + 60) * 1000}&to=${(T0 + 300) * 1000}`,
      );
      assert.deepEqual(ranged.body.candles.map((c: CandleRow) => c.open), [
        "3001.5",
        "3002.5",
        "3003.5",
        "3004.5",
      ]);
    });

    await t.step("longer intervals aggregate the 1-minute candles (checked by hand)", async () => {
      const five = await getJson(app, "/candles/ETH-USDT?interval=5m&exchange=binance");
      assert.equal(five.status, 200, JSON.stringify(five.body));
      assert.deepEqual(five.body.candles, [
        {
          exchange: "binance",
          start: T0_US,
          time: "2023-11-14T22:15:00.000000Z",
          open: "3000.5",
          high: "3014",
          low: "2990.25",
          close: "2994.25",
          volume: "3",
          trades: 15,
        },
        {
          exchange: "binance",
          start: T0_US + 300_000_000,
          time: "2023-11-14T22:20:00.000000Z",
          open: "3005.5",
          high: "3019",
          low: "2995.25",
          close: "2999.25",
          volume: "3",
          trades: 15,
        },
      ]);
      // A candle is in range when its start is: from T0 + 1 s leaves the second one.
      const late = await getJson(app, `/candles/ETH-USDT?interval=5m&from=${(T0 + 1) * 1000}`);
      assert.deepEqual(late.body.candles.map((c: CandleRow) => c.start), [T0_US + 300_000_000]);
      const whole = { open: "3000.5", high: "3019", low: "2990.25", close: "2999.25" };
      for (const interval of ["15m", "1h", "1d"]) {
        const { body } = await getJson(app, `/candles/ETH-USDT?interval=${interval}`);
        assert.equal(body.candles.length, 1, interval);
        const [candle] = body.candles;
        assert.deepEqual(
          { open: candle.open, high: candle.high, low: candle.low, close: candle.close },
          whole,
          interval,
        );
        assert.equal(candle.volume, "6");
        assert.equal(candle.trades, 30);
      }
      const day = await getJson(app, "/candles/ETH-USDT?interval=1d");
      assert.equal(day.body.candles[0].time, "2023-11-14T00:00:00.000000Z");
      const none = await getJson(app, "/candles/SOL-USDT?interval=1h");
      assert.deepEqual(none.body.candles, []);
    });

    await t.step("latest answers from the cache only: 404 before any event", async () => {
      for (const target of [app, deadApp]) {
        const { status, body } = await getJson(target, "/latest/BTC-USDT");
        assert.equal(status, 404);
        assert.equal(body.error.code, "not_found");
        assert.match(body.error.message, /No market data seen yet for BTC-USDT/);
      }
      const top: TopEvent = {
        kind: "top",
        exchange: "binance",
        symbol: "BTC-USDT",
        venue_symbol: "BTCUSDT",
        ts_exchange: T0_US,
        ts_local: T0_US + 10,
        bid_price: "42000.01",
        bid_qty: "3",
        ask_price: "42000.02",
        ask_qty: "4",
      };
      cache.update([top, { ...BTC_USDT[0]!, kind: "trade", venue_symbol: "BTCUSDT" }]);
      // The dead ClickHouse proves no query is made.
      const { status, body } = await getJson(deadApp, "/latest/BTC-USDT");
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.symbol, "BTC-USDT");
      assert.equal(body.freshest.exchange, "binance");
      assert.equal(body.freshest.quote.bid_price, "42000.01");
      assert.equal(body.freshest.quote.age_ms, 999.99);
      assert.equal(body.freshest.trade.trade_id, "1");
      assert.equal(body.exchanges.length, 1);
      const other = await getJson(deadApp, "/latest/BTC-USD?exchange=kraken");
      assert.equal(other.status, 404);
      assert.match(other.body.error.message, /on kraken/);
    });

    await t.step("symbols lists configured and seen symbols per exchange", async () => {
      cache.update([{
        ...BTC_USDT[0]!,
        kind: "trade",
        venue_symbol: "AAPL",
        exchange: "alpaca",
        symbol: "AAPL",
      }]);
      const { status, body } = await getJson(deadApp, "/symbols");
      assert.equal(status, 200);
      assert.deepEqual(body, {
        exchanges: {
          binance: {
            configured: ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"],
            seen: ["BTC-USDT"],
          },
          coinbase: { configured: ["BTC-USD"], seen: [] },
          kraken: { configured: ["BTC-USD"], seen: [] },
          alpaca: { configured: [], seen: ["AAPL"] },
        },
      });
      // A symbol only seen (not configured) is known too.
      const latest = await getJson(deadApp, "/latest/AAPL?exchange=alpaca");
      assert.equal(latest.status, 200);
    });

    await t.step("stream_status reports feeds, validator, writer and the cache", async () => {
      const feed = status.feed("binance");
      feed.state = "live";
      feed.lag_ms = 12;
      feed.frames = 10;
      status.validator.accepted = 9;
      status.reject("binance", "spike");
      status.writer.rows_written.market_trades = 270;
      const { status: code, body } = await getJson(deadApp, "/stream_status");
      assert.equal(code, 200);
      assert.equal(body.feeds.length, 1);
      assert.equal(body.feeds[0].exchange, "binance");
      assert.equal(body.feeds[0].state, "live");
      assert.equal(body.feeds[0].lag_ms, 12);
      assert.deepEqual(body.validator, {
        accepted: 9,
        rejected: { spike: 1 },
        rejected_by_exchange: { binance: 1 },
      });
      assert.equal(body.writer.rows_written.market_trades, 270);
      assert.equal(body.writer.clickhouse, "unknown");
      assert.equal(body.writer.dropped_messages, 0);
      assert.equal(body.writer.last_dropped_at, null);
      status.writer.dropped_messages = 42;
      status.writer.last_dropped_at = 1_700_000_000_000;
      const after = (await getJson(deadApp, "/stream_status")).body;
      assert.equal(after.writer.dropped_messages, 42, "market data lost for good is reported");
      assert.equal(after.writer.last_dropped_at, 1_700_000_000_000);
      assert.equal(body.latest_cache.entries, 2);
      assert.deepEqual(Object.keys(body).sort(), ["feeds", "latest_cache", "validator", "writer"]);
    });

    await t.step("ClickHouse down or not migrated is a 503", async () => {
      for (const path of ["/ticks/BTC-USDT", "/candles/ETH-USDT?interval=5m"]) {
        const { status, body } = await getJson(deadApp, path);
        assert.equal(status, 503, path);
        assert.deepEqual(body, {
          error: { code: "unavailable", message: "ClickHouse is unreachable" },
        });
      }
      const bare = appFor(client, randomName());
      const { status, body } = await getJson(bare, "/ticks/BTC-USDT");
      assert.equal(status, 503);
      assert.match(body.error.message, /migrations not applied/);
    });
  } finally {
    try {
      await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
    } finally {
      await client.close();
      await dead.close();
      await sql.end({ timeout: 5 });
    }
  }
});

Deno.test("ticks: a page ending on a trade with a long (but storable) trade id has a usable next_cursor", async () => {
  const client = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  const sql = createPostgres({ url: PG_ADMIN_URL, pool_size: 2, sslmode: "disable" });
  const database = randomName();
  try {
    await new Migrator(sql, { dir: MIGRATIONS, clickhouse: { client, database } })
      .up(undefined, { only: "clickhouse" });
    const longId = "L".repeat(200);
    assert.ok(longId.length <= MAX_TRADE_ID_LENGTH, "the row layer stores such an id");
    // The row layer accepts the trade as the batch writer would write it.
    assert.doesNotThrow(() =>
      tradeRow({
        kind: "trade",
        exchange: "binance",
        symbol: "BTC-USDT",
        venue_symbol: "BTCUSDT",
        ts_exchange: (T0 + 2) * 1_000_000,
        ts_local: (T0 + 2) * 1_000_000,
        trade_id: longId,
        price: "1",
        qty: "1",
        side: "buy",
      } as never)
    );
    const trades = [
      { id: "older", ts: T0 },
      { id: longId, ts: T0 + 2 },
      { id: "newest", ts: T0 + 4 },
    ];
    await client.command({
      query: `INSERT INTO ${quoteIdentifier(database)}.market_trades ` +
        "(exchange, symbol, venue_symbol, side, ts_exchange, ts_local, trade_id, price, qty) VALUES " +
        trades.map((t) =>
          `('binance', 'BTC-USDT', 'BTCUSDT', 'buy', ${t.ts * 1_000_000}, ${t.ts * 1_000_000}, ` +
          `${literal(t.id)}, 1.5, 2)`
        ).join(", "),
    });
    const app = new Hono();
    app.onError(errorHandler(nullLogger));
    app.notFound(notFound);
    app.route(
      "/md",
      marketDataRoutes({
        clickhouse: client,
        database,
        cache: new LatestCache(),
        status: new MarketStatus(),
        clock: new RecordingClock((T0 + 60) * 1000),
        symbols: () => new Map<Exchange, string[]>([["binance", ["BTC-USDT"]]]),
      }),
    );
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 10; page++) {
      const res: Response = await app.request(
        `/md/ticks/BTC-USDT?limit=1${cursor === null ? "" : `&cursor=${cursor}`}`,
      );
      const body = await res.json();
      assert.equal(res.status, 200, `page ${page + 1}: ${JSON.stringify(body)}`);
      seen.push(...body.ticks.map((t: { trade_id: string }) => t.trade_id));
      cursor = body.next_cursor;
      if (cursor === null) break;
    }
    assert.deepEqual(seen, ["newest", longId, "older"]);
  } finally {
    await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
    await client.close();
    await sql.end();
  }
});
