/**
 * The market-data API over a long history (a year of one BTC-USDT trade a
 * minute, so one 1-minute candle a minute) reads what its answer needs, not
 * the symbol's whole history: the newest candles, and the first ticks page
 * with a `to` far past every trade (README: such a `to` bounds nothing), read
 * newest-first windows that widen only while they come back short. Measured
 * as the rows ClickHouse read (`system.query_log`; the test's client adds
 * `log_queries` to the API's own queries, which carry their own query ids),
 * not as time.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import type { ClickHouseClient } from "@clickhouse/client";
import { createClickHouse, literal, quoteIdentifier } from "../adapters/clickhouse.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";
import {
  candleWindows,
  marketDataRoutes,
  readNewestFirst,
  type ScanWindow,
  tickWindows,
} from "../api/market_data.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import type { Exchange } from "../market/events.ts";
import { RecordingClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import { waitFor } from "./_helpers.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const PG_ADMIN_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
/** One year of minutes. */
const MINUTES = 365 * 1440;
/** First minute of the data (2023-01-01T00:00Z). */
const START_S = 1_672_531_200;
/** The newest minute of the data. */
const NEWEST_S = START_S + (MINUTES - 1) * 60;
/** A year of minutes is 525,600 rows; an answer of 500 candles or ticks needs a few granules. */
const MAX_ROWS_READ = 50_000;

/** The client, with every query of the API logged in `system.query_log`, its id kept in `ids`. */
function logged(client: ClickHouseClient, ids: string[]): ClickHouseClient {
  return new Proxy(client, {
    get(target, prop, receiver) {
      if (prop !== "query") return Reflect.get(target, prop, receiver);
      return (params: Parameters<ClickHouseClient["query"]>[0]) => {
        const id = params.query_id ?? `tw-test-${crypto.randomUUID()}`;
        ids.push(id);
        return target.query({
          ...params,
          query_id: id,
          clickhouse_settings: { ...params.clickhouse_settings, log_queries: 1 },
        } as never);
      };
    },
  });
}

/**
 * Rows read by the finished queries `ids`. The server logs a query's end just
 * after its answer is sent, so the log is flushed until every one is there.
 */
async function rowsRead(client: ClickHouseClient, ids: readonly string[]): Promise<number> {
  let logged = { n: 0, rows: 0 };
  await waitFor(
    async () => {
      await client.command({ query: "SYSTEM FLUSH LOGS" });
      const result = await client.query({
        query: `SELECT toString(count()) AS n, toString(sum(read_rows)) AS rows
        FROM system.query_log
        WHERE type = 2 AND query_id IN (${ids.map((id) => literal(id)).join(", ")})`,
        format: "JSONEachRow",
      });
      const [row] = await result.json<{ n: string; rows: string }>();
      logged = { n: Number(row?.n), rows: Number(row?.rows) };
      return logged.n === ids.length;
    },
    20_000,
    `all ${ids.length} queries of the request in the query log`,
  );
  return logged.rows;
}

Deno.test("market data over a year of history reads what the answer needs", async (t) => {
  const client = createClickHouse({ url: CH_URL, request_timeout_ms: 120_000 }, {
    database: "default",
  });
  const sql = createPostgres({ url: PG_ADMIN_URL, pool_size: 2, sslmode: "disable" });
  const database = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  try {
    await new Migrator(sql, { dir: MIGRATIONS, clickhouse: { client, database } })
      .up(undefined, { only: "clickhouse" });
    await client.command({
      query: `INSERT INTO ${quoteIdentifier(database)}.market_trades
        (exchange, symbol, venue_symbol, side, ts_exchange, ts_local, trade_id, price, qty)
        SELECT 'binance', 'BTC-USDT', 'BTCUSDT', 'buy',
          toInt64(${START_S} + number * 60) * 1000000 + 5,
          toInt64(${START_S} + number * 60) * 1000000 + 9,
          toString(number + 1), toDecimal128(42000 + number % 1000, 18), toDecimal128(1, 18)
        FROM system.numbers LIMIT ${MINUTES}`,
    });
    /** GET `path` with "now" at `nowS`: its body and the rows its queries read. */
    const measure = async (path: string, nowS = NEWEST_S + 30) => {
      const ids: string[] = [];
      const app = new Hono();
      app.onError(errorHandler(nullLogger));
      app.notFound(notFound);
      app.route(
        "/md",
        marketDataRoutes({
          clickhouse: logged(client, ids),
          database,
          cache: new LatestCache(),
          status: new MarketStatus(),
          clock: new RecordingClock(nowS * 1000),
          symbols: () => new Map<Exchange, string[]>([["binance", ["BTC-USDT"]]]),
        }),
      );
      const res = await app.request(`/md${path}`);
      const body = await res.json();
      assert.equal(res.status, 200, JSON.stringify(body));
      return { body, rows: await rowsRead(client, ids), queries: ids.length };
    };
    const report = (what: string, m: { rows: number; queries: number }) =>
      `${what}: ${m.rows} rows read by ${m.queries} queries (the history is ${MINUTES} rows)`;

    await t.step("the newest 500 1-minute candles, without from", async () => {
      const newest = await measure("/candles/BTC-USDT");
      const bounded = await measure(`/candles/BTC-USDT?from=${(NEWEST_S - 499 * 60) * 1000}`);
      assert.equal(newest.body.candles.length, 500);
      assert.equal(newest.body.candles.at(-1).start, NEWEST_S * 1e6);
      assert.deepEqual(newest.body.candles, bounded.body.candles);
      assert.ok(newest.rows <= MAX_ROWS_READ, report("GET /candles", newest));
    });

    await t.step("the newest daily candles, without from", async () => {
      const days = await measure("/candles/BTC-USDT?interval=1d&limit=7");
      assert.equal(days.body.candles.length, 7);
      assert.equal(days.body.candles.at(-1).trades, 1440);
      assert.ok(days.rows <= MAX_ROWS_READ, report("GET /candles?interval=1d&limit=7", days));
    });

    await t.step("the newest candles of a symbol halted 200 days ago", async () => {
      const halted = await measure("/candles/BTC-USDT?limit=100", NEWEST_S + 200 * 86_400);
      assert.equal(halted.body.candles.length, 100);
      assert.equal(halted.body.candles.at(-1).start, NEWEST_S * 1e6);
      assert.ok(halted.rows <= MAX_ROWS_READ, report("GET /candles, halted", halted));
    });

    await t.step("candles past the oldest: the windows stop where nothing older is", async () => {
      const to = (START_S + 100 * 60) * 1000;
      const oldest = await measure(`/candles/BTC-USDT?limit=1000&to=${to}`);
      assert.equal(oldest.body.candles.length, 100);
      assert.equal(oldest.body.candles[0].start, START_S * 1e6);
      assert.ok(
        oldest.rows <= MAX_ROWS_READ && oldest.queries <= 8,
        report("GET /candles?limit=1000 from the oldest minutes", oldest),
      );
    });

    await t.step("the first ticks page with a far to reads no more than without it", async () => {
      const plain = await measure("/ticks/BTC-USDT?limit=100");
      assert.equal(plain.body.ticks.length, 100);
      assert.ok(plain.rows <= MAX_ROWS_READ, report("GET /ticks", plain));
      for (const to of ["9999999999999", "2150-01-01"]) {
        const far = await measure(`/ticks/BTC-USDT?limit=100&to=${to}`);
        assert.deepEqual(far.body.ticks, plain.body.ticks, `to=${to} bounds nothing`);
        assert.ok(far.rows <= MAX_ROWS_READ, report(`GET /ticks?to=${to}`, far));
      }
    });

    await t.step("the first ticks page of a pair halted 200 days ago", async () => {
      const halted = await measure("/ticks/BTC-USDT?limit=100", NEWEST_S + 200 * 86_400);
      assert.equal(halted.body.ticks.length, 100);
      assert.equal(halted.body.ticks[0].trade_id, String(MINUTES));
      assert.ok(halted.rows <= MAX_ROWS_READ, report("GET /ticks, halted", halted));
    });

    await t.step(
      "a trade stamped ahead of our clock is on the first page, with a far to",
      async () => {
        await client.command({
          query: `INSERT INTO ${quoteIdentifier(database)}.market_trades
          (exchange, symbol, venue_symbol, side, ts_exchange, ts_local, trade_id, price, qty)
          VALUES ('binance', 'BTC-USDT', 'BTCUSDT', 'sell', ${(NEWEST_S + 90) * 1_000_000},
            ${(NEWEST_S + 30) * 1_000_000}, 'ahead', 42000, 1)`,
        });
        for (const path of ["/ticks/BTC-USDT?limit=2", "/ticks/BTC-USDT?limit=2&to=2150-01-01"]) {
          const page = await measure(path, NEWEST_S + 30);
          assert.deepEqual(page.body.ticks.map((tick: { trade_id: string }) => tick.trade_id), [
            "ahead",
            String(MINUTES),
          ], path);
        }
      },
    );
  } finally {
    try {
      await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
    } finally {
      await client.close();
      await sql.end({ timeout: 5 });
    }
  }
});

Deno.test("ticks read the newest hour, day, week and month first, then windows twice as wide", () => {
  const a = 1_000_000_000;
  const month = 31 * 86_400;
  const windows = tickWindows(a, null);
  assert.deepEqual(windows.slice(0, 6), [
    { lower: a - 3_600, upper: null },
    { lower: a - 86_400, upper: a - 3_600 },
    { lower: a - 7 * 86_400, upper: a - 86_400 },
    { lower: a - month, upper: a - 7 * 86_400 },
    { lower: a - 2 * month, upper: a - month },
    { lower: a - 4 * month, upper: a - 2 * month },
  ]);
  // Down to the epoch, with no window open over the rest but the last, at the epoch.
  const last = windows.at(-1)!;
  assert.equal(last.lower, null);
  assert.ok(a - month * 2 ** (windows.length - 4) <= 0, "the last window reaches the epoch");
  assert.ok(windows.slice(0, -1).every((w) => w.lower !== null && w.lower > 0));
  assert.deepEqual(tickWindows(a, a - 60), [{ lower: null, upper: null }]);
  assert.deepEqual(tickWindows(a, a - 2 * 86_400), [
    { lower: a - 3_600, upper: null },
    { lower: a - 86_400, upper: a - 3_600 },
    { lower: null, upper: a - 86_400 },
  ]);
});

Deno.test("candles read limit x interval first, then windows four times as wide, on interval bounds", () => {
  const day = 86_400;
  const a = 20_000 * day;
  assert.deepEqual(candleWindows(a, null, 10 * day).slice(0, 3), [
    { lower: a - 10 * day, upper: null },
    { lower: a - 40 * day, upper: a - 10 * day },
    { lower: a - 160 * day, upper: a - 40 * day },
  ]);
  assert.ok(candleWindows(a, null, 10 * day).every((w) => (w.lower ?? 0) % day === 0));
  assert.equal(candleWindows(a, null, 10 * day).at(-1)!.lower, null);
  assert.deepEqual(candleWindows(a, a - 20 * day, 10 * day), [
    { lower: a - 10 * day, upper: null },
    { lower: null, upper: a - 10 * day },
  ]);
  assert.deepEqual(candleWindows(a, a - 5 * day, 10 * day), [{ lower: null, upper: null }]);
  assert.throws(() => candleWindows(a, null, 0), RangeError);
});

/** A seeded generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648;
}

Deno.test("a newest-first read returns the newest rows, and past a gap reads no more than it needs", async () => {
  const rnd = random(40);
  const inside = (t: number, w: ScanWindow) =>
    (w.lower === null || t >= w.lower) && (w.upper === null || t < w.upper);
  for (let run = 0; run < 300; run++) {
    // Bursts of rows (one a second) separated by gaps of up to two years; some rows ahead of now.
    const rows: number[] = [];
    let t = 1_700_000_000 + Math.floor(rnd() * 600) - 300;
    for (let burst = Math.floor(rnd() * 4); burst >= 0; burst--) {
      for (let n = Math.floor(rnd() * 400); n > 0; n--) rows.push(t--);
      t -= Math.floor(rnd() ** 3 * 2 * 365 * 86_400);
    }
    const take = 1 + Math.floor(rnd() * 150);
    const fromS = rnd() < 0.3 ? 1_700_000_000 - Math.floor(rnd() * 400 * 86_400) : null;
    const model = rows.filter((r) => fromS === null || r >= fromS).slice(0, take);
    let read = 0;
    let queries = 0;
    const got = await readNewestFirst<number>({
      read: (window, limit) => {
        queries++;
        const found = rows.filter((r) => inside(r, window) && (fromS === null || r >= fromS));
        read += found.length;
        return Promise.resolve(found.slice(0, limit));
      },
      exists: (window) => {
        queries++;
        return Promise.resolve(
          rows.some((r) => inside(r, window) && (fromS === null || r >= fromS)),
        );
      },
    }, {
      anchorS: 1_700_000_000,
      fromS,
      span: (i) => 600 * 4 ** i,
      take,
    });
    const what = `run ${run}: take ${take}, from ${fromS}, ${rows.length} rows`;
    assert.deepEqual(got, model, what);
    // Bursts are one row a second: a window reaches at most 4x as far as the rows still wanted
    // (at least one step, 600 s) plus what lies ahead of the anchor.
    assert.ok(read <= 4 * Math.max(take, 600) + 300 + take, `${what}: read ${read}`);
    assert.ok(queries <= 200, `${what}: ${queries} queries`);
  }
});
