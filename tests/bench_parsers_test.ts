/**
 * What bench/parsers_bench.ts times as "parse + normalize". Review 50: for
 * Kraken's and most of Binance's frames (book frames) it timed the parser
 * alone, which only turns them into controls — the book and top events (and
 * Kraken's checksum) come from the book sync the feed runs, which the bench
 * never called — and two thirds of the Kraken frames were heartbeats. Now
 * each pass runs the controls through fresh book syncs, as the feed does.
 */
import assert from "node:assert/strict";
import { PARSER_CASES, runPass } from "../bench/parsers_bench.ts";

function parserCase(name: string) {
  const found = PARSER_CASES.find((c) => c.name === name);
  assert.ok(found !== undefined, `no case ${name}`);
  return found;
}

Deno.test("parsers bench: every case's pass makes events, the same each pass", () => {
  for (const c of PARSER_CASES) {
    const events = runPass(c);
    assert.ok(events > 0, `${c.name}: ${c.frames.length} frames made no events`);
    assert.equal(runPass(c), events, `${c.name}: a second pass made other events`);
  }
});

Deno.test("parsers bench kraken v2 book: the book sync makes an event per book frame", () => {
  const kraken = parserCase("kraken v2 book");
  assert.ok(kraken.frames.every((f) => !f.includes('"channel":"heartbeat"')));
  const bookFrames = kraken.frames.filter((f) => /^\{"channel":"book"/.test(f)).length;
  assert.equal(bookFrames, 30);
  // One snapshot and 29 checksummed updates, each a book event, most with a top event too.
  assert.ok(runPass(kraken) > bookFrames, `${runPass(kraken)} events`);
  assert.equal(runPass(parserCase("kraken v2 heartbeats")), 60);
});

Deno.test("parsers bench binance session: most frames, depth diffs included, make events", () => {
  const binance = parserCase("binance session");
  assert.equal(binance.frames.length, 265);
  // 177 depth diffs (a few dropped as older than their symbol's snapshot), 84 tops, 2 trades.
  assert.ok(runPass(binance) > 250, `${runPass(binance)} events`);
});

Deno.test("parsers bench: the trade cases time more than one trade frame", () => {
  const trades = parserCase("binance trades");
  assert.ok(trades.tradeFrames > 1, `${trades.tradeFrames} trade frames`);
  assert.equal(runPass(trades), trades.frames.length);
  assert.ok(parserCase("coinbase session").tradeFrames > 1);
  assert.ok(parserCase("binance session").tradeFrames > 1);
});
