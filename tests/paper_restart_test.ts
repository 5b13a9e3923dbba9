/**
 * Paper orders across a restart of the execution engine: a day order whose
 * session ended meanwhile expires instead of resting again, one lost while
 * the kill switch is on is cancelled instead of submitted again, and a fill the
 * paper broker made while the engine was away is recorded with its own
 * commission.
 */

import assert from "node:assert/strict";
import { paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { getOrder, listFills } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { clockAt, noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import type { Clock } from "../lib/clock.ts";

function quote(cache: LatestCache, clock: Clock, bid: string, ask: string): void {
  const us = clock.now() * 1000;
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: us,
    ts_local: us,
    bid_price: bid,
    bid_qty: "10",
    ask_price: ask,
    ask_qty: "10",
  }]);
}

Deno.test("a paper day order resting across a restart after its session closed is not resubmitted as a fresh day order", async () => {
  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const config = { risk: noRiskLimits(base), execution: base.execution };
  const clock = clockAt(new Date().toISOString());
  const cache = new LatestCache({ clock });
  quote(cache, clock, "50000", "50001");
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  const published: string[] = [];
  const make = () => {
    const broker = paperBroker({
      cache,
      options: base.brokers.paper,
      max_price_age_ms: base.execution.max_price_age_ms,
      clock,
    });
    const engine = new ExecutionEngine({
      sql: db.sql,
      brokers: new Map([["paper", broker]]),
      cache,
      state,
      config,
      publish: (subject) => published.push(subject),
      publishFill: () => Promise.resolve(),
      clock,
      log: nullLogger,
    });
    return { broker, engine };
  };

  // Day 1: a crypto day limit buy below the market rests at the paper broker.
  const first = make();
  await first.engine.start();
  const [outcome] = await first.engine.processSignals([{
    body: {
      id: "day-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "1",
      type: "limit",
      limit_price: "49000",
      time_in_force: "day",
    },
    strategy: "grid",
    source: "rest",
  }]);
  assert.equal(outcome!.status, "accepted");
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(
    async () => (await getOrder(db.sql, id)).status === "submitted",
    5_000,
    "submitted",
  );
  assert.equal((await first.broker.openOrders()).length, 1);

  // The engine goes down; it comes back after the crypto session (00:00 UTC) ended.
  await first.engine.stop();
  await first.broker[Symbol.asyncDispose]();
  const tomorrow = new Date(clock.now() + 25 * 3_600_000).toISOString();
  clock.jump(tomorrow);
  quote(cache, clock, "50000", "50001");

  const second = make();
  try {
    await second.broker.start(new AbortController().signal);
    await second.engine.start();
    await second.engine.reconcile();
    await second.engine.settled();
    await second.broker.settled();
    await second.engine.settled();

    // The market drops through yesterday's limit.
    quote(cache, clock, "48000", "48001");
    second.broker.onPrice("binance", "BTC-USDT");
    await second.broker.settled();
    await second.engine.settled();

    const order = await getOrder(db.sql, id);
    const fills = (await listFills(db.sql, { order_id: id, limit: 10 })).items;
    assert.deepEqual(
      {
        status: order.status,
        fills: fills.length,
        resting_at_broker: (await second.broker.openOrders()).length,
      },
      { status: "expired", fills: 0, resting_at_broker: 0 },
      "yesterday's day order must not live on (nor fill) after its session closed",
    );
  } finally {
    await second.engine.stop();
    await second.broker[Symbol.asyncDispose]();
  }
});

Deno.test("a paper order lost with the broker while the kill switch is on is cancelled at the next start, not submitted again", async () => {
  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const config = { risk: noRiskLimits(base), execution: base.execution };
  const clock = clockAt(new Date().toISOString());
  const cache = new LatestCache({ clock });
  quote(cache, clock, "50000", "50001");
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  const make = () => {
    const broker = paperBroker({
      cache,
      options: base.brokers.paper,
      max_price_age_ms: base.execution.max_price_age_ms,
      clock,
    });
    const engine = new ExecutionEngine({
      sql: db.sql,
      brokers: new Map([["paper", broker]]),
      cache,
      state,
      config,
      publish: () => {},
      publishFill: () => Promise.resolve(),
      clock,
      log: nullLogger,
    });
    return { broker, engine };
  };
  const first = make();
  await first.engine.start();
  const [outcome] = await first.engine.processSignals([{
    body: {
      id: "gtc-ks",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "1",
      type: "limit",
      limit_price: "49000",
      time_in_force: "gtc",
    },
    strategy: "grid",
    source: "rest",
  }]);
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(
    async () => (await getOrder(db.sql, id)).status === "submitted",
    5_000,
    "submitted",
  );
  // The kill switch goes on (its cancel's event never stored: a SIGKILL), and the paper broker,
  // which keeps its orders in memory, goes down with the engine.
  await first.engine.setKillSwitch({ active: true, reason: "stop trading" });
  await first.engine.stop();
  await first.broker[Symbol.asyncDispose]();

  const second = make();
  try {
    await second.broker.start(new AbortController().signal);
    await second.engine.start();
    await second.engine.reconcile();
    await second.engine.settled();
    quote(cache, clock, "48000", "48001"); // through the limit
    second.broker.onPrice("binance", "BTC-USDT");
    await second.broker.settled();
    await second.engine.settled();
    const order = await getOrder(db.sql, id);
    assert.deepEqual(
      {
        status: order.status,
        fills: (await listFills(db.sql, { order_id: id, limit: 10 })).items.length,
        resting_at_broker: (await second.broker.openOrders()).length,
      },
      { status: "cancelled", fills: 0, resting_at_broker: 0 },
    );
    assert.match(order.status_reason ?? "", /kill switch is on/);
  } finally {
    await second.engine.stop();
    await second.broker[Symbol.asyncDispose]();
  }
});

Deno.test("a paper fill made while the execution engine restarts (brokers kept running) is recorded with its commission", async () => {
  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const config = { risk: noRiskLimits(base), execution: base.execution };
  const clock = clockAt(new Date().toISOString());
  const cache = new LatestCache({ clock });
  quote(cache, clock, "50000", "50001");
  const state = new PortfolioState({ starting_cash: "1000000", clock });
  await state.load(db.sql);
  // 10 bps commission: a fill of 1 @ 48001 pays 48.001.
  const broker = paperBroker({
    cache,
    options: { commission_bps: "10", commission_min: "0", slippage_bps: "0" },
    max_price_age_ms: base.execution.max_price_age_ms,
    clock,
  });
  const make = () =>
    new ExecutionEngine({
      sql: db.sql,
      brokers: new Map([["paper", broker]]),
      cache,
      state,
      config,
      publish: () => {},
      publishFill: () => Promise.resolve(),
      clock,
      log: nullLogger,
    });
  const first = make();
  await first.start();
  const [outcome] = await first.processSignals([{
    body: {
      id: "gtc-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "1",
      type: "limit",
      limit_price: "49000",
      time_in_force: "gtc",
    },
    strategy: "grid",
    source: "rest",
  }]);
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(
    async () => (await getOrder(db.sql, id)).status === "submitted",
    5_000,
    "submitted",
  );
  await first.stop(); // the execution actor restarts; the brokers child keeps running

  quote(cache, clock, "48000", "48001");
  assert.equal(broker.onPrice("binance", "BTC-USDT"), 1); // the paper broker fills it meanwhile
  await broker.settled();

  const second = make();
  try {
    await second.start();
    await second.reconcile();
    await second.settled();
    const order = await getOrder(db.sql, id);
    const fills = (await listFills(db.sql, { order_id: id, limit: 10 })).items;
    assert.equal(order.status, "filled");
    assert.equal(fills.length, 1);
    assert.deepEqual(
      { price: fills[0]!.price, commission: fills[0]!.commission },
      { price: "48001.00000000", commission: "48.00100000" },
      "the paper broker charged 10 bps on this fill",
    );
  } finally {
    await second.stop();
    await broker[Symbol.asyncDispose]();
  }
});
