/**
 * The signals repository: every signal received is recorded once under its
 * idempotency key `(strategy, client_signal_id)`, with its outcome — accepted
 * (with its order) or rejected (with every reason). A signal delivered again
 * finds the stored row and its outcome instead of creating a second one.
 *
 * The batch path {@linkcode insertSignalsAndOrders} records a whole batch of
 * consumed signals and creates the orders of the accepted ones in one
 * statement, detecting duplicates (within the batch and against stored
 * signals) in that same statement: one round trip per batch, plus one when
 * there are duplicates.
 *
 * A stored signal's `payload` is read from its jsonb text with every number
 * as stored: a number a float would write differently (`0.00000001` as
 * `1e-8`, digits past the 17th lost, trailing zeros) comes back as a
 * `JSON.rawJSON` value of its token, so `JSON.stringify` serves the body as
 * received; any other number comes back as a plain number.
 *
 * @example
 * ```ts
 * import { insertSignalsAndOrders } from "./signals.ts";
 * import { unitOfWork } from "./unit_of_work.ts";
 *
 * const results = await unitOfWork(sql, (tx) =>
 *   insertSignalsAndOrders(tx, [{
 *     signal: { strategy: "momentum", client_signal_id: "s-1", source: "nats", payload: body },
 *     outcome: { status: "accepted", order: { symbol: "BTC-USDT", side: "buy", qty: "0.5" } },
 *   }]));
 * for (const r of results) if (r.created && r.order) submit(r.order);
 * ```
 *
 * @module
 */

import {
  checkDate,
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
  ORDER_COLUMN_TYPES,
  ORDER_FIELDS_TYPE,
  ORDER_INSERT_COLUMNS,
  orderInsertValues,
  type OrderRecord,
  orderRecord,
} from "./_order_sql.ts";
import { SIGNAL_SOURCES, SIGNAL_STATUSES, type SignalSource, type SignalStatus } from "./enums.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import { type NewOrder, type Order, ORDER_COLUMNS } from "./orders.ts";
import { JsonNumber, type JsonValue, parseJsonNumbers } from "../lib/json_numbers.ts";

/** A signal as stored. */
export interface Signal {
  /** Row id (decimal text). */
  id: string;
  /** Strategy that sent it; first half of the idempotency key. */
  strategy: string;
  /** The client's signal id (or one derived from the delivery); second half of the key. */
  client_signal_id: string;
  /** How it arrived. */
  source: SignalSource;
  /** The symbol it names, when it names one. */
  symbol: string | null;
  /**
   * The body as received (parsed JSON). Read back from the database, a number
   * that a float would write differently is a `JSON.rawJSON` value of its
   * token, which `JSON.stringify` writes as that token.
   */
  payload: unknown;
  /** Outcome: `received` until decided. */
  status: SignalStatus;
  /** Every reason it was rejected (a JSON array), null unless rejected. */
  reasons: unknown[] | null;
  /** When it arrived. */
  received_at: Date;
  /** When it was accepted or rejected. */
  decided_at: Date | null;
  /** When the row was inserted. */
  created_at: Date;
  /** When the row last changed. */
  updated_at: Date;
  /** Who inserted it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

const SIGNAL_COLUMNS = [
  "id",
  "strategy",
  "client_signal_id",
  "source",
  "symbol",
  "payload",
  "status",
  "reasons",
  "received_at",
  "decided_at",
  "created_at",
  "updated_at",
  "created_by",
  "updated_by",
] as const satisfies readonly (keyof Signal)[];

/** Select list of the {@linkcode Signal} columns, `payload` as its jsonb text (see {@linkcode readSignal}). */
const SIGNAL_SELECT = SIGNAL_COLUMNS.map((c) => c === "payload" ? "payload::text AS payload" : c)
  .join(", ");

/** A signal row as selected: `payload` is its jsonb text. */
type SignalRow = Omit<Signal, "payload"> & { payload: string };

/** A signal from its row: `payload` parsed with {@linkcode parsePayload}. */
function readSignal(row: SignalRow): Signal {
  return { ...row, payload: parsePayload(row.payload) };
}

/**
 * A stored payload from its jsonb text, each number as stored: a plain
 * number when the float writes the same token, else a `JSON.rawJSON` value
 * of the token (PostgreSQL writes a number as its NUMERIC: exact, never
 * through a float). Nesting beyond what {@linkcode parseJsonNumbers} reads
 * (only a row written by hand: signal bodies are read to a depth of 32) is
 * read with `JSON.parse`.
 */
function parsePayload(text: string): unknown {
  let value: JsonValue;
  try {
    value = parseJsonNumbers(text);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    return JSON.parse(text);
  }
  return exactNumbers(value);
}

/** `value` with each {@linkcode JsonNumber} turned into a number or a raw JSON token. */
function exactNumbers(value: JsonValue): unknown {
  if (value instanceof JsonNumber) {
    const number = value.toNumber();
    return String(number) === value.text ? number : rawJSON(value.text);
  }
  if (Array.isArray(value)) return value.map(exactNumbers);
  if (value === null || typeof value !== "object") return value;
  const result: Record<string, unknown> = {};
  for (const key in value) {
    const child = exactNumbers(value[key]!);
    if (key === "__proto__") {
      Object.defineProperty(result, key, {
        value: child,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else {
      result[key] = child;
    }
  }
  return result;
}

const rawJSON = (JSON as unknown as { rawJSON: (text: string) => unknown }).rawJSON;

/** A signal to record. */
export interface NewSignal {
  /** Strategy that sent it (e.g. from the subject `signals.<strategy>`). */
  strategy: string;
  /**
   * The idempotency key within the strategy: the body's `id`, or without one
   * a key derived from the delivery (e.g. `js:<stream sequence>`), so a
   * redelivery maps to the same row.
   */
  client_signal_id: string;
  /** How it arrived. */
  source: SignalSource;
  /** The symbol it names, when it names one. @default {null} */
  symbol?: string | null | undefined;
  /** The body as received: any JSON value (wrap unparseable text, e.g. `{ raw }`). */
  payload: unknown;
  /** When it arrived. @default {now()} */
  received_at?: Date | undefined;
}

/** The decision on a signal. */
export type SignalOutcome =
  /** Not decided yet. */
  | { status: "received" }
  /** Accepted: `order` is created for it (its strategy is the signal's). */
  | { status: "accepted"; order: Omit<NewOrder, "signal_id" | "strategy"> }
  /** Rejected, with every reason (JSON values, e.g. `{ rule, message }`). */
  | { status: "rejected"; reasons: readonly unknown[] };

/** A signal with the order created for it, if any. */
export interface SignalWithOrder {
  /** The stored signal. */
  signal: Signal;
  /** Its order, when it was accepted. */
  order: Order | null;
}

/** Result of recording one signal. */
export interface SignalInsertResult extends SignalWithOrder {
  /**
   * True when this call recorded the signal (and created its order); false
   * for a duplicate, whose stored signal and order are returned as they are.
   */
  created: boolean;
  /** For a duplicate of an earlier item of the same batch, that item's index. */
  duplicateOf?: number;
}

/** One consumed signal and the decision on it, for {@linkcode insertSignalsAndOrders}. */
export interface SignalBatchItem {
  /** The signal. */
  signal: NewSignal;
  /** The decision; an accepted signal carries its order. */
  outcome: SignalOutcome;
}

interface SignalRecord extends Partial<OrderRecord> {
  i: number;
  s_strategy: string;
  s_client_signal_id: string;
  s_source: SignalSource;
  s_symbol: string | null;
  s_payload: unknown;
  s_status: SignalStatus;
  s_reasons: readonly unknown[] | null;
  s_received_at: string | null;
}

const SIGNAL_RECORD_TYPE = `s_strategy text, s_client_signal_id text, s_source text, ` +
  `s_symbol text, s_payload jsonb, s_status signal_status, s_reasons jsonb, ` +
  `s_received_at timestamptz, ${ORDER_FIELDS_TYPE}`;

/** SQL types of the {@linkcode Signal} columns, for typed NULLs. */
const SIGNAL_COLUMN_TYPES: Record<keyof Signal, string> = {
  id: "bigint",
  strategy: "text",
  client_signal_id: "text",
  source: "text",
  symbol: "text",
  payload: "jsonb",
  status: "signal_status",
  reasons: "jsonb",
  received_at: "timestamptz",
  decided_at: "timestamptz",
  created_at: "timestamptz",
  updated_at: "timestamptz",
  created_by: "text",
  updated_by: "text",
};

/**
 * Select list of a signal joined with its order: signal columns as is
 * (`payload` as its jsonb text), order columns `o_*`.
 */
const SIGNAL_WITH_ORDER = [
  ...SIGNAL_COLUMNS.map((c) => c === "payload" ? "s.payload::text AS payload" : `s.${c}`),
  ...ORDER_COLUMNS.map((c) => `o.${c} AS o_${c}`),
].join(", ");

/**
 * Signal columns the database sets on insert; the other columns of a new
 * signal are the values inserted, which {@linkcode insertSignalsAndOrders}
 * does not read back.
 */
const SIGNAL_SET_COLUMNS = ["id", "received_at", "decided_at", "created_at", "updated_at"] as const;

/** Order columns inserted verbatim, likewise not read back. */
const ORDER_VERBATIM_COLUMNS: ReadonlySet<keyof Order> = new Set([
  "client_order_id",
  "broker_order_id",
  "symbol",
  "side",
  "reason",
  "strategy",
  "created_by",
  "updated_by",
]);
const ORDER_SET_COLUMNS = ORDER_COLUMNS.filter((c) => !ORDER_VERBATIM_COLUMNS.has(c));

/** Select lists of the rows {@linkcode insertSignalsAndOrders} reads back: a new signal's, a new order's. */
const NEW_SIGNAL = [
  ...SIGNAL_SET_COLUMNS.map((c) => `s.${c}`),
  ...ORDER_SET_COLUMNS.map((c) => `NULL::${ORDER_COLUMN_TYPES[c]} AS o_${c}`),
].join(", ");
const NEW_ORDER = [
  ...SIGNAL_SET_COLUMNS.map((c) => `NULL::${SIGNAL_COLUMN_TYPES[c]}`),
  ...ORDER_SET_COLUMNS.map((c) => `o.${c}`),
].join(", ");

type JoinedRow = SignalRow & Record<`o_${keyof Order}`, unknown>;

function pickSignal(row: JoinedRow): Signal {
  const signal = {} as Record<string, unknown>;
  for (const column of SIGNAL_COLUMNS) signal[column] = row[column];
  return readSignal(signal as unknown as SignalRow);
}

function pickOrder(row: JoinedRow): Order | null {
  if (row.o_id === null) return null;
  const order = {} as Record<string, unknown>;
  for (const column of ORDER_COLUMNS) order[column] = row[`o_${column}`];
  return order as unknown as Order;
}

/** A new order from its row of {@linkcode NEW_ORDER} columns and the record it was inserted from. */
function newOrder(row: JoinedRow, record: SignalRecord, by: string): Order {
  const order = {} as Record<string, unknown>;
  for (const [column, from] of NEW_ORDER_SOURCES) {
    order[column] = from === "row"
      ? row[`o_${column}` as keyof JoinedRow]
      : from === "by"
      ? by
      : record[from] ?? null;
  }
  return order as unknown as Order;
}

/** Where each column of a new order comes from: its row, the actor, or a field of its record. */
const NEW_ORDER_SOURCES: ReadonlyArray<[keyof Order, "row" | "by" | keyof SignalRecord]> =
  ORDER_COLUMNS.map((column) => [
    column,
    column === "strategy"
      ? "s_strategy"
      : column === "created_by" || column === "updated_by"
      ? "by"
      : ORDER_VERBATIM_COLUMNS.has(column)
      ? column as keyof SignalRecord
      : "row",
  ]);

function splitJoined(row: JoinedRow): SignalWithOrder {
  return { signal: pickSignal(row), order: pickOrder(row) };
}

function keyOf(strategy: string, clientSignalId: string): string {
  return `${strategy}\u0000${clientSignalId}`;
}

/** A signal's idempotency key, `strategy` and the client's `id`. */
export interface SignalKey {
  strategy: string;
  id: string;
}

/** The condition "`signals s` has one of `keys`", for a WHERE clause. */
function keyCondition(sql: Queryable, keys: readonly SignalKey[]) {
  // The key columns as arrays too: the planner then searches the unique index rather than scan.
  const strategies = JSON.stringify([...new Set(keys.map((k) => k.strategy))]);
  const ids = JSON.stringify(keys.map((k) => k.id));
  return sql`(s.strategy, s.client_signal_id) IN (
      SELECT strategy, id FROM jsonb_to_recordset(${JSON.stringify(keys)}::text::jsonb)
        AS k(strategy text, id text))
    AND s.strategy = ANY (ARRAY(SELECT jsonb_array_elements_text(${strategies}::text::jsonb)))
    AND s.client_signal_id = ANY (ARRAY(SELECT jsonb_array_elements_text(${ids}::text::jsonb)))`;
}

/**
 * Which of `keys` are stored already, each as `` `${strategy}\u0000${id}` ``
 * (one query).
 */
export async function storedSignalKeys(
  sql: Queryable,
  keys: readonly SignalKey[],
): Promise<Set<string>> {
  if (keys.length === 0) return new Set();
  const rows = await run(sql<{ strategy: string; client_signal_id: string }[]>`
    SELECT s.strategy, s.client_signal_id FROM signals s WHERE ${keyCondition(sql, keys)}`);
  return new Set(rows.map((row) => keyOf(row.strategy, row.client_signal_id)));
}

function checkSignal(signal: NewSignal): void {
  if (typeof signal.strategy !== "string" || signal.strategy === "") {
    throw new TypeError("A signal needs a strategy");
  }
  if (typeof signal.client_signal_id !== "string" || signal.client_signal_id === "") {
    throw new TypeError("A signal needs a client_signal_id");
  }
  if (!SIGNAL_SOURCES.includes(signal.source)) {
    throw new RangeError(`Unknown signal source ${String(signal.source)}`);
  }
  if (signal.payload === undefined) throw new TypeError("A signal needs a payload");
  if (signal.received_at !== undefined) checkDate(signal.received_at, "received_at");
}

function signalRecord(item: SignalBatchItem, i: number): SignalRecord {
  const { signal, outcome } = item;
  checkSignal(signal);
  const base: SignalRecord = {
    i,
    s_strategy: signal.strategy,
    s_client_signal_id: signal.client_signal_id,
    s_source: signal.source,
    s_symbol: signal.symbol ?? null,
    s_payload: signal.payload,
    s_status: outcome.status,
    s_reasons: null,
    s_received_at: signal.received_at?.toISOString() ?? null,
  };
  if (outcome.status === "accepted") {
    return {
      ...base,
      ...orderRecord({ ...outcome.order, strategy: signal.strategy }, i),
    };
  }
  if (outcome.status === "rejected") {
    if (!Array.isArray(outcome.reasons) || outcome.reasons.length === 0) {
      throw new TypeError("A rejected signal needs at least one reason");
    }
    return { ...base, s_reasons: outcome.reasons };
  }
  if (outcome.status !== "received") {
    throw new RangeError(
      `Unknown signal outcome ${String((outcome as { status: unknown }).status)}`,
    );
  }
  return base;
}

/**
 * The start of an upsert adding to `strategy_performance`'s signal counts
 * (`signals`, `rejected`, `orders` per strategy and UTC day of `received_at`),
 * for a data-modifying CTE in the statement that stores or decides signals:
 * a signal counts once, with the row that stores it. Follow it with a
 * `SELECT` of (strategy, day, signals, rejected, orders, by, by) and
 * {@linkcode strategyCountsConflict}.
 */
function strategyCounts(sql: Queryable) {
  return sql`INSERT INTO strategy_performance AS p (strategy, day, signals, rejected, orders,
        created_by, updated_by)`;
}

/** The `ON CONFLICT` clause that adds a {@linkcode strategyCounts} row to a stored day. */
function strategyCountsConflict(sql: Queryable) {
  return sql`ON CONFLICT (strategy, day) DO UPDATE SET signals = p.signals + excluded.signals,
        rejected = p.rejected + excluded.rejected, orders = p.orders + excluded.orders,
        updated_by = excluded.updated_by`;
}

/**
 * Records a batch of consumed signals with their outcomes and creates the
 * orders of the accepted ones — one statement, so pass the transaction of a
 * {@linkcode unitOfWork} to make it atomic with the rest of the batch's work.
 * Returns one result per item, in input order: `created: true` with the new
 * signal (and order) for a first delivery; `created: false` with the stored
 * signal and order — whatever their outcome — for a signal already stored
 * or appearing earlier in the batch (`duplicateOf`). A signal maps to at most
 * one order. Throws `ConflictError` when an order's client order id is
 * taken, `IntegrityError` when an order breaks a check (the whole statement
 * fails: validate before).
 */
export async function insertSignalsAndOrders(
  sql: Queryable,
  items: readonly SignalBatchItem[],
  options: WriteOptions = {},
): Promise<SignalInsertResult[]> {
  if (items.length === 0) return [];
  const by = options.by ?? DEFAULT_ACTOR;
  const results = new Array<SignalInsertResult>(items.length);
  const firstByKey = new Map<string, number>();
  const records: SignalRecord[] = [];
  items.forEach((item, i) => {
    const key = keyOf(item.signal.strategy, item.signal.client_signal_id);
    if (firstByKey.has(key)) return;
    firstByKey.set(key, i);
    records.push(signalRecord(item, i));
  });
  // Signals and orders come back as separate rows (UNION ALL): joining the two CTEs would make
  // the planner loop over one for each row of the other, as it cannot estimate their sizes.
  const rows = await run(sql<(JoinedRow & { i: number | null })[]>`
    WITH x AS (
      SELECT * FROM json_to_recordset(${JSON.stringify(records)}::text::json)
        AS x(i int, ${sql.unsafe(SIGNAL_RECORD_TYPE)})
    ), s AS (
      INSERT INTO signals (strategy, client_signal_id, source, symbol, payload, status, reasons,
        received_at, decided_at, created_by, updated_by)
      SELECT s_strategy, s_client_signal_id, s_source, s_symbol, s_payload, s_status, s_reasons,
        coalesce(s_received_at, now()), CASE WHEN s_status = 'received' THEN NULL ELSE now() END,
        ${by}, ${by}
      FROM x ORDER BY s_strategy, s_client_signal_id
      ON CONFLICT (strategy, client_signal_id) DO NOTHING
      RETURNING id, strategy, client_signal_id, received_at, decided_at, created_at, updated_at
    ), o AS (
      INSERT INTO orders (${sql.unsafe(ORDER_INSERT_COLUMNS)})
      SELECT ${sql.unsafe(orderInsertValues("s.id"))}, ${by}, ${by}
      FROM s JOIN x ON x.s_strategy = s.strategy AND x.s_client_signal_id = s.client_signal_id
      WHERE x.s_status = 'accepted'
      ORDER BY x.i
      RETURNING *
    ), p AS (
      ${strategyCounts(sql)}
      SELECT s.strategy, (s.received_at AT TIME ZONE 'UTC')::date, count(*),
        count(*) FILTER (WHERE x.s_status = 'rejected'),
        count(*) FILTER (WHERE x.s_status = 'accepted'), ${by}, ${by}
      FROM s JOIN x ON x.s_strategy = s.strategy AND x.s_client_signal_id = s.client_signal_id
      GROUP BY 1, 2
      ORDER BY 1, 2
      ${strategyCountsConflict(sql)}
    )
    SELECT x.i, ${sql.unsafe(NEW_SIGNAL)}
    FROM s JOIN x ON x.s_strategy = s.strategy AND x.s_client_signal_id = s.client_signal_id
    UNION ALL
    SELECT NULL, ${sql.unsafe(NEW_ORDER)} FROM o
  `);
  // What was inserted verbatim is taken from the records, not read back.
  const recordByIndex = new Map(records.map((record) => [record.i, record]));
  const orderRows = new Map<string, JoinedRow>();
  for (const row of rows) {
    if (row.i === null && row.o_signal_id !== null) orderRows.set(row.o_signal_id as string, row);
  }
  for (const row of rows) {
    if (row.i === null) continue;
    const record = recordByIndex.get(row.i)!;
    const signal: Signal = {
      id: row.id,
      strategy: record.s_strategy,
      client_signal_id: record.s_client_signal_id,
      source: record.s_source,
      symbol: record.s_symbol,
      payload: items[row.i]!.signal.payload,
      status: record.s_status,
      reasons: record.s_reasons as unknown[] | null,
      received_at: row.received_at,
      decided_at: row.decided_at,
      created_at: row.created_at,
      updated_at: row.updated_at,
      created_by: by,
      updated_by: by,
    };
    const orderRow = orderRows.get(row.id);
    const order = orderRow === undefined ? null : newOrder(orderRow, record, by);
    results[row.i] = { created: true, signal, order };
  }
  const missing = records.filter((record) => results[record.i] === undefined);
  if (missing.length > 0) {
    const byKey = await findSignalsByKeys(
      sql,
      missing.map((r) => ({ strategy: r.s_strategy, id: r.s_client_signal_id })),
    );
    for (const record of missing) {
      const found = byKey.get(keyOf(record.s_strategy, record.s_client_signal_id));
      if (found === undefined) {
        throw new Error(
          `Signal ${record.s_strategy}/${record.s_client_signal_id} was neither inserted nor found`,
        );
      }
      results[record.i] = { created: false, ...found };
    }
  }
  items.forEach((item, i) => {
    if (results[i] !== undefined) return;
    const first = firstByKey.get(keyOf(item.signal.strategy, item.signal.client_signal_id)) ?? 0;
    const original = results[first];
    if (original === undefined) throw new Error("Batch result missing");
    results[i] = {
      created: false,
      duplicateOf: first,
      signal: original.signal,
      order: original.order,
    };
  });
  return results;
}

/**
 * Records one signal, by default as `received` (decide later with
 * {@linkcode recordSignalOutcome}); with an `outcome`, like a one-item
 * {@linkcode insertSignalsAndOrders}. For a duplicate, returns the stored
 * signal and order with `created: false`.
 */
export async function insertSignal(
  sql: Queryable,
  signal: NewSignal,
  options: WriteOptions & { outcome?: SignalOutcome } = {},
): Promise<SignalInsertResult> {
  const [result] = await insertSignalsAndOrders(sql, [{
    signal,
    outcome: options.outcome ?? { status: "received" },
  }], options);
  if (result === undefined) throw new Error("Signal insert returned no result");
  return result;
}

/**
 * Records the decision on a signal still `received`: `rejected` with its
 * reasons, or `accepted` (create its order with `signal_id` in the same
 * transaction). Returns the updated signal; throws `NotFoundError` for an
 * unknown id, `ConflictError` (with `actual` the stored signal) when it
 * was decided already and a `RangeError` when `id` is not a row id (an
 * integer from 1 to `MAX_ROW_ID`).
 */
export async function recordSignalOutcome(
  sql: Queryable,
  id: string,
  outcome: { status: "accepted" } | { status: "rejected"; reasons: readonly unknown[] },
  options: WriteOptions = {},
): Promise<Signal> {
  checkId(id, "signal id");
  let reasons: string | null = null;
  if (outcome.status === "rejected") {
    if (!Array.isArray(outcome.reasons) || outcome.reasons.length === 0) {
      throw new TypeError("A rejected signal needs at least one reason");
    }
    reasons = JSON.stringify(outcome.reasons);
  } else if (outcome.status !== "accepted") {
    throw new RangeError(
      `Unknown signal outcome ${String((outcome as { status: unknown }).status)}`,
    );
  }
  const by = options.by ?? DEFAULT_ACTOR;
  const [row] = await run(sql<SignalRow[]>`
    WITH s AS (
      UPDATE signals SET status = ${outcome.status}::signal_status,
        reasons = ${reasons}::text::jsonb, decided_at = now(), updated_by = ${by}
      WHERE id = ${id} AND status = 'received'
      RETURNING *
    ), p AS (
      ${strategyCounts(sql)}
      SELECT strategy, (received_at AT TIME ZONE 'UTC')::date, 0,
        CASE WHEN status = 'rejected' THEN 1 ELSE 0 END,
        CASE WHEN status = 'accepted' THEN 1 ELSE 0 END, ${by}, ${by}
      FROM s
      ${strategyCountsConflict(sql)}
    )
    SELECT ${sql.unsafe(SIGNAL_SELECT)} FROM s`);
  if (row !== undefined) return readSignal(row);
  const current = await getSignal(sql, id);
  throw new ConflictError(`Signal ${id} was ${current.signal.status} already`, {
    table: "signals",
    actual: current.signal,
  });
}

/**
 * Returns signal `id` with its order; throws `NotFoundError` when there is
 * none and a `RangeError` when `id` is not a row id (an integer from 1 to `MAX_ROW_ID`).
 */
export async function getSignal(sql: Queryable, id: string): Promise<SignalWithOrder> {
  checkId(id, "signal id");
  const [row] = await run(sql<JoinedRow[]>`
    SELECT ${sql.unsafe(SIGNAL_WITH_ORDER)}
    FROM signals s LEFT JOIN orders o ON o.signal_id = s.id WHERE s.id = ${id}`);
  if (row === undefined) throw new NotFoundError("signal", id);
  return splitJoined(row);
}

/** Returns the signal stored under `(strategy, clientSignalId)` with its order, or null. */
export async function findSignalByKey(
  sql: Queryable,
  strategy: string,
  clientSignalId: string,
): Promise<SignalWithOrder | null> {
  const [row] = await run(sql<JoinedRow[]>`
    SELECT ${sql.unsafe(SIGNAL_WITH_ORDER)}
    FROM signals s LEFT JOIN orders o ON o.signal_id = s.id
    WHERE s.strategy = ${strategy} AND s.client_signal_id = ${clientSignalId}`);
  return row === undefined ? null : splitJoined(row);
}

/**
 * The signals stored under `keys`, each with its order, by
 * {@linkcode signalKeyOf} (one query); keys not stored are absent. Reads back
 * a batch whose statement lost its answer: all its keys stored means it
 * committed.
 *
 * @example
 * ```ts
 * const stored = await findSignalsByKeys(sql, [{ strategy: "momentum", id: "s-1" }]);
 * stored.get(signalKeyOf("momentum", "s-1"))?.order?.status; // "pending"
 * ```
 */
export async function findSignalsByKeys(
  sql: Queryable,
  keys: readonly SignalKey[],
): Promise<Map<string, SignalWithOrder>> {
  if (keys.length === 0) return new Map();
  const rows = await run(sql<JoinedRow[]>`
    SELECT ${sql.unsafe(SIGNAL_WITH_ORDER)}
    FROM signals s LEFT JOIN orders o ON o.signal_id = s.id
    WHERE ${keyCondition(sql, keys)}`);
  return new Map(rows.map((row) => [keyOf(row.strategy, row.client_signal_id), splitJoined(row)]));
}

/**
 * The key of a signal in the sets and maps of {@linkcode storedSignalKeys}
 * and {@linkcode findSignalsByKeys}: `` `${strategy}\u0000${id}` ``.
 */
export function signalKeyOf(strategy: string, clientSignalId: string): string {
  return keyOf(strategy, clientSignalId);
}

/** Filters of {@linkcode listSignals}; all optional and combined with AND. */
export interface SignalFilter {
  /** Strategy. */
  strategy?: string | undefined;
  /** Outcome, or any of several. */
  status?: SignalStatus | readonly SignalStatus[] | undefined;
  /** Symbol named. */
  symbol?: string | undefined;
  /** Received at or after. */
  from?: Date | undefined;
  /** Received before. */
  to?: Date | undefined;
}

/**
 * Lists signals matching `filter`, a page at a time, by id (newest first
 * unless `direction: "asc"`). Throws a `RangeError` for a `status` that is
 * not one of {@linkcode SIGNAL_STATUSES}, or an empty list of them.
 *
 * @example
 * ```ts
 * import { listSignals } from "./signals.ts";
 *
 * const page = await listSignals(sql, { strategy: "momentum", status: ["accepted", "rejected"] });
 * ```
 */
export async function listSignals(
  sql: Queryable,
  filter: SignalFilter & PageOptions = {},
): Promise<Page<Signal>> {
  const page = pageOptions(filter);
  let where = sql`TRUE`;
  if (filter.strategy !== undefined) where = sql`${where} AND strategy = ${filter.strategy}`;
  if (filter.status !== undefined) {
    const statuses = typeof filter.status === "string" ? [filter.status] : [...filter.status];
    for (const status of statuses) {
      if (!SIGNAL_STATUSES.includes(status)) {
        throw new RangeError(`Unknown signal status ${String(status)}`);
      }
    }
    if (statuses.length === 0) throw new RangeError("The status filter lists no status");
    // An array literal of the validated labels, as listOrders builds it: signals_status_idx serves it.
    where = sql`${where} AND status = ANY (${`{${statuses.join(",")}}`}::signal_status[])`;
  }
  if (filter.symbol !== undefined) where = sql`${where} AND symbol = ${filter.symbol}`;
  if (filter.from !== undefined) {
    where = sql`${where} AND received_at >= ${checkDate(filter.from, "from")}`;
  }
  if (filter.to !== undefined) {
    where = sql`${where} AND received_at < ${checkDate(filter.to, "to")}`;
  }
  // Payload read as text (SIGNAL_SELECT), then parsed with its numbers as stored.
  const rows = await selectPage<SignalRow>(
    sql,
    "signals",
    where,
    page,
    sql.unsafe(SIGNAL_SELECT),
  );
  return { items: rows.items.map(readSignal), next: rows.next };
}
