/**
 * A built-in NYSE calendar, for the `market_hours: us_equity` risk rule where
 * the broker has no clock of its own: the regular session 09:30–16:00
 * America/New_York on weekdays, minus the exchange holidays, with the 13:00
 * early closes. Every date is computed by rule, for any year from
 * {@linkcode NYSE_FIRST_YEAR} to {@linkcode NYSE_LAST_YEAR}:
 *
 * - holidays: New Year's Day, Martin Luther King Jr. Day (3rd Monday of
 *   January), Washington's Birthday (3rd Monday of February), Good Friday
 *   (Easter − 2 days), Memorial Day (last Monday of May), Juneteenth,
 *   Independence Day, Labor Day (1st Monday of September), Thanksgiving (4th
 *   Thursday of November), Christmas. A fixed-date holiday on a Saturday is
 *   observed the Friday before, on a Sunday the Monday after — except New
 *   Year's Day on a Saturday, which NYSE does not observe (the Friday before
 *   closes a year).
 * - early closes at 13:00: July 3 when it is Monday–Thursday, the day after
 *   Thanksgiving, December 24 when it is Monday–Thursday.
 * - New York time without a timezone library: EST (UTC−5), or EDT (UTC−4)
 *   from the second Sunday of March 02:00 local to the first Sunday of
 *   November 02:00 local.
 *
 * Unscheduled closures (national days of mourning, such as 2025-01-09) are
 * not rules and are not known here.
 *
 * @example
 * ```ts
 * import { isUsEquityMarketOpen } from "./market_hours.ts";
 *
 * isUsEquityMarketOpen(Date.parse("2026-11-26T15:00:00Z"));
 * // { open: false, reason: "holiday: Thanksgiving Day", next_open: …, next_close: … }
 * ```
 *
 * @module
 */

/** First year the calendar covers (Juneteenth became an NYSE holiday in 2022). */
export const NYSE_FIRST_YEAR = 2022;
/** Last year the calendar covers. */
export const NYSE_LAST_YEAR = 2099;
/** Regular session open, minutes after midnight New York time (09:30). */
export const NYSE_OPEN_MINUTE = 9 * 60 + 30;
/** Regular session close, minutes after midnight New York time (16:00). */
export const NYSE_CLOSE_MINUTE = 16 * 60;
/** Early close, minutes after midnight New York time (13:00). */
export const NYSE_EARLY_CLOSE_MINUTE = 13 * 60;

/** A named calendar day, `date` as `YYYY-MM-DD` (New York). */
export interface CalendarDay {
  /** The New York date, `YYYY-MM-DD`. */
  date: string;
  /** What the day is (`Thanksgiving Day`, `Day after Thanksgiving`). */
  name: string;
}

/** One trading day's regular session. */
export interface UsEquitySession {
  /** The New York date, `YYYY-MM-DD`. */
  date: string;
  /** Opening bell, ms since the epoch. */
  open_ms: number;
  /** Closing bell, ms since the epoch. */
  close_ms: number;
  /** Whether the session closes at 13:00 instead of 16:00. */
  early_close: boolean;
}

/** Whether the US equity market is open at an instant, and when it next opens and closes. */
export interface UsEquityMarketClock {
  /** Whether the regular session is open. */
  open: boolean;
  /** Why it is closed (`weekend`, `holiday: Good Friday`, `after the close at 16:00 ET`). */
  reason?: string;
  /** Next opening bell after the instant, ms since the epoch (absent past the calendar's end). */
  next_open?: number;
  /** Next closing bell after the instant (of today's session when open), ms since the epoch. */
  next_close?: number;
}

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;
const WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/**
 * Easter Sunday of `year` (Gregorian), as `YYYY-MM-DD` — the anonymous
 * Gregorian (Meeus/Jones/Butcher) algorithm.
 */
export function easterSunday(year: number): string {
  const a = year % 19;
  const b = Math.floor(year / 100);
  const c = year % 100;
  const d = Math.floor(b / 4);
  const e = b % 4;
  const f = Math.floor((b + 8) / 25);
  const g = Math.floor((b - f + 1) / 3);
  const h = (19 * a + b - d - g + 15) % 30;
  const i = Math.floor(c / 4);
  const k = c % 4;
  const l = (32 + 2 * e + 2 * i - h - k) % 7;
  const m = Math.floor((a + 11 * h + 22 * l) / 451);
  const month = Math.floor((h + l - 7 * m + 114) / 31);
  const day = ((h + l - 7 * m + 114) % 31) + 1;
  return ymd(Date.UTC(year, month - 1, day));
}

/**
 * The NYSE holidays of `year`, in date order, at their observed dates.
 * Throws a `RangeError` outside {@linkcode NYSE_FIRST_YEAR}..{@linkcode NYSE_LAST_YEAR}.
 */
export function nyseHolidays(year: number): CalendarDay[] {
  return [...calendarOf(year).holidays].map(([date, name]) => ({ date, name }));
}

/**
 * The NYSE 13:00 early closes of `year`, in date order. Throws a `RangeError`
 * outside {@linkcode NYSE_FIRST_YEAR}..{@linkcode NYSE_LAST_YEAR}.
 */
export function nyseEarlyCloses(year: number): CalendarDay[] {
  return [...calendarOf(year).earlyCloses].map(([date, name]) => ({ date, name }));
}

/**
 * Whether US daylight saving time is in effect at `ms` (since the second
 * Sunday of March 02:00 EST until the first Sunday of November 02:00 EDT).
 */
export function isUsDaylightTime(ms: number): boolean {
  const year = new Date(ms).getUTCFullYear();
  const start = nthWeekday(year, 2, 0, 2) + 7 * 60 * MINUTE_MS; // 02:00 EST = 07:00 UTC
  const end = nthWeekday(year, 10, 0, 1) + 6 * 60 * MINUTE_MS; // 02:00 EDT = 06:00 UTC
  return ms >= start && ms < end;
}

/** New York's offset from UTC at `ms`, in minutes: −240 (EDT) or −300 (EST). */
export function newYorkOffsetMinutes(ms: number): number {
  return isUsDaylightTime(ms) ? -240 : -300;
}

/**
 * The regular session of the New York date `date` (`YYYY-MM-DD`), or `null`
 * when the market does not open that day (weekend or holiday). Throws a
 * `RangeError` for a malformed date or one outside the calendar's years.
 */
export function usEquitySession(date: string): UsEquitySession | null {
  const day = parseDate(date);
  return sessionOf(day, calendarOf(new Date(day).getUTCFullYear()));
}

/**
 * Whether the US equity regular session is open at `nowMs`, why not, and the
 * next opening and closing bells. Total: an instant outside the calendar's
 * years is reported closed, with the reason.
 *
 * @example
 * ```ts
 * import { isUsEquityMarketOpen } from "./market_hours.ts";
 *
 * isUsEquityMarketOpen(Date.parse("2026-11-27T17:30:00Z")); // 12:30 ET, day after Thanksgiving
 * // { open: true, next_close: Date.parse("2026-11-27T18:00:00Z"), next_open: … }
 * ```
 */
export function isUsEquityMarketOpen(nowMs: number): UsEquityMarketClock {
  const day = tradingDayAt(nowMs);
  if (typeof day === "string") return { open: false, reason: day };
  const { localDay, today } = day;
  if (today !== null && nowMs >= today.open_ms && nowMs < today.close_ms) {
    const next = nextSession(localDay + DAY_MS);
    const clock: UsEquityMarketClock = { open: true, next_close: today.close_ms };
    if (next !== null) clock.next_open = next.open_ms;
    return clock;
  }
  const upcoming = today !== null && nowMs < today.open_ms ? today : nextSession(localDay + DAY_MS);
  const clock: UsEquityMarketClock = { open: false, reason: closedReason(localDay, today, nowMs) };
  if (upcoming !== null) {
    clock.next_open = upcoming.open_ms;
    clock.next_close = upcoming.close_ms;
  }
  return clock;
}

/** Pre-market trading starts this long before the opening bell (04:00 ET). */
const PRE_MARKET_MS = 330 * MINUTE_MS;
/** After-hours trading ends this long after the closing bell (20:00 ET, 17:00 on early closes). */
const AFTER_HOURS_MS = 240 * MINUTE_MS;

/**
 * Why no US equity market data is to be expected at `nowMs` — outside the
 * extended session (pre-market from 04:00 ET, after-hours until 4 h after the
 * close), on weekends and holidays — or `null` inside it. Total, like
 * {@linkcode isUsEquityMarketOpen}.
 *
 * @example
 * ```ts
 * import { usEquityDataPause } from "./market_hours.ts";
 *
 * usEquityDataPause(Date.parse("2026-12-05T15:00:00Z")); // "weekend (Saturday)"
 * usEquityDataPause(Date.parse("2026-12-07T09:30:00Z")); // null: 04:30 ET, pre-market
 * ```
 */
export function usEquityDataPause(nowMs: number): string | null {
  const day = tradingDayAt(nowMs);
  if (typeof day === "string") return day;
  const { localDay, today } = day;
  if (today === null) return closedReason(localDay, today, nowMs);
  if (nowMs < today.open_ms - PRE_MARKET_MS) return "before the pre-market at 04:00 ET";
  if (nowMs >= today.close_ms + AFTER_HOURS_MS) {
    return today.early_close
      ? "after the after-hours session (until 17:00 ET after an early close)"
      : "after the after-hours session (until 20:00 ET)";
  }
  return null;
}

/**
 * The New York date `nowMs` falls on (its midnight, as a UTC timestamp) and
 * that day's regular session (null when the market does not open); or, when
 * the calendar cannot tell, why: an invalid time or a year it does not cover.
 */
function tradingDayAt(
  nowMs: number,
): { localDay: number; today: UsEquitySession | null } | string {
  if (!Number.isFinite(nowMs)) return `invalid time ${nowMs}`;
  const localDay = startOfDay(nowMs + newYorkOffsetMinutes(nowMs) * MINUTE_MS);
  const year = new Date(localDay).getUTCFullYear();
  if (year < NYSE_FIRST_YEAR || year > NYSE_LAST_YEAR) return `no NYSE calendar for ${year}`;
  return { localDay, today: sessionOf(localDay, calendarOf(year)) };
}

interface YearCalendar {
  holidays: Map<string, string>;
  earlyCloses: Map<string, string>;
}

const calendars = new Map<number, YearCalendar>();

function calendarOf(year: number): YearCalendar {
  if (!Number.isInteger(year) || year < NYSE_FIRST_YEAR || year > NYSE_LAST_YEAR) {
    throw new RangeError(
      `No NYSE calendar for ${year}: years ${NYSE_FIRST_YEAR}..${NYSE_LAST_YEAR} are covered`,
    );
  }
  let calendar = calendars.get(year);
  if (calendar === undefined) {
    calendar = buildCalendar(year);
    calendars.set(year, calendar);
  }
  return calendar;
}

function buildCalendar(year: number): YearCalendar {
  const holidays: Array<[number, string]> = [];
  const newYear = Date.UTC(year, 0, 1);
  // New Year's Day on a Saturday is not observed; on a Sunday, the Monday after.
  if (weekday(newYear) !== 6) holidays.push([observed(newYear), "New Year's Day"]);
  holidays.push([nthWeekday(year, 0, 1, 3), "Martin Luther King Jr. Day"]);
  holidays.push([nthWeekday(year, 1, 1, 3), "Washington's Birthday"]);
  holidays.push([parseDate(easterSunday(year)) - 2 * DAY_MS, "Good Friday"]);
  holidays.push([lastWeekday(year, 4, 1), "Memorial Day"]);
  holidays.push([observed(Date.UTC(year, 5, 19)), "Juneteenth National Independence Day"]);
  holidays.push([observed(Date.UTC(year, 6, 4)), "Independence Day"]);
  holidays.push([nthWeekday(year, 8, 1, 1), "Labor Day"]);
  const thanksgiving = nthWeekday(year, 10, 4, 4);
  holidays.push([thanksgiving, "Thanksgiving Day"]);
  holidays.push([observed(Date.UTC(year, 11, 25)), "Christmas Day"]);
  holidays.sort((a, b) => a[0] - b[0]);

  const earlyCloses: Array<[number, string]> = [];
  const july3 = Date.UTC(year, 6, 3);
  if (weekday(july3) >= 1 && weekday(july3) <= 4) {
    earlyCloses.push([july3, "Day before Independence Day"]);
  }
  earlyCloses.push([thanksgiving + DAY_MS, "Day after Thanksgiving"]);
  const christmasEve = Date.UTC(year, 11, 24);
  if (weekday(christmasEve) >= 1 && weekday(christmasEve) <= 4) {
    earlyCloses.push([christmasEve, "Christmas Eve"]);
  }
  return {
    holidays: new Map(holidays.map(([day, name]) => [ymd(day), name])),
    earlyCloses: new Map(earlyCloses.map(([day, name]) => [ymd(day), name])),
  };
}

/** The session of the day starting at UTC midnight `day` (a New York date), or null. */
function sessionOf(day: number, calendar: YearCalendar): UsEquitySession | null {
  const dow = weekday(day);
  const date = ymd(day);
  if (dow === 0 || dow === 6 || calendar.holidays.has(date)) return null;
  const early = calendar.earlyCloses.has(date);
  // Sessions lie between 09:30 and 16:00, far from the 02:00 DST switch: one offset per day.
  const offsetMs = newYorkOffsetMinutes(day + 12 * 60 * MINUTE_MS) * MINUTE_MS;
  return {
    date,
    open_ms: day + NYSE_OPEN_MINUTE * MINUTE_MS - offsetMs,
    close_ms: day + (early ? NYSE_EARLY_CLOSE_MINUTE : NYSE_CLOSE_MINUTE) * MINUTE_MS - offsetMs,
    early_close: early,
  };
}

/** The first session on or after the New York date starting at `day`, or null past the end. */
function nextSession(day: number): UsEquitySession | null {
  // Never more than 4 closed days in a row (weekend + holiday + observed holiday).
  for (let i = 0; i < 10; i++, day += DAY_MS) {
    const year = new Date(day).getUTCFullYear();
    if (year > NYSE_LAST_YEAR) return null;
    const session = sessionOf(day, calendarOf(year));
    if (session !== null) return session;
  }
  return null;
}

function closedReason(day: number, today: UsEquitySession | null, nowMs: number): string {
  const dow = weekday(day);
  if (dow === 0 || dow === 6) return `weekend (${WEEKDAYS[dow]})`;
  const year = new Date(day).getUTCFullYear();
  const holiday = calendarOf(year).holidays.get(ymd(day));
  if (holiday !== undefined || today === null) return `holiday: ${holiday}`;
  if (nowMs < today.open_ms) return "before the open at 09:30 ET";
  return today.early_close ? "after the early close at 13:00 ET" : "after the close at 16:00 ET";
}

/** Saturday → the Friday before, Sunday → the Monday after. */
function observed(day: number): number {
  const dow = weekday(day);
  if (dow === 6) return day - DAY_MS;
  if (dow === 0) return day + DAY_MS;
  return day;
}

/** UTC midnight of the `n`th `dow` (0 = Sunday) of `month` (0-based) in `year`. */
function nthWeekday(year: number, month: number, dow: number, n: number): number {
  const first = Date.UTC(year, month, 1);
  const offset = (dow - weekday(first) + 7) % 7;
  return first + (offset + 7 * (n - 1)) * DAY_MS;
}

/** UTC midnight of the last `dow` of `month` (0-based) in `year`. */
function lastWeekday(year: number, month: number, dow: number): number {
  const last = Date.UTC(year, month + 1, 0);
  return last - ((weekday(last) - dow + 7) % 7) * DAY_MS;
}

function weekday(day: number): number {
  return new Date(day).getUTCDay();
}

function startOfDay(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

function ymd(day: number): string {
  return new Date(day).toISOString().slice(0, 10);
}

function parseDate(date: string): number {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  const day = match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : NaN;
  if (!match || !Number.isFinite(day) || ymd(day) !== date) {
    throw new RangeError(`Not a date (YYYY-MM-DD): ${date}`);
  }
  return day;
}
