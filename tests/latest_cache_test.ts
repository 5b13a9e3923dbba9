/**
 * LatestCache unit tests (no services), and the latest-cache actor against a
 * private nats-server (so no other test's `clean.md.*` traffic reaches it).
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { LatestCache } from "../market/latest_cache.ts";
import type {
  BarEvent,
  BookEvent,
  Exchange,
  MarketEvent,
  QuoteEvent,
  TopEvent,
  TradeEvent,
} from "../market/events.ts";
import { cleanSubject } from "../market/subjects.ts";
import { latestCacheActor, newestEvents } from "../actors/latest_cache.ts";
import { startRoot } from "../actors/supervisor.ts";
import { encodeJson } from "../adapters/codec.ts";
import { RecordingClock } from "../lib/clock.ts";
import { memoryLogger } from "../lib/log.ts";
import { startNatsServer } from "./_nats_server.ts";
import { waitFor } from "./_helpers.ts";

const T0_MS = 1_700_000_000_000;
const T0_US = T0_MS * 1000;

function trade(
  exchange: Exchange,
  symbol: string,
  id: string,
  price: string,
  tsMs: number,
): TradeEvent {
  return {
    kind: "trade",
    exchange,
    symbol,
    venue_symbol: symbol.replace("-", ""),
    ts_exchange: tsMs * 1000 - 500,
    ts_local: tsMs * 1000,
    trade_id: id,
    price,
    qty: "0.5",
    side: "buy",
  };
}

function top(exchange: Exchange, symbol: string, bid: string, ask: string, tsMs: number): TopEvent {
  return {
    kind: "top",
    exchange,
    symbol,
    venue_symbol: symbol,
    ts_exchange: tsMs * 1000 - 500,
    ts_local: tsMs * 1000,
    bid_price: bid,
    bid_qty: "1",
    ask_price: ask,
    ask_qty: "2",
  };
}

function quote(symbol: string, bid: string, ask: string, tsMs: number): QuoteEvent {
  return {
    kind: "quote",
    exchange: "alpaca",
    symbol,
    venue_symbol: symbol,
    ts_exchange: tsMs * 1000,
    ts_local: tsMs * 1000,
    bid_price: bid,
    bid_qty: "100",
    ask_price: ask,
    ask_qty: "200",
    bid_exchange: "V",
    ask_exchange: "Q",
  };
}

function bar(symbol: string, startMs: number, close: string): BarEvent {
  return {
    kind: "bar",
    exchange: "alpaca",
    symbol,
    venue_symbol: symbol,
    ts_exchange: (startMs + 60_000) * 1000,
    ts_local: (startMs + 60_100) * 1000,
    interval: "1m",
    start: startMs * 1000,
    open: "1",
    high: "2",
    low: "0.5",
    close,
    volume: "10",
    trades: 3,
    vwap: null,
  };
}

Deno.test("latest is null and bestBidAsk null before any event", () => {
  const cache = new LatestCache();
  assert.equal(cache.latest("BTC-USDT"), null);
  assert.equal(cache.bestBidAsk("binance", "BTC-USDT", 1_000, T0_MS), null);
  assert.equal(cache.ageMs("binance", "BTC-USDT", T0_MS), null);
  assert.equal(cache.has("BTC-USDT"), false);
  assert.deepEqual(cache.symbols(), new Map());
});

Deno.test("latest keeps the last trade, quote and bar per exchange with ages from the clock", () => {
  const clock = new RecordingClock(T0_MS + 1_000);
  const cache = new LatestCache({ clock });
  assert.equal(
    cache.update([
      trade("binance", "BTC-USDT", "1", "42000.10", T0_MS),
      trade("binance", "BTC-USDT", "2", "42000.20", T0_MS + 100),
    ]),
    2,
  );
  cache.update([top("binance", "BTC-USDT", "42000.10", "42000.30", T0_MS + 200)]);
  cache.update([trade("coinbase", "BTC-USDT", "9", "41999.00000001", T0_MS + 300)]);

  const snapshot = cache.latest("BTC-USDT");
  assert.ok(snapshot);
  assert.equal(snapshot.symbol, "BTC-USDT");
  assert.deepEqual(snapshot.exchanges.map((e) => e.exchange), ["binance", "coinbase"]);
  const binance = snapshot.exchanges[0]!;
  assert.deepEqual(binance.trade, {
    trade_id: "2",
    price: "42000.20",
    qty: "0.5",
    side: "buy",
    ts_exchange: (T0_MS + 100) * 1000 - 500,
    ts_local: (T0_MS + 100) * 1000,
    age_ms: 900,
  });
  assert.deepEqual(binance.quote, {
    source: "top",
    bid_price: "42000.10",
    bid_qty: "1",
    ask_price: "42000.30",
    ask_qty: "2",
    ts_exchange: (T0_MS + 200) * 1000 - 500,
    ts_local: (T0_MS + 200) * 1000,
    age_ms: 800,
  });
  assert.equal(binance.bar, null);
  assert.equal(binance.updated_us, (T0_MS + 200) * 1000);
  assert.equal(binance.age_ms, 800);
  // The freshest is the most recently updated venue: coinbase at +300 ms.
  assert.equal(snapshot.freshest.exchange, "coinbase");
  assert.equal(snapshot.freshest.trade?.price, "41999.00000001");

  const onlyBinance = cache.latest("BTC-USDT", "binance");
  assert.deepEqual(onlyBinance?.exchanges.map((e) => e.exchange), ["binance"]);
  assert.equal(onlyBinance?.freshest.exchange, "binance");
  assert.equal(cache.latest("BTC-USDT", "kraken"), null);

  clock.advance(5_000);
  assert.equal(cache.latest("BTC-USDT")?.freshest.age_ms, 5_700);
});

Deno.test("quotes and bars are kept; book events are skipped", () => {
  const cache = new LatestCache({ clock: new RecordingClock(T0_MS) });
  const book: BookEvent = {
    kind: "book",
    exchange: "kraken",
    symbol: "BTC-USD",
    venue_symbol: "BTC/USD",
    ts_exchange: T0_US,
    ts_local: T0_US,
    action: "snapshot",
    bids: [["1", "1"]],
    asks: [["2", "1"]],
    sequence: null,
  };
  assert.equal(cache.update([book]), 0);
  assert.equal(cache.stats().skipped, 1);
  assert.equal(cache.latest("BTC-USD"), null);

  cache.update([quote("AAPL", "189.5", "189.52", T0_MS), bar("AAPL", T0_MS - 60_000, "189.51")]);
  const entry = cache.latest("AAPL")?.freshest;
  assert.equal(entry?.quote?.source, "quote");
  assert.equal(entry?.quote?.ask_price, "189.52");
  assert.equal(entry?.bar?.close, "189.51");
  assert.equal(entry?.bar?.start, (T0_MS - 60_000) * 1000);
  assert.equal(entry?.trade, null);
});

Deno.test("older events do not replace newer ones", () => {
  const cache = new LatestCache();
  cache.update([trade("binance", "ETH-USDT", "5", "3000", T0_MS + 10)]);
  cache.update([trade("binance", "ETH-USDT", "4", "2999", T0_MS)]);
  cache.update([bar("AAPL", T0_MS, "2"), bar("AAPL", T0_MS - 60_000, "1")]);
  // Same timestamp: the later arrival wins.
  cache.update([trade("binance", "ETH-USDT", "6", "3001", T0_MS + 10)]);
  assert.equal(cache.latest("ETH-USDT")?.freshest.trade?.trade_id, "6");
  assert.equal(cache.latest("AAPL")?.freshest.bar?.close, "2");
  assert.equal(cache.stats().out_of_order, 2);
});

Deno.test("bestBidAsk answers only when the quote is fresh enough", () => {
  const cache = new LatestCache();
  cache.update([top("binance", "BTC-USDT", "100.5", "100.6", T0_MS)]);
  const fresh = cache.bestBidAsk("binance", "BTC-USDT", 2_000, T0_MS + 1_500);
  assert.deepEqual(fresh, {
    exchange: "binance",
    symbol: "BTC-USDT",
    bid_price: "100.5",
    bid_qty: "1",
    ask_price: "100.6",
    ask_qty: "2",
    ts_exchange: T0_US - 500,
    ts_local: T0_US,
    age_ms: 1_500,
  });
  assert.ok(cache.bestBidAsk("binance", "BTC-USDT", 2_000, T0_MS + 2_000), "at the limit");
  assert.equal(cache.bestBidAsk("binance", "BTC-USDT", 2_000, T0_MS + 2_001), null, "stale");
  assert.equal(cache.bestBidAsk("coinbase", "BTC-USDT", 2_000, T0_MS), null, "other venue");
  assert.equal(cache.bestBidAsk("binance", "ETH-USDT", 2_000, T0_MS), null, "other symbol");
  assert.equal(cache.bestBidAsk("binance", "BTC-USDT", Number.NaN, T0_MS), null, "NaN max age");

  // A trade alone gives no bid/ask.
  cache.update([trade("kraken", "BTC-USD", "1", "100", T0_MS)]);
  assert.equal(cache.bestBidAsk("kraken", "BTC-USD", 2_000, T0_MS), null);
  // A newer quote refreshes it.
  cache.update([top("binance", "BTC-USDT", "101", "102", T0_MS + 10_000)]);
  assert.equal(cache.bestBidAsk("binance", "BTC-USDT", 2_000, T0_MS + 10_500)?.ask_price, "102");
  assert.equal(cache.ageMs("binance", "BTC-USDT", T0_MS + 10_500), 500);
});

Deno.test("malformed events are counted and skipped, never thrown", () => {
  const cache = new LatestCache();
  const good = trade("binance", "BTC-USDT", "1", "1", T0_MS);
  const bad = [
    null,
    42,
    "text",
    { ...good, exchange: "nyse" },
    { ...good, symbol: "" },
    { ...good, symbol: 7 },
    { ...good, symbol: "X".repeat(65) },
    { ...good, price: 1.5 },
    { ...good, ts_local: "1" },
    { ...good, kind: "nope" },
    { ...top("binance", "BTC-USDT", "1", "2", T0_MS), ask_qty: null },
    { ...bar("AAPL", T0_MS, "1"), start: "0" },
  ] as unknown as MarketEvent[];
  assert.equal(cache.update([...bad, good]), 1);
  assert.equal(cache.stats().malformed, bad.length);
  assert.deepEqual([...cache.symbols().entries()], [["binance", ["BTC-USDT"]]]);
});

Deno.test("symbols lists what each venue has seen, sorted", () => {
  const cache = new LatestCache();
  cache.update([trade("binance", "ETH-USDT", "1", "1", T0_MS)]);
  cache.update([trade("binance", "BTC-USDT", "1", "1", T0_MS)]);
  cache.update([trade("coinbase", "BTC-USD", "1", "1", T0_MS)]);
  assert.deepEqual(
    cache.symbols(),
    new Map([["binance", ["BTC-USDT", "ETH-USDT"]], ["coinbase", ["BTC-USD"]]]),
  );
  assert.equal(cache.has("BTC-USDT", "binance"), true);
  assert.equal(cache.has("BTC-USDT", "coinbase"), false);
  assert.equal(cache.stats().entries, 3);
});

Deno.test("a full cache refuses new pairs but keeps updating held ones", () => {
  const cache = new LatestCache({ maxEntries: 2 });
  cache.update([trade("binance", "A-USDT", "1", "1", T0_MS)]);
  cache.update([trade("binance", "B-USDT", "1", "1", T0_MS)]);
  assert.equal(cache.update([trade("binance", "C-USDT", "1", "1", T0_MS)]), 0);
  assert.equal(cache.update([trade("binance", "A-USDT", "2", "2", T0_MS + 1)]), 1);
  assert.equal(cache.stats().rejected_new_keys, 1);
  assert.equal(cache.latest("C-USDT"), null);
  assert.equal(cache.latest("A-USDT")?.freshest.trade?.price, "2");
  assert.throws(() => new LatestCache({ maxEntries: 0 }), RangeError);
});

Deno.test("update is O(1) per event: 200,000 trades apply quickly", () => {
  const cache = new LatestCache();
  const batches: TradeEvent[][] = [];
  for (let round = 0; round < 200; round++) {
    const batch: TradeEvent[] = [];
    for (let i = 0; i < 1_000; i++) {
      const n = round * 1_000 + i;
      batch.push(trade("binance", i % 2 ? "BTC-USDT" : "ETH-USDT", String(n), "1", T0_MS + n));
    }
    batches.push(batch);
  }
  const started = performance.now();
  for (const batch of batches) cache.update(batch);
  const elapsed = performance.now() - started;
  assert.equal(cache.stats().applied, 200_000);
  assert.equal(cache.latest("BTC-USDT")?.freshest.trade?.trade_id, "199999");
  // Generous bound (a few ms is typical): fails only for a pathological slowdown.
  assert.ok(elapsed < 1_000, `200,000 updates took ${elapsed.toFixed(0)} ms`);
});

Deno.test("the latest-cache actor applies arrays published on clean.md.* to the cache", async () => {
  await using server = await startNatsServer({ jetstream: false });
  const nats = await connect({ servers: server.url });
  try {
    const cache = new LatestCache();
    const { log, lines } = memoryLogger();
    await using root = await startRoot({ name: "root" }, [latestCacheActor({ nats, cache, log })]);

    nats.publish(
      cleanSubject("trade", "binance", "BTC-USDT"),
      encodeJson([
        trade("binance", "BTC-USDT", "1", "42000.1", T0_MS),
        trade("binance", "BTC-USDT", "2", "42000.2", T0_MS + 1),
      ]),
    );
    nats.publish(
      cleanSubject("top", "binance", "BTC-USDT"),
      encodeJson([top("binance", "BTC-USDT", "42000.1", "42000.3", T0_MS + 2)]),
    );
    nats.publish(
      cleanSubject("quote", "alpaca", "BRK.B"),
      encodeJson([quote("BRK.B", "1", "2", T0_MS)]),
    );
    // Not arrays, not JSON, and a raw (unvalidated) subject the actor must not follow.
    // On subjects of their own: a later message on the same subject would replace them (conflation).
    nats.publish(cleanSubject("trade", "binance", "XRP-USDT"), encodeJson({ not: "an array" }));
    nats.publish(cleanSubject("trade", "binance", "ADA-USDT"), new TextEncoder().encode("{oops"));
    // Book messages are not followed at all: the cache does not hold books.
    nats.publish(cleanSubject("book", "binance", "BTC-USDT"), new TextEncoder().encode("{oops"));
    nats.publish(
      "md.trade.binance.ETH-USDT",
      encodeJson([trade("binance", "ETH-USDT", "1", "1", T0_MS)]),
    );
    nats.publish(
      cleanSubject("trade", "coinbase", "BTC-USD"),
      encodeJson([trade("coinbase", "BTC-USD", "7", "41000", T0_MS)]),
    );
    await nats.flush();

    await waitFor(() => cache.has("BTC-USD", "coinbase"), 5_000, "coinbase trade in the cache");
    const entry = cache.latest("BTC-USDT", "binance")?.freshest;
    assert.equal(entry?.trade?.trade_id, "2");
    assert.equal(entry?.quote?.ask_price, "42000.3");
    assert.equal(cache.latest("BRK.B")?.freshest.quote?.bid_price, "1");
    assert.ok(cache.bestBidAsk("binance", "BTC-USDT", 1_000, T0_MS + 500));
    assert.equal(cache.has("ETH-USDT"), false, "md.* is not followed");

    const row = root.inspect().find((info) => info.name === "root/latest_cache");
    assert.equal(row?.status, "running");
    assert.equal(row?.mailbox?.capacity, 4096);
    assert.equal(row?.mailbox?.dropped, 0);
    // The object message is counted by the cache; the bad JSON by the actor runtime (logged).
    await waitFor(() => cache.stats().malformed === 1, 5_000, "non-array counted");
    assert.equal(lines.filter((line) => /not an array/.test(String(line.message))).length, 1);
    assert.ok(lines.some((line) => line.message === "malformed message dropped"));
  } finally {
    await nats.close();
  }
});

Deno.test("the latest-cache actor ends on the newest values even when its mailbox overflows", async () => {
  await using server = await startNatsServer({ jetstream: false });
  const nats = await connect({ servers: server.url });
  try {
    const cache = new LatestCache();
    await using root = await startRoot({ name: "root" }, [
      latestCacheActor({ nats, cache }, { name: "latest", capacity: 2 }),
    ]);
    const subject = cleanSubject("trade", "binance", "BTC-USDT");
    const total = 20_000;
    for (let n = 1; n <= total; n++) {
      nats.publish(
        subject,
        encodeJson([trade("binance", "BTC-USDT", String(n), `${n}`, T0_MS + n)]),
      );
    }
    await nats.flush();
    await waitFor(
      () => cache.latest("BTC-USDT")?.freshest.trade?.trade_id === String(total),
      10_000,
      "the last trade in the cache",
    );
    const mailbox = root.inspect().find((info) => info.name === "root/latest")?.mailbox;
    assert.equal(mailbox?.capacity, 2);
    // Every message was either applied or dropped, and the order was kept.
    assert.equal(cache.stats().applied + (mailbox?.dropped ?? 0), total);
    assert.equal(cache.stats().out_of_order, 0);
  } finally {
    await nats.close();
  }
});

Deno.test("newestEvents parses only the array's newest event, wherever it is, and all of anything else", () => {
  const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
  const first = trade("binance", "BTC-USDT", "1", "42000.1", T0_MS);
  const last = trade("binance", "BTC-USDT", "2", "42000.2", T0_MS + 1);
  assert.deepEqual(newestEvents(encode([first, last])), [last]);
  // Coinbase lists a frame's trades newest first.
  const middle = trade("coinbase", "BTC-USD", "3", "42000.3", T0_MS);
  assert.deepEqual(newestEvents(encode([last, middle, first])), [last]);
  assert.deepEqual(newestEvents(encode([first])), [first]);
  // Two Coinbase frames in one message, each newest first: the newest is in the middle.
  const t = (id: string, ms: number) => trade("coinbase", "BTC-USD", id, `6500${id}`, T0_MS + ms);
  const frames = [t("3", 3), t("2", 2), t("1", 1), t("6", 6), t("5", 5), t("4", 4)];
  assert.deepEqual(newestEvents(encode(frames)), [t("6", 6)]);
  // A tie goes to the later element; no exchange time at all, to the last element.
  assert.deepEqual(newestEvents(encode([t("7", 6), t("6", 6), t("1", 1)])), [t("6", 6)]);
  assert.deepEqual(newestEvents(encode([{ kind: "x", n: 1 }, { kind: "x", n: 2 }])), [{
    kind: "x",
    n: 2,
  }]);
  // A "},{" inside a string or a nested object is no cut: the whole message is decoded.
  const tricky = { ...last, trade_id: '2},{"kind":"x"}' };
  assert.deepEqual(newestEvents(encode([first, tricky])), [first, tricky]);
  const nested = { ...last, venue: [{ a: 1 }, { b: 2 }] };
  assert.deepEqual(newestEvents(encode([first, nested])), [first, nested]);
  assert.deepEqual(newestEvents(encode([nested, last])), [last]); // cut between the two: fine
  assert.deepEqual(newestEvents(encode([first, "text"])), [first, "text"]);
  assert.deepEqual(newestEvents(encode({ not: "an array" })), { not: "an array" });
  assert.deepEqual(newestEvents(encode([1, 2])), [1, 2]);
  assert.deepEqual(newestEvents(encode([])), []);
  assert.throws(() => newestEvents(new TextEncoder().encode("[{oops")), SyntaxError);
});
