/**
 * The execution engine's risk checks as a signal meets them: the exchange
 * overrides of the venue pricing the order, the US equity session when the
 * broker's market clock cannot be fetched, and the range a fill must stay in
 * for the position tracker to book it.
 */

import assert from "node:assert/strict";
import { type Broker, BrokerUnavailableError } from "../brokers/broker.ts";
import { paperBroker } from "../brokers/paper.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import type { Clock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import type { TopEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine, type SignalOutcome } from "../trading/execution.ts";
import { isUsEquityMarketOpen } from "../trading/market_hours.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";

/** A clock whose now the test sets; sleeps are short real timers. */
class SetClock implements Clock {
  constructor(public at: number) {}
  now(): number {
    return this.at;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(resolve, Math.min(ms, 50));
      signal?.addEventListener("abort", () => {
        clearTimeout(t);
        reject(signal.reason);
      }, { once: true });
    });
  }
}

/** A top of book of `symbol` on `exchange` at `atMs`, bid `bid`, ask `ask`. */
function top(
  exchange: TopEvent["exchange"],
  symbol: string,
  atMs: number,
  bid: string,
  ask: string,
): TopEvent {
  return {
    kind: "top",
    exchange,
    symbol,
    venue_symbol: symbol.replace("-", ""),
    ts_exchange: atMs * 1000,
    ts_local: atMs * 1000,
    bid_price: bid,
    bid_qty: "100",
    ask_price: ask,
    ask_qty: "100",
  };
}

/**
 * An engine on a scratch database, trading through a paper broker (or the
 * broker `wrap` makes of it) at the clock's time with the risk section
 * `risk` makes of the configuration; started, and stopped when disposed.
 */
async function startedEngine(options: {
  clock: SetClock;
  cache: LatestCache;
  risk: (config: Config) => Config["risk"];
  wrap?: (paper: Broker) => Broker;
  paper?: Partial<Config["brokers"]["paper"]>;
}) {
  const db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const state = new PortfolioState({ starting_cash: "100000", clock: options.clock });
  await state.load(db.sql);
  const paper = paperBroker({
    cache: options.cache,
    options: { ...base.brokers.paper, ...options.paper },
    max_price_age_ms: base.execution.max_price_age_ms,
    clock: options.clock,
  });
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["paper", options.wrap?.(paper) ?? paper]]),
    cache: options.cache,
    state,
    config: { risk: options.risk(base), execution: base.execution },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    clock: options.clock,
    log: nullLogger,
    options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20 },
  });
  await engine.start();
  return {
    engine,
    /** The scratch database. */
    sql: db.sql,
    /** Decides one signal of `body`. */
    async decide(body: Record<string, unknown>): Promise<SignalOutcome | undefined> {
      const [outcome] = await engine.processSignals([
        { body, strategy: "risk", source: "rest" },
      ]);
      return outcome;
    },
    async [Symbol.asyncDispose]() {
      await engine.stop();
      await paper[Symbol.asyncDispose]?.();
      await db[Symbol.asyncDispose]();
    },
  };
}

/** The rules an outcome was refused for. */
function rulesOf(outcome: SignalOutcome | undefined): string[] {
  const reasons = (outcome as { reasons?: Array<{ rule?: string }> } | undefined)?.reasons ?? [];
  return reasons.map((r) => r.rule ?? "");
}

Deno.test("an order priced from Alpaca keeps to alpaca's market hours whether or not it names the exchange", async () => {
  // Monday 2026-12-07 18:30 ET: after the close; Alpaca still streams (extended hours).
  const clock = new SetClock(Date.parse("2026-12-07T23:30:00Z"));
  assert.equal(isUsEquityMarketOpen(clock.now()).open, false);
  const cache = new LatestCache({ clock });
  cache.update([
    top("alpaca", "AAPL", clock.now(), "190.00", "190.02"),
    // MSFT's newest price is an hour old: too old to price an order, not to say whose it is.
    top("alpaca", "MSFT", clock.now() - 3_600_000, "400.00", "400.02"),
  ]);
  // Every limit off but the default exchange override (alpaca: us_equity).
  await using t = await startedEngine({
    clock,
    cache,
    risk: (config) => ({ ...noRiskLimits(config), exchanges: config.risk.exchanges }),
  });
  const body = { symbol: "AAPL", side: "buy", qty: "1", type: "limit", limit_price: "150" };
  const named = await t.decide({ ...body, id: "named", exchange: "alpaca" });
  assert.deepEqual(rulesOf(named), ["market_hours"], JSON.stringify(named));
  const unnamed = await t.decide({ ...body, id: "unnamed" });
  assert.deepEqual(rulesOf(unnamed), ["market_hours"], JSON.stringify(unnamed));
  const stale = await t.decide({ ...body, id: "stale", symbol: "MSFT", limit_price: "390" });
  assert.deepEqual(rulesOf(stale), ["market_hours"], JSON.stringify(stale));
  // Named for another venue, its overrides (none) apply.
  const kraken = await t.decide({ ...body, id: "kraken", exchange: "kraken" });
  assert.equal(kraken?.status, "accepted", JSON.stringify(kraken));
});

/** The paper broker with an Alpaca-like market clock answering `answer(now)`, or failing while `down`. */
function withMarketClock(
  clock: Clock,
  answer: (now: number) => { open: boolean; next_open?: number; next_close?: number },
) {
  const control = { down: false, calls: 0 };
  const wrap = (paper: Broker): Broker =>
    Object.assign(paper, {
      clock: () => {
        control.calls++;
        if (control.down) {
          return Promise.reject(new BrokerUnavailableError("connection refused"));
        }
        const now = clock.now();
        const c = answer(now);
        return Promise.resolve({
          is_open: c.open,
          next_open: c.next_open,
          next_close: c.next_close,
          timestamp: now,
        });
      },
    });
  return { control, wrap };
}

Deno.test("with the broker clock unreachable the built-in NYSE calendar decides, not a clock fetched before the weekend", async () => {
  // Friday 2026-12-04 10:00 ET: open.
  const clock = new SetClock(Date.parse("2026-12-04T15:00:00Z"));
  const cache = new LatestCache({ clock });
  cache.update([top("binance", "BTC-USDT", clock.now(), "100", "100.02")]);
  const { control, wrap } = withMarketClock(clock, (now) => isUsEquityMarketOpen(now));
  await using t = await startedEngine({
    clock,
    cache,
    risk: (config) => ({ ...noRiskLimits(config), market_hours: "us_equity" }),
    wrap,
  });
  const body = { symbol: "BTC-USDT", side: "buy", qty: "0.1", type: "limit", limit_price: "90" };
  const friday = await t.decide({ ...body, id: "fri" });
  assert.equal(friday?.status, "accepted", JSON.stringify(friday));
  assert.equal(control.calls, 1);

  // Monday 2026-12-07 10:00 ET: a regular session; the broker clock is down.
  clock.at = Date.parse("2026-12-07T15:00:00Z");
  cache.update([top("binance", "BTC-USDT", clock.now(), "100", "100.02")]);
  control.down = true;
  const monday = await t.decide({ ...body, id: "mon" });
  assert.equal(control.calls, 2, "the engine tried the broker clock again");
  assert.equal(monday?.status, "accepted", JSON.stringify(monday));
  // Monday 17:00 ET: closed by the calendar.
  clock.at = Date.parse("2026-12-07T22:00:00Z");
  cache.update([top("binance", "BTC-USDT", clock.now(), "100", "100.02")]);
  const evening = await t.decide({ ...body, id: "eve" });
  assert.deepEqual(rulesOf(evening), ["market_hours"], JSON.stringify(evening));
});

Deno.test("an expired broker clock is not kept when the next fetch fails: the calendar decides at once", async () => {
  // Friday 2026-12-04 10:00 ET. The broker says closed (a closure the calendar does not know).
  const clock = new SetClock(Date.parse("2026-12-04T15:00:00Z"));
  const cache = new LatestCache({ clock });
  cache.update([top("binance", "BTC-USDT", clock.now(), "100", "100.02")]);
  const mondayOpen = Date.parse("2026-12-07T14:30:00Z");
  const { control, wrap } = withMarketClock(clock, () => ({
    open: false,
    next_open: mondayOpen,
    next_close: Date.parse("2026-12-07T21:00:00Z"),
  }));
  await using t = await startedEngine({
    clock,
    cache,
    risk: (config) => ({ ...noRiskLimits(config), market_hours: "us_equity" }),
    wrap,
  });
  const body = { symbol: "BTC-USDT", side: "buy", qty: "0.1", type: "limit", limit_price: "90" };
  const closed = await t.decide({ ...body, id: "closed" });
  assert.deepEqual(rulesOf(closed), ["market_hours"], JSON.stringify(closed));
  // A minute later the broker's answer has expired (30 s) and the broker cannot be reached.
  clock.at += 60_000;
  cache.update([top("binance", "BTC-USDT", clock.now(), "100", "100.02")]);
  control.down = true;
  const calendar = await t.decide({ ...body, id: "calendar" });
  assert.equal(control.calls, 2);
  assert.equal(calendar?.status, "accepted", JSON.stringify(calendar));
});

Deno.test("with every limit off an order whose fill the tracker could not book is refused as numeric_range", async () => {
  const clock = new SetClock(Date.now());
  const cache = new LatestCache({ clock });
  cache.update([top("binance", "BTC-USDT", clock.now(), "59999", "60001")]);
  await using t = await startedEngine({ clock, cache, risk: noRiskLimits });
  // 20,000,000 × 60,000 = 1.2e12: the fill fits `fills`, the cash after it (13 digits) does not
  // — at the ask, 20,000,000 × 60,001, where the paper broker fills it.
  const big = await t.decide({ id: "big", symbol: "BTC-USDT", side: "buy", qty: "20000000" });
  assert.deepEqual(rulesOf(big), ["numeric_range"], JSON.stringify(big));
  const message = (big as { reasons: Array<{ message: string }> }).reasons[0]!.message;
  assert.match(message, /cash after the order -1200019900000/);
  assert.match(message, /more than 12 integer digits/);
  // One that fits is taken.
  const fits = await t.decide({ id: "fits", symbol: "BTC-USDT", side: "buy", qty: "1" });
  assert.equal(fits?.status, "accepted", JSON.stringify(fits));
});

/** The message of the one reason `outcome` was refused for. */
function messageOf(outcome: SignalOutcome | undefined): string {
  return (outcome as { reasons: Array<{ message: string }> }).reasons[0]!.message;
}

Deno.test("numeric_range counts the buys of other symbols accepted earlier in the batch in the cash after", async () => {
  const clock = new SetClock(Date.now());
  const cache = new LatestCache({ clock });
  cache.update([
    top("binance", "BTC-USDT", clock.now(), "59999", "60000"),
    top("binance", "ETH-USDT", clock.now(), "2999", "3000"),
  ]);
  await using t = await startedEngine({ clock, cache, risk: noRiskLimits });
  // Each alone leaves cash about -9e11 (12 digits); both filled about -1.8e12 (13 digits). The
  // BTC buy counts at the price it was checked at, 15,000,000 × 60,000 (the ask).
  const [btc, eth] = await t.engine.processSignals([
    {
      body: { id: "btc", symbol: "BTC-USDT", side: "buy", qty: "15000000" },
      strategy: "risk",
      source: "rest",
    },
    {
      body: { id: "eth", symbol: "ETH-USDT", side: "buy", qty: "300000000" },
      strategy: "risk",
      source: "rest",
    },
  ]);
  assert.equal(btc?.status, "accepted", JSON.stringify(btc));
  assert.deepEqual(rulesOf(eth), ["numeric_range"], JSON.stringify(eth));
  assert.match(messageOf(eth), /open buys of other symbols 900000000000\b/);
  assert.match(messageOf(eth), /more than 12 integer digits/);
});

Deno.test("numeric_range counts a buy of another symbol resting at the broker in the cash after", async () => {
  const clock = new SetClock(Date.now());
  const cache = new LatestCache({ clock });
  cache.update([
    top("binance", "BTC-USDT", clock.now(), "59999", "60000"),
    top("binance", "ETH-USDT", clock.now(), "2999", "3000"),
  ]);
  await using t = await startedEngine({ clock, cache, risk: noRiskLimits });
  // 18,000,000 × 50,000 = 9e11, resting below the ask.
  const resting = await t.decide({
    id: "resting",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "18000000",
    type: "limit",
    limit_price: "50000",
    time_in_force: "gtc",
  });
  assert.equal(resting?.status, "accepted", JSON.stringify(resting));
  await t.engine.idle();
  const eth = await t.decide({ id: "eth", symbol: "ETH-USDT", side: "buy", qty: "300000000" });
  assert.deepEqual(rulesOf(eth), ["numeric_range"], JSON.stringify(eth));
  assert.match(messageOf(eth), /open buys of other symbols 900000000000\b/);
  // A small one still fits.
  const small = await t.decide({ id: "small", symbol: "ETH-USDT", side: "buy", qty: "1" });
  assert.equal(small?.status, "accepted", JSON.stringify(small));
});

Deno.test("numeric_range allows for the paper broker's commission and slippage in the cash after", async () => {
  const clock = new SetClock(Date.now());
  const cache = new LatestCache({ clock });
  cache.update([top("binance", "ETH-USDT", clock.now(), "2999", "3000")]);
  await using t = await startedEngine({
    clock,
    cache,
    risk: noRiskLimits,
    paper: { commission_bps: "10" },
  });
  // 333,200,000 × 3,000 (the ask) = 999,600,000,000 fits; with its 10 bps commission the cash
  // after is 100,000 - 999,600,000,000 - 999,600,000 = -1,000,599,500,000: 13 digits.
  const big = await t.decide({ id: "big", symbol: "ETH-USDT", side: "buy", qty: "333200000" });
  assert.deepEqual(rulesOf(big), ["numeric_range"], JSON.stringify(big));
  assert.match(messageOf(big), /cash after the order -1000599500000 /);
  assert.match(messageOf(big), /fees and slippage up to 999600000\b/);
  // Without the commission it would fit: the same order at a broker charging nothing is taken.
  await using free = await startedEngine({ clock, cache, risk: noRiskLimits });
  const taken = await free.decide({ id: "big", symbol: "ETH-USDT", side: "buy", qty: "333200000" });
  assert.equal(taken?.status, "accepted", JSON.stringify(taken));
});

Deno.test("numeric_range counts a buy of the same symbol resting at a higher limit at that limit, not at the new order's", async () => {
  const clock = new SetClock(Date.now());
  const cache = new LatestCache({ clock });
  cache.update([top("binance", "BTC-USDT", clock.now(), "59999", "60000")]);
  await using t = await startedEngine({ clock, cache, risk: noRiskLimits });
  // 18,000,000 × 50,000 = 9e11, resting below the ask.
  const resting = await t.decide({
    id: "resting",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "18000000",
    type: "limit",
    limit_price: "50000",
    time_in_force: "gtc",
  });
  assert.equal(resting?.status, "accepted", JSON.stringify(resting));
  await t.engine.idle();
  // 6,000,000 × 20,000 = 1.2e11 more: both filled, cash 100,000 − 9e11 − 1.2e11 ≈ −1.02e12, 13
  // digits. Valued at 20,000, the resting 18,000,000 would be 3.6e11 and the cash −4.8e11.
  const second = await t.decide({
    id: "second",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "6000000",
    type: "limit",
    limit_price: "20000",
    time_in_force: "gtc",
  });
  assert.deepEqual(rulesOf(second), ["numeric_range"], JSON.stringify(second));
  assert.match(
    messageOf(second),
    /cash after the order -1019999900000 \(cash 100000, the order 120000000000 \(qty 6000000 × 20000\), open buys of BTC-USDT 900000000000\)/,
  );
  // A small one still fits.
  const small = await t.decide({
    id: "small",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "1",
    type: "limit",
    limit_price: "20000",
    time_in_force: "gtc",
  });
  assert.equal(small?.status, "accepted", JSON.stringify(small));
});

Deno.test("numeric_range counts a paper market buy at the ask it fills at, not the mid", async () => {
  const clock = new SetClock(Date.now());
  const cache = new LatestCache({ clock });
  // An ordinary one-tick spread.
  cache.update([top("binance", "ETH-USDT", clock.now(), "2999", "3000")]);
  await using t = await startedEngine({ clock, cache, risk: noRiskLimits });
  // 333,350,000 × 2,999.5 (the mid) = 999,883,325,000 would leave cash at 12 digits; the paper
  // broker fills it at the ask: 1,000,050,000,000, cash -1,000,049,900,000 (13 digits).
  const big = await t.decide({ id: "big", symbol: "ETH-USDT", side: "buy", qty: "333350000" });
  assert.deepEqual(rulesOf(big), ["numeric_range"], JSON.stringify(big));
  assert.match(
    messageOf(big),
    /cash after the order -1000049900000 \(cash 100000, the order 1000050000000 \(qty 333350000 × 3000\)\)/,
  );
  // A stop buy likewise (its stop below the ask: it fills at the ask).
  const stop = await t.decide({
    id: "stop",
    symbol: "ETH-USDT",
    side: "buy",
    qty: "333350000",
    type: "stop",
    stop_price: "2999.5",
  });
  assert.deepEqual(rulesOf(stop), ["numeric_range"], JSON.stringify(stop));
  // One whose fill at the ask fits is taken, and fills there.
  const fits = await t.decide({ id: "fits", symbol: "ETH-USDT", side: "buy", qty: "333300000" });
  assert.equal(fits?.status, "accepted", JSON.stringify(fits));
  await t.engine.idle();
  let prices: string[] = [];
  await waitFor(
    async () => {
      const rows = await t.sql<Array<{ price: string }>>`SELECT price::text FROM fills`;
      prices = rows.map((r) => r.price);
      return prices.length > 0;
    },
    10_000,
    "the paper fill",
  );
  assert.deepEqual(prices, ["3000.00000000"]);
});
