/**
 * Paper orders across a restart of the execution engine: a day order whose
 * session ended meanwhile expires instead of resting again, one lost while
 * the kill switch is on is cancelled instead of submitted again, and a fill the
 * paper broker made while the engine was away is recorded with its own
 * commission.
 */

import assert from "node:assert/strict";
import { type PaperBroker, paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { getOrder, listFills } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import type { TimeInForce } from "../trading/signal.ts";
import { clockAt, noRiskLimits, waitFor } from "./_helpers.ts";
import { type MigratedDatabase, migratedDatabase } from "./_postgres.ts";
import { btcUsdtTop } from "./_execution_engine.ts";

/** A scratch database, a cache quoting BTC-USDT at 50000/50001, and engines and paper brokers on them. */
async function setUp(paper: { commission_bps?: string } = {}) {
  const db: MigratedDatabase = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const config = { risk: noRiskLimits(base), execution: base.execution };
  const clock = clockAt(new Date().toISOString());
  const cache = new LatestCache({ clock });
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  /** Puts a fresh BTC-USDT best bid/ask into the cache. */
  const quote = (bid: string, ask: string) =>
    cache.update([btcUsdtTop({ nowMs: clock.now(), bidPrice: bid, askPrice: ask })]);
  quote("50000", "50001");
  const newBroker = () =>
    paperBroker({
      cache,
      options: paper.commission_bps === undefined
        ? base.brokers.paper
        : { commission_bps: paper.commission_bps, commission_min: "0", slippage_bps: "0" },
      max_price_age_ms: base.execution.max_price_age_ms,
      clock,
    });
  const newEngine = (broker: PaperBroker) =>
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
  /** Places a limit buy of 1 at 49000 (below the market: it rests); resolves with its order id once submitted. */
  const restingBuy = async (engine: ExecutionEngine, id: string, tif: TimeInForce) => {
    const [outcome] = await engine.processSignals([{
      body: {
        id,
        symbol: "BTC-USDT",
        side: "buy",
        qty: "1",
        type: "limit",
        limit_price: "49000",
        time_in_force: tif,
      },
      strategy: "grid",
      source: "rest",
    }]);
    assert.equal(outcome!.status, "accepted");
    const orderId = outcome!.status === "accepted" ? outcome!.order.id : "";
    await waitFor(
      async () => (await getOrder(db.sql, orderId)).status === "submitted",
      5_000,
      "submitted",
    );
    return orderId;
  };
  /** The order's status, its fills, and how many orders rest at `broker`. */
  const outcomeOf = async (orderId: string, broker: PaperBroker) => {
    const order = await getOrder(db.sql, orderId);
    return {
      order,
      fills: (await listFills(db.sql, { order_id: orderId, limit: 10 })).items,
      resting_at_broker: (await broker.openOrders()).length,
    };
  };
  return { db, clock, quote, newBroker, newEngine, restingBuy, outcomeOf };
}

Deno.test("a paper day order resting across a restart after its session closed is not resubmitted as a fresh day order", async () => {
  const t = await setUp();
  await using _db = t.db;
  // Day 1: a crypto day limit buy below the market rests at the paper broker.
  const firstBroker = t.newBroker();
  const first = t.newEngine(firstBroker);
  await first.start();
  const id = await t.restingBuy(first, "day-1", "day");
  assert.equal((await firstBroker.openOrders()).length, 1);

  // The engine goes down; it comes back after the crypto session (00:00 UTC) ended.
  await first.stop();
  await firstBroker[Symbol.asyncDispose]();
  t.clock.jump(new Date(t.clock.now() + 25 * 3_600_000).toISOString());
  t.quote("50000", "50001");

  const broker = t.newBroker();
  const second = t.newEngine(broker);
  try {
    await broker.start(new AbortController().signal);
    await second.start();
    await second.reconcile();
    await second.settled();
    await broker.settled();
    await second.settled();

    // The market drops through yesterday's limit.
    t.quote("48000", "48001");
    broker.onPrice("binance", "BTC-USDT");
    await broker.settled();
    await second.settled();

    const { order, fills, resting_at_broker } = await t.outcomeOf(id, broker);
    assert.deepEqual(
      { status: order.status, fills: fills.length, resting_at_broker },
      { status: "expired", fills: 0, resting_at_broker: 0 },
      "yesterday's day order must not live on (nor fill) after its session closed",
    );
  } finally {
    await second.stop();
    await broker[Symbol.asyncDispose]();
  }
});

Deno.test("a paper order lost with the broker while the kill switch is on is cancelled at the next start, not submitted again", async () => {
  const t = await setUp();
  await using _db = t.db;
  const firstBroker = t.newBroker();
  const first = t.newEngine(firstBroker);
  await first.start();
  const id = await t.restingBuy(first, "gtc-ks", "gtc");
  // The kill switch goes on (its cancel's event never stored: a SIGKILL), and the paper broker,
  // which keeps its orders in memory, goes down with the engine.
  await first.setKillSwitch({ active: true, reason: "stop trading" });
  await first.stop();
  await firstBroker[Symbol.asyncDispose]();

  const broker = t.newBroker();
  const second = t.newEngine(broker);
  try {
    await broker.start(new AbortController().signal);
    await second.start();
    await second.reconcile();
    await second.settled();
    t.quote("48000", "48001"); // through the limit
    broker.onPrice("binance", "BTC-USDT");
    await broker.settled();
    await second.settled();
    const { order, fills, resting_at_broker } = await t.outcomeOf(id, broker);
    assert.deepEqual(
      { status: order.status, fills: fills.length, resting_at_broker },
      { status: "cancelled", fills: 0, resting_at_broker: 0 },
    );
    assert.match(order.status_reason ?? "", /kill switch is on/);
  } finally {
    await second.stop();
    await broker[Symbol.asyncDispose]();
  }
});

Deno.test("a paper fill made while the execution engine restarts (brokers kept running) is recorded with its commission", async () => {
  // 10 bps commission: a fill of 1 @ 48001 pays 48.001.
  const t = await setUp({ commission_bps: "10" });
  await using _db = t.db;
  const broker = t.newBroker();
  const first = t.newEngine(broker);
  await first.start();
  const id = await t.restingBuy(first, "gtc-1", "gtc");
  await first.stop(); // the execution actor restarts; the brokers child keeps running

  t.quote("48000", "48001");
  assert.equal(broker.onPrice("binance", "BTC-USDT"), 1); // the paper broker fills it meanwhile
  await broker.settled();

  const second = t.newEngine(broker);
  try {
    await second.start();
    await second.reconcile();
    await second.settled();
    const { order, fills } = await t.outcomeOf(id, broker);
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
