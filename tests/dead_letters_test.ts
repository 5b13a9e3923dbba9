/**
 * fitLetter (market/dead_letters.ts) for a validator's letter, which carries
 * an event rather than a frame: too large for NATS, the event is given as
 * its JSON text in `frame`, cut (review 27; before, the feeds' fitLetter only
 * cut frames). The frame case is tested in feed_test.ts.
 */

import assert from "node:assert/strict";
import { decodeJson } from "../adapters/codec.ts";
import { fitLetter } from "../market/dead_letters.ts";
import type { TradeEvent } from "../market/events.ts";
import type { DeadLetter } from "../market/subjects.ts";

Deno.test("fitLetter gives an event too large as its JSON text in frame, cut, then leaves it out", () => {
  const event: TradeEvent = {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: 1,
    ts_local: 1,
    trade_id: "x".repeat(5_000),
    price: "100",
    qty: "1",
    side: "buy",
  };
  const letter: DeadLetter = {
    exchange: "binance",
    stage: "validator",
    reason: "spike",
    detail: "price 100 is far",
    event,
    at_us: 1,
  };
  const fits = (limit: number) => {
    const bytes = fitLetter(letter, limit);
    assert.ok(bytes.length <= limit, `${bytes.length} > ${limit}`);
    return decodeJson<DeadLetter>(bytes);
  };
  assert.deepEqual(fits(10_000), letter);
  const text = JSON.stringify(event);
  const cut = fits(3_000);
  assert.equal(cut.event, undefined);
  assert.ok(text.startsWith(cut.frame!) && cut.frame!.length > 2_500, `${cut.frame!.length}`);
  assert.equal(
    cut.detail,
    `price 100 is far (event too large for NATS: its JSON text in frame, cut to ` +
      `${cut.frame!.length} of ${text.length} characters)`,
  );
  const none = fits(150);
  assert.deepEqual(none, {
    exchange: "binance",
    stage: "validator",
    reason: "spike",
    detail: "price 100 is far (event left out: too large for NATS)",
    at_us: 1,
  });
});
