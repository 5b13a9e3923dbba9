import assert from "node:assert/strict";
import fc from "fast-check";
import {
  easterSunday,
  isUsDaylightTime,
  isUsEquityMarketOpen,
  newYorkOffsetMinutes,
  nyseEarlyCloses,
  nyseHolidays,
  usEquityDataPause,
  usEquitySession,
} from "../trading/market_hours.ts";

const at = (iso: string) => Date.parse(iso);
const iso = (ms: number | undefined) => ms === undefined ? undefined : new Date(ms).toISOString();

Deno.test("the 2026 NYSE holidays are the published ones", () => {
  assert.deepEqual(nyseHolidays(2026), [
    { date: "2026-01-01", name: "New Year's Day" },
    { date: "2026-01-19", name: "Martin Luther King Jr. Day" },
    { date: "2026-02-16", name: "Washington's Birthday" },
    { date: "2026-04-03", name: "Good Friday" },
    { date: "2026-05-25", name: "Memorial Day" },
    { date: "2026-06-19", name: "Juneteenth National Independence Day" },
    { date: "2026-07-03", name: "Independence Day" },
    { date: "2026-09-07", name: "Labor Day" },
    { date: "2026-11-26", name: "Thanksgiving Day" },
    { date: "2026-12-25", name: "Christmas Day" },
  ]);
  assert.deepEqual(nyseEarlyCloses(2026), [
    { date: "2026-11-27", name: "Day after Thanksgiving" },
    { date: "2026-12-24", name: "Christmas Eve" },
  ]);
});

Deno.test("the 2027 NYSE holidays shift weekend dates, except New Year's Day 2028", () => {
  assert.deepEqual(nyseHolidays(2027).map((day) => day.date), [
    "2027-01-01",
    "2027-01-18",
    "2027-02-15",
    "2027-03-26",
    "2027-05-31",
    "2027-06-18", // Juneteenth on a Saturday → Friday
    "2027-07-05", // Independence Day on a Sunday → Monday
    "2027-09-06",
    "2027-11-25",
    "2027-12-24", // Christmas on a Saturday → Friday, so no Christmas Eve early close
  ]);
  assert.deepEqual(nyseEarlyCloses(2027), [{ date: "2027-11-26", name: "Day after Thanksgiving" }]);
  // 2028-01-01 is a Saturday: NYSE stays open on Friday 2027-12-31.
  assert.notEqual(usEquitySession("2027-12-31"), null);
  assert.equal(isUsEquityMarketOpen(at("2027-12-31T15:00:00Z")).open, true);
});

Deno.test("earlier years match the published calendars (July 3 early close, observed days)", () => {
  assert.deepEqual(nyseEarlyCloses(2025).map((day) => day.date), [
    "2025-07-03",
    "2025-11-28",
    "2025-12-24",
  ]);
  assert.deepEqual(nyseHolidays(2022).map((day) => day.date), [
    // 2022-01-01 was a Saturday: not observed.
    "2022-01-17",
    "2022-02-21",
    "2022-04-15",
    "2022-05-30",
    "2022-06-20",
    "2022-07-04",
    "2022-09-05",
    "2022-11-24",
    "2022-12-26",
  ]);
  assert.deepEqual(nyseEarlyCloses(2022).map((day) => day.date), ["2022-11-25"]);
  assert.deepEqual(nyseEarlyCloses(2023).map((day) => day.date), ["2023-07-03", "2023-11-24"]);
  assert.deepEqual(nyseHolidays(2023).map((day) => day.date).slice(0, 1), ["2023-01-02"]);
});

Deno.test("Easter Sunday is computed for any year", () => {
  const known: Record<number, string> = {
    1818: "1818-03-22",
    1943: "1943-04-25",
    2024: "2024-03-31",
    2025: "2025-04-20",
    2026: "2026-04-05",
    2027: "2027-03-28",
    2038: "2038-04-25",
    2285: "2285-03-22",
  };
  for (const [year, date] of Object.entries(known)) assert.equal(easterSunday(Number(year)), date);
});

Deno.test("Thanksgiving 2026 is closed and the day after closes at 13:00 ET", () => {
  const thanksgiving = isUsEquityMarketOpen(at("2026-11-26T15:00:00Z"));
  assert.deepEqual(
    {
      ...thanksgiving,
      next_open: iso(thanksgiving.next_open),
      next_close: iso(thanksgiving.next_close),
    },
    {
      open: false,
      reason: "holiday: Thanksgiving Day",
      next_open: "2026-11-27T14:30:00.000Z",
      next_close: "2026-11-27T18:00:00.000Z",
    },
  );
  assert.deepEqual(usEquitySession("2026-11-27"), {
    date: "2026-11-27",
    open_ms: at("2026-11-27T14:30:00Z"),
    close_ms: at("2026-11-27T18:00:00Z"),
    early_close: true,
  });
  assert.equal(isUsEquityMarketOpen(at("2026-11-27T17:59:59.999Z")).open, true);
  const after = isUsEquityMarketOpen(at("2026-11-27T18:00:00Z"));
  assert.equal(after.open, false);
  assert.equal(after.reason, "after the early close at 13:00 ET");
  assert.equal(iso(after.next_open), "2026-11-30T14:30:00.000Z");
});

Deno.test("Independence Day 2026 is observed on Friday July 3, with no early close before it", () => {
  assert.equal(usEquitySession("2026-07-03"), null);
  const observed = isUsEquityMarketOpen(at("2026-07-03T15:00:00Z"));
  assert.equal(observed.open, false);
  assert.equal(observed.reason, "holiday: Independence Day");
  assert.equal(iso(observed.next_open), "2026-07-06T13:30:00.000Z");
  assert.deepEqual(usEquitySession("2026-07-02"), {
    date: "2026-07-02",
    open_ms: at("2026-07-02T13:30:00Z"),
    close_ms: at("2026-07-02T20:00:00Z"),
    early_close: false,
  });
});

Deno.test("Christmas Eve 2026 closes early and Christmas is closed", () => {
  assert.equal(usEquitySession("2026-12-24")?.close_ms, at("2026-12-24T18:00:00Z"));
  assert.equal(usEquitySession("2026-12-25"), null);
  const evening = isUsEquityMarketOpen(at("2026-12-24T19:00:00Z"));
  assert.equal(iso(evening.next_open), "2026-12-28T14:30:00.000Z");
});

Deno.test("weekends are closed and the next open is Monday's", () => {
  const saturday = isUsEquityMarketOpen(at("2026-11-21T12:00:00Z"));
  assert.equal(saturday.open, false);
  assert.equal(saturday.reason, "weekend (Saturday)");
  assert.equal(iso(saturday.next_open), "2026-11-23T14:30:00.000Z");
  assert.equal(iso(saturday.next_close), "2026-11-23T21:00:00.000Z");
  assert.equal(isUsEquityMarketOpen(at("2026-11-22T20:00:00Z")).reason, "weekend (Sunday)");
  // Friday 16:00 ET is 21:00 UTC in November; 20:59 ET Friday is Saturday 01:59 UTC.
  assert.equal(
    isUsEquityMarketOpen(at("2026-11-21T01:59:00Z")).reason,
    "after the close at 16:00 ET",
  );
});

Deno.test("the session is open from 09:30 inclusive to 16:00 exclusive, New York time", () => {
  const monday = isUsEquityMarketOpen(at("2026-11-23T14:29:59.999Z"));
  assert.equal(monday.open, false);
  assert.equal(monday.reason, "before the open at 09:30 ET");
  assert.equal(iso(monday.next_open), "2026-11-23T14:30:00.000Z");
  const open = isUsEquityMarketOpen(at("2026-11-23T14:30:00Z"));
  assert.deepEqual(open, {
    open: true,
    next_close: at("2026-11-23T21:00:00Z"),
    next_open: at("2026-11-24T14:30:00Z"),
  });
  assert.equal(isUsEquityMarketOpen(at("2026-11-23T20:59:59.999Z")).open, true);
  assert.equal(isUsEquityMarketOpen(at("2026-11-23T21:00:00Z")).open, false);
});

Deno.test("daylight saving time moves the session by an hour in UTC (2026 boundaries)", () => {
  // DST starts Sunday 2026-03-08 at 02:00 EST = 07:00 UTC.
  assert.equal(isUsDaylightTime(at("2026-03-08T06:59:59.999Z")), false);
  assert.equal(isUsDaylightTime(at("2026-03-08T07:00:00Z")), true);
  // DST ends Sunday 2026-11-01 at 02:00 EDT = 06:00 UTC.
  assert.equal(isUsDaylightTime(at("2026-11-01T05:59:59.999Z")), true);
  assert.equal(isUsDaylightTime(at("2026-11-01T06:00:00Z")), false);
  assert.equal(newYorkOffsetMinutes(at("2026-07-01T12:00:00Z")), -240);
  assert.equal(newYorkOffsetMinutes(at("2026-01-15T12:00:00Z")), -300);

  assert.equal(usEquitySession("2026-03-06")?.open_ms, at("2026-03-06T14:30:00Z")); // EST
  assert.equal(usEquitySession("2026-03-09")?.open_ms, at("2026-03-09T13:30:00Z")); // EDT
  assert.equal(usEquitySession("2026-10-30")?.close_ms, at("2026-10-30T20:00:00Z")); // EDT
  assert.equal(usEquitySession("2026-11-02")?.open_ms, at("2026-11-02T14:30:00Z")); // EST
  assert.equal(isUsEquityMarketOpen(at("2026-03-09T13:30:00Z")).open, true);
  assert.equal(isUsEquityMarketOpen(at("2026-03-06T13:30:00Z")).open, false);
  // 2027: second Sunday of March is the 14th, first Sunday of November the 7th.
  assert.equal(isUsDaylightTime(at("2027-03-14T07:00:00Z")), true);
  assert.equal(isUsDaylightTime(at("2027-03-13T12:00:00Z")), false);
  assert.equal(isUsDaylightTime(at("2027-11-07T05:00:00Z")), true);
  assert.equal(isUsDaylightTime(at("2027-11-07T06:00:00Z")), false);
});

Deno.test("dates outside the calendar are refused, instants reported closed", () => {
  assert.throws(() => nyseHolidays(2021), RangeError);
  assert.throws(() => nyseHolidays(2100), RangeError);
  assert.throws(() => usEquitySession("2026-02-30"), RangeError);
  assert.throws(() => usEquitySession("26-1-1"), RangeError);
  const far = isUsEquityMarketOpen(at("2100-01-04T15:00:00Z"));
  assert.deepEqual(far, { open: false, reason: "no NYSE calendar for 2100" });
  assert.equal(isUsEquityMarketOpen(NaN).open, false);
});

Deno.test("next_open and next_close are bells: the state flips exactly there", () => {
  const start = at("2026-01-01T00:00:00Z");
  const end = at("2028-01-01T00:00:00Z");
  fc.assert(
    fc.property(fc.integer({ min: start, max: end }), (now) => {
      const clock = isUsEquityMarketOpen(now);
      assert.ok(clock.next_open !== undefined && clock.next_open > now);
      assert.ok(clock.next_close !== undefined && clock.next_close > now);
      assert.equal(isUsEquityMarketOpen(clock.next_open).open, true);
      assert.equal(isUsEquityMarketOpen(clock.next_open - 1).open, false);
      assert.equal(isUsEquityMarketOpen(clock.next_close - 1).open, true);
      assert.equal(isUsEquityMarketOpen(clock.next_close).open, false);
      if (clock.open) {
        assert.equal(clock.reason, undefined);
        assert.ok(clock.next_close < clock.next_open);
      } else {
        assert.ok(clock.reason);
        assert.ok(clock.next_open < clock.next_close);
      }
      // The session of the New York date agrees.
      const date = new Date(now + newYorkOffsetMinutes(now) * 60_000).toISOString().slice(0, 10);
      const session = usEquitySession(date);
      assert.equal(
        clock.open,
        session !== null && now >= session.open_ms && now < session.close_ms,
      );
    }),
    { numRuns: 2000 },
  );
});

Deno.test("market data flows in the extended session: 04:00 to 20:00 ET, 17:00 after an early close", () => {
  // Monday 2026-12-07 (EST, UTC−5).
  assert.equal(
    usEquityDataPause(at("2026-12-07T08:59:59.999Z")),
    "before the pre-market at 04:00 ET",
  );
  assert.equal(usEquityDataPause(at("2026-12-07T09:00:00Z")), null);
  assert.equal(usEquityDataPause(at("2026-12-07T16:00:00Z")), null); // 11:00, regular session
  assert.equal(usEquityDataPause(at("2026-12-08T00:59:59.999Z")), null); // 19:59:59.999
  assert.equal(
    usEquityDataPause(at("2026-12-08T01:00:00Z")),
    "after the after-hours session (until 20:00 ET)",
  );
  // Summer time (EDT, UTC−4): the same hours in New York, an hour earlier in UTC.
  assert.equal(usEquityDataPause(at("2026-07-07T07:59:00Z")), "before the pre-market at 04:00 ET");
  assert.equal(usEquityDataPause(at("2026-07-07T08:00:00Z")), null);
  // The day after Thanksgiving closes at 13:00: after-hours end at 17:00.
  assert.equal(usEquityDataPause(at("2026-11-27T21:59:59Z")), null);
  assert.equal(
    usEquityDataPause(at("2026-11-27T22:00:00Z")),
    "after the after-hours session (until 17:00 ET after an early close)",
  );
  // No session at all on weekends and holidays.
  assert.equal(usEquityDataPause(at("2026-12-05T15:00:00Z")), "weekend (Saturday)");
  assert.equal(usEquityDataPause(at("2026-11-26T15:00:00Z")), "holiday: Thanksgiving Day");
  assert.equal(usEquityDataPause(at("2021-03-01T15:00:00Z")), "no NYSE calendar for 2021");
  assert.equal(usEquityDataPause(NaN), "invalid time NaN");
});

Deno.test("the regular session lies inside the extended one", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: at("2022-01-01T00:00:00Z"), max: at("2099-12-01T00:00:00Z") }),
      (ms) => {
        if (isUsEquityMarketOpen(ms).open) assert.equal(usEquityDataPause(ms), null);
      },
    ),
  );
});
