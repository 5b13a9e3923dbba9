/**
 * The starting cash a portfolio without one is given from its figures
 * (`initPortfolio`, as migration 0005 did): cash − realized P&L + Σ cost
 * basis, rounded half-even to 8 decimals, as the engine rounds money (README:
 * figures PostgreSQL computes "round the same way (`round_half_even`,
 * migration 0006)"). Review 41: it was rounded with `round`, half away from
 * zero.
 */

import assert from "node:assert/strict";
import { upsertSymbols } from "../db/mod.ts";
import { applyTrackedFill, PortfolioState } from "../trading/portfolio_state.ts";
import { emptyPosition } from "../trading/positions.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("a starting cash derived from the figures rounds half-even: 0.00000001 bought @ 0.5 from 100000 started with 100000", async () => {
  await using db = await migratedDatabase();
  // README's own example: 0.00000001 @ 0.5 moves no cash; the basis keeps 0.000000005.
  const bought = applyTrackedFill(emptyPosition("BTC-USDT"), d("100000"), {
    symbol: "BTC-USDT",
    side: "buy",
    qty: d("0.00000001"),
    price: d("0.5"),
    fee: d("0"),
    filled_at: Date.now(),
  });
  assert.equal(bought.cash.toFixed(), "100000");
  assert.equal(bought.position.cost_basis!.toFixed(), "0.000000005");
  // The portfolio as it stood before its starting cash was stored (created by other means).
  await upsertSymbols(db.sql, [{ symbol: "BTC-USDT" }]);
  await db.sql`UPDATE portfolios SET cash = 100000, equity = 100000 WHERE id = 'default'`;
  await db.sql`
    INSERT INTO positions (symbol, qty, avg_entry_price, cost_basis, realized_pnl)
    VALUES ('BTC-USDT', 0.00000001, 0.5, 0.000000005, 0)`;
  const state = new PortfolioState({ starting_cash: "1" });
  await state.load(db.sql);
  assert.equal(
    state.starting_cash.toFixed(),
    "100000",
    "100000 + 0.000000005 rounded half away from zero, not half-even",
  );
});
