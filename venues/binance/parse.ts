/**
 * Binance Spot market-data frames to normalized events: a pure function per
 * frame, no IO, no clock (the caller passes the receive time).
 *
 * What each payload becomes:
 *
 * | payload | result |
 * |---|---|
 * | `trade` | {@linkcode TradeEvent}, `trade_id` = `t`, time = `T` |
 * | `aggTrade` | {@linkcode TradeEvent}, `trade_id` = `a`, time = `T` |
 * | `bookTicker` (no `e`) | {@linkcode TopEvent}, time = receive time (spot sends none) |
 * | `kline` | {@linkcode BarEvent} once the bar is closed (`x` true); open bars yield nothing |
 * | `depthUpdate` | control `depth_diff` for {@linkcode BinanceBookSync}, never a book event |
 * | partial depth (`lastUpdateId`, combined streams only) | {@linkcode BookEvent} snapshot |
 * | `{"result":..,"id":..}` | control `result` |
 * | `{"code":..,"msg":..}` | control `error` |
 * | `serverShutdown` | control `server_shutdown`: reconnect |
 * | tickers, `avgPrice`, `referencePrice`, `blockTrade` | control `unsupported` |
 *
 * Side of a trade: `m` true means the buyer was the maker, so the aggressor
 * sold: side "sell"; `m` false: "buy". Block trades are not folded into the
 * trade tape (they do not cross the order book). Frames come either wrapped
 * by a combined stream (`{"stream":..,"data":..}`) or raw.
 *
 * Trades, depth diffs and book tickers of combined streams, the bulk of a
 * session, are read by one anchored regular expression each when written exactly as Binance
 * writes them ({@linkcode parseBinanceCompactFrame}); every other frame, and
 * every one those expressions do not match, goes through `JSON.parse`.
 *
 * Anything else — not JSON, a wrong shape, a missing or ill-typed field, a
 * price that is not a plain decimal string, a symbol not in the
 * {@linkcode SymbolMap} — throws {@linkcode MalformedFrameError}; no other
 * error escapes.
 *
 * @example
 * ```ts
 * import { binanceSymbolMap } from "./symbols.ts";
 *
 * const symbols = binanceSymbolMap(["ETH-USDT"]);
 * const { events } = parseBinanceFrame(
 *   '{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":7,"p":"4149.74","q":"0.4387","T":1,"m":true}}',
 *   Date.now() * 1000,
 *   symbols,
 * );
 * // events[0]: { kind: "trade", symbol: "ETH-USDT", side: "sell", price: "4149.74", ... }
 * ```
 *
 * @module
 */

import {
  type BarEvent,
  type BookEvent,
  type Level,
  MalformedFrameError,
  type MarketEvent,
  msToUs,
  type TopEvent,
  type TradeEvent,
} from "../../market/events.ts";
import type { SymbolMap } from "./symbols.ts";

export type { SymbolMap } from "./symbols.ts";

/** A diff-depth event, handed to {@linkcode BinanceBookSync} rather than published. */
export interface BinanceDepthDiff {
  /** Discriminant. */
  type: "depth_diff";
  /** Canonical symbol (`BTC-USDT`). */
  symbol: string;
  /** Binance symbol (`BTCUSDT`). */
  venueSymbol: string;
  /** First update id in the event, `U`. */
  firstUpdateId: number;
  /** Final update id in the event, `u`. */
  finalUpdateId: number;
  /** Changed bid levels; size "0" removes the level. */
  bids: Level[];
  /** Changed ask levels; size "0" removes the level. */
  asks: Level[];
  /** Event time `E`, microseconds since the epoch. */
  eventTimeUs: number;
  /** When the frame arrived, microseconds since the epoch. */
  receivedUs: number;
}

/** The reply to a `SUBSCRIBE`/`UNSUBSCRIBE`/`LIST_SUBSCRIPTIONS`/property request. */
export interface BinanceResultControl {
  /** Discriminant. */
  type: "result";
  /** The request id echoed back. */
  id: number | string | null;
  /** `null` for success of a non-query request, else the queried value. */
  result: unknown;
}

/** An error reply to a request (`{"code":2,"msg":"Invalid request: ..."}`). */
export interface BinanceErrorControl {
  /** Discriminant. */
  type: "error";
  /** Binance's error code. */
  code: number;
  /** Binance's error text. */
  msg: string;
  /** The request id, when the server echoed one. */
  id: number | string | null;
}

/** The server is about to close the connection: reconnect. */
export interface BinanceServerShutdownControl {
  /** Discriminant. */
  type: "server_shutdown";
  /** Event time `E`, microseconds since the epoch, or null when absent. */
  eventTimeUs: number | null;
}

/** A documented Binance payload that Tradewire does not normalize (tickers, `avgPrice`, ...). */
export interface BinanceUnsupportedControl {
  /** Discriminant. */
  type: "unsupported";
  /** The event type `e`. */
  event: string;
  /** The Binance symbol `s`, when the payload has one. */
  venueSymbol: string | null;
}

/** Every non-event outcome of a Binance frame. */
export type BinanceControl =
  | BinanceDepthDiff
  | BinanceResultControl
  | BinanceErrorControl
  | BinanceServerShutdownControl
  | BinanceUnsupportedControl;

/** What one Binance frame yields: events to publish, and at most one control. */
export interface BinanceParsedFrame {
  /** Normalized market events, in the order sent. */
  events: MarketEvent[];
  /** The frame's control message, or null when it carried only events. */
  control: BinanceControl | null;
}

/** The venue-neutral name of {@linkcode BinanceParsedFrame}. */
export type ParsedFrame = BinanceParsedFrame;
/** The venue-neutral name of {@linkcode BinanceControl}. */
export type Control = BinanceControl;

/** A REST `GET /api/v3/depth` body, as {@linkcode BinanceBookSync} takes it. */
export interface BinanceDepthSnapshot {
  /** The update id the snapshot is as of. */
  lastUpdateId: number;
  /** Bid levels, best first. */
  bids: Level[];
  /** Ask levels, best first. */
  asks: Level[];
}

/** Event types Binance documents that are recognized but not normalized. */
const UNSUPPORTED_EVENTS = new Set([
  "24hrTicker",
  "24hrMiniTicker",
  "1hTicker",
  "4hTicker",
  "1dTicker",
  "avgPrice",
  "referencePrice",
  "blockTrade",
]);

type Json = Record<string, unknown>;

/**
 * Parses one Binance WebSocket frame (combined-stream wrapper or raw
 * payload) into normalized events and a control. `receivedUs` is when the
 * frame arrived, microseconds since the epoch; `symbols` maps Binance
 * symbols to canonical ones. Throws {@linkcode MalformedFrameError}, and only
 * that, for anything it cannot understand.
 *
 * @example
 * ```ts
 * import { binanceSymbolMap } from "./symbols.ts";
 *
 * const symbols = binanceSymbolMap(["BNB-USDT"]);
 * parseBinanceFrame('{"result":null,"id":1}', 0, symbols);
 * // { events: [], control: { type: "result", id: 1, result: null } }
 * ```
 */
export function parseBinanceFrame(
  frame: string,
  receivedUs: number,
  symbols: SymbolMap,
): BinanceParsedFrame {
  if (typeof frame === "string" && frame.length <= COMPACT_MAX_LENGTH) {
    const compact = parseBinanceCompactFrame(frame, receivedUs, symbols);
    if (compact !== null) return compact;
  }
  const root = parseJson(frame, "Frame");
  try {
    return parseRoot(root, receivedUs, symbols);
  } catch (error) {
    throw asMalformed(error);
  }
}

/**
 * Parses a REST depth snapshot body (`GET /api/v3/depth`), or the same shape
 * from a partial depth stream. Throws {@linkcode MalformedFrameError} when it
 * is not one, including when it is an error body (`{"code":-1121,...}`).
 *
 * @example
 * ```ts
 * parseBinanceDepthSnapshot('{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[]}');
 * // { lastUpdateId: 160, bids: [["0.0024", "10"]], asks: [] }
 * ```
 */
export function parseBinanceDepthSnapshot(body: string): BinanceDepthSnapshot {
  const root = parseJson(body, "Depth snapshot");
  try {
    if (!isObject(root)) throw new MalformedFrameError("Depth snapshot is not a JSON object");
    if (root.lastUpdateId === undefined && typeof root.code === "number") {
      throw new MalformedFrameError(
        `Depth snapshot is an error response ${root.code}: ${preview(root.msg)}`,
      );
    }
    return {
      lastUpdateId: uint(root, "lastUpdateId", "depth snapshot"),
      bids: levels(root.bids, "bids", "depth snapshot"),
      asks: levels(root.asks, "asks", "depth snapshot"),
    };
  } catch (error) {
    throw asMalformed(error);
  }
}

// ---------------------------------------------------------------------------
// The compact path: the most frequent combined-stream payloads, trades, depth
// diffs and book tickers, exactly as Binance writes them, read by one anchored
// regular expression instead of JSON.parse plus a check of every field.
// Everything these expressions match is valid JSON that the general path reads
// to the same result; any other frame, and any match whose numbers or symbol
// the general path would refuse, goes to the general path, which then gives
// the error. Tests hold both paths to the same result on every fixture frame
// and on thousands of mutated ones.
// ---------------------------------------------------------------------------

/** The content of a JSON string without escapes or control characters. */
const COMPACT_STRING = String.raw`[^"\\\x00-\x1f]*`;
/** A JSON integer without sign, fraction or exponent. */
const COMPACT_UINT = String.raw`0|[1-9]\d{0,15}`;
/** A decimal as {@linkcode isPlainDecimal} accepts it. */
const COMPACT_DECIMAL = String.raw`\d+(?:\.\d+)?`;
const COMPACT_LEVEL = String.raw`\["${COMPACT_DECIMAL}","${COMPACT_DECIMAL}"\]`;
const COMPACT_LEVELS = String.raw`(?:${COMPACT_LEVEL}(?:,${COMPACT_LEVEL})*)?`;

/** A combined-stream `depthUpdate`; captures: E, s, U, u, bid levels, ask levels. */
const COMPACT_DEPTH = new RegExp(
  [
    String.raw`^\{"stream":"${COMPACT_STRING}","data":\{"e":"depthUpdate",`,
    String.raw`"E":(${COMPACT_UINT}),"s":"(${COMPACT_STRING})",`,
    String.raw`"U":(${COMPACT_UINT}),"u":(${COMPACT_UINT}),`,
    String.raw`"b":\[(${COMPACT_LEVELS})\],"a":\[(${COMPACT_LEVELS})\]\}\}$`,
  ].join(""),
);

/**
 * A combined-stream `trade`, with or without the buyer and seller order ids
 * (`b`, `a`) that Binance sent until 2023; captures: s, t, p, q, T, m.
 */
const COMPACT_TRADE = new RegExp(
  [
    String.raw`^\{"stream":"${COMPACT_STRING}","data":\{"e":"trade","E":(?:${COMPACT_UINT}),`,
    String.raw`"s":"(${COMPACT_STRING})","t":(${COMPACT_UINT}),`,
    String.raw`"p":"(${COMPACT_DECIMAL})","q":"(${COMPACT_DECIMAL})",`,
    String.raw`(?:"b":(?:${COMPACT_UINT}),"a":(?:${COMPACT_UINT}),)?`,
    String.raw`"T":(${COMPACT_UINT}),"m":(true|false),"M":(?:true|false)\}\}$`,
  ].join(""),
);

/** A combined-stream spot `bookTicker`; captures: u, s, b, B, a, A. */
const COMPACT_BOOK_TICKER = new RegExp(
  [
    String.raw`^\{"stream":"${COMPACT_STRING}","data":\{"u":(${COMPACT_UINT}),`,
    String.raw`"s":"(${COMPACT_STRING})","b":"(${COMPACT_DECIMAL})","B":"(${COMPACT_DECIMAL})",`,
    String.raw`"a":"(${COMPACT_DECIMAL})","A":"(${COMPACT_DECIMAL})"\}\}$`,
  ].join(""),
);

/**
 * Longest frame tried on the compact path. The level expression keeps a
 * backtrack entry per level, and V8 throws a `RangeError` past about two
 * million of them; diffs are a few kB, a depth-5000 one well under this.
 */
const COMPACT_MAX_LENGTH = 1 << 20;

/**
 * `frame` read on the compact path, or null when the general path must read
 * it. {@linkcode parseBinanceFrame} tries it first; exported so that tests can
 * hold it to the general path.
 */
export function parseBinanceCompactFrame(
  frame: string,
  receivedUs: number,
  symbols: SymbolMap,
): BinanceParsedFrame | null {
  // `{"stream":"` is 11 characters; the stream name tells the payload apart cheaply.
  const streamEnd = frame.indexOf('"', 11);
  if (streamEnd < 0) return null;
  // After the stream name: `","data":{` (10 characters), then the event type; depth
  // diffs, the most frequent, first.
  if (frame.startsWith('"e":"depthUpdate"', streamEnd + 10)) {
    const m = COMPACT_DEPTH.exec(frame);
    if (m === null) return null;
    const eventMs = Number(m[1]);
    const firstUpdateId = Number(m[3]);
    const finalUpdateId = Number(m[4]);
    if (
      !Number.isSafeInteger(eventMs) || !Number.isSafeInteger(firstUpdateId) ||
      !Number.isSafeInteger(finalUpdateId) || firstUpdateId > finalUpdateId
    ) {
      return null;
    }
    const venueSymbol = m[2]!;
    const symbol = symbols.canonical(venueSymbol);
    if (symbol === undefined) return null;
    return {
      events: [],
      control: {
        type: "depth_diff",
        symbol,
        venueSymbol,
        firstUpdateId,
        finalUpdateId,
        bids: compactLevels(m[5]!),
        asks: compactLevels(m[6]!),
        eventTimeUs: msToUs(eventMs),
        receivedUs,
      },
    };
  }
  if (frame.endsWith("@bookTicker", streamEnd)) {
    const m = COMPACT_BOOK_TICKER.exec(frame);
    // Up to 15 digits is always a safe integer.
    if (m === null || (m[1]!.length > 15 && !Number.isSafeInteger(Number(m[1])))) return null;
    const venueSymbol = m[2]!;
    const symbol = symbols.canonical(venueSymbol);
    if (symbol === undefined) return null;
    const top: TopEvent = {
      kind: "top",
      exchange: "binance",
      symbol,
      venue_symbol: venueSymbol,
      ts_exchange: receivedUs,
      ts_local: receivedUs,
      bid_price: m[3]!,
      bid_qty: m[4]!,
      ask_price: m[5]!,
      ask_qty: m[6]!,
    };
    return { events: [top], control: null };
  }
  if (frame.startsWith('"e":"trade"', streamEnd + 10)) {
    const m = COMPACT_TRADE.exec(frame);
    if (m === null) return null;
    const tradeId = Number(m[2]);
    const timeMs = Number(m[5]);
    if (!Number.isSafeInteger(tradeId) || !Number.isSafeInteger(timeMs)) return null;
    const venueSymbol = m[1]!;
    const symbol = symbols.canonical(venueSymbol);
    if (symbol === undefined) return null;
    const trade: TradeEvent = {
      kind: "trade",
      exchange: "binance",
      symbol,
      venue_symbol: venueSymbol,
      ts_exchange: msToUs(timeMs),
      ts_local: receivedUs,
      trade_id: String(tradeId),
      price: m[3]!,
      qty: m[4]!,
      side: m[6] === "true" ? "sell" : "buy",
    };
    return { events: [trade], control: null };
  }
  return null;
}

/** The levels of `text`, a run of `["P","S"]` that {@linkcode COMPACT_DEPTH} matched. */
function compactLevels(text: string): Level[] {
  const levels: Level[] = [];
  // `["` is 2 characters and `","` 3; the decimals hold no `"`.
  for (let at = 0; at < text.length;) {
    const priceEnd = text.indexOf('"', at + 2);
    const sizeEnd = text.indexOf('"', priceEnd + 3);
    levels.push([text.slice(at + 2, priceEnd), text.slice(priceEnd + 3, sizeEnd)]);
    at = sizeEnd + 3; // `"]` and the `,` before the next level
  }
  return levels;
}

function parseJson(text: string, what: string): unknown {
  if (typeof text !== "string") throw new MalformedFrameError(`${what} is not text`);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new MalformedFrameError(`${what} is not JSON`, { cause: error });
  }
}

/** Any error as a {@linkcode MalformedFrameError}, so nothing else leaks to feeds. */
function asMalformed(error: unknown): MalformedFrameError {
  if (error instanceof MalformedFrameError) return error;
  return new MalformedFrameError("Frame could not be parsed", { cause: error });
}

function parseRoot(root: unknown, receivedUs: number, symbols: SymbolMap): BinanceParsedFrame {
  if (!isObject(root)) throw new MalformedFrameError("Frame is not a JSON object");
  let payload = root;
  let stream: string | null = null;
  if (root.stream !== undefined) {
    if (typeof root.stream !== "string") {
      throw new MalformedFrameError("Combined stream name is not a string");
    }
    if (!isObject(root.data)) {
      throw new MalformedFrameError(`Combined stream ${root.stream} frame has no data object`);
    }
    stream = root.stream;
    payload = root.data;
  }
  const event = payload.e;
  if (typeof event === "string") {
    switch (event) {
      case "trade":
        return { events: [trade(payload, receivedUs, symbols, "t")], control: null };
      case "aggTrade":
        return { events: [trade(payload, receivedUs, symbols, "a")], control: null };
      case "depthUpdate":
        return { events: [], control: depthDiff(payload, receivedUs, symbols) };
      case "bookTicker":
        return { events: [top(payload, receivedUs, symbols)], control: null };
      case "kline": {
        const bar = kline(payload, receivedUs, symbols);
        return { events: bar === null ? [] : [bar], control: null };
      }
      case "serverShutdown":
        return {
          events: [],
          control: { type: "server_shutdown", eventTimeUs: optionalTime(payload) },
        };
      default:
        if (UNSUPPORTED_EVENTS.has(event)) {
          const venueSymbol = typeof payload.s === "string" ? payload.s : null;
          return { events: [], control: { type: "unsupported", event, venueSymbol } };
        }
        throw new MalformedFrameError(`Unknown event type ${JSON.stringify(event)}`);
    }
  }
  if (event !== undefined) throw new MalformedFrameError("Event type e is not a string");
  if (payload.u !== undefined && payload.B !== undefined) {
    return { events: [top(payload, receivedUs, symbols)], control: null };
  }
  if ("result" in payload) {
    if (stream !== null) throw new MalformedFrameError("Request result inside a stream frame");
    return {
      events: [],
      control: { type: "result", id: requestId(payload), result: payload.result },
    };
  }
  if (payload.code !== undefined || payload.error !== undefined) {
    if (stream !== null) throw new MalformedFrameError("Error reply inside a stream frame");
    return { events: [], control: errorControl(payload) };
  }
  if (payload.lastUpdateId !== undefined) {
    return { events: [partialDepth(payload, stream, receivedUs, symbols)], control: null };
  }
  throw new MalformedFrameError("Frame is no known Binance payload");
}

function trade(
  o: Json,
  receivedUs: number,
  symbols: SymbolMap,
  idField: "t" | "a",
): TradeEvent {
  const what = idField === "t" ? "trade" : "aggTrade";
  const venueSymbol = str(o, "s", what);
  const maker = o.m;
  if (typeof maker !== "boolean") throw fieldError("m", what, "a boolean", maker);
  return {
    kind: "trade",
    exchange: "binance",
    symbol: canonical(symbols, venueSymbol),
    venue_symbol: venueSymbol,
    ts_exchange: msToUs(uint(o, "T", what)),
    ts_local: receivedUs,
    trade_id: String(uint(o, idField, what)),
    price: decimal(o, "p", what),
    qty: decimal(o, "q", what),
    side: maker ? "sell" : "buy",
  };
}

function top(o: Json, receivedUs: number, symbols: SymbolMap): TopEvent {
  const what = "bookTicker";
  const venueSymbol = str(o, "s", what);
  uint(o, "u", what);
  return {
    kind: "top",
    exchange: "binance",
    symbol: canonical(symbols, venueSymbol),
    venue_symbol: venueSymbol,
    // Spot bookTicker carries no event time; futures' carries E.
    ts_exchange: o.E === undefined ? receivedUs : msToUs(uint(o, "E", what)),
    ts_local: receivedUs,
    bid_price: decimal(o, "b", what),
    bid_qty: decimal(o, "B", what),
    ask_price: decimal(o, "a", what),
    ask_qty: decimal(o, "A", what),
  };
}

function kline(o: Json, receivedUs: number, symbols: SymbolMap): BarEvent | null {
  const venueSymbol = str(o, "s", "kline");
  const symbol = canonical(symbols, venueSymbol);
  const eventMs = uint(o, "E", "kline");
  const k = o.k;
  if (!isObject(k)) throw fieldError("k", "kline", "an object", k);
  const what = "kline bar";
  const closed = k.x;
  if (typeof closed !== "boolean") throw fieldError("x", what, "a boolean", closed);
  const bar: BarEvent = {
    kind: "bar",
    exchange: "binance",
    symbol,
    venue_symbol: venueSymbol,
    ts_exchange: msToUs(eventMs),
    ts_local: receivedUs,
    interval: str(k, "i", what),
    start: msToUs(uint(k, "t", what)),
    open: decimal(k, "o", what),
    high: decimal(k, "h", what),
    low: decimal(k, "l", what),
    close: decimal(k, "c", what),
    volume: decimal(k, "v", what),
    trades: uint(k, "n", what),
    vwap: null,
  };
  return closed ? bar : null;
}

function depthDiff(o: Json, receivedUs: number, symbols: SymbolMap): BinanceDepthDiff {
  const what = "depthUpdate";
  const venueSymbol = str(o, "s", what);
  const firstUpdateId = uint(o, "U", what);
  const finalUpdateId = uint(o, "u", what);
  if (firstUpdateId > finalUpdateId) {
    throw new MalformedFrameError(
      `First update id ${firstUpdateId} of depthUpdate is above its final update id ${finalUpdateId}`,
    );
  }
  return {
    type: "depth_diff",
    symbol: canonical(symbols, venueSymbol),
    venueSymbol,
    firstUpdateId,
    finalUpdateId,
    bids: levels(o.b, "b", what),
    asks: levels(o.a, "a", what),
    eventTimeUs: msToUs(uint(o, "E", what)),
    receivedUs,
  };
}

function partialDepth(
  o: Json,
  stream: string | null,
  receivedUs: number,
  symbols: SymbolMap,
): BookEvent {
  if (stream === null) {
    throw new MalformedFrameError(
      "Partial depth payload without a stream name carries no symbol",
    );
  }
  const at = stream.indexOf("@");
  const venueSymbol = (at < 0 ? stream : stream.slice(0, at)).toUpperCase();
  return {
    kind: "book",
    exchange: "binance",
    symbol: canonical(symbols, venueSymbol),
    venue_symbol: venueSymbol,
    ts_exchange: receivedUs,
    ts_local: receivedUs,
    action: "snapshot",
    bids: levels(o.bids, "bids", "partial depth"),
    asks: levels(o.asks, "asks", "partial depth"),
    sequence: uint(o, "lastUpdateId", "partial depth"),
  };
}

function errorControl(o: Json): BinanceErrorControl {
  // Stream servers reply {"code":2,"msg":"..."}; newer ones nest it as {"error":{...}}.
  const body = o.error === undefined ? o : o.error;
  if (!isObject(body)) throw fieldError("error", "error reply", "an object", body);
  const code = body.code;
  if (typeof code !== "number" || !Number.isInteger(code)) {
    throw fieldError("code", "error reply", "an integer", code);
  }
  return { type: "error", code, msg: str(body, "msg", "error reply"), id: requestId(o) };
}

function requestId(o: Json): number | string | null {
  const id = o.id;
  if (id === undefined || id === null) return null;
  if (typeof id === "number" || typeof id === "string") return id;
  throw fieldError("id", "reply", "a number, string or null", id);
}

function optionalTime(o: Json): number | null {
  return o.E === undefined ? null : msToUs(uint(o, "E", "serverShutdown"));
}

function canonical(symbols: SymbolMap, venueSymbol: string): string {
  const symbol = symbols.canonical(venueSymbol);
  if (symbol === undefined) {
    throw new MalformedFrameError(`Unknown symbol ${JSON.stringify(venueSymbol)}`);
  }
  return symbol;
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function str(o: Json, key: string, what: string): string {
  const value = o[key];
  if (typeof value !== "string") throw fieldError(key, what, "a string", value);
  return value;
}

function decimal(o: Json, key: string, what: string): string {
  const value = o[key];
  if (typeof value !== "string" || !isPlainDecimal(value)) {
    throw fieldError(key, what, "a decimal string", value);
  }
  return value;
}

function uint(o: Json, key: string, what: string): number {
  const value = o[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw fieldError(key, what, "a non-negative integer", value);
  }
  return value;
}

/**
 * Validates a list of `[price, size]` levels in place and returns it as is
 * (no copy). A legacy level with extra trailing elements is cut to two.
 */
function levels(value: unknown, key: string, what: string): Level[] {
  if (!Array.isArray(value)) throw fieldError(key, what, "an array of levels", value);
  for (let i = 0; i < value.length; i++) {
    const level: unknown = value[i];
    if (!Array.isArray(level) || level.length < 2) {
      throw fieldError(`${key}[${i}]`, what, "a [price, size] pair", level);
    }
    const price: unknown = level[0];
    const size: unknown = level[1];
    if (typeof price !== "string" || !isPlainDecimal(price)) {
      throw fieldError(`${key}[${i}] price`, what, "a decimal string", price);
    }
    if (typeof size !== "string" || !isPlainDecimal(size)) {
      throw fieldError(`${key}[${i}] size`, what, "a decimal string", size);
    }
    if (level.length > 2) value[i] = [price, size];
  }
  return value as Level[];
}

/**
 * Whether `text` is a plain non-negative decimal (`"0.35210000"`, `"12"`), as
 * Binance spells prices and sizes. A loop: several times faster than a
 * regular expression on such short strings, and this runs per level.
 */
function isPlainDecimal(text: string): boolean {
  const n = text.length;
  let dot = -1;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c - 48 >>> 0 > 9) {
      if (c !== 46 || dot >= 0) return false;
      dot = i;
    }
  }
  return n > 0 && dot !== 0 && dot !== n - 1;
}

function fieldError(
  key: string,
  what: string,
  expected: string,
  got: unknown,
): MalformedFrameError {
  const shown = got === undefined ? "nothing" : preview(got);
  return new MalformedFrameError(`Field ${key} of ${what} must be ${expected}, got ${shown}`);
}

function preview(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
