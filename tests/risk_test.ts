import assert from "node:assert/strict";
import { type Decimal, parseDecimal as d, toJson, ZERO } from "../trading/money.ts";
import {
  cashPrice,
  checkRisk,
  DEFAULT_RISK_CONFIG,
  DEFAULT_RISK_LIMITS,
  formatAge,
  isReduction,
  limitsFor,
  openExposureQty,
  type ProposedOrder,
  referencePrice,
  RISK_RULES,
  riskLimitsFromConfig,
} from "../trading/risk.ts";
import { brokenRules, limits, OPEN_NOW, riskContext } from "./_risk.ts";

const THANKSGIVING = Date.parse("2026-11-26T15:00:00Z");

function buy(qty: string, extra: Partial<ProposedOrder> = {}): ProposedOrder {
  return { symbol: "AAPL", side: "buy", qty: d(qty), type: "market", ...extra };
}

function sell(qty: string, extra: Partial<ProposedOrder> = {}): ProposedOrder {
  return { symbol: "AAPL", side: "sell", qty: d(qty), type: "market", ...extra };
}

Deno.test("an order breaking no rule passes with no limits set", () => {
  assert.deepEqual(checkRisk(buy("1000000"), riskContext()), []);
});

Deno.test("max_order_qty accepts at the limit and refuses just over", () => {
  const ctx = riskContext({ limits: limits({ max_order_qty: d("10") }) });
  assert.deepEqual(brokenRules(buy("10"), ctx), []);
  assert.deepEqual(checkRisk(buy("10.00000001"), ctx), [{
    rule: "max_order_qty",
    message: "qty 10.00000001 exceeds max_order_qty 10 for AAPL",
  }]);
  assert.deepEqual(brokenRules(sell("10.00000001"), ctx), ["max_order_qty"]);
});

Deno.test("max_notional accepts at the limit and refuses just over, at the reference price", () => {
  const ctx = riskContext({ limits: limits({ max_order_notional: d("1000") }) });
  assert.deepEqual(brokenRules(buy("10"), ctx), []);
  assert.deepEqual(checkRisk(buy("10.00000001"), ctx), [{
    rule: "max_notional",
    message:
      "notional 1000.000001 (qty 10.00000001 × 100) exceeds max_order_notional 1000 for AAPL",
  }]);
  // A buy limit is priced at its limit (it cannot fill above)...
  assert.deepEqual(brokenRules(buy("20", { type: "limit", limit_price: d("50") }), ctx), []);
  assert.deepEqual(brokenRules(buy("20.00000001", { type: "limit", limit_price: d("50") }), ctx), [
    "max_notional",
  ]);
  // ...a sell limit below the market at the market (it fills there).
  assert.deepEqual(brokenRules(sell("20", { type: "limit", limit_price: d("50") }), ctx), [
    "max_notional",
  ]);
  assert.deepEqual(brokenRules(sell("5", { type: "limit", limit_price: d("200") }), ctx), []);
  assert.deepEqual(brokenRules(sell("5.00000001", { type: "limit", limit_price: d("200") }), ctx), [
    "max_notional",
  ]);
  // Without a price a limit order is priced at its own price.
  const noPrice = riskContext({ ...ctx, last_price: null });
  assert.deepEqual(brokenRules(buy("20", { type: "limit", limit_price: d("50") }), noPrice), []);
});

Deno.test("no_market_price refuses market orders without a price, not priced orders", () => {
  const ctx = riskContext({ last_price: null, limits: limits({ max_order_notional: d("1") }) });
  assert.deepEqual(checkRisk(buy("1"), ctx), [{
    rule: "no_market_price",
    message: "no market price for AAPL: market orders need one",
  }]);
  assert.deepEqual(brokenRules(buy("0.01", { type: "limit", limit_price: d("100") }), ctx), []);
  assert.deepEqual(brokenRules(sell("0.01", { type: "stop", stop_price: d("100") }), ctx), []);
  // A price was seen, but too long ago: the message says how old it is and what is allowed.
  const stale = riskContext({ ...ctx, stale_price: { age_ms: 7_250, max_age_ms: 5_000 } });
  assert.deepEqual(checkRisk(buy("1"), stale), [{
    rule: "no_market_price",
    message: "no fresh market price for AAPL: the newest is 7 s old, over " +
      "execution.max_price_age_ms 5000; market orders need one",
  }]);
});

Deno.test("formatAge names the largest whole unit", () => {
  const cases: Array<[number, string]> = [
    [0, "0 ms"],
    [-3, "0 ms"],
    [999.6, "999 ms"],
    [1_000, "1 s"],
    [59_999, "59 s"],
    [60_000, "1 min"],
    [3_599_999, "59 min"],
    [3_600_000, "1 h"],
    [86_399_999, "23 h"],
    [86_400_000, "1 day"],
    [172_800_000, "2 days"],
    [10_275_407_509, "118 days"],
  ];
  for (const [ms, text] of cases) assert.equal(formatAge(ms), text, String(ms));
});

Deno.test("max_position accepts at the limit and refuses just over, long and short", () => {
  const lim = limits({ max_position_qty: d("10") });
  assert.deepEqual(brokenRules(buy("4"), riskContext({ limits: lim, position_qty: d("6") })), []);
  const over = checkRisk(buy("4.00000001"), riskContext({ limits: lim, position_qty: d("6") }));
  assert.deepEqual(over, [{
    rule: "max_position",
    message: "position after the order 10.00000001 exceeds max_position_qty 10 for AAPL " +
      "(position 6)",
  }]);
  assert.deepEqual(brokenRules(sell("4"), riskContext({ limits: lim, position_qty: d("-6") })), []);
  assert.deepEqual(
    brokenRules(sell("4.00000001"), riskContext({ limits: lim, position_qty: d("-6") })),
    [
      "max_position",
    ],
  );
  // A flip is judged by the new side's size.
  assert.deepEqual(
    brokenRules(sell("20"), riskContext({ limits: lim, position_qty: d("10") })),
    [],
  );
  assert.deepEqual(
    brokenRules(sell("20.00000001"), riskContext({ limits: lim, position_qty: d("10") })),
    [
      "max_position",
    ],
  );
});

Deno.test("max_position never refuses a reduction, even above a lowered limit", () => {
  const lim = limits({ max_position_qty: d("10") });
  assert.deepEqual(brokenRules(sell("5"), riskContext({ limits: lim, position_qty: d("50") })), []);
  assert.deepEqual(
    brokenRules(buy("50"), riskContext({ limits: lim, position_qty: d("-50") })),
    [],
  );
  // A flip beyond the limit is not a reduction.
  assert.deepEqual(brokenRules(sell("61"), riskContext({ limits: lim, position_qty: d("50") })), [
    "max_position",
  ]);
});

Deno.test("max_position counts open orders of the same side as filled", () => {
  const lim = limits({ max_position_qty: d("10") });
  const ctx = riskContext({ limits: lim, position_qty: d("6"), open_buy_qty: d("4") });
  assert.deepEqual(brokenRules(buy("0.00000001"), ctx), ["max_position"]);
  assert.match(checkRisk(buy("1"), ctx)[0]!.message, /position 6, open buy orders 4/);
  // Open sells do not count against a buy, open buys not against a sell.
  assert.deepEqual(
    brokenRules(
      buy("4"),
      riskContext({ limits: lim, position_qty: d("6"), open_sell_qty: d("100") }),
    ),
    [],
  );
  assert.deepEqual(brokenRules(sell("4"), ctx), []);
  assert.deepEqual(
    brokenRules(
      sell("4.00000001"),
      riskContext({ limits: lim, position_qty: d("-6"), open_sell_qty: d("0") }),
    ),
    ["max_position"],
  );
});

Deno.test("max_gross_exposure accepts at the limit and refuses just over", () => {
  const lim = limits({ max_gross_exposure: d("10000") });
  const ctx = riskContext({ limits: lim, gross_exposure: d("9000") });
  assert.deepEqual(brokenRules(buy("10"), ctx), []);
  assert.deepEqual(checkRisk(buy("10.00000001"), ctx), [{
    rule: "max_gross_exposure",
    message: "gross exposure after the order 10000.000001 exceeds max_gross_exposure 10000",
  }]);
  // Opening a short adds exposure too.
  assert.deepEqual(brokenRules(sell("10.00000001"), ctx), ["max_gross_exposure"]);
  // Reductions pass even above the limit.
  const heavy = riskContext({ limits: lim, gross_exposure: d("20000"), position_qty: d("200") });
  assert.deepEqual(brokenRules(sell("10"), heavy), []);
  const flip = riskContext({ limits: lim, gross_exposure: d("9000"), position_qty: d("5") });
  // A flip is not a reduction: 9000 + (|after| − |before|) × 100.
  assert.deepEqual(brokenRules(sell("20"), flip), []); // 9000 + (15 − 5) × 100 = 10000
  assert.deepEqual(brokenRules(sell("20.00000001"), flip), ["max_gross_exposure"]);
});

Deno.test("max_gross_exposure counts every open order as filled, in other symbols and on the other side", () => {
  const lim = limits({ max_gross_exposure: d("1000") });
  // Open orders of other symbols that would add 600 if filled leave room for 400.
  const others = riskContext({ limits: lim, open_gross_exposure: d("600") });
  assert.deepEqual(brokenRules(buy("4"), others), []);
  assert.deepEqual(checkRisk(buy("4.01"), others), [{
    rule: "max_gross_exposure",
    message:
      "gross exposure after the order 1001 exceeds max_gross_exposure 1000 (open orders of other symbols 600)",
  }]);
  // The order's symbol at its worst: open sells of 8 could take a flat position to short 8, so a
  // buy of 2 adds nothing to that worst case; a buy of 9 does (long 9 > short 8).
  const opposite = riskContext({
    limits: lim,
    open_sell_qty: d("8"),
    open_gross_exposure: d("150"),
  });
  assert.deepEqual(brokenRules(buy("2"), opposite), []); // 150 + 8 × 100 = 950
  assert.deepEqual(brokenRules(buy("9"), opposite), ["max_gross_exposure"]); // 150 + 9 × 100
  // Reductions are not counted, and a reducing order is never refused.
  const long = riskContext({ limits: lim, gross_exposure: d("500"), position_qty: d("5") });
  assert.deepEqual(brokenRules(sell("3"), { ...long, open_gross_exposure: d("900") }), []);
});

Deno.test("openExposureQty is the most open orders can add to a position, reductions not counted", () => {
  const q = (p: string, b: string, s: string) => openExposureQty(d(p), d(b), d(s)).toString();
  assert.equal(q("0", "6", "0"), "6");
  assert.equal(q("0", "6", "8"), "8"); // short 8 is the worst
  assert.equal(q("5", "2", "8"), "2"); // long 7 beats short 3
  assert.equal(q("5", "0", "3"), "0"); // a sell against a long takes nothing off, adds nothing
  assert.equal(q("5", "0", "12"), "2"); // a flip: short 7
  assert.equal(q("-4", "1", "1"), "1");
});

Deno.test("max_open_orders accepts the last allowed order and refuses the next", () => {
  const lim = limits({ max_open_orders: 5 });
  assert.deepEqual(brokenRules(buy("1"), riskContext({ limits: lim, open_orders: 4 })), []);
  assert.deepEqual(checkRisk(buy("1"), riskContext({ limits: lim, open_orders: 5 })), [{
    rule: "max_open_orders",
    message: "5 orders are open: max_open_orders is 5",
  }]);
  assert.deepEqual(brokenRules(buy("1"), riskContext({ limits: limits({ max_open_orders: 0 }) })), [
    "max_open_orders",
  ]);
});

Deno.test("price_collar accepts prices at the collar and refuses just beyond, both ways", () => {
  const ctx = riskContext({ limits: limits({ price_collar_pct: d("10") }) });
  const limit = (price: string) => buy("1", { type: "limit", limit_price: d(price) });
  assert.deepEqual(brokenRules(limit("110"), ctx), []);
  assert.deepEqual(brokenRules(limit("90"), ctx), []);
  assert.deepEqual(checkRisk(limit("110.00000001"), ctx), [{
    rule: "price_collar",
    message:
      "limit_price 110.00000001 is 10% from the last price 100, beyond price_collar_pct 10 for AAPL",
  }]);
  assert.deepEqual(brokenRules(limit("89.99999999"), ctx), ["price_collar"]);
  const stop = sell("1", { type: "stop", stop_price: d("80") });
  assert.match(checkRisk(stop, ctx)[0]!.message, /^stop_price 80 is 20% from the last price/);
  const both = buy("1", { type: "stop_limit", limit_price: d("200"), stop_price: d("50") });
  assert.deepEqual(brokenRules(both, ctx), ["price_collar", "price_collar"]);
  // Without a last price the collar cannot hold a fat-fingered price: refused, saying so.
  assert.deepEqual(checkRisk(limit("1000"), riskContext({ ...ctx, last_price: null })), [{
    rule: "price_collar",
    message: "no market price for AAPL to check limit_price against: price_collar_pct 10 " +
      "needs one (null turns the collar off)",
  }]);
  assert.match(
    checkRisk(
      stop,
      riskContext({ ...ctx, last_price: null, stale_price: { age_ms: 90_000, max_age_ms: 5_000 } }),
    )[0]!.message,
    /^no fresh market price for AAPL to check stop_price against \(the newest is 1 min old\)/,
  );
  const off = riskContext({ limits: limits({ price_collar_pct: null }), last_price: null });
  assert.deepEqual(brokenRules(limit("1000"), off), []);
});

Deno.test("market_hours refuses us_equity orders outside the session", () => {
  const lim = limits({ market_hours: "us_equity" });
  assert.deepEqual(brokenRules(buy("1"), riskContext({ limits: lim, now: OPEN_NOW })), []);
  assert.deepEqual(checkRisk(buy("1"), riskContext({ limits: lim, now: THANKSGIVING })), [{
    rule: "market_hours",
    message: "the US equity market is closed (holiday: Thanksgiving Day); " +
      "it opens at 2026-11-27T14:30:00.000Z",
  }]);
  // The broker's clock, when given, wins over the built-in calendar.
  assert.deepEqual(
    brokenRules(
      buy("1"),
      riskContext({ limits: lim, now: THANKSGIVING, market_clock: { open: true } }),
    ),
    [],
  );
  assert.deepEqual(
    brokenRules(
      buy("1"),
      riskContext({ limits: lim, now: OPEN_NOW, market_clock: { open: false, reason: "halted" } }),
    ),
    ["market_hours"],
  );
  // "always" ignores the calendar.
  assert.deepEqual(brokenRules(buy("1"), riskContext({ now: THANKSGIVING })), []);
});

Deno.test("market_hours follows exchange and symbol overrides", () => {
  const lim = limits({
    exchanges: { alpaca: { market_hours: "us_equity" } },
    symbols: { SPY: { market_hours: "always" } },
  });
  const ctx = riskContext({ limits: lim, now: THANKSGIVING });
  assert.deepEqual(brokenRules(buy("1", { exchange: "alpaca" }), ctx), ["market_hours"]);
  assert.deepEqual(brokenRules(buy("1", { exchange: "binance" }), ctx), []);
  assert.deepEqual(brokenRules(buy("1"), ctx), []);
  assert.deepEqual(brokenRules(buy("1", { exchange: "alpaca", symbol: "SPY" }), ctx), []);
});

Deno.test("daily_loss_limit stops exposure-increasing orders once the loss reaches the limit", () => {
  const lim = limits({ daily_loss_limit: d("1000") });
  const almost = riskContext({ limits: lim, realized_pnl_today: d("-999.99999999") });
  assert.deepEqual(brokenRules(buy("1"), almost), []);
  const reached = riskContext({
    limits: lim,
    realized_pnl_today: d("-1000"),
    position_qty: d("5"),
  });
  assert.deepEqual(checkRisk(buy("1"), reached), [{
    rule: "daily_loss_limit",
    message: "realized P&L today -1000 has reached the daily loss limit 1000: " +
      "only orders that reduce a position are accepted",
  }]);
  // Reducing and closing are still allowed; flipping is not.
  assert.deepEqual(brokenRules(sell("3"), reached), []);
  assert.deepEqual(brokenRules(sell("5"), reached), []);
  assert.deepEqual(brokenRules(sell("5.00000001"), reached), ["daily_loss_limit"]);
  // Profits never trigger it.
  assert.deepEqual(
    brokenRules(buy("1"), riskContext({ limits: lim, realized_pnl_today: d("5000") })),
    [],
  );
});

Deno.test("the kill switch refuses every order, reductions included", () => {
  const ctx = riskContext({ kill_switch: true, position_qty: d("5") });
  assert.deepEqual(checkRisk(sell("1"), ctx), [{
    rule: "kill_switch",
    message: "the kill switch is on: new orders are refused",
  }]);
  assert.deepEqual(brokenRules(buy("1"), ctx), ["kill_switch"]);
});

Deno.test("every broken rule is reported at once, in RISK_RULES order", () => {
  const ctx = riskContext({
    limits: limits({
      max_order_qty: d("1"),
      max_order_notional: d("1"),
      max_position_qty: d("1"),
      price_collar_pct: d("1"),
      market_hours: "us_equity",
      max_gross_exposure: d("1"),
      max_open_orders: 1,
      daily_loss_limit: d("1"),
    }),
    kill_switch: true,
    now: THANKSGIVING,
    open_orders: 1,
    realized_pnl_today: d("-1"),
  });
  // A market order without a price: notional and gross exposure cannot be priced.
  assert.deepEqual(brokenRules(buy("2"), { ...ctx, last_price: null }), [
    "kill_switch",
    "market_hours",
    "no_market_price",
    "max_order_qty",
    "max_position",
    "max_open_orders",
    "daily_loss_limit",
  ]);
  // A limit order far from the market breaks all the others.
  assert.deepEqual(brokenRules(buy("2", { type: "limit", limit_price: d("200") }), ctx), [
    "kill_switch",
    "market_hours",
    "max_order_qty",
    "max_notional",
    "price_collar",
    "max_position",
    "max_gross_exposure",
    "max_open_orders",
    "daily_loss_limit",
  ]);
  assert.equal(RISK_RULES.length, 11);
});

Deno.test("numeric_range refuses, with every limit off, an order whose figures NUMERIC(20,8) cannot hold", () => {
  const ctx = riskContext({ last_price: d("60000"), cash: d("100000") });
  // 20,000,000 × 60,000 = 1.2e12: 13 integer digits.
  const big = checkRisk(buy("20000000"), ctx);
  assert.deepEqual(big.map((v) => v.rule), ["numeric_range"]);
  assert.match(big[0]!.message, /notional \(qty 20000000 × 60000\) 1200000000000/);
  assert.match(big[0]!.message, /cash after the order -1199999900000/);
  assert.match(big[0]!.message, /more than 12 integer digits/);
  // The widest figures that fit pass.
  const widest = riskContext({
    last_price: d("999999999999.99999999"),
    cash: d("999999999999.99999999"),
  });
  assert.deepEqual(
    brokenRules(buy("1", { type: "limit", limit_price: d("999999999999.99999999") }), widest),
    [],
  );
  // The cash after the order, fills not yet applied in the context's cash.
  const poor = riskContext({ last_price: d("1000000"), cash: d("-999999000000") });
  assert.deepEqual(brokenRules(buy("0.99999999"), poor), []);
  assert.deepEqual(brokenRules(buy("1"), poor), ["numeric_range"]);
  assert.deepEqual(brokenRules(sell("1"), poor), [], "a sell brings cash in");
  // The position after it, open orders of its side counted; its value at the reference price.
  const long = riskContext({
    position_qty: d("999999999998"),
    open_buy_qty: d("1"),
    last_price: null,
  });
  assert.deepEqual(
    brokenRules(buy("0.99999999", { type: "limit", limit_price: d("0.00000001") }), long),
    [],
  );
  assert.deepEqual(brokenRules(buy("1", { type: "limit", limit_price: d("0.00000001") }), long), [
    "numeric_range",
  ]);
  const valued = riskContext({ position_qty: d("-500000"), last_price: d("2000000") });
  assert.deepEqual(
    brokenRules(sell("0.00000001", { type: "limit", limit_price: d("1") }), valued),
    [
      "numeric_range",
    ],
  );
  // A market order without a price: only its position can be checked.
  assert.deepEqual(brokenRules(buy("1000000000000"), riskContext({ last_price: null })), [
    "no_market_price",
    "numeric_range",
  ]);
});

Deno.test("numeric_range's cash after counts the open orders of every symbol and the worst fill costs", () => {
  // Cash 100,000; buys of other symbols would pay 500,000,000,000; this buy 500,000,000,000 more.
  const ctx = riskContext({
    last_price: d("1000"),
    cash: d("100000"),
    open_buy_notional: d("500000000000"),
  });
  assert.deepEqual(brokenRules(buy("500000099"), ctx), []); // cash after -999,999,999,000
  const both = checkRisk(buy("500000100"), ctx); // cash after -10^12
  assert.deepEqual(both.map((v) => v.rule), ["numeric_range"]);
  assert.match(
    both[0]!.message,
    /cash after the order -1000000000000 \(cash 100000, the order 500000100000 \(qty 500000100 × 1000\), open buys of other symbols 500000000000\)/,
  );
  // The symbol's own open buys count too: by default at the order's reference price.
  assert.deepEqual(
    brokenRules(buy("100", { symbol: "AAPL" }), { ...ctx, open_buy_qty: d("500000000") }),
    [
      "numeric_range",
    ],
  );
  // At what they would pay when the context says: 500,000 resting at 1,000,000 (5e11) with a
  // buy of 1 at 1,000 — not 500,001 × 1,000.
  const resting = {
    ...ctx,
    cash: ZERO,
    open_buy_qty: d("500000"),
    symbol_open_buy_notional: d("500000000000"),
  };
  const own = checkRisk(buy("1", { type: "limit", limit_price: d("1000") }), resting);
  assert.deepEqual(own.map((v) => v.rule), ["numeric_range"]);
  assert.match(
    own[0]!.message,
    /cash after the order -1000000001000 \(cash 0, the order 1000 \(qty 1 × 1000\), open buys of AAPL 500000000000, open buys of other symbols 500000000000\)/,
  );
  assert.deepEqual(
    brokenRules(buy("1", { type: "limit", limit_price: d("1000") }), {
      ...resting,
      symbol_open_buy_notional: d("499999998000"),
    }),
    [],
  );
  // Likewise the symbol's open sells for the cash at its highest.
  assert.deepEqual(
    brokenRules(sell("1", { type: "limit", limit_price: d("1000") }), {
      ...ctx,
      cash: d("500000000000"),
      open_sell_qty: d("500000"),
      symbol_open_sell_notional: d("500000000000"),
    }),
    ["numeric_range"],
  );
  // A sell brings cash in: open sells of other symbols can take it over 10^12.
  const rich = riskContext({
    last_price: d("1000"),
    cash: d("600000000000"),
    open_sell_notional: d("300000000000"),
  });
  assert.deepEqual(brokenRules(sell("99999999"), rich), []);
  const over = checkRisk(sell("100000000"), rich);
  assert.deepEqual(over.map((v) => v.rule), ["numeric_range"]);
  assert.match(
    over[0]!.message,
    /cash after the order 1000000000000 .*open sells of other symbols/,
  );
  // Fees and slippage: 10 bps of what the buys pay, and the least fee per order (2 open + this).
  const costly = riskContext({
    last_price: d("1000"),
    cash: d("100000"),
    open_orders: 2,
    fill_costs: { bps: d("10"), min: d("1") },
  });
  // 999,000,000 × 1,000 = 9.99e11, costs 9.99e8 + 3: cash after -999,998,900,003.
  assert.deepEqual(brokenRules(buy("999000000"), costly), []);
  // 999,100,000 × 1,000 = 9.991e11, costs 9.991e8 + 3: cash after -1,000,099,000,003.
  const fee = checkRisk(buy("999100000"), costly);
  assert.deepEqual(fee.map((v) => v.rule), ["numeric_range"]);
  assert.match(
    fee[0]!.message,
    /cash after the order -1000099000003 \(.*fees and slippage up to 999100003\)/,
  );
  const { fill_costs: _, ...free } = costly;
  assert.deepEqual(brokenRules(buy("999100000"), free), [], "the same buy without costs fits");
});

Deno.test("numeric_range counts a market or stop order's cash at the touch when above its reference price", () => {
  // Mid 2,999.5, ask 3,000: 333,350,000 × 2,999.5 fits, × 3,000 does not.
  const touch = { bid: d("2999"), ask: d("3000") };
  const ctx = riskContext({ last_price: d("2999.5"), cash: d("100000"), touch });
  const big = checkRisk(buy("333350000"), ctx);
  assert.deepEqual(big.map((v) => v.rule), ["numeric_range"]);
  assert.match(
    big[0]!.message,
    /cash after the order -1000049900000 \(cash 100000, the order 1000050000000 \(qty 333350000 × 3000\)\)/,
  );
  assert.deepEqual(brokenRules(buy("333350000"), { ...ctx, touch: { bid: null, ask: null } }), []);
  assert.deepEqual(brokenRules(buy("333350000", { type: "stop", stop_price: d("2999.5") }), ctx), [
    "numeric_range",
  ]);
  // A limit buy fills at its limit at most; a stop_limit likewise.
  const limit = { type: "limit", limit_price: d("2999.5") } as const;
  assert.deepEqual(brokenRules(buy("333350000", limit), ctx), []);
  // A market sell at the bid when it is above the last price (here a trade's).
  const rich = riskContext({
    last_price: d("2999"),
    cash: d("100000"),
    touch: { bid: d("3000"), ask: d("3001") },
  });
  assert.deepEqual(brokenRules(sell("333300000"), rich), []); // 999,900,000,000 + 100,000
  // 333,333,300 × 3,000 + 100,000 = 10^12 (at the trade, 2,999, it would fit).
  assert.deepEqual(brokenRules(sell("333333300"), rich), ["numeric_range"]);
  assert.equal(
    cashPrice({ side: "sell", type: "market" }, d("3002"), rich.touch).toString(),
    "3002",
  );
  assert.equal(cashPrice({ side: "buy", type: "limit" }, d("1"), rich.touch).toString(), "1");
  assert.equal(cashPrice({ side: "buy", type: "stop" }, d("1"), undefined).toString(), "1");
});

Deno.test("referencePrice and isReduction follow the documented rules", () => {
  const last = d("100");
  const price = (order: ProposedOrder, l: Decimal | null = last) => {
    const p = referencePrice(order, l);
    return p === null ? null : toJson(p);
  };
  assert.equal(price(buy("1")), "100");
  assert.equal(price(buy("1"), null), null);
  assert.equal(price(buy("1", { type: "limit", limit_price: d("120") })), "120");
  assert.equal(price(buy("1", { type: "limit", limit_price: d("80") })), "80");
  assert.equal(price(sell("1", { type: "limit", limit_price: d("80") })), "100");
  assert.equal(price(sell("1", { type: "limit", limit_price: d("120") })), "120");
  assert.equal(price(buy("1", { type: "stop", stop_price: d("90") })), "100");
  assert.equal(price(buy("1", { type: "stop", stop_price: d("110") })), "110");
  assert.equal(price(sell("1", { type: "stop", stop_price: d("90") }), null), "90");
  assert.equal(
    price(buy("1", { type: "stop_limit", stop_price: d("110"), limit_price: d("111") })),
    "111",
  );

  assert.equal(isReduction(d("5"), d("3")), true);
  assert.equal(isReduction(d("5"), d("0")), true);
  assert.equal(isReduction(d("-5"), d("-1")), true);
  assert.equal(isReduction(d("5"), d("-3")), false);
  assert.equal(isReduction(d("5"), d("6")), false);
  assert.equal(isReduction(d("0"), d("1")), false);
});

Deno.test("riskLimitsFromConfig reads the YAML shape with defaults and overrides", () => {
  const parsed = riskLimitsFromConfig({
    max_order_qty: 5,
    max_order_notional: "2500.5",
    max_position_qty: null,
    max_open_orders: 3,
    exchanges: { kraken: { price_collar_pct: 0.5 } },
    symbols: { "BTC-USDT": { max_order_qty: "0.1", market_hours: "always" } },
  });
  assert.equal(toJson(parsed.max_order_qty!), "5");
  assert.equal(toJson(parsed.max_order_notional!), "2500.5");
  assert.equal(parsed.max_position_qty, null);
  assert.equal(parsed.max_open_orders, 3);
  assert.equal(toJson(parsed.daily_loss_limit!), DEFAULT_RISK_CONFIG.daily_loss_limit);
  assert.equal(toJson(parsed.exchanges.kraken!.price_collar_pct!), "0.5");
  // Explicit exchanges replace the default ones.
  assert.equal(parsed.exchanges.alpaca, undefined);

  const btc = limitsFor(parsed, "BTC-USDT", "kraken");
  assert.equal(toJson(btc.max_order_qty!), "0.1"); // symbol beats default
  assert.equal(toJson(btc.price_collar_pct!), "0.5"); // exchange beats default
  assert.equal(btc.max_position_qty, null);
  const eth = limitsFor(parsed, "ETH-USDT", "binance");
  assert.equal(toJson(eth.max_order_qty!), "5");
  assert.equal(toJson(eth.price_collar_pct!), DEFAULT_RISK_CONFIG.price_collar_pct);
  // Symbols named like Object.prototype members are not overrides.
  assert.equal(toJson(limitsFor(parsed, "constructor").max_order_qty!), "5");
});

Deno.test("riskLimitsFromConfig refuses malformed settings, naming them", () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ max_order_qty: "1e3" }, /risk\.max_order_qty must be a decimal or null/],
    [{ max_order_qty: -1 }, /risk\.max_order_qty must be >= 0, got -1/],
    [{ max_open_orders: 1.5 }, /risk\.max_open_orders must be an integer/],
    [{ market_hours: "nyse" }, /risk\.market_hours must be one of always, us_equity/],
    [{ max_order_quantity: 1 }, /risk\.max_order_quantity is not a risk setting/],
    [{ exchanges: { nyse: {} } }, /risk\.exchanges\.nyse is not an exchange/],
    [{ symbols: { AAPL: { max_gross_exposure: 1 } } }, /risk\.symbols\.AAPL\.max_gross_exposure/],
    [{ symbols: { AAPL: { price_collar_pct: "x" } } }, /risk\.symbols\.AAPL\.price_collar_pct/],
  ];
  for (const [config, message] of cases) {
    assert.throws(() => riskLimitsFromConfig(config as never), message);
  }
});

Deno.test("riskLimitsFromConfig refuses a limit NUMERIC(20,8) cannot hold, naming it", () => {
  const cases: Array<[unknown, RegExp]> = [
    [
      { max_gross_exposure: "1000000000000" },
      /risk\.max_gross_exposure must have at most 12 integer digits and 8 decimals/,
    ],
    [{ daily_loss_limit: "0.000000001" }, /risk\.daily_loss_limit must have at most/],
    [
      { exchanges: { kraken: { max_order_notional: "1000000000000" } } },
      /risk\.exchanges\.kraken\.max_order_notional must have at most/,
    ],
    [
      { symbols: { AAPL: { price_collar_pct: "0.000000001" } } },
      /risk\.symbols\.AAPL\.price_collar_pct must have at most/,
    ],
  ];
  for (const [config, message] of cases) {
    assert.throws(() => riskLimitsFromConfig(config as never), message);
  }
  const widest = riskLimitsFromConfig({
    max_gross_exposure: "999999999999.99999999",
    daily_loss_limit: "0.00000001",
  });
  assert.equal(toJson(widest.max_gross_exposure!), "999999999999.99999999");
  assert.equal(toJson(widest.daily_loss_limit!), "0.00000001");
});

Deno.test("the default limits let an ordinary order through and stop a fat finger", () => {
  const ctx = riskContext({ limits: DEFAULT_RISK_LIMITS });
  assert.deepEqual(brokenRules(buy("10"), ctx), []);
  assert.deepEqual(brokenRules(buy("100000"), ctx), [
    "max_order_qty",
    "max_notional",
    "max_gross_exposure",
  ]);
  // Alpaca-priced orders keep to the US equity session by default.
  assert.deepEqual(brokenRules(buy("1", { exchange: "alpaca" }), { ...ctx, now: THANKSGIVING }), [
    "market_hours",
  ]);
});
