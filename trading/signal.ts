/**
 * The trade signal: the body strategies publish on `signals.<strategy>` and
 * POST to `/api/v1/trading/signal`, its zod schema ({@linkcode SignalBodySchema})
 * and {@linkcode parseSignal}, which reports every problem of a body at once.
 *
 * Rules beyond the field types:
 * - `limit_price` is required for `limit` and `stop_limit` orders and refused
 *   for `market` and `stop`; `stop_price` is required for `stop` and
 *   `stop_limit` and refused for `market` and `limit`.
 * - `time_in_force` `ioc` and `fok` are refused for `stop` and `stop_limit`:
 *   they mean "execute on arrival or never", while a stop order rests untriggered
 *   (Coinbase offers stop orders only as gtc/gtd, Alpaca's crypto stop limits
 *   only as gtc); such an order would always be cancelled unfilled.
 * - quantities and prices are positive and fit `NUMERIC(20,8)` exactly (at
 *   most 8 decimal places, 12 integer digits), so storing never rounds them.
 * - unknown fields are refused (a misspelt `limitPrice` is an error, not a
 *   silently ignored price); `null` counts as absent for optional fields.
 * - `strategy` falls back to `defaults.strategy` (the subject token for NATS),
 *   then to {@linkcode DEFAULT_SIGNAL_STRATEGY}; the body's value wins. It is
 *   never {@linkcode RESERVED_STRATEGY} (`rejected`).
 * - no `id` is derived here: the engine assigns one when the client sent none.
 *
 * @example
 * ```ts
 * import { parseSignal } from "./signal.ts";
 *
 * const result = parseSignal({ symbol: "BTC-USDT", side: "buy", qty: "0.5" }, { strategy: "momentum" });
 * if (result.ok) result.signal.qty.toString(); // "0.5"
 * else result.reasons; // [{ path: "qty", message: "..." }, ...]
 * ```
 *
 * @module
 */

import { z } from "zod";
import { CANONICAL_SYMBOL_PATTERN, type Exchange, EXCHANGES } from "../market/events.ts";
import {
  DB_INTEGER_DIGITS,
  DB_SCALE,
  Decimal,
  type DecimalParseResult,
  fitsDb,
  MAX_DECIMAL_TEXT_LENGTH,
  safeParseDecimal,
  toJson,
} from "./money.ts";
import {
  JsonDuplicateKeyError,
  JsonNumber,
  type JsonValue,
  parseJsonNumbers,
} from "../lib/json_numbers.ts";
import {
  ORDER_SIDES,
  ORDER_TYPES,
  type OrderSide,
  type OrderType,
  type TimeInForce,
  TIMES_IN_FORCE,
} from "../db/enums.ts";

// The domain's words are the database enums' labels (db/enums.ts): one list each.
export { ORDER_TYPES, TIMES_IN_FORCE };
export type { OrderType, TimeInForce };
/** Order sides. */
export const SIDES = ORDER_SIDES;
/** One of {@linkcode SIDES}. */
export type Side = OrderSide;

/** Order type of a signal that names none. */
export const DEFAULT_ORDER_TYPE: OrderType = "market";
/** Time in force of a US equity signal that names none. */
export const DEFAULT_TIME_IN_FORCE: TimeInForce = "day";
/**
 * Time in force of a crypto signal (a `BASE-QUOTE` pair) that names none: a
 * pair trades around the clock, so a day has no close for it to end at, its
 * venues rest orders until cancelled, and Alpaca takes crypto orders only as
 * gtc or ioc.
 */
export const DEFAULT_CRYPTO_TIME_IN_FORCE: TimeInForce = "gtc";

/**
 * The time in force of a signal on `symbol` that names none:
 * {@linkcode DEFAULT_CRYPTO_TIME_IN_FORCE} for a crypto pair (a symbol with
 * `-`), {@linkcode DEFAULT_TIME_IN_FORCE} for a US equity.
 *
 * @example
 * ```ts
 * defaultTimeInForce("BTC-USDT"); // "gtc"
 * defaultTimeInForce("AAPL"); // "day"
 * ```
 */
export function defaultTimeInForce(symbol: string): TimeInForce {
  return symbol.includes("-") ? DEFAULT_CRYPTO_TIME_IN_FORCE : DEFAULT_TIME_IN_FORCE;
}
/** Strategy of a signal when neither its body nor the caller's defaults name one. */
export const DEFAULT_SIGNAL_STRATEGY = "default";

/** Order types that need a `limit_price`. */
export const LIMIT_PRICE_TYPES: readonly OrderType[] = ["limit", "stop_limit"];
/** Order types that need a `stop_price`. */
export const STOP_PRICE_TYPES: readonly OrderType[] = ["stop", "stop_limit"];
/** Times in force refused with stop orders (see the module doc). */
export const IMMEDIATE_TIMES_IN_FORCE: readonly TimeInForce[] = ["ioc", "fok"];

/** A client signal id: the idempotency key, 1..128 of `[A-Za-z0-9_.:-]`. */
export const SIGNAL_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;
/** A strategy name, usable as a NATS subject token: 1..64 of `[A-Za-z0-9_-]`. */
export const STRATEGY_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/**
 * The strategy name no signal may have: `signals.rejected` carries reject
 * events (`REJECTED_TOKEN` of `signals_stream.ts`), so no strategy publishes
 * under it.
 */
export const RESERVED_STRATEGY = "rejected";
/** Why a signal naming {@linkcode RESERVED_STRATEGY} is refused. */
const RESERVED_STRATEGY_MESSAGE = `strategy must not be ${
  JSON.stringify(RESERVED_STRATEGY)
}: it is reserved (signals.${RESERVED_STRATEGY} carries reject events)`;
/** A canonical symbol: `BASE-QUOTE` for crypto (`BTC-USDT`) or a ticker (`AAPL`, `BRK.B`). */
export const SYMBOL_PATTERN = CANONICAL_SYMBOL_PATTERN;
/** A broker name: 1..32 of `[a-z0-9_-]`, starting with a letter (`paper`, `alpaca`). */
export const BROKER_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
/** Longest `reason` text, in characters. */
export const MAX_REASON_LENGTH = 1000;
/**
 * Deepest nesting of arrays and objects in a signal body that
 * {@linkcode decodeSignalBody} reads; a deeper body is refused unread (a
 * signal is a flat object: this only stops bodies built to exhaust the stack
 * of whatever walks them later, such as `JSON.stringify` when it is stored).
 */
export const MAX_SIGNAL_BODY_DEPTH = 32;

/**
 * A number of a signal body read by {@linkcode decodeSignalBody}, kept as the
 * text of its JSON token so that {@linkcode parseSignal} reads a price or a
 * quantity exactly (`49000.000000000001` is not rounded to `49000` through a
 * float). `JSON.stringify` writes it back as the same token where
 * PostgreSQL's jsonb can hold it (at most 64 characters, an exponent of at
 * most 3 digits), else as the float `JSON.parse` would have made of it.
 */
export class SignalNumber {
  /** The token as written in the body, e.g. `"0.10"`, `"1e-3"`. */
  readonly text: string;

  /** Wraps a JSON number token's text. */
  constructor(text: string) {
    this.text = text;
  }

  /** The token as it goes into stored JSON: the same token, or the nearest float. */
  toJSON(): unknown {
    return this.text.length <= MAX_DECIMAL_TEXT_LENGTH && STORABLE_NUMBER.test(this.text)
      ? rawJSON(this.text)
      : Number(this.text);
  }

  /** The token's text. */
  toString(): string {
    return this.text;
  }
}

/**
 * A JSON number jsonb's NUMERIC holds, given at most 64 characters: an
 * exponent of 1..3 digits after any leading zeros (`1e-0008` is `1e-8`).
 */
const STORABLE_NUMBER = /^-?\d+(?:\.\d+)?(?:[eE][+-]?0*\d{1,3})?$/;

const rawJSON = (JSON as unknown as { rawJSON: (text: string) => unknown }).rawJSON;

/**
 * A signal body refused before it was read, kept as its text: it nests
 * deeper than {@linkcode MAX_SIGNAL_BODY_DEPTH}. {@linkcode parseSignal}
 * rejects it with its reason; `JSON.stringify` stores it as `{ raw }`, like
 * a body that is not JSON.
 */
export class UnreadSignalBody {
  /** The body's text as received. */
  readonly raw: string;
  /** Why it was not read. */
  readonly reason: SignalReason;

  /** Keeps `raw`, refused for `reason`. */
  constructor(raw: string, reason: SignalReason) {
    this.raw = raw;
    this.reason = reason;
  }

  /** What is stored of it: its text. */
  toJSON(): { raw: string } {
    return { raw: this.raw };
  }
}

/**
 * Reads a signal body's JSON `text`, REST or NATS alike: numbers become
 * {@linkcode SignalNumber} (their exact text; a body that is a bare number
 * stays a number), anything else as `JSON.parse` gives it. A body nested
 * deeper than {@linkcode MAX_SIGNAL_BODY_DEPTH}, or giving a key twice in one
 * object (`{"side":"buy","side":"sell"}`, which `JSON.parse` would silently
 * read as its last), is not read: it comes back as an
 * {@linkcode UnreadSignalBody}, which {@linkcode parseSignal} rejects.
 * Throws a `SyntaxError` naming the problem when `text` is not JSON.
 *
 * @example
 * ```ts
 * import { decodeSignalBody, parseSignal } from "./signal.ts";
 *
 * const body = decodeSignalBody('{"symbol":"BTC-USDT","side":"buy","qty":0.100000000000000001}');
 * parseSignal(body, {}).ok; // false: qty has more than 8 decimal places
 * ```
 */
export function decodeSignalBody(text: string): unknown {
  let value: JsonValue;
  try {
    value = parseJsonNumbers(text, { maxDepth: MAX_SIGNAL_BODY_DEPTH, duplicateKeys: "reject" });
  } catch (error) {
    // `{"side":"buy","side":"sell"}`: JSON.parse would keep the last, silently; refused unread.
    if (error instanceof JsonDuplicateKeyError) {
      return new UnreadSignalBody(text, {
        path: "",
        message: `signal must not give a key more than once: ${JSON.stringify(error.key)}`,
      });
    }
    if (!nestsDeeperThan(text, MAX_SIGNAL_BODY_DEPTH)) throw error;
    return new UnreadSignalBody(text, {
      path: "",
      message: `signal must not nest arrays or objects more than ${MAX_SIGNAL_BODY_DEPTH} deep`,
    });
  }
  return value instanceof JsonNumber ? value.toNumber() : withSignalNumbers(value);
}

/**
 * `value` with its {@linkcode JsonNumber}s made {@linkcode SignalNumber}s, in
 * place (as deep as the parser allowed, {@linkcode MAX_SIGNAL_BODY_DEPTH}).
 * An own `__proto__` key the parser made is an own data property: assigning
 * to it replaces its value, it does not set the prototype.
 */
function withSignalNumbers(value: JsonValue): unknown {
  if (value instanceof JsonNumber) return new SignalNumber(value.text);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const child = value[i]!;
      if (typeof child === "object" && child !== null) {
        value[i] = withSignalNumbers(child) as JsonValue;
      }
    }
  } else if (typeof value === "object" && value !== null) {
    for (const key in value) {
      const child = value[key]!;
      if (typeof child === "object" && child !== null) {
        value[key] = withSignalNumbers(child) as JsonValue;
      }
    }
  }
  return value;
}

/**
 * Whether JSON-like `text` opens more than `max` arrays or objects inside
 * each other (strings skipped): one pass, without parsing.
 */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip a string: to its closing quote, past escaped characters.
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

/**
 * Whether `received`, a body read by {@linkcode decodeSignalBody}, is the
 * body of a stored signal, `stored` (its `payload` as the signals repository
 * reads it back): the same JSON but for the order of keys and the spelling of
 * numbers (`1e-2`, `0.01` and `0.0100` are one number: jsonb keeps a number's
 * value, not its token), or the text of a body stored as `{ raw }` (one that
 * jsonb cannot hold, or that was refused unread). A string is never the
 * number it spells, and `null` is not an absent key: a retry sends the same
 * body.
 *
 * @example
 * ```ts
 * import { decodeSignalBody, sameSignalBody } from "./signal.ts";
 *
 * const body = decodeSignalBody('{"side":"buy","qty":1e-2}');
 * sameSignalBody(body, { qty: 0.01, side: "buy" }); // true
 * sameSignalBody(body, { qty: "0.01", side: "buy" }); // false
 * ```
 */
export function sameSignalBody(received: unknown, stored: unknown): boolean {
  // As each is (or was) stored: SignalNumbers as their tokens, an unread body as `{ raw }`.
  const text = JSON.stringify(received ?? null);
  if (sameJsonText(text, JSON.stringify(stored ?? null))) return true;
  if (typeof stored !== "object" || stored === null || Array.isArray(stored)) return false;
  const keys = Object.keys(stored);
  if (keys.length !== 1 || keys[0] !== "raw") return false;
  // A body jsonb could not hold is stored as its JSON text; a body that is no object, wrapped.
  const raw = (stored as { raw: unknown }).raw;
  return raw === text || sameJsonText(text, JSON.stringify(raw ?? null));
}

/** A stored signal whose idempotency key came again with another body ({@linkcode keyReusedMessage}). */
export interface KeyOwner {
  /** Its row id. */
  id: string;
  /** Its strategy. */
  strategy: string;
  /** Its key within the strategy. */
  client_signal_id: string;
  /** Its outcome. */
  status: string;
}

/**
 * Why a signal whose key (`named`: `id "m-1"`, or the REST `Idempotency-Key`)
 * was used before for `stored`, with another body, is refused — the same
 * words over REST (a 422 `idempotency_key_reused`) and NATS (a reject event).
 *
 * @example
 * ```ts
 * keyReusedMessage({ id: "5", strategy: "momentum", client_signal_id: "m-1", status: "accepted" }, 'id "m-1"');
 * // 'id "m-1" of strategy "momentum" was used before, for signal 5 (accepted) with another body; …'
 * ```
 */
export function keyReusedMessage(stored: KeyOwner, named: string): string {
  return `${named} of strategy ${JSON.stringify(stored.strategy)} was used before, for signal ` +
    `${stored.id} (${stored.status}) with another body; a retry must send the same body, a new ` +
    "signal a new id";
}

/** Whether the JSON texts `a` and `b` are one value ({@linkcode sameSignalBody}'s terms). */
function sameJsonText(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return sameJson(parseJsonNumbers(a), parseJsonNumbers(b));
  } catch {
    return false; // too deep to compare: only a stored body written by hand
  }
}

function sameJson(a: JsonValue, b: JsonValue): boolean {
  if (a instanceof JsonNumber || b instanceof JsonNumber) {
    return a instanceof JsonNumber && b instanceof JsonNumber &&
      new Decimal(a.text).eq(new Decimal(b.text));
  }
  if (typeof a !== "object" || a === null || typeof b !== "object" || b === null) return a === b;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length &&
      a.every((item, i) => sameJson(item, b[i]!));
  }
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && sameJson(a[key]!, b[key]!));
}

/**
 * Whether PostgreSQL's `text` and `jsonb` can hold `text`: they refuse U+0000
 * and unpaired UTF-16 surrogates (which JSON can carry as `\u0000`, `\ud800`).
 */
export function storableText(text: string): boolean {
  return !text.includes("\u0000") && text.isWellFormed();
}

/** A validated signal; quantities and prices are decimals. */
export interface Signal {
  /** The client's signal id, the idempotency key; absent when the client sent none. */
  id?: string;
  /** Canonical symbol (`BTC-USDT`, `AAPL`). */
  symbol: string;
  /** Buy or sell. */
  side: Side;
  /** Quantity, > 0. */
  qty: Decimal;
  /** Order type. */
  type: OrderType;
  /** Limit price, > 0; present exactly for `limit` and `stop_limit`. */
  limit_price?: Decimal;
  /** Stop (trigger) price, > 0; present exactly for `stop` and `stop_limit`. */
  stop_price?: Decimal;
  /** Time in force. */
  time_in_force: TimeInForce;
  /** The strategy that sent the signal. */
  strategy: string;
  /** Free text from the strategy: why it trades. */
  reason?: string;
  /** Venue whose market data prices the order. */
  exchange?: Exchange;
  /** Broker the order is routed to; the engine's default when absent. */
  broker?: string;
}

/** One problem of a signal body: the field (`""` for the body itself) and what is wrong. */
export interface SignalReason {
  /** Dotted path of the field, `""` for the whole body. */
  path: string;
  /** What is wrong, in plain words. */
  message: string;
}

/** Outcome of {@linkcode parseSignal}. */
export type ParseSignalResult =
  | { ok: true; signal: Signal }
  | { ok: false; reasons: SignalReason[] };

/** Defaults for {@linkcode parseSignal}. */
export interface SignalDefaults {
  /** Strategy used when the body has none (the `<strategy>` of `signals.<strategy>`). */
  strategy?: string;
}

/**
 * {@linkcode safeParseDecimal}, reading a {@linkcode SignalNumber} or
 * {@linkcode JsonNumber} exactly from its token's text (an exponent too:
 * `1e-3` is 0.001), never through a float.
 */
function parseDecimalInput(input: unknown): DecimalParseResult {
  if (!(input instanceof SignalNumber || input instanceof JsonNumber)) {
    return safeParseDecimal(input);
  }
  const text = input.text;
  // In plain notation it is read as a decimal string is (the same limits, the same words).
  if (!/[eE]/.test(text)) return safeParseDecimal(text);
  if (text.length > MAX_DECIMAL_TEXT_LENGTH) {
    return {
      ok: false,
      message:
        `must be a number of at most ${MAX_DECIMAL_TEXT_LENGTH} characters, got ${text.length}`,
    };
  }
  const value = new Decimal(text);
  // Far outside NUMERIC(20,8) (1e999999): refused here, before its million digits are written out.
  if (!value.isZero() && Math.abs(value.e) > MAX_NUMBER_EXPONENT) {
    return {
      ok: false,
      message: `must have at most ${DB_SCALE} decimal places and ${DB_INTEGER_DIGITS} ` +
        `integer digits, got ${text}`,
    };
  }
  return safeParseDecimal(value);
}

/** Largest power of ten a JSON number in exponent notation is read at (beyond any NUMERIC(20,8)). */
const MAX_NUMBER_EXPONENT = 64;

/** A positive decimal that fits NUMERIC(20,8): a decimal string or a finite number. */
function positiveDecimal(what: string) {
  return z.unknown().transform((input, ctx): Decimal => {
    if (input === undefined) {
      ctx.addIssue({ code: "custom", message: `${what} is required` });
      return z.NEVER;
    }
    const result = parseDecimalInput(input);
    if (!result.ok) {
      ctx.addIssue({ code: "custom", message: `${what} ${result.message}` });
      return z.NEVER;
    }
    const value = result.value;
    if (!value.gt(0)) {
      ctx.addIssue({
        code: "custom",
        message: `${what} must be greater than 0, got ${toJson(value)}`,
      });
      return z.NEVER;
    }
    if (!fitsDb(value)) {
      ctx.addIssue({
        code: "custom",
        message: `${what} must have at most 8 decimal places and 12 integer digits, got ${
          toJson(value)
        }`,
      });
      return z.NEVER;
    }
    return value;
  });
}

function optional<T extends z.ZodType>(schema: T) {
  return schema.nullish().transform((value) => value ?? undefined);
}

function choice<T extends readonly [string, ...string[]]>(what: string, values: T) {
  return z.enum(values, {
    error: (issue) =>
      issue.input === undefined
        ? `${what} is required`
        : `${what} must be one of ${values.join(", ")}, got ${JSON.stringify(issue.input)}`,
  });
}

function text(what: string, pattern: RegExp, expected: string) {
  return z.string({
    error: (issue) =>
      issue.input === undefined ? `${what} is required` : `${what} must be a string`,
  }).regex(pattern, {
    error: (issue) => `${what} must be ${expected}, got ${JSON.stringify(issue.input)}`,
  });
}

/**
 * The zod schema of a signal body, cross-field rules included; every issue is
 * reported, field errors and cross-field errors together. Its output still
 * lacks the strategy fallback: use {@linkcode parseSignal}.
 */
export const SignalBodySchema = z.strictObject({
  id: optional(text("id", SIGNAL_ID_PATTERN, "1..128 characters of [A-Za-z0-9_.:-]")),
  symbol: text("symbol", SYMBOL_PATTERN, "a canonical symbol such as BTC-USDT or AAPL"),
  side: choice("side", SIDES),
  qty: positiveDecimal("qty"),
  type: optional(choice("type", ORDER_TYPES)),
  limit_price: optional(positiveDecimal("limit_price")),
  stop_price: optional(positiveDecimal("stop_price")),
  time_in_force: optional(choice("time_in_force", TIMES_IN_FORCE)),
  strategy: optional(
    text("strategy", STRATEGY_PATTERN, "1..64 characters of [A-Za-z0-9_-]").refine(
      (name) => name !== RESERVED_STRATEGY,
      { error: RESERVED_STRATEGY_MESSAGE },
    ),
  ),
  reason: optional(
    z.string({ error: "reason must be a string" }).max(MAX_REASON_LENGTH, {
      error: `reason must be at most ${MAX_REASON_LENGTH} characters`,
    }).refine(storableText, {
      error: "reason must be well-formed Unicode without NUL characters (U+0000)",
    }),
  ),
  exchange: optional(choice("exchange", EXCHANGES)),
  broker: optional(text("broker", BROKER_PATTERN, "1..32 characters of [a-z0-9_-]")),
}, {
  error: (issue) =>
    issue.code === "unrecognized_keys"
      ? `unknown field${issue.keys.length > 1 ? "s" : ""} ${
        issue.keys.map((key) => JSON.stringify(key)).join(", ")
      }`
      : "signal must be a JSON object",
}).superRefine((body, ctx) => {
  // Runs even when fields failed (`when` below): read the raw values defensively.
  if (typeof body !== "object" || body === null) return;
  const raw = body as Record<string, unknown>;
  const rawType = raw.type ?? DEFAULT_ORDER_TYPE;
  if (!(ORDER_TYPES as readonly unknown[]).includes(rawType)) return;
  const type = rawType as OrderType;
  const hasLimit = raw.limit_price !== undefined && raw.limit_price !== null;
  const hasStop = raw.stop_price !== undefined && raw.stop_price !== null;
  if (LIMIT_PRICE_TYPES.includes(type) && !hasLimit) {
    ctx.addIssue({
      code: "custom",
      path: ["limit_price"],
      message: `limit_price is required for ${type} orders`,
    });
  }
  if (!LIMIT_PRICE_TYPES.includes(type) && hasLimit) {
    ctx.addIssue({
      code: "custom",
      path: ["limit_price"],
      message: `limit_price is not allowed for ${type} orders`,
    });
  }
  if (STOP_PRICE_TYPES.includes(type) && !hasStop) {
    ctx.addIssue({
      code: "custom",
      path: ["stop_price"],
      message: `stop_price is required for ${type} orders`,
    });
  }
  if (!STOP_PRICE_TYPES.includes(type) && hasStop) {
    ctx.addIssue({
      code: "custom",
      path: ["stop_price"],
      message: `stop_price is not allowed for ${type} orders`,
    });
  }
  const tif = raw.time_in_force;
  if (
    STOP_PRICE_TYPES.includes(type) &&
    (IMMEDIATE_TIMES_IN_FORCE as readonly unknown[]).includes(tif)
  ) {
    ctx.addIssue({
      code: "custom",
      path: ["time_in_force"],
      message: `time_in_force ${String(tif)} is not allowed for ${type} orders (use day or gtc)`,
    });
  }
}, { when: () => true });

/** The body {@linkcode SignalBodySchema} accepts: what strategies send. */
export type SignalBody = z.input<typeof SignalBodySchema>;

/**
 * Validates a signal body, REST or NATS alike, and returns the signal with
 * decimals and defaults applied, or EVERY reason it is refused, each naming
 * its field. Never throws. A valid body is accepted by a hand-written
 * checker of the schema's rules (several times faster); any other goes
 * through the schema, which words the reasons.
 *
 * @example
 * ```ts
 * import { parseSignal } from "./signal.ts";
 *
 * parseSignal({ symbol: "AAPL", side: "hold", qty: -1, type: "limit" }, {});
 * // { ok: false, reasons: [
 * //   { path: "side", message: "side must be one of buy, sell, got \"hold\"" },
 * //   { path: "qty", message: "qty must be greater than 0, got -1" },
 * //   { path: "limit_price", message: "limit_price is required for limit orders" } ] }
 * ```
 */
export function parseSignal(input: unknown, defaults: SignalDefaults = {}): ParseSignalResult {
  const fast = acceptSignal(input, defaults);
  return fast === null ? parseSignalBySchema(input, defaults) : { ok: true, signal: fast };
}

/**
 * {@linkcode parseSignal} without its hand-written fast path for valid
 * bodies: the schema decides everything. Both give the same result for any
 * input (a property test holds them together).
 */
export function parseSignalBySchema(
  input: unknown,
  defaults: SignalDefaults = {},
): ParseSignalResult {
  if (input instanceof UnreadSignalBody) return { ok: false, reasons: [input.reason] };
  const parsed = SignalBodySchema.safeParse(input);
  const reasons: SignalReason[] = parsed.success ? [] : parsed.error.issues.map(toReason);
  const isObject = typeof input === "object" && input !== null && !Array.isArray(input);
  const bodyStrategy = isObject ? (input as Record<string, unknown>).strategy : undefined;
  let strategy: string | undefined;
  if (bodyStrategy === undefined || bodyStrategy === null) {
    strategy = defaults.strategy ?? DEFAULT_SIGNAL_STRATEGY;
    if (isObject && !STRATEGY_PATTERN.test(strategy)) {
      reasons.push({
        path: "strategy",
        message: `strategy must be 1..64 characters of [A-Za-z0-9_-], got ${
          JSON.stringify(strategy)
        } from the defaults`,
      });
    } else if (isObject && strategy === RESERVED_STRATEGY) {
      reasons.push({
        path: "strategy",
        message: `${RESERVED_STRATEGY_MESSAGE}, from the defaults`,
      });
    }
  }
  if (!parsed.success || reasons.length > 0) return { ok: false, reasons };
  const body = parsed.data;
  const signal: Signal = {
    symbol: body.symbol,
    side: body.side,
    qty: body.qty,
    type: body.type ?? DEFAULT_ORDER_TYPE,
    time_in_force: body.time_in_force ?? defaultTimeInForce(body.symbol),
    strategy: body.strategy ?? strategy ?? DEFAULT_SIGNAL_STRATEGY,
  };
  if (body.id !== undefined) signal.id = body.id;
  if (body.limit_price !== undefined) signal.limit_price = body.limit_price;
  if (body.stop_price !== undefined) signal.stop_price = body.stop_price;
  if (body.reason !== undefined) signal.reason = body.reason;
  if (body.exchange !== undefined) signal.exchange = body.exchange;
  if (body.broker !== undefined) signal.broker = body.broker;
  return { ok: true, signal };
}

const SIGNAL_KEYS: ReadonlySet<string> = new Set(Object.keys(SignalBodySchema.shape));
const SIDE_SET: ReadonlySet<unknown> = new Set(SIDES);
const ORDER_TYPE_SET: ReadonlySet<unknown> = new Set(ORDER_TYPES);
const TIME_IN_FORCE_SET: ReadonlySet<unknown> = new Set(TIMES_IN_FORCE);
const EXCHANGE_SET: ReadonlySet<unknown> = new Set(EXCHANGES);

/** A positive decimal that fits NUMERIC(20,8), as `positiveDecimal` accepts it; null otherwise. */
function acceptDecimal(input: unknown): Decimal | null {
  if (
    typeof input !== "string" && typeof input !== "number" && !(input instanceof SignalNumber)
  ) {
    return null;
  }
  const result = parseDecimalInput(input);
  return result.ok && result.value.gt(0) && fitsDb(result.value) ? result.value : null;
}

/** Whether `value` is absent for an optional field of the schema (`undefined` or `null`). */
function absent(value: unknown): value is null | undefined {
  return value === undefined || value === null;
}

/**
 * The fast path of {@linkcode parseSignal}: the signal when `input` is a
 * valid body, checked by hand with the rules of {@linkcode SignalBodySchema};
 * null for anything else (invalid, or only unusual) — the schema then decides
 * and words the reasons, so they have one source. It accepts nothing the
 * schema refuses and returns what the schema's path would (a test holds the
 * two together).
 */
function acceptSignal(input: unknown, defaults: SignalDefaults): Signal | null {
  if (typeof input !== "object" || input === null) return null;
  const proto = Object.getPrototypeOf(input);
  if (proto !== Object.prototype && proto !== null) return null;
  const body = input as Record<string, unknown>;
  for (const key in body) if (!SIGNAL_KEYS.has(key)) return null;
  const { id, symbol, side, type = null, time_in_force = null, strategy = null } = body;
  if (typeof symbol !== "string" || !SYMBOL_PATTERN.test(symbol)) return null;
  if (!SIDE_SET.has(side)) return null;
  if (!absent(id) && (typeof id !== "string" || !SIGNAL_ID_PATTERN.test(id))) return null;
  const qty = acceptDecimal(body.qty);
  if (qty === null) return null;
  const orderType = (type ?? DEFAULT_ORDER_TYPE) as OrderType;
  if (!ORDER_TYPE_SET.has(orderType)) return null;
  const tif = (time_in_force ?? defaultTimeInForce(symbol)) as TimeInForce;
  if (!TIME_IN_FORCE_SET.has(tif)) return null;
  const limitPrice = absent(body.limit_price) ? undefined : acceptDecimal(body.limit_price);
  const stopPrice = absent(body.stop_price) ? undefined : acceptDecimal(body.stop_price);
  if (limitPrice === null || stopPrice === null) return null;
  if (LIMIT_PRICE_TYPES.includes(orderType) !== (limitPrice !== undefined)) return null;
  if (STOP_PRICE_TYPES.includes(orderType) !== (stopPrice !== undefined)) return null;
  if (STOP_PRICE_TYPES.includes(orderType) && IMMEDIATE_TIMES_IN_FORCE.includes(tif)) return null;
  const name = strategy ?? defaults.strategy ?? DEFAULT_SIGNAL_STRATEGY;
  if (typeof name !== "string" || !STRATEGY_PATTERN.test(name) || name === RESERVED_STRATEGY) {
    return null;
  }
  const { reason, exchange, broker } = body;
  if (
    !absent(reason) &&
    (typeof reason !== "string" || reason.length > MAX_REASON_LENGTH || !storableText(reason))
  ) {
    return null;
  }
  if (!absent(exchange) && !EXCHANGE_SET.has(exchange)) return null;
  if (!absent(broker) && (typeof broker !== "string" || !BROKER_PATTERN.test(broker))) {
    return null;
  }
  // Built in the order parseSignal's schema path builds it.
  const signal: Signal = {
    symbol,
    side: side as Side,
    qty,
    type: orderType,
    time_in_force: tif,
    strategy: name,
  };
  if (!absent(id)) signal.id = id as string;
  if (limitPrice !== undefined) signal.limit_price = limitPrice;
  if (stopPrice !== undefined) signal.stop_price = stopPrice;
  if (!absent(reason)) signal.reason = reason as string;
  if (!absent(exchange)) signal.exchange = exchange as Exchange;
  if (!absent(broker)) signal.broker = broker as string;
  return signal;
}

/** A signal as JSON: the same fields, decimals as plain decimal strings. */
export type SignalJson = Omit<Signal, "qty" | "limit_price" | "stop_price"> & {
  qty: string;
  limit_price?: string;
  stop_price?: string;
};

/**
 * The JSON form of a signal (decimals as strings), for the `signals` table,
 * events and responses; {@linkcode parseSignal} reads it back to an equal signal.
 */
export function signalToJson(signal: Signal): SignalJson {
  const { qty, limit_price, stop_price, ...rest } = signal;
  const json: SignalJson = { ...rest, qty: toJson(qty) };
  if (limit_price !== undefined) json.limit_price = toJson(limit_price);
  if (stop_price !== undefined) json.stop_price = toJson(stop_price);
  return json;
}

function toReason(issue: z.core.$ZodIssue): SignalReason {
  return { path: issue.path.map(String).join("."), message: issue.message };
}
