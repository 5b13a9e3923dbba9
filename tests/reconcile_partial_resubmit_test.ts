/**
 * A partly filled order whose remainder is being submitted again (its broker
 * lost it) when a reconciliation with the kill switch on asks its submit
 * loop to cancel it: the loop closes it as cancelled — not only a pending
 * order — instead of leaving it `partially_filled`, open, with nothing at the
 * broker.
 */

import assert from "node:assert/strict";
import type {
  Broker,
  BrokerEvent,
  BrokerOrderRequest,
  BrokerOrderState,
} from "../brokers/broker.ts";
import { getOrder } from "../db/mod.ts";
import { parseDecimal } from "../trading/money.ts";
import { waitFor } from "./_helpers.ts";
import { FAST_SUBMIT_RETRIES, scratchEngine } from "./_execution_engine.ts";

/** A scripted broker: submits succeed or fail on demand; it can "lose" its orders. */
class ScriptedBroker implements Broker {
  readonly name = "paper";
  failSubmits = false;
  lost = false;
  submits = 0;
  failedSubmits = 0;
  lookups = 0;
  readonly orders = new Map<string, BrokerOrderState>();
  readonly #listeners = new Set<(event: BrokerEvent) => void | Promise<void>>();

  submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    this.submits++;
    if (this.failSubmits) {
      this.failedSubmits++;
      return Promise.reject(new Error("broker unreachable"));
    }
    const broker_order_id = `b-${this.submits}`;
    this.orders.set(order.client_order_id, {
      client_order_id: order.client_order_id,
      broker_order_id,
      status: "accepted",
      filled_qty: parseDecimal("0"),
      avg_fill_price: null,
    });
    return Promise.resolve({ broker_order_id });
  }
  cancel(coid: string): Promise<void> {
    this.orders.delete(coid);
    return Promise.resolve();
  }
  getOrder(coid: string): Promise<BrokerOrderState | null> {
    this.lookups++;
    return Promise.resolve(this.lost ? null : this.orders.get(coid) ?? null);
  }
  openOrders(): Promise<BrokerOrderState[]> {
    return Promise.resolve(this.lost ? [] : [...this.orders.values()]);
  }
  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  async emit(event: BrokerEvent): Promise<void> {
    for (const l of [...this.#listeners]) await l(event);
  }
  start(_signal: AbortSignal): Promise<void> {
    return Promise.resolve();
  }
  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("kill switch + reconciliation during a partially filled order's resubmit closes it (not left open)", async () => {
  await using h = await scratchEngine({
    startingCash: "1000000",
    broker: () => new ScriptedBroker(),
    options: FAST_SUBMIT_RETRIES,
  });
  const { db, engine, broker } = h;
  await engine.start();
  const [outcome] = await engine.processSignals([{
    body: {
      id: "p-1",
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
  const order = outcome.status === "accepted" ? outcome.order : null;
  const orderId = order!.id;
  const coid = order!.client_order_id;
  await waitFor(
    async () => (await getOrder(db.sql, orderId)).status === "submitted",
    5_000,
    "submitted",
  );
  // A partial fill at the broker.
  await broker.emit({
    type: "fill",
    client_order_id: coid,
    broker_order_id: "b-1",
    fill_id: "f-1",
    qty: parseDecimal("0.4"),
    price: parseDecimal("40000"),
    fee: parseDecimal("0"),
    at_ms: Date.now(),
  });
  await waitFor(
    async () => (await getOrder(db.sql, orderId)).status === "partially_filled",
    5_000,
    "partially filled",
  );
  // The broker loses the order and cannot be reached for submits for a while.
  broker.lost = true;
  broker.failSubmits = true;
  // A reconciliation finds it lost: what is left is resubmitted (the loop retries).
  await engine.reconcile();
  await waitFor(() => broker.failedSubmits >= 2, 5_000, "the resubmit to be retrying");
  // The kill switch goes on; the broker's stream comes back: another reconciliation.
  await engine.setKillSwitch({ active: true, reason: "test" });
  await engine.reconcile();
  await engine.idle();
  // Whatever the engine does, it settles within a few retry delays.
  await waitFor(async () => {
    await engine.idle();
    const row = await getOrder(db.sql, orderId);
    return ["cancelled", "expired", "rejected", "filled"].includes(row.status);
  }, 3_000).catch(() => {});
  const row = await getOrder(db.sql, orderId);
  const atBroker = await broker.openOrders();
  assert.equal(atBroker.length, 0, "the broker holds no order");
  assert.ok(
    ["cancelled", "expired", "rejected", "filled"].includes(row.status),
    `the broker has no order and the kill switch is on, yet the engine keeps the order ` +
      `${row.status} (filled ${row.filled_qty}); submits tried ${broker.submits}`,
  );
});
