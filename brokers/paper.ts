/**
 * The paper broker: simulated executions against the latest market data,
 * with configurable commission and slippage, and no durable state of its own
 * (after a restart, reconciliation resubmits open orders by client order id).
 *
 * Prices: the best bid/ask of `order.exchange` from the
 * {@linkcode LatestCache} (`bestBidAsk(exchange, symbol, max_price_age_ms,
 * now)`), or, when the order names no exchange, of the venue with the newest
 * fresh best bid/ask that quotes the side the order needs (the ask for a
 * buy, the bid for a sell), for every order type. A side quoted as `"0"`
 * counts as no price.
 *
 * Matching ({@linkcode matchPaperOrder}, pure):
 * - market: buys fill at the ask, sells at the bid, moved by `slippage_bps`
 *   against the order (`ask × (1 + bps/10⁴)`, `bid × (1 − bps/10⁴)`).
 * - limit: marketable when a buy's limit ≥ ask (a sell's limit ≤ bid); it
 *   fills at the market price with slippage, but never beyond its limit —
 *   i.e. at the better of the two. Otherwise it rests.
 * - stop / stop_limit: triggered when the market trades or quotes through the
 *   stop — for a buy, the ask or a trade ≥ stop; for a sell, the bid or a
 *   trade ≤ stop. Only trades received (`ts_local`) and printed
 *   (`ts_exchange`) since the order was accepted count — at submit only the
 *   quote can trigger it (a quote already through: triggered at once); a
 *   trade received in the millisecond of acceptance counts, and one printed
 *   up to {@linkcode PAPER_TRADE_CLOCK_SKEW_MS} (1 s) before it does too (the
 *   venue's clock may run behind ours), but a trade printed earlier — a
 *   venue's reconnect snapshot replaying the last minutes, received now —
 *   never does. Once triggered a stop behaves as a market order and a
 *   stop_limit as a limit order. A triggered stop without a fresh price
 *   waits for the next one.
 *   A stop set off by a trade while the quote has not reached the stop yet
 *   fills at the worse of its stop and the touch (a buy at
 *   `max(stop, ask)`, a sell at `min(stop, bid)`, then slippage), never
 *   better than its stop — a stop_limit still never beyond its limit.
 * - Fills are always the whole remaining quantity at the top of the book:
 *   the displayed size is ignored (a simplification), so there are no
 *   partial fills and `fok` behaves as `ioc`.
 * - Prices are rounded half-even to 8 decimals (NUMERIC(20,8)), never below
 *   0.00000001 (a sell whose slippage would round its price to 0 fills
 *   there); commission is `max(commission_min, notional × commission_bps /
 *   10⁴)`, rounded the same way.
 *
 * US equity hours: a US equity order (see the asset class below) is matched
 * only while the regular session is open (`trading/market_hours.ts`, the
 * NYSE calendar) — as at Alpaca, which the engine never asks for
 * `extended_hours`. While it is closed a limit does not fill and a stop is not
 * set off, and prices seen then never count: at the first price update at or
 * after the opening bell the resting orders are matched again, against a
 * quote received since the open, and only trades received and printed since
 * the open (less {@linkcode PAPER_TRADE_CLOCK_SKEW_MS}) can set a stop off.
 * An order submitted while it is closed — a market order too, as Alpaca
 * queues one for the open — is accepted and rests until then (a market order
 * then fills at the first fresh quote of the session); an `ioc` or `fok`
 * order is cancelled at once, since it cannot fill at submit. Crypto trades
 * around the clock, and so do US equities with the option
 * `us_equity_session: "always"` (`brokers.paper.us_equity_session`), for
 * demos and tests outside market hours.
 *
 * Refusals: `submit` throws a {@linkcode BrokerRejectedError} — and emits no
 * event — for an order it cannot take: invalid fields, an unknown exchange,
 * and a market order (not a stop) without a fresh price while its market is
 * open ("no fresh market price for SYMBOL"). The refused order is
 * remembered: submitting it again throws the same error. Everything else is
 * accepted.
 *
 * Time in force: `ioc` and `fok` orders that cannot fill at submit are
 * cancelled (a `cancelled` event after `accepted`); `gtc` orders rest until
 * filled or cancelled; `day` orders expire — US equities at the close of the
 * regular session (`trading/market_hours.ts`: today's close while the market
 * is open, else the next session's close), crypto at the next 00:00 UTC. The
 * asset class is read from the symbol (`BASE-QUOTE` is crypto, a plain
 * ticker a US equity) unless `asset_class` is given. Expiry is checked on
 * every price update of the symbol and every `expiry_check_ms` once
 * {@linkcode PaperBroker.start} ran ({@linkcode PaperBroker.expireDue}).
 *
 * Resting orders are evaluated again on every price update of their symbol:
 * with `nats`, the broker subscribes `clean.md.{top,quote,trade}.*.<symbol>`
 * for each symbol that has resting orders (and unsubscribes when none is
 * left), and uses the prices in the message itself — so it does not depend
 * on the cache actor having applied it yet; without `nats`, callers (tests)
 * call {@linkcode PaperBroker.onPrice}.
 *
 * Events go to `onEvent` listeners asynchronously — never before `submit`
 * resolves (a macrotask later: `setImmediate`, not a timer) — one at a
 * time, in order: `accepted`, then the `fill` (`fill_id` `paper-<n>`, n
 * counting the order's fills from 1) or `cancelled` / `expired`. Events
 * made while no listener is subscribed (the execution engine restarting
 * while the broker runs on) are held, up to {@linkcode MAX_HELD_EVENTS},
 * and handed to the next listener: the engine records such a fill with its
 * own id and commission rather than reconciling it without them.
 * `broker_order_id` is `paper-<client_order_id>`, so a resubmission after a
 * restart gets the same ids (and the fill the same `(order, fill_id)` key,
 * which the fills table deduplicates).
 *
 * @example
 * ```ts
 * import { paperBroker } from "./paper.ts";
 *
 * const broker = paperBroker({
 *   cache, nats, options: config.brokers.paper,
 *   max_price_age_ms: config.execution.max_price_age_ms, log,
 * });
 * broker.onEvent((event) => handle(event));
 * await broker.start(signal);
 * await broker.submit({
 *   client_order_id: "o-1", symbol: "BTC-USDT", side: "buy", type: "market",
 *   time_in_force: "ioc", qty: d("0.5"), limit_price: null, stop_price: null, exchange: "binance",
 * });
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import { type Exchange, EXCHANGES } from "../market/events.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import { symbolToken } from "../market/subjects.ts";
import {
  isUsEquityMarketOpen,
  newYorkOffsetMinutes,
  usEquitySession,
} from "../trading/market_hours.ts";
import { DB_SCALE, Decimal, ONE, parseDecimal, safeParseDecimal, ZERO } from "../trading/money.ts";
import type { FillCostBound } from "../trading/risk.ts";
import type { OrderType, Side } from "../trading/signal.ts";
import {
  type Broker,
  type BrokerEvent,
  type BrokerOrderRequest,
  type BrokerOrderState,
  type BrokerOrderStatus,
  BrokerRejectedError,
} from "./broker.ts";
import { assertPositiveInteger } from "../lib/assert.ts";
import { InsertionOrderedMap } from "../lib/insertion_map.ts";

/** The name orders are routed to the paper broker by. */
export const PAPER_BROKER_NAME = "paper";
/** Most events held for the next listener while none is subscribed (see the module doc). */
export const MAX_HELD_EVENTS = 100_000;
/** How often resting day orders are checked for expiry once started, in ms. */
export const DEFAULT_PAPER_EXPIRY_CHECK_MS = 1_000;
/** Most finished (filled, cancelled, expired, rejected) orders remembered for idempotency. */
export const DEFAULT_PAPER_MAX_CLOSED_ORDERS = 100_000;
/**
 * How far (ms) a venue's clock may run behind ours: a trade printed (`ts_exchange`) up to this
 * long before a stop was accepted still counts toward setting it off — one printed earlier never.
 */
export const PAPER_TRADE_CLOCK_SKEW_MS = 1_000;

const DAY_MS = 86_400_000;
const BPS = new Decimal(10_000);
/** One basis point: multiplying by it divides by 10⁴ exactly, and much faster than dividing. */
const ONE_BPS = new Decimal("0.0001");
/** The smallest price `NUMERIC(20,8)` holds: the floor of a fill price after slippage. */
const SMALLEST_PRICE = new Decimal("0.00000001");
const EXCHANGE_SET: ReadonlySet<string> = new Set(EXCHANGES);

/** When US equity orders are matched; see {@linkcode PaperBrokerOptions.us_equity_session}. */
export type PaperUsEquitySession = "regular" | "always";

/** Commission, slippage and session settings: the `brokers.paper` section of the config. */
export interface PaperBrokerOptions {
  /** Commission in basis points of a fill's notional (decimal text). */
  commission_bps: string;
  /** Least commission per fill (decimal text). */
  commission_min: string;
  /** Slippage in basis points, against the order (decimal text, < 10000). */
  slippage_bps: string;
  /**
   * When US equity orders are matched: `regular`, only in the NYSE regular
   * session (see the module doc); `always`, at any hour, as crypto — for
   * demos and tests outside market hours. Day orders still expire at the
   * session's close.
   * @default {"regular"}
   */
  us_equity_session?: PaperUsEquitySession | undefined;
}

/** What {@linkcode paperBroker} needs. */
export interface PaperBrokerDeps {
  /** Latest market data (best bid/ask, last trades). */
  cache: LatestCache;
  /** Connection carrying `clean.md.*`, to re-evaluate resting orders on price updates. */
  nats?: NatsConnection | undefined;
  /** Commission and slippage (`config.brokers.paper`). */
  options: PaperBrokerOptions;
  /** A price older than this (ms) is no price (`config.execution.max_price_age_ms`). */
  max_price_age_ms: number;
  /** @default {systemClock} */
  clock?: Clock | undefined;
  /** @default {nullLogger} */
  log?: Logger | undefined;
  /** Broker name. @default {PAPER_BROKER_NAME} */
  name?: string | undefined;
  /** Prepended to the market-data subjects it subscribes (tests). @default {""} */
  subject_prefix?: string | undefined;
  /**
   * Asset class of a symbol, for the expiry of day orders and the session US equities fill in.
   * @default {`BASE-QUOTE` symbols are crypto, others us_equity}
   */
  asset_class?: ((symbol: string) => "crypto" | "us_equity") | undefined;
  /** Expiry check interval once started, ms. @default {DEFAULT_PAPER_EXPIRY_CHECK_MS} */
  expiry_check_ms?: number | undefined;
  /** Finished orders remembered. @default {DEFAULT_PAPER_MAX_CLOSED_ORDERS} */
  max_closed_orders?: number | undefined;
}

/** The market as an order is matched against: absent prices are null. */
export interface PaperMarket {
  /** Best bid, > 0. */
  bid: Decimal | null;
  /** Best ask, > 0. */
  ask: Decimal | null;
  /** Highest trade price seen in the update, for stop triggers. */
  trade_high: Decimal | null;
  /** Lowest trade price seen in the update, for stop triggers. */
  trade_low: Decimal | null;
}

/** The order fields {@linkcode matchPaperOrder} reads. */
export interface PaperMatchOrder {
  /** Buy or sell. */
  side: Side;
  /** Order type. */
  type: OrderType;
  /** Limit price of limit and stop_limit orders. */
  limit_price: Decimal | null;
  /** Stop price of stop and stop_limit orders. */
  stop_price: Decimal | null;
}

/** What set a stop off: the quote reaching it, or a trade through it. */
export type PaperTrigger = "quote" | "trade";

/**
 * What to do with an order now: fill it at `price`, or let it rest;
 * `triggered` is what set a stop off (null for a stop not triggered yet and
 * for the other order types).
 */
export type PaperDecision =
  | { action: "fill"; price: Decimal; triggered: PaperTrigger | null }
  | { action: "rest"; triggered: PaperTrigger | null };

/**
 * Decides whether `order` fills against `market` (see the module doc), pure.
 * `triggered` is what set a stop off before, or null. The fill price is
 * rounded half-even to 8 decimals.
 *
 * @example
 * ```ts
 * import { matchPaperOrder } from "./paper.ts";
 * import { parseDecimal as d } from "../trading/money.ts";
 *
 * matchPaperOrder(
 *   { side: "buy", type: "limit", limit_price: d("101"), stop_price: null },
 *   null,
 *   { bid: d("99"), ask: d("100"), trade_high: null, trade_low: null },
 *   d("10"),
 * ); // { action: "fill", price: 100.1, triggered: null }
 * ```
 */
export function matchPaperOrder(
  order: PaperMatchOrder,
  triggered: PaperTrigger | null,
  market: PaperMarket,
  slippageBps: Decimal,
): PaperDecision {
  const stop = isStop(order.type) ? order.stop_price : null;
  const trigger = stop === null ? null : triggered ?? stopTrigger(order.side, stop, market);
  if (stop !== null && trigger === null) return { action: "rest", triggered: null };
  const buy = order.side === "buy";
  const touch = buy ? market.ask : market.bid;
  if (touch === null) return { action: "rest", triggered: trigger };
  // A trade went through the stop while the quote lags: no better than the stop.
  const base = stop === null || trigger !== "trade"
    ? touch
    : buy
    ? Decimal.max(touch, stop)
    : Decimal.min(touch, stop);
  const slip = slippageBps.times(ONE_BPS);
  let price = slip.isZero() ? base : buy ? base.times(ONE.plus(slip)) : base.times(ONE.minus(slip));
  price = price.toDecimalPlaces(DB_SCALE, Decimal.ROUND_HALF_EVEN);
  // A sell's slippage can round a tiny price away: no fill is at 0, which nothing can store.
  if (!price.gt(0)) price = SMALLEST_PRICE;
  const limited = order.type === "limit" || order.type === "stop_limit";
  if (limited && order.limit_price !== null) {
    const limit = order.limit_price;
    if (buy ? touch.gt(limit) : touch.lt(limit)) return { action: "rest", triggered: trigger };
    if (buy ? price.gt(limit) : price.lt(limit)) price = limit;
  }
  return { action: "fill", price, triggered: trigger };
}

/** Whether the market went through `stop`, and how: the quote counts first. */
function stopTrigger(side: Side, stop: Decimal, market: PaperMarket): PaperTrigger | null {
  if (side === "buy") {
    if (market.ask !== null && market.ask.gte(stop)) return "quote";
    return market.trade_high !== null && market.trade_high.gte(stop) ? "trade" : null;
  }
  if (market.bid !== null && market.bid.lte(stop)) return "quote";
  return market.trade_low !== null && market.trade_low.lte(stop) ? "trade" : null;
}

/** Commission of a fill of `notional`: `max(min, notional × bps / 10⁴)`, rounded to 8 decimals. */
export function paperCommission(notional: Decimal, bps: Decimal, min: Decimal): Decimal {
  const fee = notional.times(bps).times(ONE_BPS);
  return Decimal.max(fee, min).toDecimalPlaces(DB_SCALE, Decimal.ROUND_HALF_EVEN);
}

/**
 * When a day order placed at `nowMs` expires: for a US equity the close of
 * today's regular session while it is open, else of the next session; for
 * crypto (and past the calendar's end) the next 00:00 UTC.
 */
export function dayOrderExpiry(nowMs: number, assetClass: "crypto" | "us_equity"): number {
  if (assetClass === "us_equity") {
    const close = isUsEquityMarketOpen(nowMs).next_close;
    if (close !== undefined) return close;
  }
  return (Math.floor(nowMs / DAY_MS) + 1) * DAY_MS;
}

/** The default asset class of a symbol: `BASE-QUOTE` is crypto, a plain ticker a US equity. */
export function defaultAssetClass(symbol: string): "crypto" | "us_equity" {
  return symbol.includes("-") ? "crypto" : "us_equity";
}

/** Counters of a {@linkcode PaperBroker}. */
export interface PaperBrokerStats {
  /** Orders resting (accepted, not filled). */
  resting: number;
  /** Orders submitted (idempotent repeats not counted). */
  submitted: number;
  /** Fills made. */
  fills: number;
  /** Orders refused at submit. */
  rejected: number;
  /** Orders cancelled (by request, ioc/fok). */
  cancelled: number;
  /** Day orders expired. */
  expired: number;
  /** Market-data messages it could not read (skipped). */
  malformed_prices: number;
  /** Market-data subscriptions open (three per symbol with resting orders). */
  subscriptions: number;
}

/** One order in the book. */
interface PaperOrder {
  readonly request: BrokerOrderRequest;
  readonly broker_order_id: string;
  status: BrokerOrderStatus;
  filled_qty: Decimal;
  avg_fill_price: Decimal | null;
  /** What set the stop off, once it was. */
  triggered: PaperTrigger | null;
  /** When it was accepted (µs, like `ts_local`): trades received or printed before do not trigger it. */
  accepted_us: number;
  expires_at: number | null;
  fills: number;
  rejection: string | null;
}

const FINISHED: ReadonlySet<BrokerOrderStatus> = new Set([
  "filled",
  "cancelled",
  "expired",
  "rejected",
]);

/** A trade's price, when it was received (`ts_local`, µs) and when printed (`ts_exchange`, µs). */
interface SeenTrade {
  readonly price: Decimal;
  readonly ts_local: number;
  readonly ts_exchange: number;
}

/** The prices of one update: the quote (received at `quote_us`), and the fresh trades it brought. */
interface PriceUpdate {
  readonly bid: Decimal | null;
  readonly ask: Decimal | null;
  /** When the quote was received (`ts_local`, µs), or null without one. */
  readonly quote_us: number | null;
  readonly trades: readonly SeenTrade[];
}

/**
 * The part of `update` seen since `openedUs` (µs), the opening bell of a US
 * equity's session: a quote received before is no quote, and a trade received
 * before, or printed more than {@linkcode PAPER_TRADE_CLOCK_SKEW_MS} before,
 * is dropped.
 */
function sinceOpen(update: PriceUpdate, openedUs: number): PriceUpdate {
  const quoted = update.quote_us !== null && update.quote_us >= openedUs;
  const printedSinceUs = openedUs - PAPER_TRADE_CLOCK_SKEW_MS * 1000;
  return {
    bid: quoted ? update.bid : null,
    ask: quoted ? update.ask : null,
    quote_us: quoted ? update.quote_us : null,
    trades: update.trades.filter((t) => t.ts_local >= openedUs && t.ts_exchange >= printedSinceUs),
  };
}

/** The US equity regular session around an instant, as long as it holds. */
interface SessionWindow {
  /** Whether the regular session is open. */
  readonly open: boolean;
  /** Opening bell of the session in progress, µs (0 while closed). */
  readonly opened_us: number;
  /** From when this holds, ms. */
  readonly from_ms: number;
  /** Until when this holds (exclusive), ms: the next bell, or Infinity past the calendar's end. */
  readonly until_ms: number;
}

/** The US equity regular session at `nowMs` (trading/market_hours.ts) and how long that holds. */
function sessionWindowAt(nowMs: number): SessionWindow {
  const clock = isUsEquityMarketOpen(nowMs);
  if (!clock.open) {
    return { open: false, opened_us: 0, from_ms: nowMs, until_ms: clock.next_open ?? Infinity };
  }
  // While open, next_close is today's close: the session in progress is that New York date's.
  const close = clock.next_close ?? nowMs;
  const date = new Date(close + newYorkOffsetMinutes(close) * 60_000).toISOString().slice(0, 10);
  const opened = usEquitySession(date)?.open_ms ?? nowMs;
  return {
    open: true,
    opened_us: opened * 1000,
    from_ms: opened,
    until_ms: clock.next_close ?? Infinity,
  };
}

/**
 * The market an order accepted at `sinceUs` sees: only the trades received since then, and
 * printed since then less {@linkcode PAPER_TRADE_CLOCK_SKEW_MS}, count.
 */
function marketSince(update: PriceUpdate, sinceUs: number): PaperMarket {
  let high: Decimal | null = null;
  let low: Decimal | null = null;
  const printedSinceUs = sinceUs - PAPER_TRADE_CLOCK_SKEW_MS * 1000;
  for (const trade of update.trades) {
    if (trade.ts_local < sinceUs || trade.ts_exchange < printedSinceUs) continue;
    if (high === null || trade.price.gt(high)) high = trade.price;
    if (low === null || trade.price.lt(low)) low = trade.price;
  }
  return { bid: update.bid, ask: update.ask, trade_high: high, trade_low: low };
}

/** The paper broker; see the module documentation. */
export class PaperBroker implements Broker {
  /** The name orders are routed by. */
  readonly name: string;
  readonly #cache: LatestCache;
  readonly #nats: NatsConnection | null;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #maxAgeMs: number;
  readonly #commissionBps: Decimal;
  readonly #commissionMin: Decimal;
  readonly #slippageBps: Decimal;
  /**
   * The most a fill costs beyond its notional at the checked price: slippage
   * and commission compounded (`s + c + s × c ÷ 10⁴` bps) plus `commission_min`.
   */
  readonly fillCosts: FillCostBound;
  readonly #prefix: string;
  readonly #assetClass: (symbol: string) => "crypto" | "us_equity";
  readonly #usEquityAlways: boolean;
  readonly #expiryCheckMs: number;
  readonly #maxClosed: number;
  readonly #open = new Map<string, PaperOrder>();
  readonly #closed = new InsertionOrderedMap<string, PaperOrder>();
  readonly #resting = new Map<string, Set<PaperOrder>>();
  readonly #subscriptions = new Map<string, Subscription[]>();
  readonly #listeners = new Set<(event: BrokerEvent) => void | Promise<void>>();
  readonly #stop = new AbortController();
  #queue: BrokerEvent[] = [];
  #held: BrokerEvent[] = [];
  #draining: Promise<void> | null = null;
  #expiryLoop: Promise<void> | null = null;
  #session: SessionWindow | null = null;
  #disposed = false;
  readonly #stats = {
    submitted: 0,
    fills: 0,
    rejected: 0,
    cancelled: 0,
    expired: 0,
    malformed_prices: 0,
  };

  /** Creates the broker; prefer {@linkcode paperBroker}. */
  constructor(deps: PaperBrokerDeps) {
    this.name = deps.name ?? PAPER_BROKER_NAME;
    this.#cache = deps.cache;
    this.#nats = deps.nats ?? null;
    this.#clock = deps.clock ?? systemClock;
    this.#log = deps.log ?? nullLogger;
    if (!Number.isFinite(deps.max_price_age_ms) || deps.max_price_age_ms < 0) {
      throw new RangeError(`max_price_age_ms must be >= 0, got ${deps.max_price_age_ms}`);
    }
    this.#maxAgeMs = deps.max_price_age_ms;
    this.#commissionBps = nonNegative(deps.options.commission_bps, "commission_bps");
    this.#commissionMin = nonNegative(deps.options.commission_min, "commission_min");
    this.#slippageBps = nonNegative(deps.options.slippage_bps, "slippage_bps");
    if (this.#slippageBps.gte(BPS)) {
      throw new RangeError(`slippage_bps must be < 10000, got ${deps.options.slippage_bps}`);
    }
    this.fillCosts = {
      bps: this.#slippageBps.plus(this.#commissionBps)
        .plus(this.#slippageBps.times(this.#commissionBps).dividedBy(BPS)),
      min: this.#commissionMin,
    };
    this.#prefix = deps.subject_prefix ?? "";
    this.#assetClass = deps.asset_class ?? defaultAssetClass;
    const session = deps.options.us_equity_session ?? "regular";
    if (session !== "regular" && session !== "always") {
      throw new RangeError(`us_equity_session must be regular or always, got ${String(session)}`);
    }
    this.#usEquityAlways = session === "always";
    this.#expiryCheckMs = deps.expiry_check_ms ?? DEFAULT_PAPER_EXPIRY_CHECK_MS;
    if (!Number.isFinite(this.#expiryCheckMs) || this.#expiryCheckMs < 1) {
      throw new RangeError(`expiry_check_ms must be >= 1, got ${this.#expiryCheckMs}`);
    }
    this.#maxClosed = deps.max_closed_orders ?? DEFAULT_PAPER_MAX_CLOSED_ORDERS;
    assertPositiveInteger(this.#maxClosed, "max_closed_orders");
  }

  /**
   * Submits an order (see the module doc). Idempotent by `client_order_id`:
   * a known order is returned as it is, a refused one throws its refusal again.
   */
  submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    try {
      return Promise.resolve(this.#submit(order));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #submit(request: BrokerOrderRequest): { broker_order_id: string } {
    if (this.#disposed) throw new Error("Paper broker is disposed");
    const known = this.#find(request.client_order_id);
    if (known !== undefined) {
      if (known.rejection !== null) throw new BrokerRejectedError(known.rejection);
      return { broker_order_id: known.broker_order_id };
    }
    const order: PaperOrder = {
      request: { ...request },
      broker_order_id: `paper-${request.client_order_id}`,
      status: "accepted",
      filled_qty: ZERO,
      avg_fill_price: null,
      triggered: null,
      accepted_us: 0,
      expires_at: null,
      fills: 0,
      rejection: null,
    };
    const invalid = validate(request);
    if (invalid !== null) return this.#refuse(order, invalid);
    const now = this.#clock.now();
    order.accepted_us = now * 1000;
    const openedUs = this.#pricesSinceUs(request.symbol, now);
    // While a US equity's session is closed, every order waits for the open.
    let decision: PaperDecision = { action: "rest", triggered: null };
    if (openedUs !== null) {
      // Every trade in the cache was received before this order: only the quote can trigger it now.
      const cached = this.#marketFromCache(
        request.exchange as Exchange | null,
        request.symbol,
        now,
        { trades: false, side: request.side },
      );
      const update = openedUs === 0 ? cached : sinceOpen(cached, openedUs);
      decision = matchPaperOrder(
        request,
        null,
        marketSince(update, order.accepted_us),
        this.#slippageBps,
      );
      // Just after the open, with only a quote from before it: wait for the session's first.
      const beforeOpen = update.quote_us === null && cached.quote_us !== null;
      if (request.type === "market" && decision.action === "rest" && !beforeOpen) {
        return this.#refuse(order, `no fresh market price for ${request.symbol}`);
      }
    }
    this.#stats.submitted++;
    this.#open.set(request.client_order_id, order);
    this.#emit({
      type: "accepted",
      client_order_id: request.client_order_id,
      broker_order_id: order.broker_order_id,
      at_ms: now,
    });
    order.triggered = decision.triggered;
    if (decision.action === "fill") {
      this.#fill(order, decision.price, now);
    } else if (request.time_in_force === "ioc" || request.time_in_force === "fok") {
      const closed = openedUs === null ? ": the US equity regular session is closed" : "";
      this.#finish(
        order,
        "cancelled",
        `${request.time_in_force} order could not fill at submit${closed}`,
        now,
      );
    } else {
      if (request.time_in_force === "day") {
        order.expires_at = dayOrderExpiry(now, this.#assetClass(request.symbol));
      }
      this.#rest(order);
    }
    return { broker_order_id: order.broker_order_id };
  }

  #refuse(order: PaperOrder, reason: string): never {
    order.status = "rejected";
    order.rejection = reason;
    this.#stats.rejected++;
    this.#remember(order);
    throw new BrokerRejectedError(reason);
  }

  /** Cancels a resting order (a `cancelled` event follows); a finished one is left as it is. Throws a {@linkcode BrokerRejectedError} for an unknown order. */
  cancel(clientOrderId: string): Promise<void> {
    const order = this.#find(clientOrderId);
    if (order === undefined) {
      return Promise.reject(
        new BrokerRejectedError(`order ${clientOrderId} is not known to the paper broker`),
      );
    }
    if (!FINISHED.has(order.status)) {
      this.#finish(order, "cancelled", "cancelled on request", this.#clock.now());
    }
    return Promise.resolve();
  }

  /**
   * The broker's view of an order, or null when it does not know it —
   * answered once the events emitted before have been handed to the
   * listeners, so a caller never learns of a fill before its event.
   */
  async getOrder(clientOrderId: string): Promise<BrokerOrderState | null> {
    await this.settled();
    const order = this.#find(clientOrderId);
    return order === undefined ? null : stateOf(order);
  }

  /** Every resting order. */
  openOrders(): Promise<BrokerOrderState[]> {
    return Promise.resolve([...this.#open.values()].map(stateOf));
  }

  /** Calls `listener` for each event, in order, until the returned function is called. */
  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    this.#listeners.add(listener);
    if (this.#held.length > 0) {
      this.#queue = [...this.#held, ...this.#queue];
      this.#held = [];
      this.#draining ??= this.#drain();
    }
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /**
   * Starts checking resting day orders for expiry every `expiry_check_ms`
   * until `signal` aborts or the broker is disposed; resolves at once.
   */
  start(signal: AbortSignal): Promise<void> {
    if (this.#expiryLoop !== null || this.#disposed) return Promise.resolve();
    const stop = AbortSignal.any([signal, this.#stop.signal]);
    this.#expiryLoop = (async () => {
      while (!stop.aborted) {
        try {
          await this.#clock.sleep(this.#expiryCheckMs, stop);
        } catch {
          return;
        }
        this.expireDue();
      }
    })();
    return Promise.resolve();
  }

  /**
   * Re-evaluates the resting orders in `symbol` priced on `exchange` (and
   * those naming no exchange) against the cache; returns how many filled.
   */
  onPrice(exchange: Exchange, symbol: string): number {
    const now = this.#clock.now();
    return this.#evaluate(
      symbol,
      exchange,
      this.#marketFromCache(exchange, symbol, now, { trades: true, side: null }),
      now,
    );
  }

  /** Expires resting day orders whose time has come; returns how many. */
  expireDue(nowMs: number = this.#clock.now()): number {
    let expired = 0;
    for (const order of [...this.#open.values()]) {
      if (order.expires_at !== null && nowMs >= order.expires_at) {
        this.#finish(order, "expired", "day order expired at the session close", nowMs);
        expired++;
      }
    }
    return expired;
  }

  /** The broker's counters. */
  stats(): PaperBrokerStats {
    let subscriptions = 0;
    for (const subs of this.#subscriptions.values()) subscriptions += subs.length;
    return { resting: this.#open.size, ...this.#stats, subscriptions };
  }

  /** Resolves once every event emitted so far has been handed to the listeners. */
  async settled(): Promise<void> {
    while (this.#draining !== null) await this.#draining;
  }

  /** Stops the expiry loop and the subscriptions, after delivering the queued events. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#stop.abort();
    for (const subs of this.#subscriptions.values()) unsubscribe(subs);
    this.#subscriptions.clear();
    await this.#expiryLoop;
    await this.settled();
  }

  // -- book ---------------------------------------------------------------------------------

  #find(clientOrderId: string): PaperOrder | undefined {
    return this.#open.get(clientOrderId) ?? this.#closed.get(clientOrderId);
  }

  #remember(order: PaperOrder): void {
    this.#closed.set(order.request.client_order_id, order);
    if (this.#closed.size > this.#maxClosed) this.#closed.deleteOldest();
  }

  #rest(order: PaperOrder): void {
    const symbol = order.request.symbol;
    let set = this.#resting.get(symbol);
    if (set === undefined) {
      set = new Set();
      this.#resting.set(symbol, set);
      this.#subscribe(symbol);
    }
    set.add(order);
  }

  #unrest(order: PaperOrder): void {
    const symbol = order.request.symbol;
    const set = this.#resting.get(symbol);
    if (set === undefined || !set.delete(order) || set.size > 0) return;
    this.#resting.delete(symbol);
    const subs = this.#subscriptions.get(symbol);
    if (subs !== undefined) {
      unsubscribe(subs);
      this.#subscriptions.delete(symbol);
    }
  }

  #fill(order: PaperOrder, price: Decimal, now: number): void {
    const qty = order.request.qty.minus(order.filled_qty);
    const fee = paperCommission(qty.times(price), this.#commissionBps, this.#commissionMin);
    const filledBefore = order.filled_qty;
    order.filled_qty = order.request.qty;
    order.avg_fill_price = order.avg_fill_price === null ? price : order.avg_fill_price
      .times(filledBefore).plus(price.times(qty)).dividedBy(order.filled_qty);
    order.fills++;
    this.#stats.fills++;
    this.#emit({
      type: "fill",
      client_order_id: order.request.client_order_id,
      broker_order_id: order.broker_order_id,
      fill_id: `paper-${order.fills}`,
      qty,
      price,
      fee,
      cum_qty: order.filled_qty,
      at_ms: now,
    });
    order.status = "filled";
    this.#close(order);
  }

  #finish(order: PaperOrder, status: "cancelled" | "expired", reason: string, now: number) {
    order.status = status;
    if (status === "cancelled") this.#stats.cancelled++;
    else this.#stats.expired++;
    this.#emit({
      type: status,
      client_order_id: order.request.client_order_id,
      broker_order_id: order.broker_order_id,
      reason,
      at_ms: now,
    });
    this.#close(order);
  }

  #close(order: PaperOrder): void {
    this.#open.delete(order.request.client_order_id);
    this.#unrest(order);
    this.#remember(order);
  }

  /**
   * From when (µs) prices of `symbol` count at `now`: since ever (0) for
   * crypto and, with `us_equity_session: always`, for a US equity; else since
   * the opening bell for a US equity in its regular session, and none (null)
   * while that session is closed.
   */
  #pricesSinceUs(symbol: string, now: number): number | null {
    if (this.#usEquityAlways || this.#assetClass(symbol) !== "us_equity") return 0;
    let session = this.#session;
    if (session === null || now < session.from_ms || now >= session.until_ms) {
      session = this.#session = sessionWindowAt(now);
    }
    return session.open ? session.opened_us : null;
  }

  /** Matches the resting orders of `symbol` that price on `exchange` (or on any venue). */
  #evaluate(symbol: string, exchange: Exchange, update: PriceUpdate, now: number): number {
    const set = this.#resting.get(symbol);
    if (set === undefined) return 0;
    const openedUs = this.#pricesSinceUs(symbol, now);
    // A US equity's prices count only in its regular session, and only those seen since the open.
    const seen = openedUs === null ? null : openedUs === 0 ? update : sinceOpen(update, openedUs);
    let filled = 0;
    const quoteOnly: PaperMarket = {
      bid: seen?.bid ?? null,
      ask: seen?.ask ?? null,
      trade_high: null,
      trade_low: null,
    };
    for (const order of [...set]) {
      const wanted = order.request.exchange;
      if (wanted !== null && wanted !== exchange) continue;
      if (order.expires_at !== null && now >= order.expires_at) {
        this.#finish(order, "expired", "day order expired at the session close", now);
        continue;
      }
      if (seen === null) continue;
      // Trades matter only to a stop not triggered yet, and only those since it was accepted.
      const market = isStop(order.request.type) && order.triggered === null
        ? marketSince(seen, order.accepted_us)
        : quoteOnly;
      const decision = matchPaperOrder(order.request, order.triggered, market, this.#slippageBps);
      order.triggered = decision.triggered;
      if (decision.action === "fill") {
        this.#fill(order, decision.price, now);
        filled++;
      }
    }
    return filled;
  }

  // -- prices -------------------------------------------------------------------------------

  /**
   * The prices of `symbol` on `exchange` from the cache — when null, of the
   * venue with the newest fresh quote on `side`'s touch (the ask for a buy,
   * the bid for a sell; either side when `side` is null); with `trades`, the
   * newest fresh trade, for stops.
   */
  #marketFromCache(
    exchange: Exchange | null,
    symbol: string,
    now: number,
    { trades, side }: { trades: boolean; side: Side | null },
  ): PriceUpdate {
    let bid: Decimal | null = null;
    let ask: Decimal | null = null;
    let quoteUs: number | null = null;
    let venue: Exchange | null = exchange;
    if (exchange !== null) {
      const quote = this.#cache.bestBidAsk(exchange, symbol, this.#maxAgeMs, now);
      if (quote !== null) {
        bid = positive(quote.bid_price);
        ask = positive(quote.ask_price);
        quoteUs = quote.ts_local;
      }
    } else {
      let newest = -Infinity;
      for (const name of EXCHANGES) {
        const quote = this.#cache.bestBidAsk(name, symbol, this.#maxAgeMs, now);
        if (quote === null || quote.ts_local <= newest) continue;
        const b = positive(quote.bid_price);
        const a = positive(quote.ask_price);
        const touch = side === "buy" ? a : side === "sell" ? b : a ?? b;
        if (touch === null) continue;
        newest = quote.ts_local;
        bid = b;
        ask = a;
        quoteUs = quote.ts_local;
        venue = name;
      }
    }
    let trade: SeenTrade | null = null;
    if (trades) {
      const snapshot = this.#cache.latest(symbol, venue ?? undefined);
      for (const entry of snapshot?.exchanges ?? []) {
        const t = entry.trade;
        if (
          t === null || (trade !== null && t.ts_local <= trade.ts_local) ||
          now - t.ts_local / 1000 > this.#maxAgeMs
        ) {
          continue;
        }
        const price = positive(t.price);
        if (price !== null) trade = { price, ts_local: t.ts_local, ts_exchange: t.ts_exchange };
      }
    }
    return { bid, ask, quote_us: quoteUs, trades: trade === null ? [] : [trade] };
  }

  #subscribe(symbol: string): void {
    const nats = this.#nats;
    if (nats === null || this.#disposed || nats.isClosed()) return;
    const token = symbolToken(symbol);
    const subs: Subscription[] = [];
    try {
      for (const kind of ["top", "quote", "trade"]) {
        subs.push(nats.subscribe(`${this.#prefix}clean.md.${kind}.*.${token}`, {
          callback: (error, msg) => {
            if (error === null) this.#onMarketMessage(symbol, msg);
          },
        }));
      }
    } catch (error) {
      unsubscribe(subs);
      this.#log.warn("paper broker cannot subscribe to market data", { symbol, error });
      return;
    }
    this.#subscriptions.set(symbol, subs);
  }

  /** A `clean.md.<kind>.<exchange>.<symbol>` message: match with the prices it carries. */
  #onMarketMessage(symbol: string, msg: Msg): void {
    try {
      const tokens = msg.subject.slice(this.#prefix.length).split(".");
      const exchange = tokens[3];
      if (exchange === undefined || !EXCHANGE_SET.has(exchange)) {
        this.#stats.malformed_prices++;
        return;
      }
      const events = msg.json<unknown>();
      if (!Array.isArray(events)) {
        this.#stats.malformed_prices++;
        return;
      }
      const now = this.#clock.now();
      const update = this.#marketFromEvents(exchange as Exchange, symbol, events, now);
      if (update === null) return;
      this.#evaluate(symbol, exchange as Exchange, update, now);
    } catch (error) {
      this.#stats.malformed_prices++;
      this.#log.debug("paper broker skipped a market-data message", {
        subject: msg.subject,
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }

  /** Prices from a message's events (fresh ones only); the cache fills in a missing quote. */
  #marketFromEvents(
    exchange: Exchange,
    symbol: string,
    events: unknown[],
    now: number,
  ): PriceUpdate | null {
    let bid: Decimal | null = null;
    let ask: Decimal | null = null;
    let quoteTs = -Infinity;
    let quoteUs: number | null = null;
    const trades: SeenTrade[] = [];
    for (const raw of events) {
      if (raw === null || typeof raw !== "object") continue;
      const e = raw as Record<string, unknown>;
      if (e.symbol !== symbol || typeof e.ts_local !== "number") continue;
      if (now - e.ts_local / 1000 > this.#maxAgeMs) continue;
      const ts = typeof e.ts_exchange === "number" ? e.ts_exchange : e.ts_local;
      if (e.kind === "trade" && typeof e.price === "string") {
        const price = positive(e.price);
        if (price !== null) trades.push({ price, ts_local: e.ts_local, ts_exchange: ts });
      } else if (
        (e.kind === "top" || e.kind === "quote") && typeof e.bid_price === "string" &&
        typeof e.ask_price === "string" && ts >= quoteTs
      ) {
        quoteTs = ts;
        quoteUs = e.ts_local;
        bid = positive(e.bid_price);
        ask = positive(e.ask_price);
      }
    }
    if (quoteTs === -Infinity) {
      if (trades.length === 0) return null;
      const quote = this.#cache.bestBidAsk(exchange, symbol, this.#maxAgeMs, now);
      if (quote !== null) {
        bid = positive(quote.bid_price);
        ask = positive(quote.ask_price);
        quoteUs = quote.ts_local;
      }
    }
    return { bid, ask, quote_us: quoteUs, trades };
  }

  // -- events -------------------------------------------------------------------------------

  #emit(event: BrokerEvent): void {
    this.#queue.push(event);
    this.#draining ??= this.#drain();
  }

  /** Keeps `events` for the next listener; beyond the bound, the oldest go (reconciliation finds their fills). */
  #hold(events: readonly BrokerEvent[]): void {
    this.#held.push(...events);
    const over = this.#held.length - MAX_HELD_EVENTS;
    if (over > 0) {
      this.#held.splice(0, over);
      this.#log.warn("paper broker events dropped while no listener was subscribed", {
        dropped: over,
      });
    }
  }

  async #drain(): Promise<void> {
    // A macrotask later — after the submit that caused the events has resolved and its
    // awaiting caller has run on — but without a timer's delay: `setImmediate` runs once the
    // microtask queue is empty (a few µs), where `setTimeout(0)` waits for the timer phase
    // (~1–3 ms).
    await new Promise((resolve) => setImmediate(resolve));
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      for (const [i, event] of batch.entries()) {
        if (this.#listeners.size === 0) {
          this.#hold(batch.slice(i));
          break;
        }
        for (const listener of [...this.#listeners]) {
          try {
            await listener(event);
          } catch (error) {
            this.#log.error("paper broker event listener failed", {
              event: event.type,
              client_order_id: event.client_order_id,
              error,
            });
          }
        }
      }
    }
    this.#draining = null;
  }
}

/**
 * Creates the paper broker (see the module doc). The lead wires it as the
 * `paper` broker of the execution engine and disposes it at shutdown.
 */
export function paperBroker(deps: PaperBrokerDeps): PaperBroker {
  return new PaperBroker(deps);
}

function isStop(type: OrderType): boolean {
  return type === "stop" || type === "stop_limit";
}

/** Why `request` cannot be taken, or null. */
function validate(request: BrokerOrderRequest): string | null {
  if (typeof request.client_order_id !== "string" || request.client_order_id === "") {
    return "client_order_id is required";
  }
  if (request.side !== "buy" && request.side !== "sell") return `unknown side ${request.side}`;
  if (!isDecimal(request.qty) || !request.qty.gt(0)) return "qty must be > 0";
  const needsLimit = request.type === "limit" || request.type === "stop_limit";
  const needsStop = isStop(request.type);
  if (!needsLimit && !needsStop && request.type !== "market") {
    return `unknown order type ${String(request.type)}`;
  }
  if (needsLimit && (!isDecimal(request.limit_price) || !request.limit_price.gt(0))) {
    return `${request.type} orders need a limit_price > 0`;
  }
  if (needsStop && (!isDecimal(request.stop_price) || !request.stop_price.gt(0))) {
    return `${request.type} orders need a stop_price > 0`;
  }
  if (!["day", "gtc", "ioc", "fok"].includes(request.time_in_force)) {
    return `unknown time in force ${String(request.time_in_force)}`;
  }
  if (request.exchange !== null && !EXCHANGE_SET.has(request.exchange)) {
    return `unknown market-data exchange ${request.exchange}`;
  }
  return null;
}

function isDecimal(value: unknown): value is Decimal {
  return Decimal.isDecimal(value) && (value as Decimal).isFinite();
}

function stateOf(order: PaperOrder): BrokerOrderState {
  return {
    client_order_id: order.request.client_order_id,
    broker_order_id: order.broker_order_id,
    status: order.status,
    filled_qty: order.filled_qty,
    avg_fill_price: order.avg_fill_price,
  };
}

function positive(text: string): Decimal | null {
  const parsed = safeParseDecimal(text);
  return parsed.ok && parsed.value.gt(0) ? parsed.value : null;
}

function nonNegative(text: string, name: string): Decimal {
  const value = parseDecimal(text);
  if (value.isNeg()) throw new RangeError(`${name} must be >= 0, got ${text}`);
  return value;
}

function unsubscribe(subs: readonly Subscription[]): void {
  for (const sub of subs) {
    try {
      if (!sub.isClosed()) sub.unsubscribe();
    } catch {
      // The connection is closed: nothing left to unsubscribe from.
    }
  }
}
