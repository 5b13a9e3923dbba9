/**
 * The symbols repository: the instruments orders, fills and positions refer
 * to, with their trading increments and last known price.
 *
 * @example
 * ```ts
 * import { upsertSymbols, updateLastPrices } from "./symbols.ts";
 *
 * await upsertSymbols(sql, [{ symbol: "AAPL", asset_class: "us_equity", exchange: "alpaca" }]);
 * await updateLastPrices(sql, { AAPL: "187.25" });
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
import { NotFoundError } from "./errors.ts";

/** Asset classes of `symbols.asset_class`. */
export const ASSET_CLASSES = ["crypto", "us_equity"] as const;
/** An asset class. */
export type AssetClass = typeof ASSET_CLASSES[number];

/** An instrument as stored. */
export interface SymbolInfo {
  /** The symbol, e.g. `BTC-USDT`, `AAPL`. */
  symbol: string;
  /** Asset class. */
  asset_class: AssetClass;
  /** Venue it is quoted on. */
  exchange: string | null;
  /** Base asset (`BTC`). */
  base_asset: string | null;
  /** Quote asset (`USDT`). */
  quote_asset: string | null;
  /** Price increment. */
  tick_size: string | null;
  /** Quantity increment. */
  lot_size: string | null;
  /** Smallest quantity. */
  min_qty: string | null;
  /** Whether it may be traded. */
  active: boolean;
  /** Last known market price. */
  last_price: string | null;
  /** When `last_price` was seen. */
  last_price_at: Date | null;
  /** When the row was inserted. */
  created_at: Date;
  /** When the row last changed. */
  updated_at: Date;
  /** Who inserted it. */
  created_by: string;
  /** Who last changed it. */
  updated_by: string;
}

/** An instrument to create or update; absent fields are stored as their defaults. */
export interface SymbolInput {
  /** The symbol. */
  symbol: string;
  /** Asset class. @default {"crypto"} */
  asset_class?: AssetClass | undefined;
  /** Venue. @default {null} */
  exchange?: string | null | undefined;
  /** Base asset. @default {null} */
  base_asset?: string | null | undefined;
  /** Quote asset. @default {null} */
  quote_asset?: string | null | undefined;
  /** Price increment. @default {null} */
  tick_size?: DecimalInput | null | undefined;
  /** Quantity increment. @default {null} */
  lot_size?: DecimalInput | null | undefined;
  /** Smallest quantity. @default {null} */
  min_qty?: DecimalInput | null | undefined;
  /** Tradable. @default {true} */
  active?: boolean | undefined;
}

/**
 * Creates or updates instruments in one statement (the last wins when one
 * appears twice) and returns the stored rows, ordered by symbol. The last
 * price is left alone.
 */
export async function upsertSymbols(
  sql: Queryable,
  symbols: readonly SymbolInput[],
  options: WriteOptions = {},
): Promise<SymbolInfo[]> {
  if (symbols.length === 0) return [];
  const bySymbol = new Map<string, SymbolInput>();
  for (const input of symbols) {
    if (typeof input.symbol !== "string" || input.symbol === "") {
      throw new TypeError("A symbol needs a name");
    }
    bySymbol.set(input.symbol, input);
  }
  const records = [...bySymbol.values()].map((s) => ({
    symbol: s.symbol,
    asset_class: s.asset_class ?? "crypto",
    exchange: s.exchange ?? null,
    base_asset: s.base_asset ?? null,
    quote_asset: s.quote_asset ?? null,
    tick_size: toNumericOrNull(s.tick_size, "tick_size"),
    lot_size: toNumericOrNull(s.lot_size, "lot_size"),
    min_qty: toNumericOrNull(s.min_qty, "min_qty"),
    active: s.active ?? true,
  }));
  const by = options.by ?? DEFAULT_ACTOR;
  const rows = await run(sql<SymbolInfo[]>`
    INSERT INTO symbols AS s (symbol, asset_class, exchange, base_asset, quote_asset, tick_size,
      lot_size, min_qty, active, created_by, updated_by)
    SELECT symbol, asset_class, exchange, base_asset, quote_asset, tick_size, lot_size, min_qty,
      active, ${by}, ${by}
    FROM jsonb_to_recordset(${JSON.stringify(records)}::text::jsonb) AS x(symbol text,
      asset_class text, exchange text, base_asset text, quote_asset text,
      tick_size numeric(20,8), lot_size numeric(20,8), min_qty numeric(20,8), active boolean)
    ON CONFLICT (symbol) DO UPDATE SET
      asset_class = excluded.asset_class,
      exchange = excluded.exchange,
      base_asset = excluded.base_asset,
      quote_asset = excluded.quote_asset,
      tick_size = excluded.tick_size,
      lot_size = excluded.lot_size,
      min_qty = excluded.min_qty,
      active = excluded.active,
      updated_by = excluded.updated_by
    RETURNING *`);
  return [...rows].sort((a, b) => a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0);
}

/** Returns instrument `symbol`; throws `NotFoundError` when it is unknown. */
export async function getSymbol(sql: Queryable, symbol: string): Promise<SymbolInfo> {
  const [row] = await run(sql<SymbolInfo[]>`SELECT * FROM symbols WHERE symbol = ${symbol}`);
  if (row === undefined) throw new NotFoundError("symbol", symbol);
  return row;
}

/** Lists instruments by symbol, only active ones when `active: true`. */
export async function listSymbols(
  sql: Queryable,
  options: { active?: boolean | undefined } = {},
): Promise<SymbolInfo[]> {
  const where = options.active === undefined ? sql`TRUE` : sql`active = ${options.active}`;
  return [...await run(sql<SymbolInfo[]>`SELECT * FROM symbols WHERE ${where} ORDER BY symbol`)];
}

/**
 * Stores last prices (symbol → price) seen at `at`; a price older than the
 * stored one is ignored. Unknown symbols are ignored. Returns how many rows
 * changed.
 */
export async function updateLastPrices(
  sql: Queryable,
  prices: Readonly<Record<string, DecimalInput>> | ReadonlyMap<string, DecimalInput>,
  options: WriteOptions & { at?: Date | undefined } = {},
): Promise<number> {
  const out: Record<string, string> = {};
  const entries = prices instanceof Map
    ? [...prices.entries()]
    : Object.entries(prices as Record<string, DecimalInput>);
  for (const [symbol, price] of entries) out[symbol] = toNumeric(price, `price of ${symbol}`);
  if (Object.keys(out).length === 0) return 0;
  const at = options.at === undefined ? null : checkDate(options.at, "at");
  const result = await run(sql`
    UPDATE symbols s SET last_price = m.price,
      last_price_at = coalesce(${at}::timestamptz, now()),
      updated_by = ${options.by ?? DEFAULT_ACTOR}
    FROM (SELECT key AS symbol, value::numeric(20,8) AS price
          FROM jsonb_each_text(${JSON.stringify(out)}::text::jsonb)) m
    WHERE s.symbol = m.symbol
      AND (s.last_price_at IS NULL OR s.last_price_at <= coalesce(${at}::timestamptz, now()))`);
  return result.count;
}
