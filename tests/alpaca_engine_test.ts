/**
 * The execution engine driven by the real Alpaca adapter against the loopback
 * fake of Alpaca's Trading API: stream gaps, the reconciliation after a
 * reconnect, what final trade updates carry, restarts, the kill switch,
 * health while Alpaca refuses the stream, and Alpaca's market clock while
 * its REST API does not answer.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { type AlpacaBroker, alpacaBroker } from "../brokers/alpaca.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { getOrder, listFills, listUnresolvedAlerts, type Order } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { toDb } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  type FakeAlpacaServer,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";
import { type FakeSocket, startWsServer } from "./fakes/ws_server.ts";

const LOOKUP = "/v2/orders:by_client_order_id";

interface Rig extends AsyncDisposable {
  sql: Sql;
  fake: FakeAlpacaServer;
  broker: AlpacaBroker;
  engine: ExecutionEngine;
  /**
   * Lookups by client order id sent to the fake, the most of them in flight
   * at once, and those answered by the fake whose answer is held.
   */
  lookups: { sent: number; inFlight: number; maxInFlight: number; answersHeld: number };
  /** Holds every lookup by client order id until {@linkcode Rig.releaseLookups}. */
  holdLookups(): void;
  /** Lets lookups reach the fake but holds their answers until {@linkcode Rig.releaseLookups}. */
  holdAnswers(): void;
  /** Lets the held lookups (and the next ones) go. */
  releaseLookups(): void;
  /** A fresh adapter and engine on the same database and fake: a process restart. */
  restart(): Promise<void>;
}

/** The engine's risk section: every limit off unless `risk` says otherwise. */
async function rig(
  options: { risk?: (config: Config) => Config["risk"] } = {},
): Promise<Rig> {
  const db = await migratedDatabase();
  const fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = { ...base, risk: (options.risk ?? noRiskLimits)(base) };
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  const cache = new LatestCache();
  const lookups = { sent: 0, inFlight: 0, maxInFlight: 0, answersHeld: 0 };
  let held: PromiseWithResolvers<void> | null = null;
  let heldAnswers: PromiseWithResolvers<void> | null = null;
  const makeBroker = () =>
    alpacaBroker({
      base_url: fake.baseUrl,
      key_id: FAKE_ALPACA_KEY_ID,
      secret_key: FAKE_ALPACA_SECRET_KEY,
      request_timeout_ms: 2_000,
      handshake_timeout_ms: 2_000,
      reconnect_initial_ms: 20,
      reconnect_max_ms: 100,
    }, {
      fetch: async (input, init) => {
        if (!String(input).includes(LOOKUP)) return await fetch(input, init);
        lookups.sent++;
        lookups.inFlight++;
        lookups.maxInFlight = Math.max(lookups.maxInFlight, lookups.inFlight);
        try {
          if (held !== null) await held.promise;
          const response = await fetch(input, init);
          if (heldAnswers === null) return response;
          // Alpaca answered (the order as it stands now); the answer travels slowly.
          const body = await response.text();
          lookups.answersHeld++;
          await heldAnswers.promise;
          return new Response(body, { status: response.status, headers: response.headers });
        } finally {
          lookups.inFlight--;
        }
      },
    });
  const makeEngine = (broker: AlpacaBroker) =>
    new ExecutionEngine({
      sql: db.sql,
      brokers: new Map([["alpaca", broker]]),
      cache,
      state,
      config: { risk: config.risk, execution: { ...config.execution, default_broker: "alpaca" } },
      publish: () => {},
      publishFill: () => Promise.resolve(),
      log: nullLogger,
      options: {
        submit_retry_initial_ms: 5,
        submit_retry_max_ms: 20,
        broker_retry_initial_ms: 20,
        broker_retry_max_ms: 200,
      },
    });
  const r: Rig = {
    sql: db.sql,
    fake,
    broker: makeBroker(),
    engine: null as unknown as ExecutionEngine,
    lookups,
    holdLookups: () => void (held = Promise.withResolvers<void>()),
    holdAnswers: () => void (heldAnswers = Promise.withResolvers<void>()),
    releaseLookups() {
      held?.resolve();
      held = null;
      heldAnswers?.resolve();
      heldAnswers = null;
    },
    async restart() {
      await r.engine.stop();
      await r.broker[Symbol.asyncDispose]();
      r.broker = makeBroker();
      r.engine = makeEngine(r.broker);
      await r.engine.start();
      await r.broker.start(AbortSignal.timeout(10_000));
      await r.engine.reconcile();
    },
    async [Symbol.asyncDispose]() {
      r.releaseLookups();
      await r.engine.stop();
      await r.broker[Symbol.asyncDispose]();
      await fake.stop();
      await db[Symbol.asyncDispose]();
    },
  };
  r.engine = makeEngine(r.broker);
  await r.engine.start();
  await r.broker.start(AbortSignal.timeout(10_000));
  return r;
}

async function restingBuy(r: Rig, id: string, qty = "10"): Promise<Order> {
  const [outcome] = await r.engine.processSignals([{
    body: {
      id,
      symbol: "AAPL",
      side: "buy",
      qty,
      type: "limit",
      limit_price: "50",
      time_in_force: "gtc",
      broker: "alpaca",
    },
    strategy: "alpaca_engine",
    source: "rest",
  }]);
  assert.ok(outcome?.status === "accepted", JSON.stringify(outcome));
  return await waitForOrder(r.sql, outcome.order.id, (o) => o.status === "submitted");
}

async function waitForOrder(
  sql: Sql,
  id: string,
  done: (order: Order) => boolean,
  ms = 5_000,
): Promise<Order> {
  let order = await getOrder(sql, id);
  try {
    await waitFor(async () => done(order = await getOrder(sql, id)), ms, `order ${id}`);
  } catch (error) {
    throw new Error(`order ${id} is ${order.status} with ${order.filled_qty} filled`, {
      cause: error,
    });
  }
  return order;
}

async function fillsOf(sql: Sql, orderId: string) {
  return (await listFills(sql, { order_id: orderId, limit: 1000 })).items
    .sort((a, b) => Number(a.id) - Number(b.id));
}

/** Cuts the stream and keeps it out; resolves once the adapter noticed. */
async function cutStream(r: Rig): Promise<void> {
  const before = r.broker.streamStatus().reconnects;
  r.fake.refuseStream();
  r.fake.dropStream();
  await waitFor(() => r.broker.streamStatus().reconnects > before, 10_000, "stream lost");
}

/** Lets the stream back in; resolves once the adapter listens again. */
async function restoreStream(r: Rig): Promise<void> {
  r.fake.acceptStream();
  await waitFor(
    () => r.broker.streamStatus().state === "listening" && r.fake.listeners() === 1,
    10_000,
    "stream back",
  );
}

/** Cancels an order at the fake directly, as a user on Alpaca's dashboard would. */
async function cancelAtAlpaca(r: Rig, clientOrderId: string): Promise<void> {
  const id = r.fake.order(clientOrderId)!.id;
  const res = await fetch(`${r.fake.baseUrl}/v2/orders/${id}`, {
    method: "DELETE",
    headers: {
      "APCA-API-KEY-ID": FAKE_ALPACA_KEY_ID,
      "APCA-API-SECRET-KEY": FAKE_ALPACA_SECRET_KEY,
    },
  });
  await res.body?.cancel();
  assert.equal(res.status, 204);
}

Deno.test("alpaca engine: a fill missed during a stream gap is recorded when the post-reconnect lookup is rate limited (429)", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "gap-429");
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "10", "50"); // Alpaca replays nothing of this.
  // Alpaca's 429 for the one lookup the reconciliation after the reconnect makes.
  r.fake.failNext(1, { status: 429, route: `GET ${LOOKUP}` });
  const sent = r.lookups.sent;
  await restoreStream(r);
  const filled = await waitForOrder(r.sql, order.id, (o) => o.status === "filled");
  assert.equal(filled.filled_qty, "10.00000000");
  assert.equal(r.lookups.sent - sent, 2, "the refused lookup, then its retry");
  assert.deepEqual((await fillsOf(r.sql, order.id)).map((f) => [f.broker_fill_id, f.qty]), [
    ["reconcile-10", "10.00000000"],
  ]);
});

Deno.test("alpaca engine: failed reconciliation lookups are retried a few at a time until each succeeds", async () => {
  await using r = await rig();
  const orders = [];
  for (let i = 0; i < 6; i++) orders.push(await restingBuy(r, `retry-${i}`));
  await cutStream(r);
  for (const order of orders) r.fake.fillOrder(order.client_order_id, "10", "50");
  // Every lookup of the reconciliation is refused, and the first two of the retries.
  r.fake.failNext(orders.length + 2, { status: 429, route: `GET ${LOOKUP}` });
  const report = await r.engine.reconcile({ broker: "alpaca" });
  assert.equal(report.failed, orders.length);
  r.lookups.maxInFlight = r.lookups.inFlight;
  for (const order of orders) {
    await waitForOrder(r.sql, order.id, (o) => o.status === "filled", 10_000);
  }
  assert.ok(r.lookups.maxInFlight <= 4, `${r.lookups.maxInFlight} retried lookups at once`);
  await r.engine.idle();
  // Once every lookup succeeded, nothing is looked up again.
  const sent = r.lookups.sent;
  await r.engine.reconcile({ broker: "alpaca" });
  assert.equal(r.lookups.sent, sent, "no order is open any more");
});

Deno.test("alpaca engine: a cancel landing while the post-reconnect lookup is in flight keeps the fill made during the gap", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "gap-cancel");
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "4", "50"); // a partial fill while nobody listens
  r.holdLookups(); // the reconciliation's lookup is slow: it succeeds, late
  const sent = r.lookups.sent;
  await restoreStream(r);
  await waitFor(() => r.lookups.sent > sent, 5_000, "the reconciliation's lookup");
  // Meanwhile the order is cancelled: the `canceled` update carries the order with filled_qty 4.
  await cancelAtAlpaca(r, order.client_order_id);
  const cancelled = await waitForOrder(r.sql, order.id, (o) => o.status === "cancelled");
  assert.equal(cancelled.filled_qty, "4.00000000");
  assert.equal(cancelled.avg_fill_price, "50.00000000");
  r.releaseLookups();
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
  await r.engine.reconcile();
  assert.equal((await getOrder(r.sql, order.id)).filled_qty, "4.00000000");
  assert.deepEqual((await fillsOf(r.sql, order.id)).map((f) => [f.broker_fill_id, f.qty]), [
    ["reconcile-4", "4.00000000"],
  ]);
  assert.deepEqual(await listUnresolvedAlerts(r.sql), []);
});

Deno.test("alpaca engine: an expiry after a stream gap records the missed fills at the price the averages give", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "gap-expire");
  r.fake.fillOrder(order.client_order_id, "2", "49"); // seen: 2 @ 49
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "2.00000000");
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "1", "50.5"); // missed: 3 more, 153 in all
  r.fake.fillOrder(order.client_order_id, "2", "51.25");
  r.holdLookups(); // no reconciliation gets there first
  await restoreStream(r);
  r.fake.expireOrder(order.client_order_id); // filled_qty 5, filled_avg_price (98 + 153) / 5
  const expired = await waitForOrder(r.sql, order.id, (o) => o.status === "expired");
  assert.equal(expired.filled_qty, "5.00000000");
  assert.equal(expired.avg_fill_price, "50.20000000");
  const fills = await fillsOf(r.sql, order.id);
  assert.deepEqual(fills.slice(1).map((f) => [f.broker_fill_id, f.qty, f.price]), [
    ["reconcile-5", "3.00000000", "51.00000000"], // (50.2 × 5 − 2 × 49) / 3, exact
  ]);
  r.releaseLookups();
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
  assert.equal((await fillsOf(r.sql, order.id)).length, 2);
  assert.deepEqual(await listUnresolvedAlerts(r.sql), []);
});

Deno.test("alpaca engine: a catch-up for an order that closed while its lookup was in flight is checked, not dropped", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "closed-meanwhile");
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "4", "50"); // missed
  r.holdLookups();
  const sent = r.lookups.sent;
  await restoreStream(r);
  await waitFor(() => r.lookups.sent > sent, 5_000, "the reconciliation's lookup");
  // A final update that says nothing of the fills (a broker that does not send them).
  const fakeOrder = r.fake.order(order.client_order_id)!;
  r.fake.sendRaw(JSON.stringify({
    stream: "trade_updates",
    data: {
      event: "canceled",
      timestamp: new Date().toISOString(),
      order: {
        id: fakeOrder.id,
        client_order_id: fakeOrder.client_order_id,
        symbol: "AAPL",
        side: "buy",
        qty: "10",
        status: "canceled",
      },
    },
  }));
  await waitForOrder(r.sql, order.id, (o) => o.status === "cancelled");
  r.releaseLookups();
  // Alpaca's answer (4 filled) is compared with the closed order: the 4 are reported.
  let alerts: Awaited<ReturnType<typeof listUnresolvedAlerts>> = [];
  await waitFor(
    async () => (alerts = await listUnresolvedAlerts(r.sql)).length > 0,
    5_000,
    "an alert about the fill the closed order cannot take",
  );
  assert.ok(
    alerts.some((alert) => JSON.stringify(alert).includes("reconcile-4")),
    JSON.stringify(alerts),
  );
});

Deno.test("alpaca engine: after a restart, a partial_fill without an event qty counts what the cumulative filled_qty adds", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "restart-qtyless", "20");
  r.fake.fillOrder(order.client_order_id, "4", "50");
  await waitForOrder(r.sql, order.id, (o) => o.status === "partially_filled");
  await r.restart(); // a new process: a fresh adapter, which has seen no fill of this order
  const fakeOrder = r.fake.order(order.client_order_id)!;
  // Alpaca's documented partial_fill carries timestamp, price and position_qty: no `qty`.
  const partialFill = (filled: string, executionId: string) =>
    JSON.stringify({
      stream: "trade_updates",
      data: {
        event: "partial_fill",
        execution_id: executionId,
        price: "50",
        position_qty: filled,
        timestamp: new Date().toISOString(),
        order: {
          id: fakeOrder.id,
          client_order_id: fakeOrder.client_order_id,
          symbol: "AAPL",
          asset_class: "us_equity",
          side: "buy",
          qty: "20",
          filled_qty: filled,
          filled_avg_price: "50",
          status: "partially_filled",
          submitted_at: fakeOrder.submitted_at,
          updated_at: new Date().toISOString(),
        },
      },
    });
  r.fake.sendRaw(partialFill("4", "exec-seen-before")); // the 4 counted before the restart
  r.fake.sendRaw(partialFill("7", "exec-new")); // 3 more
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty !== "4.00000000");
  await r.engine.idle();
  const stored = await getOrder(r.sql, order.id);
  assert.equal(stored.filled_qty, "7.00000000");
  assert.deepEqual((await fillsOf(r.sql, order.id)).map((f) => f.qty), [
    "4.00000000",
    "3.00000000",
  ]);
  assert.equal(r.engine.stats().fills_counted_before, 1);
});

/** Alpaca's documented `partial_fill` of `order` at the fake: timestamp, price, position_qty — no `qty`. */
function qtylessPartialFill(
  r: Rig,
  clientOrderId: string,
  fill: { execution_id: string; price: string; filled_qty: string; filled_avg_price: string },
): string {
  const fakeOrder = r.fake.order(clientOrderId)!;
  return JSON.stringify({
    stream: "trade_updates",
    data: {
      event: "partial_fill",
      execution_id: fill.execution_id,
      price: fill.price,
      position_qty: fill.filled_qty,
      timestamp: new Date().toISOString(),
      order: {
        id: fakeOrder.id,
        client_order_id: fakeOrder.client_order_id,
        symbol: "AAPL",
        asset_class: "us_equity",
        side: "buy",
        qty: fakeOrder.qty.toString(),
        filled_qty: fill.filled_qty,
        filled_avg_price: fill.filled_avg_price,
        status: "partially_filled",
        submitted_at: fakeOrder.submitted_at,
        updated_at: new Date().toISOString(),
      },
    },
  });
}

Deno.test("alpaca engine: a partial_fill without an event qty after a stream gap prices the executions missed so the order's average is Alpaca's", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "qtyless-gap");
  r.fake.fillOrder(order.client_order_id, "2", "49"); // seen: 2 @ 49
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "2.00000000");
  await cutStream(r);
  // Executions while nobody listens (Alpaca replays none of them).
  r.fake.fillOrder(order.client_order_id, "1", "50.5");
  r.fake.fillOrder(order.client_order_id, "2", "51.25");
  // The execution whose update arrives once the stream is back: 1 @ 52.
  r.fake.fillOrder(order.client_order_id, "1", "52");
  const fakeOrder = r.fake.order(order.client_order_id)!;
  assert.equal(fakeOrder.filled_qty.toString(), "6");
  assert.equal(fakeOrder.filled_avg_price!.toString(), "50.5"); // (98 + 50.5 + 102.5 + 52) / 6
  r.holdLookups(); // the reconciliation's lookup answers after the stream's update
  await restoreStream(r);
  r.fake.sendRaw(qtylessPartialFill(r, order.client_order_id, {
    execution_id: "exec-after-gap",
    price: "52",
    filled_qty: "6",
    filled_avg_price: "50.5",
  }));
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "6.00000000");
  r.releaseLookups();
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
  const stored = await getOrder(r.sql, order.id);
  assert.equal(stored.filled_qty, "6.00000000");
  // Alpaca's filled_avg_price is 50.5: the fills bought 6 shares for 303, not more.
  assert.equal(stored.avg_fill_price, "50.50000000");
  const fills = await fillsOf(r.sql, order.id);
  assert.deepEqual(fills.map((f) => [f.qty, f.price]), [
    ["2.00000000", "49.00000000"],
    ["4.00000000", "51.25000000"], // the 3 missed and this one: (50.5 × 6 − 2 × 49) / 4
  ]);
  assert.equal(fills[1]!.broker_fill_id, "exec-after-gap");
  assert.deepEqual(await listUnresolvedAlerts(r.sql), []);
});

Deno.test("alpaca engine: after a restart, a partial_fill without an event qty prices what the fills do not count from the order's averages", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "qtyless-restart");
  r.fake.fillOrder(order.client_order_id, "2", "49");
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "2.00000000");
  await r.restart(); // a new process: its adapter has seen no fill of this order
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "1", "50.5"); // missed
  r.fake.fillOrder(order.client_order_id, "2", "51.25"); // missed
  r.fake.fillOrder(order.client_order_id, "1", "52"); // its update arrives, without qty
  r.holdLookups();
  await restoreStream(r);
  // The adapter knows nothing before it: the fill stands for all 6 at Alpaca's average.
  r.fake.sendRaw(qtylessPartialFill(r, order.client_order_id, {
    execution_id: "exec-after-restart",
    price: "52",
    filled_qty: "6",
    filled_avg_price: "50.5",
  }));
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "6.00000000");
  r.releaseLookups();
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
  const stored = await getOrder(r.sql, order.id);
  assert.equal(stored.avg_fill_price, "50.50000000");
  const fills = await fillsOf(r.sql, order.id);
  assert.deepEqual(fills.slice(1).map((f) => [f.broker_fill_id, f.qty, f.price]), [
    ["exec-after-restart", "4.00000000", "51.25000000"], // (50.5 × 6 − 98) / 4
  ]);
  assert.deepEqual(await listUnresolvedAlerts(r.sql), []);
});

Deno.test("alpaca engine: a reconciliation answer older than a fill the stream delivered meanwhile loses no fill", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "stale-catchup");
  r.fake.fillOrder(order.client_order_id, "2", "49"); // seen: 2 @ 49
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "2.00000000");
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "1", "50.5"); // missed while nobody listens
  r.fake.fillOrder(order.client_order_id, "2", "51.25"); // missed: Alpaca's filled_qty is 5
  r.holdAnswers(); // the reconciliation's lookup reaches Alpaca (filled_qty 5); its answer is slow
  await restoreStream(r);
  await waitFor(() => r.lookups.answersHeld > 0, 5_000, "the lookup answered by Alpaca");
  // Meanwhile a new execution, streamed live: partial_fill qty 1 @ 52, filled_qty 6.
  r.fake.fillOrder(order.client_order_id, "1", "52");
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "6.00000000");
  r.releaseLookups(); // the answer (filled_qty 5, before the 52 fill) arrives now
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
  // Alpaca has 6 filled at (98 + 50.5 + 102.5 + 52) / 6 = 50.5.
  const six = await getOrder(r.sql, order.id);
  assert.equal(`${six.filled_qty} ${six.avg_fill_price}`, "6.00000000 50.50000000");
  const fills = await fillsOf(r.sql, order.id);
  assert.deepEqual(fills.slice(1).map((f) => [f.qty, f.price]), [
    ["3.00000000", "51.00000000"], // the 3 missed, recorded before the 52 fill: (303 − 52 − 98) / 3
    ["1.00000000", "52.00000000"],
  ]);
  // The rest executes: Alpaca's `fill` (qty 4, filled_qty 10) completes the order.
  r.fake.fillOrder(order.client_order_id, "4", "53");
  const filled = await waitForOrder(r.sql, order.id, (o) => o.status === "filled");
  assert.equal(filled.filled_qty, "10.00000000");
  assert.deepEqual(await listUnresolvedAlerts(r.sql), []);
});

Deno.test("alpaca engine: the kill switch's cancel_open retries a cancel Alpaca rate limited (429) and names it", async () => {
  await using r = await rig();
  const orders = [
    await restingBuy(r, "kill-1"),
    await restingBuy(r, "kill-2"),
    await restingBuy(r, "kill-3"),
  ];
  r.fake.failNext(1, { status: 429, route: "DELETE /v2/orders/" });
  const state = await r.engine.setKillSwitch({ active: true, cancel_open: true, reason: "drill" });
  assert.equal(state.cancel_requested, 2);
  for (const order of orders) {
    await waitForOrder(r.sql, order.id, (o) => o.status === "cancelled");
    assert.equal(r.fake.order(order.client_order_id)!.status, "canceled");
  }
  // The response and an alert name the order whose cancel was refused at first.
  assert.equal(state.not_cancelled.length, 1);
  const [refused] = state.not_cancelled;
  assert.ok(orders.some((o) => o.id === refused!.order_id));
  assert.equal(refused!.retrying, true);
  assert.match(refused!.reason, /429/);
  const alerts = await listUnresolvedAlerts(r.sql);
  assert.ok(
    alerts.some((alert) =>
      alert.severity === "critical" && alert.message.includes(refused!.order_id)
    ),
    JSON.stringify(alerts),
  );
});

Deno.test("alpaca engine: health is degraded while Alpaca refuses the trade_updates stream's keys", async () => {
  await using nats = await startNatsServer();
  await using fake = await startAlpacaTradingServer();
  let authorized = true;
  let refusedAuths = 0;
  const listening = new Set<FakeSocket>();
  // Alpaca's /stream handshake, able to start refusing the keys; REST goes to the fake.
  await using alpaca = await startWsServer({
    http: async (request) => {
      const url = new URL(request.url);
      const body = request.method === "GET" || request.method === "HEAD"
        ? null
        : await request.text();
      return await fetch(`${fake.baseUrl}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body,
      });
    },
    onMessage: (socket, text) => {
      const message = JSON.parse(text);
      if (message.action === "authenticate") {
        socket.send(JSON.stringify({
          stream: "authorization",
          data: { status: authorized ? "authorized" : "unauthorized", action: message.action },
        }));
        if (!authorized) {
          refusedAuths++;
          socket.close(1000, "unauthorized");
        }
      } else if (message.action === "listen") {
        listening.add(socket);
        socket.send(JSON.stringify({ stream: "listening", data: { streams: ["trade_updates"] } }));
      }
    },
    onClose: (socket) => void listening.delete(socket),
  });
  await using engine = await startEngineProcess({
    NATS_URL: nats.url,
    TRADEWIRE_BROKERS__ALPACA__ENABLED: "true",
    TRADEWIRE_BROKERS__ALPACA__BASE_URL: alpaca.httpUrl,
    TRADEWIRE_BROKERS__ALPACA__KEY_ID: FAKE_ALPACA_KEY_ID,
    TRADEWIRE_BROKERS__ALPACA__SECRET_KEY: FAKE_ALPACA_SECRET_KEY,
  });
  const ok = await waitForJson(
    engine,
    "/api/health/detailed",
    (body) => body.status === "ok",
    60_000,
  );
  await waitFor(() => listening.size === 1, 30_000, "the engine listens to trade_updates");

  // The keys are revoked: the connection is lost and every reconnect is refused.
  authorized = false;
  for (const socket of alpaca.openSockets()) socket.drop();
  await waitFor(() => refusedAuths >= 1, 30_000, "a refused reconnect");
  const body = await waitForJson(
    engine,
    "/api/health/detailed",
    (b, status) => b.status === "degraded" && status === 503,
    10_000,
  );
  assert.equal((ok.brokers as Record<string, { state: string }>).alpaca?.state, "listening");
  const problems = body.problems as string[];
  assert.ok(
    problems.some((p) => p.startsWith("broker alpaca: event stream refused the API keys")),
    JSON.stringify(problems),
  );
  const stream = (body.brokers as Record<string, Record<string, unknown>>).alpaca!;
  assert.equal(stream.auth_error, true);
  assert.notEqual(stream.state, "listening");
});

Deno.test("alpaca engine: a signal batch waits at most market_clock_wait_ms for Alpaca's clock while Alpaca's REST API does not answer", async () => {
  await using r = await rig({
    risk: (config) => ({
      ...noRiskLimits(config),
      symbols: { AAPL: { market_hours: "us_equity" } },
    }),
  });
  // Alpaca's REST API stops answering the clock (a network black hole): each request times out
  // after request_timeout_ms (2 s here, 10 s by default).
  r.fake.hangNext(100, { route: "GET /v2/clock" });
  const signal = (id: string, symbol: string) => ({
    body: {
      id,
      symbol,
      side: "buy",
      qty: "1",
      type: "limit",
      limit_price: "50",
      time_in_force: "gtc",
      broker: "alpaca",
    },
    strategy: "alpaca_engine",
    source: "rest" as const,
  });
  const timings: number[] = [];
  for (const n of [1, 2, 3]) {
    const started = performance.now();
    // A crypto signal that needs no market clock, batched with a US stock's signal that does.
    const outcomes = await r.engine.processSignals([
      signal(`clock-btc-${n}`, "BTC-USD"),
      signal(`clock-aapl-${n}`, "AAPL"),
    ]);
    timings.push(Math.round(performance.now() - started));
    assert.equal(outcomes[0]?.status, "accepted", JSON.stringify(outcomes[0]));
  }
  // The first batch waits DEFAULT_MARKET_CLOCK_WAIT_MS (500 ms), then the calendar decides; the
  // fetch in flight, then its failure (kept DEFAULT_MARKET_CLOCK_RETRY_MS), hold no other batch.
  assert.ok(timings[0]! < 1_000, `the first batch waited ${timings[0]} ms for Alpaca's clock`);
  assert.ok(
    timings.slice(1).every((ms) => ms < 450),
    `later batches waited ${timings.slice(1).join(" ms, ")} ms for Alpaca's clock`,
  );
  // A batch with no US stock's order does not wait for the clock at all.
  const started = performance.now();
  const [crypto] = await r.engine.processSignals([signal("clock-btc-only", "BTC-USD")]);
  assert.equal(crypto?.status, "accepted", JSON.stringify(crypto));
  assert.ok(performance.now() - started < 450);
});

/**
 * 2 @ 49 seen by the adapter, then a gap in which 1 @ 50.5 and 1 @ 51.25 execute, which the
 * reconnect's reconciliation counts (`reconcile-4`): the order has 4 filled when it returns.
 */
async function fillWithReconciledGap(r: Rig, order: Order): Promise<void> {
  r.fake.fillOrder(order.client_order_id, "2", "49"); // seen by the adapter: 2 @ 49
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "2.00000000");
  // A first gap: 1 @ 50.5 and 1 @ 51.25 missed; the reconnect's reconciliation counts them.
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "1", "50.5");
  r.fake.fillOrder(order.client_order_id, "1", "51.25");
  await restoreStream(r);
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "4.00000000");
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
}

Deno.test("alpaca engine: a partial_fill without an event qty, part of it counted by a reconnect's reconciliation, prices the rest so the order's average is Alpaca's", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "qtyless-after-catchup");
  await fillWithReconciledGap(r, order);
  // A second gap: 2 @ 52 executes; its update arrives without qty once the stream is back.
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "2", "52");
  const fakeOrder = r.fake.order(order.client_order_id)!;
  assert.equal(fakeOrder.filled_qty.toString(), "6");
  assert.equal(fakeOrder.filled_avg_price!.toString(), "50.625"); // (98 + 50.5 + 51.25 + 104) / 6
  r.holdLookups();
  await restoreStream(r);
  r.fake.sendRaw(qtylessPartialFill(r, order.client_order_id, {
    execution_id: "exec-after-catchup",
    price: "52",
    filled_qty: "6",
    filled_avg_price: "50.625",
  }));
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "6.00000000");
  r.releaseLookups();
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
  const fills = await fillsOf(r.sql, order.id);
  const stored = await getOrder(r.sql, order.id);
  const shown = JSON.stringify(fills.map((f) => [f.broker_fill_id, f.qty, f.price]));
  assert.equal(stored.avg_fill_price, "50.62500000", `Alpaca's filled_avg_price; fills ${shown}`);
  // The 2 the reconciliation did not count: Alpaca's 6 × 50.625 less the 4 counted (199.75), ÷ 2
  // = 52 — not the adapter's average of the 4 it thought new (51.4375).
  const last = fills.at(-1)!;
  assert.deepEqual([last.broker_fill_id, last.qty, last.price], [
    "exec-after-catchup",
    "2.00000000",
    "52.00000000",
  ], shown);
});

Deno.test("alpaca engine: executions missed before a fill, part of them counted by a reconnect's reconciliation, are priced so the order's average is Alpaca's", async () => {
  await using r = await rig();
  const order = await restingBuy(r, "missed-after-catchup");
  await fillWithReconciledGap(r, order);
  // A second gap: 2 @ 52 missed; the next execution's update (1 @ 53, its own qty) shows them.
  await cutStream(r);
  r.fake.fillOrder(order.client_order_id, "2", "52");
  r.holdLookups();
  await restoreStream(r);
  r.fake.fillOrder(order.client_order_id, "1", "53");
  const fakeOrder = r.fake.order(order.client_order_id)!;
  assert.equal(fakeOrder.filled_qty.toString(), "7");
  await waitForOrder(r.sql, order.id, (o) => o.filled_qty === "7.00000000");
  r.releaseLookups();
  await waitFor(() => r.lookups.inFlight === 0, 5_000, "the lookup answered");
  await r.engine.idle();
  const fills = await fillsOf(r.sql, order.id);
  const shown = JSON.stringify(fills.map((f) => [f.broker_fill_id, f.qty, f.price]));
  const stored = await getOrder(r.sql, order.id);
  // (98 + 50.5 + 51.25 + 104 + 53) / 7
  assert.equal(
    stored.avg_fill_price,
    toDb(fakeOrder.filled_avg_price!),
    `Alpaca's filled_avg_price; fills ${shown}`,
  );
  // The adapter's fill for the 4 it missed is trimmed to the 2 not counted, at 52 — not at the
  // adapter's average of the 4 (51.4375).
  assert.deepEqual(fills.map((f) => [f.qty, f.price]).slice(-2), [
    ["2.00000000", "52.00000000"],
    ["1.00000000", "53.00000000"],
  ], shown);
});
