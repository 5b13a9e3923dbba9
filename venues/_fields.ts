/**
 * Field checks shared by the venue parsers that read RFC 3339 times and plain
 * decimal strings (Coinbase, Kraken): hand-written loops, several times faster
 * than regular expressions or `Date.parse` on the hot path.
 *
 * @module
 */

import { isoToUs } from "../market/events.ts";

/**
 * Microseconds since the epoch of an RFC 3339 UTC timestamp
 * (`2026-08-09T21:05:48.228568804Z`), computed with integer arithmetic; any
 * other form goes to {@linkcode isoToUs}, which gives the same result or
 * throws {@linkcode MalformedFrameError}.
 */
export function timeUs(text: string): number {
  const n = text.length;
  if (
    n < 20 || text.charCodeAt(4) !== 0x2d || text.charCodeAt(7) !== 0x2d ||
    text.charCodeAt(10) !== 0x54 || text.charCodeAt(13) !== 0x3a || text.charCodeAt(16) !== 0x3a ||
    text.charCodeAt(n - 1) !== 0x5a
  ) {
    return isoToUs(text);
  }
  const year = digits(text, 0, 4);
  const month = digits(text, 5, 2);
  const day = digits(text, 8, 2);
  const hour = digits(text, 11, 2);
  const minute = digits(text, 14, 2);
  const second = digits(text, 17, 2);
  if (
    year < 1970 || month < 1 || month > 12 || day < 1 ||
    (day > 28 && day > daysInMonth(year, month)) ||
    hour > 23 || minute > 59 || second > 59
  ) {
    return isoToUs(text);
  }
  let micros = 0;
  if (n > 20) {
    if (text.charCodeAt(19) !== 0x2e) return isoToUs(text);
    let scale = 100_000;
    for (let i = 20; i < n - 1; i++) {
      const c = text.charCodeAt(i) - 0x30;
      if (c < 0 || c > 9) return isoToUs(text);
      micros += c * scale;
      scale = scale / 10 | 0;
    }
  }
  // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = ((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 | 0) + day - 1;
  const dayOfEra = yearOfEra * 365 + (yearOfEra / 4 | 0) - (yearOfEra / 100 | 0) + dayOfYear;
  const days = era * 146_097 + dayOfEra - 719_468;
  return ((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000) + micros;
}

/** The value of `count` decimal digits of `text` at `at`, or -1 when one is not a digit. */
function digits(text: string, at: number, count: number): number {
  let value = 0;
  for (let i = at; i < at + count; i++) {
    const c = text.charCodeAt(i) - 0x30;
    if (c < 0 || c > 9) return -1;
    value = value * 10 + c;
  }
  return value;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** Whether `text` is one or more ASCII digits. */
export function isDigits(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/** Whether `text` is a plain non-negative decimal: digits, optionally `.` and digits. */
export function isPlainDecimal(text: string): boolean {
  const length = text.length;
  let i = 0;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) break;
    i++;
  }
  if (i === 0) return false;
  if (i === length) return true;
  if (text.charCodeAt(i) !== 0x2e || i === length - 1) return false;
  for (i++; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}
