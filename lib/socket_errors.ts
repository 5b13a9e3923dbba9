/**
 * Socket errors a client library may leave unhandled although it handles
 * the connection's loss itself.
 *
 * postgres.js flushes small writes from a `setImmediate`; when PostgreSQL
 * has just closed the connection (a restart, a proxy cut), Deno's
 * `node:net` refuses that write ("This socket has been ended by the other
 * party", `EPIPE`) and the refusal can surface as an unhandled rejection,
 * while postgres.js goes on to fail the connection's queries and reconnect.
 * When the connection had already closed (PostgreSQL ended the backend in the
 * middle of a transaction: a restart, a failover, `pg_terminate_backend`),
 * postgres.js 3.4.9 has set its socket to null and the flush throws
 * `TypeError: Cannot read properties of null (reading 'write')` from its
 * `nextWrite` (porsager/postgres#1154, #1208; fixes #1168, #1209 unreleased).
 * `main.ts` logs such an error instead of stopping the engine for it.
 *
 * On every new connection postgres.js 3.4.9 first fetches the array types
 * with a query of its own whose promise nothing awaits (porsager/postgres#1192,
 * #1205, #1223): when the connection is lost while that query runs — refused
 * while PostgreSQL restarts, dropped by the pool's answer deadline in a
 * partition, ended by PostgreSQL — its rejection is unhandled, though the
 * connection's own statements fail as they should and postgres.js connects
 * again (and fetches the types again) for the next. `main.ts` logs that one
 * too ({@linkcode isPostgresTypeFetchError}).
 *
 * @module
 */

/**
 * The `code`s (errno names) of a failed network connection or request: no
 * server there, the connection refused, reset or timed out, a name not
 * resolved. The ClickHouse and PostgreSQL adapters take them as the service
 * being unreachable, not as its answer.
 */
export const NETWORK_ERROR_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
]);

/** The message of the `TypeError` postgres.js 3.4.9 throws when it flushes a write to a closed connection. */
export const POSTGRES_NULL_SOCKET_MESSAGE = "Cannot read properties of null (reading 'write')";

/** A stack frame in postgres.js's connection code (Deno's npm cache, `node_modules`, its cjs build). */
const POSTGRES_CONNECTION_FRAME =
  /[\\/]postgres[\\/](?:\d[^\\/]*[\\/])?(?:cjs[\\/])?src[\\/]connection\.js:\d+:\d+\)?$/;

/**
 * Whether `error` is postgres.js flushing a write to a connection that had
 * already closed: exactly a `TypeError` with
 * {@linkcode POSTGRES_NULL_SOCKET_MESSAGE} whose top stack frame is in
 * postgres.js's `src/connection.js`. The same message from anywhere else is
 * a bug and not this.
 *
 * @example
 * ```ts
 * isPostgresClosedWriteError(new TypeError("Cannot read properties of null (reading 'write')"));
 * // false: its stack is not in postgres.js
 * ```
 */
export function isPostgresClosedWriteError(error: unknown): boolean {
  if (!(error instanceof TypeError) || error.message !== POSTGRES_NULL_SOCKET_MESSAGE) return false;
  const top = (error.stack ?? "").split("\n").find((line) => /^\s+at /.test(line));
  return top !== undefined && POSTGRES_CONNECTION_FRAME.test(top.trimEnd());
}

/**
 * Whether `error` only says that a socket's peer had gone when something was
 * written to it (`EPIPE`, Node's "ended by the other party" refusal, or
 * postgres.js's write to a connection already closed, see
 * {@linkcode isPostgresClosedWriteError}): the connection is lost, which its
 * client notices and handles on its own.
 *
 * @example
 * ```ts
 * isPeerGoneError(Object.assign(new Error("This socket has been ended by the other party"), {
 *   code: "EPIPE",
 * })); // true
 * isPeerGoneError(new TypeError("x is undefined")); // false
 * ```
 */
export function isPeerGoneError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (isPostgresClosedWriteError(error)) return true;
  const code = (error as Error & { code?: unknown }).code;
  return code === "EPIPE" || error.message === "This socket has been ended by the other party";
}

/** The start of postgres.js 3.4.9's array-type query (`fetchArrayTypes` in `src/connection.js`). */
const POSTGRES_TYPE_FETCH_QUERY = /^\s*select b\.oid, b\.typarray\s/;

/**
 * Whether `error` is the failure of the array-type query postgres.js runs by
 * itself on a new connection and never awaits (see the module doc): an
 * `Error` whose `query` (which postgres.js defines on the errors of its
 * queries) is that query's text.
 *
 * @example
 * ```ts
 * const lost = Object.assign(new Error("write CONNECT_TIMEOUT 127.0.0.1:5432"), {
 *   query: "\n      select b.oid, b.typarray\n      from pg_catalog.pg_type a",
 * });
 * isPostgresTypeFetchError(lost); // true
 * isPostgresTypeFetchError(new Error("write CONNECT_TIMEOUT 127.0.0.1:5432")); // false
 * ```
 */
export function isPostgresTypeFetchError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const query = (error as Error & { query?: unknown }).query;
  return typeof query === "string" && POSTGRES_TYPE_FETCH_QUERY.test(query);
}

/**
 * What `main.ts` logs instead of stopping the engine for `error`, left
 * unhandled by a client library: a connection loss that the library handles
 * by itself ({@linkcode isPostgresTypeFetchError},
 * {@linkcode isPostgresClosedWriteError}, {@linkcode isPeerGoneError}) —
 * or null for any other error, which stops the engine.
 *
 * @example
 * ```ts
 * connectionLossMessage(Object.assign(new Error("write EPIPE"), { code: "EPIPE" }));
 * // "a write found its connection closed by the peer; its client reconnects"
 * connectionLossMessage(new TypeError("x is undefined")); // null
 * ```
 */
export function connectionLossMessage(error: unknown): string | null {
  if (isPostgresTypeFetchError(error)) {
    // The connection's statements failed as lost; the next connection fetches the types again.
    return "a new PostgreSQL connection was lost while postgres.js fetched types";
  }
  if (isPostgresClosedWriteError(error)) {
    // PostgreSQL had ended the connection (restart, failover, pg_terminate_backend): its
    // queries fail with a connection error and postgres.js reconnects.
    return "a PostgreSQL connection was lost during a write; postgres.js reconnects";
  }
  if (isPeerGoneError(error)) {
    return "a write found its connection closed by the peer; its client reconnects";
  }
  return null;
}
