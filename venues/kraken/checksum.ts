/**
 * Kraken's order-book checksum (WebSocket v1 and v2 use the same one): a
 * CRC32 over the top 10 asks (lowest first) then the top 10 bids (highest
 * first), each level written as its price then its size with the `.` and the
 * leading zeros removed (`0.0286` → `286`, `74198.19125726` → `7419819125726`).
 * The texts must be exactly as Kraken sent them, trailing zeros included.
 *
 * @example
 * ```ts
 * import { krakenChecksum } from "./checksum.ts";
 *
 * krakenChecksum([["0.0288", "32416.38964164"]], [["0.0286", "74198.19125726"]]);
 * ```
 *
 * @module
 */

import type { Level } from "../../market/events.ts";

/** How many levels of each side Kraken's checksum covers. */
export const KRAKEN_CHECKSUM_LEVELS = 10;

/** The CRC32 (IEEE 802.3, reflected, polynomial 0xEDB88320) lookup table. */
const TABLE: Int32Array = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/**
 * The CRC32 of `text` (its UTF-8 bytes) as an unsigned 32-bit integer, the
 * same as zlib's `crc32`.
 *
 * @example
 * ```ts
 * import { crc32 } from "./checksum.ts";
 *
 * crc32("hello"); // 907060870
 * ```
 */
export function crc32(text: string): number {
  let crc = 0xffffffff;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0x7f) return crc32Bytes(new TextEncoder().encode(text));
  }
  for (let i = 0; i < text.length; i++) {
    crc = TABLE[(crc ^ text.charCodeAt(i)) & 0xff]! ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** The CRC32 of `bytes` as an unsigned 32-bit integer. */
export function crc32Bytes(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Feeds the digits of a decimal's text into `crc`, skipping the `.` and the leading zeros. */
function feedDecimal(crc: number, text: string): number {
  const length = text.length;
  let i = 0;
  // The leading zeros, and a `.` among them (`0.0286` → `286`).
  for (; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x30 && c !== 0x2e) break;
  }
  for (; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x2e) crc = TABLE[(crc ^ c) & 0xff]! ^ (crc >>> 8);
  }
  return crc;
}

/** The CRC32 register before anything is fed: start {@linkcode krakenChecksumStep} from it. */
export const KRAKEN_CHECKSUM_START = -1;

/**
 * The CRC32 register after one level (its `price`, then its `qty`) is fed
 * into `crc`, a register from {@linkcode KRAKEN_CHECKSUM_START} or an earlier
 * step; {@linkcode krakenChecksumEnd} turns the last register into the
 * checksum. Lets a book keep the register after each of its top levels and
 * feed again only from the first level that changed.
 *
 * @example
 * ```ts
 * import { KRAKEN_CHECKSUM_START, krakenChecksumEnd, krakenChecksumStep } from "./checksum.ts";
 *
 * const crc = krakenChecksumStep(KRAKEN_CHECKSUM_START, "0.0288", "32416.38964164");
 * krakenChecksumEnd(crc); // krakenChecksum([["0.0288", "32416.38964164"]], [])
 * ```
 */
export function krakenChecksumStep(crc: number, price: string, qty: string): number {
  return feedDecimal(feedDecimal(crc, price), qty);
}

/**
 * A level's share of Kraken's checksum: the CRC32 register its digits (price,
 * then size, as {@linkcode krakenChecksumStep} feeds them) leave when fed
 * into a register of zero. CRC32 is linear, so the level fed into any
 * register is {@linkcode krakenChecksumAppend} of that register, this share
 * and {@linkcode krakenLevelDigits}: a book keeps each level's share and,
 * when a level above it changes, moves the register past it in a few table
 * look-ups instead of feeding its digits again.
 *
 * @example
 * ```ts
 * import {
 *   KRAKEN_CHECKSUM_START,
 *   krakenChecksumAppend,
 *   krakenChecksumStep,
 *   krakenLevelDigits,
 *   krakenLevelShare,
 * } from "./checksum.ts";
 *
 * const [price, qty] = ["0.0288", "32416.38964164"];
 * const share = krakenLevelShare(price, qty);
 * krakenChecksumAppend(KRAKEN_CHECKSUM_START, share, krakenLevelDigits(price, qty)) ===
 *   krakenChecksumStep(KRAKEN_CHECKSUM_START, price, qty); // true
 * ```
 */
export function krakenLevelShare(price: string, qty: string): number {
  return feedDecimal(feedDecimal(0, price), qty);
}

/** How many digits of a level {@linkcode krakenChecksumStep} feeds: see {@linkcode krakenLevelShare}. */
export function krakenLevelDigits(price: string, qty: string): number {
  return decimalDigits(price) + decimalDigits(qty);
}

/** How many characters of `text` {@linkcode feedDecimal} feeds. */
function decimalDigits(text: string): number {
  const length = text.length;
  let i = 0;
  for (; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x30 && c !== 0x2e) break;
  }
  let dots = 0;
  for (let dot = text.indexOf(".", i); dot >= 0; dot = text.indexOf(".", dot + 1)) dots++;
  return length - i - dots;
}

/**
 * The register `crc` after a level of `digits` digits whose
 * {@linkcode krakenLevelShare} is `share`: the same as feeding the level's
 * digits into `crc`.
 */
export function krakenChecksumAppend(crc: number, share: number, digits: number): number {
  if (digits >= SHIFT_TABLES_LIMIT) {
    for (let i = 0; i < digits; i++) crc = TABLE[crc & 0xff]! ^ (crc >>> 8);
    return crc ^ share;
  }
  const table = SHIFTS[digits] ?? shiftTable(digits);
  return table[crc & 0xff]! ^ table[256 | ((crc >>> 8) & 0xff)]! ^
    table[512 | ((crc >>> 16) & 0xff)]! ^ table[768 | (crc >>> 24)]! ^ share;
}

/**
 * Levels with more digits than this move the register a digit at a time;
 * shorter ones by a table of 4 kB, made when first needed.
 */
const SHIFT_TABLES_LIMIT = 64;

/**
 * `SHIFTS[n]`: the register after `n` zero bytes, of each byte of the
 * register before (`SHIFTS[n][256 * k + b]` for byte `b` at byte `k`) — the
 * register after them is the XOR of its four bytes' entries.
 */
const SHIFTS: Int32Array[] = [];

function shiftTable(digits: number): Int32Array {
  if (SHIFTS.length === 0) {
    const identity = new Int32Array(1024);
    for (let i = 0; i < 1024; i++) identity[i] = (i & 0xff) << (8 * (i >>> 8));
    SHIFTS.push(identity);
  }
  while (SHIFTS.length <= digits) {
    const last = SHIFTS[SHIFTS.length - 1]!;
    const next = new Int32Array(1024);
    for (let i = 0; i < 1024; i++) next[i] = TABLE[last[i]! & 0xff]! ^ (last[i]! >>> 8);
    SHIFTS.push(next);
  }
  return SHIFTS[digits]!;
}

/** The checksum, an unsigned 32-bit integer, of the CRC32 register `crc`. */
export function krakenChecksumEnd(crc: number): number {
  return ~crc >>> 0;
}

/**
 * Kraken's book checksum of a book whose best asks (ascending) are `asks` and
 * best bids (descending) are `bids`; levels beyond the first 10 of each side
 * are ignored. Computed without building the concatenated string.
 *
 * @example
 * ```ts
 * import { krakenChecksum } from "./checksum.ts";
 *
 * const checksum = krakenChecksum([["0.0288", "32416.38964164"]], [["0.0286", "74198.19125726"]]);
 * ```
 */
export function krakenChecksum(asks: readonly Level[], bids: readonly Level[]): number {
  let crc = KRAKEN_CHECKSUM_START;
  const askCount = Math.min(asks.length, KRAKEN_CHECKSUM_LEVELS);
  for (let i = 0; i < askCount; i++) {
    const level = asks[i]!;
    crc = feedDecimal(feedDecimal(crc, level[0]), level[1]);
  }
  const bidCount = Math.min(bids.length, KRAKEN_CHECKSUM_LEVELS);
  for (let i = 0; i < bidCount; i++) {
    const level = bids[i]!;
    crc = feedDecimal(feedDecimal(crc, level[0]), level[1]);
  }
  return krakenChecksumEnd(crc);
}

/**
 * The string whose CRC32 is {@linkcode krakenChecksum}: for diagnosing a
 * mismatch, and for checking the function against Kraken's documented
 * examples.
 *
 * @example
 * ```ts
 * import { krakenChecksumInput } from "./checksum.ts";
 *
 * krakenChecksumInput([["0.0288", "32416.38964164"]], [["0.0286", "74198.19125726"]]);
 * // "28832416389641642867419819125726"
 * ```
 */
export function krakenChecksumInput(asks: readonly Level[], bids: readonly Level[]): string {
  const strip = (text: string) => text.replace(".", "").replace(/^0+/, "");
  let out = "";
  for (const [price, qty] of asks.slice(0, KRAKEN_CHECKSUM_LEVELS)) {
    out += strip(price) + strip(qty);
  }
  for (const [price, qty] of bids.slice(0, KRAKEN_CHECKSUM_LEVELS)) {
    out += strip(price) + strip(qty);
  }
  return out;
}
