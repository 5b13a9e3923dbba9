/**
 * Pre-trade risk checks: {@linkcode checkRisk} takes a proposed order and a
 * {@linkcode RiskContext} (limits, position, exposure, prices, the clock) and
 * returns EVERY rule the order breaks, each naming its rule. Pure: the engine
 * gathers the context, this decides.
 *
 * Semantics (each limit `null` = no limit; a value exactly at a limit passes):
 * - `kill_switch`: while on, every new order is refused.
 * - `market_hours`: with `us_equity`, orders are refused outside the regular
 *   session — from the broker's clock when the context carries one (Alpaca),
 *   else the built-in NYSE calendar ({@linkcode isUsEquityMarketOpen}).
 * - `no_market_price`: a market order without a last price is refused.
 * - `max_order_qty`: `qty ≤ max_order_qty`.
 * - `max_notional`: `qty × fill price ≤ max_order_notional`, the fill price
 *   being the reference price, or the touch when the order can fill there at
 *   a higher price (`touch`, {@linkcode cashPrice}): a market or stop buy at
 *   the best fresh ask, a sell at the best fresh bid — a paper broker fills
 *   them there, not at the mid.
 * - `price_collar`: the limit and stop prices lie within `price_collar_pct`
 *   percent of the last price (`|price − last| × 100 ≤ pct × last`); not
 *   checked without a last price.
 * - `max_position`: `|position after| ≤ max_position_qty`, where the
 *   position after counts open orders of the same side as filled.
 * - `max_gross_exposure`: `gross exposure + open gross exposure + (worst
 *   |position| − |position|) × max(mark, reference price) ≤
 *   max_gross_exposure`, the worst case of every open order filling: the
 *   gross exposure of the positions at their marks (their fills not yet
 *   applied included), what the open orders of the OTHER symbols — open, in
 *   flight, accepted earlier in the batch — would add if all filled
 *   (`open_gross_exposure`, at their marks, see {@linkcode openExposureQty}),
 *   and the order's symbol at its worst position, valued at its mark
 *   (`mark_price`) or at the order's reference price when higher (a limit
 *   buy above the mark can fill at its limit; one below it counts at the
 *   mark, as a filled position would): the larger of `|position after|`
 *   (open orders of the order's
 *   side counted as filled, as for `max_position`) and `|position −
 *   open orders of the other side|`. Orders are counted as if they all
 *   filled and reductions are not counted (a resting sell against a long does
 *   not lower the figure; one that would flip it raises it by the flip): the
 *   worst case, never below what fills can reach.
 * - `max_open_orders`: the order would be open order number
 *   `open_orders + 1 ≤ max_open_orders`.
 * - `daily_loss_limit`: once today's realized P&L is `≤ −daily_loss_limit`,
 *   only orders that reduce a position are accepted, so a strategy can still
 *   flatten; at exactly −limit the limit is reached.
 * - `numeric_range`: always on, whatever the limits (null included): the
 *   order's notional (`qty × reference price`), the position after it (open
 *   orders of its side counted as filled, as for `max_position`), that
 *   position's value at the reference price, and the cash after it at both
 *   extremes (when the context has the cash) must each round to at most 12
 *   integer digits — what the `NUMERIC(20,8)` columns of fills, positions
 *   and cash hold; the position tracker could not book a fill beyond them.
 *   The cash at its lowest is every open buy filled: `cash − B − costs`,
 *   where `B` is what the open buys would pay at the highest price they can
 *   fill at — of the other symbols (`open_buy_notional`) and of the order's
 *   symbol (`symbol_open_buy_notional`) — plus the order (a buy) at its fill
 *   price (the reference price, or the best fresh ask when it is a market or
 *   stop buy and the ask is higher: `touch`, {@linkcode cashPrice}), and
 *   `costs` the worst fee and slippage (`fill_costs`:
 *   `B × bps ÷ 10⁴ + min × (open orders + 1)`); at its highest it is every
 *   open sell filled: `cash + S`, `S` likewise from `open_sell_notional`,
 *   `symbol_open_sell_notional` and the order (a sell, at its fill price:
 *   the best fresh bid when above its reference price).
 *   Without a reference price only the position is checked. The notional
 *   is counted at the fill price, as for `max_notional`.
 *
 * An order *reduces* when the position after lies between zero and the
 * position before, on the same side (a sell of 3 on a long of 5); a flip
 * through zero does not reduce. `max_position`, `max_gross_exposure` and
 * `daily_loss_limit` never refuse a reducing order, so positions above a
 * lowered limit can always be brought down.
 *
 * The reference price of an order is the highest price it can reasonably
 * fill at ({@linkcode referencePrice}): a buy with a limit price → the limit
 * price (it cannot fill above); a market order → the last price; any other
 * order → the larger of its limit (else stop) price and the last price. Its
 * fill price ({@linkcode cashPrice}) is higher when the touch is: a market or
 * stop buy fills at the ask, a sell at the bid.
 *
 * @module
 */

import { type Exchange, EXCHANGES } from "../market/events.ts";
import {
  DB_INTEGER_DIGITS,
  DB_SCALE,
  type Decimal,
  fitsDb,
  parseDecimal,
  toJson,
  ZERO,
} from "./money.ts";
import { isUsEquityMarketOpen, type UsEquityMarketClock } from "./market_hours.ts";
import type { OrderType, Side } from "./signal.ts";

/** The rules {@linkcode checkRisk} applies, in the order it reports them. */
export const RISK_RULES = [
  "kill_switch",
  "market_hours",
  "no_market_price",
  "max_order_qty",
  "max_notional",
  "price_collar",
  "max_position",
  "max_gross_exposure",
  "max_open_orders",
  "daily_loss_limit",
  "numeric_range",
] as const;
/** One of {@linkcode RISK_RULES}. */
export type RiskRule = typeof RISK_RULES[number];

/** When orders may be sent: at any time, or in the US equity regular session only. */
export const MARKET_HOURS_MODES = ["always", "us_equity"] as const;
/** One of {@linkcode MARKET_HOURS_MODES}. */
export type MarketHoursMode = typeof MARKET_HOURS_MODES[number];

/** Limits that can differ per exchange and per symbol; `null` = no limit. */
export interface SymbolRiskLimits {
  /** Largest quantity of one order. */
  max_order_qty: Decimal | null;
  /** Largest notional (quantity × reference price) of one order. */
  max_order_notional: Decimal | null;
  /** Largest absolute position in the symbol, long or short. */
  max_position_qty: Decimal | null;
  /** Largest distance, in percent of the last price, of a limit or stop price. */
  price_collar_pct: Decimal | null;
  /** When orders may be sent. */
  market_hours: MarketHoursMode;
}

/**
 * Every risk limit: the account-wide ones, the defaults of the per-symbol
 * ones, and overrides per exchange and per symbol (symbol beats exchange beats
 * default, key by key). The YAML shape is the same with snake_case keys, see
 * {@linkcode RiskConfig}.
 */
export interface RiskLimits extends SymbolRiskLimits {
  /** Largest Σ|quantity × price| over all positions after the order. */
  max_gross_exposure: Decimal | null;
  /** Largest number of open orders (pending, submitted, partially filled). */
  max_open_orders: number | null;
  /** Realized loss today (a positive amount) at which exposure-increasing orders stop. */
  daily_loss_limit: Decimal | null;
  /** Overrides by the order's exchange (`alpaca: { market_hours: us_equity }`). */
  exchanges: Readonly<Partial<Record<Exchange, Partial<SymbolRiskLimits>>>>;
  /** Overrides by symbol (`BTC-USDT: { max_order_qty: 5 }`). */
  symbols: Readonly<Record<string, Partial<SymbolRiskLimits>>>;
}

/** A limit as written in YAML: a number, a decimal string, or `null` for no limit. */
export type RiskConfigValue = number | string | null;

/** The per-symbol limits as written in YAML. */
export interface SymbolRiskConfig {
  /** See {@linkcode SymbolRiskLimits.max_order_qty}. */
  max_order_qty?: RiskConfigValue;
  /** See {@linkcode SymbolRiskLimits.max_order_notional}. */
  max_order_notional?: RiskConfigValue;
  /** See {@linkcode SymbolRiskLimits.max_position_qty}. */
  max_position_qty?: RiskConfigValue;
  /** See {@linkcode SymbolRiskLimits.price_collar_pct}. */
  price_collar_pct?: RiskConfigValue;
  /** See {@linkcode SymbolRiskLimits.market_hours}. */
  market_hours?: MarketHoursMode;
}

/**
 * The risk limits as written in YAML (a `risk` section; every key optional,
 * missing keys take {@linkcode DEFAULT_RISK_CONFIG}'s value):
 *
 * ```yaml
 * risk:
 *   max_order_qty: 10000          # null = no limit; decimals as numbers or strings
 *   max_order_notional: 100000
 *   max_position_qty: 100000
 *   max_gross_exposure: 1000000
 *   max_open_orders: 100          # an integer
 *   price_collar_pct: 10          # percent of the last price
 *   daily_loss_limit: 10000       # a positive amount of quote currency
 *   market_hours: always          # always | us_equity
 *   exchanges:                    # overrides by exchange
 *     alpaca: { market_hours: us_equity }
 *   symbols:                      # overrides by symbol, beat exchange overrides
 *     BTC-USDT: { max_order_qty: 5, max_position_qty: 20, price_collar_pct: 2 }
 * ```
 */
export interface RiskConfig extends SymbolRiskConfig {
  /** See {@linkcode RiskLimits.max_gross_exposure}. */
  max_gross_exposure?: RiskConfigValue;
  /** See {@linkcode RiskLimits.max_open_orders}. */
  max_open_orders?: number | null;
  /** See {@linkcode RiskLimits.daily_loss_limit}. */
  daily_loss_limit?: RiskConfigValue;
  /** See {@linkcode RiskLimits.exchanges}. */
  exchanges?: Partial<Record<string, SymbolRiskConfig>>;
  /** See {@linkcode RiskLimits.symbols}. */
  symbols?: Partial<Record<string, SymbolRiskConfig>>;
}

/**
 * Default risk limits as YAML values: starting points sized for a paper
 * account of about 100,000 in quote currency, and the US equity session for
 * orders priced from Alpaca's market data.
 */
export const DEFAULT_RISK_CONFIG = {
  max_order_qty: "10000",
  max_order_notional: "100000",
  max_position_qty: "100000",
  max_gross_exposure: "1000000",
  max_open_orders: 100,
  price_collar_pct: "10",
  daily_loss_limit: "10000",
  market_hours: "always",
  exchanges: { alpaca: { market_hours: "us_equity" } },
  symbols: {},
} as const satisfies Readonly<Required<RiskConfig>>;

const SYMBOL_KEYS = [
  "max_order_qty",
  "max_order_notional",
  "max_position_qty",
  "price_collar_pct",
  "market_hours",
] as const;
const ACCOUNT_KEYS = [
  "max_gross_exposure",
  "max_open_orders",
  "daily_loss_limit",
  "exchanges",
  "symbols",
] as const;

/**
 * The {@linkcode RiskLimits} of a YAML `risk` section: missing keys take
 * {@linkcode DEFAULT_RISK_CONFIG}'s values, decimals are parsed strictly.
 * Throws a `TypeError` naming the key for an unknown key, a malformed or
 * negative decimal, one `NUMERIC(20,8)` cannot hold (more than 12 integer
 * digits or 8 decimals), a non-integer `max_open_orders` or an unknown
 * `market_hours` or exchange.
 */
export function riskLimitsFromConfig(config: RiskConfig = {}): RiskLimits {
  checkKeys(config, [...SYMBOL_KEYS, ...ACCOUNT_KEYS], "risk");
  const merged = { ...DEFAULT_RISK_CONFIG, ...config };
  const maxOpen = merged.max_open_orders;
  if (maxOpen !== null && !(Number.isSafeInteger(maxOpen) && maxOpen >= 0)) {
    throw new TypeError(
      `risk.max_open_orders must be an integer >= 0 or null, got ${String(maxOpen)}`,
    );
  }
  const exchanges: Partial<Record<Exchange, Partial<SymbolRiskLimits>>> = {};
  for (const [exchange, override] of Object.entries(merged.exchanges ?? {})) {
    if (!(EXCHANGES as readonly string[]).includes(exchange)) {
      throw new TypeError(
        `risk.exchanges.${exchange} is not an exchange (${EXCHANGES.join(", ")})`,
      );
    }
    exchanges[exchange as Exchange] = parseSymbolLimits(
      override ?? {},
      `risk.exchanges.${exchange}`,
    );
  }
  const symbols: Record<string, Partial<SymbolRiskLimits>> = {};
  for (const [symbol, override] of Object.entries(merged.symbols ?? {})) {
    symbols[symbol] = parseSymbolLimits(override ?? {}, `risk.symbols.${symbol}`);
  }
  return {
    ...(parseSymbolLimits(merged, "risk") as SymbolRiskLimits),
    max_gross_exposure: limit(merged.max_gross_exposure, "risk.max_gross_exposure"),
    max_open_orders: maxOpen,
    daily_loss_limit: limit(merged.daily_loss_limit, "risk.daily_loss_limit"),
    exchanges,
    symbols,
  };
}

/** {@linkcode DEFAULT_RISK_CONFIG} as {@linkcode RiskLimits}. */
export const DEFAULT_RISK_LIMITS: RiskLimits = riskLimitsFromConfig();

/**
 * The per-symbol limits that apply to `symbol` on `exchange`: the symbol's
 * override, else the exchange's, else the default — key by key.
 */
export function limitsFor(
  limits: RiskLimits,
  symbol: string,
  exchange?: Exchange,
): SymbolRiskLimits {
  const byExchange = exchange === undefined ? undefined : limits.exchanges[exchange];
  const bySymbol = Object.hasOwn(limits.symbols, symbol) ? limits.symbols[symbol] : undefined;
  if (bySymbol === undefined && byExchange === undefined) return limits; // no override: the defaults
  return {
    max_order_qty: pick("max_order_qty"),
    max_order_notional: pick("max_order_notional"),
    max_position_qty: pick("max_position_qty"),
    price_collar_pct: pick("price_collar_pct"),
    market_hours: pick("market_hours"),
  };
  function pick<K extends keyof SymbolRiskLimits>(key: K): SymbolRiskLimits[K] {
    if (bySymbol !== undefined && bySymbol[key] !== undefined) return bySymbol[key];
    if (byExchange !== undefined && byExchange[key] !== undefined) return byExchange[key];
    return limits[key];
  }
}

/** The order {@linkcode checkRisk} judges; a parsed `Signal` is one. */
export interface ProposedOrder {
  /** Canonical symbol. */
  symbol: string;
  /** Buy or sell. */
  side: Side;
  /** Quantity, > 0. */
  qty: Decimal;
  /** Order type. */
  type: OrderType;
  /** Limit price, for `limit` and `stop_limit`. */
  limit_price?: Decimal;
  /** Stop price, for `stop` and `stop_limit`. */
  stop_price?: Decimal;
  /** Exchange whose market data prices the order; selects exchange overrides. */
  exchange?: Exchange;
}

/** What {@linkcode checkRisk} knows of the account and the market when an order arrives. */
export interface RiskContext {
  /** The limits in force. */
  limits: RiskLimits;
  /** Current signed position in the order's symbol (long > 0, short < 0). */
  position_qty: Decimal;
  /** Unfilled quantity of open buy orders in the symbol, counted as filled. @default {ZERO} */
  open_buy_qty?: Decimal;
  /** Unfilled quantity of open sell orders in the symbol, counted as filled. @default {ZERO} */
  open_sell_qty?: Decimal;
  /** Open orders (pending, submitted, partially filled) over the account. */
  open_orders: number;
  /** Σ|quantity × mark| over all current positions. */
  gross_exposure: Decimal;
  /**
   * What the open orders of the other symbols (open, in flight, accepted
   * earlier in the batch) add to gross exposure if they all fill: Σ over
   * those symbols of {@linkcode openExposureQty} × price. @default {ZERO}
   */
  open_gross_exposure?: Decimal;
  /** Last market price of the symbol; `null` when there is none (fresh enough). */
  last_price: Decimal | null;
  /**
   * Without a fresh price: how old the newest price seen is and the age
   * allowed (`execution.max_price_age_ms`), both in ms, for the rejection to
   * say why. Omitted when no price was ever seen.
   */
  stale_price?: { age_ms: number; max_age_ms: number };
  /** Realized P&L since the start of the trading day (losses negative). */
  realized_pnl_today: Decimal;
  /**
   * Cash now, fills not yet applied counted: `numeric_range` checks the cash
   * after the order. Unchecked when omitted.
   */
  cash?: Decimal;
  /**
   * What the open buy orders of the other symbols (open, in flight, accepted
   * earlier in the batch) would pay if they all filled: Σ unfilled quantity ×
   * the highest price they can fill at. For `numeric_range`. @default {ZERO}
   */
  open_buy_notional?: Decimal;
  /** What the open sell orders of the other symbols would bring in; as `open_buy_notional`. @default {ZERO} */
  open_sell_notional?: Decimal;
  /**
   * What the open buy orders of the order's symbol (`open_buy_qty`) would pay
   * if they all filled, at the highest price they can fill at — not the
   * order's: a buy resting at a higher limit pays that limit. For
   * `numeric_range`. @default {open_buy_qty × the order's reference price}
   */
  symbol_open_buy_notional?: Decimal;
  /** What the open sell orders of the order's symbol would bring in; as `symbol_open_buy_notional`. */
  symbol_open_sell_notional?: Decimal;
  /**
   * The best fresh bid and ask of the symbol (the highest of each over the
   * venues that may fill the order), needed only when
   * {@linkcode fillsAtTouch}: a market or stop buy fills at the ask, a sell
   * at the bid when that is higher, which can be above its reference price
   * (the mid, the last trade); see {@linkcode cashPrice}. For `max_notional`
   * and `numeric_range`. @default {none: the reference price}
   */
  touch?: { bid: Decimal | null; ask: Decimal | null };
  /**
   * The symbol's mark, the price `gross_exposure` values its position at:
   * `max_gross_exposure` values the symbol's worst position at the larger of
   * it and the order's reference price. @default {none: the reference price}
   */
  mark_price?: Decimal;
  /**
   * The most a fill can cost beyond its notional, fee and slippage together:
   * `bps` of the notional plus `min` per order. For `numeric_range`.
   * @default {no costs}
   */
  fill_costs?: FillCostBound;
  /** Whether the kill switch is on. */
  kill_switch: boolean;
  /** Now, in ms since the epoch. */
  now: number;
  /**
   * The broker's market clock at `now` (Alpaca's `/v2/clock`), used instead
   * of the built-in NYSE calendar for `us_equity` symbols.
   * @default {isUsEquityMarketOpen(now)}
   */
  market_clock?: UsEquityMarketClock;
}

/**
 * The most a fill can cost beyond `qty × price` (fee and slippage), as a
 * broker says (`Broker.fillCosts`, brokers/broker.ts): `bps` basis points of the
 * notional plus `min` per order.
 */
export interface FillCostBound {
  /** Basis points of the notional. */
  bps: Decimal;
  /** Least cost per order. */
  min: Decimal;
}

/** One broken rule. */
export interface RiskViolation {
  /** The rule. */
  rule: RiskRule;
  /** What is wrong, with the figures. */
  message: string;
}

/**
 * The highest price `order` can reasonably fill at (see the module doc), or
 * `null` for a market order without a last price.
 */
export function referencePrice(order: ProposedOrder, lastPrice: Decimal | null): Decimal | null {
  if (order.type === "market") return lastPrice;
  if (order.side === "buy" && order.limit_price !== undefined) return order.limit_price;
  const own = order.limit_price ?? order.stop_price;
  if (own === undefined) return lastPrice;
  return lastPrice !== null && lastPrice.gt(own) ? lastPrice : own;
}

/**
 * Whether `order` can fill at the touch above its reference price: a market
 * or stop buy at the best ask (it has no limit to stop it there), and any sell
 * at the best bid (a sell's limit is a floor; a marketable one fills at the
 * bid). The engine reads the touch for these orders only.
 */
export function fillsAtTouch(order: Pick<ProposedOrder, "side" | "type">): boolean {
  return order.side === "sell" || order.type === "market" || order.type === "stop";
}

/**
 * The price `max_notional` and `numeric_range` count `order`'s fill at: a
 * market or stop buy at the best ask, a sell at the best bid, when that is
 * above `price` (its reference price) — a paper broker fills them at the
 * touch, not the mid or the last trade; otherwise `price`.
 *
 * @example
 * ```ts
 * import { cashPrice } from "./risk.ts";
 * import { parseDecimal as d } from "./money.ts";
 *
 * const touch = { bid: d("49000"), ask: d("51000") };
 * cashPrice({ side: "buy", type: "market" }, d("50000"), touch).toString(); // "51000"
 * cashPrice({ side: "buy", type: "limit" }, d("50000"), touch).toString(); // "50000"
 * ```
 */
export function cashPrice(
  order: Pick<ProposedOrder, "side" | "type">,
  price: Decimal,
  touch: { bid: Decimal | null; ask: Decimal | null } | undefined,
): Decimal {
  if (touch === undefined || !fillsAtTouch(order)) return price;
  const at = order.side === "buy" ? touch.ask : touch.bid;
  return at !== null && at.gt(price) ? at : price;
}

/** `ms` in the largest unit it holds whole, rounded down: `850 ms`, `12 s`, `5 min`, `3 h`, `1 day`. */
export function formatAge(ms: number): string {
  const units: ReadonlyArray<readonly [number, string, string]> = [
    [86_400_000, "day", "days"],
    [3_600_000, "h", "h"],
    [60_000, "min", "min"],
    [1_000, "s", "s"],
  ];
  for (const [size, one, many] of units) {
    const n = Math.floor(ms / size);
    if (n >= 1) return `${n} ${n === 1 ? one : many}`;
  }
  return `${Math.max(0, Math.floor(ms))} ms`;
}

/**
 * How much open orders can add to the absolute position in a symbol if they
 * fill, in any order and any part: `max(|position + buys|, |position −
 * sells|) − |position|`, never negative (`buys` and `sells` are the unfilled
 * quantities). Reductions are not counted: a sell resting against a long adds
 * nothing, and takes nothing off.
 *
 * @example
 * ```ts
 * import { openExposureQty } from "./risk.ts";
 * import { parseDecimal as d } from "./money.ts";
 *
 * openExposureQty(d("5"), d("2"), d("8")).toString(); // "2": long 7 at worst (short 3 is less)
 * ```
 */
export function openExposureQty(position: Decimal, buys: Decimal, sells: Decimal): Decimal {
  const up = position.plus(buys).abs();
  const down = position.minus(sells).abs();
  const worst = up.gt(down) ? up : down;
  const extra = worst.minus(position.abs());
  return extra.isNeg() ? ZERO : extra;
}

/**
 * Whether moving a position from `before` to `after` only reduces it: `after`
 * lies between zero and `before`, on the same side. A flip does not reduce.
 */
export function isReduction(before: Decimal, after: Decimal): boolean {
  if (before.isZero()) return false;
  return after.abs().lt(before.abs()) && (after.isZero() || after.isNeg() === before.isNeg());
}

/**
 * Every risk rule `order` breaks in `context`, in {@linkcode RISK_RULES}
 * order; empty when the order may be sent. Pure and total.
 *
 * @example
 * ```ts
 * import { checkRisk, DEFAULT_RISK_LIMITS } from "./risk.ts";
 * import { parseDecimal, ZERO } from "./money.ts";
 *
 * checkRisk({ symbol: "BTC-USDT", side: "buy", qty: parseDecimal("1"), type: "market" }, {
 *   limits: DEFAULT_RISK_LIMITS,
 *   position_qty: ZERO,
 *   open_orders: 0,
 *   gross_exposure: ZERO,
 *   last_price: null,
 *   realized_pnl_today: ZERO,
 *   kill_switch: false,
 *   now: Date.now(),
 * }); // [{ rule: "no_market_price", message: "no market price for BTC-USDT: market orders need one" }]
 * ```
 */
export function checkRisk(order: ProposedOrder, context: RiskContext): RiskViolation[] {
  const violations: RiskViolation[] = [];
  const fail = (rule: RiskRule, message: string) => violations.push({ rule, message });
  const { limits, last_price: last } = context;
  const symbolLimits = limitsFor(limits, order.symbol, order.exchange);
  const symbol = order.symbol;

  if (context.kill_switch) fail("kill_switch", "the kill switch is on: new orders are refused");

  if (symbolLimits.market_hours === "us_equity") {
    const clock = context.market_clock ?? isUsEquityMarketOpen(context.now);
    if (!clock.open) {
      const opens = clock.next_open === undefined
        ? ""
        : `; it opens at ${new Date(clock.next_open).toISOString()}`;
      fail(
        "market_hours",
        `the US equity market is closed (${clock.reason ?? "closed"})${opens}`,
      );
    }
  }

  if (order.type === "market" && last === null) {
    const stale = context.stale_price;
    fail(
      "no_market_price",
      stale === undefined
        ? `no market price for ${symbol}: market orders need one`
        : `no fresh market price for ${symbol}: the newest is ${
          formatAge(stale.age_ms)
        } old, over execution.max_price_age_ms ${stale.max_age_ms}; market orders need one`,
    );
  }

  const maxQty = symbolLimits.max_order_qty;
  if (maxQty !== null && order.qty.gt(maxQty)) {
    fail(
      "max_order_qty",
      `qty ${toJson(order.qty)} exceeds max_order_qty ${toJson(maxQty)} for ${symbol}`,
    );
  }

  const price = referencePrice(order, last);
  // What the fill can cost or bring in: a market buy fills at the ask, not the mid.
  const fillPrice = price === null ? null : cashPrice(order, price, context.touch);
  const maxNotional = symbolLimits.max_order_notional;
  if (maxNotional !== null && fillPrice !== null) {
    const notional = order.qty.times(fillPrice);
    if (notional.gt(maxNotional)) {
      fail(
        "max_notional",
        `notional ${toJson(notional)} (qty ${toJson(order.qty)} × ${toJson(fillPrice)}) ` +
          `exceeds max_order_notional ${toJson(maxNotional)} for ${symbol}`,
      );
    }
  }

  const collar = symbolLimits.price_collar_pct;
  const collared = order.limit_price !== undefined || order.stop_price !== undefined;
  if (collar !== null && last === null && collared) {
    // No price to hold the order's prices against: a fat-fingered price would pass unchecked.
    const stale = context.stale_price;
    fail(
      "price_collar",
      `no ${stale === undefined ? "" : "fresh "}market price for ${symbol} to check ` +
        `${order.limit_price !== undefined ? "limit_price" : "stop_price"} against` +
        (stale === undefined ? "" : ` (the newest is ${formatAge(stale.age_ms)} old)`) +
        `: price_collar_pct ${toJson(collar)} needs one (null turns the collar off)`,
    );
  }
  if (collar !== null && last !== null) {
    for (
      const [field, value] of [["limit_price", order.limit_price], [
        "stop_price",
        order.stop_price,
      ]] as const
    ) {
      if (value === undefined) continue;
      if (value.minus(last).abs().times(100).gt(collar.times(last))) {
        const pct = value.minus(last).abs().times(100).dividedBy(last).toDecimalPlaces(2);
        fail(
          "price_collar",
          `${field} ${toJson(value)} is ${toJson(pct)}% from the last price ${toJson(last)}, ` +
            `beyond price_collar_pct ${toJson(collar)} for ${symbol}`,
        );
      }
    }
  }

  const signed = order.side === "buy" ? order.qty : order.qty.neg();
  const openSameSide = order.side === "buy" ? context.open_buy_qty : context.open_sell_qty?.neg();
  const before = openSameSide === undefined
    ? context.position_qty
    : context.position_qty.plus(openSameSide);
  const after = before.plus(signed);
  const reduces = isReduction(before, after);

  const maxPosition = symbolLimits.max_position_qty;
  if (maxPosition !== null && !reduces && after.abs().gt(maxPosition)) {
    fail(
      "max_position",
      `position after the order ${toJson(after)} exceeds max_position_qty ${
        toJson(maxPosition)
      } for ${symbol} (position ${toJson(context.position_qty)}${
        openSameSide === undefined || openSameSide.isZero()
          ? ""
          : `, open ${order.side} orders ${toJson(openSameSide.abs())}`
      })`,
    );
  }

  const maxGross = limits.max_gross_exposure;
  if (maxGross !== null && price !== null && !reduces) {
    // The order's symbol at its worst: this order and its side's open orders filled, or the
    // other side's open orders filled.
    const otherSide = order.side === "buy" ? context.open_sell_qty?.neg() : context.open_buy_qty;
    const otherWorst =
      (otherSide === undefined ? context.position_qty : context.position_qty.plus(otherSide)).abs();
    const worst = after.abs().gt(otherWorst) ? after.abs() : otherWorst;
    // At the mark, as the positions and the other symbols' open orders are; at the order's
    // price when higher (a limit buy above the mark can fill at its limit).
    const mark = context.mark_price;
    const valuedAt = mark !== undefined && mark.gt(price) ? mark : price;
    const grossAfter = context.gross_exposure
      .plus(context.open_gross_exposure ?? ZERO)
      .plus(worst.minus(context.position_qty.abs()).times(valuedAt));
    if (grossAfter.gt(maxGross)) {
      fail(
        "max_gross_exposure",
        `gross exposure after the order ${toJson(grossAfter)} exceeds max_gross_exposure ${
          toJson(maxGross)
        }${
          context.open_gross_exposure === undefined || context.open_gross_exposure.isZero()
            ? ""
            : ` (open orders of other symbols ${toJson(context.open_gross_exposure)})`
        }`,
      );
    }
  }

  const maxOpen = limits.max_open_orders;
  if (maxOpen !== null && context.open_orders >= maxOpen) {
    fail(
      "max_open_orders",
      `${context.open_orders} orders are open: max_open_orders is ${maxOpen}`,
    );
  }

  const lossLimit = limits.daily_loss_limit;
  if (lossLimit !== null && !reduces && context.realized_pnl_today.lte(lossLimit.neg())) {
    fail(
      "daily_loss_limit",
      `realized P&L today ${toJson(context.realized_pnl_today)} has reached the daily loss limit ${
        toJson(lossLimit)
      }: only orders that reduce a position are accepted`,
    );
  }

  // Always on: a fill beyond NUMERIC(20,8) could be executed but never booked.
  const beyond: string[] = [];
  const check = (what: string, value: Decimal) => {
    if (!fitsNumeric(value)) beyond.push(`${what} ${toJson(value)}`);
  };
  if (fillPrice !== null) {
    check(`notional (qty ${toJson(order.qty)} × ${toJson(fillPrice)})`, order.qty.times(fillPrice));
  }
  check("position after the order", after);
  if (price !== null && fillPrice !== null) {
    check("its value", after.times(price));
    if (context.cash !== undefined) {
      const cash = context.cash;
      // Every open buy filled, at its worst cost; every open sell filled. The symbol's open
      // orders count at what they would pay or bring in, the order at its fill price (at the
      // touch when above its reference price).
      const at = fillPrice;
      const notional = order.qty.times(at);
      const ownBuys = context.symbol_open_buy_notional ??
        (context.open_buy_qty ?? ZERO).times(price);
      const ownSells = context.symbol_open_sell_notional ??
        (context.open_sell_qty ?? ZERO).times(price);
      const otherBuys = context.open_buy_notional ?? ZERO;
      const otherSells = context.open_sell_notional ?? ZERO;
      const paid = otherBuys.plus(ownBuys).plus(order.side === "buy" ? notional : ZERO);
      const costs = context.fill_costs === undefined ? ZERO : paid
        .times(context.fill_costs.bps).dividedBy(10_000)
        .plus(context.fill_costs.min.times(context.open_orders + 1));
      const figures = (own: Decimal, other: Decimal, side: string, ours: boolean) =>
        `cash ${toJson(cash)}` +
        (ours ? `, the order ${toJson(notional)} (qty ${toJson(order.qty)} × ${toJson(at)})` : "") +
        (own.isZero() ? "" : `, open ${side}s of ${symbol} ${toJson(own)}`) +
        (other.isZero() ? "" : `, open ${side}s of other symbols ${toJson(other)}`);
      const lowest = cash.minus(paid).minus(costs);
      if (!fitsNumeric(lowest)) {
        beyond.push(
          `cash after the order ${toJson(lowest.toDecimalPlaces(DB_SCALE))} (${
            figures(ownBuys, otherBuys, "buy", order.side === "buy")
          }` +
            (costs.isZero()
              ? ""
              : `, fees and slippage up to ${toJson(costs.toDecimalPlaces(DB_SCALE))}`) +
            ")",
        );
      }
      const highest = cash.plus(otherSells).plus(ownSells)
        .plus(order.side === "sell" ? notional : ZERO);
      if (!fitsNumeric(highest)) {
        beyond.push(
          `cash after the order ${toJson(highest.toDecimalPlaces(DB_SCALE))} (${
            figures(ownSells, otherSells, "sell", order.side === "sell")
          })`,
        );
      }
    }
  }
  if (beyond.length > 0) {
    fail(
      "numeric_range",
      `${beyond.join(", ")} for ${symbol}: more than ${DB_INTEGER_DIGITS} integer digits, ` +
        "beyond what fills, positions and cash hold (NUMERIC(20,8))",
    );
  }

  return violations;
}

/** Whether `value`, rounded to {@linkcode DB_SCALE} decimals as stored, fits `NUMERIC(20,8)`. */
function fitsNumeric(value: Decimal): boolean {
  return fitsDb(value.toDecimalPlaces(DB_SCALE));
}

function parseSymbolLimits(config: SymbolRiskConfig, path: string): Partial<SymbolRiskLimits> {
  if (path !== "risk") checkKeys(config, SYMBOL_KEYS, path);
  const limits: Partial<SymbolRiskLimits> = {};
  for (
    const key of [
      "max_order_qty",
      "max_order_notional",
      "max_position_qty",
      "price_collar_pct",
    ] as const
  ) {
    if (config[key] !== undefined) limits[key] = limit(config[key], `${path}.${key}`);
  }
  if (config.market_hours !== undefined) {
    if (!(MARKET_HOURS_MODES as readonly unknown[]).includes(config.market_hours)) {
      throw new TypeError(
        `${path}.market_hours must be one of ${MARKET_HOURS_MODES.join(", ")}, got ${
          JSON.stringify(config.market_hours)
        }`,
      );
    }
    limits.market_hours = config.market_hours;
  }
  return limits;
}

function limit(value: RiskConfigValue, path: string): Decimal | null {
  if (value === null) return null;
  let parsed: Decimal;
  try {
    parsed = parseDecimal(value);
  } catch (error) {
    throw new TypeError(`${path} must be a decimal or null, got ${JSON.stringify(value)}`, {
      cause: error,
    });
  }
  if (parsed.isNeg()) throw new TypeError(`${path} must be >= 0, got ${toJson(parsed)}`);
  if (!fitsDb(parsed)) {
    // Snapshots store the limits in risk_metrics: one NUMERIC(20,8) cannot hold fails them all.
    throw new TypeError(
      `${path} must have at most ${DB_INTEGER_DIGITS} integer digits and ${DB_SCALE} decimals ` +
        `(NUMERIC(20,8)), got ${toJson(parsed)}`,
    );
  }
  return parsed;
}

function checkKeys(config: object, known: readonly string[], path: string): void {
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new TypeError(`${path} must be a mapping`);
  }
  for (const key of Object.keys(config)) {
    if (!known.includes(key)) throw new TypeError(`${path}.${key} is not a risk setting`);
  }
}
