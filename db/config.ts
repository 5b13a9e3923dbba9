/**
 * The runtime config repository: JSON values by key for settings changed
 * while the engine runs, such as the kill switch.
 *
 * @example
 * ```ts
 * import { getKillSwitch, setKillSwitch } from "./config.ts";
 *
 * await setKillSwitch(sql, { active: true, reason: "runaway strategy" }, { by: "api:ops" });
 * (await getKillSwitch(sql)).active; // true
 * ```
 *
 * @module
 */

import { DEFAULT_ACTOR, type Queryable, run, type WriteOptions } from "./_common.ts";

/** A stored setting. */
export interface ConfigEntry<T = unknown> {
  /** Key. */
  key: string;
  /** Value (parsed JSON). */
  value: T;
  /** What it is for. */
  description: string | null;
  /** When it was first set. */
  created_at: Date;
  /** When it last changed. */
  updated_at: Date;
  /** Who first set it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

/** Returns the setting under `key`, or null when it was never set. */
export async function getConfig<T = unknown>(
  sql: Queryable,
  key: string,
): Promise<ConfigEntry<T> | null> {
  const [row] = await run(sql<ConfigEntry<T>[]>`SELECT * FROM config WHERE key = ${key}`);
  return row ?? null;
}

/** Lists every setting by key. */
export async function listConfig(sql: Queryable): Promise<ConfigEntry[]> {
  return [...await run(sql<ConfigEntry[]>`SELECT * FROM config ORDER BY key`)];
}

/**
 * Sets `key` to `value` (any JSON value; `undefined` is refused) and returns
 * the stored entry. The description is kept when not given.
 */
export async function setConfig<T>(
  sql: Queryable,
  key: string,
  value: T,
  options: WriteOptions & { description?: string | undefined } = {},
): Promise<ConfigEntry<T>> {
  checkEntry(key, value);
  const by = options.by ?? DEFAULT_ACTOR;
  const [row] = await run(sql<ConfigEntry<T>[]>`
    INSERT INTO config AS c (key, value, description, created_by, updated_by)
    VALUES (${key}, ${JSON.stringify(value)}::text::jsonb, ${options.description ?? null}, ${by},
      ${by})
    ON CONFLICT (key) DO UPDATE SET
      value = excluded.value,
      description = coalesce(excluded.description, c.description),
      updated_by = excluded.updated_by
    RETURNING *`);
  if (row === undefined) throw new Error("Config upsert returned no row");
  return row;
}

/**
 * Sets `key` to `value` unless it is set already, and returns the stored
 * entry: of writers racing, the first to commit wins and the others get its
 * value (their insert waits for it, then reads it back). Run it on the pool
 * or a read-committed transaction: a repeatable-read snapshot taken before
 * the winner committed would not show its row.
 *
 * @example
 * ```ts
 * const entry = await initConfig(sql, "first_start", { at: new Date().toISOString() });
 * ```
 */
export async function initConfig<T>(
  sql: Queryable,
  key: string,
  value: T,
  options: WriteOptions & { description?: string | undefined } = {},
): Promise<ConfigEntry<T>> {
  checkEntry(key, value);
  const by = options.by ?? DEFAULT_ACTOR;
  const [inserted] = await run(sql<ConfigEntry<T>[]>`
    INSERT INTO config (key, value, description, created_by, updated_by)
    VALUES (${key}, ${JSON.stringify(value)}::text::jsonb, ${options.description ?? null}, ${by},
      ${by})
    ON CONFLICT (key) DO NOTHING
    RETURNING *`);
  if (inserted !== undefined) return inserted;
  const stored = await getConfig<T>(sql, key);
  if (stored === null) throw new Error(`Config ${key} was removed while it was set`);
  return stored;
}

/** Refuses an empty key and an undefined value (JSON has no `undefined`). */
function checkEntry(key: string, value: unknown): void {
  if (typeof key !== "string" || key === "") throw new TypeError("A config key must not be empty");
  if (value === undefined) throw new TypeError(`Config value of ${key} must not be undefined`);
}

/** Removes `key`; returns whether it was set. */
export async function deleteConfig(sql: Queryable, key: string): Promise<boolean> {
  const result = await run(sql`DELETE FROM config WHERE key = ${key}`);
  return result.count > 0;
}

/** Config key of the kill switch. */
export const KILL_SWITCH_KEY = "kill_switch";

/** The kill switch: while active, new orders are rejected. */
export interface KillSwitch {
  /** Whether new orders are refused. */
  active: boolean;
  /** Why it was switched, when said. */
  reason: string | null;
  /** When it last changed; null when never set. */
  changed_at: Date | null;
  /** Who last changed it; null when never set. */
  changed_by: string | null;
}

/** The kill switch state; inactive when never set. */
export async function getKillSwitch(sql: Queryable): Promise<KillSwitch> {
  const entry = await getConfig<{ active?: unknown; reason?: unknown }>(sql, KILL_SWITCH_KEY);
  if (entry === null) return { active: false, reason: null, changed_at: null, changed_by: null };
  return {
    active: entry.value?.active === true,
    reason: typeof entry.value?.reason === "string" ? entry.value.reason : null,
    changed_at: entry.updated_at,
    changed_by: entry.updated_by,
  };
}

/** Switches the kill switch on or off and returns its new state. */
export async function setKillSwitch(
  sql: Queryable,
  state: { active: boolean; reason?: string | null | undefined },
  options: WriteOptions = {},
): Promise<KillSwitch> {
  if (typeof state.active !== "boolean") throw new TypeError("Kill switch active must be boolean");
  const entry = await setConfig(sql, KILL_SWITCH_KEY, {
    active: state.active,
    reason: state.reason ?? null,
  }, { ...options, description: "Rejects new orders while active" });
  return {
    active: entry.value.active,
    reason: entry.value.reason,
    changed_at: entry.updated_at,
    changed_by: entry.updated_by,
  };
}

/**
 * Config key of the marker of stream `stream` (`SIGNALS`): which life of the
 * stream keys its signals without `id` by the plain stream sequence.
 */
export function signalKeysConfigKey(stream: string): string {
  return `signal_keys:${stream}`;
}

/**
 * The stored marker of {@linkcode signalKeysConfigKey}: the creation time of
 * the life of the stream whose signals without `id` are keyed `js-<sequence>`
 * (ISO 8601, as JetStream reports it), or null when none is (plain keys of a
 * life before the marker were found stored).
 */
export interface SignalKeysMarker {
  /** The stream's name. */
  stream: string;
  /** Creation time of the stream life keyed `js-<sequence>`; null for none. */
  created: string | null;
}

/**
 * Whether the signals without `id` of the life of `stream` created at
 * `created` (the stream info's `created`) are keyed by their plain sequence
 * (`js-<seq>`), as they were before keys named the stream's life. The first
 * call for a stream stores the marker ({@linkcode SignalKeysMarker}) once,
 * first writer wins ({@linkcode initConfig}): this life — unless a NATS
 * signal keyed `js-<digits>` received before `created` is stored, which
 * proves an earlier life keyed so (then no life is, from then on). Later
 * calls compare: true for the life of the marker (to the millisecond), false
 * for any other (the stream was created again: its sequences start over).
 *
 * @example
 * ```ts
 * const plain = await plainSignalKeys(sql, "SIGNALS", new Date(info.created));
 * const key = plain ? `js-${seq}` : `js-${created.getTime()}-${seq}`;
 * ```
 */
export async function plainSignalKeys(
  sql: Queryable,
  stream: string,
  created: Date,
  options: WriteOptions = {},
): Promise<boolean> {
  if (Number.isNaN(created.getTime())) throw new TypeError("Stream creation time is invalid");
  const key = signalKeysConfigKey(stream);
  let entry = await getConfig<SignalKeysMarker>(sql, key);
  if (entry === null) {
    // A message of this life was stored at or after its creation (both the server's clock, in
    // ms): a plain key received before it comes from an earlier life.
    const earlier = await run(sql`
      SELECT 1 FROM signals
      WHERE source = 'nats' AND client_signal_id ~ '^js-[0-9]+$' AND received_at < ${created}
      LIMIT 1`);
    entry = await initConfig<SignalKeysMarker>(sql, key, {
      stream,
      created: earlier.length > 0 ? null : created.toISOString(),
    }, {
      ...options,
      description: "The life of the signals stream whose signals without id are keyed js-<seq>",
    });
  }
  const marked = entry.value?.created;
  return typeof marked === "string" && Date.parse(marked) === created.getTime();
}
