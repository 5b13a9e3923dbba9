/**
 * The market-data HTTP API, mounted by the lead at `/api/v1/market-data`:
 *
 * | route | answers from |
 * | --- | --- |
 * | `GET /stream_status` | {@linkcode MarketStatus} (feeds, validator, writer) and the latest-price cache's counters |
 * | `GET /symbols` | configured symbols per enabled exchange, and what the cache has seen |
 * | `GET /latest/:symbol?exchange=` | the in-memory {@linkcode LatestCache} only, never ClickHouse |
 * | `GET /ticks/:symbol?exchange=&from=&to=&limit=&cursor=` | `market_trades`, newest first, keyset pages |
 * | `GET /candles/:symbol?interval=&exchange=&from=&to=&limit=` | `candles` (1-minute), aggregated to the interval |
 *
 * Parameters:
 * - `:symbol` is the canonical symbol (`BTC-USDT`, `AAPL`). It must be
 *   configured on, or have been seen from, one of the exchanges asked about;
 *   otherwise 400. `exchange` must be one of {@linkcode EXCHANGES} that is
 *   enabled (or has been seen); otherwise 400. Both are checked before any
 *   SQL is built, and every value placed into SQL goes through `literal` /
 *   `quoteIdentifier`.
 * - `from` (inclusive) and `to` (exclusive) are ISO-8601 times
 *   (`2024-05-01`, `2024-05-01T12:00Z`, `2024-05-01T12:00:00.123456+02:00`)
 *   or epoch integers: below 10^14 they are milliseconds, from 10^14 on
 *   microseconds (10^14 ms is the year 5138, 10^14 µs is 1973). `from > to`
 *   is a 400. A time past ClickHouse's `DateTime` (2106-02-07) is taken as
 *   it is: a `to` that late bounds nothing, a `from` that late finds nothing. Ticks filter on the venue time `ts_exchange`; candles on the
 *   candle start.
 * - `limit`: ticks 1..1000 (default 100), candles 1..1000 (default 500);
 *   anything else is a 400, never silently clamped.
 * - `cursor`: the `next_cursor` of the previous ticks page (opaque). Pages
 *   follow the keyset (`ts_exchange`, `exchange`, `trade_id`) descending
 *   (ids of one microsecond shorter first, so numeric ids go by number), so
 *   rows arriving meanwhile never shift a page (no OFFSET).
 * - Both ticks and candles read newest first, in windows that widen only
 *   while they come back short ({@linkcode readNewestFirst}): ticks the hour
 *   before the anchor, then the day, week and month before, then windows
 *   twice as deep each ({@linkcode tickWindows}); candles `limit` × the
 *   interval, then windows four times as deep each
 *   ({@linkcode candleWindows}). The anchor is the cursor, else now, or `to`
 *   when earlier; the first window is open above (up to `to`), so rows
 *   stamped ahead of our clock are not missed. Past a window that found
 *   nothing, cheap `LIMIT 1` probes find the newest older row (or that there
 *   is none, which ends the read). So an answer reads about what it returns,
 *   not the symbol's whole history, with or without `from`, with a `to` far
 *   ahead, and for a symbol halted long ago.
 * - Unknown query parameters are a 400 (a typo such as `form=` must not be
 *   silently ignored).
 *
 * Prices and sizes are decimal strings, exact (ClickHouse `toString` of
 * `Decimal(38, 18)`, trailing zeros trimmed: never a float, never an
 * exponent). Timestamps are integer µs since the epoch, plus an ISO-8601
 * `time`. ClickHouse unreachable, too busy to answer (too many queries,
 * out of memory, timed out: `CLICKHOUSE_BUSY_CODES` of the adapter), or its tables
 * missing, is a 503 `unavailable` with `Retry-After`. Every query carries a `query_id` starting with
 * {@linkcode API_QUERY_ID_PREFIX}; when the client goes away (the request's
 * signal aborts) its running query is killed (`KILL QUERY … ASYNC`, best
 * effort) and the request ends as a {@linkcode ClientGoneError}, logged at
 * debug level.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client";
import { ApiError, ClientGoneError, DATABASE_RETRY_AFTER_S } from "./errors.ts";
import { singleParams } from "./_params.ts";
import {
  clickHouseErrorCode,
  isClickHouseBusy,
  isClickHouseUnavailable,
  literal,
  quoteIdentifier,
} from "../adapters/clickhouse.ts";
import { type Exchange, EXCHANGES } from "../market/events.ts";
import { MAX_TRADE_ID_LENGTH } from "../market/rows.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import type { MarketStatus } from "../market/status.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { base64 } from "../lib/base64.ts";
import { type Logger, nullLogger } from "../lib/log.ts";

/** Default `limit` of `GET /ticks`. */
export const DEFAULT_TICKS_LIMIT = 100;
/** Default `limit` of `GET /candles`. */
export const DEFAULT_CANDLES_LIMIT = 500;
/** Largest `limit` of any route. */
export const MAX_LIMIT = 1000;
/** Candle intervals and their length in seconds. */
export const CANDLE_INTERVALS = {
  "1m": 60,
  "5m": 300,
  "15m": 900,
  "1h": 3_600,
  "1d": 86_400,
} as const;
/** One of the keys of {@linkcode CANDLE_INTERVALS}. */
export type CandleInterval = keyof typeof CANDLE_INTERVALS;
/** Epoch integers below this are milliseconds, from it on microseconds. */
export const EPOCH_US_THRESHOLD = 100_000_000_000_000;
/**
 * Latest second ClickHouse's `DateTime` holds (2106-02-07T06:28:15Z):
 * `toDateTime(n)` wraps modulo 2^32 beyond it, so bounds past it are dropped.
 */
export const MAX_DATETIME_S = 4_294_967_295;
/** How the `query_id` of every query of these routes starts (see `system.processes`). */
export const API_QUERY_ID_PREFIX = "tradewire-api-";
/** Settings of an existence probe: one thread reading one row at a time stops at the first. */
const PROBE_SETTINGS: ClickHouseSettings = { max_threads: 1, max_block_size: "1" };
/** How long the `KILL QUERY` of a query whose client went away may take, in ms. */
export const KILL_QUERY_TIMEOUT_MS = 2_000;

/** What the market-data routes read. */
export interface MarketDataDeps {
  /** ClickHouse client bound to `"default"`; tables are qualified with `database`. */
  clickhouse: ClickHouseClient;
  /** The database holding `market_trades` and `candles`. */
  database: string;
  /** The latest-price cache (fed by the latest-cache actor). */
  cache: LatestCache;
  /** The pipeline's figures. */
  status: MarketStatus;
  /** Configured symbols per enabled exchange. */
  symbols: () => Map<Exchange, string[]>;
  /** Where "now" comes from (the newest window of `GET /ticks`). @default {systemClock} */
  clock?: Clock;
  /** Where a `KILL QUERY` that failed is told (debug level). @default {nullLogger} */
  log?: Logger;
}

/** One trade of `GET /ticks`. */
export interface TickRow {
  /** The venue. */
  exchange: Exchange;
  /** Canonical symbol. */
  symbol: string;
  /** The venue's trade id. */
  trade_id: string;
  /** Price, exact decimal text. */
  price: string;
  /** Size, exact decimal text. */
  qty: string;
  /** Aggressor side. */
  side: string;
  /** Venue time, µs since the epoch. */
  ts_exchange: number;
  /** Local receive time, µs since the epoch. */
  ts_local: number;
  /** `ts_exchange` as ISO-8601 with microseconds. */
  time: string;
}

/** The body of `GET /ticks/:symbol`. */
export interface TicksPage {
  /** Canonical symbol. */
  symbol: string;
  /** The exchanges searched. */
  exchanges: Exchange[];
  /** Trades, newest first. */
  ticks: TickRow[];
  /** Pass as `cursor` for the next (older) page; null on the last page. */
  next_cursor: string | null;
}

/** One OHLCV row of `GET /candles`. */
export interface CandleRow {
  /** The venue. */
  exchange: Exchange;
  /** Candle start, µs since the epoch. */
  start: number;
  /** `start` as ISO-8601. */
  time: string;
  /** First trade price. */
  open: string;
  /** Highest trade price. */
  high: string;
  /** Lowest trade price. */
  low: string;
  /** Last trade price. */
  close: string;
  /** Traded size. */
  volume: string;
  /** Number of trades. */
  trades: number;
}

/** The body of `GET /candles/:symbol`. */
export interface CandlesPage {
  /** Canonical symbol. */
  symbol: string;
  /** The interval asked for. */
  interval: CandleInterval;
  /** The exchanges searched. */
  exchanges: Exchange[];
  /** The newest `limit` candles, oldest first; one row per exchange and start. */
  candles: CandleRow[];
}

/** A row of the candles query, every value as text. */
interface CandleQueryRow {
  ex: Exchange;
  bs: string;
  o: string;
  h: string;
  l: string;
  c: string;
  v: string;
  n: string;
}

/** A row of the ticks query, every value as text. */
interface TickQueryRow {
  ex: Exchange;
  id: string;
  p: string;
  q: string;
  sd: string;
  tse: string;
  tsl: string;
}

/**
 * Spans (seconds before the anchor) of the first windows `GET /ticks` reads in
 * turn; each later one reaches twice as far as the one before.
 */
export const TICK_WINDOWS_S = [3_600, 86_400, 7 * 86_400, 31 * 86_400] as const;
/** How many times further back each window of `GET /candles` reaches than the one before. */
export const CANDLE_WINDOW_GROWTH = 4;

/** One time window of a query, on a `DateTime` column in seconds: `[lower, upper)`, null = open. */
export interface ScanWindow {
  /** Inclusive lower bound, or null. */
  lower: number | null;
  /** Exclusive upper bound, or null. */
  upper: number | null;
}

/**
 * The windows of a newest-first read: the first reaches `span(0)` seconds
 * below `anchorS` and is open above (rows past the anchor are not missed),
 * each next one goes on down to `anchorS - span(i)`; the last is open below:
 * the one that reaches `fromS` (the `from` filter bounds it) or the epoch.
 * `span` must grow without bound. Pure.
 */
function scanWindows(
  anchorS: number,
  fromS: number | null,
  span: (i: number) => number,
): ScanWindow[] {
  const windows: ScanWindow[] = [];
  let upper: number | null = null;
  for (let i = 0;; i++) {
    const lower = anchorS - span(i);
    if (lower <= 0 || (fromS !== null && lower <= fromS)) {
      windows.push({ lower: null, upper });
      return windows;
    }
    windows.push({ lower, upper });
    upper = lower;
  }
}

/** Seconds below its anchor that window `i` of a ticks query reaches down to. */
function tickSpan(i: number): number {
  const last = TICK_WINDOWS_S.length - 1;
  return TICK_WINDOWS_S[i] ?? TICK_WINDOWS_S[last]! * 2 ** (i - last);
}

/** Seconds below its anchor that window `i` of a candles query reaches down to. */
function candleSpan(firstSpanS: number): (i: number) => number {
  if (!(firstSpanS > 0)) throw new RangeError(`firstSpanS must be positive; got ${firstSpanS}`);
  return (i) => firstSpanS * CANDLE_WINDOW_GROWTH ** i;
}

/**
 * The windows a ticks query reads while each comes back with rows, newest
 * first: the last hour before `anchorS` (open above, so trades past the
 * anchor are not missed), then the day, week and month before it, then
 * windows reaching twice as far back each (62 days, 124…), never one
 * open-ended window over the rest of the history; the last is open below, at
 * the window that reaches `fromS` (the `from` filter bounds it) or the epoch.
 * Past a window that found nothing, {@linkcode readNewestFirst} starts them
 * again below the gap. Pure.
 *
 * @example
 * ```ts
 * tickWindows(100_000, 99_000); // [{ lower: null, upper: null }]
 * tickWindows(100_000, null); // [{ lower: 96_400, upper: null }, { lower: null, upper: 96_400 }]
 * ```
 */
export function tickWindows(anchorS: number, fromS: number | null): ScanWindow[] {
  return scanWindows(anchorS, fromS, tickSpan);
}

/**
 * The windows a candles query reads while each comes back with rows, newest
 * first: `firstSpanS` (the candles asked for: `limit` × the interval) below
 * `anchorS`, open above, then each reaching {@linkcode CANDLE_WINDOW_GROWTH}
 * times further back; the last is open below, at the window that reaches
 * `fromS` or the epoch. With `anchorS` and `firstSpanS` multiples of the
 * interval, no candle of the interval straddles two windows. Pure.
 *
 * @example
 * ```ts
 * candleWindows(6_000, null, 3_000); // [{ lower: 3_000, upper: null }, { lower: null, upper: 3_000 }]
 * ```
 */
export function candleWindows(
  anchorS: number,
  fromS: number | null,
  firstSpanS: number,
): ScanWindow[] {
  return scanWindows(anchorS, fromS, candleSpan(firstSpanS));
}

/** How many times deeper each probe for the newest row below a gap reaches than the one before. */
const PROBE_GROWTH = 4;

/** Where {@linkcode readNewestFirst} reads. */
export interface NewestFirstSource<T> {
  /** The rows of `window`, newest first, at most `take`. */
  read(window: ScanWindow, take: number): Promise<T[]>;
  /** Whether any row lies in `window` (one is enough: a cheap probe). */
  exists(window: ScanWindow): Promise<boolean>;
}

/** Options of {@linkcode readNewestFirst}. */
export interface NewestFirstOptions {
  /** Where the windows start (the first is open above it), in seconds. */
  anchorS: number;
  /** The `from` filter in seconds, or null: the window reaching it is the last. */
  fromS: number | null;
  /** How far below its anchor window `i` reaches; grows without bound. */
  span: (i: number) => number;
  /** Rows wanted. */
  take: number;
}

/**
 * The newest `take` rows of `source`, read in windows from `anchorS` down
 * (see {@linkcode tickWindows}) until there are enough or nothing older is
 * left, so what is read follows what is asked, not the length of the
 * history. A window that comes back empty is a gap: the newest row below it
 * is found with {@linkcode NewestFirstSource.exists} probes (one over all
 * that is older: none ends the read; then ranges four times as deep each
 * until one holds a row, then halved down to `span(0)`), and the windows
 * start again from there. So a
 * symbol halted months ago costs a few probes, not a window over months of
 * its history.
 *
 * @example
 * ```ts
 * const rows = await readNewestFirst(source, { anchorS, fromS: null, span: tickSpan, take: 101 });
 * ```
 */
export async function readNewestFirst<T>(
  source: NewestFirstSource<T>,
  options: NewestFirstOptions,
): Promise<T[]> {
  const { fromS, span, take } = options;
  const step = span(0);
  const rows: T[] = [];
  let windows = scanWindows(options.anchorS, fromS, span);
  for (let i = 0; i < windows.length; i++) {
    const window = windows[i]!;
    const found = await source.read(window, take - rows.length);
    for (const row of found) rows.push(row);
    if (rows.length >= take || window.lower === null) break;
    if (found.length > 0) continue;
    const newest = await newestBefore(window.lower, step, fromS, source.exists);
    if (newest === null) break;
    // Again from the span holding that row; its first window reaches up to the empty one.
    windows = scanWindows(newest + step, fromS, span);
    windows[0] = { lower: windows[0]!.lower, upper: window.lower };
    i = -1;
  }
  return rows;
}

/**
 * The lower end of a range no longer than `stepS` holding the newest row
 * before `beforeS` (none lies between its upper end and `beforeS`), or null
 * when there is none (down to `fromS` or the epoch). Bounds move by multiples
 * of `stepS` from `beforeS`, or from 0 at the bottom.
 */
async function newestBefore(
  beforeS: number,
  stepS: number,
  fromS: number | null,
  exists: (window: ScanWindow) => Promise<boolean>,
): Promise<number | null> {
  // Anything at all first: the end of the history (the last page) costs one probe.
  if (!await exists({ lower: null, upper: beforeS })) return null;
  let upper = beforeS;
  let lower: number;
  for (let span = stepS;; span *= PROBE_GROWTH) {
    const reach = beforeS - span;
    if (reach <= 0 || (fromS !== null && reach <= fromS)) {
      lower = Math.max(0, fromS === null ? 0 : Math.floor(fromS / stepS) * stepS);
      break;
    }
    if (await exists({ lower: reach, upper })) {
      lower = reach;
      break;
    }
    upper = reach;
  }
  while (upper - lower > stepS) {
    const middle = lower + Math.ceil((upper - lower) / stepS / 2) * stepS;
    if (await exists({ lower: middle, upper })) lower = middle;
    else upper = middle;
  }
  return lower;
}

/** A position in the ticks keyset: the last row of a page. */
export interface TickCursor {
  /** Its venue time, µs. */
  ts_exchange: number;
  /** Its venue. */
  exchange: Exchange;
  /** Its trade id. */
  trade_id: string;
}

const EXCHANGE_SET: ReadonlySet<string> = new Set(EXCHANGES);
/**
 * Longest ticks cursor token: the base64url of `[ts, exchange, trade_id]` as JSON with the
 * longest trade id the writer stores ({@linkcode MAX_TRADE_ID_LENGTH} UTF-16 code units), each
 * unit at most 6 bytes there (a control character's `\u` escape; other characters take at most 3
 * UTF-8 bytes per unit), plus 64 bytes for the rest; base64 makes 4 characters of every 3 bytes.
 */
const MAX_TICK_CURSOR_LENGTH = Math.ceil((64 + 6 * MAX_TRADE_ID_LENGTH) / 3) * 4;

// ---------------------------------------------------------------------------
// Parameter parsing (pure)
// ---------------------------------------------------------------------------

function badRequest(message: string): ApiError {
  return new ApiError(400, "bad_request", message);
}

const ISO_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2}))?$/;

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/**
 * Microseconds since the epoch of an ISO-8601 date (UTC midnight) or time
 * with a zone (`Z` or `±hh:mm`), or null when `text` is not one or names a
 * day, hour, minute or zone that does not exist (`2024-02-31` is not read as
 * March 2nd) or a time before 1970. A fraction finer than the microsecond
 * goes up to the next microsecond (times are stored to the microsecond, and
 * the bounds are an inclusive `from` and an exclusive `to`).
 *
 * @example
 * ```ts
 * isoTimeUs("2024-01-01T00:00:00.5Z"); // 1704067200500000
 * isoTimeUs("2024-01-01T00:00:00.1234561Z"); // 1704067200123457
 * isoTimeUs("2024-02-30"); // null
 * ```
 */
export function isoTimeUs(text: string): number | null {
  const match = ISO_TIME.exec(text);
  if (match === null) return null;
  const [, y, mo, d, h = "00", mi = "00", s = "00", fraction = "", zone = "Z"] = match;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  if (
    month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) ||
    Number(h) > 23 || Number(mi) > 59 || Number(s) > 59 ||
    (zone !== "Z" && (Number(zone.slice(1, 3)) > 23 || Number(zone.slice(4)) > 59))
  ) return null;
  const ms = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${s}${zone}`);
  if (!Number.isFinite(ms) || ms < 0) return null;
  // Beyond the microsecond, up to the next one: right for an inclusive `from` (t ≥ x) and an
  // exclusive `to` (t < x) alike, times being stored to the microsecond.
  const beyond = /[1-9]/.test(fraction.slice(6)) ? 1 : 0;
  return ms * 1000 + Number(fraction.padEnd(6, "0").slice(0, 6)) + beyond;
}

/** The space a query string makes of the `+` of a zone offset (`12:00:00 02:00`). */
const UNENCODED_PLUS = / (?=\d{2}:\d{2}$)/;

/**
 * Microseconds since the epoch from a `from`/`to` parameter: an ISO-8601
 * date or time (a time needs a zone, `Z` or `±hh:mm`; a bare date is UTC
 * midnight) or an epoch integer (below {@linkcode EPOCH_US_THRESHOLD}
 * milliseconds, else microseconds). Throws a 400 {@linkcode ApiError} naming
 * `name` otherwise (saying to send `+` as `%2B` when the text is such a time
 * but for a space where its offset's `+` belongs, as a query string reads an
 * unencoded `+`).
 *
 * @example
 * ```ts
 * parseTimeParam("2024-01-01T00:00:00.5Z", "from"); // 1704067200500000
 * parseTimeParam("1704067200500", "from"); // same (ms)
 * parseTimeParam("1704067200500000", "from"); // same (µs)
 * ```
 */
export function parseTimeParam(text: string, name: string): number {
  if (/^\d{1,16}$/.test(text)) {
    const n = Number(text);
    // Past 2^53 µs (mid-2255) this is the nearest double, as for an ISO time that late: such a
    // bound lies past every DateTime (2106) and filters as the exact one would.
    return n < EPOCH_US_THRESHOLD ? n * 1000 : n;
  }
  const us = isoTimeUs(text);
  if (us !== null) return us;
  // `…T12:00:00+02:00` sent unencoded: a query string reads its `+` as a space.
  const plus = UNENCODED_PLUS.test(text) && isoTimeUs(text.replace(UNENCODED_PLUS, "+")) !== null;
  throw badRequest(
    `${name} must be an ISO-8601 time with a zone (2024-05-01T12:00:00Z), a date, ` +
      `or epoch milliseconds or microseconds; got ${JSON.stringify(text)}` +
      (plus ? " (a + in a query string reads as a space: send it as %2B)" : ""),
  );
}

/** Parses `limit` (an integer 1..{@linkcode MAX_LIMIT}); a 400 otherwise. */
function parseLimit(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d{1,7}$/.test(text)) {
    throw badRequest(
      `limit must be an integer from 1 to ${MAX_LIMIT}; got ${JSON.stringify(text)}`,
    );
  }
  const limit = Number(text);
  if (limit < 1 || limit > MAX_LIMIT) {
    throw badRequest(`limit must be from 1 to ${MAX_LIMIT}; got ${limit}`);
  }
  return limit;
}

/** Encodes a ticks keyset position as an opaque URL-safe token. */
export function encodeTickCursor(cursor: TickCursor): string {
  const json = JSON.stringify([cursor.ts_exchange, cursor.exchange, cursor.trade_id]);
  return base64(new TextEncoder().encode(json)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** Decodes a token of {@linkcode encodeTickCursor}; a 400 {@linkcode ApiError} when it is not one. */
export function decodeTickCursor(token: string): TickCursor {
  const invalid = () => badRequest("cursor is not a next_cursor of this API");
  if (token.length > MAX_TICK_CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(token)) throw invalid();
  let value: unknown;
  try {
    const binary = atob(token.replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(value) || value.length !== 3) throw invalid();
  const [ts, exchange, tradeId] = value as unknown[];
  if (
    typeof ts !== "number" || !Number.isSafeInteger(ts) ||
    typeof exchange !== "string" || !EXCHANGE_SET.has(exchange) ||
    typeof tradeId !== "string" || tradeId.length > MAX_TRADE_ID_LENGTH ||
    !tradeId.isWellFormed()
  ) throw invalid();
  return { ts_exchange: ts, exchange: exchange as Exchange, trade_id: tradeId };
}

/** Rejects query parameters other than `allowed`. */
function checkParams(c: Context, allowed: readonly string[]): Record<string, string> {
  const query = singleParams(c.req.queries());
  for (const name of Object.keys(query)) {
    if (!allowed.includes(name)) {
      throw badRequest(
        `Unknown parameter ${JSON.stringify(name)}; expected ${
          allowed.length ? allowed.join(", ") : "none"
        }`,
      );
    }
  }
  return query;
}

/** The range `[from, to)` in µs from the parameters, either end open. */
function parseRange(query: Record<string, string>): { from: number | null; to: number | null } {
  const from = query.from === undefined ? null : parseTimeParam(query.from, "from");
  const to = query.to === undefined ? null : parseTimeParam(query.to, "to");
  if (from !== null && to !== null && from > to) {
    throw badRequest(`from (${query.from}) is after to (${query.to})`);
  }
  return { from, to };
}

// ---------------------------------------------------------------------------
// Output formatting (pure)
// ---------------------------------------------------------------------------

/** Decimal text without trailing fraction zeros (`"1.500000"` → `"1.5"`, `"2.000"` → `"2"`). */
function trimDecimal(text: string): string {
  if (!text.includes(".")) return text;
  let end = text.length;
  while (text.charCodeAt(end - 1) === 48) end--;
  if (text.charCodeAt(end - 1) === 46) end--;
  return text.slice(0, end);
}

const UTF8 = new TextEncoder();

/** Bytes of `text` in UTF-8: ClickHouse's `length` of a String. */
function utf8Length(text: string): number {
  return UTF8.encode(text).length;
}

/** ISO-8601 with microseconds from µs since the epoch. */
function usToIso(us: number): string {
  const ms = Math.floor(us / 1000);
  const micros = us - ms * 1000;
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, -1)}${String(micros).padStart(3, "0")}Z`;
}

/**
 * `column op toDateTime(seconds)` for a `DateTime` column, meaning the same
 * for any `seconds` (no wrap past {@linkcode MAX_DATETIME_S} or below 0):
 * null when every `DateTime` satisfies it, `"0"` when none does.
 *
 * @example
 * ```ts
 * dateTimeBound("minute", "<", 5_680_281_600); // null: every DateTime is before 2150
 * dateTimeBound("minute", ">=", 1_700_000_000); // "minute >= toDateTime(1700000000)"
 * ```
 */
export function dateTimeBound(
  column: string,
  op: ">=" | "<" | "<=",
  seconds: number,
): string | null {
  const always = op === ">="
    ? seconds <= 0
    : op === "<"
    ? seconds > MAX_DATETIME_S
    : seconds >= MAX_DATETIME_S;
  const never = op === ">=" ? seconds > MAX_DATETIME_S : op === "<" ? seconds <= 0 : seconds < 0;
  if (always) return null;
  if (never) return "0";
  return `${column} ${op} toDateTime(${literal(seconds)})`;
}

/** The conditions keeping `column` within `window`. */
function windowBounds(column: string, window: ScanWindow): string[] {
  const bounds: string[] = [];
  if (window.lower !== null) pushBound(bounds, column, ">=", window.lower);
  if (window.upper !== null) pushBound(bounds, column, "<", window.upper);
  return bounds;
}

/** Pushes {@linkcode dateTimeBound} onto `where` unless it always holds. */
function pushBound(
  where: string[],
  column: string,
  op: ">=" | "<" | "<=",
  seconds: number,
): void {
  const bound = dateTimeBound(column, op, seconds);
  if (bound !== null) where.push(bound);
}

/**
 * Asks ClickHouse to stop the query `queryId` (`KILL QUERY … ASYNC`), within
 * {@linkcode KILL_QUERY_TIMEOUT_MS}. Best effort: a failure is logged at
 * debug level, never thrown (the query then runs to its end).
 */
async function killQuery(client: ClickHouseClient, queryId: string, log: Logger): Promise<void> {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), KILL_QUERY_TIMEOUT_MS);
  try {
    await client.command({
      query: `KILL QUERY WHERE query_id = ${literal(queryId)} ASYNC`,
      abort_signal: timeout.signal,
    });
  } catch (error) {
    log.debug("could not kill the query of a client that went away", {
      query_id: queryId,
      reason: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    });
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/**
 * The market-data routes (see the module documentation), to be mounted with
 * `app.route("/api/v1/market-data", marketDataRoutes(deps))` on an app whose
 * `onError` is {@linkcode errorHandler}.
 *
 * @example
 * ```ts
 * const app = new Hono();
 * app.onError(errorHandler(log));
 * app.route("/api/v1/market-data", marketDataRoutes({ clickhouse, database, cache, status, symbols }));
 * await app.request("/api/v1/market-data/ticks/BTC-USDT?limit=10");
 * ```
 */
export function marketDataRoutes(input: MarketDataDeps): Hono {
  const deps = { ...input, clock: input.clock ?? systemClock, log: input.log ?? nullLogger };
  const db = quoteIdentifier(deps.database);

  /** The exchanges a request may read `symbol` from; a 400 when there are none. */
  const resolve = (symbol: string, exchangeParam: string | undefined): Exchange[] => {
    const configured = deps.symbols();
    const knows = (exchange: Exchange) =>
      (configured.get(exchange)?.includes(symbol) ?? false) || deps.cache.has(symbol, exchange);
    if (exchangeParam !== undefined) {
      if (!EXCHANGE_SET.has(exchangeParam)) {
        throw badRequest(
          `Unknown exchange ${JSON.stringify(exchangeParam)}; expected one of ${
            EXCHANGES.join(", ")
          }`,
        );
      }
      const exchange = exchangeParam as Exchange;
      if (!configured.has(exchange) && !deps.cache.symbols().has(exchange)) {
        throw badRequest(`Exchange ${exchange} is not enabled`);
      }
      if (!knows(exchange)) {
        throw badRequest(`Unknown symbol ${JSON.stringify(symbol)} on ${exchange}`);
      }
      return [exchange];
    }
    const exchanges = EXCHANGES.filter(knows);
    if (exchanges.length === 0) {
      throw badRequest(`Unknown symbol ${JSON.stringify(symbol)}`);
    }
    return exchanges;
  };

  /**
   * Rows of `sql`. A query whose client went away (`signal` aborted) is
   * killed on the server, by its query id: ClickHouse does not stop an HTTP
   * SELECT when its connection closes (18.16 cannot; later releases only with
   * `cancel_http_readonly_queries_on_client_close`, off by default). Then a
   * {@linkcode ClientGoneError}.
   */
  const query = async <T>(
    sql: string,
    signal: AbortSignal,
    settings?: ClickHouseSettings,
  ): Promise<T[]> => {
    if (signal.aborted) throw new ClientGoneError("The client went away before the query");
    const queryId = `${API_QUERY_ID_PREFIX}${crypto.randomUUID()}`;
    try {
      const result = await deps.clickhouse.query({
        query: sql,
        format: "JSONEachRow",
        query_id: queryId,
        abort_signal: signal,
        ...(settings === undefined ? {} : { clickhouse_settings: settings }),
      });
      return await result.json<T>();
    } catch (error) {
      if (signal.aborted) {
        await killQuery(deps.clickhouse, queryId, deps.log);
        throw new ClientGoneError("The client went away during the query", { cause: error });
      }
      // Retry-After as on every 503 of the API (PostgreSQL's too): the request may be retried.
      const headers = { "Retry-After": String(DATABASE_RETRY_AFTER_S) };
      if (isClickHouseUnavailable(error)) {
        throw new ApiError(503, "unavailable", "ClickHouse is unreachable", {
          cause: error,
          headers,
        });
      }
      if (isClickHouseBusy(error)) {
        throw new ApiError(503, "unavailable", "ClickHouse is too busy to answer; try again", {
          cause: error,
          headers,
        });
      }
      const code = clickHouseErrorCode(error);
      if (code === 60 || code === 81) {
        throw new ApiError(
          503,
          "unavailable",
          "Market-data tables are missing (ClickHouse migrations not applied)",
          { cause: error, headers },
        );
      }
      throw error;
    }
  };

  /**
   * Whether `table` holds a row matching `where` with `column` in `window`:
   * one row is enough (`LIMIT 1`, read one row at a time on one thread), so
   * the primary key bounds what is read to about a granule.
   */
  const exists = async (
    table: string,
    column: string,
    window: ScanWindow,
    where: readonly string[],
    signal: AbortSignal,
  ): Promise<boolean> => {
    const conditions = [...where, ...windowBounds(column, window)];
    const found = await query<{ x: number }>(
      `SELECT 1 AS x FROM ${db}.${quoteIdentifier(table)} WHERE ${
        conditions.join(" AND ")
      } LIMIT 1`,
      signal,
      PROBE_SETTINGS,
    );
    return found.length > 0;
  };

  return new Hono()
    .get("/stream_status", (c) => {
      checkParams(c, []);
      return c.json({ ...deps.status.snapshot(), latest_cache: deps.cache.stats() });
    })
    .get("/symbols", (c) => {
      checkParams(c, []);
      const configured = deps.symbols();
      const seen = deps.cache.symbols();
      const exchanges: Record<string, { configured: string[]; seen: string[] }> = {};
      for (const exchange of EXCHANGES) {
        if (!configured.has(exchange) && !seen.has(exchange)) continue;
        exchanges[exchange] = {
          configured: [...(configured.get(exchange) ?? [])],
          seen: seen.get(exchange) ?? [],
        };
      }
      return c.json({ exchanges });
    })
    .get("/latest/:symbol", (c) => {
      const params = checkParams(c, ["exchange"]);
      const symbol = c.req.param("symbol");
      const exchanges = resolve(symbol, params.exchange);
      const snapshot = deps.cache.latest(
        symbol,
        params.exchange === undefined ? undefined : exchanges[0],
      );
      if (snapshot === null) {
        throw new ApiError(
          404,
          "not_found",
          `No market data seen yet for ${symbol}${
            params.exchange === undefined ? "" : ` on ${params.exchange}`
          }`,
        );
      }
      return c.json(snapshot);
    })
    .get("/ticks/:symbol", async (c) => {
      const params = checkParams(c, ["exchange", "from", "to", "limit", "cursor"]);
      const symbol = c.req.param("symbol");
      const exchanges = resolve(symbol, params.exchange);
      const { from, to } = parseRange(params);
      const limit = parseLimit(params.limit, DEFAULT_TICKS_LIMIT);
      const cursor = params.cursor === undefined ? null : decodeTickCursor(params.cursor);

      const where = [
        `symbol = ${literal(symbol)}`,
        `exchange IN (${exchanges.map((e) => literal(e)).join(", ")})`,
      ];
      // `timestamp` (whole seconds of ts_exchange) leads the sorting key after
      // exchange and symbol: bounding it lets ClickHouse skip granules.
      if (from !== null) {
        pushBound(where, "timestamp", ">=", Math.floor(from / 1e6));
        where.push(`ts_exchange >= ${literal(from)}`);
      }
      if (to !== null) {
        pushBound(where, "timestamp", "<=", Math.floor((to - 1) / 1e6));
        where.push(`ts_exchange < ${literal(to)}`);
      }
      if (cursor !== null) {
        // Strictly after the cursor in the order below.
        const ts = literal(cursor.ts_exchange);
        const ex = literal(cursor.exchange);
        const len = literal(utf8Length(cursor.trade_id));
        pushBound(where, "timestamp", "<=", Math.floor(cursor.ts_exchange / 1e6));
        where.push(
          `(ts_exchange < ${ts} OR (ts_exchange = ${ts} AND (exchange < ${ex} OR ` +
            `(exchange = ${ex} AND (length(trade_id) < ${len} OR ` +
            `(length(trade_id) = ${len} AND trade_id < ${literal(cursor.trade_id)}))))))`,
        );
      }
      // Trades of one microsecond go by trade id, shorter first, so numeric
      // ids sort as numbers (as the candles view orders them). Output aliases
      // differ from column names: ClickHouse lets an alias shadow a column in
      // WHERE and ORDER BY.
      const select = (extra: string[], take: number) =>
        `SELECT toString(exchange) AS ex, trade_id AS id,
          toString(price) AS p, toString(qty) AS q, toString(side) AS sd,
          toString(ts_exchange) AS tse, toString(ts_local) AS tsl
        FROM ${db}.market_trades FINAL
        WHERE ${[...where, ...extra].join(" AND ")}
        ORDER BY ts_exchange DESC, exchange DESC, length(trade_id) DESC, trade_id DESC
        LIMIT ${literal(take)}`;
      // Newest windows first, so a page of recent trades never reads (and
      // FINAL-merges) the whole history of the pair. The first page starts
      // from now even under a far `to` (its first window is open above, up to
      // `to`, so trades stamped ahead of our clock are not missed).
      const anchorUs = Math.min(
        to === null ? Infinity : to - 1,
        cursor === null ? deps.clock.now() * 1000 : cursor.ts_exchange,
      );
      const rows = await readNewestFirst<TickQueryRow>({
        read: (window, take) =>
          query<TickQueryRow>(select(windowBounds("timestamp", window), take), c.req.raw.signal),
        exists: (window) => exists("market_trades", "timestamp", window, where, c.req.raw.signal),
      }, {
        // No trade is stored past MAX_DATETIME_S: a later anchor starts where the data can be.
        anchorS: Math.min(Math.floor(anchorUs / 1e6), MAX_DATETIME_S),
        fromS: from === null ? null : Math.floor(from / 1e6),
        span: tickSpan,
        take: limit + 1,
      });
      const more = rows.length > limit;
      const ticks: TickRow[] = [];
      for (let i = 0; i < rows.length && i < limit; i++) {
        const row = rows[i]!;
        const tsExchange = Number(row.tse);
        ticks.push({
          exchange: row.ex,
          symbol,
          trade_id: row.id,
          price: trimDecimal(row.p),
          qty: trimDecimal(row.q),
          side: row.sd,
          ts_exchange: tsExchange,
          ts_local: Number(row.tsl),
          time: usToIso(tsExchange),
        });
      }
      const last = ticks[ticks.length - 1];
      const page: TicksPage = {
        symbol,
        exchanges,
        ticks,
        next_cursor: more && last
          ? encodeTickCursor({
            ts_exchange: last.ts_exchange,
            exchange: last.exchange,
            trade_id: last.trade_id,
          })
          : null,
      };
      return c.json(page);
    })
    .get("/candles/:symbol", async (c) => {
      const params = checkParams(c, ["interval", "exchange", "from", "to", "limit"]);
      const symbol = c.req.param("symbol");
      const exchanges = resolve(symbol, params.exchange);
      const intervalText = params.interval ?? "1m";
      if (!Object.hasOwn(CANDLE_INTERVALS, intervalText)) {
        throw badRequest(
          `Unknown interval ${JSON.stringify(intervalText)}; expected one of ${
            Object.keys(CANDLE_INTERVALS).join(", ")
          }`,
        );
      }
      const interval = intervalText as CandleInterval;
      const seconds = CANDLE_INTERVALS[interval];
      const { from, to } = parseRange(params);
      const limit = parseLimit(params.limit, DEFAULT_CANDLES_LIMIT);

      // A candle of the interval belongs to [from, to) when its start does; the
      // minutes read are those of the candles wholly or partly in range.
      const where = [
        `symbol = ${literal(symbol)}`,
        `exchange IN (${exchanges.map((e) => literal(e)).join(", ")})`,
      ];
      const fromBucket = from === null ? null : Math.ceil(from / 1e6 / seconds) * seconds;
      if (fromBucket !== null) pushBound(where, "minute", ">=", fromBucket);
      if (to !== null) {
        const toBucket = Math.ceil(to / 1e6 / seconds) * seconds;
        pushBound(where, "minute", "<", toBucket);
      }
      // Minutes first (merging the partial states), then the interval's buckets;
      // aliases differ from column names, which they would shadow.
      const sql = (extra: string[], take: number) =>
        `SELECT toString(ex) AS ex, toString(b) AS bs,
          toString(argMin(mo, t)) AS o, toString(max(mh)) AS h,
          toString(min(ml)) AS l, toString(argMax(mc, t)) AS c,
          toString(sum(mv)) AS v, toString(sum(mn)) AS n
        FROM (
          SELECT exchange AS ex, toUInt32(minute) AS t,
            argMinMerge(open) AS mo, maxMerge(high) AS mh, minMerge(low) AS ml,
            argMaxMerge(close) AS mc, sumMerge(volume) AS mv, countMerge(trades) AS mn
          FROM ${db}.candles
          WHERE ${[...where, ...extra].join(" AND ")}
          GROUP BY exchange, minute
        )
        GROUP BY ex, intDiv(t, ${literal(seconds)}) * ${literal(seconds)} AS b
        ORDER BY b DESC, ex ASC
        LIMIT ${literal(take)}`;
      // Newest windows first, from the interval holding now (or `to`), so the
      // newest candles never read (and merge) the symbol's whole history. The
      // first window is open above (up to `to`): candles stamped ahead of our
      // clock are not missed. Window bounds are multiples of the interval.
      const nowS = Math.floor(deps.clock.now() / 1000);
      const anchorS = Math.ceil(
        Math.min(to === null ? Infinity : to / 1e6, nowS + 1, MAX_DATETIME_S + 1) / seconds,
      ) * seconds;
      const rows = await readNewestFirst<CandleQueryRow>({
        read: (window, take) =>
          query<CandleQueryRow>(sql(windowBounds("minute", window), take), c.req.raw.signal),
        exists: (window) => exists("candles", "minute", window, where, c.req.raw.signal),
      }, { anchorS, fromS: fromBucket, span: candleSpan(limit * seconds), take: limit });
      const candles: CandleRow[] = [];
      for (let i = rows.length - 1; i >= 0; i--) {
        const row = rows[i]!;
        const start = Number(row.bs) * 1_000_000;
        candles.push({
          exchange: row.ex,
          start,
          time: usToIso(start),
          open: trimDecimal(row.o),
          high: trimDecimal(row.h),
          low: trimDecimal(row.l),
          close: trimDecimal(row.c),
          volume: trimDecimal(row.v),
          trades: Number(row.n),
        });
      }
      const page: CandlesPage = { symbol, interval, exchanges, candles };
      return c.json(page);
    });
}
