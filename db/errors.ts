/**
 * Domain errors of the data-access layer and {@linkcode mapDbError}, which
 * turns a PostgreSQL or network error into one of them by its SQLSTATE or
 * errno code. Repositories and the unit of work throw only these (or the
 * built-in `TypeError`/`RangeError` for bad arguments), so callers — the
 * execution engine, the HTTP `onError` — handle five conditions instead of
 * hundreds of codes.
 *
 * @example
 * ```ts
 * import { ConflictError, mapDbError } from "./errors.ts";
 *
 * try {
 *   await sql`insert into orders …`;
 * } catch (error) {
 *   const mapped = mapDbError(error);
 *   if (mapped instanceof ConflictError && mapped.constraint === "orders_client_order_id_key") {
 *     return await findOrderByClientOrderId(sql, clientOrderId);
 *   }
 *   throw mapped;
 * }
 * ```
 *
 * @module
 */

import { type DatabaseErrorKind, findByCode, kindOfCode } from "../adapters/postgres.ts";

/** What a {@linkcode DbError} carries from the server's error report. */
export interface DbErrorDetails {
  /** SQLSTATE (e.g. `"23505"`) or errno code (e.g. `"ECONNREFUSED"`). */
  code?: string | undefined;
  /** Name of the violated constraint or index. */
  constraint?: string | undefined;
  /** Table the error is about. */
  table?: string | undefined;
  /** Column the error is about. */
  column?: string | undefined;
  /** The server's detail line (e.g. `Key (client_order_id)=(abc) already exists.`). */
  detail?: string | undefined;
}

/** Base class of the data-access errors; `cause` is the original error when there is one. */
export class DbError extends Error {
  /** SQLSTATE or errno code of the original error, when known. */
  readonly code: string | undefined;
  /** Violated constraint, when known. */
  readonly constraint: string | undefined;
  /** Table concerned, when known. */
  readonly table: string | undefined;
  /** Column concerned, when known. */
  readonly column: string | undefined;
  /** The server's detail line, when given. */
  readonly detail: string | undefined;

  /** Creates the error. */
  constructor(message: string, details: DbErrorDetails = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = "DbError";
    this.code = details.code;
    this.constraint = details.constraint;
    this.table = details.table;
    this.column = details.column;
    this.detail = details.detail;
  }

  /** Whether running the whole transaction again may succeed. */
  get retryable(): boolean {
    return false;
  }
}

/** A row that was asked for does not exist. */
export class NotFoundError extends DbError {
  /** What was looked for, e.g. `"order"`. */
  readonly entity: string;
  /** The key it was looked for by, as text. */
  readonly key: string;

  /** Creates the error for `entity` looked up by `key`. */
  constructor(entity: string, key: string, options?: ErrorOptions) {
    super(`No ${entity} ${key}`, {}, options);
    this.name = "NotFoundError";
    this.entity = entity;
    this.key = key;
  }
}

/**
 * The write collides with existing state: a unique constraint (SQLSTATE
 * 23505, 23P01), or an optimistic check that found the row in another state
 * than expected (then `code` is undefined and `actual` says what was found).
 */
export class ConflictError extends DbError {
  /** The state found instead of the expected one, for optimistic checks. */
  readonly actual: unknown;

  /** Creates the error. */
  constructor(
    message: string,
    details: DbErrorDetails & { actual?: unknown } = {},
    options?: ErrorOptions,
  ) {
    super(message, details, options);
    this.name = "ConflictError";
    this.actual = details.actual;
  }
}

/** The data breaks a rule of the schema: a check, not-null or foreign key constraint (SQLSTATE 23xxx), or a value of the wrong form (22xxx). */
export class IntegrityError extends DbError {
  /** Creates the error. */
  constructor(message: string, details: DbErrorDetails = {}, options?: ErrorOptions) {
    super(message, details, options);
    this.name = "IntegrityError";
  }
}

/** A statement or lock timed out, or the query was cancelled (SQLSTATE 57014, 55P03, 25P03). */
export class DbTimeoutError extends DbError {
  /** Creates the error. */
  constructor(message: string, details: DbErrorDetails = {}, options?: ErrorOptions) {
    super(message, details, options);
    this.name = "DbTimeoutError";
  }
}

/**
 * The server cannot be reached or dropped the connection (SQLSTATE 08xxx,
 * 57P01–57P03, 53300; ECONNREFUSED and other network errors). A transaction
 * cut off this way may or may not have committed.
 */
export class DbConnectionError extends DbError {
  /** Creates the error. */
  constructor(message: string, details: DbErrorDetails = {}, options?: ErrorOptions) {
    super(message, details, options);
    this.name = "DbConnectionError";
  }
}

/**
 * A serialization failure (SQLSTATE 40001) or deadlock (40P01): the
 * transaction was rolled back and running it again may succeed.
 */
export class SerializationError extends DbError {
  /** True for a deadlock, false for a serialization failure. */
  readonly deadlock: boolean;

  /** Creates the error. */
  constructor(message: string, details: DbErrorDetails = {}, options?: ErrorOptions) {
    super(message, details, options);
    this.name = "SerializationError";
    this.deadlock = details.code === "40P01";
  }

  /** Always true. */
  override get retryable(): boolean {
    return true;
  }
}

type Constructor = new (
  message: string,
  details: DbErrorDetails,
  options?: ErrorOptions,
) => DbError;

/** The domain error of each kind of `databaseErrorKind` (adapters/postgres.ts). */
const CLASS_OF_KIND: Readonly<Record<Exclude<DatabaseErrorKind, "other">, Constructor>> = {
  connection: DbConnectionError,
  conflict: ConflictError,
  integrity: IntegrityError,
  serialization: SerializationError,
  timeout: DbTimeoutError,
};

/** The error class for `code`, or null when the code is not one we map. */
function classFor(code: string): Constructor | null {
  const kind = kindOfCode(code);
  return kind === null ? null : CLASS_OF_KIND[kind];
}

interface Found {
  error: Record<string, unknown>;
  cls: Constructor;
  code: string;
}

/** The first error in `error`'s `cause` chain (and `AggregateError`s) with a code we map. */
function findCoded(error: unknown): Found | null {
  return findByCode(error, (code, record) => {
    const cls = classFor(code);
    return cls === null ? null : { error: record, cls, code };
  });
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * Maps a database error to a domain error: unique violation (23505) →
 * {@linkcode ConflictError}; foreign key, check, not-null (23503, 23514,
 * 23502) and data exceptions (22xxx) → {@linkcode IntegrityError}; statement
 * timeout or cancel (57014) and lock timeout (55P03) →
 * {@linkcode DbTimeoutError}; connection failures (08xxx, server shutdown,
 * ECONNREFUSED…) → {@linkcode DbConnectionError}; serialization failure
 * (40001) and deadlock (40P01) → {@linkcode SerializationError}, which is
 * `retryable`. A {@linkcode DbError} is returned as is; anything else is
 * returned unchanged (wrapped in an `Error` when it is not one).
 *
 * @example
 * ```ts
 * import { mapDbError } from "./errors.ts";
 *
 * const error = mapDbError(Object.assign(new Error("duplicate key"), { code: "23505" }));
 * error.name; // "ConflictError"
 * ```
 */
export function mapDbError(error: unknown): Error {
  if (error instanceof DbError) return error;
  const found = findCoded(error);
  if (found === null) {
    return error instanceof Error ? error : new Error(String(error), { cause: error });
  }
  const original = found.error;
  const message = text(original.message) ?? `Database error ${found.code}`;
  return new found.cls(message, {
    code: found.code,
    constraint: text(original.constraint_name),
    table: text(original.table_name),
    column: text(original.column_name),
    detail: text(original.detail),
  }, { cause: error });
}

/** Whether `error` (mapped or not) is a serialization failure or deadlock worth retrying. */
export function isRetryable(error: unknown): boolean {
  const mapped = mapDbError(error);
  return mapped instanceof DbError && mapped.retryable;
}

/**
 * Codes of a connection that could not be opened — nothing was sent on it —
 * or of a server that refused the statement for now (read-only, out of disk
 * or memory: adapters/postgres.ts `TEMPORARY_REFUSAL_CODES`): a write that
 * failed with one of them did not happen.
 */
const NOT_CONNECTED_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "CONNECT_TIMEOUT",
  "08001", // sqlclient_unable_to_establish_sqlconnection
  "08004", // sqlserver_rejected_establishment_of_sqlconnection
  "57P03", // cannot_connect_now
  "53300", // too_many_connections
  "25006", // read_only_sql_transaction
  "53000", // insufficient_resources
  "53100", // disk_full
  "53200", // out_of_memory
]);

/**
 * Whether a write that failed with `error` (mapped by {@linkcode mapDbError})
 * may have taken effect all the same: the connection dropped once the write
 * could have been sent (its answer lost), not a connection that could not be
 * opened.
 */
export function mayHaveCommitted(error: unknown): error is DbConnectionError {
  return error instanceof DbConnectionError &&
    (error.code === undefined || !NOT_CONNECTED_CODES.has(error.code));
}
