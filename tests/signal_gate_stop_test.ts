/**
 * The gate of `ExecutionEngine.enqueueSignals` and a stop: a batch deferred
 * by its gate is refused once the engine stops, instead of waiting for the
 * gate (a NATS outage) forever.
 */

import assert from "node:assert/strict";
import type {
  Broker,
  BrokerEvent,
  BrokerOrderRequest,
  BrokerOrderState,
} from "../brokers/broker.ts";
import { type PaperBroker, paperBroker } from "../brokers/paper.ts";

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

/** Engine + scratch database + paper broker, like the reconcile test's. */
async function setup() {
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
  await engine.start();
  return {
    db,
    engine,
    async dispose() {
      await engine.stop();
      await paper[Symbol.asyncDispose]();
      await db[Symbol.asyncDispose]();
    },
  };
}

Deno.test("a batch deferred by its gate is refused once the engine stops (not left pending forever)", async () => {
  const h = await setup();
  try {
    // A NATS batch whose gate stays shut (NATS still down: market data never comes back).
    const shut = new Promise<void>(() => {});
    const held = h.engine.enqueueSignals([{
      body: { id: "g-1", symbol: "BTC-USDT", side: "buy", qty: "1" },
      strategy: "grid",
      source: "nats",
    }], { gate: () => shut });
    let settled: "pending" | "decided" | "refused" = "pending";
    held.decided.then(() => settled = "decided", () => settled = "refused");
    // It was asked (deferred): a REST batch behind it goes on.
    const [rest] = await h.engine.processSignals([{
      body: { id: "r-1", symbol: "BTC-USDT", side: "buy", qty: "1" },
      strategy: "manual",
      source: "rest",
    }]);
    assert.equal(rest?.status, "accepted");
    // The engine stops (SIGTERM while NATS is down). The execution actor's consume loop awaits
    // this batch's `decided` before it can leave its loop and release the outage hold (in its
    // finally), so the batch must settle on its own once the engine stopped.
    await h.engine.stop();
    await waitFor(() => settled !== "pending", 5_000, "the deferred batch to settle after stop")
      .catch(() => {});
    assert.equal(settled, "refused", "the deferred batch's decided is still pending after stop()");
    await assert.rejects(held.outcomes);
  } finally {
    await h.dispose();
  }
});
