/**
 * Venue times that name no instant — a day the month does not have
 * (`2026-02-30`), hour 24, a time before 1970 — make the frame malformed
 * (counted and dead-lettered by the feed), never an event stamped with
 * another day (`Date.parse` rolls `2026-02-30` over to March 2nd and
 * `T24:00:00` to the next midnight) or with a negative `ts_exchange`. The
 * API reads its own `from`/`to` the same way (`isoTimeUs` refuses such days).
 */

import assert from "node:assert/strict";
import { isoToUs, MalformedFrameError } from "../market/events.ts";
import { timeUs } from "../venues/_fields.ts";
import { parseCoinbaseFrame } from "../venues/coinbase/parse.ts";
import { parseKrakenFrame } from "../venues/kraken/parse.ts";
import { parseAlpacaFrame } from "../venues/alpaca/parse.ts";

const RECEIVED_US = 1_786_309_548_300_000;

/** Times that are not instants, and why. */
const NOT_INSTANTS = [
  "2026-02-30T00:00:00Z", // no February 30th
  "2026-02-29T12:00:00.5Z", // 2026 is no leap year
  "2026-04-31T21:05:48.228568Z", // April has 30 days
  "2026-08-09T24:00:00Z", // hour 24
  "2026-08-09T21:05:48.228568+24:00", // no such offset
  "2026-08-09T21:05:48.228568+01:60",
  "1969-12-31T23:59:59Z", // before the epoch: a negative ts_exchange
  "0000-01-01T00:00:00Z",
];

function coinbaseTrade(time: string): string {
  return '{"channel":"market_trades","timestamp":"2026-08-09T21:05:48.251397169Z",' +
    '"sequence_num":9,"events":[{"type":"update","trades":[{"product_id":"BTC-USD",' +
    '"trade_id":"1068572091","price":"65083.67","size":"0.01034361",' +
    `"time":"${time}","side":"SELL"}]}]}`;
}

function krakenTrade(time: string): string {
  return '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",' +
    '"price":65000.10,"qty":0.00100000,"ord_type":"market","trade_id":42,' +
    `"timestamp":"${time}"}]}`;
}

function alpacaTrade(time: string): string {
  return `[{"T":"t","i":96921,"S":"AAPL","x":"D","p":126.55,"s":1,"t":"${time}",` +
    '"c":["@","I"],"z":"C"}]';
}

Deno.test("isoToUs and timeUs refuse times that name no instant instead of rolling them over", () => {
  for (const text of NOT_INSTANTS) {
    assert.throws(() => isoToUs(text), MalformedFrameError, `isoToUs(${text})`);
    assert.throws(() => timeUs(text), MalformedFrameError, `timeUs(${text})`);
    assert.throws(() => timeUs(`"${text}"`, 1, text.length + 1), MalformedFrameError, text);
  }
  // Real instants still read as before, in both functions.
  for (
    const [text, us] of [
      ["2024-02-29T00:00:00Z", 1_709_164_800_000_000],
      ["2026-08-09T23:59:59.999999Z", 1_786_319_999_999_999],
      ["2026-08-09T21:05:48.228568804Z", 1_786_309_548_228_568],
      ["2026-08-09T22:05:48.228568+01:00", 1_786_309_548_228_568],
      ["1970-01-01T00:00:00Z", 0],
    ] as const
  ) {
    assert.equal(isoToUs(text), us, text);
    assert.equal(timeUs(text), us, text);
  }
});

Deno.test("a venue frame whose time names no instant is malformed, not an event of another day", () => {
  for (const text of NOT_INSTANTS) {
    assert.throws(
      () => parseCoinbaseFrame(coinbaseTrade(text), RECEIVED_US),
      MalformedFrameError,
      `Coinbase ${text}`,
    );
    assert.throws(
      () => parseKrakenFrame(krakenTrade(text), RECEIVED_US),
      MalformedFrameError,
      `Kraken ${text}`,
    );
    assert.throws(
      () => parseAlpacaFrame(alpacaTrade(text), RECEIVED_US),
      MalformedFrameError,
      `Alpaca ${text}`,
    );
  }
  // The same frames with a real time are trades at that time.
  const time = "2026-08-09T21:05:48.167634Z";
  const us = 1_786_309_548_167_634;
  assert.equal(parseCoinbaseFrame(coinbaseTrade(time), RECEIVED_US).events[0]?.ts_exchange, us);
  assert.equal(parseKrakenFrame(krakenTrade(time), RECEIVED_US).events[0]?.ts_exchange, us);
  assert.equal(parseAlpacaFrame(alpacaTrade(time), RECEIVED_US).events[0]?.ts_exchange, us);
});
