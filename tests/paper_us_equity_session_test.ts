/**
 * The paper broker fills US equity orders only in the regular session (the
 * NYSE calendar, trading/market_hours.ts), as Alpaca does for orders without
 * `extended_hours` — though Alpaca streams quotes and trades from 04:00 to
 * 20:00 ET. While the session is closed a limit does not fill, a stop is not
 * set off, and prices seen then never count; at the first update after the
 * opening bell the resting orders are matched again. An order submitted while
 * closed (a market order too, or one reconciliation resubmits) waits for the
 * open; ioc/fok is cancelled. Crypto is unaffected.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { BrokerEvent, BrokerOrderRequest } from "../brokers/broker.ts";
import { BrokerRejectedError } from "../brokers/broker.ts";
import { paperBroker, type PaperBrokerOptions } from "../brokers/paper.ts";
import { configuredBrokers } from "../actors/trading.ts";
import { ConfigError, loadConfig } from "../config/mod.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import type { Exchange, TopEvent, TradeEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { isUsEquityMarketOpen } from "../trading/market_hours.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";

const NO_FEES = { commission_bps: "0", commission_min: "0", slippage_bps: "0" };

// December 2026, New York on EST (UTC−5).
/** Tuesday 2026-12-08 11:00 ET: the regular session. */
const TUE_SESSION = Date.parse("2026-12-08T16:00:00Z");
/** Tuesday 18:30 ET: after hours. */
const TUE_AFTER_HOURS = Date.parse("2026-12-08T23:30:00Z");
/** Tuesday 19:00 ET: after hours. */
const TUE_EVENING = Date.parse("2026-12-09T00:00:00Z");
/** Wednesday 04:05 ET: pre-market. */
const WED_PRE_MARKET = Date.parse("2026-12-09T09:05:00Z");
/** Wednesday 09:30 ET: the opening bell. */
const WED_OPEN = Date.parse("2026-12-09T14:30:00Z");

/** A clock whose now the test sets; sleeps are short real timers. */
class SetClock implements Clock {
  constructor(public at: number) {}
  now(): number {
    return this.at;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return systemClock.sleep(Math.min(ms, 50), signal);
  }
}

/** A best bid/ask of `symbol` on `exchange`, received at `atMs`. */
function top(
  symbol: string,
  atMs: number,
  bid: string,
  ask: string,
  exchange: Exchange = "alpaca",
): TopEvent {
  return {
    kind: "top",
    exchange,
    symbol,
    venue_symbol: symbol,
    ts_exchange: atMs * 1000,
    ts_local: atMs * 1000,
    bid_price: bid,
    bid_qty: "100",
    ask_price: ask,
    ask_qty: "100",
  };
}

/** A trade of `symbol` on Alpaca printed at `printedMs` and received at `receivedMs`. */
function trade(
  symbol: string,
  printedMs: number,
  price: string,
  receivedMs = printedMs,
): TradeEvent {
  return {
    kind: "trade",
    exchange: "alpaca",
    symbol,
    venue_symbol: symbol,
    trade_id: `t-${printedMs}-${price}`,
    price,
    qty: "100",
    side: "sell",
    ts_exchange: printedMs * 1000,
    ts_local: receivedMs * 1000,
  };
}

function order(o: Partial<BrokerOrderRequest> & { client_order_id: string }): BrokerOrderRequest {
  return {
    symbol: "AAPL",
    side: "buy",
    type: "limit",
    time_in_force: "gtc",
    qty: d("10"),
    limit_price: null,
    stop_price: null,
    exchange: "alpaca",
    ...o,
  };
}

/** A fill or cancel, as comparable text. */
function summary(event: BrokerEvent): string {
  if (event.type === "fill") return `fill ${event.client_order_id} ${event.price.toFixed()}`;
  if (event.type === "cancelled") return `cancelled ${event.client_order_id}: ${event.reason}`;
  return `${event.type} ${event.client_order_id}`;
}

/** A paper broker without NATS on a clock set by the test, its events collected. */
function scene(start: number, options: PaperBrokerOptions = NO_FEES) {
  const clock = new SetClock(start);
  const cache = new LatestCache({ clock });
  const broker = paperBroker({ cache, options, max_price_age_ms: 5_000, clock });
  const events: BrokerEvent[] = [];
  broker.onEvent((event) => {
    events.push(event);
  });
  /** Sets the clock to `atMs`, applies `prices` and re-evaluates AAPL (or `symbol`) on `exchange`. */
  const tick = async (
    atMs: number,
    prices: Array<TopEvent | TradeEvent>,
    { symbol = "AAPL", exchange = "alpaca" as Exchange } = {},
  ): Promise<number> => {
    clock.at = atMs;
    cache.update(prices);
    const filled = broker.onPrice(exchange, symbol);
    await broker.settled();
    return filled;
  };
  const fills = () => events.filter((e) => e.type === "fill").map(summary);
  return { clock, cache, broker, events, tick, fills };
}

Deno.test("a gtc limit buy of a US equity accepted in the session does not fill after hours or pre-market, and fills at the first quote after the open", async () => {
  const clock = new SetClock(TUE_SESSION);
  assert.equal(isUsEquityMarketOpen(clock.now()).open, true);
  const cache = new LatestCache({ clock });
  cache.update([top("AAPL", clock.now(), "200.00", "200.02")]);

  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  const paper = paperBroker({
    cache,
    options: base.brokers.paper,
    max_price_age_ms: base.execution.max_price_age_ms,
    clock,
  });
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["paper", paper]]),
    cache,
    state,
    // Every limit off but the default exchange override (alpaca: us_equity).
    config: {
      risk: { ...noRiskLimits(base), exchanges: base.risk.exchanges },
      execution: base.execution,
    },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    clock,
    log: nullLogger,
    options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20 },
  });
  await engine.start();
  try {
    const [outcome] = await engine.processSignals([{
      body: {
        id: "gtc-1",
        symbol: "AAPL",
        exchange: "alpaca",
        side: "buy",
        qty: "10",
        type: "limit",
        limit_price: "195",
        time_in_force: "gtc",
      },
      strategy: "paper_session",
      source: "rest",
    }]);
    assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
    await waitFor(
      async () => {
        const [row] = await db.sql`SELECT status::text AS status FROM orders`;
        return row?.status === "submitted";
      },
      5_000,
      "the order rests at the paper broker",
    );

    // After the close Alpaca streams the after-hours book (AAPL dropped on earnings)...
    clock.at = TUE_AFTER_HOURS;
    assert.equal(isUsEquityMarketOpen(clock.now()).open, false);
    cache.update([top("AAPL", clock.now(), "190.00", "190.05")]);
    const afterHours = paper.onPrice("alpaca", "AAPL");
    // ...and the pre-market one the next morning.
    clock.at = WED_PRE_MARKET;
    assert.equal(isUsEquityMarketOpen(clock.now()).open, false);
    cache.update([top("AAPL", clock.now(), "189.00", "189.05")]);
    const preMarket = paper.onPrice("alpaca", "AAPL");
    assert.equal(
      afterHours + preMarket,
      0,
      `the US equity market was closed, yet the paper broker filled the regular-session order ` +
        `(after hours: ${afterHours}, pre-market: ${preMarket})`,
    );
    await paper.settled();
    assert.equal((await db.sql`SELECT 1 FROM fills`).length, 0);

    // The first quote after the opening bell fills it, at that quote.
    clock.at = WED_OPEN + 2_000;
    cache.update([top("AAPL", clock.now(), "188.00", "188.04")]);
    assert.equal(paper.onPrice("alpaca", "AAPL"), 1);
    let stored: Array<{ price: string; filled_at: Date }> = [];
    await waitFor(
      async () => {
        stored = (await db.sql`SELECT price::text AS price, filled_at FROM fills`) as typeof stored;
        return stored.length > 0;
      },
      5_000,
      "the fill is stored",
    );
    assert.deepEqual(
      stored.map((r) => [r.price, r.filled_at.toISOString()]),
      [["188.04000000", "2026-12-09T14:30:02.000Z"]],
    );
  } finally {
    await engine.stop();
    await paper[Symbol.asyncDispose]();
  }
});

Deno.test("a paper gtc stop sell of a US equity is not set off by after-hours or pre-market prints, nor by a pre-market print received after the open", async () => {
  const { broker, events, tick, fills } = scene(TUE_SESSION);
  await using _ = broker;
  await tick(TUE_SESSION, [top("AAPL", TUE_SESSION, "200.00", "200.02")]);
  await broker.submit(
    order({ client_order_id: "stop-1", side: "sell", type: "stop", stop_price: d("195") }),
  );
  await broker.settled();
  assert.deepEqual(events.map(summary), ["accepted stop-1"]);

  // 19:00 ET: a thin after-hours print and book far below the stop.
  assert.equal(isUsEquityMarketOpen(TUE_EVENING).open, false);
  assert.equal(
    await tick(TUE_EVENING, [
      trade("AAPL", TUE_EVENING, "180.00"),
      top("AAPL", TUE_EVENING, "180.00", "181.00"),
    ]),
    0,
    "stop sold at 19:00 ET, outside the regular session",
  );
  assert.equal(await tick(WED_PRE_MARKET, [trade("AAPL", WED_PRE_MARKET, "179.00")]), 0);

  // 09:30:01 ET: a pre-market print (09:29:58) received late, with the book back above the stop.
  const late = WED_OPEN + 1_000;
  assert.equal(
    await tick(late, [
      top("AAPL", late, "196.00", "196.02"),
      trade("AAPL", WED_OPEN - 2_000, "190.00", late),
    ]),
    0,
    "a print from before the open set the stop off",
  );
  // A print in the session through the stop sets it off, at the worse of stop and bid.
  const through = WED_OPEN + 2_000;
  assert.equal(await tick(through, [trade("AAPL", through, "194.50")]), 1);
  assert.deepEqual(fills(), ["fill stop-1 195"]);
});

Deno.test("a quote received before the open fills nothing after it; the session's first quote does", async () => {
  const { broker, tick, fills } = scene(TUE_SESSION);
  await using _ = broker;
  await tick(TUE_SESSION, [top("AAPL", TUE_SESSION, "200.00", "200.02")]);
  await broker.submit(order({ client_order_id: "lim-1", limit_price: d("195") }));
  // 09:29:59 ET the pre-market book crosses the limit; it is still fresh (< 5 s) at 09:30:01.
  await tick(WED_OPEN - 1_000, [top("AAPL", WED_OPEN - 1_000, "190.00", "190.02")]);
  assert.equal(await tick(WED_OPEN + 1_000, []), 0);
  assert.equal(
    await tick(WED_OPEN + 1_500, [top("AAPL", WED_OPEN + 1_500, "191.00", "191.02")]),
    1,
  );
  assert.deepEqual(fills(), ["fill lim-1 191.02"]);
});

Deno.test("a paper market order for a US equity submitted while the market is closed waits for the open and fills at its first fresh quote", async () => {
  const { broker, events, tick, fills } = scene(TUE_EVENING);
  await using _ = broker;
  await tick(TUE_EVENING, [top("AAPL", TUE_EVENING, "180.00", "181.00")]);
  // With a fresh after-hours quote, and without any quote at all (Alpaca queues both).
  await broker.submit(order({ client_order_id: "mkt-day", type: "market", time_in_force: "day" }));
  await broker.submit(
    order({ client_order_id: "mkt-msft", symbol: "MSFT", type: "market", time_in_force: "day" }),
  );
  // A limit reconciliation resubmits after hours rests too, though the quote crosses it.
  await broker.submit(order({ client_order_id: "lim-resubmitted", limit_price: d("185") }));
  // ioc/fok cannot fill at submit while closed: cancelled at once, saying why.
  await broker.submit(
    order({ client_order_id: "ioc", limit_price: d("185"), time_in_force: "ioc" }),
  );
  await broker.settled();
  assert.deepEqual(events.map(summary), [
    "accepted mkt-day",
    "accepted mkt-msft",
    "accepted lim-resubmitted",
    "accepted ioc",
    "cancelled ioc: ioc order could not fill at submit: the US equity regular session is closed",
  ]);
  assert.equal(broker.stats().resting, 3);

  assert.equal(await tick(WED_PRE_MARKET, [top("AAPL", WED_PRE_MARKET, "182.00", "182.10")]), 0);
  assert.equal(
    await tick(WED_PRE_MARKET, [top("MSFT", WED_PRE_MARKET, "400.00", "400.10")], {
      symbol: "MSFT",
    }),
    0,
  );
  // The first update in the session, a trade: the only quote is from before the open.
  const open = WED_OPEN + 100;
  assert.equal(await tick(open, [trade("AAPL", open, "183.00")]), 0);
  assert.equal(await tick(open + 100, [top("AAPL", open + 100, "183.00", "183.05")]), 2);
  assert.equal(
    await tick(open + 200, [top("MSFT", open + 200, "401.00", "401.10")], { symbol: "MSFT" }),
    1,
  );
  assert.deepEqual(fills(), [
    "fill mkt-day 183.05",
    "fill lim-resubmitted 183.05",
    "fill mkt-msft 401.1",
  ]);
});

Deno.test("a paper market order for a US equity just after the open, with only a pre-open quote, waits for the session's first; without any price it is refused", async () => {
  const { broker, cache, tick, fills } = scene(WED_OPEN - 1_000);
  await using _ = broker;
  cache.update([top("AAPL", WED_OPEN - 1_000, "190.00", "190.02")]);
  await tick(WED_OPEN + 500, []);
  await broker.submit(order({ client_order_id: "at-open", type: "market", time_in_force: "day" }));
  await broker.settled();
  assert.deepEqual(fills(), []);
  assert.equal(await tick(WED_OPEN + 700, [top("AAPL", WED_OPEN + 700, "190.10", "190.12")]), 1);
  assert.deepEqual(fills(), ["fill at-open 190.12"]);
  // In the session, no fresh price at all is still a refusal.
  await assert.rejects(
    broker.submit(order({ client_order_id: "no-price", symbol: "MSFT", type: "market" })),
    (error: unknown) =>
      error instanceof BrokerRejectedError &&
      error.message.endsWith("no fresh market price for MSFT"),
  );
});

Deno.test("paper crypto orders fill around the clock, on Thanksgiving Day too, while a US equity limit waits", async () => {
  // Thanksgiving 2026-11-26, 13:00 ET: the NYSE is closed all day.
  const thanksgiving = Date.parse("2026-11-26T18:00:00Z");
  assert.equal(isUsEquityMarketOpen(thanksgiving).open, false);
  const { broker, tick, fills } = scene(thanksgiving);
  await using _ = broker;
  const btc = { symbol: "BTC-USDT", exchange: "binance" as Exchange };
  await tick(thanksgiving, [top("BTC-USDT", thanksgiving, "60000", "60001", "binance")], btc);
  await tick(thanksgiving, [top("AAPL", thanksgiving, "230.00", "230.02")]);
  await broker.submit(
    order({ client_order_id: "btc-mkt", ...btc, type: "market", qty: d("0.1") }),
  );
  await broker.submit(
    order({ client_order_id: "btc-lim", ...btc, limit_price: d("59000"), qty: d("0.1") }),
  );
  await broker.submit(order({ client_order_id: "aapl-lim", limit_price: d("225") }));
  await broker.settled();
  assert.deepEqual(fills(), ["fill btc-mkt 60001"]);
  const later = thanksgiving + 60_000;
  assert.equal(await tick(later, [top("BTC-USDT", later, "58900", "58950", "binance")], btc), 1);
  assert.equal(await tick(later, [top("AAPL", later, "220.00", "220.02")]), 0);
  assert.deepEqual(fills(), ["fill btc-mkt 60001", "fill btc-lim 58950"]);
});

Deno.test("paper US equity orders on NATS do not fill on after-hours messages, and fill on the first after the open", async () => {
  const nc = await connect({ servers: "127.0.0.1:4222" });
  const prefix = `t${crypto.randomUUID().slice(0, 8)}.`;
  const clock = new SetClock(TUE_SESSION);
  const cache = new LatestCache({ clock });
  cache.update([top("AAPL", TUE_SESSION, "200.00", "200.02")]);
  const broker = paperBroker({
    cache,
    nats: nc,
    options: NO_FEES,
    max_price_age_ms: 5_000,
    clock,
    subject_prefix: prefix,
  });
  const events: BrokerEvent[] = [];
  broker.onEvent((event) => {
    events.push(event);
  });
  const subject = (kind: string) => `${prefix}clean.md.${kind}.alpaca.AAPL`;
  /** Publishes `events` on `kind`, then a malformed message after it, and waits until both were read. */
  const publish = async (kind: string, prices: Array<TopEvent | TradeEvent>) => {
    const malformed = broker.stats().malformed_prices;
    nc.publish(subject(kind), JSON.stringify(prices));
    nc.publish(subject(kind), "not json");
    await waitFor(
      () => broker.stats().malformed_prices > malformed,
      3_000,
      `the ${kind} message was read`,
    );
    await broker.settled();
  };
  try {
    await broker.submit(order({ client_order_id: "n-lim", limit_price: d("195") }));
    await broker.submit(
      order({ client_order_id: "n-stop", side: "sell", type: "stop", stop_price: d("195") }),
    );
    await nc.flush();
    clock.at = TUE_EVENING;
    await publish("trade", [trade("AAPL", TUE_EVENING, "180.00")]);
    await publish("top", [top("AAPL", TUE_EVENING, "180.00", "180.05")]);
    assert.deepEqual(events.filter((e) => e.type === "fill").map(summary), []);

    // Both fill on the first message after the opening bell (and then nothing rests to read more).
    clock.at = WED_OPEN + 1_000;
    nc.publish(subject("top"), JSON.stringify([top("AAPL", WED_OPEN + 1_000, "186.00", "186.04")]));
    await waitFor(() => events.filter((e) => e.type === "fill").length === 2, 3_000, "two fills");
    assert.deepEqual(events.filter((e) => e.type === "fill").map(summary).sort(), [
      "fill n-lim 186.04",
      "fill n-stop 186",
    ]);
  } finally {
    await broker[Symbol.asyncDispose]();
    await nc.close();
  }
});

Deno.test("with us_equity_session always the paper broker matches US equity orders after hours and pre-market; with regular they wait for the open", async () => {
  const filledWhileClosed: Record<string, string[]> = {};
  for (const session of ["always", "regular"] as const) {
    const { broker, events, tick, fills } = scene(TUE_AFTER_HOURS, {
      ...NO_FEES,
      us_equity_session: session,
    });
    await using _ = broker;
    // 18:30 ET: the after-hours book crosses the limit at submit.
    await tick(TUE_AFTER_HOURS, [top("AAPL", TUE_AFTER_HOURS, "190.00", "190.05")]);
    await broker.submit(order({ client_order_id: "lim-1", limit_price: d("195") }));
    await broker.submit(order({ client_order_id: "lim-2", limit_price: d("185") }));
    await broker.submit(
      order({ client_order_id: "ioc", limit_price: d("180"), time_in_force: "ioc" }),
    );
    await broker.settled();
    // 04:05 ET: a pre-market quote crosses the resting one.
    await tick(WED_PRE_MARKET, [top("AAPL", WED_PRE_MARKET, "184.00", "184.02")]);
    filledWhileClosed[session] = [
      ...fills(),
      ...events.filter((e) => e.type === "cancelled").map(summary),
    ];
  }
  assert.deepEqual(filledWhileClosed, {
    always: [
      "fill lim-1 190.05",
      "fill lim-2 184.02",
      "cancelled ioc: ioc order could not fill at submit",
    ],
    regular: [
      "cancelled ioc: ioc order could not fill at submit: the US equity regular session is closed",
    ],
  });
});

Deno.test("brokers.paper.us_equity_session is regular by default, reaches the engine's paper broker, and a bad value is invalid configuration naming the key", async () => {
  const defaults = await loadConfig({ args: [], env: {} });
  assert.equal(defaults.brokers.paper.us_equity_session, "regular");

  const nc = await connect({ servers: "127.0.0.1:4222" });
  try {
    for (const session of ["always", "regular"] as const) {
      const config = await loadConfig({
        args: [],
        env: { TRADEWIRE_BROKERS__PAPER__US_EQUITY_SESSION: session },
      });
      assert.equal(config.brokers.paper.us_equity_session, session);
      const clock = new SetClock(TUE_AFTER_HOURS);
      const cache = new LatestCache({ clock });
      cache.update([top("AAPL", TUE_AFTER_HOURS, "190.00", "190.05")]);
      // The broker the trading subtree creates from the configuration.
      const broker = configuredBrokers({ config, nats: nc, cache, log: nullLogger, clock })
        .get("paper")!();
      await using _ = broker;
      const events: BrokerEvent[] = [];
      broker.onEvent((event) => {
        events.push(event);
      });
      await broker.submit(
        order({ client_order_id: "ioc", limit_price: d("195"), time_in_force: "ioc" }),
      );
      const state = await broker.getOrder("ioc");
      assert.equal(state?.status, session === "always" ? "filled" : "cancelled", session);
    }
  } finally {
    await nc.close();
  }

  const error = await loadConfig({
    args: [],
    env: { TRADEWIRE_BROKERS__PAPER__US_EQUITY_SESSION: "extended" },
  }).catch((e: unknown) => e);
  assert.ok(error instanceof ConfigError, String(error));
  assert.match(
    error.message,
    /^ {2}brokers\.paper\.us_equity_session: expected one of regular, always, got "extended"/m,
  );
});
