/**
 * The one decimal type of the trading domain, used end to end for quantities,
 * prices, cash and P&L: a `decimal.js` clone with 40 significant digits and
 * banker's rounding (`ROUND_HALF_EVEN`), plus strict parsing and the two
 * renderings money leaves the process in — `NUMERIC(20,8)` text for
 * PostgreSQL ({@linkcode toDb}) and plain decimal strings for JSON
 * ({@linkcode toJson}).
 *
 * Money is never a JS float here: a number is accepted on input only when it is
 * finite, and then through its shortest round-trip text (`0.1` → `"0.1"`),
 * never through float arithmetic.
 *
 * @example
 * ```ts
 * import { Decimal, parseDecimal, toDb, toJson } from "./money.ts";
 *
 * const price = parseDecimal("0.1");
 * const total = price.plus(parseDecimal(0.2)); // exactly 0.3
 * toDb(total); // "0.30000000"
 * toJson(new Decimal("1e-9")); // "0.000000001"
 * ```
 *
 * @module
 */

// The named export: decimal.js ships CommonJS-style typings, under which its default import is untyped.
import { Decimal as BaseDecimal } from "decimal.js";

/** Significant digits kept by every arithmetic result. */
export const DECIMAL_PRECISION = 40;
/** Digits after the point of a stored value: PostgreSQL `NUMERIC(20,8)`. */
export const DB_SCALE = 8;
/** Digits before the point of a stored value: `NUMERIC(20,8)` leaves 20 − 8 = 12. */
export const DB_INTEGER_DIGITS = 12;
/** Longest text {@linkcode parseDecimal} accepts, sign and point included. */
export const MAX_DECIMAL_TEXT_LENGTH = 64;

/**
 * The trading domain's decimal constructor: a `decimal.js` clone with
 * {@linkcode DECIMAL_PRECISION} significant digits, `ROUND_HALF_EVEN`, and no
 * exponent notation in `toString()`. Arithmetic on its instances uses this
 * configuration; build values with {@linkcode parseDecimal} or `new Decimal(...)`.
 */
export const Decimal: typeof BaseDecimal = BaseDecimal.clone({
  precision: DECIMAL_PRECISION,
  rounding: BaseDecimal.ROUND_HALF_EVEN,
  toExpNeg: -9e15,
  toExpPos: 9e15,
});
/** An instance of {@linkcode Decimal}. */
export type Decimal = BaseDecimal;

/** Zero, shared (decimals are immutable). */
export const ZERO: Decimal = new Decimal(0);
/** One, shared (decimals are immutable). */
export const ONE: Decimal = new Decimal(1);

/**
 * Outcome of {@linkcode safeParseDecimal}: the value, or why the input is not
 * one as a predicate to put after a field name (`must be a finite number, got NaN`).
 */
export type DecimalParseResult =
  | { ok: true; value: Decimal }
  | { ok: false; message: string };

const DECIMAL_TEXT = /^-?\d+(?:\.\d+)?$/;

/**
 * Parses `input` strictly, without throwing: a string in plain decimal notation
 * (`"12"`, `"-0.5"`, `"007.10"`; no exponent, no `+`, no spaces, no `","`, no
 * bare `"."` ends, at most {@linkcode MAX_DECIMAL_TEXT_LENGTH} characters), a
 * finite number (read through its shortest round-trip text), or a
 * {@linkcode Decimal} (copied into this module's configuration). Negative zero
 * becomes zero.
 *
 * @example
 * ```ts
 * import { safeParseDecimal } from "./money.ts";
 *
 * safeParseDecimal("1,5"); // { ok: false, message: "must be a decimal such as \"12.5\", got \"1,5\"" }
 * ```
 */
export function safeParseDecimal(input: unknown): DecimalParseResult {
  if (typeof input === "string") {
    if (input.length > MAX_DECIMAL_TEXT_LENGTH) {
      return {
        ok: false,
        message:
          `must be a decimal of at most ${MAX_DECIMAL_TEXT_LENGTH} characters, got ${input.length}`,
      };
    }
    if (!DECIMAL_TEXT.test(input)) {
      return {
        ok: false,
        message: `must be a decimal such as "12.5", got ${JSON.stringify(input)}`,
      };
    }
    return { ok: true, value: unsignedZero(new Decimal(input)) };
  }
  if (typeof input === "number") {
    if (!Number.isFinite(input)) {
      return { ok: false, message: `must be a finite number, got ${String(input)}` };
    }
    // String(n) is the shortest text that reads back as n: 0.1 → "0.1", 1e21 → "1e+21".
    return { ok: true, value: unsignedZero(new Decimal(String(input))) };
  }
  if (BaseDecimal.isDecimal(input)) {
    const value = input as BaseDecimal;
    if (!value.isFinite()) {
      return { ok: false, message: `must be a finite decimal, got ${value.toString()}` };
    }
    return { ok: true, value: unsignedZero(new Decimal(value)) };
  }
  return {
    ok: false,
    message: `must be a decimal string or number, got ${describeType(input)}`,
  };
}

/**
 * Parses `input` strictly (see {@linkcode safeParseDecimal}), throwing a
 * `TypeError` naming the problem when it is not a decimal.
 *
 * @example
 * ```ts
 * import { parseDecimal } from "./money.ts";
 *
 * parseDecimal("0.50").toString(); // "0.5"
 * parseDecimal(0.1).toString(); // "0.1"
 * ```
 */
export function parseDecimal(input: string | number | Decimal): Decimal {
  const result = safeParseDecimal(input);
  if (!result.ok) throw new TypeError(`Invalid decimal input: it ${result.message}`);
  return result.value;
}

/**
 * Whether `value` fits `NUMERIC(20,8)` exactly: at most
 * {@linkcode DB_SCALE} decimal places and {@linkcode DB_INTEGER_DIGITS} integer
 * digits. Signal quantities and prices must, so that storing never rounds them.
 */
export function fitsDb(value: Decimal): boolean {
  return value.isFinite() && value.decimalPlaces() <= DB_SCALE && fitsIntegerDigits(value);
}

/**
 * The `NUMERIC(20,8)` text of `value`: rounded half-even to
 * {@linkcode DB_SCALE} places, always with 8 decimals (`"12.50000000"`).
 * Throws a `RangeError` when the rounded value needs more than
 * {@linkcode DB_INTEGER_DIGITS} integer digits, and a `TypeError` for NaN or
 * infinities.
 *
 * @example
 * ```ts
 * import { parseDecimal, toDb } from "./money.ts";
 *
 * toDb(parseDecimal("-1.5")); // "-1.50000000"
 * ```
 */
export function toDb(value: Decimal): string {
  if (!BaseDecimal.isDecimal(value) || !value.isFinite()) {
    throw new TypeError(`Cannot store a non-finite decimal: ${String(value)}`);
  }
  // Most values already have at most 8 decimals: rounding would only copy them.
  const rounded = value.decimalPlaces() <= DB_SCALE
    ? value
    : value.toDecimalPlaces(DB_SCALE, BaseDecimal.ROUND_HALF_EVEN);
  if (!fitsIntegerDigits(rounded)) {
    throw new RangeError(
      `Decimal ${rounded.toFixed()} does not fit NUMERIC(20,8): more than ${DB_INTEGER_DIGITS} integer digits`,
    );
  }
  return rounded.toFixed(DB_SCALE);
}

/**
 * Reads a `NUMERIC` value as PostgreSQL returns it (`"12.50000000"`,
 * `"-3"`). Throws a `TypeError` for anything else, `"NaN"` and `"Infinity"`
 * included.
 */
export function fromDb(text: string): Decimal {
  if (typeof text !== "string") {
    throw new TypeError(`Expected NUMERIC text from the database, got ${describeType(text)}`);
  }
  return parseDecimal(text);
}

/**
 * The plain decimal text of `value` for JSON bodies and events: no exponent,
 * no trailing zeros, never `"-0"` (`"0.000000001"`, `"1500"`, `"-2.5"`).
 * Throws a `TypeError` for NaN or infinities.
 */
export function toJson(value: Decimal): string {
  if (!BaseDecimal.isDecimal(value) || !value.isFinite()) {
    throw new TypeError(`Cannot render a non-finite decimal: ${String(value)}`);
  }
  return value.toFixed();
}

/**
 * NUMERIC text from PostgreSQL as a plain decimal, as {@linkcode toJson}
 * renders it — trailing zeros and a bare point dropped, never `"-0"`
 * (`"0.50000000"` → `"0.5"`, `"-2.00000000"` → `"-2"`) — by editing the
 * text rather than parsing it. Text that is not plain decimal notation
 * without leading zeros goes through {@linkcode parseDecimal} (which throws
 * for what is not a decimal).
 */
export function plainNumeric(text: string): string {
  if (!NUMERIC_TEXT.test(text)) return toJson(parseDecimal(text));
  if (!text.includes(".")) return text === "-0" ? "0" : text;
  let end = text.length;
  while (text.charCodeAt(end - 1) === 48) end--; // "0"
  if (text.charCodeAt(end - 1) === 46) end--; // "."
  const out = text.slice(0, end);
  return out === "-0" ? "0" : out;
}

const NUMERIC_TEXT = /^-?(?:0|[1-9]\d*)(?:\.\d+)?$/;

/** `value` with negative zero replaced by zero. */
function unsignedZero(value: Decimal): Decimal {
  return value.isZero() ? ZERO : value;
}

function fitsIntegerDigits(value: Decimal): boolean {
  // `e` is the exponent of the most significant digit (0 for zero): |value| < 10^12 ⇔ e < 12.
  return value.e < DB_INTEGER_DIGITS;
}

function describeType(input: unknown): string {
  if (input === null) return "null";
  if (Array.isArray(input)) return "an array";
  return typeof input === "object" ? "an object" : typeof input;
}
