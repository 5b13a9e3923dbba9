/**
 * The paper broker's `clean.md` subscriptions over real NATS: released once a symbol's resting
 * orders end by cancel or expiry; and a sell stop at tiny prices set off exactly by a trade
 * message received after it was placed, filled at its stop.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { BrokerEvent, BrokerOrderRequest } from "../brokers/broker.ts";
import { paperBroker } from "../brokers/paper.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
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

function order(o: Partial<BrokerOrderRequest> & { client_order_id: string }): BrokerOrderRequest {
  return {
    symbol: "BTC-USDT",
    side: "buy",
    type: "limit",
    time_in_force: "gtc",
    qty: d("1"),
    limit_price: null,
    stop_price: null,
    exchange: "binance",
    ...o,
  };
}

function top(clock: Clock, symbol: string, bid: string, ask: string): TopEvent {
  const us = clock.now() * 1000;
  return {
    kind: "top",
    exchange: "binance",
    symbol,
    venue_symbol: symbol,
    ts_exchange: us,
    ts_local: us,
    bid_price: bid,
    bid_qty: "1",
    ask_price: ask,
    ask_qty: "1",
  };
}

function trade(clock: Clock, symbol: string, price: string): TradeEvent {
  const us = clock.now() * 1000;
  return {
    kind: "trade",
    exchange: "binance",
    symbol,
    venue_symbol: symbol,
    trade_id: `t${us}`,
    price,
    qty: "1",
    side: "sell",
    ts_exchange: us,
    ts_local: us,
  };
}

Deno.test("paper subscriptions go when resting orders are cancelled or expire; a tiny sell stop is set off exactly", async () => {
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
  try {
    cache.update([top(clock, "BTC-USDT", "100", "101")]);
    await broker.submit(order({ client_order_id: "c1", limit_price: d("90") }));
    assert.equal(broker.stats().subscriptions, 3);
    await broker.cancel("c1");
    assert.equal(broker.stats().subscriptions, 0);
    await broker.submit(
      order({ client_order_id: "d1", limit_price: d("90"), time_in_force: "day" }),
    );
    assert.equal(broker.stats().subscriptions, 3);
    assert.equal(broker.expireDue(clock.now() + 86_400_000), 1);
    assert.equal(broker.stats().subscriptions, 0);

    // Tiny prices: a sell stop at 0.00000005 with the bid at 0.00000006 rests; a trade at
    // 0.00000005 after it was placed sets it off: it fills at min(bid, stop) = 0.00000005.
    cache.update([top(clock, "PEPE-USDT", "0.00000006", "0.00000007")]);
    const stop = (client_order_id: string, price: string) =>
      order({
        client_order_id,
        symbol: "PEPE-USDT",
        side: "sell",
        type: "stop",
        stop_price: d(price),
      });
    await broker.submit(stop("tiny", "0.00000005"));
    await broker.submit(stop("tiny2", "0.00000004"));
    await nc.flush();
    clock.advance(2);
    nc.publish(
      `${prefix}clean.md.trade.binance.PEPE-USDT`,
      JSON.stringify([trade(clock, "PEPE-USDT", "0.00000005")]),
    );
    await waitFor(() => events.some((e) => e.type === "fill"), 3_000, "tiny stop fill");
    await broker.settled();
    const fill = events.find((e) => e.type === "fill");
    assert.equal(fill?.client_order_id, "tiny");
    assert.equal(fill?.type === "fill" && fill.price.toFixed(), "0.00000005");
    assert.equal((await broker.getOrder("tiny2"))?.status, "accepted");
    await broker.cancel("tiny2");
    assert.equal(broker.stats().subscriptions, 0);
    assert.equal(broker.stats().resting, 0);
  } finally {
    await broker[Symbol.asyncDispose]();
    await nc.close();
  }
});
