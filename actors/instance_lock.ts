/**
 * The instance lock: one engine per database. Open orders, risk room and the
 * kill switch live in the running engine's memory, so two engines trading on
 * the same PostgreSQL database would each allow the full risk limits and one
 * would not see the other's kill switch. The first child of the root
 * supervisor therefore takes a PostgreSQL session advisory lock
 * (`migrations.lock_key + 2`) on a connection of its own and holds it for the
 * engine's life; nothing else starts until it has it.
 *
 * - At start, a lock held by another engine is waited for up to `waitMs` (a
 *   previous engine's connection may still be closing after a crash), then
 *   the start fails with an {@linkcode InstanceLockError} naming the holder
 *   (its address, application name and since when).
 * - While PostgreSQL cannot be reached it waits with backoff, as the
 *   migrations do.
 * - Every `checkMs` it checks that its connection still holds the lock. A
 *   connection that was lost (PostgreSQL restarted) loses the lock with it:
 *   it is taken again at once, or, when another engine took it meanwhile,
 *   the child fails — its supervisor stops what was started after it
 *   (market data, trading, HTTP), so this engine stops trading.
 * - On stop it releases the lock and closes its connection.
 *
 * @example
 * ```ts
 * const lock = instanceLockActor({
 *   postgres: config.postgres,
 *   key: config.migrations.lock_key + INSTANCE_LOCK_KEY_OFFSET,
 *   log,
 * });
 * // the root supervisor's first child
 * ```
 *
 * @module
 */

import type { Sql } from "postgres";
import type { ChildSpec, Running } from "./types.ts";
import {
  createPostgres,
  databaseErrorKind,
  type PostgresOptions,
  retryDelay,
} from "../adapters/postgres.ts";
import { DEFAULT_MIGRATIONS_RETRY } from "./migrations.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";

/** The child's name in the supervision tree. */
export const INSTANCE_LOCK_NAME = "instance_lock";
/** The lock's key is `migrations.lock_key` plus this (migrations use `+0` and `+1`). */
export const INSTANCE_LOCK_KEY_OFFSET = 2;
/** How long a start waits for a lock held by another engine, in ms. */
export const DEFAULT_INSTANCE_LOCK_WAIT_MS = 10_000;
/** How often the held lock is checked, in ms. */
export const DEFAULT_INSTANCE_LOCK_CHECK_MS = 1_000;
/** Pause between attempts to take a lock another engine holds, in ms. */
const TAKE_RETRY_MS = 250;
/** How long a backend of ours left behind is given to end once told to, in ms. */
const ORPHAN_END_WAIT_MS = 5_000;

/** A PostgreSQL backend (a session), as `pg_stat_activity` shows it. */
interface Backend {
  pid: number;
  application_name: string;
  addr: string | null;
  since: Date;
}

function describe(backend: Backend): string {
  return `backend ${backend.pid}, application "${backend.application_name}", from ${
    backend.addr ?? "a local socket"
  }, connected since ${backend.since.toISOString()}`;
}

/** The same session: pid and start (a pid alone may have been reused). */
function sameBackend(a: Backend, b: Backend): boolean {
  return a.pid === b.pid && a.since.getTime() === b.since.getTime();
}

/** Another engine holds (or took) this database's instance lock. */
export class InstanceLockError extends Error {
  /** Who holds it, as PostgreSQL knows them; null when it could not say. */
  readonly holder: string | null;

  /** Creates the error. */
  constructor(message: string, holder: string | null, options?: ErrorOptions) {
    super(message, options);
    this.name = "InstanceLockError";
    this.holder = holder;
  }
}

/** What {@linkcode instanceLockActor} needs. */
export interface InstanceLockDeps {
  /** Where to connect; the lock gets a connection of its own. */
  postgres: PostgresOptions;
  /** The advisory lock key: `migrations.lock_key + INSTANCE_LOCK_KEY_OFFSET`. */
  key: number;
  /** @default {nullLogger} */
  log?: Logger | undefined;
  /** @default {systemClock} */
  clock?: Clock | undefined;
  /** How long a start waits for a lock held by another engine. @default {DEFAULT_INSTANCE_LOCK_WAIT_MS} */
  waitMs?: number | undefined;
  /** How often the held lock is checked. @default {DEFAULT_INSTANCE_LOCK_CHECK_MS} */
  checkMs?: number | undefined;
}

/** Creates the instance-lock child (permanent). See the module doc. */
export function instanceLockActor(deps: InstanceLockDeps): ChildSpec {
  if (!Number.isSafeInteger(deps.key)) {
    throw new RangeError(`Instance lock key must be a safe integer, got ${deps.key}`);
  }
  const log = (deps.log ?? nullLogger).child({ actor: INSTANCE_LOCK_NAME });
  const clock = deps.clock ?? systemClock;
  const waitMs = deps.waitMs ?? DEFAULT_INSTANCE_LOCK_WAIT_MS;
  const checkMs = deps.checkMs ?? DEFAULT_INSTANCE_LOCK_CHECK_MS;
  const key = BigInt(deps.key);
  // pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
  const classid = ((key >> 32n) & 0xffffffffn).toString();
  const objid = (key & 0xffffffffn).toString();

  /** The backend that holds the lock for this engine: set with each take. */
  let owner: Backend | null = null;

  /** Tries to take the lock; on success remembers this connection's backend as its owner. */
  async function take(sql: Sql): Promise<boolean> {
    const [row] = await sql<Array<Backend & { locked: boolean }>>`
      select pg_try_advisory_lock(${key.toString()}::bigint) as locked, a.pid,
        a.application_name, host(a.client_addr) as addr, a.backend_start as since
      from pg_stat_activity a where a.pid = pg_backend_pid()`;
    if (row?.locked !== true) return false;
    owner = row;
    return true;
  }

  async function holds(sql: Sql): Promise<boolean> {
    const [row] = await sql<Array<{ held: boolean }>>`
      select exists (
        select 1 from pg_locks
        where locktype = 'advisory' and classid = ${classid}::oid and objid = ${objid}::oid
          and objsubid = 1 and granted and pid = pg_backend_pid()
      ) as held`;
    return row?.held === true;
  }

  /** The backend holding the lock, as PostgreSQL shows it; null when none or unknown. */
  async function holderRow(sql: Sql): Promise<Backend | null> {
    try {
      const [row] = await sql<Backend[]>`
        select a.pid, a.application_name, host(a.client_addr) as addr,
          a.backend_start as since
        from pg_locks l join pg_stat_activity a on a.pid = l.pid
        where l.locktype = 'advisory' and l.classid = ${classid}::oid
          and l.objid = ${objid}::oid and l.objsubid = 1 and l.granted
          and l.database = (select oid from pg_database where datname = current_database())
        limit 1`;
      return row ?? null;
    } catch {
      return null;
    }
  }

  async function holder(sql: Sql): Promise<string | null> {
    const row = await holderRow(sql);
    return row === null ? null : describe(row);
  }

  /**
   * The lock is held by this engine's previous backend, left behind when the
   * connection broke on the engine's side only (a partition, a NAT reset):
   * PostgreSQL would keep it until its keepalive reaps it (hours). Ends that
   * backend and takes the lock again; true once taken.
   */
  async function takeFromOrphan(sql: Sql, orphan: Backend): Promise<boolean> {
    log.warn("the instance lock is held by this engine's lost connection; ending it", {
      key: deps.key,
      backend: orphan.pid,
    });
    await sql`select pg_terminate_backend(${orphan.pid})`;
    const until = clock.now() + ORPHAN_END_WAIT_MS;
    for (;;) {
      if (await take(sql)) return true;
      if (clock.now() >= until) return false;
      await clock.sleep(TAKE_RETRY_MS);
    }
  }

  /** Takes the lock: waits for PostgreSQL, and up to `waitMs` for another holder. */
  async function acquire(sql: Sql, signal: AbortSignal): Promise<void> {
    const startedAt = clock.now();
    let warned = false;
    for (let attempt = 1;; attempt++) {
      signal.throwIfAborted();
      let locked: boolean;
      try {
        locked = await take(sql);
      } catch (error) {
        if (signal.aborted || databaseErrorKind(error) !== "connection") throw error;
        const delayMs = retryDelay(attempt, DEFAULT_MIGRATIONS_RETRY);
        log.warn("PostgreSQL unreachable, retrying", {
          for: "instance lock",
          attempt,
          delay_ms: delayMs,
          error,
        });
        await clock.sleep(delayMs, signal);
        continue;
      }
      if (locked) {
        log.info("instance lock taken", { key: deps.key });
        return;
      }
      const who = await holder(sql);
      if (clock.now() - startedAt >= waitMs) {
        throw new InstanceLockError(
          `Another engine holds this database's instance lock (key ${deps.key}${
            who === null ? "" : `: ${who}`
          }); only one engine may run against a database`,
          who,
        );
      }
      if (!warned) {
        warned = true;
        log.warn("another engine holds the instance lock; waiting for it", {
          key: deps.key,
          holder: who,
          wait_ms: waitMs,
        });
      }
      await clock.sleep(TAKE_RETRY_MS, signal);
    }
  }

  /** Checks the lock every `checkMs` until stopped; rejects when another engine took it. */
  async function keep(sql: Sql, signal: AbortSignal): Promise<void> {
    let unreachable = false;
    while (!signal.aborted) {
      try {
        await clock.sleep(checkMs, signal);
      } catch {
        return;
      }
      try {
        if (await holds(sql)) {
          unreachable = false;
          continue;
        }
        // The connection was replaced (PostgreSQL restarted, or the socket dropped): the
        // lock went with the old one — or stays with its backend, if only our side broke.
        if (await take(sql)) {
          log.warn("instance lock taken again after its connection was lost", { key: deps.key });
          continue;
        }
        const row = await holderRow(sql);
        if (row !== null && owner !== null && sameBackend(row, owner)) {
          if (await takeFromOrphan(sql, row)) {
            log.warn("instance lock taken again after its connection was lost", {
              key: deps.key,
              ended_backend: row.pid,
            });
            continue;
          }
        }
        const who = row === null ? null : describe(row);
        throw new InstanceLockError(
          `The instance lock was lost with its connection and another engine holds it now (key ${deps.key}${
            who === null ? "" : `: ${who}`
          }); this engine stops what it runs`,
          who,
        );
      } catch (error) {
        if (error instanceof InstanceLockError) throw error;
        if (!unreachable) {
          unreachable = true;
          log.warn("could not check the instance lock", { error });
        }
      }
    }
  }

  function start(signal: AbortSignal): Running {
    const sql = createPostgres({
      ...deps.postgres,
      pool_size: 1,
      max_lifetime_s: null,
      application_name: `${deps.postgres.application_name ?? "tradewire"} instance lock`,
    });
    let taken = false;
    const close = async () => {
      if (taken) {
        try {
          await sql`select pg_advisory_unlock(${key.toString()}::bigint)`;
        } catch {
          // The connection is gone, and the lock with it.
        }
      }
      await sql.end({ timeout: 5 }).catch(() => {});
    };
    const ready = acquire(sql, signal).then(() => {
      taken = true;
    });
    const done = ready.then(() => keep(sql, signal)).finally(close);
    // `done` reports a failed start too; the supervisor reads `ready` for that.
    done.catch(() => {});
    return { ready, done, stats: () => ({ kind: "worker" }) };
  }

  return { name: INSTANCE_LOCK_NAME, start };
}
