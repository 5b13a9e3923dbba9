/**
 * The unit of work: a function run in one PostgreSQL transaction, all of its
 * writes committed together or none, run again from the start after a
 * serialization failure or deadlock, with errors mapped to the domain errors
 * of {@linkcode "./errors.ts"}.
 *
 * @example
 * ```ts
 * import { unitOfWork } from "./unit_of_work.ts";
 * import { insertFill, upsertPosition } from "./mod.ts";
 *
 * const applied = await unitOfWork(sql, async (tx) => {
 *   const { created } = await insertFill(tx, fill);
 *   if (created) await upsertPosition(tx, position);
 *   return created;
 * }, { isolation: "serializable" });
 * ```
 *
 * @module
 */

import type { Sql, TransactionSql } from "postgres";
import { backoffDelay, type BackoffOptions } from "../lib/backoff.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { mapDbError, SerializationError } from "./errors.ts";

/** Isolation levels of PostgreSQL (`read uncommitted` behaves as `read committed` there). */
export type IsolationLevel = "read committed" | "repeatable read" | "serializable";

/** Options for {@linkcode unitOfWork}. */
export interface UnitOfWorkOptions {
  /** Isolation level of the transaction. @default {"read committed"} */
  isolation?: IsolationLevel;
  /** Runs the transaction read-only. @default {false} */
  readOnly?: boolean;
  /**
   * Runs after the first one for a serialization failure or deadlock; 0 runs
   * once. @default {DEFAULT_UNIT_OF_WORK_RETRIES}
   */
  retries?: number;
  /** Delays between runs: exponential with jitter. @default {DEFAULT_UNIT_OF_WORK_BACKOFF} */
  backoff?: BackoffOptions;
  /** Sleeps between runs. @default {systemClock} */
  clock?: Clock;
  /** Stops retrying: a pending delay rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called before each delay with the mapped failure, the failed run (from 1) and the delay. */
  onRetry?: (error: SerializationError, attempt: number, delayMs: number) => void;
}

/** Retries of a unit of work after serialization failures and deadlocks. */
export const DEFAULT_UNIT_OF_WORK_RETRIES = 5;

/** Backoff between runs of a unit of work: short, since the conflicting transaction is usually done. */
export const DEFAULT_UNIT_OF_WORK_BACKOFF: Readonly<BackoffOptions> = {
  initialMs: 2,
  maxMs: 200,
  factor: 2,
  jitter: 0.5,
};

/**
 * Runs `fn(tx)` in one transaction and returns its result. When the
 * transaction fails with a serialization failure (40001) or deadlock (40P01)
 * — while running or at commit — it is rolled back and `fn` runs again, up to
 * `retries` more times, after a backoff delay; so `fn` must not have effects
 * outside the database that cannot be repeated. Every error is rethrown
 * through {@linkcode mapDbError}: after the last retry a
 * {@linkcode SerializationError}, otherwise e.g. a `ConflictError`. A lost
 * connection is not retried: the commit may have happened.
 *
 * @example
 * ```ts
 * import { unitOfWork } from "./unit_of_work.ts";
 *
 * const total = await unitOfWork(sql, async (tx) => {
 *   const [row] = await tx`select count(*)::int as n from orders`;
 *   return row?.n as number;
 * }, { isolation: "repeatable read", readOnly: true });
 * ```
 */
export async function unitOfWork<T>(
  sql: Sql,
  fn: (tx: TransactionSql) => Promise<T>,
  options: UnitOfWorkOptions = {},
): Promise<T> {
  const {
    isolation = "read committed",
    readOnly = false,
    retries = DEFAULT_UNIT_OF_WORK_RETRIES,
    backoff = DEFAULT_UNIT_OF_WORK_BACKOFF,
    clock = systemClock,
    signal,
    onRetry,
  } = options;
  if (!Number.isInteger(retries) || retries < 0) {
    throw new RangeError(`Unit of work retries must be a non-negative integer, got ${retries}`);
  }
  const mode = `isolation level ${isolation}${readOnly ? " read only" : ""}`;
  for (let attempt = 1;; attempt++) {
    signal?.throwIfAborted();
    try {
      // A callback returning an array would make postgres.js await each element: box the result.
      const boxed = await sql.begin(mode, async (tx) => ({ value: await fn(tx) }));
      return (boxed as { value: T }).value;
    } catch (error) {
      const mapped = mapDbError(error);
      if (!(mapped instanceof SerializationError) || attempt > retries) throw mapped;
      const delayMs = backoffDelay(attempt - 1, backoff);
      onRetry?.(mapped, attempt, delayMs);
      await clock.sleep(delayMs, signal);
    }
  }
}
