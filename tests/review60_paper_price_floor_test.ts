/**
 * The paper broker never fills at a price of 0: a market or stop sell's
 * slippage that would round its price below the smallest NUMERIC(20,8) price
 * fills at 0.00000001, which `fills` (CHECK price > 0) and the position
 * tracker take, instead of a fill nothing can store.
 */

import assert from "node:assert/strict";
import { LatestCache } from "../market/latest_cache.ts";
import type { BrokerEvent } from "../brokers/broker.ts";
import { matchPaperOrder, paperBroker } from "../brokers/paper.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { applyFill, emptyPosition } from "../trading/positions.ts";

const T0 = Date.parse("2026-03-10T15:00:00Z");

Deno.test("a paper market or stop sell whose slippage rounds its price to 0 fills at 0.00000001", () => {
  const market = { bid: d("0.00000001"), ask: d("0.00000002"), trade_high: null, trade_low: null };
  for (const [type, stop] of [["market", null], ["stop", d("0.00000001")]] as const) {
    for (const bps of ["5000", "9999"]) {
      const decision = matchPaperOrder(
        { side: "sell", type, limit_price: null, stop_price: stop },
        null,
        market,
        d(bps),
      );
      assert.equal(decision.action, "fill", `${type} at ${bps} bps`);
      assert.equal(
        decision.action === "fill" && decision.price.toFixed(),
        "0.00000001",
        `${type} at ${bps} bps`,
      );
    }
  }
  // 0.00000003 × (1 − 0.9) = 0.000000003 → rounds to 0: the floor again.
  const deeper = matchPaperOrder(
    { side: "sell", type: "market", limit_price: null, stop_price: null },
    null,
    { ...market, bid: d("0.00000003") },
    d("9000"),
  );
  assert.equal(deeper.action === "fill" && deeper.price.toFixed(), "0.00000001");
  // A price that survives the rounding is kept as it is: 0.00000004 × 0.5 = 0.00000002.
  const kept = matchPaperOrder(
    { side: "sell", type: "market", limit_price: null, stop_price: null },
    null,
    { ...market, bid: d("0.00000004") },
    d("5000"),
  );
  assert.equal(kept.action === "fill" && kept.price.toFixed(), "0.00000002");
});

Deno.test("a paper market sell at a 1e-8 bid with 50% slippage emits a fill the position tracker can apply", async () => {
  const clock = { now: () => T0, sleep: () => new Promise<void>(() => {}) };
  const cache = new LatestCache({ clock });
  const ts = T0 * 1000;
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol: "SHIB-BTC",
    venue_symbol: "SHIBBTC",
    ts_exchange: ts,
    ts_local: ts,
    bid_price: "0.00000001",
    bid_qty: "1000000",
    ask_price: "0.00000002",
    ask_qty: "1000000",
  }]);
  await using broker = paperBroker({
    cache,
    options: { commission_bps: "0", commission_min: "0", slippage_bps: "5000" },
    max_price_age_ms: 5_000,
    clock,
  });
  const events: BrokerEvent[] = [];
  broker.onEvent((event) => {
    events.push(event);
  });
  await broker.submit({
    client_order_id: "shib-1",
    symbol: "SHIB-BTC",
    side: "sell",
    type: "market",
    time_in_force: "ioc",
    qty: d("1000"),
    limit_price: null,
    stop_price: null,
    exchange: "binance",
  });
  await broker.settled();
  const fill = events.find((e) => e.type === "fill");
  assert.ok(fill !== undefined && fill.type === "fill", JSON.stringify(events));
  assert.equal(fill.price.toFixed(), "0.00000001");
  // What the tracker does with it: a short of 1000 at 0.00000001 (a price of 0 throws).
  const position = applyFill(emptyPosition("SHIB-BTC"), {
    side: "sell",
    qty: fill.qty,
    price: fill.price,
    fee: fill.fee,
  });
  assert.equal(position.qty.toFixed(), "-1000");
});
