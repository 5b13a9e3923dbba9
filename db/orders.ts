/**
 * The orders repository: insert, look up by id / client order id / broker
 * order id, status updates guarded by the expected current status (one or a
 * batch), keyset-paginated lists, open orders, and the outbox of orders
 * persisted but not yet acknowledged by a broker.
 *
 * @example
 * ```ts
 * import { insertOrder, updateOrderStatus } from "./orders.ts";
 *
 * const order = await insertOrder(sql, {
 *   symbol: "BTC-USDT", side: "buy", qty: "0.5", strategy: "momentum",
 * });
 * await updateOrderStatus(sql, order.id, {
 *   from: "pending", to: "submitted", broker_order_id: "b-1",
 * });
 * ```
 *
 * @module
 */

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
  type WriteOptions,
} from "./_common.ts";
import {
  checkId,
  ORDER_INSERT_COLUMNS,
  ORDER_RECORD_TYPE,
  orderInsertValues,
  orderRecord,
  type StatusRecord,
  statusRecord,
  statusUpdateQuery,
} from "./_order_sql.ts";
import {
  OPEN_ORDER_STATUSES,
  ORDER_STATUSES,
  type OrderSide,
  type OrderStatus,
  type OrderType,
  type TimeInForce,
} from "./enums.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** An order as stored. Money and quantities are NUMERIC(20,8) text (8 decimals); ids are decimal text. */
export interface Order {
  /** Row id. */
  id: string;
  /** Our id for the order, sent to the broker (unique). */
  client_order_id: string;
  /** Broker the order is routed to, e.g. `paper`, `alpaca`. */
  broker: string;
  /** The broker's id, once it acknowledged the order. */
  broker_order_id: string | null;
  /** Portfolio the order trades for. */
  portfolio_id: string;
  /** The signal this order executes (at most one order per signal). */
  signal_id: string | null;
  /** Instrument. */
  symbol: string;
  /** Buy or sell. */
  side: OrderSide;
  /** Order type. */
  type: OrderType;
  /** Time in force. */
  time_in_force: TimeInForce;
  /** Quantity ordered (> 0). */
  qty: string;
  /** Limit price of limit and stop-limit orders. */
  limit_price: string | null;
  /** Stop price of stop and stop-limit orders. */
  stop_price: string | null;
  /** Lifecycle status. */
  status: OrderStatus;
  /** Quantity filled so far (0 ≤ filled_qty ≤ qty). */
  filled_qty: string;
  /** Average price of the fills, null before the first. */
  avg_fill_price: string | null;
  /** Why the order was placed (the signal's reason). */
  reason: string | null;
  /** Why the broker rejected, cancelled or expired it. */
  status_reason: string | null;
  /** Strategy that asked for it. */
  strategy: string;
  /** When the broker acknowledged it; null while pending. */
  submitted_at: Date | null;
  /** When it reached a final status. */
  closed_at: Date | null;
  /** When the row was inserted. */
  created_at: Date;
  /** When the row last changed. */
  updated_at: Date;
  /** Who inserted it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

/** Columns of {@linkcode Order}, in table order. */
export const ORDER_COLUMNS = [
  "id",
  "client_order_id",
  "broker",
  "broker_order_id",
  "portfolio_id",
  "signal_id",
  "symbol",
  "side",
  "type",
  "time_in_force",
  "qty",
  "limit_price",
  "stop_price",
  "status",
  "filled_qty",
  "avg_fill_price",
  "reason",
  "status_reason",
  "strategy",
  "submitted_at",
  "closed_at",
  "created_at",
  "updated_at",
  "created_by",
  "updated_by",
] as const satisfies readonly (keyof Order)[];

/** A new order. Absent optional fields take the column defaults. */
export interface NewOrder {
  /** Our id sent to the broker. @default {a random UUID} */
  client_order_id?: string | undefined;
  /** Broker to route to. @default {"paper"} */
  broker?: string | undefined;
  /** The broker's id, for orders imported from the broker. @default {null} */
  broker_order_id?: string | null | undefined;
  /** Portfolio. @default {"default"} */
  portfolio_id?: string | undefined;
  /** The signal it executes. @default {null} */
  signal_id?: string | null | undefined;
  /** Instrument (must exist in `symbols`). */
  symbol: string;
  /** Buy or sell. */
  side: OrderSide;
  /** Order type. @default {"market"} */
  type?: OrderType | undefined;
  /** Time in force. @default {"day"} */
  time_in_force?: TimeInForce | undefined;
  /** Quantity (> 0). */
  qty: DecimalInput;
  /** Limit price: required for limit and stop-limit orders, refused otherwise. */
  limit_price?: DecimalInput | null | undefined;
  /** Stop price: required for stop and stop-limit orders, refused otherwise. */
  stop_price?: DecimalInput | null | undefined;
  /** Initial status, for orders imported from the broker. @default {"pending"} */
  status?: OrderStatus | undefined;
  /** Why the order is placed. @default {null} */
  reason?: string | null | undefined;
  /** Strategy asking for it. */
  strategy: string;
}

/**
 * Inserts an order and returns it. Throws `ConflictError` when its client
 * order id or signal is taken (constraint `orders_client_order_id_key` or
 * `orders_signal_id_key`), `IntegrityError` when it breaks a check (qty ≤ 0,
 * a price its type does not allow, an unknown symbol).
 */
export async function insertOrder(
  sql: Queryable,
  order: NewOrder,
  options: WriteOptions = {},
): Promise<Order> {
  const [row] = await insertOrders(sql, [order], options);
  if (row === undefined) throw new Error("Order insert returned no row");
  return row;
}

/**
 * Inserts several orders in one statement and returns them in input order.
 * One conflict fails them all (`ConflictError`).
 */
export async function insertOrders(
  sql: Queryable,
  orders: readonly NewOrder[],
  options: WriteOptions = {},
): Promise<Order[]> {
  if (orders.length === 0) return [];
  const by = options.by ?? DEFAULT_ACTOR;
  const records = JSON.stringify(orders.map(orderRecord));
  const rows = await run(sql<(Order & { i: number })[]>`
    WITH x AS (
      SELECT * FROM jsonb_to_recordset(${records}::text::jsonb)
        AS x(${sql.unsafe(ORDER_RECORD_TYPE)})
      ORDER BY i
    ), ins AS (
      INSERT INTO orders (${sql.unsafe(ORDER_INSERT_COLUMNS)})
      SELECT ${sql.unsafe(orderInsertValues())}, ${by}, ${by} FROM x ORDER BY x.i
      RETURNING *
    )
    SELECT ins.*, x.i FROM ins JOIN x ON x.client_order_id = ins.client_order_id
  `);
  return alignOrders(rows, orders.length);
}

/** Puts rows tagged with their input index back into input order, dropping the tag. */
function alignOrders(rows: readonly (Order & { i: number })[], length: number): Order[] {
  const out = new Array<Order>(length);
  for (const { i, ...order } of rows) out[i] = order;
  return out;
}

/**
 * Returns order `id`; throws `NotFoundError` when there is none and
 * a `RangeError` when `id` is not a row id (an integer from 1 to `MAX_ROW_ID`).
 */
export async function getOrder(sql: Queryable, id: string): Promise<Order> {
  checkId(id, "order id");
  const [row] = await run(sql<Order[]>`SELECT * FROM orders WHERE id = ${id}`);
  if (row === undefined) throw new NotFoundError("order", id);
  return row;
}

/** Returns the order with our `clientOrderId`, or null. */
export async function findOrderByClientOrderId(
  sql: Queryable,
  clientOrderId: string,
): Promise<Order | null> {
  const [row] = await run(
    sql<Order[]>`SELECT * FROM orders WHERE client_order_id = ${clientOrderId}`,
  );
  return row ?? null;
}

/** Returns the order `broker` knows as `brokerOrderId`, or null. */
export async function findOrderByBrokerOrderId(
  sql: Queryable,
  broker: string,
  brokerOrderId: string,
): Promise<Order | null> {
  const [row] = await run(sql<Order[]>`
    SELECT * FROM orders WHERE broker = ${broker} AND broker_order_id = ${brokerOrderId}`);
  return row ?? null;
}

/**
 * Returns the order executing signal `signalId`, or null; throws a
 * `RangeError` when `signalId` is not a row id (an integer from 1 to `MAX_ROW_ID`).
 */
export async function findOrderBySignalId(
  sql: Queryable,
  signalId: string,
): Promise<Order | null> {
  checkId(signalId, "signal id");
  const [row] = await run(sql<Order[]>`SELECT * FROM orders WHERE signal_id = ${signalId}`);
  return row ?? null;
}

/**
 * Σ qty × price of the fills of each order `ids` names, exact (NUMERIC text,
 * up to 16 decimals), by order id; orders without fills are absent. The
 * stored `avg_fill_price` is rounded to 8 decimals: an average re-weighted
 * from it drifts, one derived from this does not.
 *
 * @example
 * ```ts
 * const notionals = await filledNotionals(sql, ["7"]);
 * notionals.get("7"); // "7.0000000000000000" for fills 1@1, 1@1, 1@2 and 3@1
 * ```
 */
export async function filledNotionals(
  sql: Queryable,
  ids: readonly string[],
): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  for (const id of ids) checkId(id, "order id");
  const rows = await run(sql<{ order_id: string; notional: string }[]>`
    SELECT order_id::text AS order_id, sum(qty * price)::text AS notional FROM fills
    WHERE order_id = ANY (string_to_array(${ids.join(",")}, ',')::bigint[])
    GROUP BY order_id`);
  return new Map(rows.map((row) => [row.order_id, row.notional]));
}

/** A status change of an order, applied only if the order is in an expected state. */
export interface OrderStatusUpdate {
  /** The status the order must have now (any of them, for a list). */
  from: OrderStatus | readonly OrderStatus[];
  /** The new status (may equal the current one, e.g. another partial fill). */
  to: OrderStatus;
  /** New filled quantity. @default {unchanged} */
  filled_qty?: DecimalInput | undefined;
  /** New average fill price. @default {unchanged} */
  avg_fill_price?: DecimalInput | undefined;
  /**
   * The filled quantity the order must have now: guards a fill computed from
   * a stale read against a concurrent fill. @default {not checked}
   */
  expected_filled_qty?: DecimalInput | undefined;
  /** The broker's order id. @default {unchanged} */
  broker_order_id?: string | undefined;
  /**
   * When the broker acknowledged the order. @default {unchanged; now() when
   * it leaves `pending` for `submitted`, `partially_filled` or `filled`}
   */
  submitted_at?: Date | undefined;
  /** Why the broker rejected, cancelled or expired it. @default {unchanged} */
  status_reason?: string | undefined;
}

/**
 * Changes the status (and fill figures) of order `id` if its status is one
 * of `update.from` (and, when given, its filled quantity is
 * `update.expected_filled_qty`); returns the updated order. Throws
 * `NotFoundError` when there is no such order and `ConflictError` (with
 * `actual` the current {@linkcode Order}) when it is in another state; a
 * `RangeError` for an `id` that is not a row id (an integer from 1 to
 * `MAX_ROW_ID`) or an unknown status. Whether the transition is legal is
 * the order state machine's decision, not this function's.
 */
export async function updateOrderStatus(
  sql: Queryable,
  id: string,
  update: OrderStatusUpdate,
  options: WriteOptions = {},
): Promise<Order> {
  const record = statusRecord(id, update, 0);
  const [row] = await run(statusUpdateQuery(sql, [record], options.by ?? DEFAULT_ACTOR));
  if (row !== undefined) {
    const { i: _, ...order } = row;
    return order;
  }
  const current = await getOrder(sql, id);
  throw staleError(current, record);
}

function staleError(current: Order, record: StatusRecord): ConflictError {
  return new ConflictError(
    `Order ${current.id} is ${current.status} with ${current.filled_qty} filled, ` +
      `expected ${record.from_statuses.join(" or ")}` +
      (record.expected_filled_qty === null ? "" : ` with ${record.expected_filled_qty} filled`),
    { table: "orders", actual: current },
  );
}

/** Outcome of {@linkcode updateOrderStatuses} for one update, in input order. */
export type OrderStatusResult =
  | { ok: true; order: Order }
  | { ok: false; error: ConflictError | NotFoundError };

/**
 * Applies several status updates in one statement (plus one read when some
 * do not apply). Each applies or not on its own: the result says, per
 * update, the updated order or the `ConflictError`/`NotFoundError` that
 * {@linkcode updateOrderStatus} would have thrown. Throws a `RangeError` when
 * an order appears twice (fold its updates into one).
 */
export async function updateOrderStatuses(
  sql: Queryable,
  updates: readonly (OrderStatusUpdate & { id: string })[],
  options: WriteOptions = {},
): Promise<OrderStatusResult[]> {
  if (updates.length === 0) return [];
  const records = updates.map((update, i) => statusRecord(update.id, update, i));
  const ids = new Set<string>();
  for (const record of records) {
    const key = BigInt(record.id).toString();
    if (ids.has(key)) throw new RangeError(`Order ${record.id} appears twice in one batch`);
    ids.add(key);
  }
  const rows = await run(statusUpdateQuery(sql, records, options.by ?? DEFAULT_ACTOR));
  const results = new Array<OrderStatusResult>(records.length);
  for (const { i, ...order } of rows) results[i] = { ok: true, order };
  const missing = records.filter((record) => results[record.i] === undefined);
  if (missing.length > 0) {
    const current = await run(sql<Order[]>`
      SELECT * FROM orders
      WHERE id = ANY (string_to_array(${missing.map((r) => r.id).join(",")}, ',')::bigint[])`);
    const byId = new Map(current.map((order) => [order.id, order]));
    for (const record of missing) {
      const order = byId.get(BigInt(record.id).toString());
      results[record.i] = {
        ok: false,
        error: order === undefined
          ? new NotFoundError("order", record.id)
          : staleError(order, record),
      };
    }
  }
  return results;
}

/** Filters of {@linkcode listOrders}; all optional and combined with AND. */
export interface OrderFilter {
  /** Instrument. */
  symbol?: string | undefined;
  /** Status, or any of several. */
  status?: OrderStatus | readonly OrderStatus[] | undefined;
  /** Strategy. */
  strategy?: string | undefined;
  /** Broker. */
  broker?: string | undefined;
  /** Portfolio. */
  portfolio_id?: string | undefined;
  /** Created at or after. */
  from?: Date | undefined;
  /** Created before. */
  to?: Date | undefined;
}

/**
 * Lists orders matching `filter`, a page at a time, ordered by id (newest
 * first unless `direction: "asc"`); the cursor is the last id seen. The
 * pages never repeat an order and list every order committed before the
 * first page was read (that matches `filter` when its page is read); an order
 * whose transaction was still open while a page past its id was read is
 * left behind (see `selectPage` in `_common.ts`): list again from the first page.
 *
 * @example
 * ```ts
 * import { listOrders } from "./orders.ts";
 *
 * const filter = { symbol: "AAPL", status: ["submitted", "partially_filled"] } as const;
 * let page = await listOrders(sql, filter);
 * while (page.next !== null) page = await listOrders(sql, { ...filter, after: page.next });
 * ```
 */
export async function listOrders(
  sql: Queryable,
  filter: OrderFilter & PageOptions = {},
): Promise<Page<Order>> {
  const page = pageOptions(filter);
  let where = sql`TRUE`;
  if (filter.symbol !== undefined) where = sql`${where} AND symbol = ${filter.symbol}`;
  if (filter.status !== undefined) {
    const statuses = typeof filter.status === "string" ? [filter.status] : [...filter.status];
    for (const status of statuses) {
      if (!ORDER_STATUSES.includes(status)) throw new RangeError(`Unknown order status ${status}`);
    }
    if (statuses.length === 0) throw new RangeError("The status filter lists no status");
    // An array literal of the validated labels, which the planner estimates from the column's
    // statistics (string_to_array(...) it cannot): orders_status_id_idx and
    // orders_symbol_status_idx serve it.
    where = sql`${where} AND status = ANY (${`{${statuses.join(",")}}`}::order_status[])`;
  }
  if (filter.strategy !== undefined) where = sql`${where} AND strategy = ${filter.strategy}`;
  if (filter.broker !== undefined) where = sql`${where} AND broker = ${filter.broker}`;
  if (filter.portfolio_id !== undefined) {
    where = sql`${where} AND portfolio_id = ${filter.portfolio_id}`;
  }
  if (filter.from !== undefined) {
    where = sql`${where} AND created_at >= ${checkDate(filter.from, "from")}`;
  }
  if (filter.to !== undefined) where = sql`${where} AND created_at < ${checkDate(filter.to, "to")}`;
  return await selectPage<Order>(sql, "orders", where, page);
}

/** Options of {@linkcode listOpenOrders} and {@linkcode countOpenOrders}. */
export interface OpenOrdersOptions {
  /** Only this instrument. */
  symbol?: string | undefined;
  /** Only this broker. */
  broker?: string | undefined;
  /** Only this portfolio. */
  portfolio_id?: string | undefined;
}

const OPEN_LIST = OPEN_ORDER_STATUSES.map((s) => `'${s}'`).join(", ");

function openWhere(sql: Queryable, options: OpenOrdersOptions) {
  let where = sql`status IN (${sql.unsafe(OPEN_LIST)})`;
  if (options.symbol !== undefined) where = sql`${where} AND symbol = ${options.symbol}`;
  if (options.broker !== undefined) where = sql`${where} AND broker = ${options.broker}`;
  if (options.portfolio_id !== undefined) {
    where = sql`${where} AND portfolio_id = ${options.portfolio_id}`;
  }
  return where;
}

/** Orders that may still trade (pending, submitted, partially filled), oldest first: for reconciliation. */
export async function listOpenOrders(
  sql: Queryable,
  options: OpenOrdersOptions = {},
): Promise<Order[]> {
  const rows = await run(
    sql<Order[]>`SELECT * FROM orders WHERE ${openWhere(sql, options)} ORDER BY id`,
  );
  return [...rows];
}

/** How many orders may still trade, per symbol (symbols without any are absent). */
export async function countOpenOrders(
  sql: Queryable,
  options: OpenOrdersOptions = {},
): Promise<Map<string, number>> {
  const rows = await run(sql<{ symbol: string; n: number }[]>`
    SELECT symbol, count(*)::int AS n FROM orders WHERE ${openWhere(sql, options)}
    GROUP BY symbol`);
  return new Map(rows.map((row) => [row.symbol, row.n]));
}

/** Options of {@linkcode listUnsubmittedOrders}. */
export interface UnsubmittedOptions {
  /** Only orders created before this time (leave recent ones to the running engine). */
  createdBefore?: Date | undefined;
  /** Only this broker. */
  broker?: string | undefined;
  /** Most orders returned. @default {1000} */
  limit?: number | undefined;
}

/**
 * The outbox: orders persisted as `pending` that no broker acknowledged yet,
 * oldest first. After a crash they are submitted again with the same client
 * order id, which a broker recognises as the same order.
 */
export async function listUnsubmittedOrders(
  sql: Queryable,
  options: UnsubmittedOptions = {},
): Promise<Order[]> {
  const limit = options.limit ?? 1000;
  assertPositiveInteger(limit, "Limit");
  let where = sql`status = 'pending'`;
  if (options.createdBefore !== undefined) {
    where = sql`${where} AND created_at < ${checkDate(options.createdBefore, "createdBefore")}`;
  }
  if (options.broker !== undefined) where = sql`${where} AND broker = ${options.broker}`;
  const rows = await run(
    sql<Order[]>`SELECT * FROM orders WHERE ${where} ORDER BY id LIMIT ${limit}`,
  );
  return [...rows];
}
