/**
 * A `day` order is never sent after its session: when its submits fail
 * (broker unreachable) until the session is over, the engine closes it
 * instead — asking the broker first, since an attempt may have reached it —
 * from its live submit retries as from reconciliation (review 39).
 *
 * The orders' `created_at` is PostgreSQL's `now()`, so the session an order
 * belongs to is the one of the real time: the engine's clock starts at the
 * real time and jumps past that session's end ({@linkcode dayOrderExpiry}).
 */

import assert from "node:assert/strict";
import {
  type Broker,
  type BrokerEvent,
  type BrokerOrderRequest,
  type BrokerOrderState,
  BrokerUnavailableError,
} from "../brokers/broker.ts";
import { dayOrderExpiry } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { getOrder, listFills, type Order } from "../db/mod.ts";
import type { Clock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import type { TopEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { parseDecimal, ZERO } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { type MigratedDatabase, migratedDatabase } from "./_postgres.ts";

/** A clock whose now the test sets; sleeps are short real timers. */
class SetClock implements Clock {
  constructor(public at: number) {}
  now(): number {
    return this.at;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(resolve, Math.min(ms, 20));
      signal?.addEventListener("abort", () => {
        clearTimeout(t);
        reject(signal.reason);
      }, { once: true });
    });
  }
}

/**
 * A broker the test scripts: unreachable for submits while `down`, for
 * lookups while `lookupFailures` lasts; `orders` is what it answers lookups
 * with; a cancel is confirmed by a `cancelled` event.
 */
class ScriptedBroker implements Broker {
  readonly name = "paper";
  down = true;
  lookupFailures = 0;
  submitsTried = 0;
  lookups = 0;
  /** Submits that got through. */
  readonly sent: BrokerOrderRequest[] = [];
  readonly cancels: string[] = [];
  readonly orders = new Map<string, BrokerOrderState>();
  readonly #listeners = new Set<(event: BrokerEvent) => void | Promise<void>>();

  submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    this.submitsTried++;
    if (this.down) return Promise.reject(new BrokerUnavailableError("connection refused"));
    this.sent.push(order);
    const state = this.orders.get(order.client_order_id) ?? {
      client_order_id: order.client_order_id,
      broker_order_id: `b-${order.client_order_id}`,
      status: "accepted",
      filled_qty: ZERO,
      avg_fill_price: null,
    };
    this.orders.set(order.client_order_id, state);
    return Promise.resolve({ broker_order_id: state.broker_order_id });
  }
  cancel(coid: string): Promise<void> {
    this.cancels.push(coid);
    const state = this.orders.get(coid);
    if (state !== undefined) {
      setTimeout(() =>
        this.emit({
          type: "cancelled",
          client_order_id: coid,
          broker_order_id: state.broker_order_id,
          reason: "canceled at the broker",
          at_ms: Date.now(),
        })
      );
    }
    return Promise.resolve();
  }
  getOrder(coid: string): Promise<BrokerOrderState | null> {
    this.lookups++;
    if (this.lookupFailures > 0) {
      this.lookupFailures--;
      return Promise.reject(new BrokerUnavailableError("connection refused"));
    }
    return Promise.resolve(this.orders.get(coid) ?? null);
  }
  openOrders(): Promise<BrokerOrderState[]> {
    return Promise.resolve([...this.orders.values()]);
  }
  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  async emit(event: BrokerEvent): Promise<void> {
    for (const listener of [...this.#listeners]) await listener(event);
  }
  start(): Promise<void> {
    return Promise.resolve();
  }
  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

function top(symbol: string, atMs: number): TopEvent {
  return {
    kind: "top",
    exchange: "alpaca",
    symbol,
    venue_symbol: symbol,
    ts_exchange: atMs * 1000,
    ts_local: atMs * 1000,
    bid_price: "200.00",
    bid_qty: "100",
    ask_price: "200.02",
    ask_qty: "100",
  };
}

/** An engine on a scratch database trading AAPL through a {@linkcode ScriptedBroker}. */
interface Scene extends AsyncDisposable {
  db: MigratedDatabase;
  clock: SetClock;
  broker: ScriptedBroker;
  /** Subjects the engine published, in order. */
  subjects: string[];
  /** The running engine (replaced by `restart`). */
  engine: ExecutionEngine;
  /** Stops the engine and starts a new one on the same database and broker. */
  restart(): Promise<ExecutionEngine>;
  /** Accepts a day market buy of 10 AAPL (the default time in force); returns its order. */
  buy(id: string): Promise<Order>;
  /** Moves the clock a minute past the end of `order`'s session. */
  endSession(order: Order): void;
  /**
   * Waits until `order` leaves `statuses` (or the broker was sent more than
   * `sent` orders); returns it as stored.
   */
  settled(order: Order, statuses?: readonly string[], sent?: number): Promise<Order>;
}

async function scene(): Promise<Scene> {
  const db = await migratedDatabase();
  const clock = new SetClock(Date.now());
  const cache = new LatestCache({ clock });
  cache.update([top("AAPL", clock.now())]);
  const base = await loadConfig({ args: [], env: {} });
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  const broker = new ScriptedBroker();
  const subjects: string[] = [];
  const newEngine = async () => {
    const engine = new ExecutionEngine({
      sql: db.sql,
      brokers: new Map([["paper", broker]]),
      cache,
      state,
      config: { risk: noRiskLimits(base), execution: base.execution },
      publish: (subject) => void subjects.push(subject),
      publishFill: () => Promise.resolve(),
      clock,
      log: nullLogger,
      options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20 },
    });
    await engine.start();
    return engine;
  };
  const s: Scene = {
    db,
    clock,
    broker,
    subjects,
    engine: await newEngine(),
    async restart() {
      await s.engine.stop();
      s.engine = await newEngine();
      return s.engine;
    },
    async buy(id) {
      const [outcome] = await s.engine.processSignals([{
        body: { id, symbol: "AAPL", side: "buy", qty: "10" },
        strategy: "day-orders",
        source: "rest",
      }]);
      assert.ok(outcome?.status === "accepted", JSON.stringify(outcome));
      assert.equal(outcome.order.time_in_force, "day");
      return outcome.order;
    },
    endSession(order) {
      clock.at = dayOrderExpiry(order.created_at.getTime(), "us_equity") + 60_000;
    },
    async settled(order, statuses = ["pending"], sent = 0) {
      let row = order;
      await waitFor(
        async () =>
          broker.sent.length > sent ||
          !statuses.includes((row = await getOrder(db.sql, order.id)).status),
        5_000,
        `order ${order.client_order_id} leaves ${statuses.join(", ")}`,
      );
      return row;
    },
    async [Symbol.asyncDispose]() {
      await s.engine.stop();
      await db[Symbol.asyncDispose]();
    },
  };
  return s;
}

Deno.test("a day order whose submits fail until its session is over is cancelled, not sent in the next session", async () => {
  await using s = await scene();
  const order = await s.buy("unsent-1");
  await waitFor(() => s.broker.submitsTried >= 2, 5_000, "the submit is retried");

  // The next session: the broker is back.
  s.endSession(order);
  s.broker.down = false;

  const row = await s.settled(order);
  assert.deepEqual(s.broker.sent, [], "sent to the broker after its session");
  assert.equal(row.status, "cancelled");
  assert.equal(
    row.status_reason,
    "day order's session ended before it could be submitted: not sent",
  );
  assert.ok(s.broker.lookups >= 1, "an attempt may have reached the broker: it is asked first");
  assert.ok(s.subjects.includes("orders.cancelled.AAPL"), s.subjects.join(", "));
});

Deno.test("a day order an unanswered submit placed is caught up from the broker after its session, not sent again", async () => {
  await using s = await scene();
  const order = await s.buy("placed-1");
  await waitFor(() => s.broker.submitsTried >= 2, 5_000, "the submit is retried");
  // One attempt reached the broker, which filled it in the session; its answer and events were lost.
  const filledAt = order.created_at.getTime() + 1_000;
  s.broker.orders.set(order.client_order_id, {
    client_order_id: order.client_order_id,
    broker_order_id: "b-placed-1",
    status: "filled",
    filled_qty: parseDecimal("10"),
    avg_fill_price: parseDecimal("200.02"),
    filled_at_ms: filledAt,
  });

  s.endSession(order);
  s.broker.down = false;

  const row = await s.settled(order, ["pending", "submitted"]);
  assert.deepEqual(s.broker.sent, [], "sent to the broker again after its session");
  assert.equal(row.status, "filled");
  assert.equal(row.broker_order_id, "b-placed-1");
  assert.equal(parseDecimal(row.avg_fill_price!).toFixed(), "200.02");
  const fills = (await listFills(s.db.sql, { order_id: order.id, limit: 10 })).items;
  assert.equal(fills.length, 1);
  assert.equal(
    new Date(fills[0]!.filled_at).getTime(),
    filledAt,
    "dated when the broker filled it",
  );
  assert.deepEqual(s.broker.cancels, []);
});

Deno.test("a day order an unanswered submit placed and the broker still holds after its session is cancelled there", async () => {
  await using s = await scene();
  const order = await s.buy("held-1");
  await waitFor(() => s.broker.submitsTried >= 2, 5_000, "the submit is retried");
  // The attempt reached the broker after the close: it holds the order for the next session.
  s.broker.orders.set(order.client_order_id, {
    client_order_id: order.client_order_id,
    broker_order_id: "b-held-1",
    status: "accepted",
    filled_qty: ZERO,
    avg_fill_price: null,
  });

  s.endSession(order);
  s.broker.down = false;

  const row = await s.settled(order, ["pending", "submitted"]);
  assert.deepEqual(s.broker.sent, [], "sent to the broker again after its session");
  assert.deepEqual(s.broker.cancels, [order.client_order_id]);
  assert.equal(row.status, "cancelled");
  assert.equal(row.broker_order_id, "b-held-1");
});

Deno.test("reconciliation does not submit a pending day order of an ended session whose lookup fails", async () => {
  await using s = await scene();
  const order = await s.buy("restart-1");
  await waitFor(() => s.broker.submitsTried >= 1, 5_000, "the submit is tried");

  // The engine restarts in the next session; the broker is back but its first lookups fail.
  s.endSession(order);
  s.broker.down = false;
  s.broker.lookupFailures = 3;
  const engine = await s.restart();
  await engine.reconcile();

  const row = await s.settled(order);
  assert.deepEqual(s.broker.sent, [], "sent to the broker after its session");
  assert.equal(row.status, "cancelled");
  assert.match(row.status_reason ?? "", /session ended/);
  assert.ok(s.broker.lookups >= 4, `looked up ${s.broker.lookups} times`);
});

Deno.test("the remainder of a partly filled day order that cannot be submitted again before its session ends expires", async () => {
  await using s = await scene();
  s.broker.down = false;
  const order = await s.buy("partial-1");
  await waitFor(() => s.broker.sent.length === 1, 5_000, "the order is sent");
  await s.settled(order);
  await s.broker.emit({
    type: "fill",
    client_order_id: order.client_order_id,
    broker_order_id: `b-${order.client_order_id}`,
    fill_id: "exec-1",
    qty: parseDecimal("4"),
    price: parseDecimal("200.02"),
    fee: ZERO,
    at_ms: s.clock.now(),
  });
  await s.settled(order, ["pending", "submitted"]);

  // The engine restarts in the session; the broker lost the order and cannot be reached to take
  // the remainder until the session is over.
  s.broker.orders.clear();
  s.broker.down = true;
  const tried = s.broker.submitsTried;
  const engine = await s.restart();
  await engine.reconcile();
  await waitFor(
    () => s.broker.submitsTried >= tried + 2,
    5_000,
    "the remainder's submit is retried",
  );
  s.endSession(order);
  s.broker.down = false;

  const row = await s.settled(order, ["partially_filled"], 1);
  assert.equal(s.broker.sent.length, 1, "the remainder was sent after its session");
  assert.equal(row.status, "expired");
  assert.equal(parseDecimal(row.filled_qty).toFixed(), "4");
  assert.equal(
    row.status_reason,
    "day order's session ended before its remainder could be submitted again",
  );
  assert.ok(s.subjects.includes("orders.expired.AAPL"), s.subjects.join(", "));
});
