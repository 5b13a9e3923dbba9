/**
 * A cancel asked for while an order's submit is on its way to the broker (a
 * kill switch's `cancel_open`, or DELETE /orders/{id} answered 202) is sent
 * once the submit returns. When the broker cannot answer that cancel
 * (unreachable, Alpaca's 429) it is asked again with backoff until it is sent
 * or the order closes; when the broker refuses it, a critical alert names the
 * order. It is never dropped, leaving the order open at the broker.
 */

import assert from "node:assert/strict";
import { alpacaBroker } from "../brokers/alpaca.ts";
import { BrokerRejectedError, BrokerUnavailableError } from "../brokers/broker.ts";
import { loadConfig } from "../config/mod.ts";
import { getOrder, listUnresolvedAlerts } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { scratchEngine, SlowSubmitBroker } from "./_execution_engine.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";

/** A {@linkcode SlowSubmitBroker} whose next cancels fail: unreachable, or refused. */
class FlakyCancelBroker extends SlowSubmitBroker {
  /** The next cancels failing as unreachable. */
  cancelFailures = 0;
  /** The next cancels refused (after the unreachable ones). */
  cancelRefusals = 0;
  /** Cancels asked for. */
  cancels = 0;
  override cancel(coid: string): Promise<void> {
    this.cancels++;
    if (this.cancelFailures > 0) {
      this.cancelFailures--;
      return Promise.reject(new BrokerUnavailableError("connection refused"));
    }
    if (this.cancelRefusals > 0) {
      this.cancelRefusals--;
      return Promise.reject(new BrokerRejectedError("order is not cancelable"));
    }
    return super.cancel(coid);
  }
}

const LIMIT = {
  symbol: "BTC-USDT",
  side: "buy",
  qty: "0.1",
  type: "limit",
  limit_price: "49000",
  time_in_force: "gtc",
};

/** A scratch engine whose broker holds submits, with a resting limit order's submit held. */
async function heldSubmit(id: string) {
  const h = await scratchEngine({
    broker: (p) => new FlakyCancelBroker(p),
    options: { broker_retry_initial_ms: 20, broker_retry_max_ms: 50 },
  });
  await h.engine.start();
  h.broker.holdSubmits = true;
  const [outcome] = await h.engine.processSignals([{
    body: { ...LIMIT, id },
    strategy: "cancel",
    source: "rest",
  }]);
  assert.ok(outcome?.status === "accepted", JSON.stringify(outcome));
  await waitFor(() => h.broker.submitsStarted === 1, 5_000, "submit started");
  return { h, id: outcome.order.id };
}

/** The order's status once it is `wanted`, or its last status after `ms`. */
async function statusWithin(
  sql: Parameters<typeof getOrder>[0],
  id: string,
  wanted: string,
  ms: number,
): Promise<string> {
  let status = "";
  try {
    await waitFor(async () => (status = (await getOrder(sql, id)).status) === wanted, ms, wanted);
  } catch { /* the caller asserts */ }
  return status;
}

Deno.test("kill switch cancel_open during an in-flight submit: a cancel the broker could not answer is asked again until the order is cancelled", async () => {
  const { h, id } = await heldSubmit("ks-a");
  await using _ = h;
  h.broker.cancelFailures = 1;
  const state = await h.engine.setKillSwitch({ active: true, cancel_open: true, reason: "drill" });
  assert.equal(state.cancel_requested, 1, "counted as asked for");
  assert.deepEqual(state.not_cancelled, []);
  h.broker.releaseSubmits();
  const status = await statusWithin(h.db.sql, id, "cancelled", 3_000);
  assert.equal(
    status,
    "cancelled",
    `the kill switch reported the cancel as requested, but the order is still ${status} ` +
      `(broker cancels tried: ${h.broker.cancels}, paper open orders: ${
        (await h.paper.openOrders()).length
      })`,
  );
  assert.ok(h.broker.cancels >= 2, `asked again (cancels: ${h.broker.cancels})`);
  assert.deepEqual(await h.paper.openOrders(), []);
});

Deno.test("DELETE during an in-flight submit: a cancel the broker could not answer is asked again until the order is cancelled", async () => {
  const { h, id } = await heldSubmit("del-a");
  await using _ = h;
  h.broker.cancelFailures = 1;
  const asked = await h.engine.cancelOrder(id); // 202: cancellation requested
  assert.equal(asked.status, "pending");
  h.broker.releaseSubmits();
  const status = await statusWithin(h.db.sql, id, "cancelled", 3_000);
  assert.equal(
    status,
    "cancelled",
    `DELETE answered 202, but the cancel sent after the submit failed and was dropped: order ` +
      `${status}, ${(await h.paper.openOrders()).length} open at the broker, cancels tried ` +
      h.broker.cancels,
  );
  assert.ok(h.broker.cancels >= 2, `asked again (cancels: ${h.broker.cancels})`);
});

Deno.test("DELETE during an in-flight submit: a cancel the broker refuses raises a critical alert naming the order", async () => {
  const { h, id } = await heldSubmit("del-b");
  await using _ = h;
  h.broker.cancelRefusals = 1;
  await h.engine.cancelOrder(id);
  h.broker.releaseSubmits();
  let alerts: Awaited<ReturnType<typeof listUnresolvedAlerts>> = [];
  try {
    await waitFor(
      async () => (alerts = await listUnresolvedAlerts(h.db.sql)).length > 0,
      3_000,
      "alert",
    );
  } catch { /* asserted below */ }
  assert.equal(alerts.length, 1, `the refused cancel was dropped silently: no alert`);
  assert.equal(alerts[0]!.severity, "critical");
  assert.match(alerts[0]!.message, new RegExp(`not \\(yet\\) cancelled: ${id}$`));
  assert.match(alerts[0]!.message, /cancelled by request/);
  await h.engine.idle();
  assert.equal((await getOrder(h.db.sql, id)).status, "submitted", "still open at the broker");
  assert.equal(h.broker.cancels, 1, "a refused cancel is not asked again");
});

Deno.test("alpaca: kill switch cancel_open during a hanging submit, then a 429 on the cancel: the order is still cancelled", async () => {
  await using db = await migratedDatabase();
  await using fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  const base = await loadConfig({ args: [], env: {} });
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  await using broker = alpacaBroker({
    base_url: fake.baseUrl,
    key_id: FAKE_ALPACA_KEY_ID,
    secret_key: FAKE_ALPACA_SECRET_KEY,
    request_timeout_ms: 1_000,
    handshake_timeout_ms: 2_000,
    reconnect_initial_ms: 20,
    reconnect_max_ms: 100,
  });
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["alpaca", broker]]),
    cache: new LatestCache(),
    state,
    config: {
      risk: noRiskLimits(base),
      execution: { ...base.execution, default_broker: "alpaca" },
    },
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
  try {
    await engine.start();
    await broker.start(AbortSignal.timeout(10_000));
    // The order reaches Alpaca; its answer never comes (the client times out after 1 s).
    fake.hangNext(1, { route: "POST /v2/orders", after: true });
    const [outcome] = await engine.processSignals([{
      body: {
        id: "hang-1",
        symbol: "AAPL",
        side: "buy",
        qty: "10",
        type: "limit",
        limit_price: "50",
        time_in_force: "gtc",
        broker: "alpaca",
      },
      strategy: "cancel",
      source: "rest",
    }]);
    assert.ok(outcome?.status === "accepted", JSON.stringify(outcome));
    const id = outcome.order.id;
    const coid = outcome.order.client_order_id;
    await waitFor(() => fake.order(coid) !== undefined, 5_000, "the order placed at Alpaca");
    // The next cancel is rate limited.
    fake.failNext(1, { status: 429, route: "DELETE /v2/orders/" });
    const kill = await engine.setKillSwitch({ active: true, cancel_open: true, reason: "drill" });
    assert.equal(kill.cancel_requested, 1);
    assert.deepEqual(kill.not_cancelled, []);
    const status = await statusWithin(db.sql, id, "cancelled", 6_000);
    assert.equal(
      `${status} / alpaca ${fake.order(coid)?.status}`,
      "cancelled / alpaca canceled",
      `the 429 on the kill switch's cancel was dropped (Alpaca requests: ${
        fake.requests.map((r) => `${r.method} ${r.path.split("?")[0]}`).join(", ")
      })`,
    );
  } finally {
    await engine.stop();
  }
});
