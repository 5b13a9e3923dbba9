/**
 * Field checks shared by the venue parsers that read RFC 3339 times and plain
 * decimal strings (Coinbase, Kraken, Alpaca): hand-written loops, several
 * times faster than regular expressions or `Date.parse` on the hot path.
 *
 * @module
 */

import { isoToUs } from "../market/events.ts";

/** The date of the last time {@linkcode timeUs} read, as the number `YYYYMMDD`. */
let lastDate = -1;
/** Seconds since the epoch at the start of {@linkcode lastDate}. */
let lastMidnight = 0;

/**
 * Microseconds since the epoch of an RFC 3339 UTC timestamp
 * (`2026-08-09T21:05:48.228568804Z`): `text`, or the part of it from `start`
 * to `end`, which saves slicing it out of a frame. Computed with integer
 * arithmetic; any other form goes to {@linkcode isoToUs}, which gives the
 * same result or throws {@linkcode MalformedFrameError}. Digits past the
 * sixth of the fraction are checked and dropped, as `isoToUs` drops them.
 * The date part of the last time read is remembered: a feed's times mostly
 * share their day.
 *
 * @example
 * ```ts
 * import { timeUs } from "./_fields.ts";
 *
 * timeUs("2026-08-09T21:05:48.228568804Z"); // 1786309548228568
 * timeUs('{"t":"2026-08-09T21:05:48Z"}', 6, 26); // 1786309548000000
 * ```
 */
export function timeUs(text: string, start = 0, end: number = text.length): number {
  if (
    end - start < 20 || text.charCodeAt(start + 4) !== 0x2d ||
    text.charCodeAt(start + 7) !== 0x2d || text.charCodeAt(start + 10) !== 0x54 ||
    text.charCodeAt(start + 13) !== 0x3a || text.charCodeAt(start + 16) !== 0x3a ||
    text.charCodeAt(end - 1) !== 0x5a
  ) {
    return isoToUs(text.slice(start, end));
  }
  const century = twoDigits(text, start);
  const yearOfCentury = twoDigits(text, start + 2);
  const month = twoDigits(text, start + 5);
  const day = twoDigits(text, start + 8);
  const hour = twoDigits(text, start + 11);
  const minute = twoDigits(text, start + 14);
  const second = twoDigits(text, start + 17);
  if (
    (century | yearOfCentury | month | day | hour | minute | second) < 0 ||
    hour > 23 || minute > 59 || second > 59
  ) {
    return isoToUs(text.slice(start, end));
  }
  const date = century * 1_000_000 + yearOfCentury * 10_000 + month * 100 + day;
  let midnight = lastMidnight;
  if (date !== lastDate) {
    const year = century * 100 + yearOfCentury;
    if (
      year < 1970 || month < 1 || month > 12 || day < 1 ||
      (day > 28 && day > daysInMonth(year, month))
    ) {
      return isoToUs(text.slice(start, end));
    }
    midnight = daysFromCivil(year, month, day) * 86_400;
    lastDate = date;
    lastMidnight = midnight;
  }
  let micros = 0;
  if (end - start > 20) {
    if (text.charCodeAt(start + 19) !== 0x2e || end - start === 21) {
      return isoToUs(text.slice(start, end));
    }
    let scale = 100_000;
    for (let i = start + 20; i < end - 1; i++) {
      const c = text.charCodeAt(i) - 0x30;
      if (c < 0 || c > 9) return isoToUs(text.slice(start, end));
      micros += c * scale;
      scale = scale / 10 | 0;
    }
  }
  return (midnight + hour * 3_600 + minute * 60 + second) * 1_000_000 + micros;
}

/** The value of the two decimal digits of `text` at `at`, or -1 when one is not a digit. */
function twoDigits(text: string, at: number): number {
  const tens = text.charCodeAt(at) - 0x30;
  const ones = text.charCodeAt(at + 1) - 0x30;
  return tens >= 0 && tens <= 9 && ones >= 0 && ones <= 9 ? tens * 10 + ones : -1;
}

/** Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = ((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 | 0) + day - 1;
  const dayOfEra = yearOfEra * 365 + (yearOfEra / 4 | 0) - (yearOfEra / 100 | 0) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
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
