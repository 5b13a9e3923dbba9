/**
 * The migrations actor: the first child of the root supervisor.
 *
 * `ready` resolves once PostgreSQL's migrations are applied (it waits and
 * retries with backoff while PostgreSQL is unreachable; a changed checksum or
 * a failing file rejects it, so the engine exits non-zero). ClickHouse is
 * tried during start too: when it is unreachable `ready` still resolves and
 * the actor keeps retrying in the background until ClickHouse's migrations
 * are applied, then exits normally (`done` resolves). A ClickHouse file that
 * fails or was changed is an abnormal exit. Others await
 * {@linkcode MigrationsState.clickhouseReady} before writing to ClickHouse.
 *
 * @module
 */

import type { ClickHouseClient } from "@clickhouse/client";
import type { Sql } from "postgres";
import type { ChildSpec, Running } from "./types.ts";
import { isClickHouseUnavailable } from "../adapters/clickhouse.ts";
import { databaseErrorKind, retryDelay } from "../adapters/postgres.ts";
import {
  DEFAULT_MIGRATIONS_OPTIONS,
  type Engine,
  MigrationChecksumError,
  MigrationPendingError,
  type MigrationsOptions,
  Migrator,
} from "../adapters/migrator.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";

/** {@linkcode MigrationsOptions} plus the ClickHouse database to migrate. */
export interface MigrationsActorOptions extends MigrationsOptions {
  /** The ClickHouse database the migrations create and fill. */
  database: string;
}

/** Retry schedule while a database is unreachable: exponential backoff with jitter. */
export interface MigrationsRetryOptions {
  /** First delay, in ms. @default {500} */
  initialMs?: number;
  /** Longest delay, in ms. @default {30000} */
  maxMs?: number;
  /** Fraction of each delay taken off at random (0 to 1). @default {0.2} */
  jitter?: number;
}

/** Defaults of {@linkcode MigrationsRetryOptions}. */
export const DEFAULT_MIGRATIONS_RETRY: Required<MigrationsRetryOptions> = {
  initialMs: 500,
  maxMs: 30_000,
  jitter: 0.2,
};

/**
 * Longest delay between attempts at ClickHouse's migrations while it is
 * unreachable, in ms: market data waits for its tables, so they are created
 * within this of ClickHouse coming back (a ping every 5 s costs nothing).
 */
export const DEFAULT_CLICKHOUSE_RETRY_MAX_MS = 5_000;

/** What {@linkcode migrationsActor} needs. */
export interface MigrationsActorDeps {
  /** The PostgreSQL pool. */
  sql: Sql;
  /**
   * A ClickHouse client bound to `"default"` (it creates `options.database`);
   * null when ClickHouse is not configured.
   */
  clickhouse: ClickHouseClient | null;
  /** Migration settings and the ClickHouse database name. */
  options: MigrationsActorOptions;
  /** Where its lines go. @default {nullLogger} */
  log?: Logger;
  /** Sleeps between retries. @default {systemClock} */
  clock?: Clock;
  /** State to report into (shared with health). @default {a new MigrationsState} */
  state?: MigrationsState;
  /** Retry schedule while a database is unreachable. @default {DEFAULT_MIGRATIONS_RETRY} */
  retry?: MigrationsRetryOptions;
  /**
   * Longest wait, in ms, for the first ClickHouse attempt before `ready`
   * resolves anyway (a black-holed server answers only after the request
   * timeout); the attempt goes on in the background.
   * @default {DEFAULT_CLICKHOUSE_START_WAIT_MS}
   */
  clickhouseStartWaitMs?: number;
}

/** Default of {@linkcode MigrationsActorDeps.clickhouseStartWaitMs}. */
export const DEFAULT_CLICKHOUSE_START_WAIT_MS = 5000;

/** PostgreSQL's migration status. */
export type PostgresMigrationStatus = "pending" | "applied" | "failed";
/** ClickHouse's migration status. */
export type ClickHouseMigrationStatus = "pending" | "applied" | "unavailable" | "failed";

/** A plain copy of {@linkcode MigrationsState}, for health output. */
export interface MigrationsSnapshot {
  /** PostgreSQL's status. */
  postgres: PostgresMigrationStatus;
  /** ClickHouse's status. */
  clickhouse: ClickHouseMigrationStatus;
  /** Migrations applied in PostgreSQL (all, not only by this process). */
  postgres_applied: number;
  /** Migrations applied in ClickHouse. */
  clickhouse_applied: number;
  /** Message of the last error, if any. */
  last_error: string | null;
}

/**
 * Where the migrations stand, for health and for code that must wait for
 * ClickHouse's schema. One instance outlives restarts of the actor.
 *
 * @example
 * ```ts
 * const state = new MigrationsState();
 * const spec = migrationsActor({ sql, clickhouse, options, state });
 * await state.clickhouseReady; // ClickHouse tables exist from here on
 * ```
 */
export class MigrationsState {
  /** PostgreSQL's status. */
  postgres: PostgresMigrationStatus = "pending";
  /** ClickHouse's status. */
  clickhouse: ClickHouseMigrationStatus = "pending";
  /** Migrations applied in PostgreSQL. */
  postgresApplied = 0;
  /** Migrations applied in ClickHouse. */
  clickhouseApplied = 0;
  /** Message of the last error, if any. */
  lastError: string | null = null;
  /** Resolves once ClickHouse's migrations are applied; never rejects. */
  readonly clickhouseReady: Promise<void>;
  #resolveClickHouse!: () => void;

  /** Creates a state with both databases pending. */
  constructor() {
    this.clickhouseReady = new Promise((resolve) => this.#resolveClickHouse = resolve);
  }

  /** Marks ClickHouse's migrations applied and resolves {@linkcode clickhouseReady}. */
  markClickHouseApplied(count: number): void {
    this.clickhouse = "applied";
    this.clickhouseApplied = count;
    this.#resolveClickHouse();
  }

  /** A plain copy for health output. */
  snapshot(): MigrationsSnapshot {
    return {
      postgres: this.postgres,
      clickhouse: this.clickhouse,
      postgres_applied: this.postgresApplied,
      clickhouse_applied: this.clickhouseApplied,
      last_error: this.lastError,
    };
  }
}

/** A {@linkcode ChildSpec} that also exposes its {@linkcode MigrationsState}. */
export interface MigrationsChildSpec extends ChildSpec {
  /** The state it reports into. */
  readonly state: MigrationsState;
}

function deferred<T>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (reason: unknown) => void;
} {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // The supervisor may not await both; an unobserved rejection must not crash the process.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Creates the migrations child: `restart: "transient"`, stats kind "worker".
 * See the module doc for what `ready` and `done` mean.
 */
export function migrationsActor(deps: MigrationsActorDeps): MigrationsChildSpec {
  const log = (deps.log ?? nullLogger).child({ actor: "migrations" });
  const clock = deps.clock ?? systemClock;
  const state = deps.state ?? new MigrationsState();
  const retry: Required<MigrationsRetryOptions> = { ...DEFAULT_MIGRATIONS_RETRY, ...deps.retry };
  const applyOnStart = deps.options.apply_on_start ?? DEFAULT_MIGRATIONS_OPTIONS.apply_on_start;
  const migrator = new Migrator(deps.sql, {
    dir: deps.options.dir ?? DEFAULT_MIGRATIONS_OPTIONS.dir,
    lockKey: deps.options.lock_key ?? DEFAULT_MIGRATIONS_OPTIONS.lock_key,
    clickhouse: deps.clickhouse
      ? { client: deps.clickhouse, database: deps.options.database }
      : null,
    log,
  });

  /** Applies (or, without apply_on_start, checks) one database's migrations; returns the applied count. */
  async function migrate(engine: Engine, signal: AbortSignal): Promise<number> {
    if (applyOnStart) {
      const run = await migrator.up(undefined, { only: engine, signal });
      return run[engine]?.total ?? 0;
    }
    const status = (await migrator.status({ only: engine }))[engine];
    const changed = status?.applied.filter((m) => m.checksumMismatch).map((m) => m.file ?? "?");
    if (changed && changed.length > 0) throw new MigrationChecksumError(engine, changed);
    const pending = status?.pending ?? [];
    if (pending.length > 0) {
      throw new MigrationPendingError(
        `${pending.length} ${engine} migration(s) pending (${
          pending.map((m) => m.file).join(", ")
        })` +
          " and apply_on_start is off; run `deno task migrate up`",
      );
    }
    return status?.applied.length ?? 0;
  }

  async function postgresPhase(signal: AbortSignal): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        state.postgresApplied = await migrate("postgres", signal);
        state.postgres = "applied";
        state.lastError = null;
        log.info("PostgreSQL migrations applied", { applied: state.postgresApplied });
        return;
      } catch (error) {
        if (signal.aborted || databaseErrorKind(error) !== "connection") throw error;
        const delayMs = retryDelay(attempt, retry);
        state.lastError = message(error);
        log.warn("PostgreSQL unreachable, retrying", {
          attempt,
          delay_ms: delayMs,
          error: message(error),
        });
        await clock.sleep(delayMs, signal);
      }
    }
  }

  function start(signal: AbortSignal): Running {
    const ready = deferred<void>();
    const done = deferred<void>();
    let isReady = false;
    const becomeReady = () => {
      if (!isReady) {
        isReady = true;
        ready.resolve();
      }
    };
    const stopped = () => {
      if (!isReady) ready.reject(signal.reason);
      done.resolve();
    };

    (async () => {
      try {
        await postgresPhase(signal);
      } catch (error) {
        if (signal.aborted) return stopped();
        state.postgres = "failed";
        state.lastError = message(error);
        log.error("PostgreSQL migrations failed", { error });
        ready.reject(error);
        done.reject(error);
        return;
      }

      if (!deps.clickhouse) {
        state.clickhouse = "unavailable";
        log.warn("ClickHouse is not configured; its migrations are skipped");
        becomeReady();
        done.resolve();
        return;
      }

      // The engine does not wait long for ClickHouse: past this, ready resolves
      // and the first attempt goes on in the background.
      const startWait = new AbortController();
      const endStartWait = () => {
        startWait.abort();
        signal.removeEventListener("abort", endStartWait);
      };
      signal.addEventListener("abort", endStartWait, { once: true });
      const waitMs = deps.clickhouseStartWaitMs ?? DEFAULT_CLICKHOUSE_START_WAIT_MS;
      clock.sleep(waitMs, startWait.signal).then(() => {
        if (isReady) return;
        log.warn("ClickHouse migrations are slow; going on without them", { waited_ms: waitMs });
        becomeReady();
      }, () => {});

      for (let attempt = 1;; attempt++) {
        try {
          const count = await migrate("clickhouse", signal).finally(endStartWait);
          state.markClickHouseApplied(count);
          state.lastError = null;
          log.info("ClickHouse migrations applied", { applied: count });
          becomeReady();
          done.resolve();
          return;
        } catch (error) {
          if (signal.aborted) return stopped();
          if (!isClickHouseUnavailable(error) && databaseErrorKind(error) !== "connection") {
            state.clickhouse = "failed";
            state.lastError = message(error);
            log.error("ClickHouse migrations failed", { error });
            if (!isReady) ready.reject(error);
            done.reject(error);
            return;
          }
          state.clickhouse = "unavailable";
          state.lastError = message(error);
          const delayMs = retryDelay(attempt, {
            ...retry,
            maxMs: Math.min(retry.maxMs, DEFAULT_CLICKHOUSE_RETRY_MAX_MS),
          });
          log.warn("ClickHouse unreachable, retrying its migrations in the background", {
            attempt,
            delay_ms: delayMs,
            error: message(error),
          });
          becomeReady();
          try {
            await clock.sleep(delayMs, signal);
          } catch {
            return stopped();
          }
        }
      }
    })().catch((error) => {
      // Only reached on a bug above; still settle both promises.
      if (!isReady) ready.reject(error);
      done.reject(error);
    });

    return { ready: ready.promise, done: done.promise, stats: () => ({ kind: "worker" }) };
  }

  return { name: "migrations", restart: "transient", state, start };
}
