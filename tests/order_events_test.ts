/**
 * The `orders.<status>.<symbol>` events: one per transition, each carrying
 * the order as it was after that transition (status, amounts as stored,
 * reason, closed or not), also when several happen in one batch.
 */

import assert from "node:assert/strict";
import type {
  Broker,
  BrokerEvent,
  BrokerOrderRequest,
  BrokerOrderState,
} from "../brokers/broker.ts";
import { paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { getOrder } from "../db/mod.ts";
import { systemClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { parseDecimal as d, ZERO } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import { btcUsdtTop } from "./_execution_engine.ts";

function quote(cache: LatestCache, bid: string, ask: string): void {
  cache.update([btcUsdtTop({ bidPrice: bid, askPrice: ask })]);
}

/** A broker that answers each submit with the events `script` gives, all at once. */
class ScriptedBroker implements Broker {
  readonly name = "paper";
  readonly #listeners = new Set<(event: BrokerEvent) => void | Promise<void>>();
  constructor(readonly script: (order: BrokerOrderRequest) => BrokerEvent[]) {}
  submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    const events = this.script(order);
    setTimeout(async () => {
      for (const event of events) {
        for (const listener of [...this.#listeners]) await listener(event);
      }
    }, 0);
    return Promise.resolve({ broker_order_id: `b-${order.client_order_id}` });
  }
  cancel(): Promise<void> {
    return Promise.resolve();
  }
  getOrder(): Promise<BrokerOrderState | null> {
    return Promise.resolve(null);
  }
  openOrders(): Promise<BrokerOrderState[]> {
    return Promise.resolve([]);
  }
  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  start(): Promise<void> {
    return Promise.resolve();
  }
  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

async function setUp(broker: Broker | null) {
  const db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const cache = new LatestCache({ clock: systemClock });
  quote(cache, "50000", "50001");
  const state = new PortfolioState({ starting_cash: "100000", clock: systemClock });
  await state.load(db.sql);
  const paper = broker ?? paperBroker({
    cache,
    options: base.brokers.paper,
    max_price_age_ms: base.execution.max_price_age_ms,
  });
  const published: Array<{ subject: string; data: Record<string, unknown> }> = [];
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["paper", paper]]),
    cache,
    state,
    config: { risk: noRiskLimits(base), execution: base.execution },
    publish: (subject, data) => published.push({ subject, data: data as Record<string, unknown> }),
    publishFill: () => Promise.resolve(),
    log: nullLogger,
  });
  await engine.start();
  return {
    sql: db.sql,
    engine,
    published,
    async [Symbol.asyncDispose]() {
      await engine.stop();
      await paper[Symbol.asyncDispose]();
      await db[Symbol.asyncDispose]();
    },
  };
}

Deno.test("orders.submitted of an ioc order cancelled at once carries the order as submitted, not its cancellation", async () => {
  await using h = await setUp(null);
  const [outcome] = await h.engine.processSignals([{
    body: {
      id: "ioc-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "1",
      type: "limit",
      limit_price: "40000",
      time_in_force: "ioc",
    },
    strategy: "s",
    source: "rest",
  }]);
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(async () => (await getOrder(h.sql, id)).status === "cancelled", 5_000, "cancelled");
  await h.engine.settled();
  const events = h.published.filter((p) => p.subject.startsWith("orders."));
  assert.deepEqual(events.map((e) => e.subject), [
    "orders.pending.BTC-USDT",
    "orders.submitted.BTC-USDT",
    "orders.cancelled.BTC-USDT",
  ]);
  const submitted = events[1]!.data;
  // The order after its submit transition: still open, not closed, no cancel reason yet.
  assert.deepEqual(
    {
      status: submitted.status,
      closed_at: submitted.closed_at,
      status_reason: submitted.status_reason,
    },
    { status: "submitted", closed_at: null, status_reason: null },
  );
});

Deno.test("orders.partially_filled carries an average fill price rounded to 8 decimals, like the stored one", async () => {
  // qty 4: fills 1 @ 1 and 2 @ 2 (average 5/3), then 1 @ 1 — all delivered together.
  await using h = await setUp(
    new ScriptedBroker((order) => {
      const ids = {
        client_order_id: order.client_order_id,
        broker_order_id: `b-${order.client_order_id}`,
      };
      const at_ms = Date.now();
      return [
        { type: "accepted", ...ids, at_ms },
        { type: "fill", ...ids, fill_id: "f1", qty: d("1"), price: d("1"), fee: ZERO, at_ms },
        { type: "fill", ...ids, fill_id: "f2", qty: d("2"), price: d("2"), fee: ZERO, at_ms },
        { type: "fill", ...ids, fill_id: "f3", qty: d("1"), price: d("1"), fee: ZERO, at_ms },
      ];
    }),
  );
  const [outcome] = await h.engine.processSignals([{
    body: {
      id: "lim-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "4",
      type: "limit",
      limit_price: "3",
      time_in_force: "gtc",
    },
    strategy: "s",
    source: "rest",
  }]);
  const id = outcome!.status === "accepted" ? outcome!.order.id : "";
  await waitFor(async () => (await getOrder(h.sql, id)).status === "filled", 5_000, "filled");
  await h.engine.settled();
  const partial = h.published.filter((p) => p.subject.startsWith("orders.partially_filled."));
  assert.ok(partial.length >= 1, "a partially_filled event");
  for (const event of partial) {
    const avg = String(event.data.avg_fill_price);
    assert.ok(
      /^\d+(\.\d{1,8})?$/.test(avg),
      `avg_fill_price ${avg} has more than 8 decimals (NUMERIC(20,8), README: rounded once to 8 decimals)`,
    );
  }
});
