/**
 * A split Coinbase snapshot as stored: the captured session's book events go
 * through the session, the validator and the batch writer's rows and insert
 * into a fresh ClickHouse database migrated like the engine's, and the book is
 * read back the way the README tells a reader to (the rows of one snapshot
 * share `ts_exchange`, `ts_local` and `sequence`; deltas follow by sequence).
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { createClickHouse, quoteIdentifier, quoteString } from "../adapters/clickhouse.ts";
import { Migrator } from "../adapters/migrator.ts";
import { insertJsonEachRow } from "../actors/batch_writer.ts";
import { nullLogger } from "../lib/log.ts";
import type { MarketEvent } from "../market/events.ts";
import { OrderBook } from "../market/order_book.ts";
import { toRowLine } from "../market/rows.ts";
import { Validator } from "../market/validation.ts";
import { coinbaseSession } from "../venues/coinbase/session.ts";
import type { SessionIO } from "../venues/session.ts";
import { fixtureLines } from "./_helpers.ts";

const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres";
const CLICKHOUSE_URL = "http://127.0.0.1:8123";
const SESSION = "advanced_trade_session_2026-08-09.raw.jsonl";
/** When the captured session was received (just after its snapshots). */
const RECEIVED_US = 1_786_309_549_000_000;
const PRODUCTS = ["BTC-USD", "ETH-USD"];

function quietIO(): SessionIO {
  return {
    send: () => {},
    reconnect: (reason) => assert.fail(`unexpected reconnect: ${reason}`),
    emit: () => {},
    resynced: () => {},
    error: () => {},
    fetchText: () => Promise.reject(new Error("no REST")),
    nowUs: () => RECEIVED_US,
    signal: new AbortController().signal,
    log: nullLogger,
  };
}

/** A decimal's text without trailing fraction zeros (`"1.500"` → `"1.5"`, `"2.000"` → `"2"`). */
function canonical(text: string): string {
  return text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
}

/** A book's side as a map of canonical price → canonical size. */
function side(book: OrderBook, which: "bid" | "ask"): Map<string, string> {
  return new Map(book.levels(which).map(([price, size]) => [canonical(price), canonical(size)]));
}

interface LevelsRow {
  bids: string[];
  bid_sizes: string[];
  asks: string[];
  ask_sizes: string[];
}

Deno.test("a split Coinbase snapshot is stored whole and read back as one snapshot", async () => {
  const session = coinbaseSession({
    ws_url: "wss://advanced-trade-ws.coinbase.com",
    symbols: PRODUCTS,
    channels: ["book"],
  });
  const io = quietIO();
  session.onOpen(io);
  const events: MarketEvent[] = fixtureLines("coinbase", SESSION)
    .flatMap((frame) => session.onFrame(frame, RECEIVED_US, io));
  // What the engine keeps: the validator's accepted events (time window opened: the capture is
  // old), in the order they came on their subject.
  const validator = new Validator({ max_lag_ms: 1e12, max_future_ms: 1e12 });
  const accepted = PRODUCTS.flatMap((product) =>
    validator.validate(
      events.filter((event) => event.kind === "book" && event.symbol === product),
      RECEIVED_US,
    ).accepted
  );
  // The book each product ends with, applied as published (part 0 replaces, later parts add).
  const expected = new Map<string, OrderBook>();
  for (const event of events) {
    if (event.kind !== "book") continue;
    let book = expected.get(event.symbol);
    if (book === undefined) expected.set(event.symbol, book = new OrderBook());
    const part = (event as { part?: number }).part ?? 0;
    if (event.action === "snapshot" && part === 0) book.replace(event.bids, event.asks);
    else book.applyAll(event.bids, event.asks);
  }

  const database = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const client = createClickHouse({ url: CLICKHOUSE_URL, database: "default" });
  try {
    const pg = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
    try {
      await new Migrator(pg, { dir: MIGRATIONS, clickhouse: { client, database } })
        .up(undefined, { only: "clickhouse" });
    } finally {
      await pg.end({ timeout: 5 });
    }
    // As the batch writer stores them, in two inserts as a flush could cut them.
    const lines = accepted.map((event) => toRowLine(event).line);
    const half = Math.floor(lines.length / 2);
    await insertJsonEachRow(client, database, "orderbook_snapshots", lines.slice(0, half));
    await insertJsonEachRow(client, database, "orderbook_snapshots", lines.slice(half));

    const table = `${quoteIdentifier(database)}.orderbook_snapshots`;
    const select = async <T>(query: string): Promise<T[]> =>
      await (await client.query({ query, format: "JSONEachRow" })).json<T>();
    const levels = `arrayMap(x -> toString(x), bid_prices) AS bids,
      arrayMap(x -> toString(x), bid_sizes) AS bid_sizes,
      arrayMap(x -> toString(x), ask_prices) AS asks,
      arrayMap(x -> toString(x), ask_sizes) AS ask_sizes`;
    for (const product of PRODUCTS) {
      const where = `exchange = 'coinbase' AND symbol = ${quoteString(product)}`;
      // 1. The latest snapshot: its (ts_exchange, ts_local, sequence).
      const [latest] = await select<{ ts_exchange: string; ts_local: string; sequence: string }>(
        `SELECT toString(ts_exchange) AS ts_exchange, toString(ts_local) AS ts_local,
           toString(sequence) AS sequence
         FROM ${table} FINAL WHERE ${where} AND action = 'snapshot'
         ORDER BY ts_exchange DESC, ts_local DESC LIMIT 1`,
      );
      assert.ok(latest, `a snapshot of ${product} is stored`);
      // 2. Its rows, in whatever order: together they are the book.
      const parts = await select<LevelsRow>(
        `SELECT ${levels} FROM ${table} FINAL WHERE ${where} AND action = 'snapshot'
           AND ts_exchange = ${latest.ts_exchange} AND ts_local = ${latest.ts_local}
           AND sequence = ${latest.sequence}`,
      );
      assert.equal(parts.length, product === "BTC-USD" ? 14 : 9, `${product}'s parts`);
      const book = new OrderBook();
      for (const row of parts) {
        book.applyAll(
          row.bids.map((price, i) => [price, row.bid_sizes[i]!]),
          row.asks.map((price, i) => [price, row.ask_sizes[i]!]),
        );
      }
      // 3. The deltas after it, in sequence order.
      const deltas = await select<LevelsRow>(
        `SELECT ${levels} FROM ${table} FINAL WHERE ${where} AND action = 'delta'
           AND sequence > ${latest.sequence} ORDER BY sequence`,
      );
      assert.ok(deltas.length > 100, `${product}'s deltas`);
      for (const row of deltas) {
        book.applyAll(
          row.bids.map((price, i) => [price, row.bid_sizes[i]!]),
          row.asks.map((price, i) => [price, row.ask_sizes[i]!]),
        );
      }
      const want = expected.get(product)!;
      assert.ok(want.levels("bid").length > 6_000 && want.levels("ask").length > 16_000);
      assert.deepEqual(side(book, "bid"), side(want, "bid"), `${product} bids`);
      assert.deepEqual(side(book, "ask"), side(want, "ask"), `${product} asks`);
    }
  } finally {
    await client.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` })
      .catch(() => {});
    await client.close();
  }
});
