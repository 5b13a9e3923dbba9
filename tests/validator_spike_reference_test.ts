/**
 * The validator's spike reference (market/validation.ts) with short windows
 * and at cold start (review 27):
 * - a `reference_window_ms` of one second or less, which the config accepts
 *   (≥ 1), kept no reference at all: the one bucket of the window expired as
 *   it closed, so spike detection was silently off, for the defaults as for
 *   an override;
 * - at cold start (every restart of the validator or its thread) the first
 *   second's last accepted trade alone became the reference, so one bad print
 *   there refused every normal trade after it for a whole window (59 s by
 *   default) while the outlier itself was accepted.
 *
 * And the warm-up that fixed the cold start (review 37): it was held to 3
 * closed seconds in the window at every moment, so a symbol trading in fewer
 * than 3 distinct seconds per `reference_window_ms` (a thin stock on IEX, a
 * quiet pair: a trade every 25 s with the default 60 s window) never got a
 * reference, and every spike was accepted, stored and fed to candles. The
 * warm-up is now done once per state (until the window empties).
 */

import assert from "node:assert/strict";
import type { TradeEvent } from "../market/events.ts";
import { Validator } from "../market/validation.ts";

const NOW_US = 1_700_000_000_000_000;
const SECOND_US = 1_000_000;
const MS_US = 1_000;

function trade(fields: Partial<TradeEvent> = {}): TradeEvent {
  return {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: NOW_US,
    ts_local: NOW_US,
    trade_id: "1",
    price: "100",
    qty: "0.5",
    side: "buy",
    ...fields,
  };
}

/** Three seconds of trades at 100, one every 100 ms, then a trade at 1000: its verdict. */
function spikeVerdict(validator: Validator, base: Partial<TradeEvent> = {}): string {
  let id = 0;
  for (let ms = 0; ms < 3_000; ms += 100) {
    const ts = NOW_US + ms * MS_US;
    const result = validator.validate(
      [trade({ ...base, trade_id: String(++id), ts_exchange: ts, ts_local: ts })],
      ts,
    );
    assert.equal(result.accepted.length, 1, `steady trade at ${ms} ms`);
  }
  const ts = NOW_US + 3_050 * MS_US;
  const result = validator.validate(
    [trade({ ...base, trade_id: String(++id), price: "1000", ts_exchange: ts, ts_local: ts })],
    ts,
  );
  return result.rejected[0]?.reason ?? "accepted";
}

Deno.test("a reference window of 1 s or less still refuses a 10x trade as a spike", () => {
  // Control: with a 2 s window the same trade is a spike.
  assert.equal(spikeVerdict(new Validator({ spike_pct: 10, reference_window_ms: 2_000 })), "spike");
  for (const window of [1_000, 500, 1]) {
    assert.equal(
      spikeVerdict(new Validator({ spike_pct: 10, reference_window_ms: window })),
      "spike",
      `reference_window_ms ${window}: a trade at 1000 after 3 s of trades at 100 must be a spike`,
    );
  }
});

Deno.test("a per-symbol reference_window_ms override of 1000 keeps spike detection on", () => {
  const validator = new Validator({
    spike_pct: 10,
    overrides: { "binance/BTC-USDT": { reference_window_ms: 1_000 } },
  });
  assert.equal(validator.thresholds("binance", "BTC-USDT").reference_window_ms, 1_000);
  assert.equal(
    spikeVerdict(validator),
    "spike",
    "binance/BTC-USDT with reference_window_ms 1000: a trade at 1000 after trades at 100",
  );
});

Deno.test("one bad print at cold start does not make the next minute of normal trades spikes", () => {
  const validator = new Validator({ spike_pct: 10, reference_window_ms: 60_000 });
  let id = 0;
  // First second after (re)start: four trades at 100, then one fat-finger print at 100000.
  const first = validator.validate(
    ["100", "100", "100", "100", "100000"].map((price) =>
      trade({ trade_id: String(++id), price, ts_exchange: NOW_US + 100_000 * id })
    ),
    NOW_US + SECOND_US,
  );
  assert.equal(first.accepted.length, 5, "cold start accepts everything (documented)");
  // Then the market goes on trading at 100, one trade a second for 10 s.
  const refused: string[] = [];
  for (let s = 1; s <= 10; s++) {
    const ts = NOW_US + s * SECOND_US;
    const result = validator.validate([trade({ trade_id: String(++id), ts_exchange: ts })], ts);
    for (const rejection of result.rejected) {
      refused.push(`second ${s}: ${rejection.reason} (${rejection.detail})`);
    }
  }
  assert.deepEqual(
    refused,
    [],
    `normal trades at 100 refused; reference is ${validator.reference("binance", "BTC-USDT")}`,
  );
  // The reference the warm-up built is in force: a print at 100000 now is a spike.
  assert.equal(validator.reference("binance", "BTC-USDT"), 100);
  const ts = NOW_US + 11 * SECOND_US;
  const spike = validator.validate(
    [trade({ trade_id: String(++id), price: "100000", ts_exchange: ts })],
    ts,
  );
  assert.equal(spike.rejected[0]?.reason, "spike");
});

Deno.test("a lone bad print after a gap longer than the window refuses nothing", () => {
  const validator = new Validator({ spike_pct: 10, reference_window_ms: 60_000 });
  let id = 0;
  const at = (price: string, s: number) => {
    const ts = NOW_US + s * SECOND_US;
    return validator.validate([trade({ trade_id: String(++id), price, ts_exchange: ts })], ts)
      .rejected[0]?.reason ?? "accepted";
  };
  for (let s = 0; s < 10; s++) assert.equal(at("100", s), "accepted", `second ${s}`);
  assert.equal(validator.reference("binance", "BTC-USDT"), 100);
  // Two minutes without a trade: the window empties. The first print after it is bad, alone.
  assert.equal(at("5", 130), "accepted");
  const verdicts = [131, 132, 133, 134, 135].map((s) => at("100", s));
  assert.deepEqual(verdicts, ["accepted", "accepted", "accepted", "accepted", "accepted"]);
  assert.equal(validator.reference("binance", "BTC-USDT"), 100);
});

Deno.test("a thin symbol (a trade every 25 s, 60 s window) still has its 10x prints refused as spikes", () => {
  const validator = new Validator({ spike_pct: 10, reference_window_ms: 60_000 });
  let id = 0;
  const at = (price: string, ts: number) =>
    validator.validate([
      trade({
        exchange: "alpaca",
        symbol: "THIN",
        venue_symbol: "THIN",
        trade_id: String(++id),
        price,
        ts_exchange: ts,
        ts_local: ts,
      }),
    ], ts).rejected[0]?.reason ?? "accepted";
  // Ten minutes of steady trades at 100, one every 25 s: all accepted.
  let ts = NOW_US;
  for (let i = 0; i < 24; i++) {
    assert.equal(at("100", ts), "accepted", `steady trade ${i}`);
    ts += 25 * SECOND_US;
  }
  assert.equal(
    at("1000", ts),
    "spike",
    `a 10x print after ten minutes at 100 was accepted (reference: ${
      validator.reference("alpaca", "THIN")
    })`,
  );
  assert.equal(validator.reference("alpaca", "THIN"), 100);
});
