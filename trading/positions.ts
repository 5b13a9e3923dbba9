/**
 * Positions and the portfolio from fills, by the average-cost method, all in
 * {@linkcode Decimal}. Pure: {@linkcode applyFill} and
 * {@linkcode applyPortfolioFill} return new values.
 *
 * - Quantity is signed: long > 0, short < 0; a fill larger than the position
 *   on the other side closes it and opens the rest the other way (a flip).
 * - Cost basis: Σ signed qty × price of the open quantity (negative for a
 *   short), kept exact — qty and price have at most 8 decimals each, so an
 *   opening fill's cost has at most 16 ({@linkcode COST_BASIS_SCALE}). A
 *   reduction releases the closed share `closed / |qty|` of it, rounded
 *   half-even to 16 decimals (all of it when the position closes), so the
 *   basis stays exact at 16 decimals fill after fill.
 * - Average entry price: `cost basis / qty` when a position opens or grows,
 *   kept when it shrinks, the fill's price after a flip, zero when flat. It is
 *   for display and storage (rounded to 8 decimals by the tracker); P&L never
 *   reads it back.
 * - Realized P&L: on every reduction, `closed qty × price − released cost`
 *   for a long, `released cost − closed qty × price` for a short (the released
 *   cost of a short is negative, so both are `sign × closed × price −
 *   released`); every fill's fee is subtracted when paid (opening fills
 *   included), so realized P&L is net of all fees. A negative fee (a rebate)
 *   adds.
 * - Opening fees: the fees paid to open the open quantity — an opening fill's
 *   fee, and the share of a flip's fee that opens the new side
 *   (`opened ÷ qty`) — released pro rata with the cost basis (all of them
 *   when the position closes). No P&L figure reads them: they judge the trade
 *   a reducing fill closes ({@linkcode applyFillWithTrade}): its gain on the
 *   quantity closed, less the opening fees released and the closing share
 *   (`closed ÷ qty`) of its own fee — a win when > 0, a loss when < 0.
 * - Unrealized P&L at a mark: `qty × mark − cost basis`; market value
 *   `qty × mark` (negative for a short).
 * - Portfolio cash: starting cash − buy notionals + sell notionals − fees;
 *   equity: cash + Σ market value; gross exposure Σ|market value|, net Σ market value.
 *
 * So realized − cost basis = −Σ buy notional + Σ sell notional − Σ fees
 * exactly, fill by fill (what a fill releases is what leaves the basis), and
 * realized + unrealized = equity − starting cash exactly; a flat position has
 * realized exactly the cash it moved. The only rounding is of a released
 * share to 16 decimals, which moves P&L between realized now and realized
 * later by at most 0.5e-16, never out of the total.
 *
 * @example
 * ```ts
 * import { applyFill, emptyPosition, markPosition } from "./positions.ts";
 * import { parseDecimal as d } from "./money.ts";
 *
 * let p = emptyPosition("AAPL");
 * p = applyFill(p, { side: "buy", qty: d("10"), price: d("100"), fee: d("1") });
 * p = applyFill(p, { side: "sell", qty: d("4"), price: d("110"), fee: d("1") });
 * p.realized_pnl.toString(); // "38": 4 × 10 − 2 fees
 * markPosition(p, d("105")).unrealized_pnl.toString(); // "30": 6 × 5
 * ```
 *
 * @module
 */

import { Decimal, toJson, ZERO } from "./money.ts";
import type { Side } from "./signal.ts";

/** Decimals of a cost basis: a quantity's 8 times a price's 8 (`NUMERIC(38,16)` in PostgreSQL). */
export const COST_BASIS_SCALE = 16;

/** A position in one symbol. */
export interface Position {
  /** Canonical symbol. */
  readonly symbol: string;
  /** Signed quantity: long > 0, short < 0, flat 0. */
  readonly qty: Decimal;
  /** Average entry price of the open quantity; 0 when flat. For display: P&L uses `cost_basis`. */
  readonly avg_entry_price: Decimal;
  /**
   * Σ signed qty × price of the open quantity (negative for a short, 0 when
   * flat), exact. Absent on a position built by hand: then `qty ×
   * avg_entry_price` ({@linkcode costBasisOf}).
   */
  readonly cost_basis?: Decimal | undefined;
  /** Realized P&L, net of every fee paid in the symbol. */
  readonly realized_pnl: Decimal;
  /** Fees paid in the symbol. */
  readonly fees: Decimal;
  /**
   * The fees paid to open the open quantity, not yet released by a reduction
   * (0 when flat). Absent on a position built by hand: 0.
   */
  readonly open_fees?: Decimal | undefined;
}

/** A fill as the position tracker sees it. */
export interface PositionFill {
  /** Buy or sell. */
  side: Side;
  /** Filled quantity, > 0. */
  qty: Decimal;
  /** Fill price, > 0. */
  price: Decimal;
  /** Commission paid; negative for a rebate. @default {ZERO} */
  fee?: Decimal;
}

/** A flat position in `symbol`, nothing realized. */
export function emptyPosition(symbol: string): Position {
  return {
    symbol,
    qty: ZERO,
    avg_entry_price: ZERO,
    cost_basis: ZERO,
    realized_pnl: ZERO,
    fees: ZERO,
    open_fees: ZERO,
  };
}

/** The cost basis of `position`: its `cost_basis`, else `qty × avg_entry_price`. */
export function costBasisOf(position: Position): Decimal {
  return position.cost_basis ?? position.qty.times(position.avg_entry_price);
}

/**
 * The position after `fill` (see the module doc for the rules). Throws a
 * `RangeError` unless the fill's quantity and price are > 0.
 *
 * @example
 * ```ts
 * import { applyFill, emptyPosition } from "./positions.ts";
 * import { parseDecimal as d } from "./money.ts";
 *
 * let p = applyFill(emptyPosition("BTC-USDT"), { side: "buy", qty: d("2"), price: d("100") });
 * p = applyFill(p, { side: "sell", qty: d("5"), price: d("90") }); // flip: realized −20
 * p.qty.toString(); // "-3"
 * p.avg_entry_price.toString(); // "90"
 * ```
 */
export function applyFill(position: Position, fill: PositionFill): Position {
  return applyFillWithTrade(position, fill).position;
}

/** What a fill did to a position ({@linkcode applyFillWithTrade}). */
export interface FillEffect {
  /** The position after the fill. */
  readonly position: Position;
  /**
   * For a fill that reduced the position (closed some or all of it, or
   * flipped it), the result of the trade it closed: the gain on the quantity
   * closed, less the opening fees that quantity releases and the closing
   * share (`closed ÷ qty`) of the fill's own fee — a win when > 0, a loss
   * when < 0. Null for a fill that opened or added to the position.
   */
  readonly trade_pnl: Decimal | null;
}

/**
 * {@linkcode applyFill}, also giving the result of the trade a reducing fill
 * closes ({@linkcode FillEffect.trade_pnl}). Realized P&L still expenses the
 * whole fee of every fill when paid; the trade's result charges each closed
 * unit with the fees of its own opening and closing only.
 *
 * @example
 * ```ts
 * import { applyFill, applyFillWithTrade, emptyPosition } from "./positions.ts";
 * import { parseDecimal as d } from "./money.ts";
 *
 * const p = applyFill(emptyPosition("BTC-USDT"), {
 *   side: "buy", qty: d("10"), price: d("101"), fee: d("1.01"),
 * });
 * // Sells 110: closes the 10 (+10 gain) and opens a short of 100 with 100/110 of the fee.
 * const flip = applyFillWithTrade(p, { side: "sell", qty: d("110"), price: d("102"), fee: d("11.22") });
 * flip.trade_pnl?.toString(); // "7.97": 10 − 1.01 − 1.02
 * flip.position.realized_pnl.toString(); // "-2.23": 10 − 1.01 − 11.22
 * ```
 */
export function applyFillWithTrade(position: Position, fill: PositionFill): FillEffect {
  const { qty, price } = fill;
  const fee = fill.fee ?? ZERO;
  if (!qty.gt(0)) throw new RangeError(`Fill quantity must be > 0, got ${toJson(qty)}`);
  if (!price.gt(0)) throw new RangeError(`Fill price must be > 0, got ${toJson(price)}`);
  if (!fee.isFinite()) throw new RangeError("Fill fee must be finite");
  const current = position.qty;
  const signed = fill.side === "buy" ? qty : qty.neg();
  const next = current.plus(signed);
  let cost = current.isZero() ? ZERO : costBasisOf(position);
  let openFees = current.isZero() ? ZERO : position.open_fees ?? ZERO;
  let avg = position.avg_entry_price;
  let realized = position.realized_pnl;
  let trade: Decimal | null = null;
  if (current.isZero() || current.isNeg() === signed.isNeg()) {
    // Opening or adding: the fill's cost joins the basis; the average is the basis per unit.
    cost = cost.plus(signed.times(price));
    openFees = openFees.plus(fee);
    avg = cost.dividedBy(next);
  } else {
    // Reducing, closing or flipping: the closed share of the basis is released and realized.
    const held = current.abs();
    const closed = qty.lt(held) ? qty : held;
    const released = closed.eq(held) ? cost : share(cost, closed, held);
    const releasedFees = closed.eq(held) ? openFees : share(openFees, closed, held);
    // A flip's fee pays for closing the position and for opening the other side, pro rata.
    const openingFee = closed.eq(qty) ? ZERO : share(fee, qty.minus(closed), qty);
    const proceeds = current.isNeg() ? closed.times(price).neg() : closed.times(price);
    realized = realized.plus(proceeds.minus(released));
    trade = proceeds.minus(released).minus(releasedFees).minus(fee.minus(openingFee));
    cost = cost.minus(released);
    openFees = openFees.minus(releasedFees);
    if (next.isZero()) {
      cost = ZERO;
      openFees = ZERO;
      avg = ZERO;
    } else if (next.isNeg() !== current.isNeg()) {
      cost = next.times(price);
      openFees = openingFee;
      avg = price;
    }
  }
  return {
    position: {
      symbol: position.symbol,
      qty: next.isZero() ? ZERO : next,
      avg_entry_price: avg,
      cost_basis: cost.isZero() ? ZERO : cost,
      realized_pnl: realized.minus(fee),
      fees: position.fees.plus(fee),
      open_fees: openFees.isZero() ? ZERO : openFees,
    },
    trade_pnl: trade,
  };
}

/** `value × part ÷ whole`, rounded half-even to {@linkcode COST_BASIS_SCALE} decimals. */
function share(value: Decimal, part: Decimal, whole: Decimal): Decimal {
  return value.times(part).dividedBy(whole).toDecimalPlaces(
    COST_BASIS_SCALE,
    Decimal.ROUND_HALF_EVEN,
  );
}

/** A position valued at a mark price. */
export interface PositionValue extends Position {
  /** The price the position is valued at; null without a mark (valued at cost). */
  readonly mark_price: Decimal | null;
  /** `qty × mark` (negative for a short); without a mark, the cost basis. */
  readonly market_value: Decimal;
  /** `qty × mark − cost basis`; without a mark, 0. */
  readonly unrealized_pnl: Decimal;
}

/**
 * `position` valued at `mark`: market value and unrealized P&L. Without a
 * mark (null) it is valued at cost: market value its cost basis, nothing
 * unrealized, `mark_price` null — its average entry price is no price any
 * venue quoted.
 */
export function markPosition(position: Position, mark: Decimal | null): PositionValue {
  const cost = costBasisOf(position);
  if (mark === null) {
    return {
      ...position,
      mark_price: null,
      market_value: cost,
      unrealized_pnl: ZERO,
    };
  }
  return {
    ...position,
    mark_price: mark,
    market_value: position.qty.times(mark),
    unrealized_pnl: position.qty.times(mark).minus(cost),
  };
}

/** Cash and positions of an account. */
export interface Portfolio {
  /** Cash the account started with. */
  readonly starting_cash: Decimal;
  /** Cash now: starting cash − buys + sells − fees. */
  readonly cash: Decimal;
  /** Positions by symbol, flat ones included (they keep their realized P&L). */
  readonly positions: ReadonlyMap<string, Position>;
}

/** A fill of an account: a {@linkcode PositionFill} in a symbol. */
export interface PortfolioFill extends PositionFill {
  /** Canonical symbol. */
  symbol: string;
}

/** A portfolio holding `startingCash` and no positions. */
export function newPortfolio(startingCash: Decimal): Portfolio {
  return { starting_cash: startingCash, cash: startingCash, positions: new Map() };
}

/**
 * The portfolio after `fill`: the symbol's position through
 * {@linkcode applyFill}, and cash moved by the notional and the fee.
 */
export function applyPortfolioFill(portfolio: Portfolio, fill: PortfolioFill): Portfolio {
  const before = portfolio.positions.get(fill.symbol) ?? emptyPosition(fill.symbol);
  const after = applyFill(before, fill);
  const notional = fill.qty.times(fill.price);
  const cash =
    (fill.side === "buy" ? portfolio.cash.minus(notional) : portfolio.cash.plus(notional)).minus(
      fill.fee ?? ZERO,
    );
  const positions = new Map(portfolio.positions);
  positions.set(fill.symbol, after);
  return { starting_cash: portfolio.starting_cash, cash, positions };
}

/** A portfolio valued at mark prices. */
export interface PortfolioValue {
  /** Cash. */
  readonly cash: Decimal;
  /** Cash + Σ market value. */
  readonly equity: Decimal;
  /** Σ|market value|. */
  readonly gross_exposure: Decimal;
  /** Σ market value (shorts negative). */
  readonly net_exposure: Decimal;
  /** Σ realized P&L, net of fees. */
  readonly realized_pnl: Decimal;
  /** Σ unrealized P&L at the marks. */
  readonly unrealized_pnl: Decimal;
  /** Equity − starting cash. */
  readonly total_pnl: Decimal;
  /** Each position, valued, in symbol order. */
  readonly positions: PositionValue[];
  /** Symbols with a position but no mark, valued at cost. */
  readonly unmarked: string[];
}

/**
 * Values `portfolio` at the marks `markOf(symbol)` returns. A non-flat
 * position without a mark is valued at cost — market value its cost basis,
 * no unrealized P&L, `mark_price` null — and listed in `unmarked`.
 */
export function valuePortfolio(
  portfolio: Portfolio,
  markOf: (symbol: string) => Decimal | null | undefined,
): PortfolioValue {
  let marketValue = ZERO;
  let gross = ZERO;
  let realized = ZERO;
  let unrealized = ZERO;
  const positions: PositionValue[] = [];
  const unmarked: string[] = [];
  const symbols = [...portfolio.positions.keys()].sort();
  for (const symbol of symbols) {
    const position = portfolio.positions.get(symbol)!;
    const mark = markOf(symbol) ?? null;
    if (mark === null && !position.qty.isZero()) unmarked.push(symbol);
    const value = markPosition(position, mark);
    positions.push(value);
    marketValue = marketValue.plus(value.market_value);
    gross = gross.plus(value.market_value.abs());
    realized = realized.plus(value.realized_pnl);
    unrealized = unrealized.plus(value.unrealized_pnl);
  }
  const equity = portfolio.cash.plus(marketValue);
  return {
    cash: portfolio.cash,
    equity,
    gross_exposure: gross,
    net_exposure: marketValue,
    realized_pnl: realized,
    unrealized_pnl: unrealized,
    total_pnl: equity.minus(portfolio.starting_cash),
    positions,
    unmarked,
  };
}

/**
 * A {@linkcode PositionValue} as JSON, without the cost basis and the opening
 * fees: every decimal a plain decimal string, `mark_price` null without a mark.
 */
export type PositionValueJson = {
  [K in Exclude<keyof PositionValue, "cost_basis" | "open_fees">]: PositionValue[K] extends Decimal
    ? string
    : PositionValue[K] extends Decimal | null ? string | null
    : PositionValue[K];
};

/**
 * The JSON form of a valued position (`positions.<symbol>` events,
 * `portfolio.snapshot` and the snapshots stored): `mark_price` null for a
 * position without a mark, as `GET /positions` shows it.
 */
export function positionValueToJson(value: PositionValue): PositionValueJson {
  return {
    symbol: value.symbol,
    qty: toJson(value.qty),
    avg_entry_price: toJson(value.avg_entry_price),
    realized_pnl: toJson(value.realized_pnl),
    fees: toJson(value.fees),
    mark_price: value.mark_price === null ? null : toJson(value.mark_price),
    market_value: toJson(value.market_value),
    unrealized_pnl: toJson(value.unrealized_pnl),
  };
}

/** A {@linkcode PortfolioValue} as JSON: decimals as plain decimal strings. */
export interface PortfolioValueJson {
  /** See {@linkcode PortfolioValue.cash}. */
  cash: string;
  /** See {@linkcode PortfolioValue.equity}. */
  equity: string;
  /** See {@linkcode PortfolioValue.gross_exposure}. */
  gross_exposure: string;
  /** See {@linkcode PortfolioValue.net_exposure}. */
  net_exposure: string;
  /** See {@linkcode PortfolioValue.realized_pnl}. */
  realized_pnl: string;
  /** See {@linkcode PortfolioValue.unrealized_pnl}. */
  unrealized_pnl: string;
  /** See {@linkcode PortfolioValue.total_pnl}. */
  total_pnl: string;
  /** See {@linkcode PortfolioValue.positions}. */
  positions: PositionValueJson[];
  /** See {@linkcode PortfolioValue.unmarked}. */
  unmarked: string[];
}

/** The JSON form of a valued portfolio (`portfolio.snapshot` events, the API). */
export function portfolioValueToJson(value: PortfolioValue): PortfolioValueJson {
  return {
    cash: toJson(value.cash),
    equity: toJson(value.equity),
    gross_exposure: toJson(value.gross_exposure),
    net_exposure: toJson(value.net_exposure),
    realized_pnl: toJson(value.realized_pnl),
    unrealized_pnl: toJson(value.unrealized_pnl),
    total_pnl: toJson(value.total_pnl),
    positions: value.positions.map(positionValueToJson),
    unmarked: [...value.unmarked],
  };
}
