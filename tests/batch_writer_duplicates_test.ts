/**
 * The batch writer inserts each trade of a fresh batch once, even when the
 * batch carries it twice (after a restart the validator's trade-id memory is
 * empty, and Coinbase's subscribe snapshot re-sends trades still waiting in
 * the stream): `market_trades` would collapse the copies, but the `candles`
 * view counts every inserted row. Copies within a batch are found without
 * asking ClickHouse. Runs against the real NATS JetStream, ClickHouse and
 * PostgreSQL (migration lock); each test uses its own tw_test_<random>
 * ClickHouse database (dropped) and its own stream and consumer.
 */

import assert from "node:assert/strict";
import type { TradeEvent } from "../market/events.ts";
import { waitFor } from "./_helpers.ts";
import {
  countFinal,
  type MarketDatabase,
  marketDatabase,
  startWriter,
  streamEnv,
} from "./_batch_writer.ts";

/** 2023-11-14 22:13:00 UTC, on a minute boundary, in µs. */
const T0 = 1_699_999_980_000_000;

function trade(i: number, overrides: Partial<TradeEvent> = {}): TradeEvent {
  return {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: T0 + i * 1_000,
    ts_local: T0 + i * 1_000 + 250,
    trade_id: String(1_000_000 + i),
    price: `${100 + (i % 7)}.5`,
    qty: "0.1",
    side: "buy",
    ...overrides,
  };
}

/** The `candles` of the test's trades (all in one minute): trades and volume as text. */
async function candle(db: MarketDatabase) {
  const [row] = await db.rows<{ trades: string; volume: string }>(
    `SELECT toString(countMerge(trades)) AS trades, toString(sumMerge(volume)) AS volume
     FROM ${db.table("candles")}`,
  );
  return row;
}

Deno.test("a fresh batch carrying the same trade twice counts it once in the candles, as in market_trades", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  // Two messages of one batch carry trade 1 (e.g. the validator restarted between them and its
  // trade-id memory was empty): neither is redelivered, and the symbol has no watermark yet.
  const t0 = trade(0);
  const t1 = trade(1);
  await env.publishAll([[t0, t1], [t1]]);
  await using writer = await startWriter(env, db, { overrides: { flush_interval_ms: 500 } });
  await waitFor(() => writer.spec.counters.acked === 2, 10_000, "both messages written");
  assert.equal(writer.spec.counters.batches, 1, "one batch");
  assert.equal(await countFinal(db, "market_trades"), 2);
  assert.deepEqual(
    await candle(db),
    { trades: "2", volume: "0.200000000000000000" },
    "the candle counts each stored trade once",
  );
  assert.equal(writer.spec.counters.duplicates_skipped, 1);
  assert.equal(writer.spec.counters.stored_checks, 0, "copies within a batch need no query");
  await writer.stop();
});

Deno.test("a fresh batch above the watermark drops a trade it repeats out of order, without asking ClickHouse", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  await env.publish([trade(0), trade(1), trade(2)]);
  await using writer = await startWriter(env, db, { overrides: { flush_interval_ms: 500 } });
  await waitFor(() => writer.spec.counters.acked === 1, 10_000, "the first batch written");
  // Newer than everything stored, but trade 5 comes again after trade 6 (a re-sent snapshot).
  await env.publishAll([[trade(5), trade(6)], [trade(4), trade(5)]]);
  await waitFor(() => writer.spec.counters.acked === 3, 10_000, "the second batch written");
  assert.equal(writer.spec.counters.batches, 2, "two batches");
  assert.equal(await countFinal(db, "market_trades"), 6);
  assert.deepEqual(await candle(db), { trades: "6", volume: "0.600000000000000000" });
  assert.equal(writer.spec.counters.duplicates_skipped, 1);
  assert.equal(writer.spec.counters.stored_checks, 0, "trades above the watermark need no query");
  await writer.stop();
});

Deno.test("trades sharing one exchange time with different ids are all stored, whatever their order", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  // Fills of one order at one time: ids in order in the first message, not in the second.
  const at = (id: number) => trade(0, { trade_id: String(id) });
  await env.publishAll([[at(10), at(11), at(12)], [at(14), at(13)]]);
  await using writer = await startWriter(env, db, { overrides: { flush_interval_ms: 500 } });
  await waitFor(() => writer.spec.counters.acked === 2, 10_000, "both messages written");
  assert.equal(writer.spec.counters.batches, 1, "one batch");
  assert.equal(await countFinal(db, "market_trades"), 5);
  assert.deepEqual(await candle(db), { trades: "5", volume: "0.500000000000000000" });
  assert.equal(writer.spec.counters.duplicates_skipped, 0);
  await writer.stop();
});
