/**
 * The PostgreSQL adapter: a configured postgres.js pool, a ping, a probe of
 * whether the server takes writes, a patient connect loop for start-up,
 * database creation, and a coarse classification of database errors.
 *
 * `NUMERIC` (OID 1700) and `BIGINT` values come back as strings, never as
 * floats: money is `NUMERIC(20,8)`.
 *
 * @module
 */

import postgres from "postgres";
import type { Sql } from "postgres";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import { redactUrl } from "../lib/redact.ts";
import { NETWORK_ERROR_CODES } from "../lib/socket_errors.ts";
import { backoffDelay } from "../lib/backoff.ts";
import { SSL_MODES, type SslMode } from "../config/schema.ts";
import { watchedSockets } from "./_pg_socket.ts";

/** PostgreSQL connection settings, as in the `postgres` section of the config. */
export interface PostgresOptions {
  /** Connection URL, e.g. `postgres://tw:secret@127.0.0.1:5432/tradewire`. */
  url: string;
  /** Most connections in the pool. @default {10} */
  pool_size?: number | undefined;
  /** Server-side `statement_timeout` of every connection, in ms; 0 disables it. @default {30000} */
  statement_timeout_ms?: number | undefined;
  /** Seconds to wait for a connection to open. @default {10} */
  connect_timeout_s?: number | undefined;
  /**
   * TLS use: `disable` (never), `allow` and `prefer` (if the server offers it,
   * unverified), `require` (always, unverified), `verify-ca` (always, certificate
   * verified), `verify-full` (always, certificate and host verified).
   * Never a downgrade of the URL's own `sslmode`: the connection uses the stricter of the
   * two ({@linkcode effectiveSslMode}).
   * @default {"prefer"}
   */
  sslmode?: LibpqSslMode | undefined;
  /** `application_name` shown in `pg_stat_activity`. @default {"tradewire"} */
  application_name?: string | undefined;
  /**
   * Seconds after which a connection is closed and replaced; null keeps it
   * for as long as it lives (a connection holding a session lock). Not a
   * config key. @default {postgres.js's 30–60 minutes}
   */
  max_lifetime_s?: number | null | undefined;
  /**
   * Milliseconds a connection PostgreSQL owes an answer (a statement sent,
   * not yet ready for the next) waits for a byte before it is dropped and its
   * statements fail as a lost connection (`ETIMEDOUT`): PostgreSQL that stops
   * answering without closing the connection (a network partition, a frozen
   * server) would else hold them for as long as TCP keeps the connection.
   * null never drops one (a session that turns its `statement_timeout` off,
   * such as the migrations'). A URL naming several hosts (postgres.js tries
   * them in turn) has none: its pool uses postgres.js's own sockets. Not a
   * config key.
   * @default {statement_timeout_ms + ANSWER_MARGIN_MS}
   */
  answer_deadline_ms?: number | null | undefined;
}

/** Added to `statement_timeout_ms` to make the default `answer_deadline_ms`, ms. */
export const ANSWER_MARGIN_MS = 5_000;

/** Defaults of the optional {@linkcode PostgresOptions} fields. */
export const DEFAULT_POSTGRES_OPTIONS = {
  pool_size: 10,
  statement_timeout_ms: 30_000,
  connect_timeout_s: 10,
  sslmode: "prefer",
  application_name: "tradewire",
} as const;

/** OID of PostgreSQL's `numeric` type. */
export const NUMERIC_OID = 1700;

/** libpq's `sslmode` values, weakest first: the configuration's `postgres.sslmode` values. */
export const LIBPQ_SSL_MODES = SSL_MODES;
/** One of {@linkcode LIBPQ_SSL_MODES}. */
export type LibpqSslMode = SslMode;

/**
 * The TLS mode a connection to `url` uses: the stricter of the URL's `sslmode`
 * parameter (any libpq value; `sslrootcert=system` counts as `verify-full`, as in
 * libpq) and `configured` (the `postgres.sslmode` config key). Neither can weaken
 * the other: `?sslmode=require` with the default `postgres.sslmode: disable` is
 * `require`, and `postgres.sslmode: verify-full` with `?sslmode=disable` is
 * `verify-full`. Throws a `TypeError` for an `sslmode` libpq does not know.
 *
 * @example
 * ```ts
 * effectiveSslMode("postgres://db/tw?sslmode=require", "disable"); // "require"
 * effectiveSslMode("postgres://db/tw", "prefer"); // "prefer"
 * ```
 */
export function effectiveSslMode(
  url: string,
  configured: NonNullable<PostgresOptions["sslmode"]>,
): LibpqSslMode {
  let params: URLSearchParams;
  try {
    params = new URL(url).searchParams;
  } catch {
    return configured;
  }
  const modes: LibpqSslMode[] = [configured];
  const fromUrl = params.get("sslmode");
  if (fromUrl !== null) {
    if (!(LIBPQ_SSL_MODES as readonly string[]).includes(fromUrl)) {
      throw new TypeError(
        `The PostgreSQL URL's sslmode must be one of ${
          LIBPQ_SSL_MODES.join(", ")
        }, got "${fromUrl}"`,
      );
    }
    modes.push(fromUrl as LibpqSslMode);
  }
  if (params.get("sslrootcert") === "system") modes.push("verify-full");
  return modes.reduce((a, b) => LIBPQ_SSL_MODES.indexOf(a) >= LIBPQ_SSL_MODES.indexOf(b) ? a : b);
}

/** TLS options passed to `tls.connect` (postgres.js's `ssl` as an object). */
interface TlsOptions {
  rejectUnauthorized: boolean;
  checkServerIdentity?: () => undefined;
  ca?: string;
  cert?: string;
  key?: string;
  passphrase?: string;
}

/**
 * Query parameters of a PostgreSQL URL that libpq reads on the client side
 * (TLS files and modes, Kerberos, channel binding): postgres.js would send
 * them to the server as run-time settings, which refuses the session
 * (`unrecognized configuration parameter "sslrootcert"`). They are taken out
 * of the URL; the TLS files become the connection's TLS options.
 */
const LIBPQ_CLIENT_PARAMS =
  /^(?:ssl.*|requiressl|gssencmode|gsslib|krbsrvname|channel_binding|passfile)$/;

/**
 * What the pool connects to `url` with: the URL without libpq's client-side
 * parameters, and its `ssl` option for the {@linkcode effectiveSslMode}.
 * `allow` (libpq: plaintext first, TLS if the server insists) becomes
 * postgres.js's `prefer` (TLS first, plaintext if refused), which reaches the
 * same servers; `verify-ca` verifies the certificate chain but not the host
 * name. As in libpq, `sslrootcert=<file>` is the CA the server's certificate
 * is verified against (with `require` too, which then verifies it as
 * `verify-ca` does; `allow` and `prefer` verify nothing), and `sslcert`,
 * `sslkey` and `sslpassword` the client's certificate — with `allow` or
 * `prefer` too, which it then makes require TLS (postgres.js cannot fall back
 * to plaintext with TLS options).
 */
export function connectionFor(
  url: string,
  configured: LibpqSslMode,
): { url: string; ssl: false | "prefer" | "require" | "verify-full" | TlsOptions } {
  const mode = effectiveSslMode(url, configured);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url, ssl: sslFor(mode, {}) };
  }
  const params = parsed.searchParams;
  const files: Partial<Record<"ca" | "cert" | "key" | "passphrase", string>> = {};
  const rootCert = params.get("sslrootcert");
  if (rootCert !== null && rootCert !== "system") files.ca = Deno.readTextFileSync(rootCert);
  const cert = params.get("sslcert");
  if (cert !== null) files.cert = Deno.readTextFileSync(cert);
  const key = params.get("sslkey");
  if (key !== null) files.key = Deno.readTextFileSync(key);
  const passphrase = params.get("sslpassword");
  if (passphrase !== null) files.passphrase = passphrase;
  for (const name of [...params.keys()]) {
    if (LIBPQ_CLIENT_PARAMS.test(name)) params.delete(name);
  }
  return { url: parsed.toString(), ssl: sslFor(mode, files) };
}

/** postgres.js's `ssl` option for `mode`, with the TLS files `files` (see {@linkcode connectionFor}). */
function sslFor(
  mode: LibpqSslMode,
  files: Partial<Record<"ca" | "cert" | "key" | "passphrase", string>>,
): false | "prefer" | "require" | "verify-full" | TlsOptions {
  const verified = files.ca !== undefined || files.cert !== undefined;
  switch (mode) {
    case "disable":
      return false;
    case "allow":
    case "prefer":
      // A client certificate is sent on a TLS connection, as libpq does; postgres.js has no
      // plaintext fallback for TLS options, so with one TLS is required (nothing verified).
      return files.cert === undefined ? "prefer" : {
        rejectUnauthorized: false,
        ...(files.cert !== undefined ? { cert: files.cert } : {}),
        ...(files.key !== undefined ? { key: files.key } : {}),
        ...(files.passphrase !== undefined ? { passphrase: files.passphrase } : {}),
      };
    case "require":
      return verified
        ? {
          rejectUnauthorized: files.ca !== undefined,
          checkServerIdentity: () => undefined,
          ...files,
        }
        : "require";
    case "verify-ca":
      return { rejectUnauthorized: true, checkServerIdentity: () => undefined, ...files };
    case "verify-full":
      return verified ? { rejectUnauthorized: true, ...files } : "verify-full";
  }
}

/**
 * Creates a postgres.js pool from `options`. Server notices go to `log` at
 * debug level; `numeric` values are returned as strings. TLS follows
 * {@linkcode effectiveSslMode}: the stricter of the URL's `sslmode` and
 * `options.sslmode`.
 *
 * @example
 * ```ts
 * const sql = createPostgres({ url: "postgres://postgres@127.0.0.1:5432/tw", pool_size: 4 });
 * const [row] = await sql`select 1.5::numeric(20,8) as price`; // row.price === "1.50000000"
 * await sql.end();
 * ```
 */
export function createPostgres(options: PostgresOptions, log: Logger = nullLogger): Sql {
  const statementTimeout = options.statement_timeout_ms ??
    DEFAULT_POSTGRES_OPTIONS.statement_timeout_ms;
  const connection = connectionFor(
    options.url,
    options.sslmode ?? DEFAULT_POSTGRES_OPTIONS.sslmode,
  );
  const answerMs = answerDeadlineMs(options);
  const sslmode = effectiveSslMode(
    options.url,
    options.sslmode ?? DEFAULT_POSTGRES_OPTIONS.sslmode,
  );
  // The watched sockets speak TLS themselves (they read the protocol to know when an answer is
  // owed, and refuse a server that will not do TLS a mode requires — postgres.js would start it
  // anyway and be hung up on, an outage to every caller). Several hosts are postgres.js's to try
  // in turn: such a URL keeps its own sockets, without a deadline.
  const socket = severalHosts(connection.url)
    ? null
    : watchedSockets({ answerDeadlineMs: answerMs, ssl: connection.ssl, sslmode });
  const sql = postgres(connection.url, {
    ...(socket === null ? {} : { socket }),
    max: options.pool_size ?? DEFAULT_POSTGRES_OPTIONS.pool_size,
    connect_timeout: options.connect_timeout_s ?? DEFAULT_POSTGRES_OPTIONS.connect_timeout_s,
    ...(options.max_lifetime_s !== undefined ? { max_lifetime: options.max_lifetime_s } : {}),
    ssl: socket === null ? connection.ssl : false,
    connection: {
      application_name: options.application_name ?? DEFAULT_POSTGRES_OPTIONS.application_name,
      statement_timeout: Math.max(0, Math.trunc(statementTimeout)),
    },
    types: {
      numeric: {
        to: NUMERIC_OID,
        from: [NUMERIC_OID],
        serialize: (value: unknown) => String(value),
        parse: (value: string) => value,
      },
    },
    onnotice: (notice) => {
      log.debug("PostgreSQL notice", {
        severity: notice.severity,
        code: notice.code,
        notice: notice.message,
      });
    },
  });
  return sql as unknown as Sql;
}

/** Whether a PostgreSQL URL names several hosts (`postgres://u@db1,db2/tw`). */
function severalHosts(url: string): boolean {
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(url)?.[1] ?? "";
  return authority.slice(authority.lastIndexOf("@") + 1).includes(",");
}

/**
 * How long a connection of a pool made from `options` waits for an answer
 * before it is dropped (ms), or null for never: `answer_deadline_ms`, else
 * `statement_timeout_ms` + {@linkcode ANSWER_MARGIN_MS} (a statement ends, its
 * lock waits included, within the server's `statement_timeout`), null when
 * that is 0.
 *
 * @example
 * ```ts
 * answerDeadlineMs({ url, statement_timeout_ms: 1000 }); // 6000
 * answerDeadlineMs({ url, statement_timeout_ms: 0 }); // null
 * ```
 */
export function answerDeadlineMs(options: PostgresOptions): number | null {
  if (options.answer_deadline_ms !== undefined) {
    const ms = options.answer_deadline_ms;
    return ms === null || ms <= 0 ? null : ms;
  }
  const statement = Math.trunc(
    options.statement_timeout_ms ?? DEFAULT_POSTGRES_OPTIONS.statement_timeout_ms,
  );
  return statement > 0 ? statement + ANSWER_MARGIN_MS : null;
}

/** Runs `select 1` and returns the round trip in milliseconds; throws when PostgreSQL does not answer. */
export async function pingPostgres(sql: Sql): Promise<number> {
  const started = performance.now();
  await sql`select 1`;
  return performance.now() - started;
}

/** What {@linkcode probePostgres} found. */
export interface PostgresProbe {
  /** Round trip in milliseconds. */
  latency_ms: number;
  /**
   * Why the server takes no writes on this connection, null when it takes
   * them: `"in recovery"` (a standby, as after a failover onto it, until it
   * is promoted) or `"transaction_read_only is on"` (the database or role set
   * `default_transaction_read_only`).
   */
  read_only: "in recovery" | "transaction_read_only is on" | null;
}

/**
 * Asks a pooled connection, in one round trip, whether PostgreSQL answers and
 * takes writes: a standby or a database set read-only answers `select 1` but
 * refuses every write. Throws when PostgreSQL does not answer.
 *
 * @example
 * ```ts
 * const { latency_ms, read_only } = await probePostgres(sql);
 * if (read_only !== null) console.warn(`PostgreSQL takes no writes: ${read_only}`);
 * ```
 */
export async function probePostgres(sql: Sql): Promise<PostgresProbe> {
  const started = performance.now();
  const [row] = await sql<{ recovery: boolean; read_only: boolean }[]>`
    select pg_is_in_recovery() as recovery,
      current_setting('transaction_read_only') = 'on' as read_only`;
  const latency_ms = performance.now() - started;
  if (row?.recovery === true) return { latency_ms, read_only: "in recovery" };
  if (row?.read_only === true) return { latency_ms, read_only: "transaction_read_only is on" };
  return { latency_ms, read_only: null };
}

/** Retry schedule of {@linkcode waitForPostgres}: exponential backoff with jitter. */
export interface PostgresRetryOptions {
  /** Delay before the second attempt, in ms. @default {250} */
  initialMs?: number;
  /** Longest delay, in ms. @default {10000} */
  maxMs?: number;
  /** Fraction 0..1 of each delay by which it is spread at random, both ways (`backoffDelay`). @default {0.2} */
  jitter?: number;
}

/** Defaults of {@linkcode PostgresRetryOptions}. */
export const DEFAULT_POSTGRES_RETRY: Required<PostgresRetryOptions> = {
  initialMs: 250,
  maxMs: 10_000,
  jitter: 0.2,
};

/** Options for {@linkcode waitForPostgres}. */
export interface WaitForPostgresOptions extends PostgresRetryOptions {
  /** Stops waiting: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Gets a warn line per failed attempt. @default {nullLogger} */
  log?: Logger;
  /** Sleeps between attempts. @default {systemClock} */
  clock?: Clock;
  /** Gives up after this many attempts (rethrowing the last error). @default {Infinity} */
  maxAttempts?: number;
}

/**
 * Delay in ms before retry `attempt` (1-based) of a database connection:
 * {@linkcode backoffDelay} of attempt − 1, i.e. `initialMs·2^(attempt-1)`
 * spread by `jitter` both ways and never above `maxMs`.
 */
export function retryDelay(attempt: number, options: Required<PostgresRetryOptions>): number {
  return backoffDelay(Math.min(Math.max(0, attempt - 1), 30), {
    initialMs: options.initialMs,
    maxMs: options.maxMs,
    jitter: Math.min(1, Math.max(0, options.jitter)),
  });
}

/**
 * Opens a pool and waits until PostgreSQL answers, retrying connection
 * failures with exponential backoff and jitter, one warn line per attempt
 * ("PostgreSQL unreachable, retrying" with attempt, delay and the redacted URL).
 * Other errors (bad password, missing database) are thrown at once. Returns
 * the connected pool; the caller ends it.
 */
export async function waitForPostgres(
  options: PostgresOptions,
  wait: WaitForPostgresOptions = {},
): Promise<Sql> {
  const log = wait.log ?? nullLogger;
  const clock = wait.clock ?? systemClock;
  const schedule: Required<PostgresRetryOptions> = {
    initialMs: wait.initialMs ?? DEFAULT_POSTGRES_RETRY.initialMs,
    maxMs: wait.maxMs ?? DEFAULT_POSTGRES_RETRY.maxMs,
    jitter: wait.jitter ?? DEFAULT_POSTGRES_RETRY.jitter,
  };
  const maxAttempts = wait.maxAttempts ?? Infinity;
  const sql = createPostgres(options, log);
  try {
    for (let attempt = 1;; attempt++) {
      wait.signal?.throwIfAborted();
      try {
        await pingPostgres(sql);
        if (attempt > 1) log.info("PostgreSQL reachable", { attempt, url: redactUrl(options.url) });
        return sql;
      } catch (error) {
        if (databaseErrorKind(error) !== "connection" || attempt >= maxAttempts) throw error;
        const delayMs = retryDelay(attempt, schedule);
        log.warn("PostgreSQL unreachable, retrying", {
          attempt,
          delay_ms: delayMs,
          url: redactUrl(options.url),
          error: error instanceof Error ? error.message : String(error),
        });
        await clock.sleep(delayMs, wait.signal);
      }
    }
  } catch (error) {
    await sql.end({ timeout: 0 });
    throw error;
  }
}

/** Options for {@linkcode ensureDatabase}. */
export interface EnsureDatabaseOptions {
  /** TLS use for the maintenance connection; the URL's stricter `sslmode` wins. @default {"prefer"} */
  sslmode?: PostgresOptions["sslmode"];
  /** Seconds to wait for the connection. @default {10} */
  connect_timeout_s?: number;
}

/**
 * Creates the database named in `url` if it does not exist, connecting to the
 * `postgres` database of the same server. Returns true when it created it.
 * Safe when several processes race: a concurrent creation counts as existing
 * (PostgreSQL reports it as 42P04, or as 23505 when both were creating at once).
 */
export async function ensureDatabase(
  url: string,
  options: EnsureDatabaseOptions = {},
): Promise<boolean> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.replace(/^\//, ""));
  if (name === "") throw new TypeError("The PostgreSQL URL names no database");
  const admin = new URL(url);
  admin.pathname = "/postgres";
  const connection = connectionFor(
    admin.toString(),
    options.sslmode ?? DEFAULT_POSTGRES_OPTIONS.sslmode,
  );
  const sql = postgres(connection.url, {
    max: 1,
    connect_timeout: options.connect_timeout_s ?? DEFAULT_POSTGRES_OPTIONS.connect_timeout_s,
    ssl: connection.ssl,
    onnotice: () => {},
  });
  try {
    const found = await sql`select 1 from pg_database where datname = ${name}`;
    if (found.length > 0) return false;
    try {
      await sql`create database ${sql(name)}`;
      return true;
    } catch (error) {
      // 42P04 duplicate_database; 23505 when a concurrent CREATE DATABASE of
      // the same name committed while this one waited on pg_database's index.
      const code = (error as { code?: unknown }).code;
      if (code === "42P04" || code === "23505") return false;
      throw error;
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Coarse classes of database errors that callers handle differently. */
export type DatabaseErrorKind =
  /** The server cannot be reached or dropped the connection: retry later. */
  | "connection"
  /** A unique or exclusion constraint: the row exists already. */
  | "conflict"
  /**
   * Another constraint (not null, foreign key, check, a deferred one failing at
   * commit) or a data exception (22xxx: out of range, bad enum label,
   * malformed JSON): the data is wrong.
   */
  | "integrity"
  /** A statement, lock or idle timeout, or a cancelled query. */
  | "timeout"
  /** A serialization failure (40001) or deadlock (40P01): retry the transaction. */
  | "serialization"
  /** Anything else. */
  | "other";

/** Error codes (errno and SQLSTATE) that mean the connection failed, besides class 08. */
const CONNECTION_CODES: ReadonlySet<string> = new Set([
  ...NETWORK_ERROR_CODES,
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
  "57P01",
  "57P02",
  "57P03",
  "53300",
]);

/**
 * The kind of one SQLSTATE or errno code; null for codes no caller handles
 * apart (e.g. 42P01, undefined table, or 40003, statement completion
 * unknown, which must not be retried blindly). `mapDbError` (db/errors.ts)
 * maps the same kinds to its domain errors. A server refusing work for now
 * ({@linkcode TEMPORARY_REFUSAL_CODES}: read-only, out of disk or memory) is
 * `"connection"`: unusable until that passes, waited for as an outage — its
 * statement took no effect (db/errors.ts `mayHaveCommitted` says so).
 */
export function kindOfCode(code: string): Exclude<DatabaseErrorKind, "other"> | null {
  if (CONNECTION_CODES.has(code) || TEMPORARY_REFUSAL_CODES.has(code) || code.startsWith("08")) {
    return "connection";
  }
  if (code === "23505" || code === "23P01") return "conflict";
  // 40002: a deferred constraint that failed at commit.
  if (code.startsWith("23") || code === "40002" || code.startsWith("22")) return "integrity";
  if (code === "40001" || code === "40P01") return "serialization";
  if (code === "57014" || code === "55P03" || code === "25P03") return "timeout";
  return null;
}

/**
 * SQLSTATEs of a server that answers but refuses work for now, whatever the
 * statement: 25006 read_only_sql_transaction (a standby, as after a failover
 * onto it; a database set `default_transaction_read_only`), 53000
 * insufficient_resources, 53100 disk_full, 53200 out_of_memory. 53300
 * too_many_connections is a connection code (the connection was refused),
 * and so are 57P01–57P03 (shutting down, starting up).
 */
export const TEMPORARY_REFUSAL_CODES: ReadonlySet<string> = new Set([
  "25006",
  "53000",
  "53100",
  "53200",
]);

/**
 * Whether PostgreSQL refused `error`'s statement for a state of its own
 * ({@linkcode TEMPORARY_REFUSAL_CODES}), looking through `cause` chains and
 * `AggregateError`s: every statement fails alike until that passes, so the
 * work waits as in an outage instead of being failed. Unlike a connection
 * lost with a statement sent, the statement took no effect. Its kind is
 * `"connection"` (`db/errors.ts` maps it to a `DbConnectionError` that
 * `mayHaveCommitted` says did not commit).
 *
 * @example
 * ```ts
 * try { await sql`insert …`; } catch (e) {
 *   if (isTemporaryRefusal(e)) { … } // PostgreSQL answered: the connection is fine
 * }
 * ```
 */
export function isTemporaryRefusal(error: unknown): boolean {
  return findByCode(error, (code) => TEMPORARY_REFUSAL_CODES.has(code) ? true : null) ?? false;
}

/**
 * Classifies a PostgreSQL or network error by its SQLSTATE or errno code,
 * looking through `cause` chains and `AggregateError`s.
 *
 * @example
 * ```ts
 * try { await sql`insert …`; } catch (e) {
 *   if (databaseErrorKind(e) === "conflict") { … }
 * }
 * ```
 */
export function databaseErrorKind(error: unknown): DatabaseErrorKind {
  return findByCode(error, kindOfCode) ?? "other";
}

/**
 * The first non-null `pick(code, error)` over `error` and the errors in its
 * `cause` chain and `AggregateError`s that carry a string `code`, depth first;
 * null when none does.
 */
export function findByCode<T>(
  error: unknown,
  pick: (code: string, error: Record<string, unknown>) => T | null,
): T | null {
  const seen = new Set<unknown>();
  const visit = (e: unknown): T | null => {
    if (e === null || typeof e !== "object" || seen.has(e)) return null;
    seen.add(e);
    const record = e as Record<string, unknown>;
    if (typeof record.code === "string") {
      const found = pick(record.code, record);
      if (found !== null) return found;
    }
    if (e instanceof AggregateError) {
      for (const inner of e.errors) {
        const found = visit(inner);
        if (found !== null) return found;
      }
    }
    return visit(record.cause);
  };
  return visit(error);
}
