/**
 * The in-process portfolio view and its marks, without services: which price
 * is a mark (a fresh one only; the risk checks' bounded fallback), realized
 * P&L per UTC day, and fills stored but not yet applied in today's figure.
 */

import assert from "node:assert/strict";
import { RecordingClock } from "../lib/clock.ts";
import { LatestCache } from "../market/latest_cache.ts";
import {
  applyTrackedFill,
  DEFAULT_RISK_MARK_MAX_AGE_MS,
  markPrice,
  PortfolioState,
} from "../trading/portfolio_state.ts";
import { emptyPosition } from "../trading/positions.ts";
import { parseDecimal as d, ZERO } from "../trading/money.ts";
import { checkRisk, riskLimitsFromConfig } from "../trading/risk.ts";

const NOW = Date.parse("2026-03-10T12:00:00Z");

/** A cache holding, for SOL-USDT, a Kraken trade and a Binance best bid/ask of the given ages. */
function cacheWith(prices: { tradeAgoMs?: number; topAgoMs?: number }): LatestCache {
  const cache = new LatestCache({ clock: new RecordingClock(NOW) });
  const us = NOW * 1000;
  if (prices.tradeAgoMs !== undefined) {
    const at = us - prices.tradeAgoMs * 1000;
    cache.update([{
      kind: "trade",
      exchange: "kraken",
      symbol: "SOL-USDT",
      venue_symbol: "SOL/USDT",
      trade_id: "1",
      price: "20",
      qty: "1",
      side: "buy",
      ts_exchange: at,
      ts_local: at,
    }]);
  }
  if (prices.topAgoMs !== undefined) {
    const at = us - prices.topAgoMs * 1000;
    cache.update([{
      kind: "top",
      exchange: "binance",
      symbol: "SOL-USDT",
      venue_symbol: "SOLUSDT",
      ts_exchange: at,
      ts_local: at,
      bid_price: "30",
      bid_qty: "1",
      ask_price: "30.02",
      ask_qty: "1",
    }]);
  }
  return cache;
}

const mark = (cache: LatestCache, fallbackMs?: number) =>
  markPrice(
    cache,
    "SOL-USDT",
    5_000,
    NOW,
    fallbackMs === undefined ? {} : { fallback_max_age_ms: fallbackMs },
  )?.toFixed() ?? null;

Deno.test("a price older than the freshness limit is no mark: a stale quote and a day-old trade give none", () => {
  // The quote is 6 s old (the limit is 5 s), the trade a day old.
  assert.equal(mark(cacheWith({ tradeAgoMs: 86_400_000, topAgoMs: 6_000 })), null);
  assert.equal(mark(cacheWith({ tradeAgoMs: 3_600_000 })), null);
  // Fresh ones: the mid first, else the last trade.
  assert.equal(mark(cacheWith({ tradeAgoMs: 1_000, topAgoMs: 4_000 })), "30.01");
  assert.equal(mark(cacheWith({ tradeAgoMs: 1_000, topAgoMs: 6_000 })), "20");
});

Deno.test("the risk checks' fallback takes the newest price within its bound: a 6 s old mid before a day-old trade", () => {
  const fallback = DEFAULT_RISK_MARK_MAX_AGE_MS;
  assert.equal(mark(cacheWith({ tradeAgoMs: 86_400_000, topAgoMs: 6_000 }), fallback), "30.01");
  assert.equal(mark(cacheWith({ tradeAgoMs: 6_000, topAgoMs: 86_400_000 }), fallback), "20");
  // A fresh price is taken as it would be without the fallback.
  assert.equal(mark(cacheWith({ tradeAgoMs: 1_000, topAgoMs: 4_000 }), fallback), "30.01");
  // Nothing beyond the bound.
  assert.equal(mark(cacheWith({ tradeAgoMs: fallback + 1 }), fallback), null);
  assert.equal(mark(cacheWith({ tradeAgoMs: fallback }), fallback), "20");
});

/** A state on `clock` with 100,000 of cash, and a way to apply fills of X to it. */
function stateAt(clock: RecordingClock) {
  const state = new PortfolioState({ starting_cash: "100000", clock });
  const fill = (side: "buy" | "sell", qty: string, price: string, at: number, fee = "0") =>
    state.applyFill({
      symbol: "X",
      side,
      qty: d(qty),
      price: d(price),
      fee: d(fee),
      filled_at: at,
    });
  return { state, fill };
}

Deno.test("a fill stamped just after midnight by a broker clock ahead counts for that day, not instead of today", () => {
  // Our clock: 23:59:59.900 UTC. A broker clock 200 ms ahead stamps a fill 00:00:00.100.
  const clock = new RecordingClock(Date.parse("2026-03-10T23:59:59.900Z"));
  const { state, fill } = stateAt(clock);
  fill("buy", "10", "100", clock.now() - 1_000);
  fill("sell", "5", "0.5", clock.now() - 500); // 5 × (0.5 − 100) = −497.5
  assert.equal(state.realizedToday().toFixed(), "-497.5");
  fill("sell", "1", "110", Date.parse("2026-03-11T00:00:00.100Z"), "0.25"); // +10 − 0.25
  assert.equal(state.realizedToday().toFixed(), "-497.5", "today's loss is still today's");
  clock.advance(200); // 00:00:00.100 the next day
  assert.equal(state.realizedToday().toFixed(), "9.75");
  // A late fill stamped yesterday counts for yesterday.
  fill("sell", "1", "90", Date.parse("2026-03-10T23:59:59.000Z"));
  assert.equal(state.realizedToday().toFixed(), "9.75");
  assert.equal(state.realizedToday(Date.parse("2026-03-10T12:00:00Z")).toFixed(), "-507.5");
});

Deno.test("a losing fill stored but not yet applied counts in realized P&L today and the daily loss limit", () => {
  const clock = new RecordingClock(Date.parse("2026-03-10T12:00:00Z"));
  const { state, fill } = stateAt(clock);
  fill("buy", "10", "100", clock.now() - 60_000);
  // Stored by the engine while the tracker was busy: a sell closing 6 at 50, fee 1.
  state.addUnappliedFill("42", {
    symbol: "X",
    side: "sell",
    qty: d("6"),
    price: d("50"),
    fee: d("1"),
    filled_at: clock.now(),
  });
  // 6 × (50 − 100) − 1: what the tracker will store for it.
  assert.equal(state.realizedToday().toFixed(), "-301");
  const limits = riskLimitsFromConfig({ daily_loss_limit: "300" });
  const figures = state.riskFigures("Y", () => d("50"));
  assert.equal(figures.realized_pnl_today.toFixed(), "-301");
  const buy = { symbol: "Y", side: "buy" as const, qty: d("1"), type: "market" as const };
  const context = { ...figures, limits, kill_switch: false, now: clock.now(), last_price: d("10") };
  assert.deepEqual(checkRisk(buy, context).map((v) => v.rule), ["daily_loss_limit"]);
  // Unapplied fills are applied in order: a second sell of 4 closes the rest at 60.
  state.addUnappliedFill("43", { symbol: "X", side: "sell", qty: d("4"), price: d("60") });
  assert.equal(state.realizedToday().toFixed(), "-461");
  // Recorded by the tracker: counted once, as applied.
  state.applyFill({
    symbol: "X",
    side: "sell",
    qty: d("6"),
    price: d("50"),
    fee: d("1"),
    filled_at: clock.now(),
  });
  state.forgetUnappliedFill("42");
  assert.equal(state.realizedToday().toFixed(), "-461");
  // One stamped yesterday counts for yesterday, not today.
  state.addUnappliedFill("44", {
    symbol: "X",
    side: "sell",
    qty: d("1"),
    price: d("1"),
    filled_at: clock.now() - 86_400_000,
  });
  assert.equal(state.realizedToday().toFixed(), "-461");
});

Deno.test("a fill's notional is rounded on its own: 0.00000001 @ 0.5 moves no cash whatever the balance's last digit", () => {
  const fill = {
    symbol: "X-USD",
    side: "buy" as const,
    qty: d("0.00000001"),
    price: d("0.5"),
    fee: ZERO,
    filled_at: 0,
  };
  for (const balance of ["1000.00000002", "1000.00000001"]) {
    const applied = applyTrackedFill(emptyPosition("X-USD"), d(balance), fill);
    assert.equal(applied.cash.toFixed(), balance, `from ${balance}`);
  }
  const sell = applyTrackedFill(emptyPosition("X-USD"), d("1000.00000001"), {
    ...fill,
    side: "sell",
  });
  assert.equal(sell.cash.toFixed(), "1000.00000001", "a sell of the same moves none either");
});

Deno.test("a fill's realized P&L is rounded on its own, whatever the position's realized P&L before", () => {
  // Bought 0.00000001 at 1; selling it at 1.5 realizes 0.000000005 exactly: a tie, half-even 0.
  for (const before of ["0.00000001", "0.00000002"]) {
    const position = {
      ...emptyPosition("X-USD"),
      qty: d("0.00000001"),
      avg_entry_price: d("1"),
      cost_basis: d("0.00000001"),
      realized_pnl: d(before),
    };
    const applied = applyTrackedFill(position, d("1000"), {
      symbol: "X-USD",
      side: "sell",
      qty: d("0.00000001"),
      price: d("1.5"),
      fee: ZERO,
      filled_at: 0,
    });
    assert.equal(applied.realized.toFixed(), "0", `after ${before}`);
    assert.equal(applied.position.realized_pnl.toFixed(), before, `after ${before}`);
    assert.equal(applied.position.qty.toFixed(), "0");
  }
});

Deno.test("a tracked fill's opening fees and trade are rounded to money, as the tracker stores them", () => {
  const bought = applyTrackedFill(emptyPosition("X-USD"), d("1000"), {
    symbol: "X-USD",
    side: "buy",
    qty: d("3"),
    price: d("10"),
    fee: d("1"),
    filled_at: 0,
  });
  assert.equal(bought.trade_pnl, null);
  assert.equal(bought.closing, false);
  const sold = applyTrackedFill(bought.position, bought.cash, {
    symbol: "X-USD",
    side: "sell",
    qty: d("1"),
    price: d("11"),
    fee: d("0"),
    filled_at: 0,
  });
  // 1 × (11 − 10) − 1/3 of the opening fee of 1.
  assert.equal(sold.closing, true);
  assert.equal(sold.trade_pnl?.toFixed(), "0.66666667");
  assert.equal(sold.position.open_fees?.toFixed(), "0.66666667");
  assert.equal(sold.realized.toFixed(), "1", "realized P&L expensed the fee when paid");
});
