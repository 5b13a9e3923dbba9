/**
 * Positions and P&L against a real PostgreSQL (a fresh `tw_test_<random>`
 * database per test), some with the position tracker on a private
 * nats-server: what the portfolio view loads at a restart, the order fills
 * are applied in, the starting cash, and the per-strategy and risk figures
 * stored beside them.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { insertFills, insertOrders, type NewFill, type Order, upsertSymbols } from "../db/mod.ts";
import { RecordingClock } from "../lib/clock.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { migratedDatabase } from "./_postgres.ts";

/** Orders of strategy `s` in BTC-USDT, one per side given. */
async function ordersOf(sql: Sql, sides: Array<"buy" | "sell">): Promise<Order[]> {
  await upsertSymbols(sql, [{ symbol: "BTC-USDT" }]);
  return await insertOrders(
    sql,
    sides.map((side) => ({ strategy: "s", symbol: "BTC-USDT", side, qty: "100" })),
  );
}

/** A fill of `order` (its symbol and side). */
function fillOf(
  order: Order,
  id: string,
  qty: string,
  price: string,
  at: number,
  extra: Partial<NewFill> = {},
): NewFill {
  return {
    order_id: order.id,
    broker_fill_id: id,
    symbol: order.symbol,
    side: order.side,
    qty,
    price,
    filled_at: new Date(at),
    ...extra,
  };
}

Deno.test("at a restart, realized P&L today is today's: a fill stamped on the next day by a broker clock ahead is not in it", async () => {
  await using db = await migratedDatabase();
  const clock = new RecordingClock(Date.parse("2026-03-10T23:59:59.900Z"));
  const [buy, sell] = await ordersOf(db.sql, ["buy", "sell"]);
  await insertFills(db.sql, [
    fillOf(buy!, "a", "10", "100", clock.now() - 5_000, { realized_pnl: "0" }),
    fillOf(sell!, "b", "5", "1", clock.now() - 1_000, { realized_pnl: "-495" }),
    // The broker's clock runs 200 ms ahead of ours.
    fillOf(sell!, "c", "1", "110", Date.parse("2026-03-11T00:00:00.100Z"), {
      realized_pnl: "10",
    }),
  ]);
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  assert.equal(state.realizedToday().toFixed(), "-495");
  clock.advance(200);
  assert.equal(state.realizedToday().toFixed(), "10");
});

Deno.test("at a restart, a losing fill stored but not applied counts in realized P&L today, with its fee", async () => {
  await using db = await migratedDatabase();
  const clock = new RecordingClock(Date.parse("2026-03-10T12:00:00Z"));
  const [buy, sell] = await ordersOf(db.sql, ["buy", "sell"]);
  await insertFills(db.sql, [
    fillOf(buy!, "a", "10", "100", clock.now() - 5_000, { realized_pnl: "0" }),
  ]);
  await db.sql`
    INSERT INTO positions (symbol, qty, avg_entry_price, cost_basis, realized_pnl)
    VALUES ('BTC-USDT', 10, 100, 1000, 0)`;
  // Stored, not applied: sell 10 at 60, fee 2: −402 once applied.
  await insertFills(db.sql, [
    fillOf(sell!, "b", "10", "60", clock.now() - 1_000, { commission: "2" }),
  ]);
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  assert.equal(state.unappliedFillCount(), 1);
  assert.equal(state.realizedToday().toFixed(), "-402");
});
