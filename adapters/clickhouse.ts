/**
 * The ClickHouse adapter: a configured `@clickhouse/client`, a ping, feature
 * detection for old and new servers, and the one escaping module for values
 * placed into ClickHouse SQL.
 *
 * Works on ClickHouse 18.16 (Debian's server) and current releases. On 18.16
 * there are no query parameters (`{name:Type}`), no `JSONCompactEachRow`, no
 * `DateTime64`, no TTL, no `async_insert`, and `LowCardinality` is behind a
 * setting; `UInt64`/`Int64` come back as strings in JSON formats; `DateTime`
 * input is Unix seconds or `'YYYY-MM-DD hh:mm:ss'` (server time zone) only.
 * So values go into SQL through {@linkcode literal}, and rows through
 * `JSONEachRow` with `DateTime` as {@linkcode toUnixSeconds}.
 *
 * @module
 */

import { ClickHouseLogLevel, createClient } from "@clickhouse/client";
import type { ClickHouseClient, Logger as ClientLogger } from "@clickhouse/client";
import { type Logger, nullLogger } from "../lib/log.ts";
import { redactUrl } from "../lib/redact.ts";
import { NETWORK_ERROR_CODES } from "../lib/socket_errors.ts";

/** ClickHouse connection settings, as in the `clickhouse` section of the config. */
export interface ClickHouseOptions {
  /** HTTP(S) endpoint, e.g. `http://127.0.0.1:8123`. */
  url: string;
  /** Database the client's queries run in. @default {"default"} */
  database?: string | undefined;
  /** User name. @default {"default"} */
  user?: string | undefined;
  /** Password. @default {""} */
  password?: string | undefined;
  /** Milliseconds before a request is abandoned. @default {30000} */
  request_timeout_ms?: number | undefined;
}

/** Defaults of the optional {@linkcode ClickHouseOptions} fields. */
export const DEFAULT_CLICKHOUSE_OPTIONS = {
  database: "default",
  user: "default",
  password: "",
  request_timeout_ms: 30_000,
} as const;

/**
 * How long the client keeps an idle connection for reuse, in ms. Well under
 * the server's `keep_alive_timeout` (3 s by default, on 18.16 too): a request
 * sent on a socket the server has just closed can hang until
 * `request_timeout_ms`.
 */
export const CLICKHOUSE_IDLE_SOCKET_TTL_MS = 1_000;

/** Extra options for {@linkcode createClickHouse}. */
export interface CreateClickHouseOptions {
  /**
   * Overrides `options.database`. An "admin" client that must create the
   * application database (the migrator's) is bound to `"default"`, because
   * ClickHouse refuses every request bound to a database that does not exist.
   * @default {options.database}
   */
  database?: string;
  /** Receives the client library's own warnings and errors, at debug level. @default {nullLogger} */
  log?: Logger;
}

/** Thrown when ClickHouse cannot be reached (refused, reset, timed out), as opposed to a SQL error. */
export class ClickHouseUnavailableError extends Error {
  /** Creates the error; `cause` is the network error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ClickHouseUnavailableError";
  }
}

/**
 * Creates a ClickHouse HTTP client. The client library's log lines go to
 * `log` at debug level (its errors are also thrown to the caller).
 *
 * @example
 * ```ts
 * const ch = createClickHouse({ url: "http://127.0.0.1:8123", database: "tradewire" });
 * await pingClickHouse(ch);
 * await ch.close();
 * ```
 */
export function createClickHouse(
  options: ClickHouseOptions,
  extra: CreateClickHouseOptions = {},
): ClickHouseClient {
  const log = (extra.log ?? nullLogger).child({ component: "clickhouse-client" });
  const route = (params: { module: string; message: string; err?: Error }) =>
    log.debug(params.message, {
      module: params.module,
      ...(params.err ? { error: params.err } : {}),
    });
  class RoutedLogger implements ClientLogger {
    trace = route;
    debug = route;
    info = route;
    warn = route;
    error = route;
  }
  return createClient({
    url: options.url,
    database: extra.database ?? options.database ?? DEFAULT_CLICKHOUSE_OPTIONS.database,
    username: options.user ?? DEFAULT_CLICKHOUSE_OPTIONS.user,
    password: options.password ?? DEFAULT_CLICKHOUSE_OPTIONS.password,
    request_timeout: options.request_timeout_ms ?? DEFAULT_CLICKHOUSE_OPTIONS.request_timeout_ms,
    application: "tradewire",
    keep_alive: {
      enabled: true,
      idle_socket_ttl: CLICKHOUSE_IDLE_SOCKET_TTL_MS,
      // Checked when a socket is taken, not only by the timer a busy loop delays.
      eagerly_destroy_stale_sockets: true,
    },
    log: { LoggerClass: RoutedLogger, level: ClickHouseLogLevel.WARN },
  });
}

/** Options of calls that may be cut short. */
export interface ClickHouseCallOptions {
  /** Aborts the request; the call then rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

/** Options of {@linkcode pingClickHouse}. */
export interface PingClickHouseOptions extends ClickHouseCallOptions {
  /**
   * Run a query as the client's user instead of `GET /ping`, which ClickHouse
   * answers without authentication: a wrong user or password then fails the
   * ping. @default {false}
   */
  authenticated?: boolean | undefined;
}

/**
 * Pings ClickHouse and returns the round trip in milliseconds; throws
 * {@linkcode ClickHouseUnavailableError} when it does not answer, or, with
 * `authenticated`, refuses the client's user (`ClickHouse refused the
 * client: Code: 193 …`).
 */
export async function pingClickHouse(
  client: ClickHouseClient,
  options: PingClickHouseOptions = {},
): Promise<number> {
  const started = performance.now();
  const select = options.authenticated === true;
  const result = await client.ping(
    options.signal === undefined && !select
      ? undefined
      : { select, ...(options.signal === undefined ? {} : { abort_signal: options.signal }) },
  );
  if (!result.success) {
    options.signal?.throwIfAborted();
    const reason = result.error instanceof Error ? `: ${redactUrl(result.error.message)}` : "";
    const answered = clickHouseErrorCode(result.error) !== null;
    throw new ClickHouseUnavailableError(
      `${answered ? "ClickHouse refused the client" : "ClickHouse is unreachable"}${reason}`,
      { cause: result.error },
    );
  }
  return performance.now() - started;
}

/**
 * The numeric ClickHouse error code of a server error (e.g. 60 for an unknown
 * table), or null when `error` is not one. Old servers answer
 * `Code: 60, e.displayText() = …`, which the client does not parse; new ones
 * `Code: 60. DB::Exception: … (UNKNOWN_TABLE)`. Both are understood.
 */
export function clickHouseErrorCode(error: unknown): number | null {
  if (!(error instanceof Error)) return null;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && /^\d+$/.test(code)) return Number(code);
  const match = /\bCode: (\d+)[.,]/.exec(error.message);
  return match ? Number(match[1]) : null;
}

/** Whether `error` (or its cause) is a network failure or timeout rather than a server answer. */
export function isClickHouseUnavailable(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; depth++) {
    if (e instanceof ClickHouseUnavailableError) return true;
    if (clickHouseErrorCode(e) !== null) return false;
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && NETWORK_ERROR_CODES.has(code)) return true;
    if (/^Timeout error|socket hang up|ECONNREFUSED|ECONNRESET/i.test(e.message)) return true;
    if (e instanceof AggregateError && e.errors.some(isClickHouseUnavailable)) return true;
    e = e.cause;
  }
  return false;
}

/**
 * ClickHouse error codes of a server that refused or cut short a query for
 * want of capacity, not because the query is wrong: 159 `TIMEOUT_EXCEEDED`,
 * 160 `TOO_SLOW`, 202 `TOO_MANY_SIMULTANEOUS_QUERIES`, 203
 * `NO_FREE_CONNECTION`, 209 `SOCKET_TIMEOUT`, 210 `NETWORK_ERROR`, 241
 * `MEMORY_LIMIT_EXCEEDED`. The same query may succeed when asked again later.
 */
export const CLICKHOUSE_BUSY_CODES: ReadonlySet<number> = new Set([
  159,
  160,
  202,
  203,
  209,
  210,
  241,
]);

/**
 * Whether `error` is ClickHouse answering that it is too busy to run a query
 * now (one of {@linkcode CLICKHOUSE_BUSY_CODES}), as opposed to a query it
 * cannot run at all.
 *
 * @example
 * ```ts
 * isClickHouseBusy(new Error("Code: 202, e.displayText() = DB::Exception: Too many simultaneous queries")); // true
 * ```
 */
export function isClickHouseBusy(error: unknown): boolean {
  const code = clickHouseErrorCode(error);
  return code !== null && CLICKHOUSE_BUSY_CODES.has(code);
}

/**
 * Rethrows a network failure as {@linkcode ClickHouseUnavailableError} and
 * anything else as it is.
 */
export function rethrowClickHouse(error: unknown, what: string): never {
  if (isClickHouseUnavailable(error) && !(error instanceof ClickHouseUnavailableError)) {
    const message = error instanceof Error ? redactUrl(error.message) : String(error);
    throw new ClickHouseUnavailableError(`ClickHouse is unreachable (${what}): ${message}`, {
      cause: error,
    });
  }
  throw error;
}

/** What a ClickHouse server can do, as {@linkcode detectCapabilities} found it. */
export interface ClickHouseCapabilities {
  /** The server's `version()`, e.g. `"18.16.1"` or `"24.8.4.13"`. */
  version: string;
  /** First number of the version. */
  major: number;
  /** Second number of the version. */
  minor: number;
  /** The `DateTime64` type exists (20.1+). */
  datetime64: boolean;
  /** Column and table `TTL` clauses (19.6+). */
  ttl: boolean;
  /** Query parameters `{name:Type}` sent as `param_name` (19.11+). */
  queryParams: boolean;
  /** `LowCardinality` is usable without enabling an experimental setting. */
  lowCardinality: boolean;
}

/** Whether version `major.minor` is at least `wantMajor.wantMinor`. */
function atLeast(major: number, minor: number, wantMajor: number, wantMinor: number): boolean {
  return major > wantMajor || (major === wantMajor && minor >= wantMinor);
}

async function rows<T>(
  client: ClickHouseClient,
  query: string,
  signal: AbortSignal | undefined,
): Promise<T[]> {
  try {
    const result = await client.query({
      query,
      format: "JSONEachRow",
      ...(signal === undefined ? {} : { abort_signal: signal }),
    });
    return await result.json<T>();
  } catch (error) {
    signal?.throwIfAborted();
    throw error;
  }
}

/**
 * Detects what the server supports, by its version and by probing its
 * catalogue (`system.data_type_families`, `system.settings`,
 * `system.merge_tree_settings`) and a query with a parameter. Throws
 * {@linkcode ClickHouseUnavailableError} when the server does not answer.
 */
export async function detectCapabilities(
  client: ClickHouseClient,
  options: ClickHouseCallOptions = {},
): Promise<ClickHouseCapabilities> {
  const signal = options.signal;
  let version: string;
  try {
    const [row] = await rows<{ v: string }>(client, "SELECT version() AS v", signal);
    version = row?.v ?? "0.0";
  } catch (error) {
    rethrowClickHouse(error, "version");
  }
  const [major = 0, minor = 0] = version.split(".").map((part) => Number.parseInt(part, 10));

  const probe = async (query: string, fallback: boolean): Promise<boolean> => {
    try {
      const [row] = await rows<{ n: number | string }>(client, query, signal);
      return Number(row?.n ?? 0) > 0;
    } catch (error) {
      signal?.throwIfAborted();
      if (isClickHouseUnavailable(error)) rethrowClickHouse(error, "capabilities");
      return fallback;
    }
  };

  const datetime64 = await probe(
    "SELECT count() AS n FROM system.data_type_families WHERE name = 'DateTime64'",
    atLeast(major, minor, 20, 1),
  );
  const ttl = await probe(
    "SELECT count() AS n FROM system.merge_tree_settings WHERE name = 'merge_with_ttl_timeout'",
    atLeast(major, minor, 19, 6),
  );
  const hasLowCardinalityType = await probe(
    "SELECT count() AS n FROM system.data_type_families WHERE name = 'LowCardinality'",
    atLeast(major, minor, 19, 0),
  );
  const lowCardinalityGated = await probe(
    "SELECT count() AS n FROM system.settings " +
      "WHERE name = 'allow_experimental_low_cardinality_type' AND value IN ('0', 'false')",
    false,
  );
  let queryParams: boolean;
  try {
    const result = await client.query({
      query: "SELECT {probe:UInt8} AS n",
      query_params: { probe: 1 },
      format: "JSONEachRow",
      ...(signal === undefined ? {} : { abort_signal: signal }),
    });
    const [row] = await result.json<{ n: number }>();
    queryParams = row?.n === 1;
  } catch (error) {
    signal?.throwIfAborted();
    if (isClickHouseUnavailable(error)) rethrowClickHouse(error, "capabilities");
    queryParams = false;
  }
  return {
    version,
    major,
    minor,
    datetime64,
    ttl,
    queryParams,
    lowCardinality: hasLowCardinalityType && !lowCardinalityGated,
  };
}

/**
 * Creates database `name` if it does not exist. `client` must not be bound to
 * `name` itself while it is missing (ClickHouse refuses such requests): use a
 * client bound to `"default"`.
 */
export async function ensureClickHouseDatabase(
  client: ClickHouseClient,
  name: string,
): Promise<void> {
  try {
    await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${quoteIdentifier(name)}` });
  } catch (error) {
    rethrowClickHouse(error, "create database");
  }
}

// ---------------------------------------------------------------------------
// Escaping: the only place values are turned into ClickHouse SQL text.
// ---------------------------------------------------------------------------

const SHORT_ESCAPES: Record<string, string> = {
  "\\": "\\\\",
  "'": "\\'",
  "`": "\\`",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

// deno-lint-ignore no-control-regex
const STRING_SPECIALS = /[\\'\x00-\x1f\x7f]/g;
// deno-lint-ignore no-control-regex
const IDENTIFIER_SPECIALS = /[\\`\x00-\x1f\x7f]/g;

function escapeChars(text: string, specials: RegExp): string {
  return text.replace(specials, (ch) => {
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) return short;
    return "\\x" + ch.charCodeAt(0).toString(16).padStart(2, "0");
  });
}

function assertWellFormed(text: string, what: string): void {
  if (!text.isWellFormed()) {
    throw new TypeError(`Cannot quote ${what}: it contains a lone UTF-16 surrogate`);
  }
}

/**
 * Quotes `s` as a ClickHouse string literal: single quotes, with backslash,
 * quotes, NUL and control characters escaped, so the server reads back
 * exactly `s`. Throws a `TypeError` for strings with lone surrogates (they
 * cannot be encoded as UTF-8 exactly).
 *
 * @example
 * ```ts
 * quoteString("it's"); // "'it\\'s'"
 * ```
 */
export function quoteString(s: string): string {
  if (typeof s !== "string") throw new TypeError(`Expected a string, got ${typeof s}`);
  assertWellFormed(s, "string");
  return `'${escapeChars(s, STRING_SPECIALS)}'`;
}

/**
 * Quotes `name` as a ClickHouse identifier in backquotes (one identifier: a
 * dot inside stays part of the name). Throws a `TypeError` for an empty name.
 *
 * @example
 * ```ts
 * `SELECT * FROM ${quoteIdentifier("tw")}.${quoteIdentifier("ticks")}`;
 * ```
 */
export function quoteIdentifier(name: string): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError("An identifier must be a non-empty string");
  }
  assertWellFormed(name, "identifier");
  return "`" + escapeChars(name, IDENTIFIER_SPECIALS) + "`";
}

/** Seconds since the Unix epoch of `date`, rounded down: the `DateTime` form every server accepts. */
export function toUnixSeconds(date: Date): number {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new RangeError("Invalid Date");
  return Math.floor(ms / 1000);
}

/** A value {@linkcode literal} can write. */
export type LiteralValue =
  | string
  | number
  | bigint
  | boolean
  | null
  | undefined
  | Date
  | readonly LiteralValue[];

/**
 * Writes `value` as ClickHouse SQL: strings quoted, finite numbers and bigints
 * as digits, booleans as 1/0 (old servers have no Bool), null/undefined as
 * `NULL`, a Date as `toDateTime(<unix seconds>)` (time-zone independent;
 * sub-second parts dropped), arrays as `[…]`. Throws a `RangeError` for NaN,
 * ±Infinity and invalid dates, a `TypeError` for anything else.
 *
 * @example
 * ```ts
 * literal(["a", 1, null]); // "['a', 1, NULL]"
 * ```
 */
export function literal(value: LiteralValue): string {
  if (value === null || value === undefined) return "NULL";
  switch (typeof value) {
    case "string":
      return quoteString(value);
    case "number":
      if (!Number.isFinite(value)) throw new RangeError(`Cannot write ${value} as a literal`);
      return Object.is(value, -0) ? "0" : String(value);
    case "bigint":
      return value.toString();
    case "boolean":
      return value ? "1" : "0";
  }
  if (value instanceof Date) return `toDateTime(${toUnixSeconds(value)})`;
  if (Array.isArray(value)) return `[${value.map((item) => literal(item)).join(", ")}]`;
  throw new TypeError(`Cannot write a ${Object.prototype.toString.call(value)} as a literal`);
}
