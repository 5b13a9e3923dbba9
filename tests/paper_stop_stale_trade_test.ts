/**
 * A paper stop is not set off by a trade printed (`ts_exchange`) before it was placed, even
 * when that trade is received (`ts_local`) after — a venue's reconnect snapshot replays the
 * last minutes' trades with a fresh `ts_local` — on the cache path (`onPrice`) and over NATS
 * `clean.md.*`. A trade printed within {@linkcode PAPER_TRADE_CLOCK_SKEW_MS} before it (the
 * venue's clock behind ours) still counts.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { BrokerEvent, BrokerOrderRequest } from "../brokers/broker.ts";
import { PAPER_TRADE_CLOCK_SKEW_MS, paperBroker } from "../brokers/paper.ts";
import type { Clock } from "../lib/clock.ts";
import { systemClock } from "../lib/clock.ts";
import type { TopEvent, TradeEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { waitFor } from "./_helpers.ts";

const NO_FEES = { commission_bps: "0", commission_min: "0", slippage_bps: "0" };

/** A clock read by hand: `now` is whatever the test set. */
function manualClock(start: number): Clock & { advance(ms: number): void } {
  let now = start;
  return {
    now: () => now,
    sleep: (ms, signal) => systemClock.sleep(ms, signal),
    advance: (ms) => {
      now += ms;
    },
  };
}

function top(clock: Clock, bid: string, ask: string): TopEvent {
  const us = clock.now() * 1000;
  return {
    kind: "top",
    exchange: "coinbase",
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    ts_exchange: us,
    ts_local: us,
    bid_price: bid,
    bid_qty: "1",
    ask_price: ask,
    ask_qty: "1",
  };
}

/** A trade at `price` received now, printed `printedAgoMs` earlier. */
function trade(clock: Clock, price: string, printedAgoMs: number): TradeEvent {
  const us = clock.now() * 1000;
  return {
    kind: "trade",
    exchange: "coinbase",
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    trade_id: `t-${us}-${price}`,
    price,
    qty: "0.5",
    side: "buy",
    ts_exchange: us - printedAgoMs * 1000,
    ts_local: us,
  };
}

function order(o: Partial<BrokerOrderRequest> & { client_order_id: string }): BrokerOrderRequest {
  return {
    symbol: "BTC-USD",
    side: "buy",
    type: "stop",
    time_in_force: "gtc",
    qty: d("1"),
    limit_price: null,
    stop_price: null,
    exchange: "coinbase",
    ...o,
  };
}

Deno.test("a paper stop is not set off by a trade printed before it was placed and received after (onPrice)", async () => {
  const clock = manualClock(Date.now());
  const cache = new LatestCache({ clock });
  await using broker = paperBroker({ cache, options: NO_FEES, max_price_age_ms: 5_000, clock });
  const events: BrokerEvent[] = [];
  broker.onEvent((e) => {
    events.push(e);
  });
  cache.update([top(clock, "99.9", "100")]);
  await broker.submit(order({ client_order_id: "buy", stop_price: d("110") }));
  await broker.submit(order({ client_order_id: "sell", side: "sell", stop_price: d("90") }));

  // Received 10 ms after the stops were placed, printed 30 s before: neither goes off.
  clock.advance(10);
  cache.update([trade(clock, "111", 30_010)]);
  assert.equal(broker.onPrice("coinbase", "BTC-USD"), 0);
  clock.advance(10);
  cache.update([trade(clock, "89", 30_020)]);
  assert.equal(broker.onPrice("coinbase", "BTC-USD"), 0);
  await broker.settled();
  assert.deepEqual(events.map((e) => e.type), ["accepted", "accepted"]);

  // Printed within the clock-skew allowance before the stop was placed: it counts, and the buy
  // stop fills at its stop (the ask lags at 100).
  clock.advance(10);
  cache.update([trade(clock, "111", 30 + PAPER_TRADE_CLOCK_SKEW_MS / 2)]);
  assert.equal(broker.onPrice("coinbase", "BTC-USD"), 1);
  await broker.settled();
  const fill = events.at(-1);
  assert.equal(
    fill?.type === "fill" && `${fill.client_order_id} ${fill.price.toFixed()}`,
    "buy 110",
  );
});

Deno.test("a paper stop on NATS is not set off by a trade printed before it was placed and received after", async () => {
  const nc = await connect({ servers: "127.0.0.1:4222" });
  const prefix = `t${crypto.randomUUID().slice(0, 8)}.`;
  const clock = manualClock(Date.now());
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
  broker.onEvent((e) => {
    events.push(e);
  });
  const fills = () => events.filter((e) => e.type === "fill");
  try {
    cache.update([top(clock, "99.9", "100")]);
    await broker.submit(order({ client_order_id: "stop", stop_price: d("110") }));
    // A sentinel that fills on the next quote: once it has, the messages before it were read.
    await broker.submit(
      order({ client_order_id: "sentinel", type: "limit", limit_price: d("99.95") }),
    );
    await nc.flush();
    const subject = (kind: string) => `${prefix}clean.md.${kind}.coinbase.BTC-USD`;
    // The feed reconnects: its snapshot replays a trade at 111 printed 30 s before the stop
    // was placed, received now.
    clock.advance(10);
    nc.publish(subject("trade"), JSON.stringify([trade(clock, "111", 30_010)]));
    nc.publish(subject("top"), JSON.stringify([top(clock, "99.8", "99.9")]));
    await waitFor(
      () => fills().some((e) => e.client_order_id === "sentinel"),
      3_000,
      "the sentinel's fill",
    );
    await broker.settled();
    assert.deepEqual(fills().map((e) => e.client_order_id), ["sentinel"]);
    assert.equal((await broker.getOrder("stop"))?.status, "accepted");

    // A trade through the stop printed after it was placed sets it off.
    clock.advance(10);
    nc.publish(subject("trade"), JSON.stringify([trade(clock, "111", 0)]));
    await waitFor(() => fills().length === 2, 3_000, "the stop's fill");
    const stopFill = fills()[1];
    assert.equal(stopFill?.client_order_id, "stop");
    assert.equal(stopFill?.type === "fill" && stopFill.price.toFixed(), "110");
  } finally {
    await broker[Symbol.asyncDispose]();
    await nc.close();
  }
});
