/**
 * Exact comparison of non-negative decimal strings, for ordering price levels
 * without ever turning them into floats.
 *
 * @module
 */

const DECIMAL = /^(\d+)(?:\.(\d+))?$/;

/**
 * The canonical text of a non-negative decimal: no leading zeros in the integer
 * part, no trailing zeros in the fraction (`"0.35130000"` → `"0.3513"`,
 * `"100.0"` → `"100"`). Two spellings of one number give the same text.
 * Throws a `TypeError` when `text` is not a plain decimal.
 */
export function normalizeDecimal(text: string): string {
  const match = DECIMAL.exec(text);
  if (!match) throw new TypeError(`Not a decimal: ${JSON.stringify(text)}`);
  const integer = match[1]!.replace(/^0+(?=\d)/, "");
  const fraction = (match[2] ?? "").replace(/0+$/, "");
  return fraction ? `${integer}.${fraction}` : integer;
}

/** Whether `text` is a plain non-negative decimal (`"12"`, `"0.5"`). */
export function isDecimal(text: string): boolean {
  return DECIMAL.test(text);
}

/** Whether the decimal `text` is zero (`"0"`, `"0.00000000"`). */
export function isZero(text: string): boolean {
  return /^0+(?:\.0+)?$/.test(text);
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
