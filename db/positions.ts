/**
 * The positions repository: one row per (portfolio, symbol) with the signed
 * quantity, average entry price, exact cost basis, realized P&L and fees the
 * position tracker computed from fills; marks; open positions; total exposure; realized P&L
 * by symbol. {@linkcode storeAppliedFills} stores what a batch of fills did
 * to the positions and cash of a portfolio in one statement, all or nothing.
 *
 * @example
 * ```ts
 * import { totalExposure } from "./positions.ts";
 *
 * const { gross, net, unpriced } = await totalExposure(sql, { marks: { AAPL: "187.25" } });
 * ```
 *
 * @module
 */

import type { Fragment } from "postgres";
import {
  checkDate,
  type DecimalInput,
  DEFAULT_ACTOR,
  type Queryable,
  run,
  toNumeric,
  toNumericOrNull,
  type WriteOptions,
} from "./_common.ts";
import { checkId } from "./_order_sql.ts";
import type { OrderSide } from "./enums.ts";

/** The portfolio positions and orders belong to when none is named. */
export const DEFAULT_PORTFOLIO = "default";

/**
 * A position as stored. Quantities, prices and money are NUMERIC(20,8) text;
 * the cost basis is NUMERIC(38,16) text.
 */
export interface Position {
  /** Portfolio. */
  portfolio_id: string;
  /** Instrument. */
  symbol: string;
  /** Signed quantity: positive long, negative short, zero flat. */
  qty: string;
  /** Average entry price (the cost basis per unit, rounded to 8 decimals); zero when flat. */
  avg_entry_price: string;
  /** Σ signed qty × price of the open quantity, exact (what P&L is computed against); zero when flat. */
  cost_basis: string;
  /** Realized P&L since the position was first opened. */
  realized_pnl: string;
  /** Fees paid. */
  commission: string;
  /**
   * The fees paid to open the open quantity, not yet released by a reduction
   * (0 when flat): what a closing fill's trade is charged besides its own fee.
   */
  open_fees: string;
  /** Latest mark, when marked. */
  mark_price: string | null;
  /** `qty × mark − cost basis` at the mark, rounded to 8 decimals. */
  unrealized_pnl: string | null;
  /** `qty × mark`, rounded to 8 decimals (negative when short). */
  market_value: string | null;
  /** When it was marked. */
  marked_at: Date | null;
  /** The last fill applied. */
  last_fill_id: string | null;
  /** When the current position was opened from flat; null while flat. */
  opened_at: Date | null;
  /** When the row was inserted. */
  created_at: Date;
  /** When the row last changed. */
  updated_at: Date;
  /** Who inserted it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

/** The state of a position to store, as computed by the position tracker. */
export interface PositionInput {
  /** Portfolio. @default {DEFAULT_PORTFOLIO} */
  portfolio_id?: string | undefined;
  /** Instrument (must exist in `symbols`). */
  symbol: string;
  /** Signed quantity. */
  qty: DecimalInput;
  /** Average entry price (> 0 unless flat, then 0). */
  avg_entry_price: DecimalInput;
  /** Exact cost basis, at most 16 decimals. @default {qty × avg_entry_price} */
  cost_basis?: DecimalInput | undefined;
  /** Realized P&L since first opened. */
  realized_pnl: DecimalInput;
  /** Fees paid. @default {unchanged, 0 for a new row} */
  commission?: DecimalInput | undefined;
  /** Opening fees of the open quantity (0 when flat). @default {0} */
  open_fees?: DecimalInput | undefined;
  /** The last fill applied. @default {unchanged} */
  last_fill_id?: string | undefined;
  /** When the position was opened. @default {unchanged, or now when it opens from flat; null when flat} */
  opened_at?: Date | undefined;
}

interface PositionRecord {
  i: number;
  portfolio_id: string;
  symbol: string;
  qty: string;
  avg_entry_price: string;
  cost_basis: string | null;
  realized_pnl: string;
  commission: string | null;
  open_fees: string | null;
  last_fill_id: string | null;
  opened_at: string | null;
}

/** Digits after the point of a cost basis: `NUMERIC(38,16)`. */
export const COST_BASIS_DB_SCALE = 16;
/** Digits before the point of a cost basis: `NUMERIC(38,16)` leaves 38 − 16 = 22. */
export const COST_BASIS_DB_INTEGER_DIGITS = 22;

/**
 * The `NUMERIC(38,16)` text of a cost basis. Never rounds: a basis with more
 * than 16 decimals or 22 integer digits is a `RangeError` (it would no longer
 * be exact), a value that is not a plain decimal a `TypeError`.
 */
export function toCostBasis(value: DecimalInput, field: string): string {
  return toNumeric(value, field, {
    integer: COST_BASIS_DB_INTEGER_DIGITS,
    scale: COST_BASIS_DB_SCALE,
  });
}

function positionRecord(position: PositionInput, i: number): PositionRecord {
  if (position.last_fill_id !== undefined) checkId(position.last_fill_id, "fill id");
  return {
    i,
    portfolio_id: position.portfolio_id ?? DEFAULT_PORTFOLIO,
    symbol: position.symbol,
    qty: toNumeric(position.qty, "qty"),
    avg_entry_price: toNumeric(position.avg_entry_price, "avg_entry_price"),
    cost_basis: position.cost_basis === undefined
      ? null
      : toCostBasis(position.cost_basis, "cost_basis"),
    realized_pnl: toNumeric(position.realized_pnl, "realized_pnl"),
    commission: toNumericOrNull(position.commission, "commission"),
    open_fees: toNumericOrNull(position.open_fees, "open_fees"),
    last_fill_id: position.last_fill_id ?? null,
    opened_at: position.opened_at === undefined
      ? null
      : checkDate(position.opened_at, "opened_at").toISOString(),
  };
}

/**
 * Stores the state of several positions in one statement (insert or
 * update), keeping the mark and recomputing market value and unrealized P&L
 * at it; returns them in input order. A position given without its cost
 * basis gets `qty × avg_entry_price`. Throws a `RangeError` when a
 * (portfolio, symbol) appears twice.
 */
export async function upsertPositions(
  sql: Queryable,
  positions: readonly PositionInput[],
  options: WriteOptions = {},
): Promise<Position[]> {
  if (positions.length === 0) return [];
  const by = options.by ?? DEFAULT_ACTOR;
  const records = positions.map(positionRecord);
  const seen = new Set<string>();
  for (const record of records) {
    const key = `${record.portfolio_id}\u0000${record.symbol}`;
    if (seen.has(key)) {
      throw new RangeError(`Position ${record.portfolio_id}/${record.symbol} appears twice`);
    }
    seen.add(key);
  }
  const rows = await run(sql<(Position & { i: number })[]>`
    WITH x AS (
      SELECT * FROM json_to_recordset(${JSON.stringify(records)}::text::json) AS x(
        i int, portfolio_id text, symbol text, qty numeric(20,8), avg_entry_price numeric(20,8),
        cost_basis numeric(38,16), realized_pnl numeric(20,8), commission numeric(20,8),
        open_fees numeric(20,8), last_fill_id bigint, opened_at timestamptz)
    ), up AS (
      INSERT INTO positions AS p (portfolio_id, symbol, qty, avg_entry_price, cost_basis,
        realized_pnl, commission, open_fees, last_fill_id, opened_at, created_by, updated_by)
      SELECT x.portfolio_id, x.symbol, x.qty, x.avg_entry_price,
        coalesce(x.cost_basis, x.qty * x.avg_entry_price), x.realized_pnl,
        coalesce(x.commission, cur.commission, 0), coalesce(x.open_fees, 0),
        coalesce(x.last_fill_id, cur.last_fill_id),
        CASE WHEN x.qty = 0 THEN NULL
          WHEN cur.qty IS NULL OR sign(cur.qty) <> sign(x.qty) THEN coalesce(x.opened_at, now())
          ELSE coalesce(x.opened_at, cur.opened_at, now()) END,
        ${by}, ${by}
      FROM x LEFT JOIN positions cur ON cur.portfolio_id = x.portfolio_id AND cur.symbol = x.symbol
      ORDER BY x.portfolio_id, x.symbol
      ON CONFLICT (portfolio_id, symbol) DO UPDATE SET
        qty = excluded.qty,
        avg_entry_price = excluded.avg_entry_price,
        cost_basis = excluded.cost_basis,
        realized_pnl = excluded.realized_pnl,
        commission = excluded.commission,
        open_fees = excluded.open_fees,
        last_fill_id = excluded.last_fill_id,
        opened_at = excluded.opened_at,
        market_value = round_half_even(excluded.qty * p.mark_price, 8),
        unrealized_pnl = round_half_even(excluded.qty * p.mark_price - excluded.cost_basis, 8),
        updated_by = excluded.updated_by
      RETURNING *
    )
    SELECT up.*, x.i FROM up JOIN x ON x.portfolio_id = up.portfolio_id AND x.symbol = up.symbol`);
  const out = new Array<Position>(records.length);
  for (const { i, ...position } of rows) out[i] = position;
  return out;
}

/** The figures of a position that a fill changes. */
export interface PositionFigures {
  /** Signed quantity. */
  qty: DecimalInput;
  /** Average entry price (0 when flat). */
  avg_entry_price: DecimalInput;
  /** Exact cost basis (0 when flat), at most 16 decimals. */
  cost_basis: DecimalInput;
  /** Realized P&L since first opened. */
  realized_pnl: DecimalInput;
  /** Fees paid. */
  commission: DecimalInput;
  /** Opening fees of the open quantity (0 when flat). @default {0} */
  open_fees?: DecimalInput | undefined;
}

/** A stored fill as applied to its position, for {@linkcode storeAppliedFills}. */
export interface AppliedFillInput {
  /** The fill's row id. */
  id: string;
  /** Its order (which must be of the portfolio). */
  order_id: string;
  /** Instrument. */
  symbol: string;
  /** Buy or sell. */
  side: OrderSide;
  /** Quantity. */
  qty: DecimalInput;
  /** Price. */
  price: DecimalInput;
  /** Fee. */
  commission: DecimalInput;
  /** When it was executed. */
  filled_at: Date;
  /** The realized P&L it produced (stored in `fills.realized_pnl`, marking it applied). */
  realized_pnl: DecimalInput;
  /**
   * Whether it reduced its position: a win or a loss of its strategy's day
   * in `strategy_performance`. @default {false}
   */
  closing?: boolean | undefined;
  /**
   * For a closing fill, the result of the trade it closed (net of its
   * opening fees and of its share of the fill's fee): a win when > 0, a loss
   * when < 0. @default {its realized P&L}
   */
  trade_pnl?: DecimalInput | null | undefined;
}

/** A position before and after a batch of fills, for {@linkcode storeAppliedFills}. */
export interface PositionChange {
  /** Instrument. */
  symbol: string;
  /** The stored figures the batch started from; null when there is no row yet. */
  before: PositionFigures | null;
  /** The figures after the batch. */
  after: PositionFigures;
  /** The last fill of the batch in it. */
  last_fill_id: string;
}

/** A portfolio's cash before and after a batch of fills, and its other figures after it. */
export interface PortfolioChange {
  /** Portfolio. */
  id: string;
  /** The stored cash the batch started from. */
  cash_before: DecimalInput;
  /** Cash after the batch. */
  cash: DecimalInput;
  /** Realized P&L of the batch, added to the stored figure. */
  realized_pnl_delta: DecimalInput;
  /** Equity. @default {unchanged} */
  equity?: DecimalInput | undefined;
  /** Σ market value. @default {unchanged} */
  market_value?: DecimalInput | undefined;
  /** Σ |market value|. @default {unchanged} */
  gross_exposure?: DecimalInput | undefined;
  /** Σ market value. @default {unchanged} */
  net_exposure?: DecimalInput | undefined;
  /** Σ unrealized P&L. @default {unchanged} */
  unrealized_pnl?: DecimalInput | undefined;
}

/** What a batch of fills did to one portfolio, for {@linkcode storeAppliedFills}. */
export interface AppliedFills {
  /** The portfolio's cash and figures. */
  portfolio: PortfolioChange;
  /** The fills, each not applied before. */
  fills: readonly AppliedFillInput[];
  /** Each position the fills changed, once. */
  positions: readonly PositionChange[];
}

function figures(value: PositionFigures, what: string) {
  return {
    qty: toNumeric(value.qty, `${what} qty`),
    avg_entry_price: toNumeric(value.avg_entry_price, `${what} avg_entry_price`),
    cost_basis: toCostBasis(value.cost_basis, `${what} cost_basis`),
    realized_pnl: toNumeric(value.realized_pnl, `${what} realized_pnl`),
    commission: toNumeric(value.commission, `${what} commission`),
    open_fees: toNumeric(value.open_fees ?? "0", `${what} open_fees`),
  };
}

/**
 * Stores what a batch of fills did to a portfolio — each fill marked applied
 * (`realized_pnl` set), the positions and the portfolio's cash, realized P&L
 * and figures updated, each fill added to its strategy's day in
 * `strategy_performance` (`strategyFillsCte`, a closing fill judged a win or
 * a loss by its `trade_pnl`) — in ONE statement, all or
 * nothing, checking that the
 * stored rows are as the batch was computed from: every fill of an order of
 * the portfolio, with the given figures and not applied yet; every position
 * with its `before` figures, cost basis included (or absent); the cash at `cash_before`. When any
 * is not, nothing is written and a `SerializationError` is thrown: the
 * caller then redoes the batch from the stored rows under locks. One round
 * trip for what is otherwise a locked read and three writes.
 */
export async function storeAppliedFills(
  sql: Queryable,
  batch: AppliedFills,
  options: WriteOptions = {},
): Promise<void> {
  const by = options.by ?? DEFAULT_ACTOR;
  const portfolio = batch.portfolio;
  const fills = batch.fills.map((fill) => {
    checkId(fill.id, "fill id");
    checkId(fill.order_id, "order id");
    return {
      id: fill.id,
      order_id: fill.order_id,
      symbol: fill.symbol,
      side: fill.side,
      qty: toNumeric(fill.qty, "qty"),
      price: toNumeric(fill.price, "price"),
      commission: toNumeric(fill.commission, "commission"),
      filled_at: checkDate(fill.filled_at, "filled_at").toISOString(),
      r: toNumeric(fill.realized_pnl, "realized_pnl"),
      closing: fill.closing === true,
      t: fill.trade_pnl === undefined || fill.trade_pnl === null
        ? toNumeric(fill.realized_pnl, "realized_pnl")
        : toNumeric(fill.trade_pnl, "trade_pnl"),
    };
  });
  // The fills are found by key; the checks compare all else. A batch's ids are also given as an
  // array, so that the planner uses the primary key rather than scanning to join with
  // json_to_recordset; a single fill (the usual case when signals come one at a time) is given
  // as scalars instead, which keeps the statement's generic plan cheap enough to be used — the
  // array's makes PostgreSQL plan the statement again on every run (about a millisecond).
  const [one] = fills;
  const markFills = fills.length === 1 && one !== undefined
    ? sql`
      UPDATE fills f SET realized_pnl = ${one.r}::numeric
      WHERE f.id = ${one.id}::bigint AND f.realized_pnl IS NULL
        AND (f.order_id, f.symbol, f.side, f.qty, f.price, f.commission, f.filled_at)
          IS NOT DISTINCT FROM
          (${one.order_id}::bigint, ${one.symbol}::text, ${one.side}::order_side,
            ${one.qty}::numeric, ${one.price}::numeric, ${one.commission}::numeric,
            ${one.filled_at}::timestamptz)
        AND (SELECT o.portfolio_id FROM orders o WHERE o.id = f.order_id) = ${portfolio.id}
      RETURNING f.id, f.order_id, f.qty, f.price, f.commission, f.realized_pnl, f.filled_at,
        ${one.closing}::boolean AS closing, ${one.t}::numeric AS trade_pnl`
    : sql`
      UPDATE fills f SET realized_pnl = x.r
      FROM json_to_recordset(${JSON.stringify(fills)}::text::json) AS x(
        id bigint, order_id bigint, symbol text, side order_side, qty numeric(20,8),
        price numeric(20,8), commission numeric(20,8), filled_at timestamptz, r numeric(20,8),
        closing boolean, t numeric(20,8))
      WHERE f.id = x.id
        AND f.id = ANY (string_to_array(${fills.map((f) => f.id).join(",")}, ',')::bigint[])
        AND f.realized_pnl IS NULL
        AND (f.order_id, f.symbol, f.side, f.qty, f.price, f.commission, f.filled_at)
          IS NOT DISTINCT FROM
          (x.order_id, x.symbol, x.side, x.qty, x.price, x.commission, x.filled_at)
        AND (SELECT o.portfolio_id FROM orders o WHERE o.id = f.order_id) = ${portfolio.id}
      RETURNING f.id, f.order_id, f.qty, f.price, f.commission, f.realized_pnl, f.filled_at,
        x.closing, x.t AS trade_pnl`;
  const write = positionWriteCtes(sql, batch, by, sql`y.last_fill_id`);
  const performance = strategyFillsCte(
    sql,
    sql`SELECT o.strategy, f.filled_at, f.qty, f.price, f.commission, f.realized_pnl, f.closing,
        f.trade_pnl
      FROM f JOIN orders o ON o.id = f.order_id`,
    by,
    { trade_pnl: true },
  );
  await run(sql`
    WITH f AS (${markFills}
    ), ${write.ctes}, ${performance}
    SELECT tw_expect((SELECT count(*) FROM f) = ${fills.length}::int AND ${write.check},
      'fills, positions or cash changed since they were read') AS ok`);
}

/**
 * A position change whose last fill is one being inserted by the same
 * statement, named by its index in that statement's fills
 * ({@linkcode positionWriteCtes}).
 */
export interface PendingPositionChange extends Omit<PositionChange, "last_fill_id"> {
  /** Index of the batch's last fill in it among the statement's fills. */
  last_fill: number;
}

/**
 * The CTEs `y` (the position changes), `pu` and `pi` (their update or
 * insert, each only where the stored row is as `before` says) and `c` (the
 * portfolio's cash and figures, only where the cash is `cash_before`), to
 * follow `WITH` in a statement, and `check`: the condition that all of them
 * wrote what they should (for `tw_expect`). `lastFillId` is the SQL giving
 * a position's last fill id from its row `y`: `y.last_fill_id`, or a lookup
 * by `y.last_fill_i` among fills the statement inserts.
 *
 * @internal Shared by {@linkcode storeAppliedFills} and `db/fills.ts`'s
 * `insertFillsWithOrders`.
 */
export function positionWriteCtes(
  sql: Queryable,
  batch: {
    portfolio: PortfolioChange;
    positions: ReadonlyArray<PositionChange | PendingPositionChange>;
  },
  by: string,
  lastFillId: Fragment,
): { ctes: Fragment; check: Fragment } {
  const portfolio = batch.portfolio;
  if (typeof portfolio.id !== "string" || portfolio.id === "") {
    throw new TypeError("A portfolio needs an id");
  }
  const positions = batch.positions.map((change) => {
    const pending = "last_fill" in change;
    if (!pending) checkId(change.last_fill_id, "fill id");
    const before = change.before === null ? null : figures(change.before, "before");
    return {
      symbol: change.symbol,
      stored: before !== null,
      ...figures(change.after, "after"),
      last_fill_id: pending ? null : change.last_fill_id,
      last_fill_i: pending ? change.last_fill : null,
      b_qty: before?.qty ?? null,
      b_avg: before?.avg_entry_price ?? null,
      b_cost: before?.cost_basis ?? null,
      b_realized: before?.realized_pnl ?? null,
      b_commission: before?.commission ?? null,
      b_open_fees: before?.open_fees ?? null,
    };
  });
  const cash = toNumeric(portfolio.cash, "cash");
  const cashBefore = toNumeric(portfolio.cash_before, "cash_before");
  const delta = toNumeric(portfolio.realized_pnl_delta, "realized_pnl_delta");
  const figure = (field: keyof PortfolioChange) =>
    toNumericOrNull(portfolio[field] as DecimalInput | undefined, field);
  const ctes = sql`y AS (
      SELECT * FROM json_to_recordset(${JSON.stringify(positions)}::text::json) AS y(
        symbol text, stored boolean, qty numeric(20,8), avg_entry_price numeric(20,8),
        cost_basis numeric(38,16), realized_pnl numeric(20,8), commission numeric(20,8),
        open_fees numeric(20,8), last_fill_id bigint, last_fill_i int, b_qty numeric(20,8),
        b_avg numeric(20,8), b_cost numeric(38,16), b_realized numeric(20,8),
        b_commission numeric(20,8), b_open_fees numeric(20,8))
    ), pu AS (
      UPDATE positions p SET
        qty = y.qty,
        avg_entry_price = y.avg_entry_price,
        cost_basis = y.cost_basis,
        realized_pnl = y.realized_pnl,
        commission = y.commission,
        open_fees = y.open_fees,
        last_fill_id = ${lastFillId},
        opened_at = CASE WHEN y.qty = 0 THEN NULL
          WHEN sign(p.qty) <> sign(y.qty) THEN now()
          ELSE coalesce(p.opened_at, now()) END,
        market_value = round_half_even(y.qty * p.mark_price, 8),
        unrealized_pnl = round_half_even(y.qty * p.mark_price - y.cost_basis, 8),
        updated_by = ${by}
      FROM y
      WHERE y.stored AND p.portfolio_id = ${portfolio.id} AND p.symbol = y.symbol
        AND p.qty = y.b_qty AND p.avg_entry_price = y.b_avg AND p.cost_basis = y.b_cost
        AND p.realized_pnl = y.b_realized AND p.commission = y.b_commission
        AND p.open_fees = y.b_open_fees
      RETURNING p.symbol
    ), pi AS (
      INSERT INTO positions (portfolio_id, symbol, qty, avg_entry_price, cost_basis,
        realized_pnl, commission, open_fees, last_fill_id, opened_at, created_by, updated_by)
      SELECT ${portfolio.id}, y.symbol, y.qty, y.avg_entry_price, y.cost_basis, y.realized_pnl,
        y.commission, y.open_fees, ${lastFillId}, CASE WHEN y.qty = 0 THEN NULL ELSE now() END,
        ${by}, ${by}
      FROM y WHERE NOT y.stored
      ORDER BY y.symbol
      ON CONFLICT (portfolio_id, symbol) DO NOTHING
      RETURNING symbol
    ), c AS (
      UPDATE portfolios p SET
        cash = ${cash}::numeric,
        realized_pnl = p.realized_pnl + ${delta}::numeric,
        equity = coalesce(${figure("equity")}::numeric, p.equity),
        market_value = coalesce(${figure("market_value")}::numeric, p.market_value),
        gross_exposure = coalesce(${figure("gross_exposure")}::numeric, p.gross_exposure),
        net_exposure = coalesce(${figure("net_exposure")}::numeric, p.net_exposure),
        unrealized_pnl = coalesce(${figure("unrealized_pnl")}::numeric, p.unrealized_pnl),
        updated_by = ${by}
      WHERE p.id = ${portfolio.id} AND p.cash = ${cashBefore}::numeric
      RETURNING p.id
    )`;
  const check = sql`(SELECT count(*) FROM pu) + (SELECT count(*) FROM pi) = ${positions.length}::int
        AND (SELECT count(*) FROM c) = 1`;
  return { ctes, check };
}

/** Options of {@linkcode strategyFillsCte}. */
export interface StrategyFillsCteOptions {
  /**
   * The source also gives `trade_pnl` (numeric), the result of the trade a
   * closing fill closed, net of the fees of its opening and of its closing
   * share of the fill's fee (`trading/positions.ts` `applyFillWithTrade`):
   * the win or loss is judged on it rather than on `realized_pnl`, which
   * carries the fill's whole fee and none of the opening fees. @default {false}
   */
  trade_pnl?: boolean | undefined;
}

/**
 * The CTE `sp` adding fills to their strategies' days in
 * `strategy_performance`, to follow `WITH` in a statement: `source` is a
 * query giving one row per applied fill with the columns `strategy`,
 * `filled_at`, `qty`, `price`, `commission`, `realized_pnl` and `closing`
 * (boolean; null counts as not closing), and `trade_pnl` with the option.
 * Per (strategy, UTC day of `filled_at`) it adds the fills, their notional
 * (Σ qty × price, each rounded to 8 decimals), realized P&L, fees, and the
 * closing fills whose trade gained (wins) or lost (losses), net of fees:
 * judged on `trade_pnl` with the option, else on `realized_pnl` (right only
 * where the two have the same sign; the position tracker lends positions to
 * `insertFillsWithOrders`, which has no `trade_pnl`, only then). One row per
 * strategy and day: cheap beside the fills it rides with.
 *
 * @internal Shared by {@linkcode storeAppliedFills},
 * {@linkcode addStrategyTrades} and `db/fills.ts`'s `insertFillsWithOrders`.
 */
export function strategyFillsCte(
  sql: Queryable,
  source: Fragment,
  by: string,
  options: StrategyFillsCteOptions = {},
): Fragment {
  const result = options.trade_pnl === true ? sql`s.trade_pnl` : sql`s.realized_pnl`;
  return sql`sp AS (
      INSERT INTO strategy_performance AS p (strategy, day, fills, notional, realized_pnl,
        commission, wins, losses, created_by, updated_by)
      SELECT s.strategy, (s.filled_at AT TIME ZONE 'UTC')::date, count(*)::int,
        sum(round_half_even(s.qty * s.price, 8)), sum(s.realized_pnl), sum(s.commission),
        (count(*) FILTER (WHERE s.closing AND ${result} > 0))::int,
        (count(*) FILTER (WHERE s.closing AND ${result} < 0))::int, ${by}, ${by}
      FROM (${source}) AS s
      GROUP BY 1, 2
      ORDER BY 1, 2
      ON CONFLICT (strategy, day) DO UPDATE SET
        fills = p.fills + excluded.fills,
        notional = p.notional + excluded.notional,
        realized_pnl = p.realized_pnl + excluded.realized_pnl,
        commission = p.commission + excluded.commission,
        wins = p.wins + excluded.wins,
        losses = p.losses + excluded.losses,
        updated_by = excluded.updated_by
      RETURNING 1
    )`;
}

/**
 * What one applied fill adds to its strategy's day ({@linkcode addStrategyTrades}):
 * the day is the UTC day of `filled_at`.
 */
export interface StrategyTrade {
  /** The strategy of the fill's order. */
  strategy: string;
  /** When the fill was executed. */
  filled_at: Date;
  /** Quantity. */
  qty: DecimalInput;
  /** Price. */
  price: DecimalInput;
  /** Fee (negative for a rebate). */
  commission: DecimalInput;
  /** The realized P&L it produced, net of its fee (`fills.realized_pnl`). */
  realized_pnl: DecimalInput;
  /**
   * For a fill that reduced a position, the result of the trade it closed
   * (`trading/positions.ts` `applyFillWithTrade`): a win when > 0, a loss
   * when < 0; null for a fill that opened or added.
   */
  trade_pnl: DecimalInput | null;
}

/**
 * Adds applied fills to their strategies' days (see
 * {@linkcode strategyFillsCte}), judging each closing fill's win or loss on
 * its `trade_pnl`, in one statement; returns how many (strategy, day) rows
 * it wrote.
 */
export async function addStrategyTrades(
  sql: Queryable,
  fills: readonly StrategyTrade[],
  options: WriteOptions = {},
): Promise<number> {
  if (fills.length === 0) return 0;
  const records = fills.map((fill) => {
    if (typeof fill.strategy !== "string" || fill.strategy === "") {
      throw new TypeError("Strategy performance needs a strategy");
    }
    return {
      strategy: fill.strategy,
      filled_at: checkDate(fill.filled_at, "filled_at").toISOString(),
      qty: toNumeric(fill.qty, "qty"),
      price: toNumeric(fill.price, "price"),
      commission: toNumeric(fill.commission, "commission"),
      realized_pnl: toNumeric(fill.realized_pnl, "realized_pnl"),
      closing: fill.trade_pnl !== null,
      trade_pnl: toNumericOrNull(fill.trade_pnl, "trade_pnl"),
    };
  });
  const source = sql`SELECT * FROM json_to_recordset(${JSON.stringify(records)}::text::json)
    AS x(strategy text, filled_at timestamptz, qty numeric(20,8), price numeric(20,8),
      commission numeric(20,8), realized_pnl numeric(20,8), closing boolean,
      trade_pnl numeric(20,8))`;
  const [row] = await run(sql<{ n: number }[]>`
    WITH ${strategyFillsCte(sql, source, options.by ?? DEFAULT_ACTOR, { trade_pnl: true })}
    SELECT count(*)::int AS n FROM sp`);
  return row?.n ?? 0;
}

/** Stores the state of one position; see {@linkcode upsertPositions}. */
export async function upsertPosition(
  sql: Queryable,
  position: PositionInput,
  options: WriteOptions = {},
): Promise<Position> {
  const [row] = await upsertPositions(sql, [position], options);
  if (row === undefined) throw new Error("Position upsert returned no row");
  return row;
}

/** Options naming a portfolio. */
export interface PortfolioOption {
  /** Portfolio. @default {DEFAULT_PORTFOLIO} */
  portfolio_id?: string | undefined;
}

/** Returns the position in `symbol`, or null when there never was one. */
export async function findPosition(
  sql: Queryable,
  symbol: string,
  options: PortfolioOption = {},
): Promise<Position | null> {
  const [row] = await run(sql<Position[]>`
    SELECT * FROM positions
    WHERE portfolio_id = ${options.portfolio_id ?? DEFAULT_PORTFOLIO} AND symbol = ${symbol}`);
  return row ?? null;
}

/** Options of {@linkcode listPositions}. */
export interface ListPositionsOptions {
  /** Only this portfolio. @default {every portfolio} */
  portfolio_id?: string | undefined;
  /** Only this instrument. */
  symbol?: string | undefined;
  /** Only positions with a non-zero quantity. @default {false} */
  open?: boolean | undefined;
}

/** Lists positions, ordered by portfolio and symbol. */
export async function listPositions(
  sql: Queryable,
  options: ListPositionsOptions = {},
): Promise<Position[]> {
  let where = sql`TRUE`;
  if (options.portfolio_id !== undefined) {
    where = sql`${where} AND portfolio_id = ${options.portfolio_id}`;
  }
  if (options.symbol !== undefined) where = sql`${where} AND symbol = ${options.symbol}`;
  if (options.open === true) where = sql`${where} AND qty <> 0`;
  const rows = await run(
    sql<Position[]>`SELECT * FROM positions WHERE ${where} ORDER BY portfolio_id, symbol`,
  );
  return [...rows];
}

/** Open (non-flat) positions, optionally of one symbol or portfolio. */
export function listOpenPositions(
  sql: Queryable,
  options: Omit<ListPositionsOptions, "open"> = {},
): Promise<Position[]> {
  return listPositions(sql, { ...options, open: true });
}

/** Prices by symbol: a plain object or a `Map`. */
export type PriceMap = Readonly<Record<string, DecimalInput>> | ReadonlyMap<string, DecimalInput>;

function pricesJson(prices: PriceMap): string {
  const out: Record<string, string> = {};
  const entries = prices instanceof Map
    ? [...prices.entries()]
    : Object.entries(prices as Record<string, DecimalInput>);
  for (const [symbol, price] of entries) {
    const value = toNumeric(price, `price of ${symbol}`);
    if (!/[1-9]/.test(value) || value.startsWith("-")) {
      throw new RangeError(`Price of ${symbol} must be positive, got ${value}`);
    }
    out[symbol] = value;
  }
  return JSON.stringify(out);
}

/** Options of {@linkcode markPositions}. */
export interface MarkOptions extends WriteOptions {
  /** Only this portfolio. @default {every portfolio} */
  portfolio_id?: string | undefined;
  /** Time of the marks. @default {now()} */
  at?: Date | undefined;
}

/**
 * Marks positions at `marks` (symbol → price): stores the mark, market value
 * and unrealized P&L. Symbols without a position are ignored. Returns how
 * many rows were marked.
 */
export async function markPositions(
  sql: Queryable,
  marks: PriceMap,
  options: MarkOptions = {},
): Promise<number> {
  const at = options.at === undefined ? null : checkDate(options.at, "at");
  let where = sql`p.symbol = m.symbol`;
  if (options.portfolio_id !== undefined) {
    where = sql`${where} AND p.portfolio_id = ${options.portfolio_id}`;
  }
  const result = await run(sql`
    UPDATE positions p SET
      mark_price = m.price,
      marked_at = coalesce(${at}::timestamptz, now()),
      market_value = round_half_even(p.qty * m.price, 8),
      unrealized_pnl = round_half_even(p.qty * m.price - p.cost_basis, 8),
      updated_by = ${options.by ?? DEFAULT_ACTOR}
    FROM (SELECT key AS symbol, value::numeric(20,8) AS price
          FROM jsonb_each_text(${pricesJson(marks)}::text::jsonb)) m
    WHERE ${where}`);
  return result.count;
}

/** Exposure of open positions (see {@linkcode totalExposure}); amounts rounded to 8 decimals. */
export interface Exposure {
  /** Σ |qty| × price. */
  gross: string;
  /** Σ qty × price (shorts count negative). */
  net: string;
  /** Σ qty × price over long positions. */
  long: string;
  /** Σ |qty| × price over short positions. */
  short: string;
  /** Open positions counted. */
  positions: number;
  /** Symbols with no price (neither in the map, nor marked, nor a last price): valued at their cost basis. */
  unpriced: string[];
}

/** Options of {@linkcode totalExposure}. */
export interface ExposureOptions {
  /** Prices to value positions at, by symbol; others use their stored mark, then the symbol's last price. */
  marks?: PriceMap | undefined;
  /** Only this portfolio. @default {every portfolio} */
  portfolio_id?: string | undefined;
}

/**
 * Total exposure of open positions, valued at the price given in `marks`,
 * else the position's stored mark, else the symbol's `last_price`, else the
 * cost basis (such symbols are listed in `unpriced`). Exact
 * decimal arithmetic in PostgreSQL.
 */
export async function totalExposure(
  sql: Queryable,
  options: ExposureOptions = {},
): Promise<Exposure> {
  const marks = pricesJson(options.marks ?? {});
  let where = sql`p.qty <> 0`;
  if (options.portfolio_id !== undefined) {
    where = sql`${where} AND p.portfolio_id = ${options.portfolio_id}`;
  }
  const [row] = await run(sql<Exposure[]>`
    WITH m AS (
      SELECT key AS symbol, value::numeric(20,8) AS price
      FROM jsonb_each_text(${marks}::text::jsonb)
    ), v AS (
      SELECT p.symbol, p.qty, coalesce(m.price, p.mark_price, s.last_price) AS price,
        coalesce(p.qty * coalesce(m.price, p.mark_price, s.last_price), p.cost_basis) AS value
      FROM positions p
      JOIN symbols s ON s.symbol = p.symbol
      LEFT JOIN m ON m.symbol = p.symbol
      WHERE ${where}
    )
    SELECT
      round_half_even(coalesce(sum(abs(value)), 0), 8)::text AS gross,
      round_half_even(coalesce(sum(value), 0), 8)::text AS net,
      round_half_even(coalesce(sum(value) FILTER (WHERE qty > 0), 0), 8)::text AS long,
      round_half_even(coalesce(-sum(value) FILTER (WHERE qty < 0), 0), 8)::text AS short,
      count(*)::int AS positions,
      coalesce(array_agg(DISTINCT symbol) FILTER (WHERE price IS NULL), '{}') AS unpriced
    FROM v`);
  if (row === undefined) throw new Error("Exposure query returned no row");
  return row;
}

/** Realized P&L of one symbol (see {@linkcode realizedPnlBySymbol}). */
export interface SymbolPnl {
  /** Instrument. */
  symbol: string;
  /** Realized P&L, 8 decimals. */
  realized_pnl: string;
}

/**
 * Total realized P&L per symbol (summed over portfolios unless one is named),
 * from the positions, ordered by symbol. For a date range use
 * `fillTotalsBySymbol`, which sums the fills' realized P&L.
 */
export async function realizedPnlBySymbol(
  sql: Queryable,
  options: { portfolio_id?: string | undefined } = {},
): Promise<SymbolPnl[]> {
  const where = options.portfolio_id === undefined
    ? sql`TRUE`
    : sql`portfolio_id = ${options.portfolio_id}`;
  const rows = await run(sql<SymbolPnl[]>`
    SELECT symbol, sum(realized_pnl)::numeric(38,8) AS realized_pnl
    FROM positions WHERE ${where} GROUP BY symbol ORDER BY symbol`);
  return [...rows];
}
