/**
 * Tradewire's data-access layer over the PostgreSQL trading schema
 * (`migrations/postgres/0002_trading.sql`).
 *
 * - Repositories are plain functions taking a pool or a transaction first:
 *   {@linkcode insertSignalsAndOrders} (the batch path of the execution
 *   engine), orders, fills, positions, portfolios and snapshots, symbols,
 *   alerts, runtime config (the kill switch), risk metrics and strategy
 *   performance.
 * - {@linkcode unitOfWork} runs several of them in one transaction, retrying
 *   serialization failures and deadlocks.
 * - Database errors surface as {@linkcode NotFoundError},
 *   {@linkcode ConflictError}, {@linkcode IntegrityError},
 *   {@linkcode DbTimeoutError}, {@linkcode DbConnectionError} or the
 *   retryable {@linkcode SerializationError} ({@linkcode mapDbError}).
 *
 * Money, prices and quantities are exact decimal strings both ways: inputs
 * are decimal text or `Decimal`s that must fit NUMERIC(20,8) (a `RangeError`
 * otherwise, rather than silent rounding); outputs are PostgreSQL's text with
 * 8 decimals (`"0.50000000"`). Ids are decimal strings. Pass a pool made by
 * `createPostgres` (which keeps NUMERIC as strings).
 *
 * Exactly-once: a signal is stored once under `(strategy, client_signal_id)`
 * and maps to at most one order; a fill once under `(order_id,
 * broker_fill_id)`; inserts report whether they created the row, so the
 * caller applies effects only for new rows. Orders are persisted `pending`
 * before a broker is called; {@linkcode listUnsubmittedOrders} finds those to
 * submit again (same client order id) after a crash.
 *
 * @example
 * ```ts
 * import { createPostgres } from "../adapters/postgres.ts";
 * import { insertSignalsAndOrders, unitOfWork } from "./db/mod.ts";
 *
 * const sql = createPostgres({ url: "postgres://postgres@127.0.0.1:5432/tradewire" });
 * const results = await unitOfWork(sql, (tx) => insertSignalsAndOrders(tx, batch));
 * const toSubmit = results.filter((r) => r.created && r.order !== null).map((r) => r.order);
 * ```
 *
 * @module
 */

export {
  type DecimalInput,
  DEFAULT_ACTOR,
  DEFAULT_PAGE_LIMIT,
  isRowId,
  MAX_PAGE_LIMIT,
  MAX_ROW_ID,
  NUMERIC_INTEGER_DIGITS,
  NUMERIC_SCALE,
  type Page,
  type PageOptions,
  type Queryable,
  toNumeric,
  type WriteOptions,
} from "./_common.ts";
export * from "./enums.ts";
export * from "./errors.ts";
export * from "./unit_of_work.ts";
export * from "./symbols.ts";
export * from "./signals.ts";
export * from "./orders.ts";
export * from "./fills.ts";
export * from "./positions.ts";
export * from "./portfolios.ts";
export * from "./alerts.ts";
export * from "./config.ts";
export * from "./metrics.ts";
