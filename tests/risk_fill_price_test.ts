/**
 * checkRisk's prices: max_order_notional at the price an order fills at (the
 * touch when above its reference price), max_gross_exposure at the order's
 * symbol's mark (or the order's price when higher). Pure, no services.
 */

import assert from "node:assert/strict";
import { parseDecimal as d } from "../trading/money.ts";
import {
  cashPrice,
  checkRisk,
  fillsAtTouch,
  type ProposedOrder,
  type RiskContext,
} from "../trading/risk.ts";
import { brokenRules, limits, riskContext } from "./_risk.ts";

function context(overrides: Partial<RiskContext> = {}): RiskContext {
  return riskContext({ last_price: d("50000"), ...overrides });
}

function order(
  side: "buy" | "sell",
  qty: string,
  extra: Partial<ProposedOrder> = {},
): ProposedOrder {
  return { symbol: "BTC-USDT", side, qty: d(qty), type: "market", ...extra };
}

Deno.test("max_notional counts a market or stop buy at the ask it fills at, not at the mid", () => {
  // Bid 49,000, ask 51,000, mid (the last price) 50,000.
  const ctx = context({
    limits: limits({ max_order_notional: d("100000") }),
    touch: { bid: d("49000"), ask: d("51000") },
  });
  assert.deepEqual(checkRisk(order("buy", "2"), ctx), [{
    rule: "max_notional",
    message: "notional 102000 (qty 2 × 51000) exceeds max_order_notional 100000 for BTC-USDT",
  }]);
  assert.deepEqual(brokenRules(order("buy", "1.96"), ctx), []); // 99,960 at the ask
  assert.deepEqual(brokenRules(order("buy", "2", { type: "stop", stop_price: d("50000") }), ctx), [
    "max_notional",
  ]);
  // A limit buy (a stop_limit too) fills at its limit at most.
  assert.deepEqual(
    brokenRules(order("buy", "2", { type: "limit", limit_price: d("50000") }), ctx),
    [],
  );
  assert.deepEqual(
    brokenRules(
      order("buy", "2", { type: "stop_limit", stop_price: d("50000"), limit_price: d("50000") }),
      ctx,
    ),
    [],
  );
  // Never below the reference price: an ask under the last price, or none, leaves it.
  const { touch: _, ...untouched } = ctx;
  assert.deepEqual(brokenRules(order("buy", "2"), untouched), []);
  assert.deepEqual(brokenRules(order("buy", "2"), { ...ctx, touch: { bid: null, ask: null } }), []);
  const low = { ...ctx, touch: { bid: d("48000"), ask: d("49000") } };
  assert.deepEqual(brokenRules(order("buy", "2"), low), []);
  assert.deepEqual(brokenRules(order("buy", "2.00000001"), low), ["max_notional"]);
});

Deno.test("max_notional counts a sell at the bid when the bid is above the last price", () => {
  // The last trade, 50,000, is under the bid, 51,000: a market sell fills at the bid.
  const ctx = context({
    limits: limits({ max_order_notional: d("100000") }),
    touch: { bid: d("51000"), ask: d("51100") },
  });
  assert.deepEqual(checkRisk(order("sell", "2"), ctx), [{
    rule: "max_notional",
    message: "notional 102000 (qty 2 × 51000) exceeds max_order_notional 100000 for BTC-USDT",
  }]);
  assert.deepEqual(brokenRules(order("sell", "1.96"), ctx), []);
  // A limit sell under the bid is marketable: it fills at the bid too.
  assert.deepEqual(
    brokenRules(order("sell", "2", { type: "limit", limit_price: d("49000") }), ctx),
    [
      "max_notional",
    ],
  );
  // One above the bid at its limit, the larger.
  const above = { type: "limit", limit_price: d("52000") } as const;
  assert.deepEqual(brokenRules(order("sell", "1.92", above), ctx), []); // 99,840
  assert.deepEqual(brokenRules(order("sell", "1.93", above), ctx), ["max_notional"]); // 100,360
  // A bid under the last price leaves the last price.
  const low = { ...ctx, touch: { bid: d("49000"), ask: d("49100") } };
  assert.deepEqual(brokenRules(order("sell", "2"), low), []);
  assert.deepEqual(brokenRules(order("sell", "2.00000001"), low), ["max_notional"]);
});

Deno.test("numeric_range counts the order's notional at its fill price", () => {
  // 19,607,843 × 51,000 ≈ 1.00000000e12 needs 13 digits; at the mid, 50,000, it fits.
  const ctx = context({ touch: { bid: d("49000"), ask: d("51000") } });
  const found = checkRisk(order("buy", "19607844"), ctx);
  assert.deepEqual(found.map((v) => v.rule), ["numeric_range"]);
  assert.match(found[0]!.message, /^notional \(qty 19607844 × 51000\) 1000000044000/);
  const { touch: _, ...untouched } = ctx;
  assert.deepEqual(brokenRules(order("buy", "19607844"), untouched), []);
});

Deno.test("cashPrice moves a market or stop buy to the ask and any sell to the bid, never down", () => {
  const touch = { bid: d("51000"), ask: d("51100") };
  const at = (side: "buy" | "sell", type: ProposedOrder["type"], price: string) =>
    cashPrice({ side, type }, d(price), touch).toString();
  assert.equal(at("buy", "market", "50000"), "51100");
  assert.equal(at("buy", "stop", "50000"), "51100");
  assert.equal(at("buy", "limit", "50000"), "50000");
  assert.equal(at("buy", "stop_limit", "50000"), "50000");
  for (const type of ["market", "stop", "limit", "stop_limit"] as const) {
    assert.equal(at("sell", type, "50000"), "51000", type);
    assert.equal(at("sell", type, "52000"), "52000", type);
    assert.equal(fillsAtTouch({ side: "sell", type }), true, type);
  }
  assert.equal(at("buy", "market", "52000"), "52000");
  assert.equal(fillsAtTouch({ side: "buy", type: "limit" }), false);
  assert.equal(fillsAtTouch({ side: "buy", type: "stop_limit" }), false);
});

Deno.test("max_gross_exposure values a limit buy under the mark at the mark, as a filled position", () => {
  // Mark 50,000: a limit buy of 2.1 at 46,000 is 105,000 at the mark (96,600 at its limit).
  const ctx = context({
    limits: limits({ max_gross_exposure: d("100000") }),
    mark_price: d("50000"),
  });
  const limited = (qty: string, price: string) =>
    order("buy", qty, { type: "limit", limit_price: d(price) });
  assert.deepEqual(checkRisk(limited("2.1", "46000"), ctx), [{
    rule: "max_gross_exposure",
    message: "gross exposure after the order 105000 exceeds max_gross_exposure 100000",
  }]);
  assert.deepEqual(brokenRules(limited("2", "46000"), ctx), []); // 100,000 at the mark
  // Above the mark a limit buy counts at its limit: it can fill there.
  assert.deepEqual(brokenRules(limited("1.92", "52000"), ctx), []); // 99,840
  assert.deepEqual(brokenRules(limited("1.93", "52000"), ctx), ["max_gross_exposure"]); // 100,360
  // The symbol's open buys count at the mark too, not at the new order's lower limit:
  // (1 + 1.1) × 50,000 = 105,000.
  assert.deepEqual(brokenRules(limited("1.1", "40000"), { ...ctx, open_buy_qty: d("1") }), [
    "max_gross_exposure",
  ]);
  // A sell whose last trade is under the mark: 2.01 × 50,000 = 100,500 (98,490 at 49,000).
  const sell = { ...ctx, last_price: d("49000") };
  assert.deepEqual(brokenRules(order("sell", "2.01"), sell), ["max_gross_exposure"]);
  assert.deepEqual(brokenRules(order("sell", "2"), sell), []);
  // A reduction is never refused, whatever the mark.
  const long = { ...ctx, position_qty: d("3"), gross_exposure: d("150000") };
  assert.deepEqual(
    brokenRules(order("sell", "1", { type: "limit", limit_price: d("46000") }), long),
    [],
  );
  // Without a mark the symbol is valued at the order's reference price.
  const { mark_price: _, ...unmarked } = ctx;
  assert.deepEqual(brokenRules(limited("2.1", "46000"), unmarked), []);
});
