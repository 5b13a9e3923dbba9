/**
 * The alerts repository: conditions an operator should see (a broker
 * rejecting orders, a reconciliation mismatch, the kill switch tripped),
 * listed while unresolved and resolved one at a time. An alert raised again
 * under the `dedupe_key` of an unresolved one counts an occurrence instead
 * of adding a row.
 *
 * @example
 * ```ts
 * import { listUnresolvedAlerts, raiseAlert, resolveAlert } from "./alerts.ts";
 *
 * await raiseAlert(sql, { severity: "critical", source: "broker.alpaca",
 *   message: "Orders rejected", dedupe_key: "alpaca-rejects" });
 * for (const alert of await listUnresolvedAlerts(sql)) await resolveAlert(sql, alert.id);
 * ```
 *
 * @module
 */

import { DEFAULT_ACTOR, type Queryable, run, type WriteOptions } from "./_common.ts";
import { checkId } from "./_order_sql.ts";
import { ALERT_SEVERITIES, type AlertSeverity } from "./enums.ts";
import { NotFoundError } from "./errors.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** An alert as stored. */
export interface Alert {
  /** Row id (decimal text). */
  id: string;
  /** Severity. */
  severity: AlertSeverity;
  /** What raised it, e.g. `risk`, `broker.alpaca`. */
  source: string;
  /** What happened, for a person. */
  message: string;
  /** Structured detail (parsed JSON). */
  details: unknown;
  /** Key merging repeats while unresolved. */
  dedupe_key: string | null;
  /** How many times it was raised while unresolved. */
  occurrences: number;
  /** When it was last raised. */
  last_seen_at: Date;
  /** Whether it was resolved. */
  resolved: boolean;
  /** When it was resolved. */
  resolved_at: Date | null;
  /** Who resolved it. */
  resolved_by: string | null;
  /** When the row was inserted. */
  created_at: Date;
  /** When the row last changed. */
  updated_at: Date;
  /** Who raised it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

/** An alert to raise. */
export interface NewAlert {
  /** Severity. */
  severity: AlertSeverity;
  /** What raises it. */
  source: string;
  /** What happened. */
  message: string;
  /** Structured detail: any JSON value. @default {{}} */
  details?: unknown;
  /** Merges repeats into the unresolved alert with this key. @default {null: never merged} */
  dedupe_key?: string | null | undefined;
}

/**
 * Raises an alert and returns it with `created: true`; when an unresolved
 * alert has the same `dedupe_key`, counts an occurrence on it instead (its
 * severity, message and details become the new ones) and returns it with
 * `created: false`.
 */
export async function raiseAlert(
  sql: Queryable,
  alert: NewAlert,
  options: WriteOptions = {},
): Promise<{ created: boolean; alert: Alert }> {
  if (!ALERT_SEVERITIES.includes(alert.severity)) {
    throw new RangeError(`Unknown alert severity ${String(alert.severity)}`);
  }
  const by = options.by ?? DEFAULT_ACTOR;
  const details = JSON.stringify(alert.details ?? {});
  const [row] = await run(sql<(Alert & { created: boolean })[]>`
    INSERT INTO alerts AS a (severity, source, message, details, dedupe_key, created_by, updated_by)
    VALUES (${alert.severity}::alert_severity, ${alert.source}, ${alert.message},
      ${details}::text::jsonb, ${alert.dedupe_key ?? null}, ${by}, ${by})
    ON CONFLICT (dedupe_key) WHERE NOT resolved DO UPDATE SET
      severity = excluded.severity,
      message = excluded.message,
      details = excluded.details,
      occurrences = a.occurrences + 1,
      last_seen_at = now(),
      updated_by = excluded.updated_by
    RETURNING *, (xmax = 0) AS created`);
  if (row === undefined) throw new Error("Alert insert returned no row");
  const { created, ...stored } = row;
  return { created, alert: stored };
}

/** Options of {@linkcode listUnresolvedAlerts}. */
export interface UnresolvedAlertsOptions {
  /** Only alerts at least this severe. @default {"info": all} */
  minSeverity?: AlertSeverity | undefined;
  /** Only alerts from this source. */
  source?: string | undefined;
  /** Most alerts returned. @default {1000} */
  limit?: number | undefined;
}

/**
 * Unresolved alerts, most severe first, then newest first. Throws a
 * `RangeError` for a `minSeverity` that is not one of {@linkcode ALERT_SEVERITIES}.
 */
export async function listUnresolvedAlerts(
  sql: Queryable,
  options: UnresolvedAlertsOptions = {},
): Promise<Alert[]> {
  const limit = options.limit ?? 1000;
  assertPositiveInteger(limit, "Limit");
  let where = sql`NOT resolved`;
  if (options.minSeverity !== undefined) {
    if (!ALERT_SEVERITIES.includes(options.minSeverity)) {
      throw new RangeError(`Unknown alert severity ${String(options.minSeverity)}`);
    }
    where = sql`${where} AND severity >= ${options.minSeverity}::alert_severity`;
  }
  if (options.source !== undefined) where = sql`${where} AND source = ${options.source}`;
  const rows = await run(sql<Alert[]>`
    SELECT * FROM alerts WHERE ${where} ORDER BY severity DESC, id DESC LIMIT ${limit}`);
  return [...rows];
}

/**
 * Returns alert `id`; throws `NotFoundError` when there is none and
 * a `RangeError` when `id` is not a row id (an integer from 1 to `MAX_ROW_ID`).
 */
export async function getAlert(sql: Queryable, id: string): Promise<Alert> {
  checkId(id, "alert id");
  const [row] = await run(sql<Alert[]>`SELECT * FROM alerts WHERE id = ${id}`);
  if (row === undefined) throw new NotFoundError("alert", id);
  return row;
}

/**
 * Resolves alert `id` and returns it; resolving a resolved alert changes
 * nothing. Throws `NotFoundError` when there is no such alert and
 * a `RangeError` when `id` is not a row id (an integer from 1 to `MAX_ROW_ID`).
 */
export async function resolveAlert(
  sql: Queryable,
  id: string,
  options: WriteOptions = {},
): Promise<Alert> {
  checkId(id, "alert id");
  const by = options.by ?? DEFAULT_ACTOR;
  const [row] = await run(sql<Alert[]>`
    UPDATE alerts SET resolved = TRUE, resolved_at = now(), resolved_by = ${by}, updated_by = ${by}
    WHERE id = ${id} AND NOT resolved
    RETURNING *`);
  return row ?? await getAlert(sql, id);
}
