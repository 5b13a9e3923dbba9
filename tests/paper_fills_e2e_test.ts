/**
 * Paper fills end to end through the execution engine: the stored fill's price and commission,
 * and the order's average, are the hand-computed ones for market orders (slippage against the
 * order, the commission minimum) and a resting limit order (never beyond its limit).
 */

import assert from "node:assert/strict";
import { paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { getOrder, listFills } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { parseDecimal } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import { btcUsdtTop, primedCache } from "./_execution_engine.ts";

Deno.test("paper market and limit fills through the engine carry the hand-computed price and commission", async () => {
  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const cache = primedCache(); // 50000 / 50001 on binance
  const state = new PortfolioState({ starting_cash: "1000000" });
  await state.load(db.sql);
  await using paper = paperBroker({
    cache,
    options: { commission_bps: "10", commission_min: "1", slippage_bps: "5" },
    max_price_age_ms: base.execution.max_price_age_ms,
  });
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["paper", paper]]),
    cache,
    state,
    config: { risk: noRiskLimits(base), execution: base.execution },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    log: nullLogger,
  });
  await engine.start();
  try {
    const send = async (body: Record<string, unknown>) => {
      const [o] = await engine.processSignals([{ body, strategy: "fees", source: "rest" }]);
      assert.equal(o!.status, "accepted", JSON.stringify(o));
      return o!.status === "accepted" ? o!.order.id : "";
    };
    const settle = (id: string, status: string) =>
      waitFor(async () => (await getOrder(db.sql, id)).status === status, 5_000, status);
    const fillOf = async (id: string) => {
      const fills = (await listFills(db.sql, { order_id: id, limit: 5 })).items;
      return fills.map((f) => ({
        price: parseDecimal(f.price).toFixed(),
        fee: parseDecimal(f.commission).toFixed(),
      }));
    };

    // Market buy 0.1 @ ask 50001 × 1.0005 = 50026.0005; fee 5002.60005 × 10 bps = 5.00260005.
    const m = await send({ id: "m", symbol: "BTC-USDT", side: "buy", qty: "0.1" });
    await settle(m, "filled");
    assert.deepEqual(await fillOf(m), [{ price: "50026.0005", fee: "5.00260005" }]);
    // Market sell 0.001 @ bid 50000 × 0.9995 = 49975; fee 0.049975 → the 1 minimum.
    const s = await send({ id: "s", symbol: "BTC-USDT", side: "sell", qty: "0.001" });
    await settle(s, "filled");
    assert.deepEqual(await fillOf(s), [{ price: "49975", fee: "1" }]);
    // A buy limit at 49990 rests; the ask falls to 49980: 49980 × 1.0005 = 50004.99 is beyond
    // the limit, so it fills at its limit 49990; fee 0.2 × 49990 × 10 bps = 9.998.
    const l = await send({
      id: "l",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "0.2",
      type: "limit",
      limit_price: "49990",
      time_in_force: "gtc",
    });
    await settle(l, "submitted");
    cache.update([btcUsdtTop({ bidPrice: "49970", askPrice: "49980" })]);
    paper.onPrice("binance", "BTC-USDT");
    await settle(l, "filled");
    assert.deepEqual(await fillOf(l), [{ price: "49990", fee: "9.998" }]);
    const avg = (await getOrder(db.sql, l)).avg_fill_price;
    assert.equal(avg === null ? null : parseDecimal(avg).toFixed(), "49990");
  } finally {
    await engine.stop();
  }
});
