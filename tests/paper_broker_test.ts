/**
 * The paper broker: fills at the best bid/ask with slippage and commission
 * (exact decimals), refusals without a fresh price, resting limit and stop
 * orders matched on price updates (through `onPrice` and through real NATS
 * `clean.md.*` messages), ioc/fok, idempotent submits, cancels and the
 * expiry of day orders on an injected clock.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { Clock } from "../lib/clock.ts";
import type { Exchange, TopEvent, TradeEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import {
  type BrokerEvent,
  type BrokerOrderRequest,
  BrokerRejectedError,
} from "../brokers/broker.ts";
import {
  dayOrderExpiry,
  matchPaperOrder,
  paperBroker,
  type PaperBrokerOptions,
  paperCommission,
} from "../brokers/paper.ts";
import { Decimal, parseDecimal as d } from "../trading/money.ts";
import { waitFor } from "./_helpers.ts";

/** A clock tests move by hand; `sleep` resolves once the clock has been moved past its end. */
class ManualClock implements Clock {
  #now: number;
  #sleepers: Array<{ until: number; resolve: () => void }> = [];

  constructor(start: number) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  set(ms: number): void {
    this.#now = ms;
    const due = this.#sleepers.filter((s) => s.until <= ms);
    this.#sleepers = this.#sleepers.filter((s) => s.until > ms);
    for (const sleeper of due) sleeper.resolve();
  }

  advance(ms: number): void {
    this.set(this.#now + ms);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const sleeper = {
        until: this.#now + ms,
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        this.#sleepers = this.#sleepers.filter((s) => s !== sleeper);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#sleepers.push(sleeper);
    });
  }
}

const T0 = Date.parse("2026-03-10T15:00:00Z"); // a Tuesday, 11:00 in New York (EDT)
const FEES: PaperBrokerOptions = { commission_bps: "10", commission_min: "1", slippage_bps: "5" };
const NO_FEES: PaperBrokerOptions = { commission_bps: "0", commission_min: "0", slippage_bps: "0" };

function top(
  clock: Clock,
  exchange: Exchange,
  symbol: string,
  bid: string,
  ask: string,
  ageMs = 0,
): TopEvent {
  const ts = (clock.now() - ageMs) * 1000;
  return {
    kind: "top",
    exchange,
    symbol,
    venue_symbol: symbol,
    ts_exchange: ts,
    ts_local: ts,
    bid_price: bid,
    bid_qty: "1",
    ask_price: ask,
    ask_qty: "1",
  };
}

function trade(
  clock: Clock,
  exchange: Exchange,
  symbol: string,
  price: string,
  ageMs = 0,
): TradeEvent {
  const ts = (clock.now() - ageMs) * 1000;
  return {
    kind: "trade",
    exchange,
    symbol,
    venue_symbol: symbol,
    trade_id: `t-${ts}-${price}`,
    price,
    qty: "1",
    side: "buy",
    ts_exchange: ts,
    ts_local: ts,
  };
}

function order(
  overrides: Partial<BrokerOrderRequest> & { client_order_id: string },
): BrokerOrderRequest {
  return {
    symbol: "BTC-USDT",
    side: "buy",
    type: "market",
    time_in_force: "gtc",
    qty: d("1"),
    limit_price: null,
    stop_price: null,
    exchange: "binance",
    ...overrides,
  };
}

/** A broker on a manual clock, with every event it emits collected (as JSON-ish text for decimals). */
function setUp(options: PaperBrokerOptions = NO_FEES, start = T0) {
  const clock = new ManualClock(start);
  const cache = new LatestCache({ clock });
  const broker = paperBroker({ cache, options, max_price_age_ms: 5_000, clock });
  const events: BrokerEvent[] = [];
  broker.onEvent((event) => {
    events.push(event);
  });
  return { clock, cache, broker, events };
}

function summary(event: BrokerEvent): Record<string, string> {
  if (event.type === "fill") {
    return {
      type: event.type,
      fill_id: event.fill_id,
      qty: event.qty.toFixed(),
      price: event.price.toFixed(),
      fee: event.fee.toFixed(),
    };
  }
  if (event.type === "accepted") return { type: event.type };
  return { type: event.type, reason: event.reason };
}

Deno.test("paper market orders fill at the ask and bid with slippage and commission, exactly", async () => {
  const { clock, cache, broker, events } = setUp(FEES);
  await using _ = broker;
  cache.update([top(clock, "binance", "BTC-USDT", "100", "100.10")]);

  const buy = await broker.submit(order({ client_order_id: "b1", qty: d("20") }));
  assert.equal(buy.broker_order_id, "paper-b1");
  assert.equal(events.length, 0, "events arrive after submit resolves");
  await broker.settled();
  // 100.10 × 1.0005 = 100.15005; commission 20 × 100.15005 × 10 bps = 2.003001 (> min 1).
  assert.deepEqual(events.map(summary), [
    { type: "accepted" },
    { type: "fill", fill_id: "paper-1", qty: "20", price: "100.15005", fee: "2.003001" },
  ]);
  assert.equal(events[0]?.client_order_id, "b1");

  await broker.submit(order({ client_order_id: "s1", side: "sell", qty: d("20") }));
  await broker.settled();
  // 100 × 0.9995 = 99.95; 20 × 99.95 = 1999 → 1.999.
  assert.deepEqual(events.slice(2).map(summary), [
    { type: "accepted" },
    { type: "fill", fill_id: "paper-1", qty: "20", price: "99.95", fee: "1.999" },
  ]);

  // A small order pays the minimum commission.
  await broker.submit(order({ client_order_id: "b2", qty: d("0.01") }));
  await broker.settled();
  assert.deepEqual(summary(events.at(-1)!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "0.01",
    price: "100.15005",
    fee: "1",
  });
  const state = await broker.getOrder("b1");
  assert.equal(state?.status, "filled");
  assert.equal(state?.filled_qty.toFixed(), "20");
  assert.equal(state?.avg_fill_price?.toFixed(), "100.15005");
});

Deno.test("paper orders without an exchange use the venue with the newest fresh quote", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  cache.update([top(clock, "binance", "ETH-USD", "2000", "2001", 1_000)]);
  cache.update([top(clock, "coinbase", "ETH-USD", "2000.5", "2000.7", 10)]);
  cache.update([top(clock, "kraken", "ETH-USD", "1990", "1991", 9_000)]); // stale
  await broker.submit(order({ client_order_id: "x", symbol: "ETH-USD", exchange: null }));
  await broker.settled();
  assert.deepEqual(summary(events[1]!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "1",
    price: "2000.7",
    fee: "0",
  });
});

Deno.test("paper orders without an exchange use the newest venue that quotes the side they need", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  cache.update([top(clock, "binance", "ETH-USD", "2000", "2001", 1_000)]);
  cache.update([top(clock, "coinbase", "ETH-USD", "2000.5", "0", 10)]); // newer, without an ask
  const price = () => {
    const last = events.at(-1);
    return `${last?.client_order_id}:${last?.type === "fill" ? last.price.toFixed() : last?.type}`;
  };
  await broker.submit(order({ client_order_id: "buy", symbol: "ETH-USD", exchange: null }));
  await broker.settled();
  assert.equal(price(), "buy:2001");
  await broker.submit(
    order({
      client_order_id: "limit",
      symbol: "ETH-USD",
      exchange: null,
      type: "limit",
      limit_price: d("2001.5"),
    }),
  );
  await broker.settled();
  assert.equal(price(), "limit:2001");

  // Newer still, without a bid: sells take the coinbase bid, buys the kraken ask.
  clock.advance(100);
  cache.update([top(clock, "kraken", "ETH-USD", "0", "1999")]);
  await broker.submit(
    order({ client_order_id: "sell", symbol: "ETH-USD", exchange: null, side: "sell" }),
  );
  await broker.settled();
  assert.equal(price(), "sell:2000.5");
  await broker.submit(order({ client_order_id: "buy2", symbol: "ETH-USD", exchange: null }));
  await broker.settled();
  assert.equal(price(), "buy2:1999");
  assert.deepEqual(await broker.openOrders(), []);
});

Deno.test("paper market orders without a fresh price are rejected, and stay rejected", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  await assert.rejects(
    broker.submit(order({ client_order_id: "r1" })),
    (error: unknown) =>
      error instanceof BrokerRejectedError &&
      error.reason === "no fresh market price for BTC-USDT",
  );
  cache.update([top(clock, "binance", "BTC-USDT", "100", "101", 5_001)]); // too old
  await assert.rejects(broker.submit(order({ client_order_id: "r2" })), BrokerRejectedError);
  // A sell needs a bid: a quote without one is no price for it.
  cache.update([top(clock, "binance", "BTC-USDT", "0", "101")]);
  await assert.rejects(
    broker.submit(order({ client_order_id: "r3", side: "sell" })),
    BrokerRejectedError,
  );
  // The same order again is refused again, even with a price now.
  cache.update([top(clock, "binance", "BTC-USDT", "100", "101")]);
  await assert.rejects(broker.submit(order({ client_order_id: "r1" })), BrokerRejectedError);
  assert.equal((await broker.getOrder("r1"))?.status, "rejected");
  // Invalid orders are refused too.
  await assert.rejects(
    broker.submit(order({ client_order_id: "r4", type: "limit" })),
    /limit orders need a limit_price/,
  );
  await assert.rejects(
    broker.submit(order({ client_order_id: "r5", exchange: "nasdaq" })),
    /unknown market-data exchange/,
  );
  await broker.settled();
  assert.deepEqual(events, []);
  assert.equal(broker.stats().rejected, 5);
});

Deno.test("a paper limit order rests until the market reaches it, then fills at the better price", async () => {
  const { clock, cache, broker, events } = setUp({ ...NO_FEES, slippage_bps: "50" });
  await using _ = broker;
  cache.update([top(clock, "binance", "BTC-USDT", "100", "101")]);
  await broker.submit(order({ client_order_id: "l1", type: "limit", limit_price: d("99.5") }));
  await broker.submit(
    order({ client_order_id: "l2", type: "limit", side: "sell", limit_price: d("101.2") }),
  );
  await broker.settled();
  assert.deepEqual(events.map(summary), [{ type: "accepted" }, { type: "accepted" }]);
  assert.deepEqual((await broker.openOrders()).map((o) => o.status), ["accepted", "accepted"]);

  clock.advance(1_000);
  cache.update([top(clock, "binance", "BTC-USDT", "99", "99.2")]);
  assert.equal(broker.onPrice("binance", "BTC-USDT"), 1);
  await broker.settled();
  // Ask 99.2 × 1.005 = 99.696 would pass the limit: capped at 99.5.
  assert.deepEqual(summary(events[2]!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "1",
    price: "99.5",
    fee: "0",
  });
  assert.equal(events[2]?.client_order_id, "l1");

  clock.advance(1_000);
  cache.update([top(clock, "binance", "BTC-USDT", "102", "102.5")]);
  broker.onPrice("kraken", "BTC-USDT"); // another venue: not this order's
  assert.equal((await broker.openOrders()).length, 1);
  broker.onPrice("binance", "BTC-USDT");
  await broker.settled();
  // Bid 102 × 0.995 = 101.49, better than the 101.2 limit.
  assert.deepEqual(summary(events[3]!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "1",
    price: "101.49",
    fee: "0",
  });
  assert.deepEqual(await broker.openOrders(), []);
});

Deno.test("paper stop orders trigger when the market trades through the stop", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  cache.update([top(clock, "binance", "BTC-USDT", "99.9", "100")]);
  await broker.submit(order({ client_order_id: "s1", type: "stop", stop_price: d("105") }));
  await broker.submit(
    order({
      client_order_id: "s2",
      side: "sell",
      type: "stop_limit",
      stop_price: d("95"),
      limit_price: d("94"),
    }),
  );
  clock.advance(100);
  cache.update([trade(clock, "binance", "BTC-USDT", "104.99")]);
  broker.onPrice("binance", "BTC-USDT");
  await broker.settled();
  assert.equal(events.filter((e) => e.type === "fill").length, 0);

  clock.advance(100);
  cache.update([trade(clock, "binance", "BTC-USDT", "105.10")]);
  cache.update([top(clock, "binance", "BTC-USDT", "105.2", "105.3")]);
  broker.onPrice("binance", "BTC-USDT");
  await broker.settled();
  assert.deepEqual(summary(events.at(-1)!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "1",
    price: "105.3",
    fee: "0",
  });

  // The sell stop-limit: the bid falls through 95 (triggered) but below its 94 limit: it rests.
  clock.advance(100);
  cache.update([top(clock, "binance", "BTC-USDT", "93.5", "93.6")]);
  broker.onPrice("binance", "BTC-USDT");
  await broker.settled();
  assert.equal(events.at(-1)?.type, "fill");
  assert.equal(events.at(-1)?.client_order_id, "s1");
  // Back above the limit: the triggered order fills at the bid.
  clock.advance(100);
  cache.update([top(clock, "binance", "BTC-USDT", "94.2", "94.3")]);
  broker.onPrice("binance", "BTC-USDT");
  await broker.settled();
  assert.equal(events.at(-1)?.client_order_id, "s2");
  assert.deepEqual(summary(events.at(-1)!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "1",
    price: "94.2",
    fee: "0",
  });
});

Deno.test("a paper stop ignores trades printed before it was placed, and a trade through it fills no better than its stop", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  // A trade at 106 two seconds ago (still fresh); the market now quotes 99.9 / 100.
  cache.update([trade(clock, "binance", "BTC-USDT", "106", 2_000)]);
  cache.update([top(clock, "binance", "BTC-USDT", "99.9", "100")]);
  await broker.submit(order({ client_order_id: "b", type: "stop", stop_price: d("105") }));
  broker.onPrice("binance", "BTC-USDT"); // the old trade is still the newest one
  await broker.settled();
  assert.deepEqual(events.map(summary), [{ type: "accepted" }]);

  // A trade through the stop after it was placed sets it off; the ask (100) lags: it fills at 105.
  clock.advance(100);
  cache.update([trade(clock, "binance", "BTC-USDT", "106")]);
  assert.equal(broker.onPrice("binance", "BTC-USDT"), 1);
  await broker.settled();
  assert.deepEqual(summary(events.at(-1)!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "1",
    price: "105",
    fee: "0",
  });

  // The same for a sell stop: an older trade at 94 does not set it off, a newer one fills it at 95.
  clock.advance(100);
  cache.update([trade(clock, "binance", "BTC-USDT", "94", 50)]);
  cache.update([top(clock, "binance", "BTC-USDT", "99.9", "100")]);
  await broker.submit(
    order({ client_order_id: "s", side: "sell", type: "stop", stop_price: d("95") }),
  );
  broker.onPrice("binance", "BTC-USDT");
  await broker.settled();
  assert.deepEqual(events.slice(2).map(summary), [{ type: "accepted" }]);
  clock.advance(100);
  cache.update([trade(clock, "binance", "BTC-USDT", "94.5")]);
  broker.onPrice("binance", "BTC-USDT");
  await broker.settled();
  assert.equal(events.at(-1)?.client_order_id, "s");
  assert.deepEqual(summary(events.at(-1)!), {
    type: "fill",
    fill_id: "paper-1",
    qty: "1",
    price: "95",
    fee: "0",
  });
});

Deno.test("paper ioc and fok orders fill at once or are cancelled", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  cache.update([top(clock, "binance", "BTC-USDT", "100", "101")]);
  await broker.submit(
    order({ client_order_id: "i1", type: "limit", limit_price: d("100.5"), time_in_force: "ioc" }),
  );
  await broker.submit(
    order({ client_order_id: "f1", type: "limit", limit_price: d("100"), time_in_force: "fok" }),
  );
  await broker.submit(
    order({ client_order_id: "f2", type: "limit", limit_price: d("101"), time_in_force: "fok" }),
  );
  await broker.submit(order({ client_order_id: "i2", time_in_force: "ioc" }));
  await broker.settled();
  assert.deepEqual(events.map((e) => `${e.client_order_id}:${e.type}`), [
    "i1:accepted",
    "i1:cancelled",
    "f1:accepted",
    "f1:cancelled",
    "f2:accepted",
    "f2:fill",
    "i2:accepted",
    "i2:fill",
  ]);
  assert.deepEqual(summary(events[1]!), {
    type: "cancelled",
    reason: "ioc order could not fill at submit",
  });
  assert.deepEqual(await broker.openOrders(), []);
});

Deno.test("paper submit is idempotent by client order id", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  cache.update([top(clock, "binance", "BTC-USDT", "100", "101")]);
  const first = await broker.submit(order({ client_order_id: "same" }));
  const again = await broker.submit(order({ client_order_id: "same" }));
  assert.deepEqual(again, first);
  await broker.settled();
  assert.deepEqual(events.map((e) => e.type), ["accepted", "fill"]);
  assert.equal(broker.stats().fills, 1);
  assert.equal(broker.stats().submitted, 1);
  // Also for a resting order.
  await broker.submit(order({ client_order_id: "rest", type: "limit", limit_price: d("90") }));
  await broker.submit(order({ client_order_id: "rest", type: "limit", limit_price: d("90") }));
  assert.equal((await broker.openOrders()).length, 1);
});

Deno.test("paper cancel ends a resting order and refuses unknown ones", async () => {
  const { clock, cache, broker, events } = setUp();
  await using _ = broker;
  cache.update([top(clock, "binance", "BTC-USDT", "100", "101")]);
  await broker.submit(order({ client_order_id: "c1", type: "limit", limit_price: d("90") }));
  await broker.cancel("c1");
  await broker.cancel("c1"); // finished: nothing more happens
  await broker.settled();
  assert.deepEqual(events.map(summary), [
    { type: "accepted" },
    { type: "cancelled", reason: "cancelled on request" },
  ]);
  assert.equal((await broker.getOrder("c1"))?.status, "cancelled");
  assert.deepEqual(await broker.openOrders(), []);
  // A cancelled order does not fill later.
  cache.update([top(clock, "binance", "BTC-USDT", "80", "81")]);
  assert.equal(broker.onPrice("binance", "BTC-USDT"), 0);
  await assert.rejects(broker.cancel("nope"), BrokerRejectedError);
  assert.equal(await broker.getOrder("nope"), null);
});

Deno.test("paper day orders expire at midnight UTC for crypto and at the close for equities", async () => {
  const start = Date.parse("2026-03-10T23:00:00Z");
  const { clock, cache, broker, events } = setUp(NO_FEES, start);
  await using _ = broker;
  cache.update([top(clock, "binance", "BTC-USDT", "100", "101")]);
  cache.update([top(clock, "alpaca", "AAPL", "200", "200.1")]);
  await broker.submit(
    order({ client_order_id: "d1", type: "limit", limit_price: d("90"), time_in_force: "day" }),
  );
  await broker.submit(
    order({ client_order_id: "g1", type: "limit", limit_price: d("90"), time_in_force: "gtc" }),
  );
  // After the close (19:00 EDT): the AAPL day order lives until the next session's close.
  await broker.submit(
    order({
      client_order_id: "a1",
      symbol: "AAPL",
      exchange: "alpaca",
      type: "limit",
      limit_price: d("150"),
      time_in_force: "day",
    }),
  );
  const controller = new AbortController();
  await broker.start(controller.signal);

  clock.set(Date.parse("2026-03-10T23:59:59.999Z"));
  assert.equal(broker.expireDue(), 0);
  clock.set(Date.parse("2026-03-11T00:00:00.500Z")); // wakes the expiry loop
  await waitFor(() => events.some((e) => e.type === "expired"), 2_000, "crypto day order expired");
  await broker.settled();
  assert.deepEqual(
    events.filter((e) => e.type === "expired").map((e) => e.client_order_id),
    ["d1"],
  );
  assert.deepEqual((await broker.openOrders()).map((o) => o.client_order_id).sort(), ["a1", "g1"]);

  clock.set(Date.parse("2026-03-11T19:59:59Z")); // 15:59:59 EDT
  assert.equal(broker.expireDue(), 0);
  clock.set(Date.parse("2026-03-11T20:00:01Z"));
  await waitFor(() => events.filter((e) => e.type === "expired").length === 2, 2_000, "expired");
  assert.equal(events.at(-1)?.client_order_id, "a1");
  assert.equal((await broker.getOrder("a1"))?.status, "expired");
  controller.abort();

  // The rule itself.
  assert.equal(
    dayOrderExpiry(Date.parse("2026-03-10T15:00:00Z"), "us_equity"),
    Date.parse("2026-03-10T20:00:00Z"),
  );
  assert.equal(
    dayOrderExpiry(Date.parse("2026-11-27T15:00:00Z"), "us_equity"), // day after Thanksgiving
    Date.parse("2026-11-27T18:00:00Z"),
  );
  assert.equal(
    dayOrderExpiry(Date.parse("2026-03-10T15:00:00Z"), "crypto"),
    Date.parse("2026-03-11T00:00:00Z"),
  );
});

Deno.test("the paper matching rule and commission are pure and exact", () => {
  const market = { bid: d("99"), ask: d("100"), trade_high: null, trade_low: null };
  const buyLimit = { side: "buy" as const, type: "limit" as const, stop_price: null };
  const fill = matchPaperOrder({ ...buyLimit, limit_price: d("101") }, null, market, d("10"));
  assert.equal(fill.action, "fill");
  assert.equal(fill.action === "fill" && fill.price.toFixed(), "100.1");
  assert.deepEqual(
    matchPaperOrder({ ...buyLimit, limit_price: d("99.99") }, null, market, d("0")),
    { action: "rest", triggered: null },
  );
  // Prices are rounded half-even to 8 decimals.
  const tiny = matchPaperOrder(
    { side: "buy", type: "market", limit_price: null, stop_price: null },
    null,
    { ...market, ask: d("0.123456789") },
    d("0"),
  );
  assert.equal(tiny.action === "fill" && tiny.price.toFixed(), "0.12345679");
  // A stop set off by a trade while the ask lags: the worse of stop and ask, then slippage
  // (105 × 1.001); a stop_limit never beyond its limit; set off by the quote: the ask.
  const buyStop = { side: "buy" as const, type: "stop" as const, stop_price: d("105") };
  const tradeThrough = { ...market, trade_high: d("106"), trade_low: d("106") };
  const stopFill = matchPaperOrder({ ...buyStop, limit_price: null }, null, tradeThrough, d("10"));
  assert.equal(stopFill.action === "fill" && stopFill.price.toFixed(), "105.105");
  assert.equal(stopFill.triggered, "trade");
  const stopLimit = matchPaperOrder(
    { ...buyStop, type: "stop_limit", limit_price: d("104.5") },
    "trade",
    market,
    d("0"),
  );
  assert.equal(stopLimit.action === "fill" && stopLimit.price.toFixed(), "104.5");
  const byQuote = matchPaperOrder(
    { ...buyStop, limit_price: null },
    null,
    { ...tradeThrough, ask: d("105.5") },
    d("0"),
  );
  assert.deepEqual(byQuote, { action: "fill", price: d("105.5"), triggered: "quote" });
  // 1234.56789 × 3 bps = 0.370370367 → 0.37037037.
  assert.equal(paperCommission(d("1234.56789"), d("3"), d("0")).toFixed(), "0.37037037");
  assert.equal(paperCommission(d("0.000001"), d("1"), d("0")).toFixed(), "0");
  assert.ok(paperCommission(d("10"), d("0"), d("0.25")).eq(new Decimal("0.25")));
});

Deno.test("paper resting orders fill on clean.md messages from NATS", async () => {
  const nc = await connect({ servers: "127.0.0.1:4222" });
  const prefix = `t${crypto.randomUUID().slice(0, 8)}.`;
  const clock = new ManualClock(Date.now());
  const cache = new LatestCache({ clock });
  const broker = paperBroker({
    cache,
    nats: nc,
    options: NO_FEES,
    max_price_age_ms: 5_000,
    clock,
    subject_prefix: prefix,
  });
  const events: BrokerEvent[] = [];
  broker.onEvent((event) => {
    events.push(event);
  });
  try {
    await broker.submit(order({ client_order_id: "n1", type: "limit", limit_price: d("99") }));
    await broker.submit(
      order({ client_order_id: "n2", type: "stop", stop_price: d("110"), exchange: null }),
    );
    assert.equal(broker.stats().subscriptions, 3);
    await nc.flush();
    const subject = (kind: string, exchange: string) =>
      `${prefix}clean.md.${kind}.${exchange}.BTC-USDT`;
    nc.publish(subject("top", "binance"), "not json");
    nc.publish(
      subject("top", "binance"),
      JSON.stringify([top(clock, "binance", "BTC-USDT", "98", "98.5")]),
    );
    await waitFor(() => events.some((e) => e.type === "fill"), 3_000, "limit fill from NATS");
    await broker.settled();
    const limitFill = events.find((e) => e.type === "fill");
    assert.equal(limitFill?.client_order_id, "n1");
    assert.equal(limitFill?.type === "fill" && limitFill.price.toFixed(), "98.5");
    assert.equal(broker.stats().malformed_prices, 1);

    // A trade through the stop on another venue triggers n2 (no exchange); it fills at the message's quote.
    nc.publish(
      subject("trade", "kraken"),
      JSON.stringify([trade(clock, "kraken", "BTC-USDT", "110.5")]),
    );
    await nc.flush();
    nc.publish(
      subject("quote", "kraken"),
      JSON.stringify(
        [top(clock, "kraken", "BTC-USDT", "110.4", "110.6")].map((e) => ({ ...e, kind: "quote" })),
      ),
    );
    await waitFor(() => events.filter((e) => e.type === "fill").length === 2, 3_000, "stop fill");
    const stopFill = events.filter((e) => e.type === "fill")[1];
    assert.equal(stopFill?.client_order_id, "n2");
    assert.equal(stopFill?.type === "fill" && stopFill.price.toFixed(), "110.6");
    // Nothing rests any more: the subscriptions are gone.
    assert.equal(broker.stats().subscriptions, 0);
  } finally {
    await broker[Symbol.asyncDispose]();
    await nc.close();
  }
});

Deno.test("paper stops on NATS are not set off by trades received before they were placed", async () => {
  const nc = await connect({ servers: "127.0.0.1:4222" });
  const prefix = `t${crypto.randomUUID().slice(0, 8)}.`;
  const clock = new ManualClock(Date.now());
  const broker = paperBroker({
    cache: new LatestCache({ clock }),
    nats: nc,
    options: NO_FEES,
    max_price_age_ms: 5_000,
    clock,
    subject_prefix: prefix,
  });
  const events: BrokerEvent[] = [];
  broker.onEvent((event) => {
    events.push(event);
  });
  const fills = () => events.filter((e) => e.type === "fill");
  try {
    await broker.submit(order({ client_order_id: "stop", type: "stop", stop_price: d("110") }));
    // A sentinel that fills on the next quote: once it has, the messages before it were read.
    await broker.submit(
      order({ client_order_id: "limit", type: "limit", limit_price: d("100.5") }),
    );
    await nc.flush();
    const subject = (kind: string) => `${prefix}clean.md.${kind}.binance.BTC-USDT`;
    // A trade through the stop, received a second before the stop was placed, then a quote.
    nc.publish(
      subject("trade"),
      JSON.stringify([trade(clock, "binance", "BTC-USDT", "111", 1_000)]),
    );
    nc.publish(subject("top"), JSON.stringify([top(clock, "binance", "BTC-USDT", "100", "100.1")]));
    await waitFor(() => fills().length === 1, 3_000, "the sentinel's fill");
    await broker.settled();
    assert.deepEqual(fills().map((e) => e.client_order_id), ["limit"]);

    // A trade through the stop after it was placed, with the quote still at 100.1: filled at 110.
    clock.advance(10);
    nc.publish(
      subject("trade"),
      JSON.stringify([
        trade(clock, "binance", "BTC-USDT", "111"),
        top(clock, "binance", "BTC-USDT", "100", "100.1"),
      ]),
    );
    await waitFor(() => fills().length === 2, 3_000, "the stop's fill");
    const stopFill = fills()[1];
    assert.equal(stopFill?.client_order_id, "stop");
    assert.equal(stopFill?.type === "fill" && stopFill.price.toFixed(), "110");
  } finally {
    await broker[Symbol.asyncDispose]();
    await nc.close();
  }
});
