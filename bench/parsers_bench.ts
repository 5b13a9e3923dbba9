/**
 * Venue parsers: parse + normalize of the real captured frames in
 * `../shared/fixtures`, each beside its floor — bare `JSON.parse` of the same
 * frames (marked `baseline`). Aim: within 1.3× of the floor.
 *
 * Run with `deno task bench`.
 */

import { parseBinanceFrame } from "../venues/binance/parse.ts";
import { binanceSymbolMap } from "../venues/binance/symbols.ts";
import { parseCoinbaseFrame } from "../venues/coinbase/parse.ts";
import { parseKrakenFrame } from "../venues/kraken/parse.ts";
import { parseAlpacaFrame } from "../venues/alpaca/parse.ts";

const FIXTURES = new URL("../../shared/fixtures/", import.meta.url);

function lines(path: string, keep: (line: string) => boolean = () => true): string[] {
  return Deno.readTextFileSync(new URL(path, FIXTURES)).split("\n").filter((l) => l && keep(l));
}

const binance = lines("binance/ws_combined_session_2021-10-12.raw.jsonl");
const binanceSymbols = binanceSymbolMap(["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"]);
const binanceTrades = lines(
  "binance/docs_web_socket_streams_examples.jsonl",
  (l) => l.includes('"e":"trade"'),
)
  .map((data) => JSON.stringify({ stream: "bnbbtc@trade", data: JSON.parse(data) }));
const binanceTradeSymbols = binanceSymbolMap(["BNB-BTC"]);
// Coinbase: every received frame except the two very large level2 snapshots.
const coinbase = lines(
  "coinbase/advanced_trade_session_2026-08-09.raw.jsonl",
  (l) => l.length < 100_000,
);
const kraken = lines(
  "kraken/v2_book_minagbp_d25_2026-08-16.raw.jsonl",
  (l) => !l.startsWith('{"method":"subscribe","params"'),
);
const alpaca = lines("alpaca/docs_stream_data_v2_messages.jsonl", (l) => /"T":"[tqb]"/.test(l)).map(
  (l) => l.startsWith("[") ? l : `[${l}]`,
);

function floor(frames: string[]) {
  return () => {
    for (const frame of frames) JSON.parse(frame);
  };
}

const now = 1_700_000_000_000_000;
const cases: Array<[string, string[], (frame: string) => unknown]> = [
  ["binance session", binance, (f) => parseBinanceFrame(f, now, binanceSymbols)],
  ["binance trades", binanceTrades, (f) => parseBinanceFrame(f, now, binanceTradeSymbols)],
  ["coinbase session", coinbase, (f) => parseCoinbaseFrame(f, now)],
  ["kraken v2 book", kraken, (f) => parseKrakenFrame(f, now)],
  ["alpaca data", alpaca, (f) => parseAlpacaFrame(f, now)],
];

/** Each case's parse + normalize of all its frames, refusals included. */
function parseAll(frames: string[], parse: (frame: string) => unknown): void {
  for (const frame of frames) {
    try {
      parse(frame);
    } catch {
      // Frames a parser refuses still cost their parse; none are expected here.
    }
  }
}

// Warm-up. `deno bench` warms a case for 10 ms, then times it one iteration at a time when
// those averaged over 10 µs, in batches of 10,000 otherwise. In 10 ms V8 is still compiling a
// parser, so a fast group's parser was timed one by one (paying the timer and every pause on
// its own) while its JSON.parse floor, built in, was timed in batches: the two sides of a group
// were measured differently. Running every case first puts both sides in their steady state.
const WARM_UP_MS = 200;
for (const [, frames, parse] of cases) {
  const json = floor(frames);
  const until = performance.now() + WARM_UP_MS;
  while (performance.now() < until) {
    json();
    parseAll(frames, parse);
  }
}

for (const [name, frames, parse] of cases) {
  Deno.bench(`JSON.parse (floor), ${frames.length} frames`, {
    group: name,
    baseline: true,
  }, floor(frames));
  Deno.bench(`parse + normalize, ${frames.length} frames`, { group: name }, () => {
    parseAll(frames, parse);
  });
}
