/**
 * The engine's risk checks price an order where the paper broker fills it and
 * value gross exposure at the marks: max_order_notional at the touch (a market
 * buy at the ask, a sell at the bid above the last trade), max_gross_exposure
 * with a resting limit buy at the mark. A real engine and paper broker on a
 * scratch database.
 */

import assert from "node:assert/strict";
import { paperBroker } from "../brokers/paper.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { getOrder, listFills } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import type { MarketEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine, type SignalOutcome } from "../trading/execution.ts";
import { parseDecimal } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";

/** A symbol's quote on Binance, and optionally a trade received just after it. */
interface Quote {
  symbol: string;
  bid: string;
  ask: string;
  trade?: string;
}

function eventsOf(quote: Quote): MarketEvent[] {
  const us = Date.now() * 1000;
  const base = {
    exchange: "binance" as const,
    symbol: quote.symbol,
    venue_symbol: quote.symbol.replace("-", ""),
    ts_exchange: us,
    ts_local: us,
  };
  const events: MarketEvent[] = [{
    ...base,
    kind: "top",
    bid_price: quote.bid,
    bid_qty: "100",
    ask_price: quote.ask,
    ask_qty: "100",
  }];
  if (quote.trade !== undefined) {
    // Newer than the quote: the last price is the trade's.
    events.push({
      ...base,
      ts_exchange: us + 1,
      ts_local: us + 1,
      kind: "trade",
      trade_id: String(us),
      price: quote.trade,
      qty: "1",
      side: "sell",
    });
  }
  return events;
}

/** A started engine trading through the paper broker, quotes kept fresh, risk from `risk`. */
async function startedEngine(quotes: Quote[], risk: (config: Config) => Config["risk"]) {
  const db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const state = new PortfolioState({ starting_cash: "1000000" });
  await state.load(db.sql);
  const cache = new LatestCache();
  const refresh = () => cache.update(quotes.flatMap(eventsOf));
  refresh();
  const timer = setInterval(refresh, 100);
  const paper = paperBroker({
    cache,
    options: base.brokers.paper,
    max_price_age_ms: base.execution.max_price_age_ms,
  });
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["paper", paper]]),
    cache,
    state,
    config: { risk: risk(base), execution: base.execution },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    log: nullLogger,
    options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20 },
  });
  await engine.start();
  return {
    async decide(body: Record<string, unknown>): Promise<SignalOutcome | undefined> {
      const [outcome] = await engine.processSignals([{
        body,
        strategy: "fillprice",
        source: "rest",
      }]);
      return outcome;
    },
    /** What an outcome came to: its rejection, or the fill of an accepted order. */
    async seen(outcome: SignalOutcome | undefined): Promise<string> {
      if (outcome?.status !== "accepted") return JSON.stringify(outcome);
      await waitFor(
        async () => (await getOrder(db.sql, outcome.order.id)).status === "filled",
        5_000,
        "the order fills",
      );
      const [fill] = (await listFills(db.sql, { order_id: outcome.order.id, limit: 10 })).items;
      const notional = parseDecimal(fill!.qty).times(parseDecimal(fill!.price));
      return `accepted, filled ${fill!.qty} @ ${fill!.price}: notional ${notional.toFixed()}`;
    },
    async [Symbol.asyncDispose]() {
      clearInterval(timer);
      await engine.stop();
      await paper[Symbol.asyncDispose]();
      await db[Symbol.asyncDispose]();
    },
  };
}

function refusedFor(outcome: SignalOutcome | undefined, rule: string): boolean {
  return outcome?.status === "rejected" &&
    outcome.reasons.some((r) => "rule" in r && r.rule === rule);
}

Deno.test("max_order_notional holds a market buy at the ask it fills at, not at the mid", async () => {
  // Bid 49000, ask 51000: the mid is 50000. A market buy of 2 is 100000 at the mid, within
  // max_order_notional 100000, and the paper broker fills it at the ask: 102000.
  await using h = await startedEngine(
    [{ symbol: "BTC-USDT", bid: "49000", ask: "51000" }],
    (config) => ({ ...noRiskLimits(config), max_order_notional: "100000" }),
  );
  const over = await h.decide({ id: "mkt-2", symbol: "BTC-USDT", side: "buy", qty: "2" });
  assert.ok(refusedFor(over, "max_notional"), await h.seen(over));
  assert.ok(
    over?.status === "rejected" && JSON.stringify(over.reasons).includes("(qty 2 × 51000)"),
    JSON.stringify(over),
  );
  // 1.96 × 51000 = 99960 fits, and fills at the ask.
  const under = await h.decide({ id: "mkt-1.96", symbol: "BTC-USDT", side: "buy", qty: "1.96" });
  assert.match(await h.seen(under), /^accepted, filled 1\.96000000 @ 51000\.00000000/);
});

Deno.test("max_order_notional holds a market or marketable limit sell at the bid above the last trade", async () => {
  // The last trade, 50000, is under the bid, 51000: a sell of 2 is 100000 at the trade and
  // fills at the bid, 102000.
  await using h = await startedEngine(
    [{ symbol: "BTC-USDT", bid: "51000", ask: "51100", trade: "50000" }],
    (config) => ({ ...noRiskLimits(config), max_order_notional: "100000" }),
  );
  const market = await h.decide({ id: "sell-mkt", symbol: "BTC-USDT", side: "sell", qty: "2" });
  assert.ok(refusedFor(market, "max_notional"), await h.seen(market));
  const limit = await h.decide({
    id: "sell-limit",
    symbol: "BTC-USDT",
    side: "sell",
    qty: "2",
    type: "limit",
    limit_price: "49000",
    time_in_force: "gtc",
  });
  assert.ok(refusedFor(limit, "max_notional"), await h.seen(limit));
});

Deno.test("max_gross_exposure counts a resting limit buy at the mark, as for other symbols' orders", async () => {
  // BTC-USDT's mark is 50000; a limit buy of 2.1 at 46000 (8% under, inside the 10% collar) is
  // 105000 at the mark, over max_gross_exposure 100000 — checked at its limit it was 96600,
  // and the engine then refused an unrelated ETH order for the 105000 it counted at the mark.
  await using h = await startedEngine(
    [
      { symbol: "BTC-USDT", bid: "49999", ask: "50001" },
      { symbol: "ETH-USDT", bid: "2999", ask: "3001" },
    ],
    (config) => ({
      ...noRiskLimits(config),
      price_collar_pct: "10",
      max_gross_exposure: "100000",
    }),
  );
  const limitBuy = (id: string, symbol: string, qty: string, price: string) =>
    h.decide({
      id,
      symbol,
      side: "buy",
      qty,
      type: "limit",
      limit_price: price,
      time_in_force: "gtc",
    });
  const over = await limitBuy("gross-btc-2.1", "BTC-USDT", "2.1", "46000");
  assert.ok(refusedFor(over, "max_gross_exposure"), JSON.stringify(over));
  assert.ok(
    over?.status === "rejected" && JSON.stringify(over.reasons).includes("after the order 105000"),
    JSON.stringify(over),
  );
  // 1.9 at the mark is 95000: accepted, and counted the same for the next order of any symbol.
  const btc = await limitBuy("gross-btc-1.9", "BTC-USDT", "1.9", "46000");
  assert.equal(btc?.status, "accepted", JSON.stringify(btc));
  const eth = await limitBuy("gross-eth-1", "ETH-USDT", "1", "3000");
  assert.equal(eth?.status, "accepted", JSON.stringify(eth)); // 95000 + 3000
  const more = await limitBuy("gross-eth-1.67", "ETH-USDT", "0.67", "3000");
  assert.ok(refusedFor(more, "max_gross_exposure"), JSON.stringify(more)); // 95000 + 5010
});
