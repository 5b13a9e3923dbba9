/**
 * Market events as ClickHouse rows: one pure conversion per table of
 * `migrations/clickhouse/0001_market_data.sql`, used by the batch writer.
 *
 * | event kind | table | |
 * | --- | --- | --- |
 * | `trade` | `market_trades` | |
 * | `book` | `orderbook_snapshots` | snapshots and deltas, `action` says which |
 * | `top`, `quote` | `quotes` | `source` is `"top"` or `"quote"` |
 * | `bar` | `bars` | |
 *
 * Rows are meant for `JSONEachRow`. Decimals stay exact: they are carried as
 * raw JSON numbers ({@linkcode RawDecimal}, made with `JSON.rawJSON`), so
 * `JSON.stringify(row)` writes `"price":0.00005100` unquoted — the only form
 * ClickHouse 18.16 accepts for `Decimal` in JSON, and one every later release
 * reads too. Timestamps are integer microseconds (`Int64` columns); the
 * `DateTime` columns used for partitions and TTL are computed by the server.
 *
 * Everything ClickHouse could refuse is checked here first, because one bad
 * row fails a whole insert: a field of the wrong type or shape, a decimal with
 * more than 20 integer or 18 fraction digits (after trimming leading and
 * trailing zeros), a timestamp outside `DateTime`'s range, a string with a
 * lone UTF-16 surrogate. Such events throw
 * {@linkcode RowError}; the writer dead-letters them.
 *
 * @example
 * ```ts
 * import { toRow } from "./rows.ts";
 *
 * const { table, row } = toRow({
 *   kind: "trade", exchange: "binance", symbol: "BTC-USDT", venue_symbol: "BTCUSDT",
 *   ts_exchange: 1_700_000_000_123_456, ts_local: 1_700_000_000_124_000,
 *   trade_id: "42", price: "43251.12", qty: "0.00120000", side: "buy",
 * });
 * table; // "market_trades"
 * JSON.stringify(row); // {"exchange":"binance",…,"price":43251.12,"qty":0.00120000,"side":"buy"}
 * ```
 *
 * @module
 */

import { type EventKind, type Exchange, EXCHANGES, type MarketEvent } from "./events.ts";

/** The tables rows go to, in the order the writer inserts them. */
export const MARKET_TABLES = ["market_trades", "orderbook_snapshots", "quotes", "bars"] as const;
/** One of {@linkcode MARKET_TABLES}. */
export type MarketTable = typeof MARKET_TABLES[number];

/** The table each kind of event is stored in. */
export const TABLE_OF_KIND: Readonly<Record<EventKind, MarketTable>> = {
  trade: "market_trades",
  book: "orderbook_snapshots",
  top: "quotes",
  quote: "quotes",
  bar: "bars",
};

/** Largest timestamp a row may carry, in µs: the end of ClickHouse `DateTime` (2106-02-07). */
export const MAX_TIMESTAMP_US = 4_294_967_295_999_999;
/** Longest symbol, venue symbol or venue code accepted. */
export const MAX_NAME_LENGTH = 128;
/** Longest trade id accepted. */
export const MAX_TRADE_ID_LENGTH = 256;
/** Integer and fraction digits of the `Decimal(38, 18)` columns. */
export const DECIMAL_DIGITS = { integer: 20, fraction: 18 } as const;

/** A decimal as raw JSON number text (from `JSON.rawJSON`): serialized unquoted and exact. */
export interface RawDecimal {
  /** The number's text, e.g. `"0.00005100"`. */
  readonly rawJSON: string;
}

/** Fields every row has. */
export interface RowBase {
  /** The venue. */
  exchange: Exchange;
  /** Canonical symbol. */
  symbol: string;
  /** The venue's symbol. */
  venue_symbol: string;
  /** The venue's event time, µs since the epoch. */
  ts_exchange: number;
  /** When the frame arrived, µs since the epoch. */
  ts_local: number;
}

/** A row of `market_trades`. */
export interface TradeRow extends RowBase {
  /** The venue's trade id. */
  trade_id: string;
  /** Trade price. */
  price: RawDecimal;
  /** Trade size. */
  qty: RawDecimal;
  /** Aggressor side. */
  side: "buy" | "sell" | "unknown";
}

/** A row of `orderbook_snapshots`: a snapshot or a delta, levels as parallel arrays. */
export interface BookRow extends RowBase {
  /** Snapshot (replaces the book) or delta (changes the listed levels; size 0 removes). */
  action: "snapshot" | "delta";
  /** The venue's sequence, or null. */
  sequence: number | null;
  /** Bid prices, in the venue's order. */
  bid_prices: RawDecimal[];
  /** Bid sizes, same order. */
  bid_sizes: RawDecimal[];
  /** Ask prices, in the venue's order. */
  ask_prices: RawDecimal[];
  /** Ask sizes, same order. */
  ask_sizes: RawDecimal[];
}

/** A row of `quotes`: a top-of-book event or a quote. */
export interface QuoteRow extends RowBase {
  /** `"top"` for top-of-book events, `"quote"` for quotes. */
  source: "top" | "quote";
  /** Best bid price. */
  bid_price: RawDecimal;
  /** Best bid size. */
  bid_qty: RawDecimal;
  /** Best ask price. */
  ask_price: RawDecimal;
  /** Best ask size. */
  ask_qty: RawDecimal;
  /** Exchange code of the bid; `""` when the venue gives none (and for tops). */
  bid_exchange: string;
  /** Exchange code of the ask; `""` when the venue gives none (and for tops). */
  ask_exchange: string;
}

/** A row of `bars`. */
export interface BarRow extends RowBase {
  /** Bar length as the venue names it, e.g. `"1m"` (`interval` is a keyword in ClickHouse). */
  bar_interval: string;
  /** Bar start, µs since the epoch. */
  start: number;
  /** Open price. */
  open: RawDecimal;
  /** High price. */
  high: RawDecimal;
  /** Low price. */
  low: RawDecimal;
  /** Close price. */
  close: RawDecimal;
  /** Volume. */
  volume: RawDecimal;
  /** Trade count, or null. */
  trades: number | null;
  /** Volume-weighted average price, or null. */
  vwap: RawDecimal | null;
}

/** A row together with its table. */
export type MarketRow =
  | { table: "market_trades"; row: TradeRow }
  | { table: "orderbook_snapshots"; row: BookRow }
  | { table: "quotes"; row: QuoteRow }
  | { table: "bars"; row: BarRow };

/** Why an event cannot become a row. */
export type RowErrorReason =
  /** A field is missing or of the wrong type or shape. */
  | "malformed"
  /** A value does not fit its column (decimal digits, timestamp range). */
  | "out_of_range";

/** An event that cannot be stored; `reason` is what the dead letter carries. */
export class RowError extends Error {
  /** Machine-readable reason. */
  readonly reason: RowErrorReason;
  /** Creates the error. */
  constructor(reason: RowErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RowError";
    this.reason = reason;
  }
}

// ---------------------------------------------------------------------------
// Field checks
// ---------------------------------------------------------------------------

const rawJSON: (text: string) => RawDecimal =
  (JSON as unknown as { rawJSON?: (text: string) => RawDecimal }).rawJSON ??
    (() => {
      throw new Error("JSON.rawJSON is not available in this runtime (Deno 2 has it)");
    });

/** JSON-valid and fits Decimal(38, 18) as it is: the common case, checked in one regex. */
const FAST_DECIMAL = /^(?:0|[1-9]\d{0,19})(?:\.\d{1,18})?$/;
const ANY_DECIMAL = /^(\d+)(?:\.(\d+))?$/;
const EXCHANGE_SET: ReadonlySet<string> = new Set(EXCHANGES);

/**
 * `text` (an unsigned decimal string) as a {@linkcode RawDecimal} for a
 * `Decimal(38, 18)` column. Leading zeros of the integer part and trailing
 * zeros of the fraction are dropped only when needed to fit (or to be valid
 * JSON); the value never changes. Throws {@linkcode RowError}: "malformed" for
 * anything but digits with an optional fraction, "out_of_range" for more than
 * 20 integer or 18 fraction significant digits.
 *
 * @example
 * ```ts
 * JSON.stringify({ p: toRawDecimal("0.00005100") }); // '{"p":0.00005100}'
 * ```
 */
export function toRawDecimal(text: unknown, field = "value"): RawDecimal {
  return rawJSON(decimalText(text, field));
}

/**
 * `text` as the JSON number text {@linkcode toRawDecimal} wraps: the same
 * checks and trimming, without making a raw JSON object (for rows written
 * straight as text).
 */
function decimalText(text: unknown, field: string): string {
  if (typeof text !== "string") {
    throw new RowError("malformed", `${field} must be a decimal string, got ${typeName(text)}`);
  }
  if (FAST_DECIMAL.test(text)) return text;
  const match = ANY_DECIMAL.exec(text);
  if (!match) {
    throw new RowError("malformed", `${field} is not a decimal: ${JSON.stringify(clip(text))}`);
  }
  const integer = (match[1] ?? "").replace(/^0+(?=\d)/, "");
  const fraction = (match[2] ?? "").replace(/0+$/, "");
  if (integer.length > DECIMAL_DIGITS.integer || fraction.length > DECIMAL_DIGITS.fraction) {
    throw new RowError(
      "out_of_range",
      `${field} ${clip(text)} does not fit Decimal(38, 18) ` +
        `(at most ${DECIMAL_DIGITS.integer} integer and ${DECIMAL_DIGITS.fraction} fraction digits)`,
    );
  }
  return fraction === "" ? integer : `${integer}.${fraction}`;
}

function clip(text: string): string {
  return text.length > 64 ? `${text.slice(0, 64)}…` : text;
}

function typeName(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

function timestamp(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new RowError(
      "malformed",
      `${field} must be integer microseconds, got ${typeName(value)}`,
    );
  }
  if (value < 0 || value > MAX_TIMESTAMP_US) {
    throw new RowError("out_of_range", `${field} ${value} is outside 1970..2106`);
  }
  return value;
}

function name(value: unknown, field: string, max = MAX_NAME_LENGTH): string {
  if (typeof value !== "string" || value.length === 0 || value.length > max) {
    throw new RowError("malformed", `${field} must be a string of 1..${max} characters`);
  }
  // A lone surrogate is written as a "\ud800" escape, which ClickHouse refuses.
  if (!value.isWellFormed()) {
    throw new RowError("malformed", `${field} contains a lone UTF-16 surrogate`);
  }
  return value;
}

function exchangeOf(value: unknown): Exchange {
  if (typeof value !== "string" || !EXCHANGE_SET.has(value)) {
    throw new RowError("malformed", `Unknown exchange ${JSON.stringify(value)}`);
  }
  return value as Exchange;
}

function base(event: Record<string, unknown>): RowBase {
  return {
    exchange: exchangeOf(event.exchange),
    symbol: name(event.symbol, "symbol"),
    venue_symbol: name(event.venue_symbol, "venue_symbol"),
    ts_exchange: timestamp(event.ts_exchange, "ts_exchange"),
    ts_local: timestamp(event.ts_local, "ts_local"),
  };
}

function levels(value: unknown, side: string): [RawDecimal[], RawDecimal[]] {
  if (!Array.isArray(value)) throw new RowError("malformed", `${side} must be an array of levels`);
  const prices = new Array<RawDecimal>(value.length);
  const sizes = new Array<RawDecimal>(value.length);
  for (let i = 0; i < value.length; i++) {
    const level: unknown = value[i];
    if (!Array.isArray(level) || level.length !== 2) {
      throw new RowError("malformed", `${side}[${i}] must be a [price, size] pair`);
    }
    prices[i] = toRawDecimal(level[0], `${side}[${i}] price`);
    sizes[i] = toRawDecimal(level[1], `${side}[${i}] size`);
  }
  return [prices, sizes];
}

// ---------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------

/** A `market_trades` row from a trade event; throws {@linkcode RowError}. */
export function tradeRow(event: MarketEvent): TradeRow {
  const e = event as unknown as Record<string, unknown>;
  const side = e.side;
  if (side !== "buy" && side !== "sell" && side !== "unknown") {
    throw new RowError(
      "malformed",
      `side must be buy, sell or unknown, got ${JSON.stringify(side)}`,
    );
  }
  // Fields written out rather than spread from base(): this is the hot path.
  return {
    exchange: exchangeOf(e.exchange),
    symbol: name(e.symbol, "symbol"),
    venue_symbol: name(e.venue_symbol, "venue_symbol"),
    ts_exchange: timestamp(e.ts_exchange, "ts_exchange"),
    ts_local: timestamp(e.ts_local, "ts_local"),
    trade_id: name(e.trade_id, "trade_id", MAX_TRADE_ID_LENGTH),
    price: toRawDecimal(e.price, "price"),
    qty: toRawDecimal(e.qty, "qty"),
    side,
  };
}

/**
 * The `JSONEachRow` line of a trade event: exactly `JSON.stringify(tradeRow(event))`,
 * with the same checks and errors, written straight as text (no row object,
 * no raw JSON values) because trades are most of the data. Throws
 * {@linkcode RowError}.
 */
export function tradeLine(event: MarketEvent): string {
  const e = event as unknown as Record<string, unknown>;
  const side = e.side;
  if (side !== "buy" && side !== "sell" && side !== "unknown") {
    throw new RowError(
      "malformed",
      `side must be buy, sell or unknown, got ${JSON.stringify(side)}`,
    );
  }
  // Checked in tradeRow()'s order, so that the first fault reported is the same.
  const exchange = exchangeOf(e.exchange);
  const symbol = name(e.symbol, "symbol");
  const venueSymbol = name(e.venue_symbol, "venue_symbol");
  const tsExchange = timestamp(e.ts_exchange, "ts_exchange");
  const tsLocal = timestamp(e.ts_local, "ts_local");
  const tradeId = name(e.trade_id, "trade_id", MAX_TRADE_ID_LENGTH);
  const price = decimalText(e.price, "price");
  const qty = decimalText(e.qty, "qty");
  // Exchanges and sides are fixed words that need no escaping; -0 prints as 0 either way.
  return `{"exchange":"${exchange}","symbol":${JSON.stringify(symbol)},"venue_symbol":${
    JSON.stringify(venueSymbol)
  },"ts_exchange":${tsExchange},"ts_local":${tsLocal},"trade_id":${
    JSON.stringify(tradeId)
  },"price":${price},"qty":${qty},"side":"${side}"}`;
}

/** A name that needs no JSON escape: printable ASCII but `"` and `\\` (so its JSON text is the name). */
const PLAIN_NAME = String.raw`[\x20\x21\x23-\x5b\x5d-\x7e]`;
/**
 * One trade event exactly as the feeds encode it (fields in this order, no
 * whitespace), followed by `,` or `]`, with every value already within what
 * {@linkcode tradeLine} accepts — save timestamps of 16 digits, checked after.
 */
const ENCODED_TRADE = new RegExp(
  String.raw`\{"kind":"trade","exchange":"(${EXCHANGES.join("|")})",` +
    String.raw`"symbol":"(${PLAIN_NAME}{1,${MAX_NAME_LENGTH}})",` +
    String.raw`"venue_symbol":"(${PLAIN_NAME}{1,${MAX_NAME_LENGTH}})",` +
    String.raw`"ts_exchange":(0|[1-9]\d{0,15}),"ts_local":(0|[1-9]\d{0,15}),` +
    String.raw`"trade_id":"(${PLAIN_NAME}{1,${MAX_TRADE_ID_LENGTH}})",` +
    String.raw`"price":"(${FAST_DECIMAL.source.slice(1, -1)})",` +
    String.raw`"qty":"(${FAST_DECIMAL.source.slice(1, -1)})",` +
    String.raw`"side":"(buy|sell|unknown)"\}([,\]])`,
  "y",
);

/** Whether a timestamp's digits (no leading zeros) are within {@linkcode MAX_TIMESTAMP_US}. */
function inTimestampRange(digits: string): boolean {
  return digits.length < 16 || Number(digits) <= MAX_TIMESTAMP_US;
}

/**
 * The `JSONEachRow` lines of a message that is a JSON array of trade events
 * in the feeds' own encoding, appended to `out` — read straight from the text,
 * without parsing it into objects. Returns false (and appends nothing) for
 * anything else: another kind of event, other field order or spacing, a
 * string with an escape or outside printable ASCII, a value {@linkcode tradeLine}
 * would refuse or trim. Whenever it returns true, the lines are exactly those
 * of `JSON.parse(text).map(tradeLine)`; otherwise take that path.
 *
 * @example
 * ```ts
 * const lines: string[] = [];
 * encodedTradeLines(
 *   '[{"kind":"trade","exchange":"binance","symbol":"BTC-USDT","venue_symbol":"BTCUSDT",' +
 *     '"ts_exchange":1700000000123000,"ts_local":1700000000124000,"trade_id":"42",' +
 *     '"price":"43251.12","qty":"0.00120000","side":"buy"}]',
 *   lines,
 * ); // true; lines[0] has "price":43251.12,"qty":0.00120000
 * ```
 */
export function encodedTradeLines(text: string, out: string[]): boolean {
  if (text.charCodeAt(0) !== 0x5b /* [ */) return false;
  const start = out.length;
  const re = ENCODED_TRADE;
  re.lastIndex = 1;
  for (;;) {
    const m = re.exec(text);
    if (m === null || !inTimestampRange(m[4]!) || !inTimestampRange(m[5]!)) break;
    out.push(
      `{"exchange":"${m[1]}","symbol":"${m[2]}","venue_symbol":"${m[3]}","ts_exchange":${
        m[4]
      },"ts_local":${m[5]},"trade_id":"${m[6]}","price":${m[7]},"qty":${m[8]},"side":"${m[9]}"}`,
    );
    if (m[10] === "]") {
      if (re.lastIndex === text.length) return true;
      break;
    }
  }
  out.length = start;
  return false;
}

/** An `orderbook_snapshots` row from a book event (snapshot or delta); throws {@linkcode RowError}. */
export function bookRow(event: MarketEvent): BookRow {
  const e = event as unknown as Record<string, unknown>;
  const action = e.action;
  if (action !== "snapshot" && action !== "delta") {
    throw new RowError(
      "malformed",
      `action must be snapshot or delta, got ${JSON.stringify(action)}`,
    );
  }
  const sequence = e.sequence ?? null;
  if (sequence !== null && (typeof sequence !== "number" || !Number.isSafeInteger(sequence))) {
    throw new RowError(
      "malformed",
      `sequence must be an integer or null, got ${typeName(sequence)}`,
    );
  }
  const [bid_prices, bid_sizes] = levels(e.bids, "bids");
  const [ask_prices, ask_sizes] = levels(e.asks, "asks");
  return { ...base(e), action, sequence, bid_prices, bid_sizes, ask_prices, ask_sizes };
}

/** A `quotes` row from a top or quote event; throws {@linkcode RowError}. */
export function quoteRow(event: MarketEvent): QuoteRow {
  const e = event as unknown as Record<string, unknown>;
  const source = e.kind === "quote" ? "quote" : "top";
  const venueCode = (value: unknown, field: string): string => {
    if (source === "top" || value === null || value === undefined) return "";
    return name(value, field);
  };
  return {
    ...base(e),
    source,
    bid_price: toRawDecimal(e.bid_price, "bid_price"),
    bid_qty: toRawDecimal(e.bid_qty, "bid_qty"),
    ask_price: toRawDecimal(e.ask_price, "ask_price"),
    ask_qty: toRawDecimal(e.ask_qty, "ask_qty"),
    bid_exchange: venueCode(e.bid_exchange, "bid_exchange"),
    ask_exchange: venueCode(e.ask_exchange, "ask_exchange"),
  };
}

/** A `bars` row from a bar event; throws {@linkcode RowError}. */
export function barRow(event: MarketEvent): BarRow {
  const e = event as unknown as Record<string, unknown>;
  const trades = e.trades ?? null;
  if (
    trades !== null && (typeof trades !== "number" || !Number.isSafeInteger(trades) || trades < 0)
  ) {
    throw new RowError("malformed", `trades must be a non-negative integer or null`);
  }
  const vwap = e.vwap ?? null;
  return {
    ...base(e),
    bar_interval: name(e.interval, "interval", 32),
    start: timestamp(e.start, "start"),
    open: toRawDecimal(e.open, "open"),
    high: toRawDecimal(e.high, "high"),
    low: toRawDecimal(e.low, "low"),
    close: toRawDecimal(e.close, "close"),
    volume: toRawDecimal(e.volume, "volume"),
    trades,
    vwap: vwap === null ? null : toRawDecimal(vwap, "vwap"),
  };
}

/**
 * The row of any market event and the table it goes to. `event` may be
 * anything decoded from a message: whatever is not a storable event throws
 * {@linkcode RowError}.
 */
export function toRow(event: MarketEvent): MarketRow {
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    throw new RowError("malformed", `An event must be an object, got ${typeName(event)}`);
  }
  switch ((event as { kind?: unknown }).kind) {
    case "trade":
      return { table: "market_trades", row: tradeRow(event) };
    case "book":
      return { table: "orderbook_snapshots", row: bookRow(event) };
    case "top":
    case "quote":
      return { table: "quotes", row: quoteRow(event) };
    case "bar":
      return { table: "bars", row: barRow(event) };
    default:
      throw new RowError(
        "malformed",
        `Unknown event kind ${JSON.stringify((event as { kind?: unknown }).kind)}`,
      );
  }
}

/** A row as its `JSONEachRow` line, together with its table. */
export interface MarketRowLine {
  /** The table the row goes to. */
  table: MarketTable;
  /** `JSON.stringify` of the row, without a line break. */
  line: string;
}

/**
 * The `JSONEachRow` line of any market event and its table: the same as
 * `JSON.stringify(toRow(event).row)`, faster for trades ({@linkcode tradeLine}).
 * Throws {@linkcode RowError} where {@linkcode toRow} does.
 *
 * @example
 * ```ts
 * const { table, line } = toRowLine(event);
 * lines[table].push(line);
 * ```
 */
export function toRowLine(event: MarketEvent): MarketRowLine {
  if (
    typeof event === "object" && event !== null && !Array.isArray(event) &&
    (event as { kind?: unknown }).kind === "trade"
  ) {
    return { table: "market_trades", line: tradeLine(event) };
  }
  const { table, row } = toRow(event);
  return { table, line: JSON.stringify(row) };
}

/**
 * The identity of a stored trade (`exchange`, `symbol`, `ts_exchange`,
 * `trade_id`: the end of `market_trades`' sorting key), as one string.
 */
export function tradeKey(
  exchange: string,
  symbol: string,
  tsExchange: number | string,
  tradeId: string,
): string {
  return `${exchange}\u0000${symbol}\u0000${tsExchange}\u0000${tradeId}`;
}

/** Rows as a `JSONEachRow` body: one JSON object a line. */
export function encodeJsonEachRow(rows: readonly object[]): string {
  let body = "";
  for (const row of rows) body += JSON.stringify(row) + "\n";
  return body;
}
