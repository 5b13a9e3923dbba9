import assert from "node:assert/strict";
import { compareDecimal, isDecimal } from "../market/decimal.ts";
import {
  type BarEvent,
  type BookEvent,
  isoToUs,
  MalformedFrameError,
  type TopEvent,
  type TradeEvent,
} from "../market/events.ts";
import { CoinbaseBookSync, SequenceTracker } from "../venues/coinbase/book_sync.ts";
import {
  type CoinbaseBookControl,
  parseCoinbaseFrame,
  type ParsedFrame,
  subscribeMessage,
  unsubscribeMessage,
} from "../venues/coinbase/parse.ts";
import { fixtureLines, prng } from "./_helpers.ts";

const SESSION = "advanced_trade_session_2026-08-09.raw.jsonl";
const ENVELOPE = "advanced_trade_session_2026-08-09.envelope.jsonl";
const SUBSCRIBES = "advanced_trade_subscribe_requests_2026-08-09.raw.jsonl";
const CHANNEL_FILES = [
  "channel_candles_2026-08-09.raw.jsonl",
  "channel_heartbeats_2026-08-09.raw.jsonl",
  "channel_market_trades_2026-08-09.raw.jsonl",
  "channel_subscriptions_2026-08-09.raw.jsonl",
  "channel_ticker_2026-08-09.raw.jsonl",
];
const RECEIVED_US = 1_786_309_549_000_000;

function lines(file: string): string[] {
  return fixtureLines("coinbase", file);
}

const session = lines(SESSION);

function bookControl(frame: string): CoinbaseBookControl {
  const { control } = parseCoinbaseFrame(frame, RECEIVED_US);
  assert.equal(control?.type, "book");
  return control as CoinbaseBookControl;
}

/** Replays the session through one book sync per product, calling `visit` after each frame. */
function replay(
  visit: (index: number, parsed: ParsedFrame, syncs: Map<string, CoinbaseBookSync>) => void,
): Map<string, CoinbaseBookSync> {
  const syncs = new Map([
    ["BTC-USD", new CoinbaseBookSync("BTC-USD")],
    ["ETH-USD", new CoinbaseBookSync("ETH-USD")],
  ]);
  session.forEach((frame, index) => {
    const parsed = parseCoinbaseFrame(frame, RECEIVED_US);
    if (parsed.control?.type === "book") {
      const result = syncs.get(parsed.control.symbol)!.onBook(parsed.control, RECEIVED_US);
      assert.equal(result.status, "ok", "reason" in result ? result.reason : "");
    }
    visit(index, parsed, syncs);
  });
  return syncs;
}

// ---- parsing ------------------------------------------------------------

Deno.test("every frame of every Coinbase fixture parses", () => {
  const counts: Record<string, number> = {};
  for (const frame of session) {
    const { events, control, sequence } = parseCoinbaseFrame(frame, RECEIVED_US);
    assert.equal(typeof sequence, "number");
    for (const event of events) counts[event.kind] = (counts[event.kind] ?? 0) + 1;
    if (control) {
      const key = control.type === "book" ? `book ${control.action}` : control.type;
      counts[key] = (counts[key] ?? 0) + 1;
    }
  }
  assert.deepEqual(counts, {
    trade: 279,
    subscriptions: 5,
    bar: 204,
    top: 160,
    "book snapshot": 2,
    "book update": 773,
    heartbeat: 25,
  });
  let channelFrames = 0;
  for (const file of CHANNEL_FILES) {
    for (const frame of lines(file)) {
      parseCoinbaseFrame(frame, RECEIVED_US);
      channelFrames++;
    }
  }
  assert.equal(channelFrames, 59 + 160 + 25 + 5 + 6);
});

Deno.test("the Coinbase envelope's received frames parse with their receive time", () => {
  let received = 0;
  for (const line of lines(ENVELOPE)) {
    const record = JSON.parse(line);
    if (record.t !== "recv") continue;
    const receivedUs = Math.round(record.ts * 1_000_000);
    const parsed = parseCoinbaseFrame(record.data, receivedUs);
    assert.equal(record.data, session[received]);
    for (const event of parsed.events) {
      assert.equal(event.ts_local, receivedUs);
      // The venue's time is before the local receive time (within clock skew).
      assert.ok(
        event.ts_exchange < receivedUs + 1_000_000,
        `${event.ts_exchange} vs ${receivedUs}`,
      );
    }
    received++;
  }
  assert.equal(received, session.length);
});

Deno.test("the Coinbase subscribe builder writes the captured requests", () => {
  const channels = ["market_trades", "candles", "ticker", "level2", "heartbeats"] as const;
  assert.deepEqual(
    lines(SUBSCRIBES),
    channels.map((channel) => subscribeMessage(channel, ["BTC-USD", "ETH-USD"])),
  );
  assert.equal(
    subscribeMessage("level2", ["BTC-USD"], "header.payload.signature"),
    '{"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2","jwt":"header.payload.signature"}',
  );
  assert.equal(
    unsubscribeMessage("level2", ["BTC-USD"]),
    '{"type":"unsubscribe","product_ids":["BTC-USD"],"channel":"level2"}',
  );
  // Requests are not server frames.
  assert.throws(
    () => parseCoinbaseFrame(lines(SUBSCRIBES)[0]!, RECEIVED_US),
    /Frame has no sequence_num/,
  );
});

Deno.test("Coinbase trades carry the aggressor side, the opposite of Coinbase's maker side", () => {
  const frame = session[9]!;
  assert.match(frame, /"side":"SELL"/);
  const { events, control, sequence } = parseCoinbaseFrame(frame, RECEIVED_US);
  assert.equal(control, null);
  assert.equal(sequence, 9);
  assert.deepEqual(events, [{
    exchange: "coinbase",
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    ts_exchange: isoToUs("2026-08-09T21:05:48.167634Z"),
    ts_local: RECEIVED_US,
    kind: "trade",
    trade_id: "1068572091",
    price: "65083.67",
    qty: "0.01034361",
    side: "buy",
  }]);
});

Deno.test("the session shows Coinbase's trade side is the maker's: SELL prints at the ask, BUY at the bid", () => {
  // Against the book rebuilt from l2_data, a print at the best ask was a buyer lifting a
  // resting sell, a print at the best bid a seller hitting a resting buy.
  const touches: Record<string, number> = {};
  replay((_, parsed, syncs) => {
    for (const event of parsed.events) {
      if (event.kind !== "trade") continue;
      const sync = syncs.get(event.symbol)!;
      if (!sync.live) continue; // snapshot trades predate the book
      const { bid, ask } = sync.top();
      const where = compareDecimal(event.price, bid![0]) <= 0
        ? "bid"
        : compareDecimal(event.price, ask![0]) >= 0
        ? "ask"
        : "inside";
      touches[`${event.side} at ${where}`] = (touches[`${event.side} at ${where}`] ?? 0) + 1;
    }
  });
  // Aggressor buys only ever at the ask, aggressor sells only at the bid.
  assert.equal(touches["buy at bid"], undefined);
  assert.equal(touches["sell at ask"], undefined);
  assert.ok(touches["buy at ask"]! + touches["sell at bid"]! >= 70, JSON.stringify(touches));
});

Deno.test("Coinbase tickers become top events", () => {
  const frame = lines("channel_ticker_2026-08-09.raw.jsonl")[0]!;
  const { events } = parseCoinbaseFrame(frame, RECEIVED_US);
  assert.deepEqual(events, [{
    exchange: "coinbase",
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    ts_exchange: isoToUs("2026-08-09T21:05:48.229198328Z"),
    ts_local: RECEIVED_US,
    kind: "top",
    bid_price: "65083.66",
    bid_qty: "0.20371215",
    ask_price: "65083.67",
    ask_qty: "0.24290402",
  }]);
  const batch = frame.replace('"channel":"ticker"', '"channel":"ticker_batch"');
  assert.deepEqual(parseCoinbaseFrame(batch, RECEIVED_US).events, events);
});

Deno.test("Coinbase candles become 5-minute bars", () => {
  const update = lines("channel_candles_2026-08-09.raw.jsonl").find((f) => f.includes('"update"'))!;
  const { events } = parseCoinbaseFrame(update, RECEIVED_US);
  assert.deepEqual(events, [{
    exchange: "coinbase",
    symbol: "ETH-USD",
    venue_symbol: "ETH-USD",
    ts_exchange: isoToUs("2026-08-09T21:05:51.491081826Z"),
    ts_local: RECEIVED_US,
    kind: "bar",
    interval: "5m",
    start: 1_786_309_500_000_000,
    open: "1919.58",
    high: "1919.6",
    low: "1919.27",
    close: "1919.41",
    volume: "36.36630914",
    trades: null,
    vwap: null,
  }]);
  const snapshot = parseCoinbaseFrame(session[3]!, RECEIVED_US).events as BarEvent[];
  assert.ok(snapshot.length > 50);
  for (let i = 1; i < snapshot.length; i++) {
    assert.equal((snapshot[i]!.start - snapshot[i - 1]!.start) % 300_000_000, 0);
  }
});

Deno.test("Coinbase heartbeats, subscriptions and errors become controls", () => {
  const heartbeat = lines("channel_heartbeats_2026-08-09.raw.jsonl")[0]!;
  assert.deepEqual(parseCoinbaseFrame(heartbeat, RECEIVED_US), {
    events: [],
    control: {
      type: "heartbeat",
      counter: 41691,
      current_time: "2026-08-09 21:05:48.854840045 +0000 UTC m=+41691.260485341",
    },
    sequence: 35,
  });
  const asString = heartbeat.replace('"heartbeat_counter":41691', '"heartbeat_counter":"41691"');
  assert.equal(
    (parseCoinbaseFrame(asString, RECEIVED_US).control as { counter: number }).counter,
    41691,
  );
  const subscriptions = lines("channel_subscriptions_2026-08-09.raw.jsonl")[4]!;
  assert.deepEqual(parseCoinbaseFrame(subscriptions, RECEIVED_US), {
    events: [],
    control: {
      type: "subscriptions",
      subscriptions: {
        candles: ["ETH-USD", "BTC-USD"],
        heartbeats: ["heartbeats"],
        level2: ["BTC-USD", "ETH-USD"],
        market_trades: ["BTC-USD", "ETH-USD"],
        ticker: ["BTC-USD", "ETH-USD"],
      },
    },
    sequence: 26,
  });
  assert.deepEqual(
    parseCoinbaseFrame('{"type":"error","message":"failure to subscribe"}', RECEIVED_US),
    {
      events: [],
      control: { type: "error", message: "failure to subscribe" },
      sequence: null,
    },
  );
});

Deno.test("Coinbase trades come out oldest first, the newest last also when they share a microsecond", () => {
  let ties = 0;
  for (const frame of session) {
    const raw = JSON.parse(frame);
    if (raw.channel !== "market_trades") continue;
    const trades = parseCoinbaseFrame(frame, RECEIVED_US).events;
    for (let i = 1; i < trades.length; i++) {
      const [before, after] = [trades[i - 1]!, trades[i]!];
      if (before.kind !== "trade" || after.kind !== "trade" || before.symbol !== after.symbol) {
        continue;
      }
      assert.ok(before.ts_exchange <= after.ts_exchange, frame);
      // Coinbase's trade ids grow per product.
      assert.ok(BigInt(before.trade_id) < BigInt(after.trade_id), frame);
      if (before.ts_exchange === after.ts_exchange) ties++;
    }
  }
  assert.ok(ties > 0, "the capture has trades sharing a microsecond");
});

Deno.test("Coinbase timestamps match isoToUs for every form", () => {
  for (const frame of session) {
    const raw = JSON.parse(frame);
    const parsed = parseCoinbaseFrame(frame, RECEIVED_US);
    if (raw.channel === "market_trades") {
      // Each event's trades come out oldest first (Coinbase lists them newest first).
      const times = raw.events.flatMap((e: { trades: { time: string }[] }) =>
        e.trades.map((t) => t.time).reverse()
      );
      assert.deepEqual(parsed.events.map((e) => e.ts_exchange), times.map(isoToUs));
    } else if (raw.channel === "l2_data") {
      const updates = raw.events[0].updates;
      const time = updates.length > 0 ? updates[updates.length - 1].event_time : raw.timestamp;
      assert.equal((parsed.control as CoinbaseBookControl).timestamp, isoToUs(time));
    } else if (raw.channel === "ticker") {
      assert.equal(parsed.events[0]!.ts_exchange, isoToUs(raw.timestamp));
    }
  }
  const random = prng(11);
  for (let i = 0; i < 2_000; i++) {
    const ms = Math.floor(random() * 4_102_444_800_000);
    const digits = Math.floor(random() * 10);
    const fraction = digits === 0
      ? ""
      : "." + String(Math.floor(random() * 1e9)).padStart(9, "0").slice(0, digits);
    const iso = new Date(ms).toISOString().slice(0, 19) + fraction + "Z";
    const frame = `{"channel":"ticker","timestamp":"${iso}","sequence_num":1,"events":[]}`;
    const tickers = parseCoinbaseFrame(
      frame.replace(
        '"events":[]',
        '"events":[{"type":"update","tickers":[{"product_id":"BTC-USD",' +
          '"best_bid":"1","best_bid_quantity":"1","best_ask":"2","best_ask_quantity":"1"}]}]',
      ),
      0,
    );
    assert.equal(tickers.events[0]!.ts_exchange, isoToUs(iso), iso);
  }
});

// ---- sequence numbers ---------------------------------------------------

Deno.test("the Coinbase session's sequence numbers are contiguous across all channels", () => {
  const tracker = new SequenceTracker();
  const seen: number[] = [];
  for (const frame of session) {
    const { sequence } = parseCoinbaseFrame(frame, RECEIVED_US);
    assert.deepEqual(tracker.observe(sequence!), { status: "ok" });
    seen.push(sequence!);
  }
  assert.deepEqual(seen, Array.from({ length: 1030 }, (_, i) => i));
  assert.equal(tracker.expected, 1030);
});

Deno.test("a deleted Coinbase frame is detected as a sequence gap", () => {
  const tracker = new SequenceTracker();
  const gaps: unknown[] = [];
  session.forEach((frame, index) => {
    if (index === 500) return; // lost
    const { sequence } = parseCoinbaseFrame(frame, RECEIVED_US);
    const check = tracker.observe(sequence!);
    if (check.status === "gap") gaps.push(check);
  });
  assert.deepEqual(gaps, [{ status: "gap", expected: 500, got: 501 }]);
  // A missing first frame is a gap too; a tracker with first: null accepts any start.
  assert.equal(new SequenceTracker().observe(1).status, "gap");
  assert.equal(new SequenceTracker({ first: null }).observe(1).status, "ok");
  const tracker2 = new SequenceTracker();
  tracker2.observe(0);
  tracker2.reset();
  assert.equal(tracker2.observe(0).status, "ok");
  assert.deepEqual(tracker2.observe(0), { status: "gap", expected: 1, got: 0 });
  assert.throws(() => new SequenceTracker({ first: -1 }), RangeError);
});

// ---- book sync ----------------------------------------------------------

Deno.test("the Coinbase l2_data stream rebuilds books that agree with the ticker channel", () => {
  // The ticker and level2 channels are separate streams, batched separately: a ticker can
  // show a top between two level2 frames. So each ticker's top (prices and sizes, both
  // sides) is looked for among the rebuilt tops within 10 frames of it.
  const tops: { index: number; symbol: string; top: string }[] = [];
  const tickers: { index: number; symbol: string; top: string }[] = [];
  let books = 0;
  replay((index, parsed, syncs) => {
    if (parsed.control?.type === "book") {
      const sync = syncs.get(parsed.control.symbol)!;
      const { bid, ask } = sync.top();
      assert.ok(bid && ask && compareDecimal(bid[0], ask[0]) < 0, `crossed at ${index}`);
      tops.push({ index, symbol: parsed.control.symbol, top: JSON.stringify([bid, ask]) });
      books++;
    }
    for (const event of parsed.events) {
      if (event.kind !== "top") continue;
      assert.ok(compareDecimal(event.bid_price, event.ask_price) < 0);
      if (!syncs.get(event.symbol)!.live) continue;
      const top = JSON.stringify([[event.bid_price, event.bid_qty], [
        event.ask_price,
        event.ask_qty,
      ]]);
      tickers.push({ index, symbol: event.symbol, top });
    }
  });
  assert.equal(books, 775);
  const matched = tickers.filter((t) =>
    tops.some((b) => b.symbol === t.symbol && Math.abs(b.index - t.index) <= 10 && b.top === t.top)
  );
  assert.equal(tickers.length, 154);
  assert.ok(matched.length >= 0.95 * tickers.length, `${matched.length}/${tickers.length} matched`);
});

Deno.test("Coinbase book events carry sequence_num and snapshots come best first", () => {
  const sync = new CoinbaseBookSync("BTC-USD");
  const snapshotFrame = session.find((f) => f.includes('"l2_data"') && f.includes('"BTC-USD"'))!;
  const snapshot = sync.onBook(bookControl(snapshotFrame), RECEIVED_US);
  assert.equal(snapshot.status, "ok");
  const event = snapshot.events[0] as BookEvent;
  assert.equal(event.action, "snapshot");
  assert.equal(event.sequence, 13);
  assert.equal(event.bids.length + event.asks.length, 46_000);
  assert.deepEqual(event.bids[0], ["65083.66", "0.20371215"]);
  for (let i = 1; i < event.bids.length; i++) {
    assert.ok(compareDecimal(event.bids[i - 1]![0], event.bids[i]![0]) > 0);
  }
  for (let i = 1; i < event.asks.length; i++) {
    assert.ok(compareDecimal(event.asks[i - 1]![0], event.asks[i]![0]) < 0);
  }
  const update = session[14]!;
  assert.match(update, /"l2_data".*"BTC-USD"/);
  const delta = sync.onBook(bookControl(update), RECEIVED_US);
  assert.equal(delta.status, "ok");
  const deltaEvent = delta.events[0] as BookEvent;
  assert.equal(deltaEvent.action, "delta");
  assert.equal(deltaEvent.sequence, 14);
  assert.equal(deltaEvent.exchange, "coinbase");
  assert.equal(deltaEvent.ts_local, RECEIVED_US);
});

Deno.test("a Coinbase update that crosses the book is reported and asks for a resync", () => {
  const sync = new CoinbaseBookSync("BTC-USD");
  const snapshotFrame = session.find((f) => f.includes('"l2_data"') && f.includes('"BTC-USD"'))!;
  assert.equal(sync.onBook(bookControl(snapshotFrame), RECEIVED_US).status, "ok");
  const crossing =
    '{"channel":"l2_data","timestamp":"2026-08-09T21:05:48.506659391Z","sequence_num":15,' +
    '"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid",' +
    '"event_time":"2026-08-09T21:05:48.264069Z","price_level":"65090","new_quantity":"1"}]}]}';
  const result = sync.onBook(bookControl(crossing), RECEIVED_US);
  assert.deepEqual(result, {
    status: "resync",
    reason:
      "Book crossed after the update of sequence 15: best bid 65090 is at or above best ask 65083.67",
    events: [],
  });
  assert.equal(sync.live, false);
  assert.equal(sync.onBook(bookControl(session[14]!), RECEIVED_US).status, "waiting");
  assert.equal(sync.onBook(bookControl(snapshotFrame), RECEIVED_US).status, "ok");
  assert.equal(sync.onBook(bookControl(session[14]!), RECEIVED_US).status, "ok");
  sync.reset();
  assert.equal(sync.onBook(bookControl(session[14]!), RECEIVED_US).status, "waiting");
});

Deno.test("a Coinbase update before any snapshot asks for a resync", () => {
  const sync = new CoinbaseBookSync("BTC-USD");
  assert.deepEqual(sync.onBook(bookControl(session[14]!), RECEIVED_US), {
    status: "resync",
    reason: "Book update arrived before a snapshot",
    events: [],
  });
  assert.throws(
    () => new CoinbaseBookSync("ETH-USD").onBook(bookControl(session[14]!), RECEIVED_US),
    TypeError,
  );
});

// ---- malformed frames ---------------------------------------------------

Deno.test("malformed Coinbase frames throw MalformedFrameError with a reason", () => {
  const head =
    '{"channel":"CH","timestamp":"2026-08-09T21:05:48.228568804Z","sequence_num":3,"events":';
  const trade = (fields: string) =>
    head.replace("CH", "market_trades") + `[{"type":"update","trades":[{${fields}}]}]}`;
  const good =
    '"product_id":"BTC-USD","trade_id":"1","price":"1.5","size":"2","time":"2026-08-09T21:05:42.514318Z"';
  const l2 = (update: string) =>
    head.replace("CH", "l2_data") +
    `[{"type":"update","product_id":"BTC-USD","updates":[${update}]}]}`;
  const cases: [string, RegExp][] = [
    ["", /not valid JSON/],
    ["garbage", /not valid JSON/],
    ["[1,2]", /not a JSON object/],
    ["null", /not a JSON object/],
    ["{}", /Frame has no channel/],
    ['{"type":"error"}', /Error frame has no message text/],
    ['{"channel":1}', /channel is not a string/],
    ['{"channel":"ticker","timestamp":"2026-08-09T21:05:48Z","events":[]}', /no sequence_num/],
    [
      '{"channel":"ticker","timestamp":"2026-08-09T21:05:48Z","sequence_num":-1,"events":[]}',
      /not a non-negative integer/,
    ],
    [
      '{"channel":"ticker","timestamp":"2026-08-09T21:05:48Z","sequence_num":"1","events":[]}',
      /not a non-negative integer/,
    ],
    ['{"channel":"ticker","sequence_num":1,"events":[]}', /no timestamp/],
    [
      '{"channel":"ticker","timestamp":5,"sequence_num":1,"events":[]}',
      /timestamp is not a string/,
    ],
    [
      '{"channel":"ticker","timestamp":"2026-08-09T21:05:48Z","sequence_num":1,"events":{}}',
      /events is not an array/,
    ],
    [head.replace("CH", "status") + "[]}", /Unknown channel "status"/],
    [
      head.replace("CH", "ticker").replace("2026-08-09T21:05:48.228568804Z", "today") + "[]}",
      /Invalid timestamp/,
    ],
    [
      trade(good + ',"side":"BUY"').replace('"1.5"', '"abc"'),
      /price of the trade is not a decimal: "abc"/,
    ],
    [trade(good + ',"side":"BUY"').replace('"1.5"', "1.5"), /price of the trade is not a string/],
    [trade(good + ',"side":"BUY"').replace('"2"', '"-2"'), /size of the trade is not a decimal/],
    [trade(good + ',"side":"buy"'), /side of a trade is not BUY or SELL/],
    [trade(good + ',"side":"BUY"').replace('"trade_id":"1",', ""), /trade has no trade_id/],
    [
      trade(good + ',"side":"BUY"').replace('"trade_id":"1"', '"trade_id":""'),
      /trade_id of the trade is empty/,
    ],
    [
      trade(good + ',"side":"BUY"').replace("2026-08-09T21:05:42.514318Z", "2026-13-09T21:05:42Z"),
      /names no instant/,
    ],
    [
      head.replace("CH", "market_trades") + '[{"type":"update","trades":{}}]}',
      /trades of the market trades event is not an array/,
    ],
    [
      head.replace("CH", "market_trades") + '[{"type":"other","trades":[]}]}',
      /type is not snapshot or update/,
    ],
    [
      l2('{"side":"ask","event_time":"2026-08-09T21:05:48Z","price_level":"1","new_quantity":"1"}'),
      /not bid or offer/,
    ],
    [
      l2(
        '{"side":"bid","event_time":"2026-08-09T21:05:48Z","price_level":"1e5","new_quantity":"1"}',
      ),
      /price_level of the level2 update is not a decimal/,
    ],
    [
      l2('{"side":"bid","event_time":"2026-08-09T21:05:48Z","price_level":"1"}'),
      /level2 update has no new_quantity/,
    ],
    [l2('{"side":"bid","price_level":"1","new_quantity":"1"}'), /level2 update has no event_time/],
    [l2("7"), /Level2 update is not an object/],
    [head.replace("CH", "l2_data") + "[]}", /carries 0 events/],
    [
      head.replace("CH", "l2_data") + '[{"type":"update","updates":[]}]}',
      /level2 event has no product_id/,
    ],
    [
      head.replace("CH", "ticker") +
      '[{"type":"update","tickers":[{"product_id":"BTC-USD","best_bid":"1"}]}]}',
      /ticker has no best_bid_quantity/,
    ],
    [
      head.replace("CH", "candles") +
      '[{"type":"update","candles":[{"product_id":"E","start":"-5"}]}]}',
      /start of a candle is not epoch seconds/,
    ],
    [head.replace("CH", "heartbeats") + "[]}", /Heartbeats frame has no event object/],
    [
      head.replace("CH", "heartbeats") + '[{"current_time":"x","heartbeat_counter":1.5}]}',
      /heartbeat_counter is not an integer/,
    ],
    [
      head.replace("CH", "subscriptions") + '[{"subscriptions":{"level2":[1]}}]}',
      /not a list of strings/,
    ],
  ];
  for (const [frame, reason] of cases) {
    assert.throws(() => parseCoinbaseFrame(frame, RECEIVED_US), (error: unknown) => {
      assert.ok(error instanceof MalformedFrameError, `${frame}: ${error}`);
      assert.equal(error.name, "MalformedFrameError");
      assert.match(error.message, reason, frame);
      assert.match(error.message, /^[A-Z]/);
      return true;
    });
  }
  assert.throws(() => parseCoinbaseFrame(undefined as unknown as string, 0), MalformedFrameError);
});

Deno.test("random truncations and mutations of Coinbase frames never throw anything but MalformedFrameError", () => {
  const random = prng(1786309548);
  const seeds = session.filter((frame) => frame.length < 3_000);
  const alphabet = '{}[]",:.-+eE0123456789 \\abBSXZT';
  let parsed = 0;
  let rejected = 0;
  for (let i = 0; i < 20_000; i++) {
    let frame = seeds[Math.floor(random() * seeds.length)]!;
    const edits = 1 + Math.floor(random() * 2);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(random() * (frame.length + 1));
      const choice = random();
      if (choice < 0.3) frame = frame.slice(0, at);
      else if (choice < 0.55) frame = frame.slice(0, at) + frame.slice(at + 1);
      else {
        const c = alphabet[Math.floor(random() * alphabet.length)];
        frame = frame.slice(0, at) + c + frame.slice(at + (choice < 0.8 ? 1 : 0));
      }
    }
    let result: ParsedFrame;
    try {
      result = parseCoinbaseFrame(frame, RECEIVED_US);
    } catch (error) {
      assert.ok(error instanceof MalformedFrameError, `${error} on ${frame}`);
      rejected++;
      continue;
    }
    parsed++;
    for (const event of result.events) {
      assert.ok(Number.isInteger(event.ts_exchange), frame);
      if (event.kind === "trade") {
        const trade = event as TradeEvent;
        assert.ok(isDecimal(trade.price) && isDecimal(trade.qty), frame);
      } else if (event.kind === "top") {
        const top = event as TopEvent;
        assert.ok([top.bid_price, top.bid_qty, top.ask_price, top.ask_qty].every(isDecimal), frame);
      }
    }
    if (result.control?.type === "book") {
      for (const [price, qty] of [...result.control.bids, ...result.control.asks]) {
        assert.ok(isDecimal(price) && isDecimal(qty), frame);
      }
    }
  }
  assert.ok(parsed > 1_000 && rejected > 1_000, `parsed ${parsed}, rejected ${rejected}`);
});
