/**
 * Money rounded in PostgreSQL rounds as the engine does (half to even,
 * trading/money.ts): `round_half_even` (migration 0006) in the figures the
 * repositories compute in SQL — a position's market value and unrealized P&L
 * at a mark, a strategy's notional, the exposure totals.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  findPosition,
  markPositions,
  upsertPortfolio,
  upsertPosition,
  upsertSymbols,
} from "../db/mod.ts";
import { Decimal, toDb } from "../trading/money.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("figures computed in PostgreSQL round a tie half to even, as the engine rounds money", async () => {
  await using db = await migratedDatabase();
  await upsertSymbols(db.sql, [{ symbol: "AAPL" }]);
  await upsertPortfolio(db.sql, { id: "default", cash: "1000" });
  // 0.00000001 held, marked at 0.5: a value of 0.000000005 exactly, which the engine (toDb,
  // half-even) stores as 0; PostgreSQL's round() would say 0.00000001.
  await upsertPosition(db.sql, {
    symbol: "AAPL",
    qty: "0.00000001",
    avg_entry_price: "1",
    cost_basis: "0.00000001",
    realized_pnl: "0",
  });
  assert.equal(await markPositions(db.sql, { AAPL: "0.5" }), 1);
  const marked = await findPosition(db.sql, "AAPL");
  assert.equal(marked?.market_value, toDb(new Decimal("0.00000001").times("0.5")));
  assert.equal(marked?.market_value, "0.00000000");
  // −0.000000005 (value 0.000000005 − basis 0.00000001): to even is 0.
  assert.equal(marked?.unrealized_pnl, "0.00000000");
  // 0.00000003 at 0.5 = 0.000000015: to even is 0.00000002, as half away from zero.
  await upsertPosition(db.sql, {
    symbol: "AAPL",
    qty: "0.00000003",
    avg_entry_price: "1",
    cost_basis: "0.00000003",
    realized_pnl: "0",
  });
  await markPositions(db.sql, { AAPL: "0.5" });
  const again = await findPosition(db.sql, "AAPL");
  assert.equal(again?.market_value, "0.00000002");
  assert.equal(again?.unrealized_pnl, "-0.00000002");
  const [half, odd, negative] = await db.sql<{ v: string }[]>`
    SELECT round_half_even(v, 8)::text AS v
    FROM (VALUES (1, 2.123456785::numeric), (2, 2.123456795), (3, -0.000000025)) t(i, v)
    ORDER BY i`;
  assert.deepEqual([half!.v, odd!.v, negative!.v], ["2.12345678", "2.12345680", "-0.00000002"]);
});
