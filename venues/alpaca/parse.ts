/**
 * Alpaca market data v2 stock stream (`wss://stream.data.alpaca.markets/v2/{feed}`)
 * frames to normalized events: a pure function per frame, no IO, no clock.
 *
 * Every server frame is a JSON array of messages, each with a type `T`
 * (a bare message object is accepted too: the docs show data points that
 * way). What each becomes:
 *
 * | `T` | result |
 * |---|---|
 * | `t` trade | {@linkcode TradeEvent}, side "unknown", `trade_id` = `"<x>:<i>"` |
 * | `q` quote | {@linkcode QuoteEvent} (sizes as sent: the docs give them in round lots) |
 * | `b` minute bar | {@linkcode BarEvent} interval "1m" |
 * | `u` updated minute bar | {@linkcode BarEvent} interval "1m" with the same `start`: it replaces the earlier bar |
 * | `d` daily bar | {@linkcode BarEvent} interval "1d", the running day so far, re-sent as it changes |
 * | `s` trading status, `l` LULD band, `c` correction, `x` cancel/error, `i` imbalance | a notice in `notices` |
 * | `success` (`connected`, `authenticated`), `error` (400-409, 500, ...), `subscription` | the frame's `control` |
 *
 * Trade ids are per exchange (the same `i` recurs on different `x`), so the
 * normalized `trade_id` is `"<x>:<i>"`, unique per symbol as
 * {@linkcode TradeEvent} requires; corrections and cancels carry ids in the
 * same form so they can be matched. A bar's `ts_exchange` is its start `t`,
 * the only time Alpaca sends with it.
 *
 * Exact numbers: Alpaca sends prices and sizes as JSON numbers, and
 * `JSON.parse` would turn them into floats (`126.50` → `126.5`, large ids
 * rounded). This module therefore scans frames with its own strict JSON
 * reader that keeps every number token's text as sent. A token in exponent
 * form (`1e-7`) is rewritten as the plain decimal of exactly the same value
 * (`0.0000001`), digit by digit, never through a float; a negative price or
 * size is malformed.
 *
 * Session controls arrive alone in a frame (the docs guarantee it); a frame
 * with two is malformed. Notices may share a frame with data, so there can
 * be many.
 *
 * @example
 * ```ts
 * const { events } = parseAlpacaFrame(
 *   '[{"T":"t","S":"AAPL","i":96921,"x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"}]',
 *   Date.now() * 1000,
 * );
 * // events[0]: { kind: "trade", symbol: "AAPL", trade_id: "D:96921", price: "126.55", qty: "1", ... }
 * ```
 *
 * @module
 */

import {
  type BarEvent,
  type Decimal,
  MalformedFrameError,
  type MarketEvent,
  type QuoteEvent,
  type TradeEvent,
} from "../../market/events.ts";
import { timeUs } from "../_fields.ts";

/** `[{"T":"success","msg":"connected"}]`: send {@linkcode alpacaAuthMessage} next. */
export interface AlpacaConnectedControl {
  /** Discriminant. */
  type: "connected";
}

/** `[{"T":"success","msg":"authenticated"}]`: subscriptions may be sent. */
export interface AlpacaAuthenticatedControl {
  /** Discriminant. */
  type: "authenticated";
}

/** The whole current subscription, sent after every subscribe or unsubscribe. */
export interface AlpacaSubscriptionControl {
  /** Discriminant. */
  type: "subscription";
  /** Tickers whose trades are streamed. */
  trades: string[];
  /** Tickers whose quotes are streamed. */
  quotes: string[];
  /** Tickers whose minute bars are streamed (`"*"` for all). */
  bars: string[];
  /** Tickers whose updated minute bars are streamed. */
  updatedBars: string[];
  /** Tickers whose daily bars are streamed. */
  dailyBars: string[];
  /** Tickers whose trading statuses are streamed. */
  statuses: string[];
  /** Tickers whose LULD bands are streamed. */
  lulds: string[];
  /** Tickers whose trade corrections are streamed (follows `trades`). */
  corrections: string[];
  /** Tickers whose trade cancels and errors are streamed (follows `trades`). */
  cancelErrors: string[];
  /** Tickers whose order imbalances are streamed. */
  imbalances: string[];
}

/**
 * An error from the server: 400 invalid syntax, 401 not authenticated, 402
 * auth failed, 403 already authenticated, 404 auth timeout, 405 symbol limit
 * exceeded, 406 connection limit exceeded, 407 slow client, 408 v2 not
 * enabled, 409 insufficient subscription, 500 internal error (others may
 * come; the code is passed on as sent).
 */
export interface AlpacaErrorControl {
  /** Discriminant. */
  type: "error";
  /** Alpaca's error code. */
  code: number;
  /** Alpaca's error text. */
  msg: string;
}

/** A session message: at most one per frame. */
export type AlpacaControl =
  | AlpacaConnectedControl
  | AlpacaAuthenticatedControl
  | AlpacaSubscriptionControl
  | AlpacaErrorControl;

/** Fields every notice carries. */
export interface AlpacaNoticeBase {
  /** Ticker. */
  symbol: string;
  /** The message's `t`, microseconds since the epoch. */
  tsUs: number;
  /** Tape (`A`, `B`, `C`, `O`), or null when absent. */
  tape: string | null;
}

/** `T: "s"`: trading status, such as a halt (`sc` "H") or a resumption. */
export interface AlpacaTradingStatusNotice extends AlpacaNoticeBase {
  /** Discriminant. */
  type: "trading_status";
  /** Status code `sc` (CTA `2` halt, `3` resume; UTP `H` halt, `T` resume, ...). */
  statusCode: string;
  /** Status text `sm`. */
  statusMessage: string | null;
  /** Reason code `rc`. */
  reasonCode: string | null;
  /** Reason text `rm`. */
  reasonMessage: string | null;
}

/** `T: "l"`: limit up-limit down price band. */
export interface AlpacaLuldNotice extends AlpacaNoticeBase {
  /** Discriminant. */
  type: "luld";
  /** Limit up price `u`. */
  limitUp: Decimal;
  /** Limit down price `d`. */
  limitDown: Decimal;
  /** Indicator `i`. */
  indicator: string | null;
}

/** One side of a correction. */
export interface AlpacaCorrectedTrade {
  /** `"<exchange>:<id>"`, as the {@linkcode TradeEvent} carried it. */
  tradeId: string;
  /** Trade price. */
  price: Decimal;
  /** Trade size. */
  qty: Decimal;
  /** Trade condition codes. */
  conditions: string[];
}

/** `T: "c"`: an earlier trade was wrong; `corrected` replaces `original`. */
export interface AlpacaCorrectionNotice extends AlpacaNoticeBase {
  /** Discriminant. */
  type: "correction";
  /** Exchange code. */
  exchange: string;
  /** The trade as first reported. */
  original: AlpacaCorrectedTrade;
  /** The trade as it should have been. */
  corrected: AlpacaCorrectedTrade;
}

/** `T: "x"`: an earlier trade was cancelled (`a` "C") or was an error (`a` "E"). */
export interface AlpacaCancelErrorNotice extends AlpacaNoticeBase {
  /** Discriminant. */
  type: "cancel_error";
  /** `"<exchange>:<id>"`, as the {@linkcode TradeEvent} carried it. */
  tradeId: string;
  /** Exchange code. */
  exchange: string;
  /** Price of the trade withdrawn. */
  price: Decimal;
  /** Size of the trade withdrawn. */
  qty: Decimal;
  /** `a`: "C" cancel or "E" error. */
  action: "cancel" | "error";
}

/** `T: "i"`: order imbalance price. */
export interface AlpacaImbalanceNotice extends AlpacaNoticeBase {
  /** Discriminant. */
  type: "imbalance";
  /** Imbalance price `p`. */
  price: Decimal;
}

/** A per-symbol message that is not a normalized event; a frame may carry many. */
export type AlpacaNotice =
  | AlpacaTradingStatusNotice
  | AlpacaLuldNotice
  | AlpacaCorrectionNotice
  | AlpacaCancelErrorNotice
  | AlpacaImbalanceNotice;

/** What one Alpaca frame yields. */
export interface AlpacaParsedFrame {
  /** Normalized events, in frame order. */
  events: MarketEvent[];
  /** The session control message, when the frame is one. */
  control: AlpacaControl | null;
  /** Status, LULD, correction, cancel and imbalance messages, in frame order. */
  notices: AlpacaNotice[];
}

/** The venue-neutral name of {@linkcode AlpacaParsedFrame}. */
export type ParsedFrame = AlpacaParsedFrame;
/** The venue-neutral name of {@linkcode AlpacaControl}. */
export type Control = AlpacaControl;

/** Channels of {@linkcode alpacaSubscribeMessage}; each a list of tickers (`"*"` for all). */
export interface AlpacaChannels {
  /** Trades (corrections and cancels come with them). */
  trades?: readonly string[];
  /** Quotes. */
  quotes?: readonly string[];
  /** Minute bars. */
  bars?: readonly string[];
  /** Late corrections of minute bars. */
  updatedBars?: readonly string[];
  /** Running daily bars. */
  dailyBars?: readonly string[];
  /** Trading statuses (halts). */
  statuses?: readonly string[];
  /** Limit up-limit down bands. */
  lulds?: readonly string[];
  /** Order imbalances. */
  imbalances?: readonly string[];
}

const CHANNELS = [
  "trades",
  "quotes",
  "bars",
  "updatedBars",
  "dailyBars",
  "statuses",
  "lulds",
  "imbalances",
] as const;

/**
 * The authentication message to send after `connected`. The result holds the
 * secret: send it, never log it.
 *
 * @example
 * ```ts
 * declare const socket: WebSocket;
 * declare const keyId: string;
 * declare const secretKey: string;
 *
 * socket.send(alpacaAuthMessage(keyId, secretKey));
 * ```
 */
export function alpacaAuthMessage(key: string, secret: string): string {
  if (typeof key !== "string" || key === "") throw new TypeError("Alpaca key id is empty");
  if (typeof secret !== "string" || secret === "") throw new TypeError("Alpaca secret is empty");
  return JSON.stringify({ action: "auth", key, secret });
}

/**
 * The message subscribing to `channels` (added to the current
 * subscription). Throws a `TypeError` when no channel lists a symbol.
 *
 * @example
 * ```ts
 * alpacaSubscribeMessage({ trades: ["AAPL"], quotes: ["AMD"], bars: ["*"] });
 * // '{"action":"subscribe","trades":["AAPL"],"quotes":["AMD"],"bars":["*"]}'
 * ```
 */
export function alpacaSubscribeMessage(channels: AlpacaChannels): string {
  return channelMessage("subscribe", channels);
}

/**
 * The message removing `channels` from the current subscription. Throws a
 * `TypeError` when no channel lists a symbol.
 *
 * @example
 * ```ts
 * alpacaUnsubscribeMessage({ bars: ["*"] }); // '{"action":"unsubscribe","bars":["*"]}'
 * ```
 */
export function alpacaUnsubscribeMessage(channels: AlpacaChannels): string {
  return channelMessage("unsubscribe", channels);
}

function channelMessage(action: string, channels: AlpacaChannels): string {
  const message: Record<string, unknown> = { action };
  let count = 0;
  for (const channel of CHANNELS) {
    const symbols = channels[channel];
    if (symbols === undefined || symbols.length === 0) continue;
    for (const symbol of symbols) {
      if (typeof symbol !== "string" || !/^(?:\*|[A-Z0-9.\-/]+)$/.test(symbol)) {
        throw new TypeError(`Not an Alpaca symbol in ${channel}: ${JSON.stringify(symbol)}`);
      }
    }
    message[channel] = [...symbols];
    count += symbols.length;
  }
  if (count === 0) throw new TypeError(`Nothing to ${action}: every channel is empty`);
  return JSON.stringify(message);
}

/**
 * Parses one Alpaca market-data frame. `receivedUs` is when it arrived,
 * microseconds since the epoch. Throws {@linkcode MalformedFrameError}, and
 * only that, when the frame is not valid JSON, not an array of messages, or
 * a message has an unknown type or a missing or ill-typed field.
 *
 * @example
 * ```ts
 * parseAlpacaFrame('[{"T":"error","code":402,"msg":"auth failed"}]', 0).control;
 * // { type: "error", code: 402, msg: "auth failed" }
 * ```
 */
export function parseAlpacaFrame(frame: string, receivedUs: number): AlpacaParsedFrame {
  if (typeof frame !== "string") throw new MalformedFrameError("Frame is not text");
  const out: AlpacaParsedFrame = { events: [], control: null, notices: [] };
  try {
    reader.start(frame);
    const first = reader.peek();
    if (first === LBRACE) {
      reader.readMessage();
      handleMessage(out, receivedUs);
    } else if (first === LBRACKET) {
      reader.pos++;
      if (reader.peek() === RBRACKET) {
        throw new MalformedFrameError("Frame carries no messages");
      }
      for (;;) {
        if (reader.peek() !== LBRACE) reader.fail("Message is not a JSON object");
        reader.readMessage();
        handleMessage(out, receivedUs);
        const next = reader.peek();
        reader.pos++;
        if (next === COMMA) continue;
        if (next === RBRACKET) break;
        reader.pos--;
        reader.fail("Expected , or ] after a message");
      }
    } else {
      reader.fail("Frame is not a JSON array of messages");
    }
    if (!Number.isNaN(reader.peek())) reader.fail("Unexpected text after the frame");
  } catch (error) {
    if (error instanceof MalformedFrameError) throw error;
    throw new MalformedFrameError("Frame could not be parsed", { cause: error });
  } finally {
    reader.end();
  }
  return out;
}

// --- Message handling -----------------------------------------------------

function handleMessage(out: AlpacaParsedFrame, receivedUs: number): void {
  const type = reader.string(F.T, "T", "message");
  switch (type) {
    case "t":
      out.events.push(trade(receivedUs));
      return;
    case "q":
      out.events.push(quote(receivedUs));
      return;
    case "b":
    case "u":
      out.events.push(bar(receivedUs, "1m", type === "b" ? "bar" : "updated bar"));
      return;
    case "d":
      out.events.push(bar(receivedUs, "1d", "daily bar"));
      return;
    case "s":
      out.notices.push(tradingStatus());
      return;
    case "l":
      out.notices.push(luld());
      return;
    case "c":
      out.notices.push(correction());
      return;
    case "x":
      out.notices.push(cancelError());
      return;
    case "i":
      out.notices.push(imbalance());
      return;
    case "success":
    case "error":
    case "subscription":
      if (out.control !== null) {
        throw new MalformedFrameError("Frame carries more than one control message");
      }
      out.control = control(type);
      return;
    default:
      throw new MalformedFrameError(`Unknown message type ${JSON.stringify(type)}`);
  }
}

function trade(receivedUs: number): TradeEvent {
  const what = "trade";
  const symbol = reader.string(F.S, "S", what);
  const exchange = reader.string(F.x, "x", what);
  reader.checkStrings(F.c, "c", what);
  return {
    kind: "trade",
    exchange: "alpaca",
    symbol,
    venue_symbol: symbol,
    ts_exchange: reader.time(F.t, "t", what),
    ts_local: receivedUs,
    trade_id: `${exchange}:${reader.integer(F.i, "i", what)}`,
    price: reader.decimal(F.p, "p", what),
    qty: reader.decimal(F.s, "s", what),
    side: "unknown",
  };
}

function quote(receivedUs: number): QuoteEvent {
  const what = "quote";
  const symbol = reader.string(F.S, "S", what);
  reader.checkStrings(F.c, "c", what);
  return {
    kind: "quote",
    exchange: "alpaca",
    symbol,
    venue_symbol: symbol,
    ts_exchange: reader.time(F.t, "t", what),
    ts_local: receivedUs,
    bid_price: reader.decimal(F.bp, "bp", what),
    bid_qty: reader.decimal(F.bs, "bs", what),
    ask_price: reader.decimal(F.ap, "ap", what),
    ask_qty: reader.decimal(F.as, "as", what),
    bid_exchange: reader.optionalString(F.bx, "bx", what),
    ask_exchange: reader.optionalString(F.ax, "ax", what),
  };
}

function bar(receivedUs: number, interval: string, what: string): BarEvent {
  const symbol = reader.string(F.S, "S", what);
  const start = reader.time(F.t, "t", what);
  const trades = reader.has(F.n) ? Number(reader.integer(F.n, "n", what)) : null;
  if (trades !== null && !Number.isSafeInteger(trades)) {
    throw new MalformedFrameError(`Field n of ${what} is too large`);
  }
  return {
    kind: "bar",
    exchange: "alpaca",
    symbol,
    venue_symbol: symbol,
    ts_exchange: start,
    ts_local: receivedUs,
    interval,
    start,
    open: reader.decimal(F.o, "o", what),
    high: reader.decimal(F.h, "h", what),
    low: reader.decimal(F.l, "l", what),
    close: reader.decimal(F.c, "c", what),
    volume: reader.decimal(F.v, "v", what),
    trades,
    vwap: reader.has(F.vw) ? reader.decimal(F.vw, "vw", what) : null,
  };
}

function tradingStatus(): AlpacaTradingStatusNotice {
  const what = "trading status";
  return {
    type: "trading_status",
    symbol: reader.string(F.S, "S", what),
    tsUs: reader.time(F.t, "t", what),
    tape: reader.optionalString(F.z, "z", what),
    statusCode: reader.string(F.sc, "sc", what),
    statusMessage: reader.optionalString(F.sm, "sm", what),
    reasonCode: reader.optionalString(F.rc, "rc", what),
    reasonMessage: reader.optionalString(F.rm, "rm", what),
  };
}

function luld(): AlpacaLuldNotice {
  const what = "LULD";
  return {
    type: "luld",
    symbol: reader.string(F.S, "S", what),
    tsUs: reader.time(F.t, "t", what),
    tape: reader.optionalString(F.z, "z", what),
    limitUp: reader.decimal(F.u, "u", what),
    limitDown: reader.decimal(F.d, "d", what),
    indicator: reader.optionalString(F.i, "i", what),
  };
}

function correction(): AlpacaCorrectionNotice {
  const what = "correction";
  const exchange = reader.string(F.x, "x", what);
  return {
    type: "correction",
    symbol: reader.string(F.S, "S", what),
    tsUs: reader.time(F.t, "t", what),
    tape: reader.optionalString(F.z, "z", what),
    exchange,
    original: {
      tradeId: `${exchange}:${reader.integer(F.oi, "oi", what)}`,
      price: reader.decimal(F.op, "op", what),
      qty: reader.decimal(F.os, "os", what),
      conditions: reader.optionalStrings(F.oc, "oc", what) ?? [],
    },
    corrected: {
      tradeId: `${exchange}:${reader.integer(F.ci, "ci", what)}`,
      price: reader.decimal(F.cp, "cp", what),
      qty: reader.decimal(F.cs, "cs", what),
      conditions: reader.optionalStrings(F.cc, "cc", what) ?? [],
    },
  };
}

function cancelError(): AlpacaCancelErrorNotice {
  const what = "cancel/error";
  const exchange = reader.string(F.x, "x", what);
  const action = reader.string(F.a, "a", what);
  if (action !== "C" && action !== "E") {
    throw new MalformedFrameError(`Field a of ${what} must be "C" or "E", got ${preview(action)}`);
  }
  return {
    type: "cancel_error",
    symbol: reader.string(F.S, "S", what),
    tsUs: reader.time(F.t, "t", what),
    tape: reader.optionalString(F.z, "z", what),
    tradeId: `${exchange}:${reader.integer(F.i, "i", what)}`,
    exchange,
    price: reader.decimal(F.p, "p", what),
    qty: reader.decimal(F.s, "s", what),
    action: action === "C" ? "cancel" : "error",
  };
}

function imbalance(): AlpacaImbalanceNotice {
  const what = "imbalance";
  return {
    type: "imbalance",
    symbol: reader.string(F.S, "S", what),
    tsUs: reader.time(F.t, "t", what),
    tape: reader.optionalString(F.z, "z", what),
    price: reader.decimal(F.p, "p", what),
  };
}

function control(type: "success" | "error" | "subscription"): AlpacaControl {
  if (type === "success") {
    const msg = reader.string(F.msg, "msg", "success message");
    if (msg === "connected") return { type: "connected" };
    if (msg === "authenticated") return { type: "authenticated" };
    throw new MalformedFrameError(`Unknown success message ${preview(msg)}`);
  }
  if (type === "error") {
    const code = Number(reader.integer(F.code, "code", "error message"));
    if (!Number.isSafeInteger(code)) throw new MalformedFrameError("Error code is too large");
    return { type: "error", code, msg: reader.string(F.msg, "msg", "error message") };
  }
  const what = "subscription";
  const list = (slot: number, key: string) => reader.optionalStrings(slot, key, what) ?? [];
  return {
    type: "subscription",
    trades: list(F.trades, "trades"),
    quotes: list(F.quotes, "quotes"),
    bars: list(F.bars, "bars"),
    updatedBars: list(F.updatedBars, "updatedBars"),
    dailyBars: list(F.dailyBars, "dailyBars"),
    statuses: list(F.statuses, "statuses"),
    lulds: list(F.lulds, "lulds"),
    corrections: list(F.corrections, "corrections"),
    cancelErrors: list(F.cancelErrors, "cancelErrors"),
    imbalances: list(F.imbalances, "imbalances"),
  };
}

// --- Exact JSON reader -------------------------------------------------------

const TAB = 9;
const LF = 10;
const CR = 13;
const SPACE = 32;
const QUOTE = 34;
const COMMA = 44;
const MINUS = 45;
const DOT = 46;
const COLON = 58;
const LBRACKET = 91;
const BACKSLASH = 92;
const RBRACKET = 93;
const LBRACE = 123;
const RBRACE = 125;

/** Field slots: every key the stock stream sends. */
const FIELDS = [
  "T",
  "S",
  "i",
  "x",
  "p",
  "s",
  "t",
  "c",
  "z",
  "bx",
  "bp",
  "bs",
  "ax",
  "ap",
  "as",
  "o",
  "h",
  "l",
  "v",
  "n",
  "vw",
  "sc",
  "sm",
  "rc",
  "rm",
  "oi",
  "op",
  "os",
  "oc",
  "ci",
  "cp",
  "cs",
  "cc",
  "a",
  "u",
  "d",
  "msg",
  "code",
  "trades",
  "quotes",
  "bars",
  "updatedBars",
  "dailyBars",
  "statuses",
  "lulds",
  "corrections",
  "cancelErrors",
  "imbalances",
] as const;

/** Slot number of each field name. */
const F = Object.fromEntries(FIELDS.map((name, slot) => [name, slot])) as {
  readonly [K in typeof FIELDS[number]]: number;
};

/** Slot of any field name. */
const SLOT_BY_NAME = new Map<string, number>(FIELDS.map((name, slot) => [name, slot]));

/** Slot of a one- or two-character ASCII key, indexed by `c0 | c1 << 7`; -1 for none. */
const SLOT_BY_SHORT_KEY = new Int8Array(1 << 14).fill(-1);
for (const [slot, name] of FIELDS.entries()) {
  if (name.length === 1) SLOT_BY_SHORT_KEY[name.charCodeAt(0)] = slot;
  if (name.length === 2) SLOT_BY_SHORT_KEY[name.charCodeAt(0) | name.charCodeAt(1) << 7] = slot;
}

// What a slot holds:
/** A string without escapes: its value is its span. */
const KIND_STRING = 1;
/** A string with escapes, decoded into `values`. */
const KIND_ESCAPED_STRING = 2;
/** A JSON number without sign or exponent: already a plain decimal. */
const KIND_DECIMAL = 3;
/** Any other JSON number (negative, or with an exponent). */
const KIND_NUMBER = 4;
/** An array of strings. */
const KIND_STRINGS = 5;
/** An object, boolean, null or a mixed array. */
const KIND_OTHER = 6;

/** Deepest nesting accepted in a skipped value, so hostile frames cannot exhaust the stack. */
const MAX_DEPTH = 32;
/** Largest exponent expanded into a plain decimal. */
const MAX_EXPONENT = 64;

/**
 * A strict JSON reader for Alpaca frames: objects are read into reusable
 * field slots (no intermediate objects), each value kept as its span of the
 * frame and sliced only when a field is asked for, so number tokens keep
 * their text. Not reentrant; parse calls are synchronous, so one instance
 * serves all.
 */
class Reader {
  text = "";
  pos = 0;
  /** Message generation; a slot is set for this message when its stamp equals it. */
  generation = 0;
  readonly stamps = new Uint32Array(FIELDS.length);
  readonly kinds = new Uint8Array(FIELDS.length);
  /** Decoded values of strings with escapes (`KIND_ESCAPED_STRING`). */
  readonly values: string[] = new Array<string>(FIELDS.length).fill("");
  /** Where each value starts in `text` (a string's after its opening quote). */
  readonly spanStart = new Int32Array(FIELDS.length);
  /** Where each value ends in `text` (a string's at its closing quote). */
  readonly spanEnd = new Int32Array(FIELDS.length);

  start(text: string): void {
    this.text = text;
    this.pos = 0;
  }

  end(): void {
    this.text = "";
  }

  fail(message: string): never {
    throw new MalformedFrameError(`${message} at position ${this.pos}`);
  }

  /** Skips whitespace and returns the next character code (NaN at the end). */
  peek(): number {
    const c = this.text.charCodeAt(this.pos);
    return c > SPACE ? c : this.skipWhitespace(c);
  }

  skipWhitespace(c: number): number {
    const text = this.text;
    while (c === SPACE || c === LF || c === CR || c === TAB) c = text.charCodeAt(++this.pos);
    return c;
  }

  /** Reads the object at `pos` into the slots. */
  readMessage(): void {
    if (++this.generation === 0xffffffff) {
      this.stamps.fill(0);
      this.generation = 1;
    }
    this.pos++;
    if (this.peek() === RBRACE) {
      this.pos++;
      return;
    }
    for (;;) {
      if (this.peek() !== QUOTE) this.fail("Expected a field name");
      const slot = this.readKey();
      if (this.peek() !== COLON) this.fail("Expected :");
      this.pos++;
      if (slot < 0) {
        this.skipValue(0);
      } else {
        if (this.stamps[slot] === this.generation) {
          this.fail(`Field ${FIELDS[slot]} appears twice`);
        }
        this.stamps[slot] = this.generation;
        this.readValue(slot);
      }
      const c = this.peek();
      this.pos++;
      if (c === COMMA) continue;
      if (c === RBRACE) return;
      this.pos--;
      this.fail(Number.isNaN(c) ? "Unterminated message" : "Expected , or } in a message");
    }
  }

  /** Reads a key at the opening quote; returns its slot, or -1 for a key to skip. */
  readKey(): number {
    const text = this.text;
    const p = this.pos;
    const c0 = text.charCodeAt(p + 1);
    const c1 = text.charCodeAt(p + 2);
    if (c0 > 32 && c0 < 128 && c0 !== QUOTE && c0 !== BACKSLASH) {
      if (c1 === QUOTE) {
        this.pos = p + 3;
        return SLOT_BY_SHORT_KEY[c0]!;
      }
      if (c1 > 32 && c1 < 128 && c1 !== BACKSLASH && text.charCodeAt(p + 3) === QUOTE) {
        this.pos = p + 4;
        return SLOT_BY_SHORT_KEY[c0 | c1 << 7]!;
      }
    }
    return SLOT_BY_NAME.get(this.readString()) ?? -1;
  }

  /** Reads the string at the opening quote and returns its value. */
  readString(): string {
    const start = this.pos + 1;
    const escaped = this.skipString();
    return escaped ? this.unescape(start, this.pos - 1) : this.text.slice(start, this.pos - 1);
  }

  /** The value of the string with escapes between `start` and `end` (its closing quote). */
  unescape(start: number, end: number): string {
    try {
      return JSON.parse(this.text.slice(start - 1, end + 1));
    } catch (error) {
      throw new MalformedFrameError(`Invalid escape in a string at position ${start}`, {
        cause: error,
      });
    }
  }

  /** Skips the string at the opening quote; returns whether it has escapes. */
  skipString(): boolean {
    const text = this.text;
    const start = this.pos + 1;
    let i = start;
    let escaped = false;
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        escaped = true;
        i += 2;
        continue;
      }
      if (!(c >= 32)) {
        this.pos = i;
        this.fail(Number.isNaN(c) ? "Unterminated string" : "Control character in a string");
      }
      i++;
    }
    this.pos = i + 1;
    return escaped;
  }

  /** Reads a number token at `pos`; returns whether it is a plain decimal. */
  readNumber(): boolean {
    const text = this.text;
    let c = text.charCodeAt(this.pos);
    let plain = true;
    if (c === MINUS) {
      plain = false;
      c = text.charCodeAt(++this.pos);
    }
    if (c === 48) {
      c = text.charCodeAt(++this.pos);
    } else if (c >= 49 && c <= 57) {
      do c = text.charCodeAt(++this.pos); while (c >= 48 && c <= 57);
    } else {
      this.fail("Invalid number");
    }
    if (c === DOT) {
      c = text.charCodeAt(++this.pos);
      if (!(c >= 48 && c <= 57)) this.fail("Invalid number");
      do c = text.charCodeAt(++this.pos); while (c >= 48 && c <= 57);
    }
    if (c === 101 || c === 69) {
      plain = false;
      c = text.charCodeAt(++this.pos);
      if (c === 43 || c === MINUS) c = text.charCodeAt(++this.pos);
      if (!(c >= 48 && c <= 57)) this.fail("Invalid number");
      do c = text.charCodeAt(++this.pos); while (c >= 48 && c <= 57);
    }
    return plain;
  }

  /** Reads a value into `slot`. */
  readValue(slot: number): void {
    const c = this.peek();
    if (c === QUOTE) {
      const start = this.pos + 1;
      if (this.skipString()) {
        this.values[slot] = this.unescape(start, this.pos - 1);
        this.kinds[slot] = KIND_ESCAPED_STRING;
      } else {
        this.spanStart[slot] = start;
        this.spanEnd[slot] = this.pos - 1;
        this.kinds[slot] = KIND_STRING;
      }
    } else if (c === MINUS || (c >= 48 && c <= 57)) {
      const start = this.pos;
      this.kinds[slot] = this.readNumber() ? KIND_DECIMAL : KIND_NUMBER;
      this.spanStart[slot] = start;
      this.spanEnd[slot] = this.pos;
    } else if (c === LBRACKET) {
      const start = this.pos;
      this.kinds[slot] = this.readStringArray() ? KIND_STRINGS : KIND_OTHER;
      this.spanStart[slot] = start;
      this.spanEnd[slot] = this.pos;
    } else {
      this.skipValue(0);
      this.kinds[slot] = KIND_OTHER;
    }
  }

  /** Reads an array at `[`; returns whether every element is a string. */
  readStringArray(): boolean {
    this.pos++;
    if (this.peek() === RBRACKET) {
      this.pos++;
      return true;
    }
    let strings = true;
    for (;;) {
      if (this.peek() === QUOTE) {
        this.readString();
      } else {
        strings = false;
        this.skipValue(1);
      }
      const c = this.peek();
      this.pos++;
      if (c === COMMA) continue;
      if (c === RBRACKET) return strings;
      this.pos--;
      this.fail(Number.isNaN(c) ? "Unterminated array" : "Expected , or ] in an array");
    }
  }

  /** Validates and skips any JSON value at `pos`. */
  skipValue(depth: number): void {
    if (depth > MAX_DEPTH) this.fail("Frame nests too deeply");
    const text = this.text;
    const c = this.peek();
    if (c === QUOTE) {
      this.readString();
    } else if (c === MINUS || (c >= 48 && c <= 57)) {
      this.readNumber();
    } else if (c === LBRACKET || c === LBRACE) {
      const close = c === LBRACKET ? RBRACKET : RBRACE;
      this.pos++;
      if (this.peek() === close) {
        this.pos++;
        return;
      }
      for (;;) {
        if (c === LBRACE) {
          if (this.peek() !== QUOTE) this.fail("Expected a field name");
          this.readString();
          if (this.peek() !== COLON) this.fail("Expected :");
          this.pos++;
        }
        this.skipValue(depth + 1);
        const d = this.peek();
        this.pos++;
        if (d === COMMA) continue;
        if (d === close) return;
        this.pos--;
        this.fail("Expected , or a closing bracket");
      }
    } else if (text.startsWith("true", this.pos)) {
      this.pos += 4;
    } else if (text.startsWith("false", this.pos)) {
      this.pos += 5;
    } else if (text.startsWith("null", this.pos)) {
      this.pos += 4;
    } else {
      this.fail(Number.isNaN(c) ? "Unexpected end of frame" : "Unexpected character");
    }
  }

  // Field access for the message just read.

  has(slot: number): boolean {
    return this.stamps[slot] === this.generation;
  }

  string(slot: number, key: string, what: string): string {
    if (this.stamps[slot] === this.generation) {
      const kind = this.kinds[slot];
      if (kind === KIND_STRING) return this.span(slot);
      if (kind === KIND_ESCAPED_STRING) return this.values[slot]!;
    }
    throw this.fieldError(slot, key, what, "a string");
  }

  /** The text of the value in `slot`. */
  span(slot: number): string {
    return this.text.slice(this.spanStart[slot], this.spanEnd[slot]);
  }

  /** The RFC 3339 time in `slot`, microseconds since the epoch, read in place. */
  time(slot: number, key: string, what: string): number {
    if (this.stamps[slot] === this.generation && this.kinds[slot] === KIND_STRING) {
      return timeUs(this.text, this.spanStart[slot]!, this.spanEnd[slot]!);
    }
    return timeUs(this.string(slot, key, what));
  }

  optionalString(slot: number, key: string, what: string): string | null {
    return this.stamps[slot] === this.generation ? this.string(slot, key, what) : null;
  }

  /** The number in `slot` as a plain non-negative decimal string, exactly as sent. */
  decimal(slot: number, key: string, what: string): string {
    if (this.stamps[slot] === this.generation) {
      const kind = this.kinds[slot];
      if (kind === KIND_DECIMAL) return this.span(slot);
      if (kind === KIND_NUMBER) {
        const text = this.span(slot);
        if (text.charCodeAt(0) === MINUS) {
          throw new MalformedFrameError(`Field ${key} of ${what} is negative: ${text}`);
        }
        return expandExponent(text, key, what);
      }
    }
    throw this.fieldError(slot, key, what, "a number");
  }

  /** The non-negative integer in `slot`, as its exact digits. */
  integer(slot: number, key: string, what: string): string {
    if (this.stamps[slot] === this.generation && this.kinds[slot] === KIND_DECIMAL) {
      const text = this.span(slot);
      if (text.indexOf(".") < 0) return text;
    }
    throw this.fieldError(slot, key, what, "a non-negative integer");
  }

  /** Throws unless `slot` is absent or holds an array of strings. */
  checkStrings(slot: number, key: string, what: string): void {
    if (this.stamps[slot] === this.generation && this.kinds[slot] !== KIND_STRINGS) {
      throw this.fieldError(slot, key, what, "an array of strings");
    }
  }

  /** The array of strings in `slot`, or null when absent. */
  optionalStrings(slot: number, key: string, what: string): string[] | null {
    if (this.stamps[slot] !== this.generation) return null;
    if (this.kinds[slot] !== KIND_STRINGS) {
      throw this.fieldError(slot, key, what, "an array of strings");
    }
    return JSON.parse(this.span(slot));
  }

  fieldError(slot: number, key: string, what: string, expected: string): MalformedFrameError {
    let got = "nothing";
    if (this.stamps[slot] === this.generation) {
      const kind = this.kinds[slot];
      if (kind === KIND_STRING) got = preview(this.span(slot));
      else if (kind === KIND_ESCAPED_STRING) got = preview(this.values[slot]);
      else if (kind === KIND_DECIMAL || kind === KIND_NUMBER) got = this.span(slot);
      else if (kind === KIND_STRINGS) got = "an array of strings";
      else got = "another JSON value";
    }
    return new MalformedFrameError(`Field ${key} of ${what} must be ${expected}, got ${got}`);
  }
}

const reader = new Reader();

/**
 * The plain decimal with exactly the value of a non-negative JSON number in
 * exponent form: `1.5e-7` → `0.00000015`, `2E+3` → `2000`.
 */
function expandExponent(text: string, key: string, what: string): string {
  const e = text.search(/[eE]/);
  if (e < 0) return text;
  const exponent = Number(text.slice(e + 1));
  if (!(Math.abs(exponent) <= MAX_EXPONENT)) {
    throw new MalformedFrameError(`Field ${key} of ${what} is out of range: ${text}`);
  }
  const mantissa = text.slice(0, e);
  const dot = mantissa.indexOf(".");
  const digitsText = dot < 0 ? mantissa : mantissa.slice(0, dot) + mantissa.slice(dot + 1);
  const point = (dot < 0 ? mantissa.length : dot) + exponent;
  let result: string;
  if (point <= 0) result = `0.${"0".repeat(-point)}${digitsText}`;
  else if (point >= digitsText.length) result = digitsText + "0".repeat(point - digitsText.length);
  else result = `${digitsText.slice(0, point)}.${digitsText.slice(point)}`;
  return result.replace(/^0+(?=\d)/, "");
}

function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
