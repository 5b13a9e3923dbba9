/**
 * The market-data API against a model: a seeded random history of three
 * venues trading one symbol (a third of the trades sharing a microsecond with
 * the one before, across venues, ids of varying length), inserted out of
 * order in many parts — coverage the fixed data sets of market_data_api_test
 * do not give. Checked: every 1m/5m/15m/1h/1d candle against OHLCV computed
 * by hand; ticks paged with limits 1, 3, 7 and 50 against the model order,
 * with a third of the trades inserted again (FINAL collapses them); from/to
 * given as µs, and as ISO-8601 with offsets and microseconds; pages stay whole
 * when newer trades arrive between them.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { Decimal } from "decimal.js";
import type { ClickHouseClient } from "@clickhouse/client";
import { createClickHouse, literal, quoteIdentifier } from "../adapters/clickhouse.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";
import { type CandleRow, marketDataRoutes, type TickRow } from "../api/market_data.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import type { Exchange } from "../market/events.ts";
import { RecordingClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const PG_ADMIN_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
const T0 = 1_700_000_100;

interface Trade {
  exchange: Exchange;
  trade_id: string;
  price: string;
  qty: string;
  ts: number;
}

/** A seeded generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648;
}

async function insert(client: ClickHouseClient, database: string, trades: readonly Trade[]) {
  await client.command({
    query: `INSERT INTO ${quoteIdentifier(database)}.market_trades ` +
      "(exchange, symbol, venue_symbol, side, ts_exchange, ts_local, trade_id, price, qty) VALUES " +
      trades.map((t) =>
        `(${literal(t.exchange)}, 'BTC-USD', 'BTC-USD', 'buy', ${literal(t.ts)}, ` +
        `${literal(t.ts + 5)}, ${literal(t.trade_id)}, ${t.price}, ${t.qty})`
      ).join(", "),
  });
}

/** ISO-8601 with microseconds of `us`, written in the zone `offsetMin` minutes from UTC. */
function iso(us: number, offsetMin: number): string {
  const local = new Date(Math.floor(us / 1000) + offsetMin * 60_000).toISOString().slice(0, 19);
  const abs = Math.abs(offsetMin);
  return `${local}.${String(us % 1_000_000).padStart(6, "0")}${offsetMin < 0 ? "-" : "+"}` +
    `${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

const key = (t: { exchange: string; trade_id: string }) => `${t.exchange}/${t.trade_id}`;

Deno.test("ticks and candles match a model of a random multi-venue history", async () => {
  const client = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  const sql = createPostgres({ url: PG_ADMIN_URL, pool_size: 2, sslmode: "disable" });
  const database = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const rnd = random(12_345);
  const pick = <X>(items: readonly X[]) => items[Math.floor(rnd() * items.length)]!;
  try {
    await new Migrator(sql, { dir: MIGRATIONS, clickhouse: { client, database } })
      .up(undefined, { only: "clickhouse" });
    const venues: Exchange[] = ["binance", "coinbase", "kraken"];
    const nextId: Record<string, number> = { binance: 1, coinbase: 95, kraken: 990 };
    const trades: Trade[] = [];
    let ts = T0 * 1_000_000;
    for (let i = 0; i < 600; i++) {
      const r = rnd();
      ts += r < 0.3 ? 0 : r < 0.6 ? 1 : r < 0.9 ? Math.floor(rnd() * 2e6) : Math.floor(rnd() * 4e8);
      const exchange = pick(venues);
      trades.push({
        exchange,
        trade_id: String(nextId[exchange]!++),
        price: `${100 + Math.floor(rnd() * 1000) / 100}`,
        qty: `0.${Math.floor(rnd() * 1000) + 1}`,
        ts,
      });
    }
    const shuffled = [...trades].sort(() => rnd() - 0.5);
    for (let i = 0; i < shuffled.length; i += 50) {
      await insert(client, database, shuffled.slice(i, i + 50));
    }
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
        clock: new RecordingClock((T0 + 3 * 86_400) * 1000),
        symbols: () => new Map(venues.map((v) => [v, ["BTC-USD"]])),
      }),
    );
    // deno-lint-ignore no-explicit-any
    const get = async (path: string): Promise<any> => {
      const res = await app.request(`/md${path}`);
      const body = await res.json();
      assert.equal(res.status, 200, `${path}: ${JSON.stringify(body)}`);
      return body;
    };
    const pages = async (path: string, limit: number) => {
      const seen: TickRow[] = [];
      let cursor: string | null = null;
      for (let guard = 0; guard < 1_000; guard++) {
        const sep = path.includes("?") ? "&" : "?";
        const body = await get(`${path}${sep}limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`);
        seen.push(...body.ticks);
        cursor = body.next_cursor;
        if (cursor === null) return seen;
      }
      throw new Error("Pagination did not end");
    };
    const newestFirst = [...trades].sort((a, b) =>
      b.ts - a.ts || (a.exchange < b.exchange ? 1 : a.exchange > b.exchange ? -1 : 0) ||
      b.trade_id.length - a.trade_id.length || (a.trade_id < b.trade_id ? 1 : -1)
    );

    const intervals = [["1m", 60], ["5m", 300], ["15m", 900], ["1h", 3600], ["1d", 86400]] as const;
    for (const [interval, seconds] of intervals) {
      const model = new Map<string, Omit<CandleRow, "time" | "start" | "exchange">>();
      for (const t of [...newestFirst].reverse()) {
        const k = `${t.exchange}|${Math.floor(t.ts / 1e6 / seconds) * seconds * 1e6}`;
        const m = model.get(k);
        if (m === undefined) {
          model.set(k, {
            open: t.price,
            high: t.price,
            low: t.price,
            close: t.price,
            volume: t.qty,
            trades: 1,
          });
        } else {
          m.close = t.price;
          if (new Decimal(t.price).gt(m.high)) m.high = t.price;
          if (new Decimal(t.price).lt(m.low)) m.low = t.price;
          m.volume = new Decimal(m.volume).plus(t.qty).toString();
          m.trades++;
        }
      }
      const body = await get(`/candles/BTC-USD?interval=${interval}&limit=1000`);
      const got = new Map<string, Omit<CandleRow, "time" | "start" | "exchange">>(
        body.candles.map((c: CandleRow) => {
          const { exchange, start, time: _time, ...ohlcv } = c;
          return [`${exchange}|${start}`, ohlcv];
        }),
      );
      const norm = (m: Omit<CandleRow, "time" | "start" | "exchange"> | undefined) =>
        m && {
          ...m,
          open: new Decimal(m.open).toString(),
          high: new Decimal(m.high).toString(),
          low: new Decimal(m.low).toString(),
          close: new Decimal(m.close).toString(),
          volume: new Decimal(m.volume).toString(),
        };
      assert.deepEqual([...got.keys()].sort(), [...model.keys()].sort(), interval);
      for (const [k, m] of model) assert.deepEqual(norm(got.get(k)), norm(m), `${interval} ${k}`);
    }

    // A third of the trades stored again (FINAL collapses them in ticks).
    await insert(client, database, trades.filter(() => rnd() < 0.3));
    for (const limit of [1, 3, 7, 50]) {
      const rows = await pages("/ticks/BTC-USD", limit);
      assert.deepEqual(rows.map(key), newestFirst.map(key), `limit ${limit}`);
    }

    // from (inclusive) and to (exclusive) in µs and in ISO-8601 with offsets, at µs precision.
    for (let k = 0; k < 30; k++) {
      const a = pick(trades).ts + Math.floor(rnd() * 3) - 1;
      const b = pick(trades).ts + Math.floor(rnd() * 3) - 1;
      const [from, to] = a <= b ? [a, b] : [b, a];
      const forms = [
        [String(from), String(to)],
        [iso(from, 330), iso(to, -90)],
        [iso(from, -240), iso(to, 0)],
      ][k % 3]!;
      const path = `/ticks/BTC-USD?from=${encodeURIComponent(forms[0]!)}&to=${
        encodeURIComponent(forms[1]!)
      }`;
      const rows = await pages(path, 9);
      assert.deepEqual(
        rows.map(key),
        newestFirst.filter((t) => t.ts >= from && t.ts < to).map(key),
        path,
      );
    }

    // Newer trades arriving between pages shift nothing.
    const seen: string[] = [];
    let cursor: string | null = null;
    let extraId = 100_000;
    for (let guard = 0; guard < 1_000; guard++) {
      const body = await get(`/ticks/BTC-USD?limit=5${cursor ? `&cursor=${cursor}` : ""}`);
      const ticks = body.ticks as TickRow[];
      seen.push(...ticks.filter((t) => Number(t.trade_id) < 100_000).map(key));
      const last = ticks[ticks.length - 1];
      if (last) {
        await insert(client, database, [{
          exchange: "kraken",
          trade_id: String(extraId++),
          price: "1",
          qty: "1",
          ts: last.ts_exchange + 10_000_000_000,
        }]);
      }
      cursor = body.next_cursor;
      if (cursor === null) break;
    }
    assert.deepEqual(seen, newestFirst.map(key));
  } finally {
    try {
      await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
    } finally {
      await client.close();
      await sql.end({ timeout: 5 });
    }
  }
});
