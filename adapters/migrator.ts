/**
 * Schema migrations for PostgreSQL and ClickHouse.
 *
 * Files live under `<dir>/postgres/NNNN_name.sql` (each with its rollback
 * `NNNN_name.down.sql`, required) and `<dir>/clickhouse/NNNN_name.sql` (down
 * file optional). A missing `<dir>`, or one holding neither subfolder, is a
 * {@linkcode MigrationFileError} (a wrong working directory or `migrations.dir`
 * is not "nothing to apply"); a missing subfolder alone means none for that
 * database, with a warning. A file's checksum is the SHA-256 (hex) of its up
 * file's bytes (line endings included); an applied file whose checksum changed
 * stops every run with {@linkcode MigrationChecksumError} before anything is
 * applied.
 *
 * PostgreSQL: each file runs in its own transaction together with its
 * `schema_migrations` row, while a session advisory lock (`lockKey`) is held
 * on one reserved connection, so engines racing apply each file exactly once.
 * Every wait on that connection is bounded ({@linkcode MigrationTimeouts}): a
 * connection PostgreSQL ended (a restart, a failover, `pg_terminate_backend`)
 * fails the run with a {@linkcode MigrationConnectionError} instead of
 * leaving it pending, and is not returned to the pool.
 * ClickHouse has neither transactions nor locks: its part runs while a second
 * advisory lock (`lockKey + 1`) is held in PostgreSQL, its files are split
 * into statements, and `-- @if <capability>` blocks pick the variant the
 * server supports (see `migrations/clickhouse/README.md`).
 *
 * Nothing here knows about actors; `actors/migrations.ts` drives it at start,
 * `scripts/migrate.ts` from the command line.
 *
 * @module
 */

import type { ClickHouseClient } from "@clickhouse/client";
import type { PendingQuery, ReservedSql, Row, Sql } from "postgres";
import { type Logger, nullLogger } from "../lib/log.ts";
import {
  type ClickHouseCapabilities,
  clickHouseErrorCode,
  ClickHouseUnavailableError,
  detectCapabilities,
  isClickHouseUnavailable,
  literal,
  pingClickHouse,
  quoteIdentifier,
  quoteString,
  rethrowClickHouse,
} from "./clickhouse.ts";
import { sha256Hex } from "../lib/hash.ts";
import { databaseErrorKind, isTemporaryRefusal } from "./postgres.ts";

export { ClickHouseUnavailableError } from "./clickhouse.ts";

/** The databases migrations are kept for. */
export type Engine = "postgres" | "clickhouse";

/** Migration settings, as in the `migrations` section of the config. */
export interface MigrationsOptions {
  /** Folder holding `postgres/` and `clickhouse/`. @default {"migrations"} */
  dir?: string | undefined;
  /** Whether the engine applies pending migrations when it starts. @default {true} */
  apply_on_start?: boolean | undefined;
  /** PostgreSQL advisory lock key; ClickHouse runs use `lock_key + 1`. @default {7411001} */
  lock_key?: number | undefined;
}

/** Defaults of {@linkcode MigrationsOptions}. */
export const DEFAULT_MIGRATIONS_OPTIONS = {
  dir: "migrations",
  apply_on_start: true,
  lock_key: 7_411_001,
} as const;

/** Longest wait for the PostgreSQL advisory lock while another run holds it, in ms (10 min). */
export const DEFAULT_MIGRATION_LOCK_TIMEOUT_MS = 600_000;
/** Longest run of one PostgreSQL migration file, in ms (1 h). */
export const DEFAULT_MIGRATION_STATEMENT_TIMEOUT_MS = 3_600_000;
/**
 * Longest wait for PostgreSQL to answer a bookkeeping statement on the
 * migration connection (setup, begin, commit, rollback, `schema_migrations`,
 * unlock), or a cancel sent after one of the limits above, in ms (10 s).
 */
export const DEFAULT_MIGRATION_ANSWER_TIMEOUT_MS = 10_000;

/** Name of the bookkeeping table in each database. */
export const SCHEMA_MIGRATIONS_TABLE = "schema_migrations";

/** Conditions usable in `-- @if` lines of ClickHouse migrations. */
export const CLICKHOUSE_CONDITIONS = ["datetime64", "ttl", "lowcardinality"] as const;
/** One of {@linkcode CLICKHOUSE_CONDITIONS}. */
export type ClickHouseCondition = typeof CLICKHOUSE_CONDITIONS[number];

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Base class of the migration errors a caller may catch. */
export class MigrationError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationError";
  }
}

/**
 * A migration file is misnamed, duplicated, lacks its down file or has bad
 * `@if` blocks; or the migrations folder is missing (`file` is then its path).
 */
export class MigrationFileError extends MigrationError {
  /** The file at fault. */
  readonly file: string;
  /** Creates the error for `file`. */
  constructor(file: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationFileError";
    this.file = file;
  }
}

/** An applied migration file was changed afterwards; nothing was applied. */
export class MigrationChecksumError extends MigrationError {
  /** The first changed file. */
  readonly file: string;
  /** Every changed file. */
  readonly files: string[];
  /** Creates the error for the changed `files` (at least one). */
  constructor(engine: Engine, files: string[], options?: ErrorOptions) {
    const [first = "?"] = files;
    const more = files.length > 1 ? ` (and ${files.slice(1).join(", ")})` : "";
    super(
      `${engineLabel(engine)} migration ${first}${more} was changed after it was applied; ` +
        "restore the file or write a new migration",
      options,
    );
    this.name = "MigrationChecksumError";
    this.file = first;
    this.files = files;
  }
}

/** A migration file failed to apply or revert; `cause` is the database error. */
export class MigrationApplyError extends MigrationError {
  /** The file that failed. */
  readonly file: string;
  /** Creates the error for `file`. */
  constructor(file: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationApplyError";
    this.file = file;
  }
}

/** Migrations are pending but were not to be applied (`apply_on_start: false`). */
export class MigrationPendingError extends MigrationError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationPendingError";
  }
}

/**
 * PostgreSQL stopped answering on the migration's reserved connection (it was
 * ended, or a bounded wait ran out with no answer to a cancel): the run failed
 * and may be retried. `code` is `ETIMEDOUT`, which `databaseErrorKind` counts
 * as a connection error.
 */
export class MigrationConnectionError extends MigrationError {
  /** Errno-style code, for `databaseErrorKind`. */
  readonly code = "ETIMEDOUT";
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationConnectionError";
  }
}

function engineLabel(engine: Engine): string {
  return engine === "postgres" ? "PostgreSQL" : "ClickHouse";
}

// ---------------------------------------------------------------------------
// Files: loading, conditional blocks, statement splitting (pure)
// ---------------------------------------------------------------------------

/** One migration as loaded from disk. */
export interface MigrationFile {
  /** Database it belongs to. */
  engine: Engine;
  /** Its number (`NNNN`). */
  version: number;
  /** The name after the number, e.g. `engine_runs`. */
  name: string;
  /** File name of the up file, e.g. `0001_engine_runs.sql`. */
  file: string;
  /** SHA-256 (hex) of the up file's bytes. */
  checksum: string;
  /** Text of the up file. */
  up: string;
  /** Text of the down file, or null when there is none. */
  down: string | null;
  /** File name of the down file, or null. */
  downFile: string | null;
}

const FILE_PATTERN = /^(\d{4,9})_([A-Za-z0-9][A-Za-z0-9_]*?)(\.down)?\.sql$/;

export { sha256Hex };

/** Options of {@linkcode loadMigrations}. */
export interface LoadMigrationsOptions {
  /** Called with the folder's path when `<dir>/<engine>/` is missing but `<dir>` is not. */
  onMissingFolder?: ((folder: string) => void) | undefined;
}

/**
 * Loads and sorts the migrations of `engine` from `<dir>/<engine>/`. A missing
 * `<dir>/<engine>/` means no migrations (`onMissingFolder` is told) when `<dir>`
 * holds the other database's folder. Throws {@linkcode MigrationFileError}
 * when `<dir>` does not exist or holds neither `postgres/` nor `clickhouse/`
 * (a wrong `migrations.dir` or working directory must not pass for "nothing to
 * apply"), and for a `.sql` file with a bad name, a duplicate version, a down
 * file without its up file, a PostgreSQL migration without its down file, or
 * (ClickHouse) bad `@if` blocks. Files not ending in `.sql` (a README) are
 * ignored.
 */
export async function loadMigrations(
  dir: string,
  engine: Engine,
  options: LoadMigrationsOptions = {},
): Promise<MigrationFile[]> {
  const base = dir.replace(/\/+$/, "");
  const folder = `${base}/${engine}`;
  const ups = new Map<number, { name: string; file: string }>();
  const downs = new Map<number, { name: string; file: string }>();
  try {
    for await (const entry of Deno.readDir(folder)) {
      if (!entry.isFile || entry.name.startsWith(".") || !entry.name.endsWith(".sql")) continue;
      const match = FILE_PATTERN.exec(entry.name);
      if (!match) {
        throw new MigrationFileError(
          entry.name,
          `Bad migration file name ${folder}/${entry.name}: expected NNNN_name.sql or ` +
            "NNNN_name.down.sql (digits, underscore, letters, digits and underscores)",
        );
      }
      const version = Number(match[1]);
      if (version < 1 || version > 2_147_483_647) {
        throw new MigrationFileError(
          entry.name,
          `Migration version of ${entry.name} is out of range`,
        );
      }
      const target = match[3] ? downs : ups;
      const previous = target.get(version);
      if (previous) {
        throw new MigrationFileError(
          entry.name,
          `Duplicate ${engineLabel(engine)} migration version ${match[1]}: ` +
            `${previous.file} and ${entry.name}`,
        );
      }
      target.set(version, { name: match[2] ?? "", file: entry.name });
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    await checkMigrationsDir(dir, base);
    options.onMissingFolder?.(folder);
    return [];
  }
  for (const [version, down] of downs) {
    const up = ups.get(version);
    if (!up || up.name !== down.name) {
      throw new MigrationFileError(
        down.file,
        `Down file ${folder}/${down.file} has no up file ${
          down.file.replace(/\.down\.sql$/, ".sql")
        }`,
      );
    }
  }
  const migrations: MigrationFile[] = [];
  for (const [version, up] of [...ups].sort(([a], [b]) => a - b)) {
    const down = downs.get(version) ?? null;
    if (engine === "postgres" && !down) {
      throw new MigrationFileError(
        up.file,
        `PostgreSQL migration ${folder}/${up.file} has no down file ` +
          up.file.replace(/\.sql$/, ".down.sql"),
      );
    }
    const bytes = await Deno.readFile(`${folder}/${up.file}`);
    const text = new TextDecoder().decode(bytes);
    const downText = down ? await Deno.readTextFile(`${folder}/${down.file}`) : null;
    if (engine === "clickhouse") {
      try {
        checkConditionals(text);
        if (downText !== null) checkConditionals(downText);
      } catch (error) {
        throw new MigrationFileError(up.file, `${folder}/${up.file}: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
    migrations.push({
      engine,
      version,
      name: up.name,
      file: up.file,
      checksum: await sha256Hex(bytes),
      up: text,
      down: downText,
      downFile: down?.file ?? null,
    });
  }
  return migrations;
}

/**
 * Throws {@linkcode MigrationFileError} when the migrations folder `dir` (`base`
 * without trailing slashes) is missing or holds neither engine's folder.
 */
async function checkMigrationsDir(dir: string, base: string): Promise<void> {
  const root = base === "" ? "/" : base;
  const relative = dir.startsWith("/") ? "" : ` (relative to the working directory ${Deno.cwd()})`;
  if (!(await isDirectory(root))) {
    throw new MigrationFileError(
      root,
      `Migrations folder ${root} does not exist${relative}: check migrations.dir`,
    );
  }
  const found = await Promise.all(
    (["postgres", "clickhouse"] as const).map((engine) => isDirectory(`${base}/${engine}`)),
  );
  if (!found.includes(true)) {
    throw new MigrationFileError(
      root,
      `Migrations folder ${root}${relative} holds neither postgres/ nor clickhouse/: ` +
        "check migrations.dir",
    );
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

const DIRECTIVE = /^\s*--\s*@(\w+)\b(.*)$/;

type ConditionTest = (caps: ClickHouseCapabilities) => boolean;

function parseCondition(text: string, line: number): ConditionTest {
  const match = /^\s*(!|not\s+)?\s*([a-z0-9_]+)\s*$/i.exec(text);
  const name = match?.[2]?.toLowerCase();
  if (!match || !CLICKHOUSE_CONDITIONS.includes(name as ClickHouseCondition)) {
    throw new SyntaxError(
      `line ${line}: unknown condition "${text.trim()}" (use ${
        CLICKHOUSE_CONDITIONS.join(", ")
      }, ` +
        "optionally negated with !)",
    );
  }
  const negate = match[1] !== undefined;
  const read = (caps: ClickHouseCapabilities) =>
    name === "datetime64" ? caps.datetime64 : name === "ttl" ? caps.ttl : caps.lowCardinality;
  return (caps) => read(caps) !== negate;
}

/**
 * Keeps the lines of a ClickHouse migration that apply to a server with
 * `caps`: `-- @if <cond>` … [`-- @else` …] `-- @end` blocks (nestable; a
 * condition may be negated with `!`). Lines may end in LF or CRLF. Directive
 * lines and dropped lines become empty lines, so line numbers stay. Throws a
 * `SyntaxError` for unknown conditions or unbalanced blocks.
 *
 * @example
 * ```ts
 * renderConditionals("-- @if ttl\nTTL d + 1\n-- @end", caps);
 * ```
 */
export function renderConditionals(text: string, caps: ClickHouseCapabilities): string {
  const stack: Array<{ active: boolean; parentActive: boolean; sawElse: boolean }> = [];
  const active = () => stack.every((frame) => frame.active);
  const out: string[] = [];
  text.split("\n").forEach((line, index) => {
    // A CRLF file (git's core.autocrlf, a Windows editor) leaves "\r" on each line.
    const directive = DIRECTIVE.exec(line.endsWith("\r") ? line.slice(0, -1) : line);
    const keyword = directive?.[1]?.toLowerCase();
    const lineNo = index + 1;
    if (keyword === "if") {
      const test = parseCondition(directive?.[2] ?? "", lineNo);
      const parentActive = active();
      stack.push({ active: test(caps), parentActive, sawElse: false });
      out.push("");
    } else if (keyword === "else") {
      const frame = stack.at(-1);
      if (!frame || frame.sawElse) throw new SyntaxError(`line ${lineNo}: @else without @if`);
      frame.active = !frame.active;
      frame.sawElse = true;
      out.push("");
    } else if (keyword === "end") {
      if (!stack.pop()) throw new SyntaxError(`line ${lineNo}: @end without @if`);
      out.push("");
    } else if (keyword !== undefined) {
      throw new SyntaxError(`line ${lineNo}: unknown directive @${directive?.[1]}`);
    } else {
      out.push(active() ? line : "");
    }
  });
  if (stack.length > 0) throw new SyntaxError("@if without @end");
  return out.join("\n");
}

const ALL_ON: ClickHouseCapabilities = {
  version: "0",
  major: 0,
  minor: 0,
  datetime64: true,
  ttl: true,
  queryParams: true,
  lowCardinality: true,
};

/** Throws a `SyntaxError` when `text` has unknown conditions or unbalanced `@if` blocks. */
export function checkConditionals(text: string): void {
  renderConditionals(text, ALL_ON);
}

/**
 * Splits SQL text into statements on `;` outside quotes (`'…'`, `"…"`,
 * `` `…` ``, with backslash escapes) and comments (`-- …`, `/* … *\/`).
 * Statements holding only comments and whitespace are dropped; the rest are
 * trimmed and returned without their `;`.
 *
 * @example
 * ```ts
 * splitStatements("CREATE TABLE a (s String) ENGINE = Log;\nSELECT ';';");
 * // ["CREATE TABLE a (s String) ENGINE = Log", "SELECT ';'"]
 * ```
 */
export function splitStatements(text: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let meaningful = false;
  const flush = (end: number) => {
    const statement = text.slice(start, end).trim();
    if (meaningful && statement !== "") statements.push(statement);
    meaningful = false;
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const next = text[i + 1];
    if (ch === "-" && next === "-") {
      const end = text.indexOf("\n", i);
      i = end === -1 ? text.length : end + 1;
    } else if (ch === "/" && next === "*") {
      const end = text.indexOf("*/", i + 2);
      if (end === -1) throw new SyntaxError("Unterminated /* comment");
      i = end + 2;
    } else if (ch === "'" || ch === '"' || ch === "`") {
      meaningful = true;
      let j = i + 1;
      for (; j < text.length; j++) {
        if (text[j] === "\\") j++;
        else if (text[j] === ch) break;
      }
      if (j >= text.length) throw new SyntaxError(`Unterminated ${ch} quote`);
      i = j + 1;
    } else if (ch === ";") {
      flush(i);
      start = i + 1;
      i++;
    } else {
      if (ch !== undefined && !/\s/.test(ch)) meaningful = true;
      i++;
    }
  }
  flush(text.length);
  return statements;
}

// ---------------------------------------------------------------------------
// Status and results
// ---------------------------------------------------------------------------

/** A migration recorded as applied in a database. */
export interface AppliedMigration {
  /** Its number. */
  version: number;
  /** Its name as recorded. */
  name: string;
  /** Its up file name, or null when the file is not on disk (applied by a newer release). */
  file: string | null;
  /** Checksum recorded when it was applied. */
  checksum: string;
  /** True when the file on disk no longer has that checksum. */
  checksumMismatch: boolean;
  /** When it was applied. */
  appliedAt: Date;
  /** How long it took, in ms. */
  executionMs: number;
}

/** A migration on disk not yet applied. */
export interface PendingMigration {
  /** Its number. */
  version: number;
  /** Its name. */
  name: string;
  /** Its up file name. */
  file: string;
  /** Its checksum. */
  checksum: string;
}

/** The migrations of one database. */
export interface EngineStatus {
  /** The database. */
  engine: Engine;
  /** Applied migrations, by version. */
  applied: AppliedMigration[];
  /** Pending migrations, by version. */
  pending: PendingMigration[];
}

/** What {@linkcode Migrator.status} found, per database asked for. */
export interface MigrationStatus {
  /** PostgreSQL's migrations. */
  postgres?: EngineStatus;
  /** ClickHouse's migrations. */
  clickhouse?: EngineStatus;
}

/** One migration applied or reverted by a run. */
export interface MigrationStep {
  /** Its number. */
  version: number;
  /** Its name. */
  name: string;
  /** How long it took, in ms. */
  executionMs: number;
}

/** What one run did to one database. */
export interface EngineRun {
  /** The database. */
  engine: Engine;
  /** Migrations applied, in order. */
  applied: MigrationStep[];
  /** Migrations reverted, in order. */
  reverted: MigrationStep[];
  /** How many migrations are applied after the run. */
  total: number;
}

/** What {@linkcode Migrator.up} or {@linkcode Migrator.down} did, per database. */
export interface MigrationRun {
  /** PostgreSQL's part. */
  postgres?: EngineRun;
  /** ClickHouse's part. */
  clickhouse?: EngineRun;
}

/** Where ClickHouse migrations go. */
export interface ClickHouseTarget {
  /**
   * The client. It must be bound to `"default"` (or to `database` once that
   * exists): ClickHouse refuses requests bound to a missing database, and
   * statements run in a session after `USE <database>`.
   */
  client: ClickHouseClient;
  /** The database migrations create and fill. */
  database: string;
}

/** Options for {@linkcode Migrator}. */
export interface MigratorOptions {
  /** Folder holding `postgres/` and `clickhouse/`. @default {"migrations"} */
  dir?: string;
  /** PostgreSQL advisory lock key; the ClickHouse part uses `lockKey + 1`. @default {7411001} */
  lockKey?: number | bigint;
  /** ClickHouse to migrate; null or absent means none is configured. @default {null} */
  clickhouse?: ClickHouseTarget | null;
  /** Gets a line per applied or reverted file. @default {nullLogger} */
  log?: Logger;
  /** Bounds of the waits on the PostgreSQL migration connection. @default {the DEFAULT_MIGRATION_*_TIMEOUT_MS constants} */
  timeouts?: MigrationTimeouts;
}

/**
 * How long a run waits on its reserved PostgreSQL connection. Past `lockMs`
 * or `statementMs` the waiting statement is cancelled; a statement (or a
 * cancel) that gets no answer within `answerMs` means the connection is lost:
 * the run fails with a {@linkcode MigrationConnectionError}.
 */
export interface MigrationTimeouts {
  /** Longest wait for the advisory lock, in ms. @default {DEFAULT_MIGRATION_LOCK_TIMEOUT_MS} */
  lockMs?: number;
  /** Longest run of one migration file, in ms. @default {DEFAULT_MIGRATION_STATEMENT_TIMEOUT_MS} */
  statementMs?: number;
  /** Longest wait for a bookkeeping statement or a cancel's effect, in ms. @default {DEFAULT_MIGRATION_ANSWER_TIMEOUT_MS} */
  answerMs?: number;
}

/** Options of a run. */
export interface RunOptions {
  /** Only this database. @default {both (ClickHouse only when configured)} */
  only?: Engine;
  /** Stops the run between files, and while waiting for the lock. */
  signal?: AbortSignal;
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
  appliedAt: Date;
  executionMs: number;
}

/**
 * Settles like `promise`, or rejects with the signal's reason as soon as it
 * aborts; a value arriving after that goes to `abandon` (e.g. to release it).
 */
function abortable<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  abandon?: (value: T) => void,
): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.then((value) => abandon?.(value), () => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = () => {
      settled = true;
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then((value) => {
      signal.removeEventListener("abort", onAbort);
      if (settled) abandon?.(value);
      else resolve(value);
    }, (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
  });
}

// ---------------------------------------------------------------------------
// The migrator
// ---------------------------------------------------------------------------

/** A cancellable query, or any promise. */
type Waitable<T> = PromiseLike<T> & { cancel?: () => unknown };

/**
 * The reserved connection of one PostgreSQL run, with every wait on it
 * bounded. `lost` is set once the connection is known or presumed gone: the
 * run then neither rolls back nor unlocks on it (the server does both when it
 * ends the session) and does not return it to the pool (postgres.js has moved
 * a closed connection to its closed ones; releasing it would put it back in
 * the open ones, where queries written to it never settle).
 */
class MigrationConnection {
  lost = false;
  /** True when the loss was presumed from a wait with no answer: the session may live on. */
  unanswered = false;

  constructor(
    readonly sql: ReservedSql,
    readonly timeouts: Required<MigrationTimeouts>,
  ) {}

  /**
   * Awaits `query`. Past `waitMs`, or once `signal` aborts, it is cancelled
   * (when it can be) and given `answerMs` more; with no answer by then the
   * connection is presumed lost. A connection error marks the connection lost
   * and is rethrown. After an abort the signal's reason is thrown, whatever
   * the query's outcome: the caller rolls back (or, the connection presumed
   * lost, ends its session).
   */
  async wait<T>(
    query: Waitable<T>,
    what: string,
    waitMs = this.timeouts.answerMs,
    signal?: AbortSignal,
  ): Promise<T> {
    const pending = Promise.resolve(query);
    let cancelled = false;
    let aborted = false;
    let outcome: Settled<T>;
    try {
      outcome = await within(pending, waitMs, signal);
      if (!outcome.answered) {
        aborted = outcome.aborted;
        if (query.cancel) {
          cancelled = true;
          try {
            query.cancel();
          } catch { /* the cancel request failed: the wait below decides */ }
          outcome = await within(pending, this.timeouts.answerMs);
        }
      }
    } catch (error) {
      // A server refusing work for now (read-only) answered: the connection is not lost.
      if (databaseErrorKind(error) === "connection" && !isTemporaryRefusal(error)) this.lost = true;
      if (aborted) throw signal!.reason;
      if (cancelled) {
        throw new MigrationError(`${what} took longer than ${waitMs} ms and was cancelled`, {
          cause: error,
        });
      }
      throw error;
    }
    if (outcome.answered) {
      if (aborted) throw signal!.reason;
      return outcome.value;
    }
    this.lost = true;
    this.unanswered = true;
    pending.catch(() => {});
    if (aborted) throw signal!.reason;
    const total = waitMs + (query.cancel ? this.timeouts.answerMs : 0);
    throw new MigrationConnectionError(
      `PostgreSQL did not answer ${what} within ${total} ms; ` +
        "the migration connection is presumed lost",
    );
  }
}

/** How a bounded wait ended: with the promise's value, or unanswered (timed out or aborted). */
type Settled<T> = { answered: true; value: T } | { answered: false; aborted: boolean };

/**
 * Settles with `promise`'s value, or unanswered after `ms` or once `signal`
 * aborts (`aborted` says which); rejects with its error.
 */
async function within<T>(
  promise: Promise<T>,
  ms: number,
  signal?: AbortSignal,
): Promise<Settled<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise.then((value) => ({ answered: true as const, value })),
      new Promise<Settled<T>>((resolve) => {
        timer = setTimeout(() => resolve({ answered: false, aborted: false }), ms);
        if (signal === undefined) return;
        onAbort = () => resolve({ answered: false, aborted: true });
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Applies, reverts and reports migrations of PostgreSQL and (optionally)
 * ClickHouse.
 *
 * @example
 * ```ts
 * const migrator = new Migrator(sql, { dir: "migrations", clickhouse: { client, database: "tw" } });
 * await migrator.up();            // everything pending
 * await migrator.down(-1, { only: "postgres" }); // one step back
 * ```
 */
export class Migrator {
  readonly #sql: Sql;
  readonly #dir: string;
  readonly #lockKey: bigint;
  readonly #clickhouse: ClickHouseTarget | null;
  readonly #log: Logger;
  readonly #timeouts: Required<MigrationTimeouts>;
  readonly #warnedMissing = new Set<Engine>();

  /** Creates a migrator over the pool `sql`. */
  constructor(sql: Sql, options: MigratorOptions = {}) {
    this.#sql = sql;
    this.#dir = options.dir ?? DEFAULT_MIGRATIONS_OPTIONS.dir;
    this.#lockKey = BigInt(options.lockKey ?? DEFAULT_MIGRATIONS_OPTIONS.lock_key);
    this.#clickhouse = options.clickhouse ?? null;
    this.#log = options.log ?? nullLogger;
    this.#timeouts = {
      lockMs: options.timeouts?.lockMs ?? DEFAULT_MIGRATION_LOCK_TIMEOUT_MS,
      statementMs: options.timeouts?.statementMs ?? DEFAULT_MIGRATION_STATEMENT_TIMEOUT_MS,
      answerMs: options.timeouts?.answerMs ?? DEFAULT_MIGRATION_ANSWER_TIMEOUT_MS,
    };
  }

  /** Whether a ClickHouse target was given. */
  get hasClickHouse(): boolean {
    return this.#clickhouse !== null;
  }

  /**
   * Loads the migration files of `engine` (see {@linkcode loadMigrations});
   * warns once when its folder is missing.
   */
  load(engine: Engine): Promise<MigrationFile[]> {
    return loadMigrations(this.#dir, engine, {
      onMissingFolder: (folder) => {
        if (this.#warnedMissing.has(engine)) return;
        this.#warnedMissing.add(engine);
        this.#log.warn(`No ${engineLabel(engine)} migrations folder; none to apply`, { folder });
      },
    });
  }

  /**
   * Lists applied and pending migrations of each database asked for, with
   * changed checksums flagged. Creates nothing. Throws
   * {@linkcode ClickHouseUnavailableError} when ClickHouse is asked for and
   * absent or unreachable.
   */
  async status(options: Pick<RunOptions, "only"> = {}): Promise<MigrationStatus> {
    const status: MigrationStatus = {};
    for (const engine of this.#engines(options.only)) {
      const files = await this.load(engine);
      const applied = engine === "postgres"
        ? await this.#pgApplied(this.#sql, false)
        : await this.#chApplied(this.#requireClickHouse(), false, undefined);
      status[engine] = describe(engine, files, applied);
    }
    return status;
  }

  /**
   * Applies pending migrations with a version up to `target` (all when
   * omitted), PostgreSQL first. Checks every applied checksum before applying
   * anything.
   */
  async up(target?: number, options: RunOptions = {}): Promise<MigrationRun> {
    if (target !== undefined && (!Number.isInteger(target) || target < 0)) {
      throw new RangeError(`Target version must be a non-negative integer, got ${target}`);
    }
    const run: MigrationRun = {};
    for (const engine of this.#engines(options.only)) {
      run[engine] = engine === "postgres"
        ? await this.#pgUp(target ?? Infinity, options.signal)
        : await this.#chUp(target ?? Infinity, options.signal);
    }
    return run;
  }

  /**
   * Reverts applied migrations, newest first: those above version `target`,
   * or the newest one when `target` is -1. Each down file runs in its own
   * transaction (PostgreSQL) and its row is deleted. Everything needed (down
   * files, checksums) is checked before anything is reverted.
   */
  async down(target: number, options: RunOptions = {}): Promise<MigrationRun> {
    if (!Number.isInteger(target) || target < -1) {
      throw new RangeError(`Target version must be an integer >= -1, got ${target}`);
    }
    const run: MigrationRun = {};
    for (const engine of this.#engines(options.only)) {
      run[engine] = engine === "postgres"
        ? await this.#pgDown(target, options.signal)
        : await this.#chDown(target, options.signal);
    }
    return run;
  }

  #engines(only: Engine | undefined): Engine[] {
    if (only === "postgres") return ["postgres"];
    if (only === "clickhouse") return ["clickhouse"];
    return this.#clickhouse ? ["postgres", "clickhouse"] : ["postgres"];
  }

  #requireClickHouse(): ClickHouseTarget {
    if (!this.#clickhouse) throw new ClickHouseUnavailableError("ClickHouse is not configured");
    return this.#clickhouse;
  }

  // -- PostgreSQL -----------------------------------------------------------

  async #withLock<T>(
    key: bigint,
    signal: AbortSignal | undefined,
    fn: (conn: MigrationConnection) => Promise<T>,
  ): Promise<T> {
    signal?.throwIfAborted();
    // A plain query first: it fails cleanly when the server is down, whereas a
    // failed reserve() leaves postgres.js reconnecting in the background.
    await abortable(Promise.resolve(this.#sql`select 1`), signal);
    const reserved = await abortable(this.#sql.reserve(), signal, (late) => late.release());
    const conn = new MigrationConnection(reserved, this.#timeouts);
    let locked = false;
    let pid: number | undefined;
    try {
      // Waiting for the lock and long migrations must not hit statement_timeout.
      const [row] = await conn.wait(
        reserved<{ pid: number }[]>`select pg_backend_pid() as pid,
          set_config('statement_timeout', '0', false)`,
        "the migration session's setup",
      );
      pid = row?.pid;
      const lock = reserved`select pg_advisory_lock(${key.toString()}::bigint)`;
      const onAbort = () => lock.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        await conn.wait(
          lock,
          `the wait for the migration lock ${key} (held by another run)`,
          this.#timeouts.lockMs,
        );
      } catch (error) {
        signal?.throwIfAborted();
        throw error;
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
      locked = true;
      return await fn(conn);
    } finally {
      try {
        if (!conn.lost && locked) {
          await conn.wait(
            reserved`select pg_advisory_unlock(${key.toString()}::bigint)`,
            "the lock's release",
          );
        }
        if (!conn.lost) await conn.wait(reserved`reset statement_timeout`, "a reset");
      } catch {
        // The connection is gone; the server released the lock with it.
      }
      if (!conn.lost) reserved.release();
      else await this.#abandon(conn, pid);
    }
  }

  /**
   * Gives up a lost migration connection: it is not returned to the pool, and
   * when it was only presumed lost (no answer) its session is ended, so that
   * it holds the lock no longer.
   */
  async #abandon(conn: MigrationConnection, pid: number | undefined): Promise<void> {
    this.#log.warn("PostgreSQL migration connection lost; not returned to the pool", { pid });
    if (!conn.unanswered || pid === undefined) return;
    const ended = this.#sql`select pg_terminate_backend(${pid})`;
    await within(Promise.resolve(ended), this.#timeouts.answerMs).catch(() => {});
  }

  async #pgApplied(sql: Sql, create: boolean): Promise<AppliedRow[]> {
    if (create) {
      await sql.unsafe(
        `create table if not exists ${SCHEMA_MIGRATIONS_TABLE} (
          version integer primary key,
          name text not null,
          checksum text not null,
          applied_at timestamptz not null default now(),
          execution_ms integer not null
        )`,
      );
    } else {
      const [row] =
        await sql`select to_regclass(${SCHEMA_MIGRATIONS_TABLE}) is not null as present`;
      if (!row?.present) return [];
    }
    const rows = await sql<
      { version: number; name: string; checksum: string; applied_at: Date; execution_ms: number }[]
    >`select version, name, checksum, applied_at, execution_ms
      from ${sql(SCHEMA_MIGRATIONS_TABLE)} order by version`;
    return rows.map((row) => ({
      version: row.version,
      name: row.name,
      checksum: row.checksum,
      appliedAt: row.applied_at,
      executionMs: row.execution_ms,
    }));
  }

  async #pgUp(target: number, signal: AbortSignal | undefined): Promise<EngineRun> {
    const files = await this.load("postgres");
    const run: EngineRun = { engine: "postgres", applied: [], reverted: [], total: 0 };
    await this.#withLock(this.#lockKey, signal, async (conn) => {
      const applied = await conn.wait(this.#pgApplied(conn.sql, true), "the applied migrations");
      verifyChecksums("postgres", files, applied, this.#log);
      run.total = applied.length;
      const done = new Set(applied.map((row) => row.version));
      for (const file of files) {
        if (done.has(file.version) || file.version > target) continue;
        signal?.throwIfAborted();
        const executionMs = await this.#pgRun(
          conn,
          file,
          "up",
          (ms) =>
            conn.sql`insert into ${conn.sql(SCHEMA_MIGRATIONS_TABLE)}
            (version, name, checksum, execution_ms)
            values (${file.version}, ${file.name}, ${file.checksum}, ${ms})`,
          signal,
        );
        run.applied.push({ version: file.version, name: file.name, executionMs });
        run.total++;
      }
    });
    return run;
  }

  async #pgDown(target: number, signal: AbortSignal | undefined): Promise<EngineRun> {
    const files = await this.load("postgres");
    const run: EngineRun = { engine: "postgres", applied: [], reverted: [], total: 0 };
    await this.#withLock(this.#lockKey, signal, async (conn) => {
      const applied = await conn.wait(this.#pgApplied(conn.sql, true), "the applied migrations");
      verifyChecksums("postgres", files, applied, this.#log);
      run.total = applied.length;
      for (const file of revertPlan("postgres", files, applied, target)) {
        signal?.throwIfAborted();
        const executionMs = await this.#pgRun(
          conn,
          file,
          "down",
          () =>
            conn.sql`delete from ${
              conn.sql(SCHEMA_MIGRATIONS_TABLE)
            } where version = ${file.version}`,
          signal,
        );
        run.reverted.push({ version: file.version, name: file.name, executionMs });
        run.total--;
      }
    });
    return run;
  }

  /**
   * Runs one file's up or down text and `record` in one transaction; returns
   * its duration. When `signal` aborts while the text runs, the statement is
   * cancelled and the transaction rolled back, and the signal's reason thrown
   * (a cancel PostgreSQL does not answer within `answerMs` leaves the
   * connection presumed lost: {@linkcode Migrator} ends its session).
   */
  async #pgRun(
    conn: MigrationConnection,
    file: MigrationFile,
    direction: "up" | "down",
    record: (executionMs: number) => PendingQuery<Row[]>,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    const text = direction === "up" ? file.up : file.down ?? "";
    const label = direction === "up" ? file.file : file.downFile ?? file.file;
    let executionMs: number;
    try {
      await conn.wait(conn.sql.unsafe("begin"), `the begin of ${label}`);
      const started = performance.now();
      if (text.trim() !== "") {
        await conn.wait(conn.sql.unsafe(text), label, this.#timeouts.statementMs, signal);
      }
      executionMs = Math.round(performance.now() - started);
      await conn.wait(record(executionMs), `the schema_migrations row of ${label}`);
      await conn.wait(conn.sql.unsafe("commit"), `the commit of ${label}`);
    } catch (error) {
      if (!conn.lost) {
        await conn.wait(conn.sql.unsafe("rollback"), `the rollback of ${label}`).catch(() => {});
      }
      if (signal?.aborted && error === signal.reason) throw error;
      const message = error instanceof Error ? error.message : String(error);
      throw new MigrationApplyError(label, `PostgreSQL migration ${label} failed: ${message}`, {
        cause: error,
      });
    }
    this.#log.info(direction === "up" ? "Applied migration" : "Reverted migration", {
      engine: "postgres",
      version: file.version,
      file: label,
      execution_ms: executionMs,
    });
    return executionMs;
  }

  // -- ClickHouse -----------------------------------------------------------

  #chTable(target: ClickHouseTarget): string {
    return `${quoteIdentifier(target.database)}.${quoteIdentifier(SCHEMA_MIGRATIONS_TABLE)}`;
  }

  async #chQuery<T>(
    target: ClickHouseTarget,
    query: string,
    what: string,
    options: { session?: string | undefined; signal?: AbortSignal | undefined } = {},
  ): Promise<T[]> {
    try {
      const result = await target.client.query({
        query,
        format: "JSONEachRow",
        ...(options.session === undefined ? {} : { session_id: options.session }),
        ...(options.signal === undefined ? {} : { abort_signal: options.signal }),
      });
      return await result.json<T>();
    } catch (error) {
      options.signal?.throwIfAborted();
      rethrowClickHouse(error, what);
    }
  }

  async #chCommand(
    target: ClickHouseTarget,
    query: string,
    what: string,
    options: { session?: string | undefined; signal?: AbortSignal | undefined } = {},
  ): Promise<void> {
    try {
      await target.client.command({
        query,
        ...(options.session === undefined ? {} : { session_id: options.session }),
        ...(options.signal === undefined ? {} : { abort_signal: options.signal }),
      });
    } catch (error) {
      options.signal?.throwIfAborted();
      rethrowClickHouse(error, what);
    }
  }

  async #chApplied(
    target: ClickHouseTarget,
    create: boolean,
    signal: AbortSignal | undefined,
  ): Promise<AppliedRow[]> {
    if (!create) await pingClickHouse(target.client, { signal });
    const table = this.#chTable(target);
    if (create) {
      try {
        await this.#chCommand(
          target,
          `CREATE DATABASE IF NOT EXISTS ${quoteIdentifier(target.database)}`,
          "create database",
          { signal },
        );
      } catch (error) {
        if (clickHouseErrorCode(error) === 81) {
          throw new MigrationError(
            `ClickHouse database ${target.database} does not exist and the client is bound to it; ` +
              'give the migrator a client bound to "default"',
            { cause: error },
          );
        }
        throw error;
      }
      await this.#chCommand(
        target,
        `CREATE TABLE IF NOT EXISTS ${table} (
          version UInt32,
          name String,
          checksum String,
          applied_at DateTime,
          execution_ms UInt32,
          applied UInt8,
          seq UInt64
        ) ENGINE = ReplacingMergeTree(seq) ORDER BY version`,
        "create schema_migrations",
        { signal },
      );
    } else {
      const [row] = await this.#chQuery<{ n: number | string }>(
        target,
        `SELECT count() AS n FROM system.tables WHERE database = ${quoteString(target.database)} ` +
          `AND name = ${quoteString(SCHEMA_MIGRATIONS_TABLE)}`,
        "status",
        { signal },
      );
      if (Number(row?.n ?? 0) === 0) return [];
    }
    // Rows are appended (applied = 1 when applied, 0 when reverted); the
    // newest row of a version (highest seq) tells its state.
    const rows = await this.#chQuery<{
      version: number;
      m_name: string;
      m_checksum: string;
      m_applied_at: number;
      m_execution_ms: number;
      m_applied: number;
    }>(
      target,
      `SELECT version, argMax(name, seq) AS m_name, argMax(checksum, seq) AS m_checksum,
        toUInt32(argMax(applied_at, seq)) AS m_applied_at,
        argMax(execution_ms, seq) AS m_execution_ms, argMax(applied, seq) AS m_applied
      FROM ${table} GROUP BY version ORDER BY version`,
      "read schema_migrations",
      { signal },
    );
    return rows.filter((row) => Number(row.m_applied) === 1).map((row) => ({
      version: Number(row.version),
      name: row.m_name,
      checksum: row.m_checksum,
      appliedAt: new Date(Number(row.m_applied_at) * 1000),
      executionMs: Number(row.m_execution_ms),
    }));
  }

  /** Runs the ClickHouse part under the second advisory lock, with a session using the database. */
  async #chSession<T>(
    signal: AbortSignal | undefined,
    fn: (ctx: {
      files: MigrationFile[];
      applied: AppliedRow[];
      record: (file: MigrationFile, applied: boolean, executionMs: number) => Promise<void>;
      runFile: (file: MigrationFile, direction: "up" | "down") => Promise<number>;
    }) => Promise<T>,
  ): Promise<T> {
    const target = this.#requireClickHouse();
    const files = await this.load("clickhouse");
    await pingClickHouse(target.client, { signal });
    return await this.#withLock(this.#lockKey + 1n, signal, async () => {
      const applied = await this.#chApplied(target, true, signal);
      verifyChecksums("clickhouse", files, applied, this.#log);
      const caps = await detectCapabilities(target.client, { signal });
      const session = crypto.randomUUID();
      await this.#chCommand(target, `USE ${quoteIdentifier(target.database)}`, "use", {
        session,
        signal,
      });
      const [current] = await this.#chQuery<{ db: string }>(
        target,
        "SELECT currentDatabase() AS db",
        "use",
        { session, signal },
      );
      if (current?.db !== target.database) {
        throw new MigrationError(
          `The ClickHouse client is bound to database ${current?.db}, not ${target.database}; ` +
            'give the migrator a client bound to "default"',
        );
      }
      const [seqRow] = await this.#chQuery<{ s: string | number }>(
        target,
        `SELECT max(seq) AS s FROM ${this.#chTable(target)}`,
        "read schema_migrations",
        { signal },
      );
      let seq = BigInt(seqRow?.s ?? 0);
      const record = async (file: MigrationFile, isApplied: boolean, executionMs: number) => {
        seq += 1n;
        const values = [
          literal(file.version),
          literal(file.name),
          literal(file.checksum),
          literal(new Date()),
          literal(executionMs),
          literal(isApplied ? 1 : 0),
          literal(seq),
        ].join(", ");
        await this.#chCommand(
          target,
          `INSERT INTO ${this.#chTable(target)} ` +
            `(version, name, checksum, applied_at, execution_ms, applied, seq) VALUES (${values})`,
          "record migration",
        );
      };
      const runFile = (file: MigrationFile, direction: "up" | "down") =>
        this.#chRunFile(target, session, caps, file, direction, signal);
      return await fn({ files, applied, record, runFile });
    });
  }

  async #chRunFile(
    target: ClickHouseTarget,
    session: string,
    caps: ClickHouseCapabilities,
    file: MigrationFile,
    direction: "up" | "down",
    signal: AbortSignal | undefined,
  ): Promise<number> {
    const label = direction === "up" ? file.file : file.downFile ?? file.file;
    const text = direction === "up" ? file.up : file.down ?? "";
    const statements = splitStatements(renderConditionals(text, caps));
    const started = performance.now();
    for (const [index, statement] of statements.entries()) {
      try {
        await target.client.command({
          query: statement,
          session_id: session,
          ...(signal === undefined ? {} : { abort_signal: signal }),
        });
      } catch (error) {
        signal?.throwIfAborted();
        if (isClickHouseUnavailable(error)) rethrowClickHouse(error, label);
        const message = error instanceof Error ? error.message.trim() : String(error);
        throw new MigrationApplyError(
          label,
          `ClickHouse migration ${label} failed at statement ${index + 1} of ` +
            `${statements.length}: ${message}`,
          { cause: error },
        );
      }
    }
    const executionMs = Math.round(performance.now() - started);
    this.#log.info(direction === "up" ? "Applied migration" : "Reverted migration", {
      engine: "clickhouse",
      version: file.version,
      file: label,
      statements: statements.length,
      execution_ms: executionMs,
      server: caps.version,
    });
    return executionMs;
  }

  #chUp(target: number, signal: AbortSignal | undefined): Promise<EngineRun> {
    return this.#chSession(signal, async ({ files, applied, record, runFile }) => {
      const run: EngineRun = {
        engine: "clickhouse",
        applied: [],
        reverted: [],
        total: applied.length,
      };
      const done = new Set(applied.map((row) => row.version));
      for (const file of files) {
        if (done.has(file.version) || file.version > target) continue;
        signal?.throwIfAborted();
        const executionMs = await runFile(file, "up");
        await record(file, true, executionMs);
        run.applied.push({ version: file.version, name: file.name, executionMs });
        run.total++;
      }
      return run;
    });
  }

  #chDown(target: number, signal: AbortSignal | undefined): Promise<EngineRun> {
    return this.#chSession(signal, async ({ files, applied, record, runFile }) => {
      const run: EngineRun = {
        engine: "clickhouse",
        applied: [],
        reverted: [],
        total: applied.length,
      };
      for (const file of revertPlan("clickhouse", files, applied, target)) {
        signal?.throwIfAborted();
        const executionMs = await runFile(file, "down");
        await record(file, false, executionMs);
        run.reverted.push({ version: file.version, name: file.name, executionMs });
        run.total--;
      }
      return run;
    });
  }
}

/** Throws {@linkcode MigrationChecksumError} when an applied file changed; warns about applied files not on disk. */
function verifyChecksums(
  engine: Engine,
  files: MigrationFile[],
  applied: AppliedRow[],
  log: Logger,
): void {
  const byVersion = new Map(files.map((file) => [file.version, file]));
  const changed: string[] = [];
  for (const row of applied) {
    const file = byVersion.get(row.version);
    if (!file) {
      log.warn("Applied migration has no file", {
        engine,
        version: row.version,
        name: row.name,
      });
    } else if (file.checksum !== row.checksum) {
      changed.push(file.file);
    }
  }
  if (changed.length > 0) throw new MigrationChecksumError(engine, changed);
}

/** The files to revert to get back to `target` (-1: one step), newest first; checks each can be. */
function revertPlan(
  engine: Engine,
  files: MigrationFile[],
  applied: AppliedRow[],
  target: number,
): MigrationFile[] {
  const newestFirst = [...applied].sort((a, b) => b.version - a.version);
  const rows = target === -1
    ? newestFirst.slice(0, 1)
    : newestFirst.filter((r) => r.version > target);
  const byVersion = new Map(files.map((file) => [file.version, file]));
  return rows.map((row) => {
    const file = byVersion.get(row.version);
    if (!file) {
      throw new MigrationFileError(
        `${String(row.version).padStart(4, "0")}_${row.name}.sql`,
        `${engineLabel(engine)} migration ${row.version} (${row.name}) is applied but its file ` +
          "is missing; cannot revert it",
      );
    }
    if (file.down === null) {
      throw new MigrationFileError(
        file.file,
        `${engineLabel(engine)} migration ${file.file} has no down file; cannot revert it`,
      );
    }
    return file;
  });
}

function describe(engine: Engine, files: MigrationFile[], applied: AppliedRow[]): EngineStatus {
  const byVersion = new Map(files.map((file) => [file.version, file]));
  const done = new Set(applied.map((row) => row.version));
  return {
    engine,
    applied: applied.map((row) => {
      const file = byVersion.get(row.version);
      return {
        version: row.version,
        name: row.name,
        file: file?.file ?? null,
        checksum: row.checksum,
        checksumMismatch: file !== undefined && file.checksum !== row.checksum,
        appliedAt: row.appliedAt,
        executionMs: row.executionMs,
      };
    }),
    pending: files.filter((file) => !done.has(file.version)).map((file) => ({
      version: file.version,
      name: file.name,
      file: file.file,
      checksum: file.checksum,
    })),
  };
}
