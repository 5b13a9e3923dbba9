/**
 * Normalized market data: what every feed publishes, whatever the venue.
 *
 * Prices and sizes are the exact decimal strings the venue sent (never
 * floats). Timestamps are integer microseconds since the Unix epoch: the
 * venue's own (`ts_exchange`) and when the frame arrived here (`ts_local`).
 *
 * @module
 */

/** The venues Tradewire speaks to. */
export const EXCHANGES = ["binance", "coinbase", "kraken", "alpaca"] as const;
/** One of {@linkcode EXCHANGES}. */
export type Exchange = typeof EXCHANGES[number];

/** The kinds of normalized event; each is a subject token: `md.<kind>.<exchange>.<symbol>`. */
export const EVENT_KINDS = ["trade", "book", "top", "quote", "bar"] as const;
/** One of {@linkcode EVENT_KINDS}. */
export type EventKind = typeof EVENT_KINDS[number];

/**
 * A canonical symbol: `BASE-QUOTE` for crypto (`BTC-USDT`) or a ticker
 * (`AAPL`, `BRK.B`). Each is also a valid NATS subject token once its dots are
 * replaced (`symbolToken`).
 */
export const CANONICAL_SYMBOL_PATTERN = /^(?:[A-Z0-9]{1,15}-[A-Z0-9]{1,15}|[A-Z][A-Z0-9.]{0,9})$/;

/** A decimal number as the exact text the venue sent, e.g. `"0.00005100"`. */
export type Decimal = string;

/** One price level: `[price, size]`; a size of zero removes the level in a delta. */
export type Level = [price: Decimal, size: Decimal];

/** Fields every event carries. */
export interface EventBase {
  /** Which venue. */
  exchange: Exchange;
  /** Canonical symbol: `BASE-QUOTE` for crypto (`BTC-USDT`), the ticker for stocks (`AAPL`). */
  symbol: string;
  /** The venue's own symbol (`BTCUSDT`, `BTC/USD`, `BTC-USD`, `AAPL`). */
  venue_symbol: string;
  /** The venue's event time, microseconds since the epoch. */
  ts_exchange: number;
  /** When the frame was received here, microseconds since the epoch. */
  ts_local: number;
}

/** A trade (a print). */
export interface TradeEvent extends EventBase {
  kind: "trade";
  /** The venue's trade id, unique per venue and symbol. */
  trade_id: string;
  /** Trade price. */
  price: Decimal;
  /** Trade size. */
  qty: Decimal;
  /** The aggressor's side; "unknown" where the venue does not say (stocks). */
  side: "buy" | "sell" | "unknown";
}

/** An order-book change: a full snapshot, or a delta of changed levels (size "0" removes). */
export interface BookEvent extends EventBase {
  kind: "book";
  /**
   * Snapshot replaces the book; delta changes the listed levels. A snapshot
   * too large for one message comes as parts (`SnapshotPart` of
   * `market/validation.ts`: part 0 replaces the book, later parts of the same
   * `ts_exchange`, `ts_local` and `sequence` add deeper levels).
   */
  action: "snapshot" | "delta";
  /** Bid levels, best first in snapshots. */
  bids: Level[];
  /** Ask levels, best first in snapshots. */
  asks: Level[];
  /** The venue's sequence for this update (Binance final update id `u`, Coinbase `sequence_num`); null when it has none. */
  sequence: number | null;
}

/** Best bid and ask of a venue's book (Binance bookTicker, Coinbase ticker, Kraken book top). */
export interface TopEvent extends EventBase {
  kind: "top";
  bid_price: Decimal;
  bid_qty: Decimal;
  ask_price: Decimal;
  ask_qty: Decimal;
}

/** A consolidated or exchange quote (Alpaca `"q"`). */
export interface QuoteEvent extends EventBase {
  kind: "quote";
  bid_price: Decimal;
  bid_qty: Decimal;
  ask_price: Decimal;
  ask_qty: Decimal;
  /** Exchange codes of the bid and ask, where the venue gives them. */
  bid_exchange: string | null;
  ask_exchange: string | null;
}

/** An OHLCV bar. */
export interface BarEvent extends EventBase {
  kind: "bar";
  /** Bar length, e.g. `"1m"`. */
  interval: string;
  /** Bar start, microseconds since the epoch. */
  start: number;
  open: Decimal;
  high: Decimal;
  low: Decimal;
  close: Decimal;
  volume: Decimal;
  /** Number of trades in the bar, where given. */
  trades: number | null;
  /** Volume-weighted average price, where given. */
  vwap: Decimal | null;
}

/** Any normalized market-data event. */
export type MarketEvent = TradeEvent | BookEvent | TopEvent | QuoteEvent | BarEvent;

/**
 * A frame that could not be understood. Feeds count it, dead-letter it with
 * the raw frame, and carry on.
 */
export class MalformedFrameError extends Error {
  /** Makes an error with a sentence-case `message` saying what is wrong. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MalformedFrameError";
  }
}

/** Microseconds since the epoch from milliseconds since the epoch. */
export function msToUs(ms: number): number {
  return Math.round(ms * 1000);
}

const RFC_3339 =
  /^((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2}))(?:\.(\d+))?(Z|[+-](\d{2}):(\d{2}))$/;

/**
 * Microseconds since the epoch from an RFC 3339 timestamp with any number of
 * fraction digits (`2026-08-09T21:05:48.228568804Z` keeps its microseconds).
 * Throws a {@linkcode MalformedFrameError} when `text` is not one, or names
 * no instant from the epoch on: a day its month does not have
 * (`2026-02-30`, which `Date.parse` would read as March 2nd), hour 24, a
 * minute, second or offset out of range, a time before 1970.
 */
export function isoToUs(text: string): number {
  const match = RFC_3339.exec(text);
  if (!match) throw new MalformedFrameError(`Invalid timestamp ${JSON.stringify(text)}`);
  const [, dateTime, y, mo, d, h, mi, s, fraction = "", zone, zh = "0", zm = "0"] = match;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  if (
    month < 1 || month > 12 || day < 1 ||
    day > new Date(Date.UTC(year, month, 0)).getUTCDate() || Number(h) > 23 ||
    Number(mi) > 59 || Number(s) > 59 || Number(zh) > 23 || Number(zm) > 59
  ) {
    throw new MalformedFrameError(`Timestamp ${JSON.stringify(text)} names no instant`);
  }
  const ms = Date.parse(`${dateTime}${zone}`);
  if (!(ms >= 0)) {
    throw new MalformedFrameError(`Timestamp ${JSON.stringify(text)} is before 1970`);
  }
  return ms * 1000 + Number(fraction.padEnd(6, "0").slice(0, 6));
}
