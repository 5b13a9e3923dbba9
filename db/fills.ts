/**
 * The fills repository: executions inserted idempotently — a fill is
 * identified by `(order_id, broker_fill_id)`, so a fill delivered again is
 * reported as not new and must not be applied to the position twice — and
 * listed by date range, with per-symbol totals to check positions against.
 * {@linkcode insertFillsWithOrders} records new fills together with the
 * order updates they cause in one statement, all or nothing.
 *
 * @example
 * ```ts
 * import { insertFill } from "./fills.ts";
 *
 * const { created } = await insertFill(tx, {
 *   order_id: order.id, broker_fill_id: "exec-1", symbol: "AAPL", side: "buy",
 *   qty: "10", price: "187.25", filled_at: new Date(),
 * });
 * if (created) {
 *   // update the order and the position in the same transaction
 * }
 * ```
 *
 * @module
 */

import type { Fragment } from "postgres";
import {
  checkDate,
  type DecimalInput,
  DEFAULT_ACTOR,
  type Page,
  type PageOptions,
  pageOptions,
  type Queryable,
  run,
  selectPage,
  toNumeric,
  toNumericOrNull,
  type WriteOptions,
} from "./_common.ts";
import { checkId, statusRecord, statusUpdateQuery } from "./_order_sql.ts";
import type { OrderSide } from "./enums.ts";
import { SerializationError } from "./errors.ts";
import type { Order, OrderStatusUpdate } from "./orders.ts";
import {
  type PendingPositionChange,
  type PortfolioChange,
  positionWriteCtes,
  strategyFillsCte,
} from "./positions.ts";

/** A fill as stored. Quantities, prices and money are NUMERIC(20,8) text. */
export interface Fill {
  /** Row id (decimal text). */
  id: string;
  /** The order filled. */
  order_id: string;
  /** The broker's execution id, unique per order. */
  broker_fill_id: string;
  /** Instrument. */
  symbol: string;
  /** Buy or sell. */
  side: OrderSide;
  /** Quantity filled (> 0). */
  qty: string;
  /** Price (> 0). */
  price: string;
  /** Fee paid (negative for a rebate). */
  commission: string;
  /** Asset the fee is paid in. */
  commission_asset: string | null;
  /** `maker` or `taker`, when known. */
  liquidity: "maker" | "taker" | null;
  /** Realized P&L this fill produced, as computed by the position tracker. */
  realized_pnl: string | null;
  /** When the broker executed it. */
  filled_at: Date;
  /** When the row was inserted. */
  created_at: Date;
  /** Who inserted it. */
  created_by: string;
}

/** A fill to record. */
export interface NewFill {
  /** The order filled. */
  order_id: string;
  /** The broker's execution id (the paper broker makes its own, deterministic ones). */
  broker_fill_id: string;
  /** Instrument. */
  symbol: string;
  /** Buy or sell. */
  side: OrderSide;
  /** Quantity (> 0). */
  qty: DecimalInput;
  /** Price (> 0). */
  price: DecimalInput;
  /** Fee. @default {"0"} */
  commission?: DecimalInput | undefined;
  /** Asset the fee is paid in. @default {null} */
  commission_asset?: string | null | undefined;
  /** `maker` or `taker`. @default {null} */
  liquidity?: "maker" | "taker" | null | undefined;
  /** Realized P&L the fill produced. @default {null} */
  realized_pnl?: DecimalInput | null | undefined;
  /** When the broker executed it. */
  filled_at: Date;
}

/** Result of recording one fill. */
export interface FillInsertResult {
  /** True when this call recorded it; false when it was recorded before (apply nothing). */
  created: boolean;
  /** The stored fill (the earlier one for a duplicate). */
  fill: Fill;
}

interface FillRecord {
  i: number;
  order_id: string;
  broker_fill_id: string;
  symbol: string;
  side: OrderSide;
  qty: string;
  price: string;
  commission: string;
  commission_asset: string | null;
  liquidity: string | null;
  realized_pnl: string | null;
  filled_at: string;
  /** Whether it reduced its position (wins and losses of `strategy_performance`); null: unknown. */
  closing: boolean | null;
}

function fillRecord(fill: NewFill, i: number): FillRecord {
  checkId(fill.order_id, "order id");
  if (typeof fill.broker_fill_id !== "string" || fill.broker_fill_id === "") {
    throw new TypeError("A fill needs a broker_fill_id");
  }
  return {
    i,
    order_id: BigInt(fill.order_id).toString(),
    broker_fill_id: fill.broker_fill_id,
    symbol: fill.symbol,
    side: fill.side,
    qty: toNumeric(fill.qty, "qty"),
    price: toNumeric(fill.price, "price"),
    commission: toNumeric(fill.commission ?? "0", "commission"),
    commission_asset: fill.commission_asset ?? null,
    liquidity: fill.liquidity ?? null,
    realized_pnl: toNumericOrNull(fill.realized_pnl, "realized_pnl"),
    filled_at: checkDate(fill.filled_at, "filled_at").toISOString(),
    closing: null,
  };
}

/**
 * The CTEs `x` (the fill `records`, with their index `i`) and `ins` (their
 * `INSERT … ON CONFLICT DO NOTHING`, returning `returning`), to follow
 * `WITH` in a statement. Rows are inserted in input order (`ORDER BY x.i`),
 * so fill ids follow the order the caller gives — the order their P&L is
 * applied in, and the order a restart replays unapplied fills in
 * (`ORDER BY f.id`).
 */
function fillInsertCtes(
  sql: Queryable,
  records: readonly FillRecord[],
  by: string,
  returning: string,
) {
  return sql`
    x AS (
      SELECT * FROM json_to_recordset(${JSON.stringify(records)}::text::json) AS x(
        i int, order_id bigint, broker_fill_id text, symbol text, side order_side,
        qty numeric(20,8), price numeric(20,8), commission numeric(20,8), commission_asset text,
        liquidity text, realized_pnl numeric(20,8), filled_at timestamptz, closing boolean)
    ), ins AS (
      INSERT INTO fills (order_id, broker_fill_id, symbol, side, qty, price, commission,
        commission_asset, liquidity, realized_pnl, filled_at, created_by)
      SELECT order_id, broker_fill_id, symbol, side, qty, price, commission, commission_asset,
        liquidity, realized_pnl, filled_at, ${by}
      FROM x ORDER BY x.i
      ON CONFLICT (order_id, broker_fill_id) DO NOTHING
      RETURNING ${sql.unsafe(returning)}
    )`;
}

function keyOf(orderId: string, brokerFillId: string): string {
  return `${orderId}\u0000${brokerFillId}`;
}

/**
 * Records fills in one statement (`INSERT … ON CONFLICT DO NOTHING`) and
 * returns one result per input, in order: `created: false` with the stored
 * fill for one recorded before or appearing earlier in the same batch.
 */
export async function insertFills(
  sql: Queryable,
  fills: readonly NewFill[],
  options: WriteOptions = {},
): Promise<FillInsertResult[]> {
  if (fills.length === 0) return [];
  const by = options.by ?? DEFAULT_ACTOR;
  const records = fills.map(fillRecord);
  const firstByKey = new Map<string, number>();
  const unique = records.filter((record) => {
    const key = keyOf(record.order_id, record.broker_fill_id);
    if (firstByKey.has(key)) return false;
    firstByKey.set(key, record.i);
    return true;
  });
  const rows = await run(sql<(Fill & { i: number })[]>`
    WITH ${fillInsertCtes(sql, unique, by, "*")}
    SELECT ins.*, x.i FROM ins
    JOIN x ON x.order_id = ins.order_id AND x.broker_fill_id = ins.broker_fill_id`);
  const results = new Array<FillInsertResult>(records.length);
  for (const { i, ...fill } of rows) results[i] = { created: true, fill };
  const missing = unique.filter((record) => results[record.i] === undefined);
  if (missing.length > 0) {
    const keys = missing.map((r) => ({ order_id: r.order_id, broker_fill_id: r.broker_fill_id }));
    const existing = await run(sql<Fill[]>`
      SELECT f.* FROM fills f
      JOIN jsonb_to_recordset(${JSON.stringify(keys)}::text::jsonb)
        AS k(order_id bigint, broker_fill_id text)
        ON k.order_id = f.order_id AND k.broker_fill_id = f.broker_fill_id
      WHERE f.order_id = ANY (string_to_array(${
      keys.map((k) => k.order_id).join(",")
    }, ',')::bigint[])`);
    const byKey = new Map(
      existing.map((fill) => [keyOf(fill.order_id, fill.broker_fill_id), fill]),
    );
    for (const record of missing) {
      const fill = byKey.get(keyOf(record.order_id, record.broker_fill_id));
      if (fill === undefined) {
        throw new Error(`Fill ${record.broker_fill_id} was neither inserted nor found`);
      }
      results[record.i] = { created: false, fill };
    }
  }
  for (const record of records) {
    if (results[record.i] !== undefined) continue;
    const first = firstByKey.get(keyOf(record.order_id, record.broker_fill_id)) ?? 0;
    const original = results[first];
    if (original === undefined) throw new Error("Batch result missing");
    results[record.i] = { created: false, fill: original.fill };
  }
  return results;
}

/** What {@linkcode insertFillsWithOrders} stored, in input order. */
export interface FillsWithOrders {
  /** The new fills. */
  fills: Fill[];
  /** The updated orders. */
  orders: Order[];
}

/** An order as the caller holds it and the guarded status change to apply to it. */
export interface OrderChange {
  /** The order as stored when the caller read it (its id, status and filled quantity guard the update). */
  order: Order;
  /** The change; `from` and `expected_filled_qty` guard it as in `updateOrderStatuses`. */
  update: OrderStatusUpdate;
}

/** What a batch of new fills does to its portfolio's positions and cash ({@linkcode insertFillsWithOrders}). */
export interface FillsPositions {
  /** The portfolio's cash and figures. */
  portfolio: PortfolioChange;
  /** Each position the fills change, once, with its last fill's index among the fills. */
  positions: readonly PendingPositionChange[];
  /**
   * Per fill, whether it reduces its position: a win or a loss of its
   * strategy's day in `strategy_performance`. @default {none closing}
   */
  closing?: readonly boolean[] | undefined;
}

/** A row of {@linkcode insertFillsWithOrders}' statement: a new fill's or an updated order's columns. */
interface FillOrOrderRow {
  k: "fill" | "order";
  i: number;
  id: string;
  qty: string;
  price: string;
  commission: string;
  realized_pnl: string | null;
  created_at: Date;
  status: Order["status"];
  filled_qty: string;
  avg_fill_price: string | null;
  broker_order_id: string | null;
  status_reason: string | null;
  submitted_at: Date | null;
  closed_at: Date | null;
  updated_at: Date;
}

/**
 * Records `fills` and applies the guarded order `changes` (as
 * `updateOrderStatuses` does) in ONE statement, all or nothing: when any
 * fill was recorded before (or appears twice) or any order is not in the
 * status and filled quantity its change expects, nothing is written and a
 * `SerializationError` is thrown — the caller then does the same work with
 * {@linkcode insertFills} and `updateOrderStatuses` in a transaction, which
 * say which fills are old and which orders moved. One round trip and no
 * explicit transaction for the common case of new fills on orders the caller
 * knows; only the columns the statement sets come back (the rest are the
 * caller's). Throws `IntegrityError` when a fill or a change breaks a check.
 *
 * With `options.positions`, the same statement also stores what the fills do
 * to their portfolio's positions and cash, as `storeAppliedFills` does for
 * stored fills (each fill then carries its `realized_pnl`, marking it
 * applied, and is added to its strategy's day in `strategy_performance`):
 * when a position or the cash is not as its `before` says, nothing at all is
 * written and a `SerializationError` is thrown.
 */
export async function insertFillsWithOrders(
  sql: Queryable,
  fills: readonly NewFill[],
  changes: readonly OrderChange[],
  options: WriteOptions & { positions?: FillsPositions | undefined } = {},
): Promise<FillsWithOrders> {
  if (fills.length === 0 && changes.length === 0) return { fills: [], orders: [] };
  const by = options.by ?? DEFAULT_ACTOR;
  const records = fills.map(fillRecord);
  const closing = options.positions?.closing;
  if (closing !== undefined) records.forEach((record, i) => record.closing = closing[i] === true);
  const statuses = changes.map((change, i) => statusRecord(change.order.id, change.update, i));
  const positions = options.positions === undefined ? null : positionWriteCtes(
    sql,
    options.positions,
    by,
    sql`(SELECT ins.id FROM ins JOIN x ON x.order_id = ins.order_id
      AND x.broker_fill_id = ins.broker_fill_id WHERE x.i = y.last_fill_i)`,
  );
  // Applied with their positions: each fill added to its strategy's day too.
  const performance = positions === null ? null : strategyFillsCte(
    sql,
    sql`SELECT o.strategy, x.filled_at, ins.qty, ins.price, ins.commission, ins.realized_pnl,
        x.closing
      FROM ins JOIN x ON x.order_id = ins.order_id AND x.broker_fill_id = ins.broker_fill_id
      JOIN orders o ON o.id = ins.order_id`,
    by,
  );
  // The check runs once every write completed (it reads their counts); when it fails, the
  // whole statement — every write — is rolled back.
  const rows = await run(sql<FillOrOrderRow[]>`
    WITH ${
    fillInsertCtes(
      sql,
      records,
      by,
      "id, order_id, broker_fill_id, qty, price, commission, realized_pnl, created_at",
    )
  }, upd AS (
      ${statusUpdateQuery(sql, statuses, by)}
    ), ${positions === null ? sql`` : sql`${positions.ctes}, ${performance!},`} ok AS (
      SELECT tw_expect(
        (SELECT count(*) FROM ins) = ${records.length}::int
          AND (SELECT count(*) FROM upd) = ${statuses.length}::int
          AND ${positions === null ? sql`true` : positions.check},
        'fills recorded before, orders changed or positions changed since they were read') AS ok
    )
    SELECT 'fill' AS k, x.i, ins.id, ins.qty, ins.price, ins.commission, ins.realized_pnl,
      ins.created_at, NULL::order_status AS status, NULL::numeric AS filled_qty,
      NULL::numeric AS avg_fill_price, NULL AS broker_order_id, NULL AS status_reason,
      NULL::timestamptz AS submitted_at, NULL::timestamptz AS closed_at,
      NULL::timestamptz AS updated_at
    FROM ins JOIN x ON x.order_id = ins.order_id AND x.broker_fill_id = ins.broker_fill_id
    UNION ALL
    SELECT 'order', upd.i, upd.id, NULL, NULL, NULL, NULL, NULL, upd.status, upd.filled_qty,
      upd.avg_fill_price, upd.broker_order_id, upd.status_reason, upd.submitted_at,
      upd.closed_at, upd.updated_at
    FROM upd
    UNION ALL
    SELECT 'check', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL
    FROM ok WHERE NOT ok.ok`);
  const out: FillsWithOrders = {
    fills: new Array<Fill>(records.length),
    orders: new Array<Order>(statuses.length),
  };
  let found = 0;
  for (const row of rows) {
    if (row.k === "fill") {
      const record = records[row.i]!;
      out.fills[row.i] = {
        id: row.id,
        order_id: record.order_id,
        broker_fill_id: record.broker_fill_id,
        symbol: record.symbol,
        side: record.side,
        qty: row.qty,
        price: row.price,
        commission: row.commission,
        commission_asset: record.commission_asset,
        liquidity: record.liquidity as Fill["liquidity"],
        realized_pnl: row.realized_pnl,
        filled_at: fills[row.i]!.filled_at,
        created_at: row.created_at,
        created_by: by,
      };
      found++;
    } else if (row.k === "order") {
      out.orders[row.i] = {
        ...changes[row.i]!.order,
        status: row.status,
        filled_qty: row.filled_qty,
        avg_fill_price: row.avg_fill_price,
        broker_order_id: row.broker_order_id,
        status_reason: row.status_reason,
        submitted_at: row.submitted_at,
        closed_at: row.closed_at,
        updated_at: row.updated_at,
        updated_by: by,
      };
      found++;
    }
  }
  if (found !== records.length + statuses.length) {
    // Cannot happen after the check; refuse rather than hand back holes.
    throw new SerializationError("Fills or orders missing from the statement's result");
  }
  return out;
}

/** Records one fill; see {@linkcode insertFills}. */
export async function insertFill(
  sql: Queryable,
  fill: NewFill,
  options: WriteOptions = {},
): Promise<FillInsertResult> {
  const [result] = await insertFills(sql, [fill], options);
  if (result === undefined) throw new Error("Fill insert returned no result");
  return result;
}

/** Filters of {@linkcode listFills}; all optional and combined with AND. */
export interface FillFilter {
  /** Executed at or after. */
  from?: Date | undefined;
  /** Executed before. */
  to?: Date | undefined;
  /** Instrument. */
  symbol?: string | undefined;
  /** Order. */
  order_id?: string | undefined;
}

/**
 * Lists fills (trades) matching `filter`, a page at a time, by id (newest
 * first unless `direction: "asc"`). Throws a `RangeError` when `order_id` is
 * not a row id (an integer from 1 to `MAX_ROW_ID`).
 */
export async function listFills(
  sql: Queryable,
  filter: FillFilter & PageOptions = {},
): Promise<Page<Fill>> {
  const page = pageOptions(filter);
  let where = sql`TRUE`;
  if (filter.from !== undefined) {
    where = sql`${where} AND filled_at >= ${checkDate(filter.from, "from")}`;
  }
  if (filter.to !== undefined) where = sql`${where} AND filled_at < ${checkDate(filter.to, "to")}`;
  if (filter.symbol !== undefined) where = sql`${where} AND symbol = ${filter.symbol}`;
  if (filter.order_id !== undefined) {
    checkId(filter.order_id, "order id");
    where = sql`${where} AND order_id = ${filter.order_id}`;
  }
  return await selectPage<Fill>(sql, "fills", where, page);
}

/** Per-symbol totals over fills (see {@linkcode fillTotalsBySymbol}). */
export interface FillTotals {
  /** Instrument. */
  symbol: string;
  /** Quantity bought. */
  bought: string;
  /** Quantity sold. */
  sold: string;
  /** Bought minus sold: what the position's quantity must be. */
  net_qty: string;
  /** Fees paid. */
  commission: string;
  /** Sum of the fills' realized P&L. */
  realized_pnl: string;
  /** Number of fills. */
  fills: number;
}

/** Options of {@linkcode fillTotalsBySymbol}. */
export interface FillTotalsOptions {
  /** Only fills of orders of this portfolio. */
  portfolio_id?: string | undefined;
  /** Executed at or after. */
  from?: Date | undefined;
  /** Executed before. */
  to?: Date | undefined;
}

/**
 * Totals of fills per symbol, ordered by symbol: quantities, fees and
 * realized P&L — positions must equal these, and the daily realized-loss
 * limit reads today's `realized_pnl` from them.
 */
export async function fillTotalsBySymbol(
  sql: Queryable,
  options: FillTotalsOptions = {},
): Promise<FillTotals[]> {
  const where = totalsFilter(sql, sql`TRUE`, options);
  const rows = await run(sql<FillTotals[]>`
    SELECT f.symbol,
      coalesce(sum(f.qty) FILTER (WHERE f.side = 'buy'), 0)::numeric(38,8) AS bought,
      coalesce(sum(f.qty) FILTER (WHERE f.side = 'sell'), 0)::numeric(38,8) AS sold,
      sum(CASE WHEN f.side = 'buy' THEN f.qty ELSE -f.qty END)::numeric(38,8) AS net_qty,
      sum(f.commission)::numeric(38,8) AS commission,
      coalesce(sum(f.realized_pnl), 0)::numeric(38,8) AS realized_pnl,
      count(*)::int AS fills
    FROM fills f JOIN orders o ON o.id = f.order_id
    WHERE ${where}
    GROUP BY f.symbol ORDER BY f.symbol`);
  return [...rows];
}

/** Realized P&L of one UTC day (see {@linkcode realizedPnlByDay}). */
export interface DayPnl {
  /** The UTC day of the fills' `filled_at`, `YYYY-MM-DD`. */
  day: string;
  /** Σ realized P&L of its fills applied (NUMERIC text). */
  realized_pnl: string;
  /** Fills applied that day. */
  fills: number;
}

/** `base` and the portfolio and `filled_at` range of `options`, over `fills f JOIN orders o`. */
function totalsFilter(
  sql: Queryable,
  base: Fragment,
  options: FillTotalsOptions,
): Fragment {
  let where = base;
  if (options.portfolio_id !== undefined) {
    where = sql`${where} AND o.portfolio_id = ${options.portfolio_id}`;
  }
  if (options.from !== undefined) {
    where = sql`${where} AND f.filled_at >= ${checkDate(options.from, "from")}`;
  }
  if (options.to !== undefined) {
    where = sql`${where} AND f.filled_at < ${checkDate(options.to, "to")}`;
  }
  return where;
}

/**
 * Realized P&L of the fills applied (`realized_pnl` set), per UTC day of
 * their `filled_at`, oldest first: what the daily loss limit counts per day.
 */
export async function realizedPnlByDay(
  sql: Queryable,
  options: FillTotalsOptions = {},
): Promise<DayPnl[]> {
  const where = totalsFilter(sql, sql`f.realized_pnl IS NOT NULL`, options);
  const rows = await run(sql<DayPnl[]>`
    SELECT to_char(f.filled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
      sum(f.realized_pnl)::numeric(38,8)::text AS realized_pnl, count(*)::int AS fills
    FROM fills f JOIN orders o ON o.id = f.order_id
    WHERE ${where}
    GROUP BY 1 ORDER BY 1`);
  return [...rows];
}
