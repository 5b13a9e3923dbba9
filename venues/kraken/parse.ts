/**
 * Kraken WebSocket v2 (`wss://ws.kraken.com/v2`) frames → normalized events.
 *
 * {@linkcode parseKrakenFrame} is pure: one received frame in, the market
 * events it carries and at most one control message out. Trades become
 * {@linkcode TradeEvent}s directly (Kraken's `side` is the taker's, which is
 * the aggressor side); book frames become a {@linkcode KrakenBookControl} that
 * a `KrakenBookSync` applies, checks against Kraken's checksum and turns into
 * book events. Subscribe/unsubscribe acks, `pong`, `status` and `heartbeat`
 * are controls.
 *
 * Kraken v2 sends prices and sizes as bare JSON numbers and computes its
 * checksum over their text as sent, so frames are parsed with
 * {@linkcode parseJsonNumbers}, which keeps that text (`0.00005100` stays
 * `0.00005100`). The two frames that make up nearly all of a book stream
 * take a shorter road to the same result: the heartbeat is compared whole,
 * and a book frame written the way Kraken writes it (compact, its fields in
 * Kraken's order, every price and size a plain decimal) is read by one
 * regular expression whose every match is such a frame; anything else goes
 * through {@linkcode parseJsonNumbers}.
 *
 * A frame that is not what the protocol says throws
 * {@linkcode MalformedFrameError} and nothing else.
 *
 * @example
 * ```ts
 * import { parseKrakenFrame } from "./parse.ts";
 *
 * const { events, control } = parseKrakenFrame('{"channel":"heartbeat"}', Date.now() * 1000);
 * // events: [], control: { type: "heartbeat" }
 * ```
 *
 * @module
 */

import {
  JsonNumber,
  type JsonObject,
  type JsonValue,
  parseJsonNumbers,
} from "../../lib/json_numbers.ts";
import {
  type Level,
  MalformedFrameError,
  type MarketEvent,
  type TradeEvent,
} from "../../market/events.ts";
import { isDigits, isPlainDecimal, timeUs } from "../_fields.ts";

/** Kraken's public WebSocket v2 endpoint. */
export const KRAKEN_WS_URL = "wss://ws.kraken.com/v2";

/** A `book` frame's content for one symbol, prices and sizes as the exact text sent. */
export interface KrakenBookControl {
  type: "book";
  /** A snapshot replaces the book; an update changes the listed levels (size 0 removes). */
  action: "snapshot" | "update";
  /** Canonical symbol, `BASE-QUOTE`. */
  symbol: string;
  /** Kraken's symbol, `BASE/QUOTE`. */
  venue_symbol: string;
  /** Bid levels in the order sent. */
  bids: Level[];
  /** Ask levels in the order sent. */
  asks: Level[];
  /** Kraken's CRC32 of the top 10 levels after this frame is applied. */
  checksum: number;
  /** Kraken's book timestamp, microseconds since the epoch. */
  timestamp: number;
}

/** The answer to a request such as `subscribe` or `unsubscribe`. */
export interface KrakenAckControl {
  type: "ack";
  /** The request's method, e.g. `"subscribe"`. */
  method: string;
  /** Whether the request succeeded. */
  success: boolean;
  /** The channel the request was about, where given. */
  channel: string | null;
  /** Kraken's symbol the request was about (`BTC/USD`), where given. */
  venue_symbol: string | null;
  /** Kraken's error text when it failed. */
  error: string | null;
  /** The request's `req_id`, where it had one. */
  req_id: number | null;
}

/** The answer to a `ping`. */
export interface KrakenPongControl {
  type: "pong";
  /** The ping's `req_id`, where it had one. */
  req_id: number | null;
}

/** The `status` channel: sent on connect and when the exchange's state changes. */
export interface KrakenStatusControl {
  type: "status";
  /** `online`, `maintenance`, `cancel_only` or `post_only`. */
  system: string;
  /** Server version, e.g. `"2.0.10"`. */
  version: string | null;
  /** API version, `"v2"`. */
  api_version: string | null;
  /** The connection's id, as text (it exceeds 2^53). */
  connection_id: string | null;
}

/** A `heartbeat` frame: the connection is alive. */
export interface KrakenHeartbeatControl {
  type: "heartbeat";
}

/** An error that answers no particular request. */
export interface KrakenErrorControl {
  type: "error";
  /** Kraken's error text. */
  message: string;
}

/** A Kraken frame that is not market data. */
export type KrakenControl =
  | KrakenBookControl
  | KrakenAckControl
  | KrakenPongControl
  | KrakenStatusControl
  | KrakenHeartbeatControl
  | KrakenErrorControl;

/** What one Kraken frame carries. */
export interface KrakenParsedFrame {
  /** Normalized market events (trades), in the order sent. */
  events: MarketEvent[];
  /** The frame's control message, or null when it carried only events. */
  control: KrakenControl | null;
}

/** {@linkcode KrakenParsedFrame} under the name every venue's parser uses. */
export type ParsedFrame = KrakenParsedFrame;

/** {@linkcode KrakenControl} under the name every venue's parser uses. */
export type Control = KrakenControl;

/** A v2 channel that can be subscribed to. */
export type KrakenChannel = "book" | "trade" | "ticker" | "ohlc" | "instrument" | "level3";

/** Options for {@linkcode subscribeMessage} and {@linkcode unsubscribeMessage}. */
export interface KrakenSubscribeOptions {
  /** Book depth: 10, 25, 100, 500 or 1000; only for `book` and `level3`. @default {undefined} (Kraken's 10) */
  depth?: number;
  /** Whether to receive a snapshot first; omitted from unsubscribe. @default {undefined} (Kraken's true) */
  snapshot?: boolean;
  /** Request id echoed in the ack. @default {undefined} */
  reqId?: number;
}

const HEARTBEAT: KrakenHeartbeatControl = Object.freeze({ type: "heartbeat" as const });

/** The heartbeat frame as Kraken sends it, once a second on a subscribed connection. */
const HEARTBEAT_FRAME = '{"channel":"heartbeat"}';

/**
 * Parses one Kraken v2 frame received at `receivedUs` (microseconds since the
 * epoch). Throws {@linkcode MalformedFrameError} — and only that — when the
 * frame is not JSON, has the wrong shape, a missing or ill-typed field, an
 * unknown channel or a price or size that is not a decimal.
 *
 * A book frame must carry one symbol, as Kraken sends them; a frame with
 * several is rejected. A later checksum would not reliably catch the lost
 * update — Kraken's checksum covers only the top 10 levels whatever the
 * depth — so the session resyncs the books a rejected book frame names (every
 * book when it names none it can read) rather than trusting the next one.
 *
 * @example
 * ```ts
 * import { parseKrakenFrame } from "./parse.ts";
 *
 * const frame = '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD",' +
 *   '"side":"buy","price":65000.10,"qty":0.00100000,"ord_type":"market",' +
 *   '"trade_id":42,"timestamp":"2026-08-16T23:37:04.190019Z"}]}';
 * const { events } = parseKrakenFrame(frame, 1_786_000_000_000_000);
 * // events[0]: { kind: "trade", symbol: "BTC-USD", price: "65000.10", qty: "0.00100000", side: "buy", ... }
 * ```
 */
export function parseKrakenFrame(frame: string, receivedUs: number): KrakenParsedFrame {
  try {
    return parseFrame(frame, receivedUs);
  } catch (error) {
    if (error instanceof MalformedFrameError) throw error;
    const detail = error instanceof Error ? error.message : String(error);
    throw new MalformedFrameError(`Unreadable Kraken frame: ${detail}`, { cause: error });
  }
}

function parseFrame(frame: string, receivedUs: number): KrakenParsedFrame {
  if (typeof frame !== "string") fail("Frame is not text");
  if (frame === HEARTBEAT_FRAME) return { events: [], control: HEARTBEAT };
  const book = parseCompactBook(frame);
  if (book !== null) return { events: [], control: book };
  let message: JsonValue;
  try {
    message = parseJsonNumbers(frame);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new MalformedFrameError(`Frame is not valid JSON: ${detail}`, { cause: error });
  }
  if (!isObject(message)) fail("Frame is not a JSON object");
  const channel = message.channel;
  if (channel !== undefined) {
    if (typeof channel !== "string") fail("Field channel is not a string");
    switch (channel) {
      case "book":
        return { events: [], control: parseBook(message) };
      case "trade":
        return { events: parseTrades(message, receivedUs), control: null };
      case "heartbeat":
        return { events: [], control: HEARTBEAT };
      case "status":
        return { events: [], control: parseStatus(message) };
      default:
        fail(`Unknown channel ${JSON.stringify(channel)}`);
    }
  }
  const method = message.method;
  if (method !== undefined) {
    if (typeof method !== "string") fail("Field method is not a string");
    return { events: [], control: parseMethodResponse(message, method) };
  }
  const error = message.error;
  if (typeof error === "string") return { events: [], control: { type: "error", message: error } };
  return fail("Frame has neither a channel nor a method");
}

function parseMethodResponse(message: JsonObject, method: string): KrakenControl {
  const reqId = optionalInteger(message.req_id, "req_id");
  if (method === "pong") return { type: "pong", req_id: reqId };
  const success = message.success;
  if (typeof success !== "boolean") {
    fail(`Response to ${JSON.stringify(method)} has no boolean success field`);
  }
  let channel: string | null = null;
  let venueSymbol = optionalString(message.symbol, "symbol", "response");
  const result = message.result;
  if (result !== undefined) {
    if (!isObject(result)) fail("Field result of a response is not an object");
    channel = optionalString(result.channel, "channel", "response result");
    venueSymbol = optionalString(result.symbol, "symbol", "response result") ?? venueSymbol;
  }
  const error = optionalString(message.error, "error", "response");
  if (!success && error === null) fail("Failed response has no error text");
  return {
    type: "ack",
    method,
    success,
    channel,
    venue_symbol: venueSymbol,
    error,
    req_id: reqId,
  };
}

function parseStatus(message: JsonObject): KrakenStatusControl {
  const data = message.data;
  if (!Array.isArray(data) || data.length === 0) fail("Status frame has no data");
  const entry = data[0];
  if (!isObject(entry)) fail("Status entry is not an object");
  const connection = entry.connection_id;
  let connectionId: string | null = null;
  if (connection instanceof JsonNumber) connectionId = connection.text;
  else if (typeof connection === "string") connectionId = connection;
  else if (connection !== undefined) fail("Field connection_id of status is not a number");
  return {
    type: "status",
    system: string(entry.system, "system", "status"),
    version: optionalString(entry.version, "version", "status"),
    api_version: optionalString(entry.api_version, "api_version", "status"),
    connection_id: connectionId,
  };
}

function parseTrades(message: JsonObject, receivedUs: number): TradeEvent[] {
  const type = message.type;
  if (type !== "snapshot" && type !== "update") fail("Trade frame type is not snapshot or update");
  const data = message.data;
  if (!Array.isArray(data)) fail("Trade frame data is not an array");
  const events: TradeEvent[] = [];
  for (let i = 0; i < data.length; i++) {
    const trade = data[i];
    if (!isObject(trade)) fail("Trade entry is not an object");
    const venueSymbol = string(trade.symbol, "symbol", "trade");
    const side = trade.side;
    if (side !== "buy" && side !== "sell") fail("Field side of a trade is not buy or sell");
    events.push({
      kind: "trade",
      exchange: "kraken",
      symbol: krakenSymbol(venueSymbol),
      venue_symbol: venueSymbol,
      ts_exchange: timeUs(string(trade.timestamp, "timestamp", "trade")),
      ts_local: receivedUs,
      trade_id: id(trade.trade_id, "trade_id", "trade"),
      price: decimal(trade.price, "price", "trade"),
      qty: decimal(trade.qty, "qty", "trade"),
      side,
    });
  }
  return events;
}

function parseBook(message: JsonObject): KrakenBookControl {
  const action = message.type;
  if (action !== "snapshot" && action !== "update") {
    fail("Book frame type is not snapshot or update");
  }
  const data = message.data;
  if (!Array.isArray(data)) fail("Book frame data is not an array");
  if (data.length !== 1) {
    fail(`Book frame carries ${data.length} entries; exactly one is supported`);
  }
  const entry = data[0];
  if (!isObject(entry)) fail("Book entry is not an object");
  const venueSymbol = string(entry.symbol, "symbol", "book entry");
  return {
    type: "book",
    action,
    symbol: krakenSymbol(venueSymbol),
    venue_symbol: venueSymbol,
    bids: parseLevels(entry.bids, "bids"),
    asks: parseLevels(entry.asks, "asks"),
    checksum: requireChecksum(entry),
    timestamp: timeUs(string(entry.timestamp, "timestamp", "book entry")),
  };
}

/** A JSON number that is a plain decimal, as {@linkcode isPlainDecimal} checks them. */
const COMPACT_DECIMAL = String.raw`(?:0|[1-9]\d*)(?:\.\d+)?`;
/** The content of a JSON string without escapes. */
const COMPACT_STRING = String.raw`[^"\\\x00-\x1f]*`;
const COMPACT_LEVEL = String.raw`\{"price":${COMPACT_DECIMAL},"qty":${COMPACT_DECIMAL}\}`;
const COMPACT_LEVELS = String.raw`(?:${COMPACT_LEVEL}(?:,${COMPACT_LEVEL})*)?`;

/** How a compact book frame starts; `snapshot` or `update` follows. */
const COMPACT_HEAD = '{"channel":"book","type":"';
/** What comes between the action and the symbol. */
const COMPACT_SYMBOL = '","data":[{"symbol":"';
/** What comes between the symbol and the bid levels. */
const COMPACT_BIDS = '","bids":[';
/** What comes between the bid levels and the ask levels. */
const COMPACT_ASKS = '],"asks":[';
/** What comes between the ask levels and the checksum. */
const COMPACT_CHECKSUM = '],"checksum":';
/** What comes between the checksum and the timestamp. */
const COMPACT_TIMESTAMP = ',"timestamp":"';
/** How a compact book frame ends, after the timestamp. */
const COMPACT_TAIL = '"}]}';

/**
 * A book frame exactly as Kraken writes it. Everything it matches is valid
 * JSON that {@linkcode parseBook} reads to the same result, so a match needs
 * no further checks but the checksum's range. It captures nothing (a test is
 * quicker than an exec): {@linkcode parseCompactBook} finds the fields
 * between the fixed texts.
 */
const COMPACT_BOOK = new RegExp(
  [
    String.raw`^\{"channel":"book","type":"(?:snapshot|update)",`,
    String.raw`"data":\[\{"symbol":"${COMPACT_STRING}",`,
    String.raw`"bids":\[${COMPACT_LEVELS}\],"asks":\[${COMPACT_LEVELS}\],`,
    String.raw`"checksum":(?:0|[1-9]\d{0,9}),"timestamp":"${COMPACT_STRING}"\}\]\}$`,
  ].join(""),
);

/**
 * Longest frame tried against {@linkcode COMPACT_BOOK}. The expression keeps
 * a backtrack entry per level and V8 throws a `RangeError` past about two
 * million of them (some 40 MB of frame); a depth-1000 snapshot is about 80 kB.
 */
const COMPACT_BOOK_MAX_LENGTH = 1 << 20;

/**
 * The book control of a frame {@linkcode COMPACT_BOOK} matches, or null for
 * any other frame, which the general parser then reads. Gives exactly what
 * {@linkcode parseBook} gives, and throws where it throws.
 */
function parseCompactBook(frame: string): KrakenBookControl | null {
  if (frame.length > COMPACT_BOOK_MAX_LENGTH || !COMPACT_BOOK.test(frame)) return null;
  // Each field of a matched frame ends at the first character its text cannot hold: the
  // symbol at a `"`, the levels (digits, `.`, `,`, `{`, `}`, `"price":`, `"qty":`) at a `]`,
  // the checksum (at most 10 digits) at a `,`; the timestamp ends where the frame's fixed tail
  // begins.
  const update = frame.charCodeAt(COMPACT_HEAD.length) === 0x75; // the `u` of `update`
  const symbolStart = COMPACT_HEAD.length + (update ? 6 : 8) + COMPACT_SYMBOL.length;
  const symbolEnd = frame.indexOf('"', symbolStart);
  const bidsStart = symbolEnd + COMPACT_BIDS.length;
  const bidsEnd = frame.indexOf("]", bidsStart);
  const asksStart = bidsEnd + COMPACT_ASKS.length;
  const asksEnd = frame.indexOf("]", asksStart);
  const checksumStart = asksEnd + COMPACT_CHECKSUM.length;
  let checksum = 0;
  let checksumEnd = checksumStart;
  for (let c = frame.charCodeAt(checksumEnd); c !== 0x2c; c = frame.charCodeAt(++checksumEnd)) {
    checksum = checksum * 10 + c - 0x30;
  }
  if (checksum > 0xffffffff) return null;
  const venueSymbol = frame.slice(symbolStart, symbolEnd);
  return {
    type: "book",
    action: update ? "update" : "snapshot",
    symbol: krakenSymbol(venueSymbol),
    venue_symbol: venueSymbol,
    bids: compactLevels(frame, bidsStart, bidsEnd),
    asks: compactLevels(frame, asksStart, asksEnd),
    checksum,
    timestamp: timeUs(
      frame,
      checksumEnd + COMPACT_TIMESTAMP.length,
      frame.length - COMPACT_TAIL.length,
    ),
  };
}

/**
 * The levels of `frame` from `start` to `end`, a run of `{"price":P,"qty":Q}`
 * that {@linkcode COMPACT_BOOK} matched.
 */
function compactLevels(frame: string, start: number, end: number): Level[] {
  const levels: Level[] = [];
  // `{"price":` is 9 characters, `,"qty":` 7; the numbers hold no `,` or `}`.
  for (let at = start; at < end;) {
    const comma = frame.indexOf(",", at + 9);
    const close = frame.indexOf("}", comma + 7);
    levels.push([frame.slice(at + 9, comma), frame.slice(comma + 7, close)]);
    at = close + 2;
  }
  return levels;
}

function parseLevels(value: JsonValue | undefined, side: "bids" | "asks"): Level[] {
  if (!Array.isArray(value)) {
    fail(
      value === undefined
        ? `Book entry has no ${side}`
        : `Field ${side} of a book entry is not an array`,
    );
  }
  const levels: Level[] = [];
  for (let i = 0; i < value.length; i++) {
    const level = value[i];
    if (!isObject(level)) fail(`Book level in ${side} is not an object`);
    levels.push([
      decimal(level.price, "price", "book level"),
      decimal(level.qty, "qty", "book level"),
    ]);
  }
  return levels;
}

function requireChecksum(entry: JsonObject): number {
  const value = entry.checksum;
  if (!(value instanceof JsonNumber)) {
    fail(
      value === undefined
        ? "Book entry has no checksum"
        : "Field checksum of a book entry is not a number",
    );
  }
  const text = value.text;
  if (!isDigits(text) || text.length > 10) {
    fail(`Checksum ${text} is not an unsigned 32-bit integer`);
  }
  const checksum = Number(text);
  if (checksum > 0xffffffff) fail(`Checksum ${text} is not an unsigned 32-bit integer`);
  return checksum;
}

const symbolCache = new Map<string, string>();
/** Bound on the symbol cache, so frames with junk symbols cannot grow it without limit. */
const SYMBOL_CACHE_LIMIT = 4096;
/** The last symbol {@linkcode krakenSymbol} mapped, Kraken's and canonical; null before any. */
let lastSymbol: [venueSymbol: string, symbol: string] | null = null;

/**
 * The canonical `BASE-QUOTE` symbol of Kraken's `BASE/QUOTE` (`BTC/USD` →
 * `BTC-USD`); Kraken's legacy `XBT` is mapped to `BTC` (`ETH/XBT` →
 * `ETH-BTC`). Throws {@linkcode MalformedFrameError} when `venueSymbol` is
 * not `BASE/QUOTE`.
 *
 * @example
 * ```ts
 * import { krakenSymbol } from "./parse.ts";
 *
 * krakenSymbol("XBT/USD"); // "BTC-USD"
 * ```
 */
export function krakenSymbol(venueSymbol: string): string {
  // A feed's frames name one symbol after another: the last one answers most without hashing.
  if (lastSymbol !== null && venueSymbol === lastSymbol[0]) return lastSymbol[1];
  const cached = symbolCache.get(venueSymbol);
  if (cached !== undefined) {
    lastSymbol = [venueSymbol, cached];
    return cached;
  }
  const slash = venueSymbol.indexOf("/");
  if (slash <= 0 || slash === venueSymbol.length - 1 || venueSymbol.indexOf("/", slash + 1) >= 0) {
    fail(`Symbol ${JSON.stringify(venueSymbol)} is not BASE/QUOTE`);
  }
  const base = asset(venueSymbol.slice(0, slash));
  const quote = asset(venueSymbol.slice(slash + 1));
  const symbol = `${base}-${quote}`;
  if (symbolCache.size >= SYMBOL_CACHE_LIMIT) symbolCache.clear();
  symbolCache.set(venueSymbol, symbol);
  lastSymbol = [venueSymbol, symbol];
  return symbol;
}

/**
 * Kraken's v2 `BASE/QUOTE` symbol of a canonical `BASE-QUOTE` symbol
 * (`BTC-USD` → `BTC/USD`). Throws a `TypeError` when `symbol` is not
 * `BASE-QUOTE`.
 *
 * @example
 * ```ts
 * import { toKrakenSymbol } from "./parse.ts";
 *
 * toKrakenSymbol("MINA-GBP"); // "MINA/GBP"
 * ```
 */
export function toKrakenSymbol(symbol: string): string {
  const parts = symbol.split("-");
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new TypeError(`Symbol ${JSON.stringify(symbol)} is not BASE-QUOTE`);
  }
  return `${parts[0]}/${parts[1]}`;
}

function asset(code: string): string {
  return code === "XBT" ? "BTC" : code;
}

/**
 * The text of a v2 subscribe request for `channel` and Kraken's `symbols`
 * (`BTC/USD`, see {@linkcode toKrakenSymbol}), fields in the order Kraken's
 * documentation writes them.
 *
 * @example
 * ```ts
 * import { subscribeMessage } from "./parse.ts";
 *
 * subscribeMessage("book", ["MINA/GBP"], { depth: 25, snapshot: true });
 * // '{"method":"subscribe","params":{"channel":"book","symbol":["MINA/GBP"],"depth":25,"snapshot":true}}'
 * ```
 */
export function subscribeMessage(
  channel: KrakenChannel,
  symbols: readonly string[],
  options: KrakenSubscribeOptions = {},
): string {
  return request("subscribe", channel, symbols, options);
}

/**
 * The text of a v2 unsubscribe request; pass the `depth` the book was
 * subscribed with.
 *
 * @example
 * ```ts
 * import { unsubscribeMessage } from "./parse.ts";
 *
 * unsubscribeMessage("book", ["MINA/GBP"], { depth: 25 });
 * // '{"method":"unsubscribe","params":{"channel":"book","symbol":["MINA/GBP"],"depth":25}}'
 * ```
 */
export function unsubscribeMessage(
  channel: KrakenChannel,
  symbols: readonly string[],
  options: Omit<KrakenSubscribeOptions, "snapshot"> = {},
): string {
  return request("unsubscribe", channel, symbols, options);
}

/** The text of a v2 `ping` request, answered by a `pong` control. */
export function pingMessage(reqId?: number): string {
  return JSON.stringify(
    reqId === undefined ? { method: "ping" } : { method: "ping", req_id: reqId },
  );
}

function request(
  method: "subscribe" | "unsubscribe",
  channel: KrakenChannel,
  symbols: readonly string[],
  options: KrakenSubscribeOptions,
): string {
  if (symbols.length === 0 && channel !== "instrument") {
    throw new RangeError(`A ${method} to ${channel} needs at least one symbol`);
  }
  const params: Record<string, unknown> = { channel };
  if (symbols.length > 0) params.symbol = [...symbols];
  if (options.depth !== undefined) params.depth = options.depth;
  if (options.snapshot !== undefined && method === "subscribe") params.snapshot = options.snapshot;
  const body: Record<string, unknown> = { method, params };
  if (options.reqId !== undefined) body.req_id = options.reqId;
  return JSON.stringify(body);
}

// ---- field access -------------------------------------------------------

function fail(reason: string): never {
  throw new MalformedFrameError(reason);
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof JsonNumber);
}

/** `value` (the field `key` of the `what`) when it is a string. */
function string(value: JsonValue | undefined, key: string, what: string): string {
  if (typeof value === "string") return value;
  return fail(
    value === undefined
      ? `The ${what} has no ${key}`
      : `Field ${key} of the ${what} is not a string`,
  );
}

/** `value` (the field `key` of the `what`) when it is a string; null when absent or null. */
function optionalString(value: JsonValue | undefined, key: string, what: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return value;
  return fail(`Field ${key} of the ${what} is not a string`);
}

/** `value` (the field `key`) when it is a safe integer; null when absent or null. */
function optionalInteger(value: JsonValue | undefined, key: string): number | null {
  if (value === undefined || value === null) return null;
  if (value instanceof JsonNumber) {
    const number = Number(value.text);
    if (Number.isSafeInteger(number)) return number;
  }
  return fail(`Field ${key} is not an integer`);
}

/**
 * A price or size: `value` (the field `key` of the `what`) as a JSON number
 * (as Kraken sends them) or a string, checked to be a plain decimal, as its
 * exact text.
 */
function decimal(value: JsonValue | undefined, key: string, what: string): string {
  let text: string;
  if (value instanceof JsonNumber) text = value.text;
  else if (typeof value === "string") text = value;
  else {
    return fail(
      value === undefined
        ? `The ${what} has no ${key}`
        : `Field ${key} of the ${what} is not a number`,
    );
  }
  if (!isPlainDecimal(text)) {
    fail(`Field ${key} of the ${what} is not a decimal: ${JSON.stringify(text)}`);
  }
  return text;
}

/** An id: `value` (the field `key` of the `what`) as a JSON integer or a non-empty string, as text. */
function id(value: JsonValue | undefined, key: string, what: string): string {
  if (value instanceof JsonNumber) {
    if (isDigits(value.text)) return value.text;
  } else if (typeof value === "string" && value.length > 0) {
    return value;
  } else if (value === undefined) {
    fail(`The ${what} has no ${key}`);
  }
  return fail(`Field ${key} of the ${what} is not an id`);
}
