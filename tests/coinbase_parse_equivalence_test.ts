/**
 * The Coinbase parser against the one before its compact path for ticker
 * frames (commit 9b3aa94, copied below as it was): the same events,
 * controls, sequence numbers and errors for every frame of the fixtures and
 * for thousands of mutated ones, tickers most of all.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseCoinbaseFrame } from "../venues/coinbase/parse.ts";
import { fixtureLines, FUZZ_PIECES, mutateFrame, prng } from "./_helpers.ts";
import {
  type BarEvent,
  type Level,
  MalformedFrameError,
  type MarketEvent,
  type TopEvent,
  type TradeEvent,
} from "../market/events.ts";
import { isDigits, isPlainDecimal, timeUs } from "../venues/_fields.ts";

// ---------------------------------------------------------------------------
// The parser before (venues/coinbase/parse.ts at 9b3aa94), renamed old*.
// ---------------------------------------------------------------------------

/** The bar interval of Coinbase's `candles` channel. */
const COINBASE_CANDLE_INTERVAL = "5m";

/** An `l2_data` event for one product, prices and sizes as the exact text sent. */
interface CoinbaseBookControl {
  type: "book";
  /** A snapshot replaces the book; an update sets the listed levels (size 0 removes). */
  action: "snapshot" | "update";
  /** Canonical symbol: the product id, `BASE-QUOTE`. */
  symbol: string;
  /** Coinbase's product id. */
  venue_symbol: string;
  /** Bid levels in the order sent. */
  bids: Level[];
  /** Offer (ask) levels in the order sent. */
  asks: Level[];
  /** The frame's `sequence_num`. */
  sequence: number;
  /** The last update's `event_time` (the frame's `timestamp` when it has none), microseconds since the epoch. */
  timestamp: number;
}

/** The `subscriptions` channel: what the connection is now subscribed to. */
interface CoinbaseSubscriptionsControl {
  type: "subscriptions";
  /** Product ids by channel, e.g. `{ level2: ["BTC-USD"], heartbeats: ["heartbeats"] }`. */
  subscriptions: Record<string, string[]>;
}

/** The `heartbeats` channel: the connection is alive. */
interface CoinbaseHeartbeatControl {
  type: "heartbeat";
  /** Coinbase's heartbeat counter. */
  counter: number;
  /** Coinbase's `current_time` text. */
  current_time: string;
}

/** An error Coinbase sent, e.g. for a bad subscribe. */
interface CoinbaseErrorControl {
  type: "error";
  /** Coinbase's error text. */
  message: string;
}

/** A Coinbase frame that is not market data. */
type CoinbaseControl =
  | CoinbaseBookControl
  | CoinbaseSubscriptionsControl
  | CoinbaseHeartbeatControl
  | CoinbaseErrorControl;

/** What one Coinbase frame carries. */
interface CoinbaseParsedFrame {
  /** Normalized market events, in the order sent. */
  events: MarketEvent[];
  /** The frame's control message, or null when it carried only events. */
  control: CoinbaseControl | null;
  /** The frame's `sequence_num`; null for an error frame, which has none. */
  sequence: number | null;
}

/** {@linkcode CoinbaseParsedFrame} under the name every venue's parser uses. */
type ParsedFrame = CoinbaseParsedFrame;

/** {@linkcode CoinbaseControl} under the name every venue's parser uses. */
type Control = CoinbaseControl;

/** A channel that can be subscribed to. */
type CoinbaseChannel =
  | "level2"
  | "market_trades"
  | "ticker"
  | "ticker_batch"
  | "candles"
  | "heartbeats"
  | "status"
  | "user"
  | "futures_balance_summary";

/**
 * Parses one Coinbase Advanced Trade frame received at `receivedUs`
 * (microseconds since the epoch). Throws {@linkcode MalformedFrameError} —
 * and only that — when the frame is not JSON, has the wrong shape, a missing
 * or ill-typed field, an unknown channel or a price or size that is not a
 * decimal.
 *
 * An `l2_data` frame must carry one product's event, as Coinbase sends them;
 * a frame with several is rejected (the feed then sees a sequence gap at the
 * next frame and resubscribes: degraded, never wrong).
 *
 * @example
 * ```ts
 * import { parseCoinbaseFrame } from "../venues/coinbase/parse.ts";
 *
 * const frame = '{"channel":"market_trades","timestamp":"2026-08-09T21:05:48.251397169Z",' +
 *   '"sequence_num":9,"events":[{"type":"update","trades":[{"product_id":"BTC-USD",' +
 *   '"trade_id":"1068572091","price":"65083.67","size":"0.01034361",' +
 *   '"time":"2026-08-09T21:05:48.167634Z","side":"SELL"}]}]}';
 * const { events } = parseCoinbaseFrame(frame, 1_786_309_548_300_000);
 * // events[0]: { kind: "trade", symbol: "BTC-USD", side: "buy" (the maker sold), ... }
 * ```
 */
function oldParseCoinbaseFrame(frame: string, receivedUs: number): CoinbaseParsedFrame {
  try {
    return parseFrame(frame, receivedUs);
  } catch (error) {
    if (error instanceof MalformedFrameError) throw error;
    const detail = error instanceof Error ? error.message : String(error);
    throw new MalformedFrameError(`Unreadable Coinbase frame: ${detail}`, { cause: error });
  }
}

type Json = unknown;
type JsonRecord = Record<string, Json>;

function parseFrame(frame: string, receivedUs: number): CoinbaseParsedFrame {
  if (typeof frame !== "string") fail("Frame is not text");
  if (frame.startsWith(COMPACT_BOOK_HEAD)) {
    const book = compactBook(frame);
    if (book !== null) return book;
  }
  let message: Json;
  try {
    message = JSON.parse(frame);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new MalformedFrameError(`Frame is not valid JSON: ${detail}`, { cause: error });
  }
  if (!isObject(message)) fail("Frame is not a JSON object");
  const channel = message.channel;
  if (channel === undefined) {
    if (message.type === "error") {
      const text = message.message;
      if (typeof text !== "string") fail("Error frame has no message text");
      return { events: [], control: { type: "error", message: text }, sequence: null };
    }
    fail("Frame has no channel");
  }
  if (typeof channel !== "string") fail("Field channel is not a string");
  const sequence = message.sequence_num;
  if (typeof sequence !== "number" || !Number.isSafeInteger(sequence) || sequence < 0) {
    fail(
      sequence === undefined
        ? "Frame has no sequence_num"
        : "Field sequence_num is not a non-negative integer",
    );
  }
  const timestampText = message.timestamp;
  if (typeof timestampText !== "string") {
    fail(
      timestampText === undefined ? "Frame has no timestamp" : "Field timestamp is not a string",
    );
  }
  const events = message.events;
  if (!Array.isArray(events)) {
    fail(events === undefined ? "Frame has no events" : "Field events is not an array");
  }
  switch (channel) {
    case "l2_data":
      return { events: [], control: parseBook(events, sequence, timestampText), sequence };
    case "market_trades":
      return { events: parseTrades(events, receivedUs), control: null, sequence };
    case "ticker":
    case "ticker_batch":
      return {
        events: parseTickers(events, timeUs(timestampText), receivedUs),
        control: null,
        sequence,
      };
    case "candles":
      return {
        events: parseCandles(events, timeUs(timestampText), receivedUs),
        control: null,
        sequence,
      };
    case "heartbeats":
      return { events: [], control: parseHeartbeat(events), sequence };
    case "subscriptions":
      return { events: [], control: parseSubscriptions(events), sequence };
    default:
      return fail(`Unknown channel ${JSON.stringify(channel)}`);
  }
}

function parseBook(events: Json[], sequence: number, timestampText: string): CoinbaseBookControl {
  if (events.length !== 1) {
    fail(`Level2 frame carries ${events.length} events; exactly one is supported`);
  }
  const event = events[0];
  if (!isObject(event)) fail("Level2 event is not an object");
  const action = event.type;
  if (action !== "snapshot" && action !== "update") {
    fail("Level2 event type is not snapshot or update");
  }
  const productId = string(event.product_id, "product_id", "level2 event");
  const updates = event.updates;
  if (!Array.isArray(updates)) {
    fail(
      updates === undefined
        ? "Level2 event has no updates"
        : "Field updates of the level2 event is not an array",
    );
  }
  const bids: Level[] = [];
  const asks: Level[] = [];
  let eventTime: string = timestampText;
  for (let i = 0; i < updates.length; i++) {
    const update = updates[i];
    if (!isObject(update)) fail("Level2 update is not an object");
    const level: Level = [
      decimal(update.price_level, "price_level", "level2 update"),
      decimal(update.new_quantity, "new_quantity", "level2 update"),
    ];
    const side = update.side;
    if (side === "bid") bids.push(level);
    else if (side === "offer") asks.push(level);
    else fail("Field side of a level2 update is not bid or offer");
    eventTime = string(update.event_time, "event_time", "level2 update");
  }
  return {
    type: "book",
    action,
    symbol: productId,
    venue_symbol: productId,
    bids,
    asks,
    sequence,
    timestamp: timeUs(eventTime),
  };
}

function parseTrades(events: Json[], receivedUs: number): TradeEvent[] {
  const out: TradeEvent[] = [];
  for (let e = 0; e < events.length; e++) {
    const event = events[e];
    if (!isObject(event)) fail("Market trades event is not an object");
    const type = event.type;
    if (type !== "snapshot" && type !== "update") {
      fail("Market trades event type is not snapshot or update");
    }
    const trades = event.trades;
    if (!Array.isArray(trades)) fail("Field trades of the market trades event is not an array");
    // Coinbase lists an event's trades newest first; they are emitted oldest first, as the other
    // venues send them, so the last event is the newest also when several share a microsecond.
    for (let i = trades.length - 1; i >= 0; i--) {
      const trade = trades[i];
      if (!isObject(trade)) fail("Trade is not an object");
      const makerSide = trade.side;
      if (makerSide !== "BUY" && makerSide !== "SELL") {
        fail("Field side of a trade is not BUY or SELL");
      }
      const productId = string(trade.product_id, "product_id", "trade");
      out.push({
        kind: "trade",
        exchange: "coinbase",
        symbol: productId,
        venue_symbol: productId,
        ts_exchange: timeUs(string(trade.time, "time", "trade")),
        ts_local: receivedUs,
        trade_id: nonEmpty(trade.trade_id, "trade_id", "trade"),
        price: decimal(trade.price, "price", "trade"),
        qty: decimal(trade.size, "size", "trade"),
        // Coinbase names the maker's side; the aggressor took the other one.
        side: makerSide === "BUY" ? "sell" : "buy",
      });
    }
  }
  return out;
}

function parseTickers(events: Json[], tsExchange: number, receivedUs: number): TopEvent[] {
  const out: TopEvent[] = [];
  for (let e = 0; e < events.length; e++) {
    const event = events[e];
    if (!isObject(event)) fail("Ticker event is not an object");
    const type = event.type;
    if (type !== "snapshot" && type !== "update") {
      fail("Ticker event type is not snapshot or update");
    }
    const tickers = event.tickers;
    if (!Array.isArray(tickers)) fail("Field tickers of the ticker event is not an array");
    for (let i = 0; i < tickers.length; i++) {
      const ticker = tickers[i];
      if (!isObject(ticker)) fail("Ticker is not an object");
      const productId = string(ticker.product_id, "product_id", "ticker");
      out.push({
        exchange: "coinbase",
        symbol: productId,
        venue_symbol: productId,
        ts_exchange: tsExchange,
        ts_local: receivedUs,
        kind: "top",
        bid_price: decimal(ticker.best_bid, "best_bid", "ticker"),
        bid_qty: decimal(ticker.best_bid_quantity, "best_bid_quantity", "ticker"),
        ask_price: decimal(ticker.best_ask, "best_ask", "ticker"),
        ask_qty: decimal(ticker.best_ask_quantity, "best_ask_quantity", "ticker"),
      });
    }
  }
  return out;
}

function parseCandles(events: Json[], tsExchange: number, receivedUs: number): BarEvent[] {
  const out: BarEvent[] = [];
  for (let e = 0; e < events.length; e++) {
    const event = events[e];
    if (!isObject(event)) fail("Candles event is not an object");
    const type = event.type;
    if (type !== "snapshot" && type !== "update") {
      fail("Candles event type is not snapshot or update");
    }
    const candles = event.candles;
    if (!Array.isArray(candles)) fail("Field candles of the candles event is not an array");
    for (let i = 0; i < candles.length; i++) {
      const candle = candles[i];
      if (!isObject(candle)) fail("Candle is not an object");
      const productId = string(candle.product_id, "product_id", "candle");
      const start = string(candle.start, "start", "candle");
      if (!isDigits(start) || start.length > 10) {
        fail(`Field start of a candle is not epoch seconds: ${JSON.stringify(start)}`);
      }
      out.push({
        exchange: "coinbase",
        symbol: productId,
        venue_symbol: productId,
        ts_exchange: tsExchange,
        ts_local: receivedUs,
        kind: "bar",
        interval: COINBASE_CANDLE_INTERVAL,
        start: Number(start) * 1_000_000,
        open: decimal(candle.open, "open", "candle"),
        high: decimal(candle.high, "high", "candle"),
        low: decimal(candle.low, "low", "candle"),
        close: decimal(candle.close, "close", "candle"),
        volume: decimal(candle.volume, "volume", "candle"),
        trades: null,
        vwap: null,
      });
    }
  }
  return out;
}

function parseHeartbeat(events: Json[]): CoinbaseHeartbeatControl {
  const event = events[0];
  if (!isObject(event)) fail("Heartbeats frame has no event object");
  const counter = event.heartbeat_counter;
  let value: number;
  if (typeof counter === "number" && Number.isSafeInteger(counter) && counter >= 0) value = counter;
  else if (typeof counter === "string" && isDigits(counter) && counter.length < 16) {
    value = Number(counter);
  } else {
    return fail(
      counter === undefined
        ? "Heartbeat has no heartbeat_counter"
        : "Field heartbeat_counter is not an integer",
    );
  }
  return {
    type: "heartbeat",
    counter: value,
    current_time: string(event.current_time, "current_time", "heartbeat"),
  };
}

function parseSubscriptions(events: Json[]): CoinbaseSubscriptionsControl {
  const event = events[0];
  if (!isObject(event)) fail("Subscriptions frame has no event object");
  const subscriptions = event.subscriptions;
  if (!isObject(subscriptions)) fail("Field subscriptions is not an object");
  const out: Record<string, string[]> = {};
  for (const [channel, ids] of Object.entries(subscriptions)) {
    if (!Array.isArray(ids) || !ids.every((id) => typeof id === "string")) {
      fail(`Subscriptions of ${JSON.stringify(channel)} are not a list of strings`);
    }
    out[channel] = ids as string[];
  }
  return { type: "subscriptions", subscriptions: out };
}

// ---- the compact path ---------------------------------------------------
// `l2_data` frames, most of a session, exactly as Coinbase writes them, read
// by a scan of the text (each update matched by one sticky regular expression
// that captures nothing, its fields found between the fixed texts) instead of
// JSON.parse plus a check of every field.
// Everything the scan accepts is valid JSON that the general path reads to
// the same result; any other frame goes to the general path, which then gives
// the result or the error. Tests hold both paths to the same result on every
// captured frame and on thousands of mutated ones.

/** How an `l2_data` frame written by Coinbase starts. */
const COMPACT_BOOK_HEAD = '{"channel":"l2_data","timestamp":"';
const COMPACT_SEQUENCE = '","sequence_num":';
const COMPACT_EVENT = ',"events":[{"type":"';
const COMPACT_UPDATE = 'update","product_id":"';
const COMPACT_SNAPSHOT = 'snapshot","product_id":"';
const COMPACT_UPDATES = '","updates":[';
const COMPACT_BID = '{"side":"bid","event_time":"';
const COMPACT_OFFER = '{"side":"offer","event_time":"';
const COMPACT_PRICE = '","price_level":"';
const COMPACT_SIZE = '","new_quantity":"';
const COMPACT_TAIL = "}]}";
/** One update and the `,` or `]` after it, matched where `lastIndex` says. */
const COMPACT_LEVEL = new RegExp(
  String.raw`\{"side":"(?:bid|offer)","event_time":"[^"\\\x00-\x1f]*",` +
    String.raw`"price_level":"\d+(?:\.\d+)?","new_quantity":"\d+(?:\.\d+)?"\}[,\]]`,
  "y",
);

/** {@linkcode parseCoinbaseCompactBook} of a frame known to start with {@linkcode COMPACT_BOOK_HEAD}. */
function compactBook(frame: string): CoinbaseParsedFrame | null {
  const length = frame.length;
  const timestampStart = COMPACT_BOOK_HEAD.length;
  const timestampEnd = stringEnd(frame, timestampStart);
  if (timestampEnd < 0 || !has(frame, timestampEnd, COMPACT_SEQUENCE)) return null;
  // A JSON integer of at most 15 digits: always a safe one.
  const sequenceStart = timestampEnd + COMPACT_SEQUENCE.length;
  let at = sequenceStart;
  let sequence = 0;
  for (; at < length; at++) {
    const c = frame.charCodeAt(at) - 0x30;
    if (c < 0 || c > 9) break;
    sequence = sequence * 10 + c;
  }
  const digits = at - sequenceStart;
  if (
    digits === 0 || digits > 15 || (digits > 1 && frame.charCodeAt(sequenceStart) === 0x30) ||
    !has(frame, at, COMPACT_EVENT)
  ) {
    return null;
  }
  at += COMPACT_EVENT.length;
  let action: "snapshot" | "update";
  if (has(frame, at, COMPACT_UPDATE)) {
    action = "update";
    at += COMPACT_UPDATE.length;
  } else if (has(frame, at, COMPACT_SNAPSHOT)) {
    action = "snapshot";
    at += COMPACT_SNAPSHOT.length;
  } else {
    return null;
  }
  const productEnd = stringEnd(frame, at);
  if (productEnd < 0 || !has(frame, productEnd, COMPACT_UPDATES)) return null;
  const productId = frame.slice(at, productEnd);
  at = productEnd + COMPACT_UPDATES.length;
  const bids: Level[] = [];
  const asks: Level[] = [];
  // The last update's event_time, else the frame's timestamp.
  let timeStart = timestampStart;
  let timeEnd = timestampEnd;
  if (frame.charCodeAt(at) === 0x5d) {
    at++; // `]`: no updates
  } else {
    for (;;) {
      COMPACT_LEVEL.lastIndex = at;
      if (!COMPACT_LEVEL.test(frame)) return null;
      const end = COMPACT_LEVEL.lastIndex;
      // `{"side":"` is 9 characters; the rest is found between the fixed texts.
      const bid = frame.charCodeAt(at + 9) === 0x62;
      timeStart = at + (bid ? COMPACT_BID.length : COMPACT_OFFER.length);
      timeEnd = frame.indexOf('"', timeStart);
      const priceStart = timeEnd + COMPACT_PRICE.length;
      const priceEnd = frame.indexOf('"', priceStart);
      (bid ? bids : asks).push([
        frame.slice(priceStart, priceEnd),
        frame.slice(priceEnd + COMPACT_SIZE.length, end - 3),
      ]);
      at = end;
      if (frame.charCodeAt(end - 1) === 0x5d) break;
    }
  }
  if (at + COMPACT_TAIL.length !== length || !has(frame, at, COMPACT_TAIL)) return null;
  return {
    events: [],
    control: {
      type: "book",
      action,
      symbol: productId,
      venue_symbol: productId,
      bids,
      asks,
      sequence,
      timestamp: timeUs(frame, timeStart, timeEnd),
    },
    sequence,
  };
}

/** Whether `text` holds `literal` at `at` (a loop: faster here than `startsWith`). */
function has(text: string, at: number, literal: string): boolean {
  if (at + literal.length > text.length) return false;
  for (let i = 0; i < literal.length; i++) {
    if (text.charCodeAt(at + i) !== literal.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Where the JSON string whose content starts at `start` ends (its closing
 * quote), or -1 when it holds an escape or a control character, or is not
 * closed.
 */
function stringEnd(text: string, start: number): number {
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) return i;
    if (c === 0x5c || c < 0x20) return -1;
  }
  return -1;
}

// ---- field access -------------------------------------------------------

function fail(reason: string): never {
  throw new MalformedFrameError(reason);
}

function isObject(value: Json): value is JsonRecord {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `value` (the field `key` of the `what`) when it is a string. */
function string(value: Json, key: string, what: string): string {
  if (typeof value === "string") return value;
  return fail(
    value === undefined
      ? `The ${what} has no ${key}`
      : `Field ${key} of the ${what} is not a string`,
  );
}

/** `value` (the field `key` of the `what`) when it is a non-empty string. */
function nonEmpty(value: Json, key: string, what: string): string {
  if (typeof value === "string" && value.length > 0) return value;
  if (value === "") fail(`Field ${key} of the ${what} is empty`);
  return string(value, key, what);
}

/** `value` (the field `key` of the `what`) when it is a string holding a plain decimal. */
function decimal(value: Json, key: string, what: string): string {
  if (typeof value === "string" && isPlainDecimal(value)) return value;
  if (typeof value === "string") {
    fail(`Field ${key} of the ${what} is not a decimal: ${JSON.stringify(value)}`);
  }
  return string(value, key, what);
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

const RX = 1_786_309_548_300_000;
const FILES = [
  "advanced_trade_session_2026-08-09.raw.jsonl",
  "advanced_trade_subscribe_requests_2026-08-09.raw.jsonl",
  "channel_candles_2026-08-09.raw.jsonl",
  "channel_heartbeats_2026-08-09.raw.jsonl",
  "channel_market_trades_2026-08-09.raw.jsonl",
  "channel_subscriptions_2026-08-09.raw.jsonl",
  "channel_ticker_2026-08-09.raw.jsonl",
];
const FRAMES = FILES.flatMap((file) => fixtureLines("coinbase", file))
  .filter((frame) => frame.length < 100_000);
const TICKERS = FRAMES.filter((frame) => frame.startsWith('{"channel":"ticker",'));

/** What a parser makes of `frame`: its result, or the error's class and message. */
function outcome(parse: () => unknown): unknown {
  try {
    return parse();
  } catch (error) {
    return error instanceof Error ? `${error.constructor.name}: ${error.message}` : error;
  }
}

function assertSame(frame: string): void {
  assert.deepEqual(
    outcome(() => parseCoinbaseFrame(frame, RX)),
    outcome(() => oldParseCoinbaseFrame(frame, RX)),
    frame,
  );
}

/** What this fuzz inserts or writes over: JSON's punctuation and NUL, a zero, `Z`, a non-ASCII letter. */
const PIECES: readonly string[] = [...FUZZ_PIECES, "0", "Z", "é"];

/** A random change of `frame` ({@linkcode mutateFrame} with {@linkcode PIECES}). */
function mutate(frame: string, random: () => number): string {
  return mutateFrame(frame, random, PIECES);
}

Deno.test("every Coinbase fixture frame parses as before", () => {
  assert.ok(TICKERS.length >= 300, `${TICKERS.length} ticker frames`);
  for (const frame of FRAMES) assertSame(frame);
});

Deno.test("ticker frames with other field values, times and layouts parse as before", () => {
  const ticker = TICKERS[0]!;
  const edits: [RegExp, string][] = [
    [/"timestamp":"[^"]*"/, '"timestamp":"2026-08-09T21:05:48Z"'],
    [/"timestamp":"[^"]*"/, '"timestamp":"2026-02-30T21:05:48Z"'],
    [/"timestamp":"[^"]*"/, '"timestamp":"2026-08-09 21:05:48Z"'],
    [/"timestamp":"[^"]*"/, '"timestamp":""'],
    [/"sequence_num":\d+/, '"sequence_num":0'],
    [/"sequence_num":\d+/, '"sequence_num":012'],
    [/"sequence_num":\d+/, '"sequence_num":999999999999999'],
    [/"sequence_num":\d+/, '"sequence_num":9999999999999999'],
    [/"sequence_num":\d+/, '"sequence_num":1e3'],
    [/"sequence_num":\d+/, '"sequence_num":-1'],
    [/"type":"snapshot"/, '"type":"update"'],
    [/"type":"snapshot"/, '"type":"other"'],
    [/"type":"ticker"/, '"type":"ticker_x"'],
    [/"product_id":"[^"]*"/, '"product_id":""'],
    [/"product_id":"[^"]*"/, '"product_id":"ETH\\u002DUSD"'],
    [/"product_id":"[^"]*"/, '"product_id":7'],
    [/"price":"[^"]*"/, '"price":null'],
    [/"price":"[^"]*"/, '"price":"x\\"y"'],
    [/"low_52_w":"[^"]*"/, '"low_52_w":"-"'],
    [/"best_bid":"[^"]*"/, '"best_bid":"1."'],
    [/"best_bid":"[^"]*"/, '"best_bid":".5"'],
    [/"best_ask":"[^"]*"/, '"best_ask":"1e5"'],
    [/"best_bid_quantity":"[^"]*"/, '"best_bid_quantity":"0"'],
    [/"best_ask_quantity":"[^"]*"/, '"best_ask_quantity":1'],
    [/"best_ask_quantity":"[^"]*"/, '"best_ask_quantity":"2","extra":1'],
    [/^\{"channel":"ticker"/, '{"channel":"ticker_batch"'],
    [/\}\]\}\]\}$/, "}]}]} "],
    [/\}\]\}\]\}$/, '},{"type":"ticker"}]}]}'],
  ];
  for (const [pattern, replacement] of edits) {
    const frame = ticker.replace(pattern, replacement);
    assert.notEqual(frame, ticker, String(pattern));
    assertSame(frame);
  }
});

Deno.test("mutated Coinbase frames, tickers most of all, parse or fail as before", () => {
  const random = prng(20260809);
  let parsed = 0;
  let failed = 0;
  for (let round = 0; round < 30_000; round++) {
    const seeds = random() < 0.6 ? TICKERS : FRAMES;
    let frame = seeds[Math.floor(random() * seeds.length)]!;
    const mutations = 1 + Math.floor(random() * 2);
    for (let m = 0; m < mutations; m++) frame = mutate(frame, random);
    assertSame(frame);
    try {
      parseCoinbaseFrame(frame, RX);
      parsed++;
    } catch {
      failed++;
    }
  }
  assert.ok(parsed > 2_000 && failed > 2_000, `parsed ${parsed}, failed ${failed}`);
});
