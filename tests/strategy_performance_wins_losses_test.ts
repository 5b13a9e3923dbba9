/**
 * strategy_performance's wins and losses, computed by hand against the real
 * pipeline (paper broker with a commission, execution engine, position
 * tracker, PostgreSQL, a private nats-server): a closing fill is judged by the
 * trade it closes — its gain on the quantity closed, less the fees paid to
 * open that quantity and its own share (`closed ÷ qty`) of its fee — while
 * realized P&L still expenses every fee when paid. Review 41: a fill was
 * judged by its own `realized_pnl`, charged with the whole fee of the fill and
 * none of the fees paid to open what it closes — so a flip whose closing part
 * was a winning trade was a loss, and a round trip that lost money after its
 * fees a win.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { Hono } from "hono";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { tradingRoutes } from "../api/trading.ts";
import { loadConfig } from "../config/mod.ts";
import { addStrategyTrades, listStrategyPerformance } from "../db/mod.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

function top(cache: LatestCache, bid: string, ask: string) {
  const us = Date.now() * 1000;
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: us,
    ts_local: us,
    bid_price: bid,
    bid_qty: "100000",
    ask_price: ask,
    ask_qty: "100000",
  }]);
}

/** The trading subtree with a 10 bps paper commission, its routes, and a market-fill helper. */
async function pipeline() {
  const nats = await startNatsServer();
  const db = await migratedDatabase();
  const config = await loadConfig({
    args: [],
    env: { TRADEWIRE_BROKERS__PAPER__COMMISSION_BPS: "10" },
  });
  const nc = await connect({ servers: nats.url });
  const cache = new LatestCache();
  const trading = tradingSupervisor({ config, nats: nc, sql: db.sql, cache, log: nullLogger });
  const root = await startRoot({ name: "root" }, [trading]);
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.notFound(notFound);
  app.route(
    "/t",
    tradingRoutes({
      sql: db.sql,
      engine: trading.engine,
      state: trading.state,
      cache,
      maxPriceAgeMs: 60_000,
      apiKeyHashes: [],
    }),
  );
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await app.request(`/t${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    });
    return { status: res.status, body: await res.json() };
  };
  await waitFor(() => trading.state.loaded, 10_000, "portfolio loaded");
  /** A market signal of strategy `s`, waited for until its fill is applied to the position. */
  const fill = async (id: string, side: "buy" | "sell", qty: string) => {
    const res = await call("POST", "/signal", { id, strategy: "s", symbol: "BTC-USDT", side, qty });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    await waitFor(
      async () =>
        (await call("GET", `/orders/${res.body.order.id}`)).body.order.status === "filled",
      10_000,
      `order ${id} filled`,
    );
    await waitFor(
      () => trading.state.unappliedFillCount() === 0,
      10_000,
      `fill of ${id} applied`,
    );
  };
  return {
    sql: db.sql,
    cache,
    trading,
    fill,
    call,
    async [Symbol.asyncDispose]() {
      await root.stop();
      await nc.close();
      await db[Symbol.asyncDispose]();
      await nats.stop();
    },
  };
}

Deno.test("a flip whose closing part is a winning trade is counted a win, not charged the fee of the opened part", async () => {
  await using t = await pipeline();
  top(t.cache, "100", "101");
  await t.fill("open", "buy", "10"); // at the ask 101, fee 1.01
  // The opening fee stays with the open quantity: stored with the position, read back by a load.
  const [stored] = await t.sql<{ open_fees: string }[]>`
    SELECT open_fees::text AS open_fees FROM positions WHERE symbol = 'BTC-USDT'`;
  assert.equal(stored?.open_fees, "1.01000000");
  const reloaded = new PortfolioState({ starting_cash: "100000" });
  await reloaded.load(t.sql);
  assert.equal(reloaded.position("BTC-USDT").open_fees?.toFixed(), "1.01");
  top(t.cache, "102", "103");
  await t.fill("flip", "sell", "110"); // at the bid 102: closes 10, opens a short of 100; fee 11.22
  // By hand: the 10 closed gain 10 × (102 − 101) = 10. Their fees: 1.01 to open them and
  // 10/110 of the flip's 11.22 = 1.02 to close them: +7.97 net — a winning trade whichever
  // way the fees are counted. The other 10.20 of the flip's fee opens the short; it is no
  // cost of the trade just closed.
  const [row] = await listStrategyPerformance(t.sql, { strategy: "s" });
  assert.equal(d(row!.realized_pnl).toFixed(), "-2.23"); // 10 − 1.01 − 11.22: fees expensed when paid
  assert.deepEqual(
    { wins: row!.wins, losses: row!.losses },
    { wins: 1, losses: 0 },
    "the flip's closing part made +7.97 net of its fees",
  );
  // The short of 100 opened carries the flip's other 10.20 of fee.
  const [short] = await t.sql<{ qty: string; open_fees: string }[]>`
    SELECT qty::text AS qty, open_fees::text AS open_fees FROM positions WHERE symbol = 'BTC-USDT'`;
  assert.deepEqual({ ...short }, { qty: "-100.00000000", open_fees: "10.20000000" });
  assert.equal(t.trading.state.position("BTC-USDT").open_fees?.toFixed(), "10.2");
});

Deno.test("a round trip that lost money after its fees is counted a loss, not a win", async () => {
  await using t = await pipeline();
  top(t.cache, "100", "101");
  await t.fill("open", "buy", "10"); // at the ask 101, fee 1.01
  top(t.cache, "101.15", "101.2");
  await t.fill("close", "sell", "10"); // at the bid 101.15, fee 1.0115
  // By hand: gross +1.5, fees 1.01 + 1.0115 = 2.0215: the round trip lost 0.5215.
  const [row] = await listStrategyPerformance(t.sql, { strategy: "s" });
  assert.equal(d(row!.realized_pnl).toFixed(), "-0.5215");
  assert.deepEqual(
    { wins: row!.wins, losses: row!.losses },
    { wins: 0, losses: 1 },
    `the strategy's only trade lost 0.5215 net of fees, yet its day reads ${row!.wins} win(s)`,
  );
});

Deno.test("a close that gains more than all its fees is a win, stored with its fill in one statement", async () => {
  await using t = await pipeline();
  top(t.cache, "100", "101");
  await t.fill("open", "buy", "10"); // at the ask 101, fee 1.01
  top(t.cache, "110", "111");
  const before = t.trading.engine.stats().fills_with_positions;
  assert.equal(before, 1, "the opening fill and its position (its opening fee) in one statement");
  await t.fill("close", "sell", "4"); // at the bid 110, fee 0.44: 36 − 0.404 − 0.44 = 35.156
  // Judged the same either way: the engine's one statement stores the fill and its position.
  assert.equal(t.trading.engine.stats().fills_with_positions, before + 1);
  const [row] = await listStrategyPerformance(t.sql, { strategy: "s" });
  assert.deepEqual({ wins: row!.wins, losses: row!.losses }, { wins: 1, losses: 0 });
  // 4/10 of the opening fee released with the 4 closed.
  const [left] = await t.sql<{ open_fees: string }[]>`
    SELECT open_fees::text AS open_fees FROM positions WHERE symbol = 'BTC-USDT'`;
  assert.equal(left?.open_fees, "0.60600000");
});

Deno.test("addStrategyTrades (the tracker's locked path) judges a closing fill by its trade, not its realized P&L", async () => {
  await using db = await migratedDatabase();
  const at = new Date();
  const fill = { strategy: "s", filled_at: at, qty: "110", price: "102", commission: "11.22" };
  await addStrategyTrades(db.sql, [
    { ...fill, realized_pnl: "-2.23", trade_pnl: "7.97" }, // the flip: a win
    { ...fill, realized_pnl: "0.4785", trade_pnl: "-0.5215" }, // a loss
    { ...fill, realized_pnl: "-11.22", trade_pnl: null }, // opening: neither
  ]);
  const [row] = await listStrategyPerformance(db.sql, { strategy: "s" });
  assert.deepEqual(
    {
      fills: row!.fills,
      wins: row!.wins,
      losses: row!.losses,
      pnl: d(row!.realized_pnl).toFixed(),
    },
    { fills: 3, wins: 1, losses: 1, pnl: "-12.9715" },
  );
});
