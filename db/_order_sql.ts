/**
 * SQL pieces shared by the orders, signals and fills repositories: new orders
 * and status updates as JSON records for `json_to_recordset`, the guarded
 * status update, and id checks.
 *
 * @module
 */

import {
  checkDate,
  isRowId,
  MAX_ROW_ID,
  type Queryable,
  toNumeric,
  toNumericOrNull,
} from "./_common.ts";
import {
  FINAL_ORDER_STATUSES,
  ORDER_STATUSES,
  type OrderSide,
  type OrderStatus,
  type OrderType,
  type TimeInForce,
} from "./enums.ts";
import type { NewOrder, Order, OrderStatusUpdate } from "./orders.ts";

/** JSON row for `json(b)_to_recordset` (see {@linkcode ORDER_RECORD_TYPE}). */
export interface OrderRecord {
  i: number;
  client_order_id: string;
  broker: string | null;
  broker_order_id: string | null;
  portfolio_id: string | null;
  signal_id: string | null;
  symbol: string;
  side: OrderSide;
  type: OrderType | null;
  time_in_force: TimeInForce | null;
  qty: string;
  limit_price: string | null;
  stop_price: string | null;
  status: OrderStatus | null;
  reason: string | null;
  strategy: string;
}

/** Column definitions of the order fields of {@linkcode OrderRecord} (all but `i`). */
export const ORDER_FIELDS_TYPE = "client_order_id text, broker text, broker_order_id text, " +
  "portfolio_id text, signal_id bigint, symbol text, side order_side, type order_type, " +
  "time_in_force time_in_force, qty numeric(20,8), limit_price numeric(20,8), " +
  "stop_price numeric(20,8), status order_status, reason text, strategy text";

/** Column definitions matching {@linkcode OrderRecord}, for `json(b)_to_recordset(...) AS x(...)`. */
export const ORDER_RECORD_TYPE = `i int, ${ORDER_FIELDS_TYPE}`;

/** Checks `order` and turns it into an {@linkcode OrderRecord} (index `i`). */
export function orderRecord(order: NewOrder, i: number): OrderRecord {
  return {
    i,
    client_order_id: order.client_order_id ?? crypto.randomUUID(),
    broker: order.broker ?? null,
    broker_order_id: order.broker_order_id ?? null,
    portfolio_id: order.portfolio_id ?? null,
    signal_id: order.signal_id ?? null,
    symbol: order.symbol,
    side: order.side,
    type: order.type ?? null,
    time_in_force: order.time_in_force ?? null,
    qty: toNumeric(order.qty, "qty"),
    limit_price: toNumericOrNull(order.limit_price, "limit_price"),
    stop_price: toNumericOrNull(order.stop_price, "stop_price"),
    status: order.status ?? null,
    reason: order.reason ?? null,
    strategy: order.strategy,
  };
}

/**
 * Columns an order insert fills: those of {@linkcode orderInsertValues},
 * then `created_by, updated_by` (two parameters the caller appends).
 */
export const ORDER_INSERT_COLUMNS = "client_order_id, broker, broker_order_id, portfolio_id, " +
  "signal_id, symbol, side, type, time_in_force, qty, limit_price, stop_price, status, " +
  "submitted_at, reason, strategy, created_by, updated_by";

/**
 * Select list for {@linkcode ORDER_INSERT_COLUMNS} (all but the last two)
 * from a relation `x` of {@linkcode OrderRecord}s, with the column defaults;
 * `signalId` is the SQL expression of the signal id.
 */
export function orderInsertValues(signalId = "x.signal_id"): string {
  return "x.client_order_id, coalesce(x.broker, 'paper'), x.broker_order_id, " +
    `coalesce(x.portfolio_id, 'default'), ${signalId}, x.symbol, x.side, ` +
    "coalesce(x.type, 'market'), coalesce(x.time_in_force, 'day'), x.qty, x.limit_price, " +
    "x.stop_price, coalesce(x.status, 'pending'), " +
    "CASE WHEN coalesce(x.status, 'pending') = 'pending' THEN NULL ELSE now() END, " +
    "x.reason, x.strategy";
}

/** SQL types of the {@linkcode Order} columns, for typed NULLs. */
export const ORDER_COLUMN_TYPES: Record<keyof Order, string> = {
  id: "bigint",
  client_order_id: "text",
  broker: "text",
  broker_order_id: "text",
  portfolio_id: "text",
  signal_id: "bigint",
  symbol: "text",
  side: "order_side",
  type: "order_type",
  time_in_force: "time_in_force",
  qty: "numeric(20,8)",
  limit_price: "numeric(20,8)",
  stop_price: "numeric(20,8)",
  status: "order_status",
  filled_qty: "numeric(20,8)",
  avg_fill_price: "numeric(20,8)",
  reason: "text",
  status_reason: "text",
  strategy: "text",
  submitted_at: "timestamptz",
  closed_at: "timestamptz",
  created_at: "timestamptz",
  updated_at: "timestamptz",
  created_by: "text",
  updated_by: "text",
};

/**
 * Throws a `RangeError` unless `id` is a row id ({@linkcode isRowId}: an
 * integer from 1 to {@linkcode MAX_ROW_ID} in decimal text), so that no id
 * the `bigint` column cannot hold reaches the server.
 */
export function checkId(id: string, what: string): void {
  if (!isRowId(id)) {
    throw new RangeError(
      `Bad ${what} ${JSON.stringify(id)}: not an integer from 1 to ${MAX_ROW_ID}`,
    );
  }
}

/** JSON row of a guarded status update for `json_to_recordset` ({@linkcode statusUpdateQuery}). */
export interface StatusRecord {
  i: number;
  id: string;
  from_statuses: readonly OrderStatus[];
  to_status: OrderStatus;
  filled_qty: string | null;
  avg_fill_price: string | null;
  expected_filled_qty: string | null;
  broker_order_id: string | null;
  submitted_at: string | null;
  status_reason: string | null;
}

/** Checks `update` of order `id` and turns it into a {@linkcode StatusRecord} (index `i`). */
export function statusRecord(id: string, update: OrderStatusUpdate, i: number): StatusRecord {
  checkId(id, "order id");
  const from = typeof update.from === "string" ? [update.from] : [...update.from];
  if (from.length === 0) throw new RangeError("An order status update needs a from status");
  for (const status of [...from, update.to]) {
    if (!ORDER_STATUSES.includes(status)) throw new RangeError(`Unknown order status ${status}`);
  }
  return {
    i,
    id,
    from_statuses: from,
    to_status: update.to,
    filled_qty: toNumericOrNull(update.filled_qty, "filled_qty"),
    avg_fill_price: toNumericOrNull(update.avg_fill_price, "avg_fill_price"),
    expected_filled_qty: toNumericOrNull(update.expected_filled_qty, "expected_filled_qty"),
    broker_order_id: update.broker_order_id ?? null,
    submitted_at: update.submitted_at === undefined
      ? null
      : checkDate(update.submitted_at, "submitted_at").toISOString(),
    status_reason: update.status_reason ?? null,
  };
}

const FINAL_LIST = FINAL_ORDER_STATUSES.map((s) => `'${s}'`).join(", ");

/**
 * The guarded UPDATE of orders from status `records` (an order changes only
 * while its status is one of `from_statuses` and, when given, its filled
 * quantity is `expected_filled_qty`), returning the updated rows with their
 * record index `i`. Lazy like every postgres.js query: await it, or nest it
 * in a statement (a CTE). The ids are also given as an array: the planner
 * then finds the orders by primary key, where it would scan the table to
 * join it with `json_to_recordset` (whose size it cannot estimate).
 */
export function statusUpdateQuery(sql: Queryable, records: readonly StatusRecord[], by: string) {
  return sql<(Order & { i: number })[]>`
    UPDATE orders o SET
      status = x.to_status,
      filled_qty = coalesce(x.filled_qty, o.filled_qty),
      avg_fill_price = coalesce(x.avg_fill_price, o.avg_fill_price),
      broker_order_id = coalesce(x.broker_order_id, o.broker_order_id),
      status_reason = coalesce(x.status_reason, o.status_reason),
      submitted_at = coalesce(x.submitted_at, o.submitted_at,
        CASE WHEN x.to_status IN ('submitted', 'partially_filled', 'filled') THEN now() END),
      closed_at = CASE WHEN x.to_status IN (${sql.unsafe(FINAL_LIST)})
        THEN coalesce(o.closed_at, now()) END,
      updated_by = ${by}
    FROM json_to_recordset(${JSON.stringify(records)}::text::json) AS x(
      i int, id bigint, from_statuses order_status[], to_status order_status,
      filled_qty numeric(20,8), avg_fill_price numeric(20,8), expected_filled_qty numeric(20,8),
      broker_order_id text, submitted_at timestamptz, status_reason text)
    WHERE o.id = x.id
      AND o.id = ANY (string_to_array(${records.map((r) => r.id).join(",")}, ',')::bigint[])
      AND o.status = ANY (x.from_statuses)
      AND (x.expected_filled_qty IS NULL OR o.filled_qty = x.expected_filled_qty)
    RETURNING o.*, x.i`;
}
