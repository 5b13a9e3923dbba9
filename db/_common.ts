/**
 * Shared pieces of the repositories: the queryable type, exact NUMERIC(20,8)
 * conversion of decimal inputs, keyset pages and error mapping.
 *
 * @module
 */

import type { Fragment, Sql, TransactionSql } from "postgres";
import type { Decimal } from "decimal.js";
import { mapDbError } from "./errors.ts";

/** A pool or a transaction: every repository function runs on either. */
export type Queryable = Sql | TransactionSql;

/** A decimal value given to a repository: plain decimal text or a `decimal.js` instance. */
export type DecimalInput = string | Decimal;

/** Who wrote a row when the caller does not say (`created_by`/`updated_by`). */
export const DEFAULT_ACTOR = "system";

/** Options of the writing repository functions. */
export interface WriteOptions {
  /** Recorded as `created_by`/`updated_by`. @default {DEFAULT_ACTOR} */
  by?: string;
}

/** Integer digits of a NUMERIC(20,8) value. */
export const NUMERIC_INTEGER_DIGITS = 12;
/** Decimal digits of a NUMERIC(20,8) value. */
export const NUMERIC_SCALE = 8;

/** A NUMERIC column's digits: before the point, and after it (its scale). */
export interface NumericDigits {
  integer: number;
  scale: number;
}

/** NUMERIC(20,8), the money type: 12 integer and 8 decimal digits. */
export const MONEY_DIGITS: NumericDigits = {
  integer: NUMERIC_INTEGER_DIGITS,
  scale: NUMERIC_SCALE,
};

/**
 * Checks that `value` is a decimal the column holds exactly (NUMERIC(20,8)
 * unless `digits` says otherwise) and returns its text: PostgreSQL would
 * otherwise round extra decimals silently. Throws a `TypeError` for anything
 * but decimal text or a finite `Decimal`, and a `RangeError` for more integer
 * or significant decimal digits than the column has.
 */
export function toNumeric(
  value: DecimalInput,
  field: string,
  digits: NumericDigits = MONEY_DIGITS,
): string {
  let textValue: string;
  if (typeof value === "string") {
    textValue = value;
  } else if (typeof value === "object" && value !== null && typeof value.toFixed === "function") {
    if (!value.isFinite()) throw new TypeError(`${field} must be finite, got ${value.toString()}`);
    textValue = value.toFixed();
  } else {
    throw new TypeError(`${field} must be a decimal string or Decimal, got ${typeof value}`);
  }
  // One pass over /^-?\d+(\.\d+)?$/, counting the integer digits after leading zeros and the
  // decimals before trailing zeros (what the column must hold).
  const length = textValue.length;
  let at = textValue.charCodeAt(0) === 45 ? 1 : 0; // "-"
  const start = at;
  while (at < length && isDigit(textValue.charCodeAt(at))) at++;
  let fractionDigits = 0;
  let valid = at > start;
  if (valid && at < length) {
    valid = textValue.charCodeAt(at) === 46 && at + 1 < length; // "."
    for (let i = at + 1; valid && i < length; i++) {
      const code = textValue.charCodeAt(i);
      if (!isDigit(code)) valid = false;
      else if (code !== 48) fractionDigits = i - at;
    }
  }
  if (!valid) {
    throw new TypeError(`${field} must be a decimal such as "12.5", got ${JSON.stringify(value)}`);
  }
  let first = start;
  while (first < at - 1 && textValue.charCodeAt(first) === 48) first++;
  if (at - first > digits.integer || fractionDigits > digits.scale) {
    const type = `NUMERIC(${digits.integer + digits.scale},${digits.scale})`;
    throw new RangeError(
      `${field} ${textValue} does not fit ${type} ` +
        `(at most ${digits.integer} integer and ${digits.scale} decimal digits)`,
    );
  }
  return textValue;
}

function isDigit(code: number): boolean {
  return code >= 48 && code <= 57;
}

/** {@linkcode toNumeric} for an optional value: null and undefined give null. */
export function toNumericOrNull(
  value: DecimalInput | null | undefined,
  field: string,
): string | null {
  return value === null || value === undefined ? null : toNumeric(value, field);
}

/**
 * A page of a keyset-paginated list ({@linkcode selectPage} says which rows
 * the pages of one listing are sure to show while rows are added).
 */
export interface Page<T> {
  /** The rows of this page, in list order. */
  items: T[];
  /** Cursor of the next page (pass it as `after`), or null on the last page. */
  next: string | null;
}

/** Options shared by the paginated lists. */
export interface PageOptions {
  /** Rows per page, 1 to {@linkcode MAX_PAGE_LIMIT}. @default {DEFAULT_PAGE_LIMIT} */
  limit?: number;
  /** Cursor from the previous page's `next`; absent for the first page. */
  after?: string | null;
  /** `desc`: newest (highest id) first; `asc`: oldest first. @default {"desc"} */
  direction?: "asc" | "desc";
}

/** Rows per page when the caller does not say. */
export const DEFAULT_PAGE_LIMIT = 100;
/** Most rows per page. */
export const MAX_PAGE_LIMIT = 1000;

/** Largest `bigint` id: a cursor (the last id seen) is an integer from 1 to this. */
export const MAX_ROW_ID = 9223372036854775807n;

/** Whether `text` is a row id: decimal digits of 1 to {@linkcode MAX_ROW_ID} (a `bigint`). */
export function isRowId(text: string): boolean {
  if (typeof text !== "string" || !/^\d{1,19}$/.test(text)) return false;
  const id = BigInt(text);
  return id >= 1n && id <= MAX_ROW_ID;
}

/** Validated page options: limit, cursor id (or null) and direction. */
export function pageOptions(
  options: PageOptions,
): { limit: number; after: string | null; direction: "asc" | "desc" } {
  const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
    throw new RangeError(`Page limit must be an integer from 1 to ${MAX_PAGE_LIMIT}, got ${limit}`);
  }
  const after = options.after ?? null;
  if (after !== null && !isRowId(after)) {
    throw new RangeError(`Bad page cursor ${JSON.stringify(after)}`);
  }
  const direction = options.direction ?? "desc";
  if (direction !== "asc" && direction !== "desc") {
    throw new RangeError(`Page direction must be "asc" or "desc", got ${String(direction)}`);
  }
  return { limit, after, direction };
}

/** Cuts `rows` (fetched with `limit + 1`) to a page whose cursor is the last row's id. */
export function toPage<T extends { id: string }>(rows: T[], limit: number): Page<T> {
  if (rows.length <= limit) return { items: rows, next: null };
  const items = rows.slice(0, limit);
  return { items, next: items[items.length - 1]?.id ?? null };
}

/**
 * One page of `SELECT <columns> FROM <table> WHERE <where>` in id order
 * (keyset pagination: the cursor is the last id seen). `page` is what
 * {@linkcode pageOptions} returned; `columns` defaults to `*` (it must
 * include `id`).
 *
 * Each page is read in one statement. The pages of one listing never repeat
 * a row, and list every row committed before the first page was read that
 * matches `where` when the page covering its id is read. A row committed
 * later is listed only if its id is still ahead of the cursor (below it
 * newest first, above it oldest first): ids are taken at insert, not at
 * commit, so a row whose transaction was open while a page past its id was
 * read is left behind — list again from the first page to see it. (Holding
 * such rows back by the system column `xmin` would not be sound: an UPDATE
 * gives a row a new `xmin`, and transaction ids are not taken in id order.
 * Commit-ordered pages need the inserting transaction's `pg_current_xact_id()`
 * stored with each row and the keyset on it.)
 */
export async function selectPage<T extends { id: string }>(
  sql: Queryable,
  table: string,
  where: Fragment,
  page: ReturnType<typeof pageOptions>,
  columns?: Fragment,
): Promise<Page<T>> {
  const { limit, after, direction } = page;
  if (after !== null) {
    where = direction === "desc"
      ? sql`${where} AND id < ${after}`
      : sql`${where} AND id > ${after}`;
  }
  const rows = await run(sql<T[]>`
    SELECT ${columns ?? sql`*`} FROM ${sql(table)} WHERE ${where}
    ORDER BY id ${direction === "desc" ? sql`DESC` : sql`ASC`}
    LIMIT ${limit + 1}`);
  return toPage([...rows], limit);
}

/** Runs `query`, rethrowing failures through {@linkcode mapDbError}. */
export async function run<T>(query: Promise<T>): Promise<T> {
  try {
    return await query;
  } catch (error) {
    throw mapDbError(error);
  }
}

/**
 * A `Date` that keeps microseconds, as PostgreSQL's `timestamptz` does: its
 * `toISOString()` (what postgres.js sends for a `Date` parameter) has six
 * decimals, so a list bound such as `created_at >= $1` is exact to the
 * microsecond instead of truncated to the millisecond. The `Date` methods
 * (`getTime()`) see the millisecond it falls in.
 *
 * @example
 * ```ts
 * new MicroDate(1714564800123456).toISOString(); // "2024-05-01T12:00:00.123456Z"
 * ```
 */
export class MicroDate extends Date {
  /** Microseconds within the millisecond, 0..999. */
  readonly micros: number;

  /** Creates the instant `epochUs` microseconds after the epoch. */
  constructor(epochUs: number) {
    const ms = Math.floor(epochUs / 1000);
    super(ms);
    this.micros = Math.min(999, Math.max(0, Math.round(epochUs - ms * 1000)));
  }

  /** ISO-8601 in UTC with six decimals. */
  override toISOString(): string {
    return `${super.toISOString().slice(0, -1)}${String(this.micros).padStart(3, "0")}Z`;
  }
}

/** Checks a `Date` argument. */
export function checkDate(value: Date, field: string): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new TypeError(`${field} must be a valid Date`);
  }
  return value;
}
