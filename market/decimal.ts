/**
 * Exact comparison of non-negative decimal strings, for ordering price levels
 * without ever turning them into floats.
 *
 * @module
 */

const DECIMAL = /^(\d+)(?:\.(\d+))?$/;
/** A plain decimal of value zero (`"0"`, `"0.00000000"`). */
const ZERO = /^0+(?:\.0+)?$/;

/**
 * The canonical text of a non-negative decimal: no leading zeros in the integer
 * part, no trailing zeros in the fraction (`"0.35130000"` → `"0.3513"`,
 * `"100.0"` → `"100"`). Two spellings of one number give the same text.
 * Throws a `TypeError` when `text` is not a plain decimal.
 */
export function normalizeDecimal(text: string): string {
  // Read by a loop, not a regular expression (book syncs call it for every level), and not
  // copied when already normal, as venues' prices nearly always are.
  if (typeof text !== "string") return normalizeCoerced(text);
  const length = text.length;
  let dot = 0;
  while (dot < length) {
    const c = text.charCodeAt(dot);
    if (c < 0x30 || c > 0x39) break;
    dot++;
  }
  if (dot === 0) throw notDecimal(text);
  let start = 0;
  while (start < dot - 1 && text.charCodeAt(start) === 0x30) start++;
  if (dot === length) return start === 0 ? text : text.slice(start);
  if (text.charCodeAt(dot) !== 0x2e || dot === length - 1) throw notDecimal(text);
  for (let i = dot + 1; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) throw notDecimal(text);
  }
  let end = length;
  while (text.charCodeAt(end - 1) === 0x30) end--;
  // A fraction of zeros goes with its point.
  if (end === dot + 1) end = dot;
  return start === 0 && end === length ? text : text.slice(start, end);
}

/** {@linkcode normalizeDecimal} of a value that is not a string, as the regular expression reads it. */
function normalizeCoerced(text: unknown): string {
  const match = DECIMAL.exec(text as string);
  if (!match) throw notDecimal(text);
  const integer = match[1]!.replace(/^0+(?=\d)/, "");
  const fraction = (match[2] ?? "").replace(/0+$/, "");
  return fraction ? `${integer}.${fraction}` : integer;
}

function notDecimal(text: unknown): TypeError {
  return new TypeError(`Not a decimal: ${JSON.stringify(text)}`);
}

/** `10 ** k` for `k` up to 22, each exact as a double. */
const POWERS_OF_TEN: readonly number[] = Array.from({ length: 23 }, (_, k) => 10 ** k);

/**
 * `Number(text)` for the plain decimal `text` already read digit by digit:
 * `mantissa` its digits as an integer, `fractionDigits` how many follow the
 * point. With at most 15 or so digits, as prices have, the mantissa is exact
 * and its division by an exact power of ten rounds as `Number` does; longer
 * ones go to `Number`. (A sort key read in the pass that checks the text.)
 */
export function decimalValue(mantissa: number, fractionDigits: number, text: string): number {
  // Exact while it stays below 2^53: every step then was exact too.
  if (mantissa <= Number.MAX_SAFE_INTEGER && fractionDigits <= 22) {
    return mantissa / POWERS_OF_TEN[fractionDigits]!;
  }
  return Number(text);
}

/**
 * Whether the plain decimal `text` is zero; throws the `TypeError` of
 * {@linkcode normalizeDecimal} when it is not one (a book sync's size
 * check). A size sliced out of a frame is a sliced string, which a character
 * loop reads slowly (~64 ns a size in Binance's diffs) and a regular
 * expression at once: two tests at most, one for a size that starts with
 * 1-9. (A zero plain decimal starts with 0.)
 */
export function isZeroDecimal(text: string): boolean {
  if (typeof text !== "string") {
    normalizeDecimal(text);
    return isZero(text);
  }
  if (text.charCodeAt(0) === 0x30 && ZERO.test(text)) return true;
  if (DECIMAL.test(text)) return false;
  throw notDecimal(text);
}

/** Whether `text` is a plain non-negative decimal (`"12"`, `"0.5"`). */
export function isDecimal(text: string): boolean {
  return DECIMAL.test(text);
}

/** Whether the decimal `text` is zero (`"0"`, `"0.00000000"`). */
export function isZero(text: string): boolean {
  return ZERO.test(text);
}

/**
 * Compares two normalized decimals (see {@linkcode normalizeDecimal}) exactly:
 * negative when `a < b`, zero when equal, positive when `a > b`.
 */
export function compareNormalized(a: string, b: string): number {
  const dotA = a.indexOf(".");
  const dotB = b.indexOf(".");
  const intA = dotA < 0 ? a : a.slice(0, dotA);
  const intB = dotB < 0 ? b : b.slice(0, dotB);
  if (intA.length !== intB.length) return intA.length - intB.length;
  if (intA !== intB) return intA < intB ? -1 : 1;
  const fracA = dotA < 0 ? "" : a.slice(dotA + 1);
  const fracB = dotB < 0 ? "" : b.slice(dotB + 1);
  if (fracA === fracB) return 0;
  return fracA < fracB ? -1 : 1;
}

/** Compares two decimal strings in any spelling exactly. */
export function compareDecimal(a: string, b: string): number {
  return compareNormalized(normalizeDecimal(a), normalizeDecimal(b));
}
