/**
 * Market-data validation: the pure rules the validator actor applies to every
 * batch of {@linkcode MarketEvent}s before they are stored, and the small
 * per-symbol state they need (reference price, recent trade ids, last book
 * sequence). No I/O and no clock: the caller passes `nowUs`.
 *
 * Each refused event gets one stable machine reason, checked in this order
 * (the first that applies wins):
 *
 * | reason | refused when |
 * | --- | --- |
 * | `schema` | it does not have the shape of a `MarketEvent` (or does not match the message subject) |
 * | `non_positive` | a price ≤ 0, a trade size ≤ 0, a negative size, a zero-size snapshot level, a negative quote side |
 * | `stale` | `ts_exchange` is more than `max_lag_ms` behind `nowUs` (a bar: its end, `start` + interval, if later; an event marked {@linkcode AsOfReceipt}: `ts_local`, if later) |
 * | `future` | `ts_exchange` is more than `max_future_ms` ahead of `nowUs` |
 * | `inconsistent_bar` | a bar's low/high do not bound its open and close |
 * | `crossed_book` | a top/quote with both sides > 0 and bid ≥ ask; a snapshot whose best bid ≥ best ask |
 * | `out_of_order` | a book delta whose sequence is not greater than the last accepted one; a snapshot part that does not follow the part before it |
 * | `duplicate` | a trade id already accepted among the last `duplicate_window` ids of the symbol |
 * | `spike` | a trade price, or a top/quote mid, more than `spike_pct` % from the reference price |
 *
 * Decisions:
 * - Quotes and tops may have a zero price and size on one side or both (Alpaca
 *   sends `0` for a missing side); negative values are refused. They are checked
 *   for crossing and spikes only when both prices are > 0.
 * - Trades may arrive slightly out of order: they are not sequence-checked, only
 *   held to the stale/future window. Book deltas with a `sequence` must be
 *   strictly increasing per (exchange, symbol); a snapshot is accepted whatever
 *   its sequence and restarts the count (a reconnect restarts Coinbase's
 *   counter); deltas with a null sequence (Kraken) are not checked.
 * - A snapshot too large for one message comes as parts
 *   ({@linkcode SnapshotPart}: `part` 0…`parts` − 1, every part an
 *   `action: "snapshot"` event with the same `ts_exchange`, `ts_local` and
 *   `sequence`, the best levels first). Together the parts are one snapshot:
 *   part 0 replaces the book and each later part adds its (deeper) levels.
 *   A later part must follow the part before it, accepted, of the same
 *   snapshot (else `out_of_order`); once a part is refused, the snapshot's
 *   later parts are refused for the same reason, so what is accepted of a
 *   snapshot is always its best levels. Crossing is checked over the parts
 *   accepted so far. The sequence rule treats the parts as one snapshot.
 * - Every event is held to `stale` by its own time (`ts_exchange`; a bar by
 *   its end) — a top too: a ticker delivered minutes late is refused, not
 *   served as a fresh price (the latest-price cache and the execution engine
 *   measure freshness on `ts_local`, the receive time, so they cannot tell).
 *   The exception is an event marked {@linkcode AsOfReceipt}: a Kraken book
 *   snapshot, which Kraken stamps with the time the book last changed
 *   (minutes old on a quiet pair), and the top made from it. They state the
 *   book as it was when sent, so they are held to the later of `ts_exchange`
 *   and `ts_local`. Receive time cannot reveal a late delivery, so the mark
 *   is set only where the venue's time is known not to be the send time.
 * - No full book is kept per symbol: feeds already keep and verify their books
 *   (Binance/Coinbase sequence gaps, Kraken checksums); the validator checks each
 *   snapshot for crossing and each delta's levels and sequence.
 * - The reference price of (exchange, symbol) is the median of per-second
 *   buckets holding the last accepted trade price of each second (by
 *   `ts_exchange`), over `reference_window_ms`; the median is recomputed only
 *   when a bucket closes or expires, never per event. A closed bucket stays
 *   while it started less than the window (rounded up to whole seconds)
 *   before the current second, and the bucket just closed always stays, so a
 *   window of one second or less still has a reference: the previous second.
 *   Spike arithmetic uses floats (it is a tolerance test, not money).
 * - Warm-up: spikes are checked only once {@linkcode REFERENCE_MIN_BUCKETS}
 *   closed buckets have entered the reference (3; fewer when the window
 *   cannot hold that many: all it can). Until then — cold start, which is
 *   every restart of the validator, or after a gap longer than the window
 *   (the window emptied) — the reference is null and every trade is accepted
 *   and seeds it. A median of three seconds outvotes one bad print, where a
 *   reference of the first second alone would make one bad print (its last
 *   trade) refuse every normal trade after it for a whole window. So a bad
 *   print at cold start refuses nothing; it can hold a trade back only with a
 *   window of three seconds or less, and then for at most two seconds. The
 *   warm-up is done once: after it, spikes are checked against whatever
 *   closed buckets remain in the window (at least one), so a thin symbol
 *   trading in fewer than three seconds of a window keeps its reference.
 * - Refused events never enter the reference; but they move its clock, so a
 *   genuine jump larger than `spike_pct` is refused while the old level holds
 *   a bucket of the window (at most one window), after which the window has
 *   emptied and the new level warms it up again.
 * - Trade ids are remembered only once accepted, so a refused trade can be
 *   re-sent; the memory holds the last `duplicate_window` ids per symbol
 *   ({@linkcode TradeIdWindow}: numeric ids in typed arrays, so a large window
 *   costs the garbage collector nothing).
 * - Bid/ask crossing is decided exactly: a float comparison proves "not
 *   crossed" (rounding is monotonic), and only otherwise
 *   {@linkcode compareDecimal} decides.
 * - With `enabled: false` only the `schema` check runs, so downstream never sees
 *   malformed events.
 * - Extra fields on an event are allowed and passed through untouched (but
 *   `part` and `parts` on a book event must make a {@linkcode SnapshotPart},
 *   and `as_of_receipt`, only on a book snapshot or a top, must be `true`).
 *
 * @example
 * ```ts
 * import { Validator } from "./validation.ts";
 *
 * const validator = new Validator({ spike_pct: 5 });
 * const payload = '[{"kind":"trade","exchange":"binance","symbol":"BTC-USDT","venue_symbol":' +
 *   '"BTCUSDT","ts_exchange":1700000000000000,"ts_local":1700000000001000,"trade_id":"1",' +
 *   '"price":"0","qty":"1","side":"buy"}]';
 * const { accepted, rejected } = validator.validate(JSON.parse(payload), 1700000000002000);
 * // accepted: [], rejected: [{ event, reason: "non_positive", detail: "price 0 is not positive" }]
 * ```
 *
 * @module
 */

import {
  type BookEvent,
  EVENT_KINDS,
  type EventKind,
  type Exchange,
  EXCHANGES,
  type Level,
  type MarketEvent,
} from "./events.ts";
import { compareDecimal, isDecimal, isZero } from "./decimal.ts";
import { symbolToken } from "./subjects.ts";
import { TradeIdWindow } from "./trade_ids.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** Every reason the validator refuses an event for, as it appears in dead letters and figures. */
export const REJECT_REASONS = [
  "schema",
  "non_positive",
  "stale",
  "future",
  "inconsistent_bar",
  "crossed_book",
  "out_of_order",
  "duplicate",
  "spike",
] as const;
/** One of {@linkcode REJECT_REASONS}. */
export type RejectReason = typeof REJECT_REASONS[number];

/** Default `spike_pct`: percent from the reference price beyond which a trade is a spike. */
export const DEFAULT_SPIKE_PCT = 10;
/** Default `reference_window_ms`: the reference price's rolling window. */
export const DEFAULT_REFERENCE_WINDOW_MS = 60_000;
/** Default `max_future_ms`: how far ahead of now an exchange time may be. */
export const DEFAULT_MAX_FUTURE_MS = 5_000;
/** Default `max_lag_ms`: how far behind now an exchange time may be. */
export const DEFAULT_MAX_LAG_MS = 120_000;
/** Default `duplicate_window`: trade ids remembered per (exchange, symbol). */
export const DEFAULT_DUPLICATE_WINDOW = 10_000;
/** Default bound on the (exchange, symbol) pairs whose state is kept. */
export const DEFAULT_MAX_SYMBOLS = 10_000;
/** Width of one reference-price bucket, in milliseconds. */
export const REFERENCE_BUCKET_MS = 1_000;
/**
 * Closed buckets that must enter the reference (its warm-up, at cold start and
 * after the window empties) before spikes are checked (a window holding fewer
 * at most: all it can), so that one bad print is outvoted by the seconds after it.
 */
export const REFERENCE_MIN_BUCKETS = 3;

/** The thresholds that overrides may change, per exchange or per exchange/symbol. */
export interface Thresholds {
  /** Percent from the reference price beyond which a trade or mid is a spike (> 0). */
  spike_pct: number;
  /** Window of the reference price's median, in ms (≥ 1). */
  reference_window_ms: number;
  /** How far ahead of now `ts_exchange` may be, in ms (≥ 0). */
  max_future_ms: number;
  /** How far behind now `ts_exchange` may be, in ms (≥ 1). */
  max_lag_ms: number;
}

/** Some thresholds, as an override gives them; missing or undefined keys are inherited. */
export type PartialThresholds = { readonly [K in keyof Thresholds]?: number | undefined };

/**
 * Options of a {@linkcode Validator}; `Config["validator"]` (config/mod.ts) is
 * one. Thresholds are resolved per (exchange, symbol): an `exchange/SYMBOL`
 * override beats an `exchange` override, which beats these defaults.
 */
export interface ValidatorOptions {
  /** Run the market-sanity rules; when false only `schema` is checked. @default {true} */
  enabled?: boolean;
  /** @default {DEFAULT_SPIKE_PCT} */
  spike_pct?: number;
  /** @default {DEFAULT_REFERENCE_WINDOW_MS} */
  reference_window_ms?: number;
  /** @default {DEFAULT_MAX_FUTURE_MS} */
  max_future_ms?: number;
  /** @default {DEFAULT_MAX_LAG_MS} */
  max_lag_ms?: number;
  /** Trade ids remembered per (exchange, symbol). @default {DEFAULT_DUPLICATE_WINDOW} */
  duplicate_window?: number;
  /** Overrides keyed `exchange` or `exchange/SYMBOL` (canonical symbol). @default {{}} */
  overrides?: Readonly<Record<string, PartialThresholds>>;
  /**
   * Most (exchange, symbol) pairs whose state is kept; beyond it the pair
   * seen first is forgotten (its reference, trade ids and sequence).
   * @default {DEFAULT_MAX_SYMBOLS}
   */
  maxSymbols?: number;
}

/** Options of {@linkcode Validator.validate}. */
export interface ValidateOptions {
  /**
   * The subject the batch came on (`md.<kind>.<exchange>.<symbol>`); when
   * given, every event must have that kind, exchange and symbol, else it is
   * refused with `schema`.
   */
  subject?: string;
}

/** An event refused because it is not a well-formed `MarketEvent`. */
export interface SchemaRejection {
  /** The input as it was (anything JSON can hold). */
  event: unknown;
  /** Always `"schema"`. */
  reason: "schema";
  /** What is wrong with it. */
  detail: string;
}

/** A well-formed event refused by a market rule. */
export interface EventRejection {
  /** The refused event. */
  event: MarketEvent;
  /** Why. */
  reason: Exclude<RejectReason, "schema">;
  /** Human-readable detail (values and thresholds involved). */
  detail: string;
}

/** One refused input. */
export type Rejection = SchemaRejection | EventRejection;

/** What {@linkcode Validator.validate} returns; every input is in exactly one list, in input order. */
export interface ValidationResult {
  /** Events that passed every rule. */
  accepted: MarketEvent[];
  /** Inputs refused, with their reason. */
  rejected: Rejection[];
}

const UNIT_US: Readonly<Record<string, number>> = {
  s: 1e6,
  m: 60e6,
  h: 3_600e6,
  d: 86_400e6,
  w: 604_800e6,
  M: 2_678_400e6, // 31 days: a calendar month at most
};

/**
 * The length of a bar `interval` as venues name it (`"1m"`, `"5m"`, `"1h"`,
 * `"1d"`, `"1w"`, `"1M"`), in µs; 0 for a name it does not know.
 */
export function intervalUs(interval: string): number {
  const match = /^(\d{1,4})([smhdwM])$/.exec(interval);
  return match === null ? 0 : Number(match[1]) * UNIT_US[match[2]!]!;
}

/**
 * The field marking an event whose `ts_exchange` is the time the venue's book
 * last changed rather than the time the venue sent it: a Kraken book snapshot
 * and the top made from it (`venues/kraken/book_sync.ts`). Such an event
 * states the book as it was when sent, so the `stale` rule holds it to when it
 * was received (`ts_local`) when that is later; `ts_exchange` keeps the
 * venue's time, so stored rows and the latest-price cache keep their order.
 * Only a book snapshot or a top may carry it, and only as `true`.
 *
 * @example
 * ```ts
 * const mark = { as_of_receipt: true }; // on a Kraken snapshot and the top made from it
 * ```
 */
export interface AsOfReceipt {
  /** `ts_exchange` is the book's last change; the event holds as of `ts_local`. */
  as_of_receipt: true;
}

/** Whether `event` carries the {@linkcode AsOfReceipt} mark. */
export function isAsOfReceipt(event: MarketEvent): boolean {
  return (event as MarketEvent & Partial<AsOfReceipt>).as_of_receipt === true;
}

/**
 * The time the `stale` rule holds against `max_lag_ms`: `ts_exchange`, but
 * - for a bar its end when that is later — Alpaca stamps a bar with its start
 *   only, and sends its running daily bar all day long;
 * - for a book snapshot or a top marked {@linkcode AsOfReceipt} `ts_local`
 *   (when it was received) when that is later — Kraken stamps a snapshot, and
 *   so the top made from it, with the time the book last changed, which for a
 *   quiet book can be minutes before.
 *
 * Any other top is held to `ts_exchange`: its receive time is about now
 * whenever it arrives, so it would let a price minutes old through as fresh.
 */
export function staleAt(event: MarketEvent): number {
  switch (event.kind) {
    case "bar":
      return Math.max(event.ts_exchange, event.start + intervalUs(event.interval));
    case "book":
    case "top":
      return isAsOfReceipt(event) ? Math.max(event.ts_exchange, event.ts_local) : event.ts_exchange;
    default:
      return event.ts_exchange;
  }
}

/**
 * The fields that mark one part of a book snapshot published as several
 * events (a Coinbase snapshot is far larger than one NATS message). Every
 * part is an `action: "snapshot"` {@linkcode BookEvent} with the snapshot's
 * `ts_exchange`, `ts_local` and `sequence`; part 0 holds the best levels and
 * replaces the book, each later part adds the next deeper levels. A snapshot
 * in one event has neither field.
 *
 * @example
 * ```ts
 * const parts = [{ part: 0, parts: 2 }, { part: 1, parts: 2 }]; // on two snapshot events
 * ```
 */
export interface SnapshotPart {
  /** Which part, from 0. */
  part: number;
  /** How many parts the snapshot has (≥ 2). */
  parts: number;
}

/** The {@linkcode SnapshotPart} fields of a book event, or null when it is a whole snapshot or a delta. */
export function snapshotPart(event: BookEvent): SnapshotPart | null {
  const { part, parts } = event as BookEvent & Partial<SnapshotPart>;
  return part === undefined || parts === undefined ? null : { part, parts };
}

/** The parts of a market-data subject `md.<kind>.<exchange>.<symbol token>`. */
export interface MarketSubject {
  /** The event kind token. */
  kind: EventKind;
  /** The exchange token. */
  exchange: Exchange;
  /** The symbol token (dots of the symbol written as underscores). */
  token: string;
}

const KIND_SET: ReadonlySet<string> = new Set(EVENT_KINDS);
const EXCHANGE_SET: ReadonlySet<string> = new Set(EXCHANGES);
const MINUS = 45; // "-"

/** Whether `value` is one of {@linkcode EXCHANGES}. */
export function isExchange(value: unknown): value is Exchange {
  return typeof value === "string" && EXCHANGE_SET.has(value);
}

/**
 * Parses `md.<kind>.<exchange>.<symbol>` (optionally with a `clean.` prefix);
 * null when `subject` is not one.
 *
 * @example
 * ```ts
 * parseMarketSubject("md.trade.binance.BTC-USDT");
 * // { kind: "trade", exchange: "binance", token: "BTC-USDT" }
 * ```
 */
export function parseMarketSubject(subject: string): MarketSubject | null {
  const tokens = subject.split(".");
  if (tokens[0] === "clean") tokens.shift();
  if (tokens.length !== 4 || tokens[0] !== "md") return null;
  const [, kind, exchange, token] = tokens as [string, string, string, string];
  if (!KIND_SET.has(kind) || !EXCHANGE_SET.has(exchange) || token === "") return null;
  return { kind: kind as EventKind, exchange: exchange as Exchange, token };
}

/**
 * What is wrong with the shape of `value` as a {@linkcode MarketEvent}, or null
 * when it has one. Decimal fields may carry a leading minus here: negative
 * values are well-formed and refused later as `non_positive`. Never throws.
 *
 * @example
 * ```ts
 * schemaProblem({ kind: "trade" }); // "exchange undefined is not a known exchange"
 * schemaProblem(null); // "event is not an object"
 * ```
 */
export function schemaProblem(value: unknown): string | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "event is not an object";
  }
  const e = value as Record<string, unknown>;
  const kind = e.kind;
  if (typeof kind !== "string" || !KIND_SET.has(kind)) return `kind ${show(kind)} is not known`;
  if (!isExchange(e.exchange)) return `exchange ${show(e.exchange)} is not a known exchange`;
  if (typeof e.symbol !== "string" || e.symbol === "") return "symbol is not a non-empty string";
  if (typeof e.venue_symbol !== "string" || e.venue_symbol === "") {
    return "venue_symbol is not a non-empty string";
  }
  if (!isTimestamp(e.ts_exchange)) return `ts_exchange ${show(e.ts_exchange)} is not an integer`;
  if (!isTimestamp(e.ts_local)) return `ts_local ${show(e.ts_local)} is not an integer`;
  switch (kind as EventKind) {
    case "trade":
      if (typeof e.trade_id !== "string" || e.trade_id === "") {
        return "trade_id is not a non-empty string";
      }
      if (!isSignedDecimal(e.price)) return decimalProblem("price", e.price);
      if (!isSignedDecimal(e.qty)) return decimalProblem("qty", e.qty);
      if (e.side !== "buy" && e.side !== "sell" && e.side !== "unknown") {
        return `side ${show(e.side)} is not buy, sell or unknown`;
      }
      return null;
    case "book":
      if (e.action !== "snapshot" && e.action !== "delta") {
        return `action ${show(e.action)} is not snapshot or delta`;
      }
      if (e.sequence !== null && !isTimestamp(e.sequence)) {
        return `sequence ${show(e.sequence)} is neither null nor a non-negative integer`;
      }
      return partProblem(e) ?? asOfReceiptProblem(e) ?? levelsProblem("bids", e.bids) ??
        levelsProblem("asks", e.asks);
    case "top":
      return asOfReceiptProblem(e) ?? sidesProblem(e);
    case "quote":
      if (e.bid_exchange !== null && typeof e.bid_exchange !== "string") {
        return "bid_exchange is neither null nor a string";
      }
      if (e.ask_exchange !== null && typeof e.ask_exchange !== "string") {
        return "ask_exchange is neither null nor a string";
      }
      return sidesProblem(e);
    case "bar":
      if (typeof e.interval !== "string" || e.interval === "") {
        return "interval is not a non-empty string";
      }
      if (!isTimestamp(e.start)) return `start ${show(e.start)} is not an integer`;
      for (const field of BAR_DECIMALS) {
        if (!isSignedDecimal(e[field])) return decimalProblem(field, e[field]);
      }
      if (e.trades !== null && !isTimestamp(e.trades)) {
        return `trades ${show(e.trades)} is neither null nor a non-negative integer`;
      }
      if (e.vwap !== null && !isSignedDecimal(e.vwap)) return decimalProblem("vwap", e.vwap);
      return null;
  }
}

const BAR_DECIMALS = ["open", "high", "low", "close", "volume"] as const;
const SIDE_DECIMALS = ["bid_price", "bid_qty", "ask_price", "ask_qty"] as const;

function sidesProblem(e: Record<string, unknown>): string | null {
  for (const field of SIDE_DECIMALS) {
    if (!isSignedDecimal(e[field])) return decimalProblem(field, e[field]);
  }
  return null;
}

/** What is wrong with the `part`/`parts` fields of a book event, or null (also when it has neither). */
function partProblem(e: Record<string, unknown>): string | null {
  const { part, parts } = e;
  if (part === undefined && parts === undefined) return null;
  if (e.action !== "snapshot") return "part and parts are only allowed on a snapshot";
  if (!isTimestamp(parts) || parts < 2) return `parts ${show(parts)} is not an integer >= 2`;
  if (!isTimestamp(part) || part >= parts) {
    return `part ${show(part)} is not an integer from 0 to ${parts - 1}`;
  }
  return null;
}

/** What is wrong with the `as_of_receipt` mark of a book or top event, or null (also when it has none). */
function asOfReceiptProblem(e: Record<string, unknown>): string | null {
  const mark = e.as_of_receipt;
  if (mark === undefined) return null;
  if (e.kind === "book" && e.action !== "snapshot") {
    return "as_of_receipt is only allowed on a book snapshot or a top";
  }
  return mark === true ? null : `as_of_receipt ${show(mark)} is not true`;
}

function levelsProblem(side: string, levels: unknown): string | null {
  if (!Array.isArray(levels)) return `${side} is not an array`;
  for (let i = 0; i < levels.length; i++) {
    const level: unknown = levels[i];
    if (
      !Array.isArray(level) || level.length !== 2 || !isSignedDecimal(level[0]) ||
      !isSignedDecimal(level[1])
    ) {
      return `${side}[${i}] ${show(level)} is not a [price, size] pair of decimal strings`;
    }
  }
  return null;
}

/** A non-negative safe integer (timestamps in µs, sequences, counts). */
function isTimestamp(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** A decimal string, possibly negative (`"-1.5"`). */
function isSignedDecimal(value: unknown): value is string {
  if (typeof value !== "string") return false;
  if (isDecimal(value)) return true;
  return value.charCodeAt(0) === MINUS && isDecimal(value.slice(1));
}

/** A well-formed decimal that is > 0. */
function isPositive(text: string): boolean {
  return text.charCodeAt(0) !== MINUS && !isZero(text);
}

/** A well-formed decimal that is ≥ 0 (`"-0"` counts as negative). */
function isNonNegative(text: string): boolean {
  return text.charCodeAt(0) !== MINUS;
}

function decimalProblem(field: string, value: unknown): string {
  return `${field} ${show(value)} is not a decimal string`;
}

/** A short JSON rendering of a value for details; never throws. */
function show(value: unknown): string {
  if (value === undefined) return "undefined";
  try {
    const text = JSON.stringify(value) ?? String(value);
    return text.length > 80 ? `${text.slice(0, 77)}...` : text;
  } catch {
    return String(value);
  }
}

/** The book snapshot a pair's next snapshot part must continue. */
interface SnapshotState {
  readonly ts_exchange: number;
  readonly ts_local: number;
  readonly sequence: number | null;
  /** The part expected next. */
  next: number;
  /** How many parts it has (1: a whole snapshot). */
  readonly parts: number;
  /** Why a part of it was refused (its later parts are refused too), or null. */
  refused: Exclude<RejectReason, "schema"> | null;
  /** Best bid and ask over its accepted parts, null for a side with no level. */
  bestBid: string | null;
  bestAsk: string | null;
}

/** The state of one (exchange, symbol). */
interface SymbolState {
  readonly limits: Thresholds;
  /** Reference window in buckets (≥ 2: the bucket just closed always stays). */
  readonly windowBuckets: number;
  /** Closed buckets the warm-up needs (1 to {@linkcode REFERENCE_MIN_BUCKETS}). */
  readonly minBuckets: number;
  /**
   * Closed buckets still needed before spikes are checked: `minBuckets` for a
   * new state and whenever the window has emptied, counted down as buckets
   * close, 0 once the warm-up is done.
   */
  warmUp: number;
  /** Last accepted book sequence, null when none (or after a snapshot without one). */
  sequence: number | null;
  /** The snapshot whose parts are being checked (since its part 0 or whole event), null after a delta. */
  snapshot: SnapshotState | null;
  /** The last `duplicate_window` accepted trade ids. */
  readonly tradeIds: TradeIdWindow;
  /** Latest bucket (second) seen by any event of the pair; -1 before the first. */
  bucket: number;
  /** Bucket of the open (not yet closed) bucket, -1 when none. */
  openBucket: number;
  /** Last accepted trade price in the open bucket. */
  openPrice: number;
  /** Closed buckets, oldest first, and their prices. */
  readonly closedBuckets: number[];
  readonly closedPrices: number[];
  /** Median of `closedPrices`, or null during the warm-up (`warmUp` > 0) or with none. */
  reference: number | null;
}

/**
 * The validator's rules and state. One instance per validating process; it is
 * not shared between threads and keeps state per (exchange, symbol).
 *
 * @example
 * ```ts
 * const validator = new Validator({ overrides: { "kraken/DOGE-USD": { spike_pct: 20 } } });
 * validator.thresholds("kraken", "DOGE-USD").spike_pct; // 20
 * const result = validator.validate([null], Date.now() * 1000, {
 *   subject: "md.trade.kraken.DOGE-USD",
 * });
 * result.accepted; // []
 * result.rejected; // [{ event: null, reason: "schema", detail: "event is not an object" }]
 * ```
 */
export class Validator {
  readonly #enabled: boolean;
  readonly #defaults: Thresholds;
  readonly #overrides: Readonly<Record<string, PartialThresholds>>;
  readonly #duplicateWindow: number;
  readonly #maxSymbols: number;
  readonly #states = new Map<string, SymbolState>();
  #lastExchange = "";
  #lastSymbol = "";
  #lastState: SymbolState | undefined;

  /** Creates a validator with no state. Throws a `RangeError` on a non-positive window or bound. */
  constructor(options: ValidatorOptions = {}) {
    this.#enabled = options.enabled ?? true;
    this.#defaults = {
      spike_pct: options.spike_pct ?? DEFAULT_SPIKE_PCT,
      reference_window_ms: options.reference_window_ms ?? DEFAULT_REFERENCE_WINDOW_MS,
      max_future_ms: options.max_future_ms ?? DEFAULT_MAX_FUTURE_MS,
      max_lag_ms: options.max_lag_ms ?? DEFAULT_MAX_LAG_MS,
    };
    this.#overrides = options.overrides ?? {};
    this.#duplicateWindow = options.duplicate_window ?? DEFAULT_DUPLICATE_WINDOW;
    this.#maxSymbols = options.maxSymbols ?? DEFAULT_MAX_SYMBOLS;
    assertPositiveInteger(this.#duplicateWindow, "duplicate_window");
    assertPositiveInteger(this.#maxSymbols, "maxSymbols");
    checkThresholds(this.#defaults, "defaults");
    for (const [key, override] of Object.entries(this.#overrides)) {
      checkThresholds(override, `override ${key}`);
    }
  }

  /** (exchange, symbol) pairs whose state is kept. */
  get symbols(): number {
    return this.#states.size;
  }

  /**
   * The thresholds in force for (exchange, symbol): the `exchange/SYMBOL`
   * override, then the `exchange` override, then the defaults.
   */
  thresholds(exchange: Exchange, symbol: string): Readonly<Thresholds> {
    return this.#state(exchange, symbol).limits;
  }

  /**
   * The current reference price of (exchange, symbol), or null when it has
   * none (during its warm-up: until {@linkcode REFERENCE_MIN_BUCKETS} closed
   * buckets, or all a shorter window holds, have entered it since the state
   * was made or its window last emptied): spikes are checked against it.
   */
  reference(exchange: Exchange, symbol: string): number | null {
    return this.#states.get(`${exchange}/${symbol}`)?.reference ?? null;
  }

  /**
   * Validates `batch` (anything: a non-array is one `schema` rejection) at
   * time `nowUs` (µs since the epoch), updating the per-symbol state with the
   * accepted events. Never throws.
   */
  validate(batch: unknown, nowUs: number, options: ValidateOptions = {}): ValidationResult {
    const accepted: MarketEvent[] = [];
    const rejected: Rejection[] = [];
    if (!Array.isArray(batch)) {
      rejected.push({ event: batch, reason: "schema", detail: "message is not a JSON array" });
      return { accepted, rejected };
    }
    if (batch.length === 0) {
      rejected.push({ event: batch, reason: "schema", detail: "message is an empty array" });
      return { accepted, rejected };
    }
    const subject = options.subject === undefined ? undefined : parseMarketSubject(options.subject);
    if (subject === null) {
      for (const event of batch) {
        rejected.push({
          event,
          reason: "schema",
          detail: `subject ${options.subject} is not md.<kind>.<exchange>.<symbol>`,
        });
      }
      return { accepted, rejected };
    }
    for (let i = 0; i < batch.length; i++) {
      const item: unknown = batch[i];
      const problem = schemaProblem(item);
      if (problem !== null) {
        rejected.push({ event: item, reason: "schema", detail: problem });
        continue;
      }
      const event = item as MarketEvent;
      if (
        subject !== undefined &&
        (event.kind !== subject.kind || event.exchange !== subject.exchange ||
          (event.symbol !== subject.token && symbolToken(event.symbol) !== subject.token))
      ) {
        rejected.push({
          event,
          reason: "schema",
          detail: `${event.kind} of ${event.exchange} ${event.symbol} does not belong on ${
            options.subject ?? ""
          }`,
        });
        continue;
      }
      if (!this.#enabled) {
        accepted.push(event);
        continue;
      }
      const refusal = this.#check(event, nowUs);
      if (refusal === null) accepted.push(event);
      else rejected.push(refusal);
    }
    return { accepted, rejected };
  }

  /**
   * Applies the market rules to a well-formed event; updates state when it is
   * accepted. A book snapshot is first placed: a whole one or part 0 starts a
   * snapshot, a later part must continue the one before it.
   */
  #check(event: MarketEvent, nowUs: number): EventRejection | null {
    if (event.kind !== "book" || event.action !== "snapshot") return this.#rules(event, nowUs);
    const state = this.#state(event.exchange, event.symbol);
    const part = snapshotPart(event);
    let snapshot: SnapshotState;
    if (part === null || part.part === 0) {
      snapshot = {
        ts_exchange: event.ts_exchange,
        ts_local: event.ts_local,
        sequence: event.sequence,
        next: 0,
        parts: part?.parts ?? 1,
        refused: null,
        bestBid: null,
        bestAsk: null,
      };
    } else {
      const current = state.snapshot;
      const same = current !== null && current.parts === part.parts &&
        current.ts_exchange === event.ts_exchange && current.ts_local === event.ts_local &&
        current.sequence === event.sequence;
      if (same && current.refused !== null && current.next < part.part) {
        return {
          event,
          reason: current.refused,
          detail: `snapshot part ${part.part} of ${part.parts} belongs to a snapshot whose ` +
            `earlier part was refused (${current.refused})`,
        };
      }
      if (!same || current.refused !== null || current.next !== part.part) {
        return {
          event,
          reason: "out_of_order",
          detail: `snapshot part ${part.part} of ${part.parts} does not follow part ${
            part.part - 1
          } of the same snapshot`,
        };
      }
      snapshot = current;
    }
    state.snapshot = snapshot;
    const refusal = this.#rules(event, nowUs);
    if (refusal === null) snapshot.next++;
    else snapshot.refused = refusal.reason;
    return refusal;
  }

  /** The market rules of {@linkcode Validator.validate}, in their documented order. */
  #rules(event: MarketEvent, nowUs: number): EventRejection | null {
    const nonPositive = nonPositiveProblem(event);
    if (nonPositive !== null) return { event, reason: "non_positive", detail: nonPositive };
    const state = this.#state(event.exchange, event.symbol);
    const { limits } = state;
    const ts = event.ts_exchange;
    const lastTs = staleAt(event);
    if (lastTs < nowUs - limits.max_lag_ms * 1000) {
      const what = lastTs === ts
        ? `ts_exchange ${ts}`
        : event.kind === "bar"
        ? `bar ending at ${lastTs}`
        : `ts_local ${lastTs}`;
      return {
        event,
        reason: "stale",
        detail: `${what} is ${
          Math.round((nowUs - lastTs) / 1000)
        } ms behind now (max_lag_ms ${limits.max_lag_ms})`,
      };
    }
    if (ts > nowUs + limits.max_future_ms * 1000) {
      return {
        event,
        reason: "future",
        detail: `ts_exchange ${ts} is ${
          Math.round((ts - nowUs) / 1000)
        } ms ahead of now (max_future_ms ${limits.max_future_ms})`,
      };
    }
    switch (event.kind) {
      case "trade": {
        advance(state, ts);
        if (state.tradeIds.has(event.trade_id)) {
          return {
            event,
            reason: "duplicate",
            detail: `trade_id ${event.trade_id} already seen for ${event.exchange} ${event.symbol}`,
          };
        }
        const price = Number(event.price);
        const spike = spikeProblem(state, price, "price");
        if (spike !== null) return { event, reason: "spike", detail: spike };
        state.tradeIds.add(event.trade_id);
        state.openBucket = state.bucket;
        state.openPrice = price;
        return null;
      }
      case "top":
      case "quote": {
        advance(state, ts);
        if (isZero(event.bid_price) || isZero(event.ask_price)) return null;
        const bid = Number(event.bid_price);
        const ask = Number(event.ask_price);
        if (!(bid < ask) && compareDecimal(event.bid_price, event.ask_price) >= 0) {
          return {
            event,
            reason: "crossed_book",
            detail: `bid ${event.bid_price} is not below ask ${event.ask_price}`,
          };
        }
        const spike = spikeProblem(state, (bid + ask) / 2, "mid");
        return spike === null ? null : { event, reason: "spike", detail: spike };
      }
      case "book": {
        const snapshot = state.snapshot;
        if (event.action === "snapshot" && snapshot !== null) {
          // The best bid and ask over this part and the parts of the snapshot before it.
          const bid = bestPrice(event.bids, 1, snapshot.bestBid);
          const ask = bestPrice(event.asks, -1, snapshot.bestAsk);
          if (
            bid !== null && ask !== null && !(Number(bid) < Number(ask)) &&
            compareDecimal(bid, ask) >= 0
          ) {
            return {
              event,
              reason: "crossed_book",
              detail: `best bid ${bid} is not below best ask ${ask}`,
            };
          }
          snapshot.bestBid = bid;
          snapshot.bestAsk = ask;
          state.sequence = event.sequence;
          return null;
        }
        state.snapshot = null;
        if (event.sequence === null) return null;
        if (state.sequence !== null && event.sequence <= state.sequence) {
          return {
            event,
            reason: "out_of_order",
            detail: `sequence ${event.sequence} is not after ${state.sequence}`,
          };
        }
        state.sequence = event.sequence;
        return null;
      }
      case "bar": {
        const { open, high, low, close } = event;
        if (
          compareDecimal(low, high) > 0 || compareDecimal(open, low) < 0 ||
          compareDecimal(open, high) > 0 || compareDecimal(close, low) < 0 ||
          compareDecimal(close, high) > 0
        ) {
          return {
            event,
            reason: "inconsistent_bar",
            detail: `open ${open} high ${high} low ${low} close ${close} are inconsistent`,
          };
        }
        return null;
      }
    }
  }

  #state(exchange: Exchange, symbol: string): SymbolState {
    if (
      this.#lastState !== undefined && exchange === this.#lastExchange &&
      symbol === this.#lastSymbol
    ) {
      return this.#lastState;
    }
    const key = `${exchange}/${symbol}`;
    let state = this.#states.get(key);
    if (state === undefined) {
      if (this.#states.size >= this.#maxSymbols) {
        const oldest = this.#states.keys().next().value;
        if (oldest !== undefined) this.#states.delete(oldest);
      }
      const limits = this.#resolve(exchange, key);
      // A closed bucket B stays while the current one is before B + windowBuckets: with fewer
      // than 2, the bucket just closed would expire as it closes and leave no reference.
      const windowBuckets = Math.max(
        2,
        Math.ceil(limits.reference_window_ms / REFERENCE_BUCKET_MS),
      );
      const minBuckets = Math.min(REFERENCE_MIN_BUCKETS, windowBuckets - 1);
      state = {
        limits,
        windowBuckets,
        minBuckets,
        warmUp: minBuckets,
        sequence: null,
        snapshot: null,
        tradeIds: new TradeIdWindow(this.#duplicateWindow),
        bucket: -1,
        openBucket: -1,
        openPrice: 0,
        closedBuckets: [],
        closedPrices: [],
        reference: null,
      };
      this.#states.set(key, state);
    }
    this.#lastExchange = exchange;
    this.#lastSymbol = symbol;
    this.#lastState = state;
    return state;
  }

  #resolve(exchange: Exchange, key: string): Thresholds {
    const limits = { ...this.#defaults };
    for (const override of [this.#overrides[exchange], this.#overrides[key]]) {
      if (override === undefined) continue;
      for (const name of THRESHOLD_NAMES) {
        const value = override[name];
        if (value !== undefined) limits[name] = value;
      }
    }
    return Object.freeze(limits);
  }
}

const THRESHOLD_NAMES = [
  "spike_pct",
  "reference_window_ms",
  "max_future_ms",
  "max_lag_ms",
] as const satisfies ReadonlyArray<keyof Thresholds>;

function checkThresholds(limits: PartialThresholds, where: string): void {
  const { spike_pct, reference_window_ms, max_future_ms, max_lag_ms } = limits;
  if (spike_pct !== undefined && !(spike_pct > 0)) {
    throw new RangeError(`spike_pct of ${where} must be > 0, got ${spike_pct}`);
  }
  if (reference_window_ms !== undefined && !(reference_window_ms >= 1)) {
    throw new RangeError(
      `reference_window_ms of ${where} must be >= 1, got ${reference_window_ms}`,
    );
  }
  if (max_future_ms !== undefined && !(max_future_ms >= 0)) {
    throw new RangeError(`max_future_ms of ${where} must be >= 0, got ${max_future_ms}`);
  }
  if (max_lag_ms !== undefined && !(max_lag_ms >= 1)) {
    throw new RangeError(`max_lag_ms of ${where} must be >= 1, got ${max_lag_ms}`);
  }
}

/** Why a well-formed event has a value out of range, or null. */
function nonPositiveProblem(event: MarketEvent): string | null {
  switch (event.kind) {
    case "trade":
      if (!isPositive(event.price)) return `price ${event.price} is not positive`;
      if (!isPositive(event.qty)) return `qty ${event.qty} is not positive`;
      return null;
    case "top":
    case "quote":
      for (const field of SIDE_DECIMALS) {
        if (!isNonNegative(event[field])) return `${field} ${event[field]} is negative`;
      }
      return null;
    case "book": {
      const snapshot = event.action === "snapshot";
      return levelRangeProblem("bids", event.bids, snapshot) ??
        levelRangeProblem("asks", event.asks, snapshot);
    }
    case "bar":
      for (const field of ["open", "high", "low", "close"] as const) {
        if (!isPositive(event[field])) return `${field} ${event[field]} is not positive`;
      }
      if (!isNonNegative(event.volume)) return `volume ${event.volume} is negative`;
      if (event.vwap !== null && !isNonNegative(event.vwap)) {
        return `vwap ${event.vwap} is negative`;
      }
      return null;
  }
}

function levelRangeProblem(side: string, levels: Level[], snapshot: boolean): string | null {
  for (let i = 0; i < levels.length; i++) {
    const [price, size] = levels[i]!;
    if (!isPositive(price)) return `${side}[${i}] price ${price} is not positive`;
    if (snapshot ? !isPositive(size) : !isNonNegative(size)) {
      return `${side}[${i}] size ${size} is ${
        snapshot ? "not positive in a snapshot" : "negative"
      }`;
    }
  }
  return null;
}

/**
 * The best price of `levels` and `from` (the highest for `direction` 1, the
 * lowest for -1), exactly: floats find it (rounding is monotonic), and
 * {@linkcode compareDecimal} decides between prices equal as floats. Null
 * when both are empty.
 */
function bestPrice(levels: Level[], direction: 1 | -1, from: string | null): string | null {
  let best = from;
  let bestFloat = best === null ? NaN : Number(best) * direction;
  for (const [price] of levels) {
    const value = Number(price) * direction;
    if (
      best === null || value > bestFloat ||
      (value === bestFloat && compareDecimal(price, best) * direction > 0)
    ) {
      best = price;
      bestFloat = value;
    }
  }
  return best;
}

/**
 * Moves the pair's reference clock to the bucket of `tsUs` (never back):
 * closes the open bucket when a later one starts, drops buckets that left the
 * window, and recomputes the median only when the closed buckets changed.
 * The reference is null during the warm-up: until `minBuckets` buckets have
 * closed since the state was made or the window last emptied; after it, the
 * median of whatever closed buckets remain in the window.
 */
function advance(state: SymbolState, tsUs: number): void {
  const bucket = Math.floor(tsUs / (REFERENCE_BUCKET_MS * 1000));
  if (bucket <= state.bucket) return;
  state.bucket = bucket;
  let changed = false;
  if (state.openBucket >= 0 && state.openBucket < bucket) {
    state.closedBuckets.push(state.openBucket);
    state.closedPrices.push(state.openPrice);
    state.openBucket = -1;
    if (state.warmUp > 0) state.warmUp--;
    changed = true;
  }
  const oldest = bucket - state.windowBuckets;
  let expired = 0;
  while (expired < state.closedBuckets.length && state.closedBuckets[expired]! <= oldest) expired++;
  if (expired > 0) {
    state.closedBuckets.splice(0, expired);
    state.closedPrices.splice(0, expired);
    // A gap longer than the window emptied it: nothing outvotes the next print, warm up again.
    if (state.closedBuckets.length === 0) state.warmUp = state.minBuckets;
    changed = true;
  }
  if (changed) state.reference = state.warmUp > 0 ? null : median(state.closedPrices);
}

function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = values.slice().sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Why `value` is a spike against the pair's reference, or null (also with no reference). */
function spikeProblem(state: SymbolState, value: number, what: string): string | null {
  const reference = state.reference;
  if (reference === null) return null;
  const deviation = Math.abs(value - reference) * 100;
  if (deviation <= state.limits.spike_pct * reference) return null;
  return `${what} ${value} is ${
    (deviation / reference).toFixed(2)
  }% from reference ${reference} (spike_pct ${state.limits.spike_pct})`;
}
