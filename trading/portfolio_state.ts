/**
 * The in-process view of one portfolio that the execution engine's risk
 * checks read without a database round trip — as `market/status.ts` is for
 * market data: per-symbol positions (signed quantity, average entry,
 * realized P&L, fees), cash, realized P&L today, and the unfilled quantity of
 * open orders per symbol and side.
 *
 * Who writes what:
 * - the position tracker (`actors/position_tracker.ts`) loads it at start
 *   ({@linkcode PortfolioState.load}, one snapshot) and again after a write
 *   whose answer was lost, and, after each committed batch of fills, records
 *   what it stored ({@linkcode PortfolioState.record});
 * - the execution engine keeps the open orders current
 *   ({@linkcode PortfolioState.setOpenOrder} /
 *   {@linkcode PortfolioState.removeOpenOrder}, keyed by client order id),
 *   registers each fill it stored without its position
 *   ({@linkcode PortfolioState.addUnappliedFill}) — forgotten once the
 *   tracker records it, so that a fill is counted in between as neither an
 *   open order nor a position would be — and reads
 *   {@linkcode PortfolioState.riskFigures} for its `RiskContext`.
 *
 * Rounding: a fill is applied with `trading/positions.ts` and every figure
 * but the cost basis is then rounded half-even to 8 decimals
 * (`NUMERIC(20,8)`), the same values the tracker stores; so the view after a
 * reload equals the view before, and the fills' `realized_pnl` sum exactly to
 * the position's. The cost basis (Σ qty × price of the open quantity) is
 * kept exact (16 decimals, `positions.cost_basis NUMERIC(38,16)`) and is what
 * the next fill realizes against: the rounded average entry price is only
 * shown and stored, never read back into P&L. So each fill's realized P&L is
 * its exact figure rounded once, and cash − starting cash = realized P&L −
 * Σ cost basis + at most 0.5e-8 per reducing fill (its realized P&L's
 * rounding) + at most 0.5e-8 per fill whose notional has more than 8
 * decimals (cash moves by the notional rounded to 8 decimals, see
 * {@linkcode applyTrackedFill}). A round trip to flat whose figures need no
 * rounding realizes exactly the cash it moved.
 *
 * "Today" is the UTC day (crypto trades around the clock; one boundary for
 * every asset): realized P&L today is the sum of the realized P&L of fills
 * executed (`filled_at`) on the UTC day of now — what
 * `realizedPnlByDay(sql, …)` sums in PostgreSQL — kept per day (today and
 * yesterday, and any later day a fill is stamped with), so a fill stamped
 * just after midnight by a broker clock ahead of ours counts for that day
 * and leaves today's figure alone. The fills stored but not yet applied
 * count too: applied in order to a copy of the positions, each realizes on
 * its own day what the tracker will store, so a losing fill the tracker has
 * not reached yet already counts against the daily loss limit.
 *
 * Marks ({@linkcode markPrice}): the mid of the freshest fresh best bid/ask of
 * any venue, else the newest fresh last trade, else none — then
 * `valuePortfolio` values the position at cost and lists it as unmarked.
 * Fresh is no older than `execution.max_price_age_ms`. The risk checks alone
 * fall back, when nothing is fresh, to the newest price no older than
 * {@linkcode DEFAULT_RISK_MARK_MAX_AGE_MS} (a mid or a trade, the newer).
 *
 * @example
 * ```ts
 * import { PortfolioState, markPrice } from "./portfolio_state.ts";
 *
 * const state = new PortfolioState({ starting_cash: "100000" });
 * await state.load(sql);
 * const figures = state.riskFigures("BTC-USDT", (s) => markPrice(cache, s, 5_000, Date.now()));
 * // { position_qty, open_buy_qty, open_sell_qty, open_orders, gross_exposure, realized_pnl_today }
 * ```
 *
 * @module
 */

import { type Clock, systemClock } from "../lib/clock.ts";
import { EXCHANGES } from "../market/events.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import {
  DEFAULT_ACTOR,
  DEFAULT_PORTFOLIO,
  listOpenOrders,
  listPositions,
  mapDbError,
  type Queryable,
  realizedPnlByDay,
} from "../db/mod.ts";
import { DB_SCALE, Decimal, fromDb, parseDecimal, ZERO } from "./money.ts";
import {
  applyFill as applyPositionFill,
  applyFillWithTrade,
  costBasisOf,
  emptyPosition,
  type Portfolio,
  type PortfolioValue,
  type Position,
  type PositionValue,
  valuePortfolio,
} from "./positions.ts";
import type { Side } from "./signal.ts";

const DAY_MS = 86_400_000;

/** Start of the UTC day of `ms` (00:00:00.000 UTC), ms since the epoch. */
export function utcDayStart(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** `value` rounded half-even to 8 decimals, the scale of `NUMERIC(20,8)`. */
export function roundMoney(value: Decimal): Decimal {
  const rounded = value.toDecimalPlaces(DB_SCALE, Decimal.ROUND_HALF_EVEN);
  return rounded.isZero() ? ZERO : rounded;
}

/**
 * `value` with its market value and unrealized P&L rounded to money
 * ({@linkcode roundMoney}), as the tracker stores and publishes them.
 */
export function roundPositionValue(value: PositionValue): PositionValue {
  return {
    ...value,
    market_value: roundMoney(value.market_value),
    unrealized_pnl: roundMoney(value.unrealized_pnl),
  };
}

/**
 * `value` with every money figure rounded to 8 decimals
 * ({@linkcode roundMoney}), its positions too ({@linkcode roundPositionValue}):
 * the figures the tracker stores and publishes, and the API shows.
 */
export function roundPortfolio(value: PortfolioValue): PortfolioValue {
  return {
    ...value,
    cash: roundMoney(value.cash),
    equity: roundMoney(value.equity),
    gross_exposure: roundMoney(value.gross_exposure),
    net_exposure: roundMoney(value.net_exposure),
    realized_pnl: roundMoney(value.realized_pnl),
    unrealized_pnl: roundMoney(value.unrealized_pnl),
    total_pnl: roundMoney(value.total_pnl),
    positions: value.positions.map(roundPositionValue),
  };
}

/** A fill as the portfolio applies it. */
export interface TrackedFill {
  /** Canonical symbol. */
  symbol: string;
  /** Buy or sell. */
  side: Side;
  /** Quantity, > 0. */
  qty: Decimal;
  /** Price, > 0. */
  price: Decimal;
  /** Fee paid; negative for a rebate. */
  fee: Decimal;
  /** When it was executed, ms since the epoch (decides the day of its realized P&L). */
  filled_at: number;
}

/** What applying one fill did: the position and cash after it, and the P&L it realized. */
export interface AppliedFill {
  /** Canonical symbol. */
  symbol: string;
  /** The position after the fill: every figure rounded to 8 decimals but the exact cost basis. */
  position: Position;
  /** Cash after the fill, rounded to 8 decimals. */
  cash: Decimal;
  /** Realized P&L of this fill, net of its fee (what `fills.realized_pnl` stores). */
  realized: Decimal;
  /** When the fill was executed, ms since the epoch. */
  filled_at: number;
  /**
   * Whether it reduced the position (closed some or all of it, or flipped
   * it): the trade it closed is then a win or a loss of its strategy.
   */
  closing: boolean;
  /**
   * For a closing fill, the result of the trade it closed, rounded half-even
   * to 8 decimals: the gain on the quantity closed less the opening fees it
   * releases and the closing share of its fee (see `trading/positions.ts`
   * `applyFillWithTrade`) — a win when > 0, a loss when < 0. Null otherwise.
   */
  trade_pnl: Decimal | null;
}

/**
 * Applies `fill` to `position` and `cash`, pure: the position through
 * `trading/positions.ts` `applyFill`, cash moved by the notional and the fee,
 * then every figure rounded half-even to 8 decimals except the cost basis,
 * which stays exact (16 decimals). The fill's P&L is realized against that
 * exact basis, so `realized` is the fill's exact realized P&L (net of its
 * fee) rounded once, half-even, and the position's realized P&L moves by
 * exactly that: the fills' realized P&L always sum to the position's.
 *
 * Cash moves by the notional rounded half-even to 8 decimals (an account
 * holds no sub-precision amount): a buy of 0.00000001 at 0.5 moves none,
 * whatever the balance. Each figure of the fill is rounded on its own, never
 * the balance it is added to, so a tie rounds the same way on any balance.
 *
 * @example
 * ```ts
 * import { applyTrackedFill } from "./portfolio_state.ts";
 * import { emptyPosition } from "./positions.ts";
 * import { parseDecimal as d } from "./money.ts";
 *
 * const a = applyTrackedFill(emptyPosition("AAPL"), d("1000"), {
 *   symbol: "AAPL", side: "buy", qty: d("3"), price: d("100"), fee: d("1"), filled_at: 0,
 * });
 * a.cash.toString(); // "699"
 * a.realized.toString(); // "-1"
 * ```
 */
export function applyTrackedFill(
  position: Position,
  cash: Decimal,
  fill: TrackedFill,
): AppliedFill {
  const { position: raw, trade_pnl } = applyFillWithTrade(position, {
    side: fill.side,
    qty: fill.qty,
    price: fill.price,
    fee: fill.fee,
  });
  // The fill's own figures are rounded, then added: rounding the new balance instead would
  // round a tie by the parity of the balance's last digit, not the fill's.
  const realized = roundMoney(raw.realized_pnl.minus(position.realized_pnl));
  const after: Position = {
    symbol: position.symbol,
    qty: roundMoney(raw.qty),
    avg_entry_price: roundMoney(raw.avg_entry_price),
    cost_basis: raw.cost_basis,
    realized_pnl: roundMoney(position.realized_pnl.plus(realized)),
    fees: roundMoney(raw.fees),
    open_fees: roundMoney(raw.open_fees ?? ZERO),
  };
  const notional = roundMoney(fill.qty.times(fill.price));
  const moved = fill.side === "buy" ? cash.minus(notional) : cash.plus(notional);
  return {
    symbol: fill.symbol,
    position: after,
    cash: roundMoney(moved.minus(fill.fee)),
    realized,
    filled_at: fill.filled_at,
    closing: trade_pnl !== null,
    trade_pnl: trade_pnl === null ? null : roundMoney(trade_pnl),
  };
}

/** An order still open, as the execution engine registers it. */
export interface OpenOrderQty {
  /** Canonical symbol. */
  symbol: string;
  /** Buy or sell. */
  side: Side;
  /** Quantity not yet filled; 0 or less removes the order. */
  remaining_qty: Decimal;
}

/** A fill stored but not yet applied to the positions, as the engine registers it. */
export interface UnappliedFill {
  /** Canonical symbol. */
  symbol: string;
  /** Buy or sell. */
  side: Side;
  /** Quantity, > 0. */
  qty: Decimal;
  /** Price, > 0 (values the fill when its symbol has no mark). */
  price: Decimal;
  /** Fee paid; negative for a rebate (counted in realized P&L today). @default {ZERO} */
  fee?: Decimal | undefined;
  /**
   * When it was executed, ms since the epoch: the day its realized P&L
   * counts for. @default {the clock's now when registered}
   */
  filled_at?: number | undefined;
}

/** The figures of a stored fill (NUMERIC text) that {@linkcode unappliedFillOf} reads. */
export interface StoredFillFigures {
  symbol: string;
  side: Side;
  qty: string;
  price: string;
  commission: string;
  filled_at: Date;
}

/** A stored fill as an {@linkcode UnappliedFill}, with its fee and time. */
export function unappliedFillOf(fill: StoredFillFigures): UnappliedFill {
  return {
    symbol: fill.symbol,
    side: fill.side,
    qty: fromDb(fill.qty),
    price: fromDb(fill.price),
    fee: fromDb(fill.commission),
    filled_at: fill.filled_at.getTime(),
  };
}

/** An {@linkcode UnappliedFill} as held: its fee and time filled in. */
interface HeldFill extends UnappliedFill {
  fee: Decimal;
  filled_at: number;
}

/** Unfilled quantity of open orders in one symbol. */
export interface OpenQty {
  /** Σ remaining quantity of open buy orders. */
  buy: Decimal;
  /** Σ remaining quantity of open sell orders. */
  sell: Decimal;
}

/** Exposure of the open positions at marks. */
export interface StateExposure {
  /** Σ |qty × mark|. */
  gross: Decimal;
  /** Σ qty × mark (shorts negative). */
  net: Decimal;
  /** Symbols with a position but no mark (valued at cost). */
  unmarked: string[];
}

/** Options of {@linkcode PortfolioState.exposure}. */
export interface ExposureOptions {
  /**
   * Count the fills stored but not yet applied as if applied (what the risk
   * checks need). @default {false}
   */
  unapplied_fills?: boolean | undefined;
}

/** The `RiskContext` fields the portfolio knows (see `trading/risk.ts`). */
export interface RiskFigures {
  /** Signed position in the symbol, its fills not yet applied included. */
  position_qty: Decimal;
  /** Unfilled quantity of open buy orders in the symbol. */
  open_buy_qty: Decimal;
  /** Unfilled quantity of open sell orders in the symbol. */
  open_sell_qty: Decimal;
  /** Open orders over the portfolio. */
  open_orders: number;
  /** Σ |qty × mark| over the positions, fills not yet applied included. */
  gross_exposure: Decimal;
  /** Realized P&L of fills executed today (UTC). */
  realized_pnl_today: Decimal;
}

/** Options of {@linkcode PortfolioState}. */
export interface PortfolioStateOptions {
  /** The portfolio mirrored. @default {DEFAULT_PORTFOLIO} */
  portfolio_id?: string | undefined;
  /**
   * Cash the portfolio starts with (`portfolio.starting_cash`): what a
   * pristine portfolio is initialised with; once stored, the stored figure
   * is the one used ({@linkcode PortfolioState.starting_cash}).
   */
  starting_cash: Decimal | string;
  /** For "today". @default {systemClock} */
  clock?: Clock | undefined;
}

/** Options of {@linkcode PortfolioState.load}. */
export interface LoadOptions {
  /**
   * Also read the open orders (merged into the registered ones: an order
   * the database knows is set, others are kept). @default {true}
   */
  open_orders?: boolean | undefined;
  /** Recorded as `updated_by` when the portfolio is initialised. @default {DEFAULT_ACTOR} */
  by?: string | undefined;
}

/**
 * One portfolio's positions, cash, realized P&L today and open-order
 * quantities, in memory. See the module documentation.
 */
export class PortfolioState {
  /** The portfolio mirrored. */
  readonly portfolio_id: string;
  /** Cash a pristine portfolio is initialised with (`portfolio.starting_cash`). */
  readonly configured_starting_cash: Decimal;
  #startingCash: Decimal;
  readonly #clock: Clock;
  readonly #positions = new Map<string, Position>();
  /** Per symbol, the id of the last fill applied to its position (as stored or recorded). */
  readonly #lastFill = new Map<string, string>();
  #cash: Decimal;
  /** Realized P&L of the fills applied, per UTC day (its start, ms); days before yesterday pruned. */
  readonly #realizedByDay = new Map<number, Decimal>();
  /** What the unapplied fills would realize, per UTC day; null until asked after a change. */
  #unappliedRealized: Map<number, Decimal> | null = null;
  readonly #openOrders = new Map<string, OpenOrderQty>();
  readonly #openBySymbol = new Map<string, OpenQty>();
  /** Fills stored but not yet applied to positions, by fill id. */
  readonly #unapplied = new Map<string, HeldFill>();
  /** Per symbol: Σ signed quantity of the unapplied fills, and how many there are. */
  readonly #unappliedBySymbol = new Map<string, { qty: Decimal; fills: number }>();
  #version = 0;
  #loaded = false;

  /** Creates a state holding the starting cash and nothing else. */
  constructor(options: PortfolioStateOptions) {
    this.portfolio_id = options.portfolio_id ?? DEFAULT_PORTFOLIO;
    this.configured_starting_cash = parseDecimal(options.starting_cash);
    this.#startingCash = this.configured_starting_cash;
    this.#cash = this.configured_starting_cash;
    this.#clock = options.clock ?? systemClock;
  }

  /**
   * Cash the portfolio started with: the figure stored with it
   * (`portfolios.starting_cash`, set once when it was initialised) once
   * loaded, the configured one before. Total P&L is equity minus this.
   */
  get starting_cash(): Decimal {
    return this.#startingCash;
  }

  /** Cash now. */
  get cash(): Decimal {
    return this.#cash;
  }

  /** Incremented on every change of positions or cash; lets readers skip unchanged states. */
  get version(): number {
    return this.#version;
  }

  /** Whether {@linkcode PortfolioState.load} completed at least once. */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** The position in `symbol` (flat when there is none). */
  position(symbol: string): Position {
    return this.#positions.get(symbol) ?? emptyPosition(symbol);
  }

  /** Whether the state holds a position in `symbol` (a flat one included): one is stored. */
  hasPosition(symbol: string): boolean {
    return this.#positions.has(symbol);
  }

  /**
   * The id of the last fill applied to the position in `symbol`: as stored
   * (`positions.last_fill_id`) at the last load, or as recorded since; null
   * when none is known.
   */
  lastFillId(symbol: string): string | null {
    return this.#lastFill.get(symbol) ?? null;
  }

  /** Every position, flat ones included, by symbol. */
  positions(): Position[] {
    return [...this.#positions.values()].sort((a, b) =>
      a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0
    );
  }

  /** Σ realized P&L over the positions, net of fees. */
  realizedTotal(): Decimal {
    let total = ZERO;
    for (const position of this.#positions.values()) total = total.plus(position.realized_pnl);
    return total;
  }

  /**
   * Realized P&L of the fills executed on the UTC day of `nowMs`: those
   * applied, and what those stored but not yet applied will realize (applied
   * in order after the positions held).
   */
  realizedToday(nowMs: number = this.#clock.now()): Decimal {
    const day = utcDayStart(nowMs);
    const applied = this.#realizedByDay.get(day) ?? ZERO;
    if (this.#unapplied.size === 0) return applied;
    return applied.plus(this.#unappliedRealizedByDay().get(day) ?? ZERO);
  }

  /** Per UTC day, what the unapplied fills realize applied in id order to a copy of the positions. */
  #unappliedRealizedByDay(): Map<number, Decimal> {
    if (this.#unappliedRealized !== null) return this.#unappliedRealized;
    const byDay = new Map<number, Decimal>();
    const positions = new Map<string, Position>();
    for (const fill of this.#unappliedInIdOrder()) {
      const before = positions.get(fill.symbol) ?? this.position(fill.symbol);
      const applied = applyTrackedFill(before, ZERO, fill);
      positions.set(fill.symbol, applied.position);
      const day = utcDayStart(fill.filled_at);
      byDay.set(day, (byDay.get(day) ?? ZERO).plus(applied.realized));
    }
    this.#unappliedRealized = byDay;
    return byDay;
  }

  /**
   * Applies `fill` to this state ({@linkcode applyTrackedFill}) and returns
   * what it did; the tracker stores the same figures in PostgreSQL.
   */
  applyFill(fill: TrackedFill): AppliedFill {
    const applied = applyTrackedFill(this.position(fill.symbol), this.#cash, fill);
    this.record(applied);
    return applied;
  }

  /**
   * Installs what a committed fill did: the position and cash after it, and
   * its realized P&L counted for the UTC day of its `filled_at` (days before
   * yesterday are forgotten). `fillId` (the fill's row id) forgets the fill
   * as unapplied ({@linkcode PortfolioState.addUnappliedFill}).
   */
  record(applied: AppliedFill, fillId?: string): void {
    if (fillId !== undefined) {
      this.#forgetUnapplied(fillId);
      this.#lastFill.set(applied.symbol, fillId);
    }
    this.#positions.set(applied.symbol, applied.position);
    this.#cash = applied.cash;
    this.#unappliedRealized = null;
    const day = utcDayStart(applied.filled_at);
    if (day >= utcDayStart(this.#clock.now()) - DAY_MS) {
      this.#realizedByDay.set(day, (this.#realizedByDay.get(day) ?? ZERO).plus(applied.realized));
    }
    this.#pruneDays();
    this.#version++;
  }

  /** Forgets the realized P&L of days before yesterday. */
  #pruneDays(): void {
    const oldest = utcDayStart(this.#clock.now()) - DAY_MS;
    for (const day of this.#realizedByDay.keys()) {
      if (day < oldest) this.#realizedByDay.delete(day);
    }
  }

  /** Replaces the position of its symbol (e.g. with the stored one). */
  setPosition(position: Position): void {
    this.#positions.set(position.symbol, position);
    this.#unappliedRealized = null;
    this.#version++;
  }

  /** Replaces the cash figure. */
  setCash(cash: Decimal): void {
    this.#cash = cash;
    this.#version++;
  }

  /**
   * Registers or updates an open order under `key` (its client order id)
   * with its unfilled quantity; a quantity of 0 or less removes it.
   */
  setOpenOrder(key: string, order: OpenOrderQty): void {
    this.removeOpenOrder(key);
    if (!order.remaining_qty.gt(0)) return;
    const entry = { symbol: order.symbol, side: order.side, remaining_qty: order.remaining_qty };
    this.#openOrders.set(key, entry);
    const sums = this.#openBySymbol.get(entry.symbol) ?? { buy: ZERO, sell: ZERO };
    sums[entry.side] = sums[entry.side].plus(entry.remaining_qty);
    this.#openBySymbol.set(entry.symbol, sums);
  }

  /** Forgets the open order `key` (filled, cancelled, rejected or expired); true when it was known. */
  removeOpenOrder(key: string): boolean {
    const entry = this.#openOrders.get(key);
    if (entry === undefined) return false;
    this.#openOrders.delete(key);
    const sums = this.#openBySymbol.get(entry.symbol);
    if (sums !== undefined) {
      sums[entry.side] = sums[entry.side].minus(entry.remaining_qty);
      if (sums.buy.isZero() && sums.sell.isZero()) this.#openBySymbol.delete(entry.symbol);
    }
    return true;
  }

  /**
   * Registers fill `fillId` (its row id) as stored but not yet applied to the
   * positions: counted by {@linkcode PortfolioState.unappliedQty},
   * `exposure(…, { unapplied_fills: true })` and
   * {@linkcode PortfolioState.realizedToday} until
   * {@linkcode PortfolioState.record} records it (or a load finds it applied).
   * Without `fee` it counts none; without `filled_at`, as executed now.
   */
  addUnappliedFill(fillId: string, fill: UnappliedFill): void {
    if (this.#unapplied.has(fillId)) return;
    const held: HeldFill = {
      symbol: fill.symbol,
      side: fill.side,
      qty: fill.qty,
      price: fill.price,
      fee: fill.fee ?? ZERO,
      filled_at: fill.filled_at ?? this.#clock.now(),
    };
    this.#unapplied.set(fillId, held);
    this.#unappliedRealized = null;
    this.#addUnappliedSum(held, 1);
  }

  /** Ids of the fills registered as not yet applied, oldest (lowest id) first. */
  unappliedFillIds(): string[] {
    return [...this.#unapplied.keys()].sort(compareIds);
  }

  /**
   * Forgets fill `fillId` as unapplied without recording anything (it was
   * found applied elsewhere, or not stored); true when it was registered.
   */
  forgetUnappliedFill(fillId: string): boolean {
    const known = this.#unapplied.has(fillId);
    this.#forgetUnapplied(fillId);
    return known;
  }

  /** Σ signed quantity of the fills in `symbol` stored but not yet applied (buys > 0). */
  unappliedQty(symbol: string): Decimal {
    return this.#unappliedBySymbol.get(symbol)?.qty ?? ZERO;
  }

  /**
   * Cash once the fills stored but not yet applied are: {@linkcode
   * PortfolioState.cash} moved by each one's notional (rounded to money, as
   * {@linkcode applyTrackedFill} moves it) and fee.
   */
  cashWithUnapplied(): Decimal {
    let cash = this.#cash;
    for (const fill of this.#unapplied.values()) {
      const notional = roundMoney(fill.qty.times(fill.price));
      cash = (fill.side === "buy" ? cash.minus(notional) : cash.plus(notional)).minus(fill.fee);
    }
    return cash;
  }

  /** Fills registered as not yet applied. */
  unappliedFillCount(): number {
    return this.#unapplied.size;
  }

  /** `position` (flat when absent) with the unapplied fills of `symbol` applied, in id order. */
  #withUnapplied(symbol: string, position: Position | undefined): Position {
    let after = position ?? emptyPosition(symbol);
    for (const fill of this.#unappliedInIdOrder()) {
      if (fill.symbol === symbol) after = applyPositionFill(after, fill);
    }
    return after;
  }

  /**
   * The unapplied fills by id, lowest first: the order the tracker applies
   * them in, whatever order they were registered in (a load appends the fills
   * it finds after those the engine registered, older ones included).
   */
  #unappliedInIdOrder(): HeldFill[] {
    return [...this.#unapplied.entries()]
      .sort(([a], [b]) => compareIds(a, b))
      .map(([, fill]) => fill);
  }

  #forgetUnapplied(fillId: string): void {
    const fill = this.#unapplied.get(fillId);
    if (fill === undefined) return;
    this.#unapplied.delete(fillId);
    this.#unappliedRealized = null;
    this.#addUnappliedSum(fill, -1);
  }

  #addUnappliedSum(fill: UnappliedFill, sign: 1 | -1): void {
    const signed = (fill.side === "buy") === (sign === 1) ? fill.qty : fill.qty.neg();
    const sums = this.#unappliedBySymbol.get(fill.symbol) ?? { qty: ZERO, fills: 0 };
    sums.qty = sums.qty.plus(signed);
    sums.fills += sign;
    if (sums.fills === 0) this.#unappliedBySymbol.delete(fill.symbol);
    else this.#unappliedBySymbol.set(fill.symbol, sums);
  }

  /** Unfilled quantity of open orders in `symbol`, per side. */
  openQty(symbol: string): OpenQty {
    const sums = this.#openBySymbol.get(symbol);
    return sums === undefined ? { buy: ZERO, sell: ZERO } : { buy: sums.buy, sell: sums.sell };
  }

  /** Open orders registered. */
  openOrderCount(): number {
    return this.#openOrders.size;
  }

  /** The portfolio as `trading/positions.ts` sees it. */
  portfolio(): Portfolio {
    return {
      starting_cash: this.starting_cash,
      cash: this.#cash,
      positions: new Map(this.#positions),
    };
  }

  /** The portfolio valued at `markOf(symbol)` (see `valuePortfolio`). */
  value(markOf: (symbol: string) => Decimal | null | undefined): PortfolioValue {
    return valuePortfolio(this.portfolio(), markOf);
  }

  /**
   * Gross and net exposure of the open positions at `markOf(symbol)` — with
   * `unapplied_fills`, of the positions the fills not yet applied make (a
   * symbol without a mark is valued at cost: the cost basis of the position
   * those fills make, applied in order — a reducing fill releases basis at
   * the entry price, not at its own).
   */
  exposure(
    markOf: (symbol: string) => Decimal | null | undefined,
    options: ExposureOptions = {},
  ): StateExposure {
    let gross = ZERO;
    let net = ZERO;
    const unmarked: string[] = [];
    const unapplied = options.unapplied_fills === true && this.#unappliedBySymbol.size > 0
      ? this.#unappliedBySymbol
      : null;
    const add = (symbol: string, position: Position | undefined) => {
      const extra = unapplied?.get(symbol);
      const qty = (position?.qty ?? ZERO).plus(extra?.qty ?? ZERO);
      if (qty.isZero()) return;
      const mark = markOf(symbol) ?? null;
      let value: Decimal;
      if (mark !== null) value = qty.times(mark);
      else {
        unmarked.push(symbol);
        value = costBasisOf(
          extra === undefined ? position! : this.#withUnapplied(symbol, position),
        );
      }
      gross = gross.plus(value.abs());
      net = net.plus(value);
    };
    for (const position of this.#positions.values()) add(position.symbol, position);
    for (const symbol of unapplied?.keys() ?? []) {
      if (!this.#positions.has(symbol)) add(symbol, undefined);
    }
    return { gross, net, unmarked: unmarked.sort() };
  }

  /** The `RiskContext` figures of an order in `symbol`. */
  riskFigures(
    symbol: string,
    markOf: (symbol: string) => Decimal | null | undefined,
    nowMs: number = this.#clock.now(),
  ): RiskFigures {
    const open = this.openQty(symbol);
    return {
      position_qty: this.position(symbol).qty.plus(this.unappliedQty(symbol)),
      open_buy_qty: open.buy,
      open_sell_qty: open.sell,
      open_orders: this.#openOrders.size,
      gross_exposure: this.exposure(markOf, { unapplied_fills: true }).gross,
      realized_pnl_today: this.realizedToday(nowMs),
    };
  }

  /**
   * Reads the portfolio from PostgreSQL: initialises it with the starting
   * cash when it is pristine ({@linkcode initPortfolio}), then replaces
   * positions, cash and realized P&L today with the stored ones and, unless
   * `open_orders: false`, merges in the open orders. The fills stored but not
   * applied (`realized_pnl IS NULL`) become the unapplied ones: one registered
   * before the load and no longer unapplied is forgotten (it was applied),
   * one registered during the load is kept. After the initialisation (its own
   * statement), everything is read in one `REPEATABLE READ READ ONLY`
   * transaction — one snapshot, so a commit landing meanwhile is either
   * wholly in what is read (its fills applied, positions and cash) or not at
   * all; given a transaction (`TransactionSql`), its reads are used as they
   * are.
   */
  async load(sql: Queryable, options: LoadOptions = {}): Promise<void> {
    const nowMs = this.#clock.now();
    const registered = new Set(this.#unapplied.keys());
    await initPortfolio(sql, this.portfolio_id, this.configured_starting_cash, {
      by: options.by ?? DEFAULT_ACTOR,
    });
    // One snapshot: a commit landing between the reads would mix two states (its fills applied
    // but not its cash, say). Within a caller's transaction, that transaction's reads are used.
    const read = (tx: Queryable) => this.#read(tx, nowMs, options.open_orders !== false);
    const { row, positions, days, open, unapplied } = "begin" in sql
      ? await mapped(
        sql.begin("isolation level repeatable read read only", async (tx) => ({
          value: await read(tx),
        })),
      ).then((boxed) => (boxed as { value: Awaited<ReturnType<typeof read>> }).value)
      : await read(sql);
    this.#positions.clear();
    this.#lastFill.clear();
    for (const p of positions) {
      if (p.last_fill_id !== null) this.#lastFill.set(p.symbol, p.last_fill_id);
      this.#positions.set(p.symbol, {
        symbol: p.symbol,
        qty: fromDb(p.qty),
        avg_entry_price: fromDb(p.avg_entry_price),
        cost_basis: fromDb(p.cost_basis),
        realized_pnl: fromDb(p.realized_pnl),
        fees: fromDb(p.commission),
        open_fees: fromDb(p.open_fees),
      });
    }
    this.#cash = fromDb(row.cash);
    this.#startingCash = fromDb(row.starting_cash);
    this.#realizedByDay.clear();
    for (const { day, realized_pnl } of days) {
      this.#realizedByDay.set(Date.parse(`${day}T00:00:00Z`), fromDb(realized_pnl));
    }
    this.#unappliedRealized = null;
    for (const order of open) {
      this.setOpenOrder(order.client_order_id, {
        symbol: order.symbol,
        side: order.side,
        remaining_qty: fromDb(order.qty).minus(fromDb(order.filled_qty)),
      });
    }
    const stillUnapplied = new Set(unapplied.map((fill) => fill.id));
    for (const id of registered) if (!stillUnapplied.has(id)) this.#forgetUnapplied(id);
    for (const fill of unapplied) {
      const held = this.#unapplied.get(fill.id);
      if (held !== undefined) {
        // Registered by the engine: the stored fee and time are what counts.
        held.fee = fromDb(fill.commission);
        held.filled_at = fill.filled_at.getTime();
        continue;
      }
      this.addUnappliedFill(fill.id, unappliedFillOf(fill));
    }
    this.#loaded = true;
    this.#version++;
  }

  /** What {@linkcode PortfolioState.load} reads, all with `sql` (one snapshot when a transaction). */
  async #read(sql: Queryable, nowMs: number, openOrders: boolean) {
    const [row] = await mapped(sql<{ cash: string; starting_cash: string }[]>`
      SELECT cash::text AS cash, starting_cash::text AS starting_cash
      FROM portfolios WHERE id = ${this.portfolio_id}`);
    if (row === undefined) throw new Error(`Portfolio ${this.portfolio_id} not found`);
    const positions = await listPositions(sql, { portfolio_id: this.portfolio_id });
    const days = await realizedPnlByDay(sql, {
      portfolio_id: this.portfolio_id,
      from: new Date(utcDayStart(nowMs) - DAY_MS),
    });
    const open = openOrders ? await listOpenOrders(sql, { portfolio_id: this.portfolio_id }) : [];
    const unapplied = await mapped(sql<Array<StoredFillFigures & { id: string }>>`
      SELECT f.id::text AS id, f.symbol, f.side, f.qty::text AS qty, f.price::text AS price,
        f.commission::text AS commission, f.filled_at
      FROM fills f JOIN orders o ON o.id = f.order_id
      WHERE f.realized_pnl IS NULL AND o.portfolio_id = ${this.portfolio_id}
      ORDER BY f.id`);
    return { row, positions, days, open, unapplied };
  }
}

/** What {@linkcode initPortfolio} found or made. */
export interface InitialisedPortfolio {
  /** Its cash (NUMERIC text). */
  cash: string;
  /** The cash it started with (NUMERIC text), as stored. */
  starting_cash: string;
  /** Whether this call initialised it with the starting cash given. */
  initialised: boolean;
}

/**
 * Makes sure portfolio `id` exists and returns its cash and starting cash:
 * a missing one is created holding `startingCash`, and a pristine one — no
 * starting cash stored, cash 0, equity 0, realized 0 and no position rows,
 * as the migration creates `default` — is given `startingCash` (cash, equity
 * and starting cash). A portfolio already used keeps its stored starting
 * cash; one that has none (created by other means) gets what its figures
 * tell, once: cash − realized P&L + Σ cost basis (cash moves only by fills),
 * rounded half-even to 8 decimals (`round_half_even`, as the engine rounds
 * money; migration 0005, which did the same for the portfolios existing then,
 * rounded half away from zero). Idempotent.
 */
export async function initPortfolio(
  sql: Queryable,
  id: string,
  startingCash: Decimal,
  options: { by?: string } = {},
): Promise<InitialisedPortfolio> {
  const by = options.by ?? DEFAULT_ACTOR;
  const cash = roundMoney(startingCash).toFixed(DB_SCALE);
  const [changed] = await mapped(sql<{ cash: string; starting_cash: string }[]>`
    INSERT INTO portfolios AS p (id, cash, equity, starting_cash, created_by, updated_by)
    VALUES (${id}, ${cash}, ${cash}, ${cash}, ${by}, ${by})
    ON CONFLICT (id) DO UPDATE SET cash = excluded.cash, equity = excluded.equity,
      starting_cash = excluded.starting_cash, updated_by = excluded.updated_by
    WHERE p.starting_cash IS NULL AND p.cash = 0 AND p.equity = 0 AND p.realized_pnl = 0
      AND NOT EXISTS (SELECT 1 FROM positions WHERE portfolio_id = ${id})
    RETURNING cash::text AS cash, starting_cash::text AS starting_cash`);
  if (changed !== undefined) return { ...changed, initialised: true };
  const [row] = await mapped(sql<{ cash: string; starting_cash: string }[]>`
    WITH derived AS (
      UPDATE portfolios p SET starting_cash = round_half_even(p.cash - p.realized_pnl + coalesce(
          (SELECT sum(cost_basis) FROM positions WHERE portfolio_id = p.id), 0), 8),
        updated_by = ${by}
      WHERE p.id = ${id} AND p.starting_cash IS NULL
      RETURNING cash, starting_cash
    )
    SELECT cash::text AS cash, starting_cash::text AS starting_cash FROM derived
    UNION ALL
    SELECT cash::text, starting_cash::text FROM portfolios
    WHERE id = ${id} AND NOT EXISTS (SELECT 1 FROM derived)`);
  if (row === undefined) throw new Error(`Portfolio ${id} was neither initialised nor found`);
  return { ...row, initialised: false };
}

/**
 * Longest age, in ms, of the price the risk checks value a position at when
 * no price is fresh ({@linkcode MarkPriceOptions.fallback_max_age_ms}): four
 * days, the longest a US equity market stays closed on a long weekend (Friday
 * 16:00 to Tuesday 09:30 ET is 89.5 hours), so a stock held over one is
 * valued at its last price, not at cost; a crypto price that old means a feed
 * down for days.
 */
export const DEFAULT_RISK_MARK_MAX_AGE_MS = 4 * DAY_MS;

/** Options of {@linkcode markPrice}. */
export interface MarkPriceOptions {
  /**
   * When no price is fresh, the newest price of any venue — a mid or a last
   * trade, whichever was received last — no older than this (ms), instead of
   * none. For the risk checks ({@linkcode DEFAULT_RISK_MARK_MAX_AGE_MS}); a
   * mark that is shown or stored takes none. @default {0: none}
   */
  fallback_max_age_ms?: number | undefined;
}

/**
 * The mark of `symbol` from the latest-market cache at `nowMs`, rounded
 * half-even to 8 decimals: the mid of the freshest best bid/ask no older than
 * `maxAgeMs` (both sides > 0), else the newest last trade no older than
 * `maxAgeMs`, else null — a price older than `maxAgeMs`
 * (`execution.max_price_age_ms`) is no mark: the position is shown without
 * one and valued at cost. With `fallback_max_age_ms` (the risk checks), when
 * nothing is fresh, the newest price no older than that, mid or trade, the
 * newer first.
 */
export function markPrice(
  cache: LatestCache,
  symbol: string,
  maxAgeMs: number,
  nowMs: number,
  options: MarkPriceOptions = {},
): Decimal | null {
  let freshMid: Decimal | null = null;
  let freshAt = -Infinity;
  for (const exchange of EXCHANGES) {
    const quote = cache.bestBidAsk(exchange, symbol, maxAgeMs, nowMs);
    if (quote === null || quote.ts_local <= freshAt) continue;
    const mid = midOf(quote.bid_price, quote.ask_price);
    if (mid === null) continue;
    freshMid = mid;
    freshAt = quote.ts_local;
  }
  if (freshMid !== null) return roundMoney(freshMid);
  const snapshot = cache.latest(symbol);
  if (snapshot === null) return null;
  const fallbackMs = Math.max(maxAgeMs, options.fallback_max_age_ms ?? 0);
  // Times in µs since the epoch: anything received before `oldest` is too old.
  const oldest = (nowMs - fallbackMs) * 1000;
  let trade: Decimal | null = null;
  let tradeAt = -Infinity;
  let mid: Decimal | null = null;
  let midAt = -Infinity;
  for (const entry of snapshot.exchanges) {
    const t = entry.trade;
    if (t !== null && t.ts_local > tradeAt && t.ts_local >= oldest) {
      const price = positiveDecimal(t.price);
      if (price !== null) {
        trade = price;
        tradeAt = t.ts_local;
      }
    }
    const q = entry.quote;
    if (q !== null && q.ts_local > midAt && q.ts_local >= oldest) {
      const m = midOf(q.bid_price, q.ask_price);
      if (m !== null) {
        mid = m;
        midAt = q.ts_local;
      }
    }
  }
  // A fresh trade (no fresh quote); else, with a fallback, the newer of the two.
  const fresh = (nowMs - maxAgeMs) * 1000;
  if (trade !== null && tradeAt >= fresh) return roundMoney(trade);
  if (fallbackMs === maxAgeMs) return null;
  if (trade !== null && (mid === null || tradeAt >= midAt)) return roundMoney(trade);
  return mid === null ? null : roundMoney(mid);
}

/** Orders row ids (decimal text) numerically. */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

async function mapped<T>(query: Promise<T>): Promise<T> {
  try {
    return await query;
  } catch (error) {
    throw mapDbError(error);
  }
}

function midOf(bid: string, ask: string): Decimal | null {
  const b = positiveDecimal(bid);
  const a = positiveDecimal(ask);
  return b === null || a === null ? null : b.plus(a).dividedBy(2);
}

function positiveDecimal(text: string): Decimal | null {
  try {
    const value = new Decimal(text);
    return value.isFinite() && value.gt(0) ? value : null;
  } catch {
    return null;
  }
}
