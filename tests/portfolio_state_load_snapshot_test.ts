/**
 * `PortfolioState.load` reads one snapshot: a transaction committing while
 * the load runs (a fill applied: its position stored and its `realized_pnl`
 * set) is wholly in what is read or not at all — never the fill applied but
 * its position not (review 35: positions, P&L by day and the unapplied fills
 * were read by separate autocommit statements).
 */

import assert from "node:assert/strict";
import { type Fill, insertFills, insertOrders, upsertSymbols } from "../db/mod.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("PortfolioState.load reads one snapshot: a commit landing during the load is all in or all out", async () => {
  await using db = await migratedDatabase();
  const dbName = new URL(db.url).pathname.slice(1);
  await upsertSymbols(db.sql, [{ symbol: "BTC-USDT" }]);
  const [order] = await insertOrders(db.sql, [{
    client_order_id: "load-snap-1",
    strategy: "test",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "2",
  }]);
  const [inserted] = await insertFills(db.sql, [{
    order_id: order!.id,
    broker_fill_id: "load-snap-f1",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "2",
    price: "100",
    commission: "0",
    filled_at: new Date(),
  }]);
  const fillId = (inserted as { fill: Fill }).fill.id;
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  assert.deepEqual(state.unappliedFillIds(), [fillId]);

  // A transaction applying the fill, holding `orders` locked until told to commit: a load that
  // started reading before its commit waits on that lock part-way.
  const held = Promise.withResolvers<void>();
  const commit = Promise.withResolvers<void>();
  const writer = db.sql.begin(async (tx) => {
    await tx`UPDATE fills SET realized_pnl = 0 WHERE id = ${fillId}`;
    await tx`INSERT INTO positions (portfolio_id, symbol, qty, avg_entry_price, cost_basis,
        realized_pnl, last_fill_id)
      VALUES (${order!.portfolio_id}, 'BTC-USDT', 2, 100, 200, 0, ${fillId})`;
    await tx`LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`;
    held.resolve();
    await commit.promise;
  });
  try {
    await held.promise;
    const loading = state.load(db.sql, { open_orders: false });
    await waitFor(
      async () => {
        const rows = await db.sql`
          SELECT 1 FROM pg_stat_activity WHERE datname = ${dbName} AND wait_event_type = 'Lock'`;
        return rows.length > 0;
      },
      5_000,
      "the load waits on the writer's lock",
    );
    commit.resolve();
    await writer;
    await loading;
    const seen = {
      qty: state.position("BTC-USDT").qty.toFixed(),
      unapplied: state.unappliedFillIds(),
    };
    assert.ok(
      (seen.qty === "0" && seen.unapplied.length === 1) ||
        (seen.qty === "2" && seen.unapplied.length === 0),
      `a mixed state: position qty ${seen.qty} with unapplied fills ${
        JSON.stringify(seen.unapplied)
      } (the fill is applied exactly when the position holds it)`,
    );

    await state.load(db.sql);
    assert.equal(state.position("BTC-USDT").qty.toFixed(), "2");
    assert.deepEqual(state.unappliedFillIds(), []);
    assert.equal(state.lastFillId("BTC-USDT"), fillId);
  } finally {
    commit.resolve();
    await writer.catch(() => {});
  }
});
