/**
 * An order whose signal names no `exchange` reaches the paper broker naming none, so the paper
 * broker prices it on the venue with the newest fresh quote of the side it needs, re-evaluated
 * on every venue's update (brokers/paper.ts) — not on the venue of the newest price of any kind
 * that risk priced it with (a trade counts there). A signal naming a venue stays on it.
 */

import assert from "node:assert/strict";
import { getOrder, listFills } from "../db/mod.ts";
import type { TradeEvent } from "../market/events.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import { parseDecimal } from "../trading/money.ts";
import { btcUsdtTop, scratchEngine } from "./_execution_engine.ts";
import { waitFor } from "./_helpers.ts";

/** A kraken BTC-USDT trade at `price`, received at `atMs` — kraken quotes nothing. */
function krakenTrade(price: string, atMs: number): TradeEvent {
  const us = atMs * 1000;
  return {
    kind: "trade",
    exchange: "kraken",
    symbol: "BTC-USDT",
    venue_symbol: "XBT/USDT",
    trade_id: `k-${us}`,
    price,
    qty: "0.01",
    side: "sell",
    ts_exchange: us,
    ts_local: us,
  };
}

/** binance quotes 50000 / 50001 now, and kraken's trade is newer: the newest price is kraken's. */
function krakenNewest(cache: LatestCache): void {
  const quotedMs = Date.now();
  cache.update([btcUsdtTop({ nowMs: quotedMs })]);
  cache.update([krakenTrade("50000.5", quotedMs + 1)]);
}

const LIMIT = {
  symbol: "BTC-USDT",
  side: "buy",
  qty: "0.1",
  type: "limit",
  limit_price: "49900",
  time_in_force: "gtc",
};

Deno.test("a market signal naming no exchange fills at the venue quoting a fresh ask, though another venue printed the newest trade", async () => {
  await using h = await scratchEngine();
  await h.engine.start();
  krakenNewest(h.cache);
  const [outcome] = await h.engine.processSignals([{
    body: { id: "m-1", symbol: "BTC-USDT", side: "buy", qty: "0.1" },
    strategy: "venue",
    source: "rest",
  }]);
  assert.equal(outcome!.status, "accepted", JSON.stringify(outcome));
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(
    async () => !["pending", "submitted"].includes((await getOrder(h.db.sql, id)).status),
    5_000,
    "the order settled",
  );
  const order = await getOrder(h.db.sql, id);
  assert.equal(order.status, "filled", `ended ${order.status}: ${order.status_reason}`);
  const fills = (await listFills(h.db.sql, { order_id: id, limit: 10 })).items;
  assert.deepEqual(fills.map((f) => parseDecimal(f.price).toFixed()), ["50001"]);
});

Deno.test("a resting limit signal naming no exchange fills when any venue's quote crosses it", async () => {
  await using h = await scratchEngine();
  await h.engine.start();
  krakenNewest(h.cache);
  const [outcome] = await h.engine.processSignals([{
    body: { ...LIMIT, id: "l-1" },
    strategy: "venue",
    source: "rest",
  }]);
  assert.equal(outcome!.status, "accepted", JSON.stringify(outcome));
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(async () => (await getOrder(h.db.sql, id)).status === "submitted", 5_000, "sub");
  // binance's ask falls through the limit.
  h.cache.update([btcUsdtTop({ bidPrice: "49850", askPrice: "49860" })]);
  assert.equal(h.paper.onPrice("binance", "BTC-USDT"), 1);
  await waitFor(async () => (await getOrder(h.db.sql, id)).status === "filled", 5_000, "filled");
  const fills = (await listFills(h.db.sql, { order_id: id, limit: 10 })).items;
  assert.deepEqual(fills.map((f) => parseDecimal(f.price).toFixed()), ["49860"]);
});

Deno.test("a resting limit signal naming an exchange is not filled by another venue's quote", async () => {
  await using h = await scratchEngine();
  await h.engine.start();
  krakenNewest(h.cache);
  const [outcome] = await h.engine.processSignals([{
    body: { ...LIMIT, id: "l-2", exchange: "kraken" },
    strategy: "venue",
    source: "rest",
  }]);
  assert.equal(outcome!.status, "accepted", JSON.stringify(outcome));
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(async () => (await getOrder(h.db.sql, id)).status === "submitted", 5_000, "sub");
  h.cache.update([btcUsdtTop({ bidPrice: "49850", askPrice: "49860" })]);
  assert.equal(h.paper.onPrice("binance", "BTC-USDT"), 0);
  await h.paper.settled();
  await h.engine.settled();
  assert.equal((await getOrder(h.db.sql, id)).status, "submitted");
});
