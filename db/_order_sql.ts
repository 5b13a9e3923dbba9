/**
 * SQL pieces shared by the orders and signals repositories: new orders as
 * JSON records for `jsonb_to_recordset`, and id checks.
 *
 * @module
 */

import { toNumeric, toNumericOrNull } from "./_common.ts";
import type { OrderSide, OrderStatus, OrderType, TimeInForce } from "./enums.ts";
import type { NewOrder, Order } from "./orders.ts";

/** JSON row for `jsonb_to_recordset` (see {@linkcode ORDER_RECORD_TYPE}). */
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

/** Column definitions matching {@linkcode OrderRecord}, for `jsonb_to_recordset(...) AS x(...)`. */
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

/** Throws a `RangeError` unless `id` is a positive integer in decimal text. */
export function checkId(id: string, what: string): void {
  if (typeof id !== "string" || !/^[1-9]\d{0,18}$/.test(id)) {
    throw new RangeError(`Bad ${what} ${JSON.stringify(id)}`);
  }
}
