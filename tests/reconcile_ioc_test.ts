/**
 * Reconciliation of ioc/fok orders its broker does not have: one stored past `pending` had its
 * one chance at the broker (the paper broker forgets its orders at a restart, and its
 * `cancelled` event may have been lost with the process), so it is closed as cancelled — never
 * submitted again to fill minutes or hours later at a price the strategy did not ask for. One
 * still `pending` never reached the broker and is submitted.
 */

import assert from "node:assert/strict";
import type { Broker, BrokerEvent } from "../brokers/broker.ts";
import { type PaperBroker, paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import {
  getOrder,
  insertSignalsAndOrders,
  listFills,
  unitOfWork,
  updateOrderStatus,
  upsertSymbols,
} from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { parseDecimal } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import { btcUsdtTop, scratchEngine } from "./_execution_engine.ts";

/** The paper broker, but its events never reach the engine (the process dies before). */
function deaf(inner: PaperBroker): Broker {
  return {
    name: inner.name,
    submit: (o) => inner.submit(o),
    cancel: (c) => inner.cancel(c),
    getOrder: (c) => inner.getOrder(c),
    openOrders: () => inner.openOrders(),
    onEvent: (_l: (e: BrokerEvent) => void | Promise<void>) => () => {},
    start: (s) => inner.start(s),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

Deno.test("an ioc order its paper broker cancelled, whose event was lost, is closed as cancelled after a restart, not submitted again", async () => {
  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const cache = new LatestCache();
  cache.update([btcUsdtTop()]); // 50000 / 50001
  const state = new PortfolioState({ starting_cash: "1000000" });
  await state.load(db.sql);
  const newBroker = () =>
    paperBroker({
      cache,
      options: base.brokers.paper,
      max_price_age_ms: base.execution.max_price_age_ms,
    });
  const newEngine = (b: Broker) =>
    new ExecutionEngine({
      sql: db.sql,
      brokers: new Map([["paper", b]]),
      cache,
      state,
      config: { risk: noRiskLimits(base), execution: base.execution },
      publish: () => {},
      publishFill: () => Promise.resolve(),
      log: nullLogger,
    });

  const b1 = newBroker();
  const e1 = newEngine(deaf(b1));
  await e1.start();
  const [o] = await e1.processSignals([{
    body: {
      id: "ioc-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "0.1",
      type: "limit",
      limit_price: "49000",
      time_in_force: "ioc",
    },
    strategy: "ioc",
    source: "rest",
  }]);
  const id = o!.status === "accepted" ? o!.order.id : "";
  await waitFor(async () => (await getOrder(db.sql, id)).status === "submitted", 5_000, "sub");
  const coid = (await getOrder(db.sql, id)).client_order_id;
  assert.equal((await b1.getOrder(coid))?.status, "cancelled");
  await e1.stop();
  await b1[Symbol.asyncDispose]();

  // Later, the process is back with a new paper broker; the market is now below the limit.
  cache.update([btcUsdtTop({ bidPrice: "48000", askPrice: "48001" })]);
  const b2 = newBroker();
  const e2 = newEngine(b2);
  try {
    await e2.start();
    const report = await e2.reconcile();
    await e2.settled();
    await b2.settled();
    assert.deepEqual({ submitted: report.submitted, updated: report.updated }, {
      submitted: 0,
      updated: 1,
    });
    const order = await getOrder(db.sql, id);
    const fills = (await listFills(db.sql, { order_id: id, limit: 5 })).items;
    assert.deepEqual(
      { status: order.status, reason: order.status_reason, fills: fills.length },
      {
        status: "cancelled",
        reason: "ioc order not at its broker when reconciled: not submitted again",
        fills: 0,
      },
    );
    assert.equal(await b2.getOrder(coid), null);
  } finally {
    await e2.stop();
    await b2[Symbol.asyncDispose]();
  }
});

Deno.test("reconciliation submits a pending ioc order and a submitted gtc one its broker lacks, and cancels a submitted fok one", async () => {
  await using h = await scratchEngine({ startingCash: "1000000" });
  await upsertSymbols(h.db.sql, [{ symbol: "BTC-USDT" }]);
  const orders = await unitOfWork(
    h.db.sql,
    (tx) =>
      insertSignalsAndOrders(
        tx,
        (["ioc", "fok", "gtc"] as const).map((tif) => ({
          signal: {
            strategy: "crash",
            client_signal_id: tif,
            source: "rest" as const,
            symbol: "BTC-USDT",
            payload: { id: tif },
          },
          outcome: {
            status: "accepted" as const,
            order: {
              symbol: "BTC-USDT",
              side: "buy" as const,
              qty: "0.1",
              type: "limit" as const,
              limit_price: "49000",
              time_in_force: tif,
              broker: "paper",
            },
          },
        })),
      ),
  );
  const [ioc, fok, gtc] = orders.map((r) => r.order!);
  // What a crashed engine left: the ioc order never sent, the fok and gtc ones sent to a paper
  // broker that is gone.
  await updateOrderStatus(h.db.sql, fok!.id, { from: "pending", to: "submitted" });
  await updateOrderStatus(h.db.sql, gtc!.id, { from: "pending", to: "submitted" });
  h.cache.update([btcUsdtTop({ bidPrice: "48000", askPrice: "48001" })]);

  await h.engine.start();
  const report = await h.engine.reconcile();
  assert.deepEqual({ submitted: report.submitted, updated: report.updated }, {
    submitted: 2,
    updated: 1,
  });
  await waitFor(
    async () => {
      for (const o of [ioc!, fok!, gtc!]) {
        if (!["filled", "cancelled"].includes((await getOrder(h.db.sql, o.id)).status)) {
          return false;
        }
      }
      return true;
    },
    5_000,
    "every order closed",
  );
  const outcome = async (orderId: string) => {
    const row = await getOrder(h.db.sql, orderId);
    const fills = (await listFills(h.db.sql, { order_id: orderId, limit: 5 })).items;
    return {
      status: row.status,
      reason: row.status_reason,
      fills: fills.map((f) => parseDecimal(f.price).toFixed()),
    };
  };
  assert.deepEqual(await outcome(ioc!.id), { status: "filled", reason: null, fills: ["48001"] });
  assert.deepEqual(await outcome(fok!.id), {
    status: "cancelled",
    reason: "fok order not at its broker when reconciled: not submitted again",
    fills: [],
  });
  assert.deepEqual(await outcome(gtc!.id), { status: "filled", reason: null, fills: ["48001"] });
});
