/**
 * Analytics repositories: risk metrics (one row per measured figure, with
 * the limit in force) and daily strategy performance, accumulated as
 * signals, orders and fills come in. The position tracker adds each fill to
 * its strategy's day in the statement that applies it
 * (`strategyFillsCte` and `addStrategyTrades` of `positions.ts`), and stores
 * the risk figures with each portfolio snapshot.
 *
 * @example
 * ```ts
 * import { addStrategyPerformance, insertRiskMetrics } from "./metrics.ts";
 *
 * await insertRiskMetrics(sql, [{ metric: "gross_exposure", value: "125000", limit_value: "500000" }]);
 * await addStrategyPerformance(sql, { strategy: "momentum", day: "2025-01-02", signals: 1 });
 * ```
 *
 * @module
 */

import {
  checkDate,
  type DecimalInput,
  DEFAULT_ACTOR,
  type Queryable,
  run,
  toNumeric,
  toNumericOrNull,
  type WriteOptions,
} from "./_common.ts";
import { DEFAULT_PORTFOLIO } from "./positions.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** A stored risk figure. */
export interface RiskMetric {
  /** Row id (decimal text). */
  id: string;
  /** Portfolio. */
  portfolio_id: string;
  /** Figure, e.g. `gross_exposure`, `daily_realized_pnl`, `open_orders`. */
  metric: string;
  /** Instrument, for per-symbol figures. */
  symbol: string | null;
  /** Value, NUMERIC(20,8) text. */
  value: string;
  /** The limit in force, when the figure has one. */
  limit_value: string | null;
  /** When it was measured. */
  measured_at: Date;
  /** When the row was inserted. */
  created_at: Date;
  /** Who inserted it. */
  created_by: string;
}

/** A risk figure to store. */
export interface RiskMetricInput {
  /** Portfolio. @default {DEFAULT_PORTFOLIO} */
  portfolio_id?: string | undefined;
  /** Figure. */
  metric: string;
  /** Instrument. @default {null} */
  symbol?: string | null | undefined;
  /** Value. */
  value: DecimalInput;
  /** Limit in force. @default {null} */
  limit_value?: DecimalInput | null | undefined;
  /** When measured. @default {now()} */
  measured_at?: Date | undefined;
}

/** Stores risk figures in one statement; returns how many. */
export async function insertRiskMetrics(
  sql: Queryable,
  metrics: readonly RiskMetricInput[],
  options: WriteOptions = {},
): Promise<number> {
  if (metrics.length === 0) return 0;
  const records = metrics.map((m) => {
    if (typeof m.metric !== "string" || m.metric === "") {
      throw new TypeError("A risk metric needs a name");
    }
    return {
      portfolio_id: m.portfolio_id ?? DEFAULT_PORTFOLIO,
      metric: m.metric,
      symbol: m.symbol ?? null,
      value: toNumeric(m.value, "value"),
      limit_value: toNumericOrNull(m.limit_value, "limit_value"),
      measured_at: m.measured_at === undefined
        ? null
        : checkDate(m.measured_at, "measured_at").toISOString(),
    };
  });
  const result = await run(sql`
    INSERT INTO risk_metrics (portfolio_id, metric, symbol, value, limit_value, measured_at,
      created_by)
    SELECT portfolio_id, metric, symbol, value, limit_value, coalesce(measured_at, now()),
      ${options.by ?? DEFAULT_ACTOR}
    FROM jsonb_to_recordset(${JSON.stringify(records)}::text::jsonb) AS x(portfolio_id text,
      metric text, symbol text, value numeric(20,8), limit_value numeric(20,8),
      measured_at timestamptz)`);
  return result.count;
}

/** Filters of {@linkcode listRiskMetrics}. */
export interface RiskMetricFilter {
  /** Portfolio. @default {DEFAULT_PORTFOLIO} */
  portfolio_id?: string | undefined;
  /** Figure. */
  metric?: string | undefined;
  /** Measured at or after. */
  from?: Date | undefined;
  /** Measured before. */
  to?: Date | undefined;
  /** Most rows returned (the latest ones). @default {1000} */
  limit?: number | undefined;
}

/** Risk figures in a time range, oldest first (the latest `limit` of them). */
export async function listRiskMetrics(
  sql: Queryable,
  filter: RiskMetricFilter = {},
): Promise<RiskMetric[]> {
  const limit = filter.limit ?? 1000;
  assertPositiveInteger(limit, "Limit");
  let where = sql`portfolio_id = ${filter.portfolio_id ?? DEFAULT_PORTFOLIO}`;
  if (filter.metric !== undefined) where = sql`${where} AND metric = ${filter.metric}`;
  if (filter.from !== undefined) {
    where = sql`${where} AND measured_at >= ${checkDate(filter.from, "from")}`;
  }
  if (filter.to !== undefined) {
    where = sql`${where} AND measured_at < ${checkDate(filter.to, "to")}`;
  }
  const rows = await run(sql<RiskMetric[]>`
    SELECT * FROM (
      SELECT * FROM risk_metrics WHERE ${where} ORDER BY measured_at DESC, id DESC LIMIT ${limit}
    ) latest ORDER BY measured_at, id`);
  return [...rows];
}

/** A strategy's figures for one day. Money is NUMERIC(20,8) text. */
export interface StrategyPerformance {
  /** Strategy. */
  strategy: string;
  /** Day, `YYYY-MM-DD` (UTC). */
  day: string;
  /** Signals received. */
  signals: number;
  /** Signals rejected. */
  rejected: number;
  /** Orders created. */
  orders: number;
  /** Fills. */
  fills: number;
  /** Σ qty × price over fills. */
  notional: string;
  /** Realized P&L. */
  realized_pnl: string;
  /** Fees. */
  commission: string;
  /** Closing fills with a gain. */
  wins: number;
  /** Closing fills with a loss. */
  losses: number;
  /** When the row was inserted. */
  created_at: Date;
  /** When the row last changed. */
  updated_at: Date;
  /** Who inserted it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

/** Amounts added to a strategy's day by {@linkcode addStrategyPerformance}; absent ones add nothing. */
export interface StrategyPerformanceDelta {
  /** Signals received. */
  signals?: number | undefined;
  /** Signals rejected. */
  rejected?: number | undefined;
  /** Orders created. */
  orders?: number | undefined;
  /** Fills. */
  fills?: number | undefined;
  /** Notional traded. */
  notional?: DecimalInput | undefined;
  /** Realized P&L. */
  realized_pnl?: DecimalInput | undefined;
  /** Fees. */
  commission?: DecimalInput | undefined;
  /** Winning closes. */
  wins?: number | undefined;
  /** Losing closes. */
  losses?: number | undefined;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;

function count(value: number | undefined, field: string): number {
  const n = value ?? 0;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`${field} must be a non-negative integer, got ${n}`);
  }
  return n;
}

/** What {@linkcode addStrategyPerformance} adds to: a strategy's day. */
export interface StrategyDay {
  /** Strategy. */
  strategy: string;
  /** Day: `YYYY-MM-DD`, or a `Date` taken in UTC. */
  day: string | Date;
}

/**
 * Adds `delta` to the figures of a strategy on a day, creating the row, and
 * returns it.
 */
export async function addStrategyPerformance(
  sql: Queryable,
  delta: StrategyDay & StrategyPerformanceDelta,
  options: WriteOptions = {},
): Promise<StrategyPerformance> {
  const { strategy, day } = delta;
  if (typeof strategy !== "string" || strategy === "") {
    throw new TypeError("Strategy performance needs a strategy");
  }
  const dayText = typeof day === "string" ? day : checkDate(day, "day").toISOString().slice(0, 10);
  if (!DAY.test(dayText)) throw new RangeError(`Day must be YYYY-MM-DD, got ${dayText}`);
  const by = options.by ?? DEFAULT_ACTOR;
  const signals = count(delta.signals, "signals");
  const rejected = count(delta.rejected, "rejected");
  const orders = count(delta.orders, "orders");
  const fills = count(delta.fills, "fills");
  const wins = count(delta.wins, "wins");
  const losses = count(delta.losses, "losses");
  const notional = toNumeric(delta.notional ?? "0", "notional");
  const pnl = toNumeric(delta.realized_pnl ?? "0", "realized_pnl");
  const commission = toNumeric(delta.commission ?? "0", "commission");
  const [row] = await run(sql<StrategyPerformance[]>`
    INSERT INTO strategy_performance AS p (strategy, day, signals, rejected, orders, fills,
      notional, realized_pnl, commission, wins, losses, created_by, updated_by)
    VALUES (${strategy}, ${dayText}::date, ${signals}, ${rejected}, ${orders}, ${fills},
      ${notional}::numeric, ${pnl}::numeric, ${commission}::numeric, ${wins}, ${losses}, ${by},
      ${by})
    ON CONFLICT (strategy, day) DO UPDATE SET
      signals = p.signals + excluded.signals,
      rejected = p.rejected + excluded.rejected,
      orders = p.orders + excluded.orders,
      fills = p.fills + excluded.fills,
      notional = p.notional + excluded.notional,
      realized_pnl = p.realized_pnl + excluded.realized_pnl,
      commission = p.commission + excluded.commission,
      wins = p.wins + excluded.wins,
      losses = p.losses + excluded.losses,
      updated_by = excluded.updated_by
    RETURNING strategy, day::text AS day, signals, rejected, orders, fills, notional,
      realized_pnl, commission, wins, losses, created_at, updated_at, created_by, updated_by`);
  if (row === undefined) throw new Error("Strategy performance upsert returned no row");
  return row;
}

/** Daily figures of strategies, by day then strategy; `from`/`to` are `YYYY-MM-DD`, inclusive. */
export async function listStrategyPerformance(
  sql: Queryable,
  filter: { strategy?: string | undefined; from?: string | undefined; to?: string | undefined } =
    {},
): Promise<StrategyPerformance[]> {
  let where = sql`TRUE`;
  if (filter.strategy !== undefined) where = sql`${where} AND strategy = ${filter.strategy}`;
  for (const [bound, value] of [["from", filter.from], ["to", filter.to]] as const) {
    if (value === undefined) continue;
    if (!DAY.test(value)) throw new RangeError(`${bound} must be YYYY-MM-DD, got ${value}`);
    where = bound === "from"
      ? sql`${where} AND day >= ${value}::date`
      : sql`${where} AND day <= ${value}::date`;
  }
  const rows = await run(sql<StrategyPerformance[]>`
    SELECT strategy, day::text AS day, signals, rejected, orders, fills, notional, realized_pnl,
      commission, wins, losses, created_at, updated_at, created_by, updated_by
    FROM strategy_performance WHERE ${where} ORDER BY day, strategy`);
  return [...rows];
}
