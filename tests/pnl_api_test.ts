/**
 * The positions and portfolio routes of the trading API on a running trading
 * subtree (paper broker, position tracker, execution engine): money with the
 * 8 decimals everything stored has, and marks only from fresh prices.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { errorHandler } from "../api/errors.ts";
import { tradingRoutes } from "../api/trading.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { Decimal, parseDecimal as d } from "../trading/money.ts";
import { binanceTop, waitFor } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

/** A Kraken trade of `symbol` at `price`, `agoMs` old. */
function trade(cache: LatestCache, symbol: string, price: string, agoMs: number) {
  const us = (Date.now() - agoMs) * 1000;
  cache.update([{
    kind: "trade",
    exchange: "kraken",
    symbol,
    venue_symbol: symbol.replace("-", "/"),
    trade_id: String(us),
    price,
    qty: "1",
    side: "buy",
    ts_exchange: us,
    ts_local: us,
  }]);
}

/** The trading API with one call helper answering `{ status, body }`. */
async function api(prime: (cache: LatestCache) => void) {
  const trading = await startTradingApi({ prime });
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await trading.app.request(`/api/v1/trading${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    });
    return { status: res.status, body: await res.json() };
  };
  /** Sends a market signal and waits until its fill is applied to the position. */
  const fill = async (id: string, side: "buy" | "sell", qty: string) => {
    const res = await call("POST", "/signal", { id, symbol: "BTC-USDT", side, qty });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    await waitFor(
      async () =>
        (await call("GET", `/orders/${res.body.order.id}`)).body.order.status === "filled",
      10_000,
      `order ${id} filled`,
    );
    await waitFor(
      () => trading.trading.state.unappliedFillCount() === 0 && trading.trading.state.loaded,
      10_000,
      `fill of ${id} applied`,
    );
    await waitFor(
      async () => (await call("GET", "/positions")).body.positions.length > 0,
      10_000,
      "position stored",
    );
  };
  /** What the routes were mounted with. */
  const deps = {
    sql: trading.sql,
    engine: trading.trading.engine,
    state: trading.trading.state,
    cache: trading.cache,
    maxPriceAgeMs: 60_000,
    apiKeyHashes: [],
  };
  return Object.assign(trading, { call, fill, deps });
}

const decimals = (text: string) => (text.split(".")[1] ?? "").length;
const money = (value: Decimal) => value.toDecimalPlaces(8, Decimal.ROUND_HALF_EVEN).toFixed();

Deno.test("positions and portfolio money figures have the 8 decimals everything stored has", async () => {
  await using t = await api((c) =>
    c.update([binanceTop("BTC-USDT", "100.00000001", "100.00000002")])
  );
  await t.fill("a", "buy", "0.12345678"); // at the ask: cost basis 12.3456780024691356
  t.cache.update([binanceTop("BTC-USDT", "123.45678901", "123.45678901")]);
  const [position] = (await t.call("GET", "/positions")).body.positions;
  const { portfolio } = (await t.call("GET", "/portfolio")).body;
  const value = d("0.12345678").times("123.45678901"); // 15.2415787961… (16 decimals)
  const basis = d("0.12345678").times("100.00000002");
  assert.equal(position.mark_price, "123.45678901");
  assert.equal(position.market_value, money(value));
  assert.equal(position.unrealized_pnl, money(value.minus(basis)));
  for (const key of ["cash", "equity", "gross_exposure", "unrealized_pnl", "total_pnl"]) {
    assert.ok(decimals(portfolio[key]) <= 8, `portfolio ${key} ${portfolio[key]}`);
  }
  assert.equal(portfolio.gross_exposure, money(value));
  assert.equal(portfolio.unrealized_pnl, money(value.minus(basis)));
});

Deno.test("without a fresh price a position has no mark and the portfolio lists it unmarked", async () => {
  await using t = await api((c) => c.update([binanceTop("BTC-USDT", "100", "101")]));
  await t.fill("a", "buy", "1"); // at the ask 101
  // The same routes reading a cache that knows only that quote an hour later and a trade 30
  // minutes old (max age 60 s).
  const stale = new LatestCache();
  stale.update([binanceTop("BTC-USDT", "100", "101", { agoMs: 3_600_000 })]);
  trade(stale, "BTC-USDT", "55", 1_800_000);
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.route("/t", tradingRoutes({ ...t.deps, cache: stale }));
  const get = async (path: string) => await (await app.request(`/t${path}`)).json();
  const [position] = (await get("/positions")).positions;
  const { portfolio } = await get("/portfolio");
  assert.deepEqual(
    [position.mark_price, position.market_value, position.unrealized_pnl],
    [null, null, null],
  );
  assert.deepEqual(portfolio.unmarked, ["BTC-USDT"]);
  // Valued at cost: equity = cash + the cost basis, nothing unrealized.
  assert.equal(portfolio.gross_exposure, "101");
  assert.equal(portfolio.unrealized_pnl, "0");
  assert.equal(portfolio.equity, "100000");
});
