/**
 * Pure tests of the market-data validation rules (no services), and at the
 * end the figures of the validator's thread across its restarts (a private
 * nats-server).
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { validatorWorker } from "../actors/validator_worker.ts";
import { encodeJson } from "../adapters/codec.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { MarketStatus } from "../market/status.ts";
import { waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import type {
  BarEvent,
  BookEvent,
  MarketEvent,
  QuoteEvent,
  TopEvent,
  TradeEvent,
} from "../market/events.ts";
import {
  DEFAULT_DUPLICATE_WINDOW,
  DEFAULT_MAX_FUTURE_MS,
  DEFAULT_MAX_LAG_MS,
  DEFAULT_REFERENCE_WINDOW_MS,
  DEFAULT_SPIKE_PCT,
  intervalUs,
  parseMarketSubject,
  REFERENCE_MIN_BUCKETS,
  REJECT_REASONS,
  type RejectReason,
  schemaProblem,
  type ValidationResult,
  Validator,
} from "../market/validation.ts";

const NOW_US = 1_700_000_000_000_000;
const SECOND_US = 1_000_000;

function trade(fields: Partial<TradeEvent> = {}): TradeEvent {
  return {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: NOW_US,
    ts_local: NOW_US,
    trade_id: "1",
    price: "100.00",
    qty: "0.5",
    side: "buy",
    ...fields,
  };
}

function book(fields: Partial<BookEvent> = {}): BookEvent {
  return {
    kind: "book",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: NOW_US,
    ts_local: NOW_US,
    action: "delta",
    bids: [["99.5", "1"]],
    asks: [["100.5", "2"]],
    sequence: 10,
    ...fields,
  };
}

function top(fields: Partial<TopEvent> = {}): TopEvent {
  return {
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: NOW_US,
    ts_local: NOW_US,
    bid_price: "99.9",
    bid_qty: "1",
    ask_price: "100.1",
    ask_qty: "1",
    ...fields,
  };
}

function quote(fields: Partial<QuoteEvent> = {}): QuoteEvent {
  return {
    kind: "quote",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: NOW_US,
    ts_local: NOW_US,
    bid_price: "189.50",
    bid_qty: "3",
    ask_price: "189.60",
    ask_qty: "1",
    bid_exchange: "V",
    ask_exchange: null,
    ...fields,
  };
}

function bar(fields: Partial<BarEvent> = {}): BarEvent {
  return {
    kind: "bar",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: NOW_US,
    ts_local: NOW_US,
    interval: "1m",
    start: NOW_US - 60 * SECOND_US,
    open: "189.5",
    high: "190",
    low: "189",
    close: "189.8",
    volume: "1200",
    trades: 42,
    vwap: "189.6",
    ...fields,
  };
}

/** The reasons of a result's rejections, in order. */
function reasons(result: ValidationResult): string[] {
  return result.rejected.map((rejection) => rejection.reason);
}

/** Validates one input and returns its reason, or "accepted". */
function verdict(validator: Validator, input: unknown, nowUs = NOW_US): RejectReason | "accepted" {
  const result = validator.validate([input], nowUs);
  assert.equal(result.accepted.length + result.rejected.length, 1);
  return result.rejected[0]?.reason ?? "accepted";
}

/**
 * Seeds a reference of `price` for the pair of `base`: an accepted trade in each of the
 * REFERENCE_MIN_BUCKETS seconds of the warm-up, the last 2 s before NOW_US; a trade in a later
 * second closes it, and the reference is then in force.
 */
function seed(validator: Validator, price: string, base: Partial<TradeEvent> = {}): void {
  for (let i = REFERENCE_MIN_BUCKETS; i >= 1; i--) {
    const ts_exchange = NOW_US - (i + 1) * SECOND_US;
    const result = validator.validate([
      trade({ ...base, trade_id: `seed-${price}-${i}`, price, ts_exchange }),
    ], NOW_US);
    assert.equal(result.accepted.length, 1);
  }
}

Deno.test("validation defaults match config/default.yaml", () => {
  const d = DEFAULT_CONFIG.validator;
  assert.equal(DEFAULT_SPIKE_PCT, d.spike_pct);
  assert.equal(DEFAULT_REFERENCE_WINDOW_MS, d.reference_window_ms);
  assert.equal(DEFAULT_MAX_FUTURE_MS, d.max_future_ms);
  assert.equal(DEFAULT_MAX_LAG_MS, d.max_lag_ms);
  assert.equal(DEFAULT_DUPLICATE_WINDOW, d.duplicate_window);
});

Deno.test("validator accepts a well-formed event of every kind", () => {
  const validator = new Validator();
  const events: MarketEvent[] = [
    trade(),
    book(),
    book({ action: "snapshot", sequence: null }),
    book({ bids: [], asks: [] }),
    top(),
    quote(),
    bar(),
    bar({ trades: null, vwap: null }),
  ];
  for (const event of events) assert.equal(verdict(validator, event), "accepted", event.kind);
});

Deno.test("validator keeps input order and puts each input in exactly one list", () => {
  const validator = new Validator();
  const batch = [trade({ trade_id: "a" }), null, trade({ trade_id: "b", price: "0" }), trade()];
  const result = validator.validate(batch, NOW_US);
  assert.deepEqual(result.accepted.map((e) => (e as TradeEvent).trade_id), ["a", "1"]);
  assert.deepEqual(reasons(result), ["schema", "non_positive"]);
  assert.equal(result.rejected[0]!.event, null);
  assert.equal(result.accepted[0], batch[0]);
});

Deno.test("validator refuses a batch that is not a non-empty array as one schema rejection", () => {
  const validator = new Validator();
  for (const input of [null, undefined, 42, "text", true, {}, trade(), []]) {
    const result = validator.validate(input, NOW_US);
    assert.deepEqual(result.accepted, []);
    assert.deepEqual(reasons(result), ["schema"], JSON.stringify(input));
    assert.equal(result.rejected[0]!.event, input);
  }
});

Deno.test("validator refuses malformed events of every sort with schema and never throws", () => {
  const validator = new Validator();
  const t = trade() as unknown as Record<string, unknown>;
  const without = (event: object, key: string) => {
    const copy = { ...event } as Record<string, unknown>;
    delete copy[key];
    return copy;
  };
  const malformed: unknown[] = [
    null,
    0,
    1.5,
    "trade",
    true,
    [],
    [trade()],
    {},
    { ...t, kind: "tick" },
    { ...t, kind: null },
    { ...t, exchange: "ftx" },
    { ...t, exchange: 1 },
    { ...t, symbol: "" },
    { ...t, symbol: 5 },
    { ...t, venue_symbol: null },
    { ...t, ts_exchange: "1700000000000000" },
    { ...t, ts_exchange: 1.5 },
    { ...t, ts_exchange: -1 },
    { ...t, ts_exchange: Number.MAX_SAFE_INTEGER + 2 },
    { ...t, ts_local: null },
    { ...t, trade_id: 17 },
    { ...t, trade_id: "" },
    { ...t, price: 100 },
    { ...t, price: "1e5" },
    { ...t, price: " 100" },
    { ...t, price: "" },
    { ...t, price: "-" },
    { ...t, price: "1,5" },
    { ...t, price: ".5" },
    { ...t, qty: null },
    { ...t, side: "long" },
    ...["kind", "exchange", "symbol", "venue_symbol", "ts_exchange", "ts_local", "trade_id"].map(
      (key) => without(t, key),
    ),
    ...["price", "qty", "side"].map((key) => without(t, key)),
    { ...book(), action: "update" },
    { ...book(), bids: null },
    { ...book(), asks: {} },
    { ...book(), bids: [["1"]] },
    { ...book(), bids: [["1", "2", "3"]] },
    { ...book(), bids: [[1, 2]] },
    { ...book(), asks: [null] },
    { ...book(), asks: ["100", "1"] },
    { ...book(), sequence: "10" },
    { ...book(), sequence: -1 },
    without(book(), "sequence"),
    { ...top(), bid_price: null },
    { ...top(), ask_qty: 1 },
    without(top(), "ask_price"),
    { ...quote(), bid_exchange: 1 },
    without(quote(), "ask_exchange"),
    { ...bar(), interval: "" },
    { ...bar(), start: "0" },
    { ...bar(), high: 190 },
    { ...bar(), volume: undefined },
    { ...bar(), trades: 1.5 },
    { ...bar(), trades: "4" },
    { ...bar(), vwap: 189 },
    without(bar(), "vwap"),
  ];
  for (const input of malformed) {
    const result = validator.validate([input], NOW_US);
    assert.deepEqual(result.accepted, [], JSON.stringify(input));
    assert.deepEqual(reasons(result), ["schema"], JSON.stringify(input));
    assert.equal(typeof result.rejected[0]!.detail, "string");
    assert.notEqual(schemaProblem(input), null);
  }
});

Deno.test("schemaProblem says what is wrong", () => {
  assert.equal(schemaProblem(null), "event is not an object");
  assert.equal(
    schemaProblem({ ...trade(), exchange: "ftx" }),
    'exchange "ftx" is not a known exchange',
  );
  assert.equal(schemaProblem({ ...trade(), price: "1e5" }), 'price "1e5" is not a decimal string');
  assert.equal(schemaProblem(trade()), null);
});

Deno.test("validator never throws on random mutations of valid events", () => {
  const validator = new Validator({ duplicate_window: 50 });
  const values: unknown[] = [
    null,
    undefined,
    0,
    -1,
    1.5,
    NaN,
    "",
    "0",
    "-1",
    "abc",
    "1e3",
    [],
    [["1", "1"]],
    [[1, 1]],
    {},
    true,
    NOW_US,
    NOW_US + 3_600 * SECOND_US,
    "snapshot",
    "delta",
    "trade",
    "binance",
  ];
  const bases: MarketEvent[] = [
    trade(),
    book(),
    book({ action: "snapshot" }),
    top(),
    quote(),
    bar(),
  ];
  let seedValue = 12345;
  const random = (n: number) => {
    seedValue = (seedValue * 1103515245 + 12345) % 2147483648;
    return seedValue % n;
  };
  for (let i = 0; i < 5_000; i++) {
    const base = { ...bases[random(bases.length)]! } as Record<string, unknown>;
    const keys = Object.keys(base);
    for (let m = random(3); m >= 0; m--) {
      const key = keys[random(keys.length)]!;
      if (random(5) === 0) delete base[key];
      else base[key] = values[random(values.length)];
    }
    const batch = random(10) === 0 ? values[random(values.length)] : [base, base];
    const result = validator.validate(batch, NOW_US);
    const inputs = Array.isArray(batch) && batch.length > 0 ? batch.length : 1;
    assert.equal(result.accepted.length + result.rejected.length, inputs);
    for (const rejection of result.rejected) assert.ok(REJECT_REASONS.includes(rejection.reason));
  }
});

Deno.test("validator passes extra fields through untouched", () => {
  const event = { ...trade(), note: "extra" };
  const result = new Validator().validate([event], NOW_US);
  assert.equal(result.accepted[0], event);
});

Deno.test("validator refuses zero and negative trade prices and sizes as non_positive", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, trade({ trade_id: "a", price: "0" })), "non_positive");
  assert.equal(verdict(validator, trade({ trade_id: "b", price: "0.000" })), "non_positive");
  assert.equal(verdict(validator, trade({ trade_id: "c", price: "-100" })), "non_positive");
  assert.equal(verdict(validator, trade({ trade_id: "d", qty: "0" })), "non_positive");
  assert.equal(verdict(validator, trade({ trade_id: "e", qty: "-0.5" })), "non_positive");
  assert.equal(verdict(validator, trade({ trade_id: "f", price: "0.00000001" })), "accepted");
});

Deno.test("validator allows size 0 in book deltas but not in snapshots", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, book({ sequence: 1, bids: [["99", "0"]] })), "accepted");
  assert.equal(verdict(validator, book({ sequence: 2, bids: [["0", "1"]] })), "non_positive");
  assert.equal(verdict(validator, book({ sequence: 3, asks: [["101", "-1"]] })), "non_positive");
  assert.equal(
    verdict(validator, book({ action: "snapshot", bids: [["99", "1"], ["98", "0"]] })),
    "non_positive",
  );
  assert.equal(
    verdict(validator, book({ action: "snapshot", asks: [["-1", "1"]] })),
    "non_positive",
  );
});

Deno.test("validator accepts a zero quote side but refuses a negative one", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, quote({ bid_price: "0", bid_qty: "0" })), "accepted");
  assert.equal(verdict(validator, quote({ ask_price: "0", ask_qty: "0" })), "accepted");
  assert.equal(verdict(validator, quote({ bid_price: "0", ask_price: "0" })), "accepted");
  assert.equal(verdict(validator, quote({ bid_qty: "0" })), "accepted");
  assert.equal(verdict(validator, quote({ bid_price: "-1" })), "non_positive");
  assert.equal(verdict(validator, top({ ask_qty: "-2" })), "non_positive");
});

Deno.test("validator refuses non-positive bar prices and negative volume", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, bar({ low: "0" })), "non_positive");
  assert.equal(verdict(validator, bar({ volume: "-1" })), "non_positive");
  assert.equal(verdict(validator, bar({ vwap: "-1" })), "non_positive");
  assert.equal(verdict(validator, bar({ volume: "0", trades: 0, vwap: "0" })), "accepted");
});

Deno.test("validator refuses bars whose low and high do not bound open and close", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, bar({ high: "188" })), "inconsistent_bar");
  assert.equal(verdict(validator, bar({ low: "189.9" })), "inconsistent_bar");
  assert.equal(verdict(validator, bar({ close: "190.01" })), "inconsistent_bar");
  assert.equal(
    verdict(validator, bar({ open: "189", high: "189.0", low: "189", close: "189" })),
    "accepted",
  );
});

Deno.test("validator refuses stale and future exchange times at the configured limits", () => {
  const validator = new Validator({ max_lag_ms: 1_000, max_future_ms: 200 });
  const at = (ts: number, id: string) =>
    verdict(validator, trade({ ts_exchange: ts, trade_id: id }));
  assert.equal(at(NOW_US - 1_000_000, "a"), "accepted");
  assert.equal(at(NOW_US - 1_000_001, "b"), "stale");
  assert.equal(at(NOW_US + 200_000, "c"), "accepted");
  assert.equal(at(NOW_US + 200_001, "d"), "future");
  assert.equal(verdict(validator, top({ ts_exchange: NOW_US + SECOND_US })), "future");
  assert.equal(verdict(validator, book({ ts_exchange: 0 })), "stale");
  const result = validator.validate([trade({ ts_exchange: NOW_US - 5 * SECOND_US })], NOW_US);
  assert.match(result.rejected[0]!.detail, /5000 ms behind now \(max_lag_ms 1000\)/);
});

Deno.test("a bar is stale only once its end is: Alpaca's running daily bar, stamped with its start, passes", () => {
  const validator = new Validator({ max_lag_ms: 120_000 });
  const HOUR_US = 3_600 * SECOND_US;
  // Alpaca: ts_exchange is the start. The day started 10 h ago and is still running.
  const daily = bar({
    interval: "1d",
    start: NOW_US - 10 * HOUR_US,
    ts_exchange: NOW_US - 10 * HOUR_US,
  });
  assert.equal(verdict(validator, daily), "accepted");
  // A minute bar sent 5 s after it closed, and one that closed 2 min 1 s ago.
  const minute = (endedAgoUs: number) =>
    bar({
      start: NOW_US - endedAgoUs - 60 * SECOND_US,
      ts_exchange: NOW_US - endedAgoUs - 60 * SECOND_US,
    });
  assert.equal(verdict(validator, minute(5 * SECOND_US)), "accepted");
  const late = validator.validate([minute(121 * SECOND_US)], NOW_US);
  assert.deepEqual(reasons(late), ["stale"]);
  assert.match(late.rejected[0]!.detail, /^bar ending at \d+ is 121000 ms behind now/);
  // Yesterday's daily bar is stale; an unknown interval counts from ts_exchange alone.
  assert.equal(
    verdict(
      validator,
      bar({ interval: "1d", start: NOW_US - 25 * HOUR_US, ts_exchange: NOW_US - 25 * HOUR_US }),
    ),
    "stale",
  );
  assert.equal(
    verdict(
      validator,
      bar({
        interval: "fortnight",
        start: NOW_US - 10 * HOUR_US,
        ts_exchange: NOW_US - 10 * HOUR_US,
      }),
    ),
    "stale",
  );
});

Deno.test("a book snapshot or top marked as_of_receipt (the book's last change) is held to when it was received", () => {
  // Kraken stamps a book snapshot with the time the book last changed: 3 minutes ago on a quiet
  // pair. The snapshot and the top made from it were received now, and carry the mark.
  const validator = new Validator({ max_lag_ms: 120_000 });
  const lastChange = NOW_US - 180 * SECOND_US;
  const mark = { as_of_receipt: true } as const;
  const snapshot = {
    ...book({ exchange: "kraken", action: "snapshot", sequence: null, ts_exchange: lastChange }),
    ...mark,
  };
  assert.equal(verdict(validator, snapshot), "accepted");
  assert.equal(
    verdict(validator, { ...top({ exchange: "kraken", ts_exchange: lastChange }), ...mark }),
    "accepted",
  );
  // A delta, a trade and a quote still go by their own time.
  assert.equal(
    verdict(validator, book({ exchange: "kraken", sequence: null, ts_exchange: lastChange })),
    "stale",
  );
  assert.equal(verdict(validator, trade({ ts_exchange: lastChange })), "stale");
  assert.equal(verdict(validator, quote({ ts_exchange: lastChange })), "stale");
  // Received long ago (a backlog, an old capture): stale, and the detail says by which time.
  const late = validator.validate([
    {
      ...book({ action: "snapshot", ts_exchange: lastChange, ts_local: NOW_US - 121 * SECOND_US }),
      ...mark,
    },
    { ...top({ ts_exchange: lastChange, ts_local: NOW_US - 121 * SECOND_US }), ...mark },
  ], NOW_US);
  assert.deepEqual(reasons(late), ["stale", "stale"]);
  assert.match(late.rejected[0]!.detail, /^ts_local \d+ is 121000 ms behind now/);
});

Deno.test("a top is held to its own time: a ticker 10 minutes old received now is stale", () => {
  // 33c114b held every top to max(ts_exchange, ts_local); ts_local is the receive time, so no top
  // was ever stale, and the latest-price cache (freshness by ts_local) served this one as fresh.
  const validator = new Validator({ max_lag_ms: 120_000 });
  const old = top({
    exchange: "coinbase",
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    ts_exchange: NOW_US - 600 * SECOND_US,
    ts_local: NOW_US,
  });
  const result = validator.validate([old], NOW_US);
  assert.deepEqual(reasons(result), ["stale"]);
  assert.match(result.rejected[0]!.detail, /^ts_exchange \d+ is 600000 ms behind now/);
  // A book snapshot without the mark likewise (a Coinbase snapshot is stamped when sent).
  assert.equal(
    verdict(
      validator,
      book({ exchange: "coinbase", action: "snapshot", ts_exchange: NOW_US - 600 * SECOND_US }),
    ),
    "stale",
  );
});

Deno.test("a Kraken top made from a stale book update is as stale as the update", () => {
  const validator = new Validator({ max_lag_ms: 120_000 });
  const updateTs = NOW_US - 300 * SECOND_US; // an update delivered 5 minutes late
  const kraken = { exchange: "kraken", symbol: "BTC-USD", venue_symbol: "BTC/USD" } as const;
  const delta = book({ ...kraken, ts_exchange: updateTs, sequence: null });
  const topOfDelta = top({ ...kraken, ts_exchange: updateTs });
  const result = validator.validate([delta, topOfDelta], NOW_US);
  assert.deepEqual(
    result.rejected.map((r) => `${(r.event as MarketEvent).kind}:${r.reason}`),
    ["book:stale", "top:stale"],
  );
});

Deno.test("as_of_receipt is allowed only as true on a book snapshot or a top", () => {
  const snapshot = book({ action: "snapshot" });
  assert.equal(schemaProblem({ ...snapshot, as_of_receipt: true }), null);
  assert.equal(schemaProblem({ ...top(), as_of_receipt: true }), null);
  assert.equal(
    schemaProblem({ ...book(), as_of_receipt: true }),
    "as_of_receipt is only allowed on a book snapshot or a top",
  );
  assert.equal(schemaProblem({ ...top(), as_of_receipt: 1 }), "as_of_receipt 1 is not true");
  assert.equal(
    schemaProblem({ ...snapshot, as_of_receipt: "yes" }),
    'as_of_receipt "yes" is not true',
  );
  // Elsewhere it is an extra field like any other.
  assert.equal(schemaProblem({ ...trade(), as_of_receipt: true }), null);
  assert.equal(
    verdict(
      new Validator({ max_lag_ms: 1_000 }),
      trade({ ts_exchange: NOW_US - 5 * SECOND_US, as_of_receipt: true } as Partial<TradeEvent>),
    ),
    "stale",
  );
});

/** The parts of one snapshot, as the Coinbase session splits a large one. */
function parts(levels: Array<[bids: [string, string][], asks: [string, string][]]>, fields = {}) {
  return levels.map(([bids, asks], part) =>
    ({
      ...book({ exchange: "coinbase", action: "snapshot", sequence: 7, bids, asks, ...fields }),
      part,
      parts: levels.length,
    }) as BookEvent
  );
}

Deno.test("the parts of a split snapshot are accepted as one snapshot, and deltas follow them", () => {
  const validator = new Validator();
  const snapshot = parts([
    [[["100", "1"], ["99", "1"]], [["101", "1"], ["102", "1"]]],
    [[["98", "1"], ["97", "1"]], [["103", "1"]]],
    [[["96", "1"]], []],
  ]);
  const result = validator.validate(snapshot, NOW_US);
  assert.deepEqual(reasons(result), []);
  assert.equal(result.accepted.length, 3);
  // The sequence counts from the snapshot's: the next frame's delta passes, an older one not.
  assert.equal(verdict(validator, book({ exchange: "coinbase", sequence: 8 })), "accepted");
  assert.equal(verdict(validator, book({ exchange: "coinbase", sequence: 7 })), "out_of_order");
  // A part after a delta, or of another snapshot, continues nothing.
  assert.equal(verdict(validator, snapshot[1]), "out_of_order");
});

Deno.test("a snapshot part that does not follow its part before is refused, and so are the rest", () => {
  const levels: Array<[[string, string][], [string, string][]]> = [
    [[["100", "1"]], [["101", "1"]]],
    [[["99", "1"]], [["102", "1"]]],
    [[["98", "1"]], [["103", "1"]]],
  ];
  // Part 1 lost: part 2 is out of order.
  const skipped = new Validator().validate(parts(levels).filter((_, i) => i !== 1), NOW_US);
  assert.deepEqual(reasons(skipped), ["out_of_order"]);
  assert.match(skipped.rejected[0]!.detail, /^snapshot part 2 of 3 does not follow part 1/);
  // A later part with another sequence or time belongs to another snapshot.
  const [first, second] = parts(levels);
  for (const other of [{ sequence: 8 }, { ts_exchange: NOW_US + 1 }, { ts_local: NOW_US + 1 }]) {
    const result = new Validator().validate([first, { ...second, ...other }], NOW_US);
    assert.deepEqual(reasons(result), ["out_of_order"], JSON.stringify(other));
  }
  // Part 0 refused: the deeper parts are refused for the same reason, so none is stored alone.
  const crossed = parts([[[["101", "1"]], [["100", "1"]]], [[["99", "1"]], [["102", "1"]]]]);
  const refused = new Validator().validate(crossed, NOW_US);
  assert.deepEqual(reasons(refused), ["crossed_book", "crossed_book"]);
  assert.match(refused.rejected[1]!.detail, /earlier part was refused \(crossed_book\)/);
  // A middle part refused: what is accepted is the best levels, the parts before it.
  const zero = parts([
    [[["100", "1"]], [["101", "1"]]],
    [[["99", "0"]], [["102", "1"]]],
    [[["98", "1"]], [["103", "1"]]],
  ]);
  const middle = new Validator().validate(zero, NOW_US);
  assert.deepEqual(reasons(middle), ["non_positive", "non_positive"]);
  assert.deepEqual(middle.accepted, [zero[0]]);
});

Deno.test("a snapshot part is checked for crossing against the parts before it", () => {
  // Each part alone is not crossed, but part 1's bid 101.5 is above part 0's ask 101.
  const snapshot = parts([
    [[["100", "1"]], [["101", "1"]]],
    [[["101.5", "1"]], [["102", "1"]]],
  ]);
  const result = new Validator().validate(snapshot, NOW_US);
  assert.deepEqual(reasons(result), ["crossed_book"]);
  assert.equal(result.rejected[0]!.detail, "best bid 101.5 is not below best ask 101");
  // Equal as floats, apart as decimals: decided exactly across parts too.
  const close = parts([
    [[["1.00000000000000000001", "1"]], []],
    [[], [["1.00000000000000000002", "1"]]],
  ]);
  assert.deepEqual(reasons(new Validator().validate(close, NOW_US)), []);
});

Deno.test("part and parts must number a snapshot's parts", () => {
  const snapshot = book({ action: "snapshot" });
  assert.equal(schemaProblem({ ...snapshot, part: 1, parts: 3 }), null);
  assert.equal(
    schemaProblem({ ...snapshot, part: 3, parts: 3 }),
    "part 3 is not an integer from 0 to 2",
  );
  assert.equal(schemaProblem({ ...snapshot, part: 0 }), "parts undefined is not an integer >= 2");
  assert.equal(schemaProblem({ ...snapshot, part: 0, parts: 1 }), "parts 1 is not an integer >= 2");
  assert.equal(
    schemaProblem({ ...snapshot, part: "0", parts: 2 }),
    'part "0" is not an integer from 0 to 1',
  );
  assert.equal(
    schemaProblem({ ...book(), part: 0, parts: 2 }),
    "part and parts are only allowed on a snapshot",
  );
});

Deno.test("intervalUs reads the venues' bar interval names", () => {
  assert.equal(intervalUs("1s"), SECOND_US);
  assert.equal(intervalUs("5m"), 300 * SECOND_US);
  assert.equal(intervalUs("4h"), 14_400 * SECOND_US);
  assert.equal(intervalUs("1d"), 86_400 * SECOND_US);
  assert.equal(intervalUs("1w"), 604_800 * SECOND_US);
  assert.equal(intervalUs("1M"), 31 * 86_400 * SECOND_US);
  for (const name of ["", "m", "1", "1y", "-1m", "1.5h", "12345m"]) {
    assert.equal(intervalUs(name), 0, name);
  }
});

Deno.test("validator refuses book deltas whose sequence does not increase", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, book({ sequence: 10 })), "accepted");
  assert.equal(verdict(validator, book({ sequence: 10 })), "out_of_order");
  assert.equal(verdict(validator, book({ sequence: 9 })), "out_of_order");
  assert.equal(verdict(validator, book({ sequence: 11 })), "accepted");
  assert.equal(
    verdict(validator, book({ sequence: 20 })),
    "accepted",
    "gaps are the feed's concern",
  );
  assert.equal(verdict(validator, book({ sequence: null })), "accepted", "null is not checked");
  assert.equal(verdict(validator, book({ sequence: 15 })), "out_of_order");
  assert.equal(verdict(validator, book({ sequence: 21 })), "accepted", "a refused delta leaves 20");
  // Sequences are per (exchange, symbol).
  assert.equal(verdict(validator, book({ symbol: "ETH-USDT", sequence: 1 })), "accepted");
  assert.equal(verdict(validator, book({ exchange: "coinbase", sequence: 1 })), "accepted");
});

Deno.test("validator restarts the sequence count at each snapshot", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, book({ sequence: 500 })), "accepted");
  assert.equal(verdict(validator, book({ action: "snapshot", sequence: 3 })), "accepted");
  assert.equal(verdict(validator, book({ sequence: 4 })), "accepted");
  assert.equal(verdict(validator, book({ action: "snapshot", sequence: null })), "accepted");
  assert.equal(verdict(validator, book({ sequence: 1 })), "accepted");
  assert.equal(verdict(validator, book({ sequence: 1 })), "out_of_order");
  // Trades do not have sequences and may interleave slightly out of order.
  assert.equal(verdict(validator, trade({ trade_id: "9", ts_exchange: NOW_US })), "accepted");
  assert.equal(verdict(validator, trade({ trade_id: "8", ts_exchange: NOW_US - 500 })), "accepted");
});

Deno.test("validator refuses crossed and locked tops and quotes, decided exactly", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, top({ bid_price: "100.1", ask_price: "100.1" })), "crossed_book");
  assert.equal(
    verdict(validator, top({ bid_price: "100.10", ask_price: "100.1" })),
    "crossed_book",
  );
  assert.equal(verdict(validator, top({ bid_price: "100.2", ask_price: "100.1" })), "crossed_book");
  assert.equal(verdict(validator, quote({ bid_price: "189.7" })), "crossed_book");
  // Equal as floats, different as decimals.
  const low = "100.00000000000000000001";
  const high = "100.00000000000000000002";
  assert.equal(Number(low), Number(high));
  assert.equal(verdict(validator, top({ bid_price: low, ask_price: high })), "accepted");
  assert.equal(verdict(validator, top({ bid_price: high, ask_price: low })), "crossed_book");
  // One side missing is never crossed.
  assert.equal(verdict(validator, quote({ bid_price: "200", ask_price: "0" })), "accepted");
});

Deno.test("validator refuses snapshots whose best bid is not below the best ask", () => {
  const validator = new Validator();
  const snapshot = (bids: [string, string][], asks: [string, string][]) =>
    verdict(validator, book({ action: "snapshot", bids, asks, sequence: null }));
  assert.equal(snapshot([["99", "1"], ["98", "1"]], [["100", "1"], ["101", "1"]]), "accepted");
  assert.equal(snapshot([["100", "1"]], [["100.0", "1"]]), "crossed_book");
  // The best level is found even when levels are not best first.
  assert.equal(
    snapshot([["98", "1"], ["100.5", "1"]], [["101", "1"], ["100", "1"]]),
    "crossed_book",
  );
  assert.equal(
    snapshot([["1.00000000000000000001", "1"]], [["1.00000000000000000002", "1"]]),
    "accepted",
  );
  assert.equal(snapshot([], [["100", "1"]]), "accepted");
  // Deltas are not checked for crossing: no book is kept.
  assert.equal(verdict(validator, book({ bids: [["200", "1"]], sequence: 1 })), "accepted");
});

Deno.test("validator refuses a trade id seen within the duplicate window", () => {
  const validator = new Validator();
  const result = validator.validate([trade({ trade_id: "7" }), trade({ trade_id: "7" })], NOW_US);
  assert.deepEqual(reasons(result), ["duplicate"]);
  assert.equal(verdict(validator, trade({ trade_id: "7" })), "duplicate");
  assert.equal(verdict(validator, trade({ trade_id: "7", symbol: "ETH-USDT" })), "accepted");
  assert.equal(verdict(validator, trade({ trade_id: "7", exchange: "kraken" })), "accepted");
});

Deno.test("validator remembers only the last duplicate_window trade ids", () => {
  const validator = new Validator({ duplicate_window: 3 });
  for (const id of ["a", "b", "c", "d"]) {
    assert.equal(verdict(validator, trade({ trade_id: id })), "accepted");
  }
  assert.equal(
    verdict(validator, trade({ trade_id: "a" })),
    "accepted",
    "a fell out of the window",
  );
  // The window now holds c, d, a.
  assert.equal(verdict(validator, trade({ trade_id: "d" })), "duplicate");
  assert.equal(verdict(validator, trade({ trade_id: "a" })), "duplicate");
  assert.equal(verdict(validator, trade({ trade_id: "b" })), "accepted", "b pushes c out");
  assert.equal(verdict(validator, trade({ trade_id: "c" })), "accepted");
  assert.equal(verdict(validator, trade({ trade_id: "b" })), "duplicate");
});

Deno.test("validator does not remember the ids of refused trades", () => {
  const validator = new Validator();
  assert.equal(verdict(validator, trade({ trade_id: "x", qty: "0" })), "non_positive");
  assert.equal(verdict(validator, trade({ trade_id: "x" })), "accepted");
});

Deno.test("validator accepts anything at cold start and seeds the reference over its warm-up", () => {
  const validator = new Validator({ spike_pct: 10 });
  const at = (price: string, id: string, s: number) =>
    verdict(
      validator,
      trade({ price, trade_id: id, ts_exchange: NOW_US + s * SECOND_US }),
      NOW_US + s * SECOND_US,
    );
  assert.equal(validator.reference("binance", "BTC-USDT"), null);
  assert.equal(at("100", "1", 0), "accepted");
  assert.equal(at("500", "2", 0), "accepted", "no closed bucket yet");
  // Each later second closes the one before (its last price): 500, then 480, then 490.
  assert.equal(at("480", "3", 1), "accepted");
  assert.equal(validator.reference("binance", "BTC-USDT"), null, "one closed second");
  assert.equal(at("490", "4", 2), "accepted");
  assert.equal(validator.reference("binance", "BTC-USDT"), null, "two closed seconds");
  assert.equal(at("485", "5", 3), "accepted");
  assert.equal(validator.reference("binance", "BTC-USDT"), 490, `${REFERENCE_MIN_BUCKETS} seconds`);
  assert.equal(at("5000", "6", 3), "spike");
});

Deno.test("validator refuses trades beyond spike_pct of the reference", () => {
  const validator = new Validator({ spike_pct: 10 });
  seed(validator, "100");
  const at = (price: string, id: string) => verdict(validator, trade({ price, trade_id: id }));
  assert.equal(at("100", "a"), "accepted", "closes the seed bucket");
  assert.equal(validator.reference("binance", "BTC-USDT"), 100);
  assert.equal(at("110", "b"), "accepted");
  assert.equal(at("90", "c"), "accepted");
  assert.equal(at("110.01", "d"), "spike");
  assert.equal(at("89.99", "e"), "spike");
  assert.equal(at("1000", "f"), "spike");
  const result = validator.validate([trade({ price: "150", trade_id: "g" })], NOW_US);
  assert.match(
    result.rejected[0]!.detail,
    /price 150 is 50\.00% from reference 100 \(spike_pct 10\)/,
  );
});

Deno.test("validator checks the mid of tops and quotes against the trade reference", () => {
  const validator = new Validator({ spike_pct: 5 });
  seed(validator, "100");
  assert.equal(verdict(validator, trade({ price: "100", trade_id: "a" })), "accepted");
  assert.equal(verdict(validator, top({ bid_price: "103", ask_price: "104" })), "accepted");
  assert.equal(verdict(validator, top({ bid_price: "106", ask_price: "107" })), "spike");
  assert.equal(verdict(validator, top({ bid_price: "0", ask_price: "200" })), "accepted");
  // Tops and quotes never feed the reference.
  assert.equal(validator.reference("binance", "BTC-USDT"), 100);
});

Deno.test("refused spikes do not poison the reference", () => {
  const validator = new Validator({ spike_pct: 10, reference_window_ms: 60_000 });
  seed(validator, "100");
  // Ten seconds of spikes at 200, one good trade at 101 every second.
  for (let s = 0; s < 10; s++) {
    const ts = NOW_US + s * SECOND_US;
    const result = validator.validate([
      trade({ price: "200", trade_id: `spike-${s}`, ts_exchange: ts }),
      trade({ price: "101", trade_id: `good-${s}`, ts_exchange: ts }),
      trade({ price: "200", trade_id: `late-${s}`, ts_exchange: ts }),
    ], NOW_US + 10 * SECOND_US);
    assert.deepEqual(reasons(result), ["spike", "spike"]);
  }
  const reference = validator.reference("binance", "BTC-USDT");
  assert.ok(reference !== null && reference >= 100 && reference <= 101, String(reference));
});

Deno.test("the reference median resists one outlier bucket", () => {
  const validator = new Validator({ spike_pct: 50 });
  const prices = ["100", "101", "140", "99", "100"];
  prices.forEach((price, s) => {
    const result = validator.validate(
      [trade({ price, trade_id: `t${s}`, ts_exchange: NOW_US + s * SECOND_US })],
      NOW_US + 5 * SECOND_US,
    );
    assert.equal(result.accepted.length, 1);
  });
  // Closed buckets: 100, 101, 140, 99 → median 100.5.
  assert.equal(validator.reference("binance", "BTC-USDT"), 100.5);
});

Deno.test("the reference expires after its window, so a real jump is accepted again", () => {
  // A 6 s window holds five closed seconds.
  const validator = new Validator({ spike_pct: 10, reference_window_ms: 6_000 });
  const at = (price: string, id: string, s: number) =>
    verdict(
      validator,
      trade({ price, trade_id: id, ts_exchange: NOW_US + s * SECOND_US }),
      NOW_US + s * SECOND_US,
    );
  for (let s = 0; s <= 4; s++) assert.equal(at("100", `a${s}`, s), "accepted", `second ${s}`);
  // The market jumps to 150 for good: refused while the window holds a second at 100…
  for (let s = 5; s <= 9; s++) assert.equal(at("150", `j${s}`, s), "spike", `second ${s}`);
  // …and accepted once the window has emptied; the new level warms the reference up again.
  assert.equal(validator.reference("binance", "BTC-USDT"), 100);
  assert.equal(at("150", "j10", 10), "accepted");
  assert.equal(validator.reference("binance", "BTC-USDT"), null);
  assert.equal(at("151", "j11", 11), "accepted");
  assert.equal(at("150", "j12", 12), "accepted");
  assert.equal(at("100", "j13", 13), "spike");
  assert.equal(validator.reference("binance", "BTC-USDT"), 150);
});

Deno.test("spike references are kept per exchange and symbol", () => {
  const validator = new Validator({ spike_pct: 10 });
  seed(validator, "100");
  seed(validator, "3000", { symbol: "ETH-USDT" });
  assert.equal(verdict(validator, trade({ price: "100", trade_id: "a" })), "accepted");
  assert.equal(
    verdict(validator, trade({ price: "3000", trade_id: "b", symbol: "ETH-USDT" })),
    "accepted",
  );
  assert.equal(verdict(validator, trade({ price: "3000", trade_id: "c" })), "spike");
  assert.equal(
    verdict(validator, trade({ price: "3000", trade_id: "d", exchange: "kraken" })),
    "accepted",
  );
});

Deno.test("overrides resolve symbol over exchange over defaults, key by key", () => {
  const validator = new Validator({
    spike_pct: 10,
    max_lag_ms: 1_000,
    overrides: {
      kraken: { spike_pct: 20, max_future_ms: 50 },
      "kraken/DOGE-USD": { spike_pct: 40, max_lag_ms: undefined },
      "binance/ETH-USDT": { max_lag_ms: 9_000 },
    },
  });
  assert.deepEqual(validator.thresholds("binance", "BTC-USDT"), {
    spike_pct: 10,
    reference_window_ms: DEFAULT_REFERENCE_WINDOW_MS,
    max_future_ms: DEFAULT_MAX_FUTURE_MS,
    max_lag_ms: 1_000,
  });
  assert.deepEqual(validator.thresholds("kraken", "BTC-USD"), {
    spike_pct: 20,
    reference_window_ms: DEFAULT_REFERENCE_WINDOW_MS,
    max_future_ms: 50,
    max_lag_ms: 1_000,
  });
  assert.deepEqual(validator.thresholds("kraken", "DOGE-USD"), {
    spike_pct: 40,
    reference_window_ms: DEFAULT_REFERENCE_WINDOW_MS,
    max_future_ms: 50,
    max_lag_ms: 1_000,
  });
  assert.equal(validator.thresholds("binance", "ETH-USDT").max_lag_ms, 9_000);
  assert.equal(
    validator.thresholds("kraken", "DOGE-USD"),
    validator.thresholds("kraken", "DOGE-USD"),
  );
});

Deno.test("overrides change the verdicts", () => {
  const validator = new Validator({
    spike_pct: 10,
    overrides: { kraken: { spike_pct: 30 }, "kraken/DOGE-USD": { spike_pct: 60 } },
  });
  const doge = { exchange: "kraken" as const, symbol: "DOGE-USD", venue_symbol: "DOGE/USD" };
  const btc = { exchange: "kraken" as const, symbol: "BTC-USD", venue_symbol: "BTC/USD" };
  for (const base of [doge, btc, {}]) {
    seed(validator, "1", base);
    assert.equal(verdict(validator, trade({ ...base, price: "1", trade_id: "a" })), "accepted");
  }
  assert.equal(verdict(validator, trade({ ...doge, price: "1.5", trade_id: "b" })), "accepted");
  assert.equal(verdict(validator, trade({ ...btc, price: "1.5", trade_id: "b" })), "spike");
  assert.equal(verdict(validator, trade({ ...btc, price: "1.25", trade_id: "c" })), "accepted");
  assert.equal(verdict(validator, trade({ price: "1.25", trade_id: "c" })), "spike");
});

Deno.test("validator refuses events that do not match the message subject", () => {
  const validator = new Validator();
  const subject = "md.trade.binance.BTC-USDT";
  const ok = validator.validate([trade({ trade_id: "s1" })], NOW_US, { subject });
  assert.equal(ok.accepted.length, 1);
  for (const wrong of [top(), trade({ exchange: "kraken" }), trade({ symbol: "ETH-USDT" })]) {
    const result = validator.validate([wrong], NOW_US, { subject });
    assert.deepEqual(reasons(result), ["schema"]);
    assert.match(result.rejected[0]!.detail, /does not belong on md\.trade\.binance\.BTC-USDT/);
  }
  const dotted = trade({ exchange: "alpaca", symbol: "BRK.B", venue_symbol: "BRK.B" });
  assert.equal(
    validator.validate([dotted], NOW_US, { subject: "md.trade.alpaca.BRK_B" }).accepted.length,
    1,
  );
  for (
    const bad of ["md.trade.binance", "md.tick.binance.X", "md.trade.ftx.X", "x.trade.binance.X"]
  ) {
    const result = validator.validate([trade(), trade()], NOW_US, { subject: bad });
    assert.deepEqual(reasons(result), ["schema", "schema"], bad);
  }
});

Deno.test("a disabled validator checks the schema only", () => {
  const validator = new Validator({ enabled: false });
  const result = validator.validate([
    trade({ price: "0" }),
    trade(),
    trade(),
    top({ bid_price: "2", ask_price: "1" }),
    trade({ ts_exchange: 0 }),
    { kind: "trade" },
  ], NOW_US);
  assert.equal(result.accepted.length, 5);
  assert.deepEqual(reasons(result), ["schema"]);
});

Deno.test("validator keeps state for at most maxSymbols pairs", () => {
  const validator = new Validator({ maxSymbols: 3 });
  for (let i = 0; i < 10; i++) verdict(validator, trade({ symbol: `S${i}-USDT` }));
  assert.equal(validator.symbols, 3);
  // The forgotten pair starts afresh: its trade id is no longer known.
  assert.equal(verdict(validator, trade({ symbol: "S0-USDT" })), "accepted");
  assert.equal(verdict(validator, trade({ symbol: "S9-USDT" })), "duplicate");
});

Deno.test("validator refuses bad options with a RangeError", () => {
  assert.throws(() => new Validator({ duplicate_window: 0 }), RangeError);
  assert.throws(() => new Validator({ maxSymbols: 1.5 }), RangeError);
  assert.throws(() => new Validator({ spike_pct: 0 }), RangeError);
  assert.throws(
    () => new Validator({ overrides: { kraken: { reference_window_ms: 0 } } }),
    RangeError,
  );
  assert.throws(() => new Validator({ max_future_ms: -1 }), RangeError);
  new Validator(DEFAULT_CONFIG.validator);
});

Deno.test("parseMarketSubject reads md and clean.md subjects", () => {
  assert.deepEqual(parseMarketSubject("md.book.kraken.BTC-USD"), {
    kind: "book",
    exchange: "kraken",
    token: "BTC-USD",
  });
  assert.deepEqual(parseMarketSubject("clean.md.bar.alpaca.BRK_B"), {
    kind: "bar",
    exchange: "alpaca",
    token: "BRK_B",
  });
  for (
    const bad of [
      "md",
      "md.trade.binance",
      "md.trade.binance.X.Y",
      "md.x.binance.X",
      "md.trade.ftx.X",
      "md.trade.binance.",
    ]
  ) {
    assert.equal(parseMarketSubject(bad), null, bad);
  }
});

Deno.test("the validator thread's figures count every life of the thread, as the in-thread validator's do", async () => {
  const server = await startNatsServer({ jetstream: false });
  const nats = await connect({ servers: server.url });
  try {
    const status = new MarketStatus();
    const spec = validatorWorker({
      nats: { ...DEFAULT_CONFIG.nats, url: server.url },
      options: { ...DEFAULT_CONFIG.validator, overrides: {} },
      status,
      statusIntervalMs: 20,
    });
    const nowUs = Date.now() * 1000;
    // Each life accepts 2 trades and refuses 1; the supervisor starts the same spec again.
    for (const life of [1, 2]) {
      const controller = new AbortController();
      const running = spec.start(controller.signal);
      await running.ready;
      const at = { ts_exchange: nowUs, ts_local: nowUs };
      nats.publish(
        "md.trade.binance.BTC-USDT",
        encodeJson([
          trade({ ...at, trade_id: `${life}-a` }),
          trade({ ...at, trade_id: `${life}-b` }),
          trade({ ...at, trade_id: `${life}-c`, qty: "0" }),
        ]),
      );
      await waitFor(
        () => status.validator.accepted === 2 * life,
        5_000,
        `figures of life ${life}`,
      );
      controller.abort();
      await running.done;
      assert.equal(status.validator.accepted, 2 * life, "accepted after the thread stopped");
      assert.deepEqual(status.validator.rejected, { non_positive: life });
      assert.deepEqual(status.validator.rejected_by_exchange, { binance: life });
    }
  } finally {
    await nats.close();
    await server.stop();
  }
});
