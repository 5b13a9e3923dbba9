/**
 * `PortfolioState` takes the fills stored but not yet applied in id order —
 * the order the tracker applies them in — whatever order they were registered
 * in, for realized P&L today ("such fills taken in order after the positions
 * held, fees included", README) and for the at-cost exposure of an unmarked
 * symbol. Review 41: they were taken in registration order, so a fill the
 * engine registered before a read-back (`load`) found an older unapplied one
 * — whose statement lost its answer, so the engine never registered it — was
 * taken first, and today's loss was misstated.
 */

import assert from "node:assert/strict";
import { insertFills, insertOrders, upsertSymbols } from "../db/mod.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("unapplied fills count in realized P&L today and at-cost exposure in id order, whatever order they were registered in", async () => {
  await using db = await migratedDatabase();
  await upsertSymbols(db.sql, [{ symbol: "BTC-USDT" }]);
  const now = Date.now();
  // Long 10 @ 100, applied.
  await db.sql`
    INSERT INTO positions (symbol, qty, avg_entry_price, cost_basis, realized_pnl)
    VALUES ('BTC-USDT', 10, 100, 1000, 0)`;
  const [sell, buy] = await insertOrders(db.sql, [
    { strategy: "s", symbol: "BTC-USDT", side: "sell", qty: "10" },
    { strategy: "s", symbol: "BTC-USDT", side: "buy", qty: "10" },
  ]);
  // Stored, not applied: first sell 10 @ 90 (closes the long: −100), then buy 10 @ 80 (opens).
  const [older] = await insertFills(db.sql, [{
    order_id: sell!.id,
    broker_fill_id: "f-older",
    symbol: "BTC-USDT",
    side: "sell",
    qty: "10",
    price: "90",
    filled_at: new Date(now - 2_000),
  }]);
  const [newer] = await insertFills(db.sql, [{
    order_id: buy!.id,
    broker_fill_id: "f-newer",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "10",
    price: "80",
    filled_at: new Date(now - 1_000),
  }]);
  assert.ok(BigInt(older!.fill.id) < BigInt(newer!.fill.id));

  // A fresh load finds both: −100, as the tracker will realize them.
  const fresh = new PortfolioState({ starting_cash: "100000" });
  await fresh.load(db.sql);
  assert.equal(fresh.realizedToday().toFixed(), "-100");

  // The engine registered the newer fill it stored; the older one's statement lost its answer,
  // so only the tracker's read-back (load) finds it.
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  state.forgetUnappliedFill(older!.fill.id);
  state.forgetUnappliedFill(newer!.fill.id);
  state.addUnappliedFill(newer!.fill.id, {
    symbol: "BTC-USDT",
    side: "buy",
    qty: d("10"),
    price: d("80"),
    filled_at: now - 1_000,
  });
  await state.load(db.sql, { open_orders: false });
  assert.deepEqual(state.unappliedFillIds(), [older!.fill.id, newer!.fill.id]);
  assert.equal(
    state.realizedToday().toFixed(),
    "-100",
    "the buy @ 80 taken before the older sell @ 90 hides the 100 lost",
  );
  // Without a mark, valued at cost: the long closed @ 90, then 10 bought @ 80 — not 20 held
  // (at 90 on average) and 10 of them sold, which would leave a basis of 900.
  const exposure = state.exposure(() => null, { unapplied_fills: true });
  assert.equal(exposure.gross.toFixed(), "800");
  assert.deepEqual(exposure.unmarked, ["BTC-USDT"]);
});
