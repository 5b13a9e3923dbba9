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
  if (typeof key !== "string" || key === "") throw new TypeError("A config key must not be empty");
  if (value === undefined) throw new TypeError(`Config value of ${key} must not be undefined`);
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
