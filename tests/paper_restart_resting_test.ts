/**
 * Resting paper orders across a full restart (engine and paper broker both new): each is
 * resubmitted once, rests once at the new broker (three `clean.md` subscriptions for the
 * symbol), and fills once on the NATS prices.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { type PaperBroker, paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { getOrder, listFills } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import { btcUsdtTop } from "./_execution_engine.ts";

Deno.test("resting paper orders are resubmitted once after a full restart, and fill once", async () => {
  await using db = await migratedDatabase();
  const nc = await connect({ servers: "127.0.0.1:4222" });
  const prefix = `t${crypto.randomUUID().slice(0, 8)}.`;
  const base = await loadConfig({ args: [], env: {} });
  const cache = new LatestCache();
  cache.update([btcUsdtTop()]);
  const state = new PortfolioState({ starting_cash: "1000000" });
  await state.load(db.sql);
  const newBroker = () =>
    paperBroker({
      cache,
      nats: nc,
      subject_prefix: prefix,
      options: base.brokers.paper,
      max_price_age_ms: base.execution.max_price_age_ms,
    });
  const newEngine = (b: PaperBroker) =>
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
  const e1 = newEngine(b1);
  await e1.start();
  const ids: string[] = [];
  for (
    const body of [
      { id: "L", type: "limit", limit_price: "49000", exchange: "binance" },
      { id: "S", type: "stop", stop_price: "51000", exchange: "binance" },
    ]
  ) {
    const [o] = await e1.processSignals([{
      body: { symbol: "BTC-USDT", side: "buy", qty: "0.1", time_in_force: "gtc", ...body },
      strategy: "restart",
      source: "rest",
    }]);
    assert.equal(o!.status, "accepted", JSON.stringify(o));
    ids.push(o!.status === "accepted" ? o!.order.id : "");
  }
  for (const id of ids) {
    await waitFor(async () => (await getOrder(db.sql, id)).status === "submitted", 5_000, "sub");
  }
  assert.equal(b1.stats().subscriptions, 3);
  await e1.stop();
  await b1[Symbol.asyncDispose]();
  assert.equal(b1.stats().subscriptions, 0);

  const b2 = newBroker();
  const e2 = newEngine(b2);
  try {
    await e2.start();
    await e2.reconcile();
    await e2.settled();
    await b2.settled();
    assert.equal(b2.stats().resting, 2);
    assert.equal(b2.stats().subscriptions, 3);
    // The market: first down through the limit, then up through the stop.
    nc.publish(
      `${prefix}clean.md.top.binance.BTC-USDT`,
      JSON.stringify([btcUsdtTop({ bidPrice: "48990", askPrice: "48995" })]),
    );
    await waitFor(() => b2.stats().fills === 1, 3_000, "limit fill");
    nc.publish(
      `${prefix}clean.md.top.binance.BTC-USDT`,
      JSON.stringify([btcUsdtTop({ bidPrice: "51000", askPrice: "51005" })]),
    );
    await waitFor(() => b2.stats().fills === 2, 3_000, "stop fill");
    await b2.settled();
    await waitFor(
      async () => {
        for (const id of ids) if ((await getOrder(db.sql, id)).status !== "filled") return false;
        return true;
      },
      5_000,
      "both filled",
    );
    for (const id of ids) {
      assert.equal((await listFills(db.sql, { order_id: id, limit: 5 })).items.length, 1);
    }
    assert.equal(b2.stats().subscriptions, 0);
  } finally {
    await e2.stop();
    await b2[Symbol.asyncDispose]();
    await nc.close();
  }
});
