/**
 * Market-data API time bounds. README — "`from`, `to` (ISO-8601, or
 * epoch ms/µs)" and "Market-data `from`/`to` past ClickHouse's `DateTime`
 * (2106-02-07) are taken as given: such a `to` bounds nothing". An epoch-ms
 * `to` such as 9999999999999 (2286-11-20, a common "no upper bound"
 * sentinel) is below the 10^14 µs threshold, so it is milliseconds: it is the
 * same instant as in ISO-8601, not a 400 (times past 2^53 µs, mid-2255, are
 * not safe integers; they are taken as the nearest double, which bounds the
 * same, every stored time being before 2106).
 */
import assert from "node:assert/strict";
import { MAX_DATETIME_S, parseTimeParam } from "../api/market_data.ts";

Deno.test("an epoch-ms to past 2255 is taken as given like the same ISO time, not a 400", () => {
  const iso = parseTimeParam("2286-11-20T17:46:39.999Z", "to");
  let ms: number | string;
  try {
    ms = parseTimeParam("9999999999999", "to");
  } catch (error) {
    ms = `400: ${(error as Error).message}`;
  }
  assert.equal(ms, iso, "epoch ms 9999999999999 is the instant 2286-11-20T17:46:39.999Z");
});

Deno.test("epoch µs past 2^53 are taken as given, past every DateTime, not a 400", () => {
  const us = parseTimeParam("9999999999999999", "to");
  assert.ok(us > (MAX_DATETIME_S + 1) * 1e6, `${us} lies past 2106`);
  assert.ok(parseTimeParam("9007199254740993", "from") > parseTimeParam("2255-06-05", "from"));
});
