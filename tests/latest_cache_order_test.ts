/**
 * `GET /latest/{symbol}` is the newest trade by exchange time, as what went
 * through the real pipeline (capture replay → validator → NATS → latest-price
 * cache, writer → ClickHouse), on a private nats-server and a scratch
 * ClickHouse database dropped afterwards.
 */

import assert from "node:assert/strict";
import { line, startReplayPipeline } from "./_replay_pipeline.ts";
import { waitFor } from "./_helpers.ts";

const T = 1_786_000_000_000_000; // µs, 2026-08-06

function iso(us: number): string {
  const ms = Math.floor(us / 1000);
  return new Date(ms).toISOString().slice(0, -1) + String(us % 1000).padStart(3, "0") + "Z";
}

function coinbaseTrades(seq: number, at: number, trades: Array<[number, string, number]>) {
  // Coinbase lists a frame's trades newest first.
  return {
    channel: "market_trades",
    client_id: "",
    timestamp: iso(at),
    sequence_num: seq,
    events: [{
      type: "update",
      trades: trades.map(([id, price, ts]) => ({
        product_id: "BTC-USD",
        trade_id: String(id),
        price,
        size: "0.01",
        time: iso(ts),
        side: "BUY",
      })),
    }],
  };
}

Deno.test("latest: two Coinbase trade frames (newest first each) in one message — latest is the newest trade by exchange time", async () => {
  const frames = [
    line(
      T + 10_000,
      "coinbase",
      coinbaseTrades(0, T + 9_000, [
        [103, "65000.03", T + 3_000],
        [102, "65000.02", T + 2_000],
        [101, "65000.01", T + 1_000],
      ]),
    ),
    line(
      T + 20_000,
      "coinbase",
      coinbaseTrades(1, T + 19_000, [
        [106, "65000.06", T + 16_000],
        [105, "65000.05", T + 15_000],
        [104, "65000.04", T + 14_000],
      ]),
    ),
  ];
  // Frames that reach the feed within one publish window travel in one message (README,
  // `feeds.publish_batch_ms`); a window of 50 ms makes that certain here.
  await using p = await startReplayPipeline(frames, { TRADEWIRE_FEEDS__PUBLISH_BATCH_MS: "50" });
  await waitFor(() => p.status.validator.accepted >= 6, 15_000, "6 trades accepted");
  await waitFor(() => p.cache.stats().applied >= 1, 10_000, "cache updated");
  // The newest stored trade, by exchange time, is 106.
  await waitFor(
    async () => (await p.get("/ticks/BTC-USD?limit=10")).body.ticks?.length === 6,
    15_000,
    "6 ticks",
  );
  const ticks = (await p.get("/ticks/BTC-USD?limit=1")).body;
  assert.equal(ticks.ticks[0].trade_id, "106");
  // Give the cache a deadline to show the newest trade; then compare.
  await waitFor(
    async () =>
      (await p.get("/latest/BTC-USD?exchange=coinbase")).body.freshest?.trade?.trade_id === "106",
    3_000,
    "latest shows 106",
  ).catch(() => {});
  const latest = await p.get("/latest/BTC-USD?exchange=coinbase");
  assert.equal(latest.status, 200);
  assert.equal(
    latest.body.freshest.trade.trade_id,
    "106",
    `latest trade ${latest.body.freshest.trade.trade_id} at ${latest.body.freshest.trade.ts_exchange}, ` +
      `newest is 106 at ${T + 16_000}`,
  );
  assert.equal(latest.body.freshest.trade.price, "65000.06");
});

function binanceTrade(id: number, price: string, ts: number) {
  return {
    stream: "btcusdt@trade",
    data: {
      e: "trade",
      E: Math.floor(ts / 1000) + 1,
      s: "BTCUSDT",
      t: id,
      p: price,
      q: "0.01000000",
      T: Math.floor(ts / 1000),
      m: false,
      M: true,
    },
  };
}

Deno.test("latest: a burst of trades then a late one (older exchange time) — latest is the newest trade, not one from before the burst", async () => {
  // Each frame its own message (publish_batch_max 1). The cache's conflating mailbox keeps only
  // the last message per subject: the late trade's message replaces the one carrying 1300, the
  // cache refuses the late trade as out of order, and is left with a trade from mid-burst.
  const lines: string[] = [];
  // A burst of 300 trades, the last of them the newest (id 1300), then a late one (id 5000).
  for (let k = 1; k <= 300; k++) {
    lines.push(
      line(
        T + 10_000_000 + k * 1000,
        "binance",
        binanceTrade(1000 + k, "42010.00", T + 10_000_000 + k * 1000),
      ),
    );
  }
  lines.push(line(T + 10_400_000, "binance", binanceTrade(5000, "42005.00", T + 5_000_000)));
  await using p = await startReplayPipeline(lines, {
    TRADEWIRE_FEEDS__PUBLISH_BATCH_MS: "0",
    TRADEWIRE_FEEDS__PUBLISH_BATCH_MAX: "1",
    TRADEWIRE_EXCHANGES__BINANCE__CHANNELS: "trades",
    TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "false",
  });
  await waitFor(() => p.status.validator.accepted >= 301, 15_000, "301 trades accepted");
  await waitFor(
    async () => (await p.get("/ticks/BTC-USDT?limit=1000")).body.ticks?.length === 301,
    15_000,
    "301 ticks",
  );
  await waitFor(() => p.cache.has("BTC-USDT", "binance"), 10_000, "cache has BTC-USDT");
  // Give the cache a deadline to show the newest trade; then compare.
  await waitFor(
    async () =>
      (await p.get("/latest/BTC-USDT?exchange=binance")).body.freshest?.trade?.trade_id === "1300",
    3_000,
    "latest shows 1300",
  ).catch(() => {});
  const latest = await p.get("/latest/BTC-USDT?exchange=binance");
  assert.equal(latest.status, 200);
  assert.equal(
    latest.body.freshest.trade.trade_id,
    "1300",
    `latest is trade ${latest.body.freshest.trade.trade_id} (ts ${latest.body.freshest.trade.ts_exchange}); ` +
      `stats ${JSON.stringify(p.cache.stats())}`,
  );
});
