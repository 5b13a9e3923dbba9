/**
 * Reconciliation and an order whose submit is still on its way to the
 * broker: a pending order whose submit is in flight (the broker slow to
 * answer) is looked up by a reconciliation (the broker's stream came back)
 * while the kill switch is on. The broker does not know it yet; the order is
 * not closed behind the submit's back (the broker would then hold a live
 * order the engine calls cancelled) but left to its submit loop, which
 * cancels it.
 */

import assert from "node:assert/strict";
import type {
  Broker,
  BrokerEvent,
  BrokerOrderRequest,
  BrokerOrderState,
} from "../brokers/broker.ts";
import { type PaperBroker, paperBroker } from "../brokers/paper.ts";
import { getOrder, listOrders } from "../db/mod.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { systemClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";

/** A paper broker whose submits can be held before they reach it, with a stream that can "come back". */
class SlowSubmitBroker implements Broker {
  readonly name: string;
  readonly inner: PaperBroker;
  holdSubmits = false;
  readonly #gate = Promise.withResolvers<void>();
  submitsStarted = 0;
  submitsDone = 0;
  readonly #reconnect = new Set<() => void | Promise<void>>();

  constructor(inner: PaperBroker) {
    this.inner = inner;
    this.name = inner.name;
  }
  releaseSubmits(): void {
    this.#gate.resolve();
  }
  async reconnected(): Promise<void> {
    for (const l of [...this.#reconnect]) await l();
  }
  onReconnect(listener: () => void | Promise<void>): () => void {
    this.#reconnect.add(listener);
    return () => this.#reconnect.delete(listener);
  }
  async submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    this.submitsStarted++;
    if (this.holdSubmits) await this.#gate.promise;
    try {
      return await this.inner.submit(order);
    } finally {
      this.submitsDone++;
    }
  }
  cancel(coid: string): Promise<void> {
    return this.inner.cancel(coid);
  }
  getOrder(coid: string): Promise<BrokerOrderState | null> {
    return this.inner.getOrder(coid);
  }
  openOrders(): Promise<BrokerOrderState[]> {
    return this.inner.openOrders();
  }
  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    return this.inner.onEvent(listener);
  }
  start(signal: AbortSignal): Promise<void> {
    return this.inner.start(signal);
  }
  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("reconciliation with the kill switch on does not close a pending order whose submit is still in flight", async () => {
  const db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = { ...base, risk: noRiskLimits(base) };
  const cache = new LatestCache({ clock: systemClock });
  const now = Date.now();
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: now * 1000,
    ts_local: now * 1000,
    bid_price: "50000",
    bid_qty: "10",
    ask_price: "50001",
    ask_qty: "10",
  }]);
  const state = new PortfolioState({ starting_cash: "100000", clock: systemClock });
  await state.load(db.sql);
  const paper = paperBroker({
    cache,
    options: config.brokers.paper,
    max_price_age_ms: config.execution.max_price_age_ms,
    clock: systemClock,
  });
  const broker = new SlowSubmitBroker(paper);
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["paper", broker]]),
    cache,
    state,
    config: { risk: config.risk, execution: config.execution },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    clock: systemClock,
    log: nullLogger,
    options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20 },
  });
  try {
    await engine.start();
    broker.holdSubmits = true;
    // A resting gtc limit buy (below the market): accepted, stored pending, its submit held.
    const [outcome] = await engine.processSignals([{
      body: {
        id: "k-1",
        symbol: "BTC-USDT",
        side: "buy",
        qty: "1",
        type: "limit",
        limit_price: "40000",
        time_in_force: "gtc",
      },
      strategy: "grid",
      source: "rest",
    }]);
    assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
    const orderId = outcome.status === "accepted" ? outcome.order.id : "";
    await waitFor(() => broker.submitsStarted >= 1, 5_000, "the submit to start");
    // The kill switch goes on without cancelling open orders.
    await engine.setKillSwitch({ active: true, reason: "test" });
    // The broker's stream comes back: the engine reconciles while the submit is still on its way.
    await broker.reconnected();
    await engine.reconcile();
    await engine.idle();
    // The submit lands at the broker.
    broker.releaseSubmits();
    await waitFor(() => broker.submitsDone >= 1, 5_000, "the submit to finish");
    await paper.settled();
    await engine.idle();
    // Let whatever the engine does about it happen (a cancel at the broker would show there).
    await waitFor(
      async () => {
        await paper.settled();
        await engine.idle();
        const open = (await paper.openOrders()).some((o) => o.client_order_id !== undefined);
        const row = await getOrder(db.sql, orderId);
        const dbOpen = !["filled", "cancelled", "expired", "rejected"].includes(row.status);
        return open === dbOpen;
      },
      5_000,
      "the broker and the database to agree",
    ).catch(() => {});
    const atBroker = await paper.openOrders();
    const row = await getOrder(db.sql, orderId);
    const orders = (await listOrders(db.sql, { limit: 10 })).items;
    assert.equal(orders.length, 1);
    // The broker has the order resting; the engine must not have it closed.
    const brokerOpen = atBroker.length > 0;
    const dbOpen = !["filled", "cancelled", "expired", "rejected"].includes(row.status);
    assert.equal(
      dbOpen,
      brokerOpen,
      `broker has ${atBroker.length} resting order(s), the database says ${row.status} ` +
        `(${row.status_reason ?? ""})`,
    );
  } finally {
    broker.releaseSubmits();
    await engine.stop();
    await paper[Symbol.asyncDispose]();
    await db[Symbol.asyncDispose]();
  }
});
