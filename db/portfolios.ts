/**
 * The portfolios repository: the current state of each portfolio (cash,
 * equity, exposure, P&L) and its history as snapshots taken on an interval.
 *
 * @example
 * ```ts
 * import { insertSnapshot, listSnapshots } from "./portfolios.ts";
 *
 * await insertSnapshot(sql, { taken_at: new Date(), cash: "1000", equity: "1250.5", ... });
 * const { items } = await listSnapshots(sql, { from: new Date(Date.now() - 86_400_000) });
 * ```
 *
 * @module
 */

import {
  checkDate,
  type DecimalInput,
  DEFAULT_ACTOR,
  type Page,
  type PageOptions,
  pageOptions,
  type Queryable,
  run,
  selectPage,
  toNumeric,
  type WriteOptions,
} from "./_common.ts";
import { NotFoundError } from "./errors.ts";
import { DEFAULT_PORTFOLIO, type PortfolioOption } from "./positions.ts";

/** Money figures of a portfolio, NUMERIC(20,8) text. */
export interface PortfolioFigures {
  /** Cash (negative on margin). */
  cash: string;
  /** Cash plus market value. */
  equity: string;
  /** Σ qty × mark. */
  market_value: string;
  /** Σ |qty| × mark. */
  gross_exposure: string;
  /** Σ qty × mark. */
  net_exposure: string;
  /** Realized P&L. */
  realized_pnl: string;
  /** Unrealized P&L. */
  unrealized_pnl: string;
}

/** A portfolio's current state. */
export interface Portfolio extends PortfolioFigures {
  /** Name, e.g. `default`. */
  id: string;
  /**
   * The cash it started with (total P&L is equity minus this), set once when
   * the engine initialises it (migration 0005); null until then.
   */
  starting_cash: string | null;
  /** Broker account it mirrors. */
  broker: string;
  /** Currency of its money figures. */
  base_currency: string;
  /** When the row was inserted. */
  created_at: Date;
  /** When the row last changed. */
  updated_at: Date;
  /** Who inserted it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

/** Money figures to store. */
export type PortfolioFiguresInput = { [K in keyof PortfolioFigures]: DecimalInput };

/** A portfolio to create or update. */
export interface PortfolioInput extends Partial<PortfolioFiguresInput> {
  /** Name. */
  id: string;
  /** Broker. @default {unchanged, "paper" for a new one} */
  broker?: string | undefined;
  /** Currency. @default {unchanged, "USD" for a new one} */
  base_currency?: string | undefined;
}

const FIGURES = [
  "cash",
  "equity",
  "market_value",
  "gross_exposure",
  "net_exposure",
  "realized_pnl",
  "unrealized_pnl",
] as const satisfies readonly (keyof PortfolioFigures)[];

/** Returns portfolio `id` (its latest state); throws `NotFoundError` when there is none. */
export async function getPortfolio(
  sql: Queryable,
  id: string = DEFAULT_PORTFOLIO,
): Promise<Portfolio> {
  const [row] = await run(sql<Portfolio[]>`SELECT * FROM portfolios WHERE id = ${id}`);
  if (row === undefined) throw new NotFoundError("portfolio", id);
  return row;
}

/** Lists portfolios by id. */
export async function listPortfolios(sql: Queryable): Promise<Portfolio[]> {
  return [...await run(sql<Portfolio[]>`SELECT * FROM portfolios ORDER BY id`)];
}

/**
 * Creates a portfolio or updates the fields given (absent ones keep their
 * value; a new portfolio starts at zero) and returns it.
 */
export async function upsertPortfolio(
  sql: Queryable,
  portfolio: PortfolioInput,
  options: WriteOptions = {},
): Promise<Portfolio> {
  if (typeof portfolio.id !== "string" || portfolio.id === "") {
    throw new TypeError("A portfolio needs an id");
  }
  const by = options.by ?? DEFAULT_ACTOR;
  const figures = {} as Record<typeof FIGURES[number], string | null>;
  for (const field of FIGURES) {
    const value = portfolio[field];
    figures[field] = value === undefined ? null : toNumeric(value, field);
  }
  const [row] = await run(sql<Portfolio[]>`
    INSERT INTO portfolios AS p (id, broker, base_currency, cash, equity, market_value,
      gross_exposure, net_exposure, realized_pnl, unrealized_pnl, created_by, updated_by)
    VALUES (${portfolio.id}, coalesce(${portfolio.broker ?? null}, 'paper'),
      coalesce(${portfolio.base_currency ?? null}, 'USD'),
      coalesce(${figures.cash}::numeric, 0), coalesce(${figures.equity}::numeric, 0),
      coalesce(${figures.market_value}::numeric, 0), coalesce(${figures.gross_exposure}::numeric, 0),
      coalesce(${figures.net_exposure}::numeric, 0), coalesce(${figures.realized_pnl}::numeric, 0),
      coalesce(${figures.unrealized_pnl}::numeric, 0), ${by}, ${by})
    ON CONFLICT (id) DO UPDATE SET
      broker = coalesce(${portfolio.broker ?? null}, p.broker),
      base_currency = coalesce(${portfolio.base_currency ?? null}, p.base_currency),
      cash = coalesce(${figures.cash}::numeric, p.cash),
      equity = coalesce(${figures.equity}::numeric, p.equity),
      market_value = coalesce(${figures.market_value}::numeric, p.market_value),
      gross_exposure = coalesce(${figures.gross_exposure}::numeric, p.gross_exposure),
      net_exposure = coalesce(${figures.net_exposure}::numeric, p.net_exposure),
      realized_pnl = coalesce(${figures.realized_pnl}::numeric, p.realized_pnl),
      unrealized_pnl = coalesce(${figures.unrealized_pnl}::numeric, p.unrealized_pnl),
      updated_by = ${by}
    RETURNING *`);
  if (row === undefined) throw new Error("Portfolio upsert returned no row");
  return row;
}

/** A stored snapshot of a portfolio. */
export interface PortfolioSnapshot extends PortfolioFigures {
  /** Row id (decimal text). */
  id: string;
  /** Portfolio. */
  portfolio_id: string;
  /** When it was taken. */
  taken_at: Date;
  /** Per-symbol detail (parsed JSON). */
  positions: unknown;
  /** When the row was inserted. */
  created_at: Date;
  /** Who inserted it. */
  created_by: string;
}

/** A snapshot to store. */
export interface SnapshotInput extends PortfolioFiguresInput {
  /** Portfolio. @default {DEFAULT_PORTFOLIO} */
  portfolio_id?: string | undefined;
  /** When it was taken (unique per portfolio). */
  taken_at: Date;
  /** Per-symbol detail: JSON with decimals as strings. @default {[]} */
  positions?: unknown;
}

/**
 * Stores a snapshot; one taken at the same time for the same portfolio is
 * kept instead (`created: false`), so a retried write is harmless.
 */
export async function insertSnapshot(
  sql: Queryable,
  snapshot: SnapshotInput,
  options: WriteOptions = {},
): Promise<{ created: boolean; snapshot: PortfolioSnapshot }> {
  const portfolio = snapshot.portfolio_id ?? DEFAULT_PORTFOLIO;
  const takenAt = checkDate(snapshot.taken_at, "taken_at");
  const f = {} as Record<typeof FIGURES[number], string>;
  for (const field of FIGURES) f[field] = toNumeric(snapshot[field], field);
  const positions = JSON.stringify(snapshot.positions ?? []);
  const [row] = await run(sql<PortfolioSnapshot[]>`
    INSERT INTO portfolio_snapshots (portfolio_id, taken_at, cash, equity, market_value,
      gross_exposure, net_exposure, realized_pnl, unrealized_pnl, positions, created_by)
    VALUES (${portfolio}, ${takenAt}, ${f.cash}, ${f.equity},
      ${f.market_value}, ${f.gross_exposure}, ${f.net_exposure},
      ${f.realized_pnl}, ${f.unrealized_pnl}, ${positions}::text::jsonb,
      ${options.by ?? DEFAULT_ACTOR})
    ON CONFLICT (portfolio_id, taken_at) DO NOTHING
    RETURNING *`);
  if (row !== undefined) return { created: true, snapshot: row };
  const [existing] = await run(sql<PortfolioSnapshot[]>`
    SELECT * FROM portfolio_snapshots WHERE portfolio_id = ${portfolio} AND taken_at = ${takenAt}`);
  if (existing === undefined) throw new Error("Snapshot was neither inserted nor found");
  return { created: false, snapshot: existing };
}

/** The most recent snapshot of a portfolio, or null when none was taken. */
export async function latestSnapshot(
  sql: Queryable,
  options: PortfolioOption = {},
): Promise<PortfolioSnapshot | null> {
  const [row] = await run(sql<PortfolioSnapshot[]>`
    SELECT * FROM portfolio_snapshots WHERE portfolio_id = ${
    options.portfolio_id ?? DEFAULT_PORTFOLIO
  }
    ORDER BY taken_at DESC, id DESC LIMIT 1`);
  return row ?? null;
}

/** The highest equity of a portfolio's snapshots (NUMERIC text), or null when none was taken. */
export async function peakEquity(
  sql: Queryable,
  options: PortfolioOption = {},
): Promise<string | null> {
  const [row] = await run(sql<{ peak: string | null }[]>`
    SELECT max(equity)::text AS peak FROM portfolio_snapshots
    WHERE portfolio_id = ${options.portfolio_id ?? DEFAULT_PORTFOLIO}`);
  return row?.peak ?? null;
}

/** Filters of {@linkcode listSnapshots}. */
export interface SnapshotFilter extends PortfolioOption {
  /** Taken at or after. */
  from?: Date | undefined;
  /** Taken before. */
  to?: Date | undefined;
}

/**
 * Portfolio history: snapshots in a time range, a page at a time, by id
 * (newest first unless `direction: "asc"`).
 */
export async function listSnapshots(
  sql: Queryable,
  filter: SnapshotFilter & PageOptions = {},
): Promise<Page<PortfolioSnapshot>> {
  const page = pageOptions(filter);
  let where = sql`portfolio_id = ${filter.portfolio_id ?? DEFAULT_PORTFOLIO}`;
  if (filter.from !== undefined) {
    where = sql`${where} AND taken_at >= ${checkDate(filter.from, "from")}`;
  }
  if (filter.to !== undefined) where = sql`${where} AND taken_at < ${checkDate(filter.to, "to")}`;
  return await selectPage<PortfolioSnapshot>(sql, "portfolio_snapshots", where, page);
}
