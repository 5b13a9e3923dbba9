/**
 * The Binance local book against the depth of its REST snapshot. Binance's
 * "How to manage a local order book correctly" closes with: "Since depth
 * snapshots retrieved from the API have a limit on the number of price levels
 * (5000 on each side maximum), you won't learn the quantities for the levels
 * outside of the initial snapshot unless they change." A snapshot side that
 * comes back with `limit` levels covers the book down to its worst price
 * only: a level a diff sends beyond it must neither be held nor published
 * (the levels between it and the boundary are unknown), and a side with no
 * level left within its coverage must resync.
 *
 * Review 43 found the session publishing a deep bid (92, beyond a 5-level
 * snapshot 100..96) as the best bid once 100..96 were taken, while the venue's
 * best bid was 95.
 */
import assert from "node:assert/strict";
import type { BookEvent, Level, MarketEvent } from "../market/events.ts";
import { nullLogger } from "../lib/log.ts";
import { compareDecimal } from "../market/decimal.ts";
import { OrderBook } from "../market/order_book.ts";
import type { SessionIO } from "../venues/session.ts";
import { BinanceBookSync, type BinanceSyncResult } from "../venues/binance/book_sync.ts";
import type { BinanceDepthDiff, BinanceDepthSnapshot } from "../venues/binance/parse.ts";
import { binanceSession } from "../venues/binance/session.ts";
import { FakeBinanceBook, FakeBinanceMarket } from "./fakes/binance_server.ts";
import { waitFor } from "./_helpers.ts";

const RX = 1_786_000_000_000_000;

/** A fake venue book that hands out its snapshots and its changes as diffs. */
class Venue {
  readonly book: FakeBinanceBook;
  constructor(bids: Level[], asks: Level[], lastUpdateId = 1000) {
    this.book = new FakeBinanceBook("BTCUSDT", lastUpdateId, bids, asks);
  }
  snapshot(limit: number): BinanceDepthSnapshot {
    return {
      lastUpdateId: this.book.lastUpdateId,
      bids: this.book.levels("bid", limit),
      asks: this.book.levels("ask", limit),
    };
  }
  /** Changes the book in one update id and returns the diff that says so. */
  change(bids: Level[], asks: Level[]): BinanceDepthDiff {
    this.book.apply(bids, asks);
    const id = ++this.book.lastUpdateId;
    return {
      type: "depth_diff",
      symbol: "BTC-USDT",
      venueSymbol: "BTCUSDT",
      firstUpdateId: id,
      finalUpdateId: id,
      bids,
      asks,
      eventTimeUs: RX + id,
      receivedUs: RX + id,
    };
  }
}

/** Levels `from` down (bids) or up (asks) by one, `count` of them, size 1. */
function ladder(from: number, count: number, step: 1 | -1): Level[] {
  return Array.from({ length: count }, (_, i): Level => [`${from + step * i}.00`, "1.00"]);
}

/** Applies published book events to `book`, as a consumer does. */
function consume(book: OrderBook, events: readonly MarketEvent[]): OrderBook {
  for (const event of events) {
    if (event.kind !== "book") continue;
    if (event.action === "snapshot") book.replace(event.bids, event.asks);
    else book.applyAll(event.bids, event.asks);
  }
  return book;
}

/** The book a consumer rebuilds from published book events. */
function replay(events: readonly MarketEvent[]): OrderBook {
  return consume(new OrderBook(), events);
}

function assertSameBook(actual: OrderBook, expected: OrderBook, label: string): void {
  assert.deepEqual(actual.levels("bid"), expected.levels("bid"), `${label}: bids`);
  assert.deepEqual(actual.levels("ask"), expected.levels("ask"), `${label}: asks`);
}

function ok(result: BinanceSyncResult, label: string): BookEvent[] {
  assert.equal(result.status, "ok", `${label}: ${result.reason}`);
  return result.events;
}

Deno.test("a full snapshot side bounds the book: levels a diff sends beyond its worst price are neither held nor published", () => {
  const venue = new Venue(ladder(100, 10, -1), ladder(101, 10, 1));
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 5 });
  const published = ok(sync.onSnapshot(venue.snapshot(5), RX), "snapshot");
  assert.deepEqual(sync.book.levels("bid").map(([p]) => p), [
    "100.00",
    "99.00",
    "98.00",
    "97.00",
    "96.00",
  ]);
  // Beyond both boundaries: a deep bid changes, a deep ask appears.
  const deep = ok(sync.onDiff(venue.change([["92.00", "7.00"]], [["107.00", "3.00"]])), "deep");
  assert.deepEqual(deep.map((e) => [e.action, e.bids, e.asks, e.sequence]), [[
    "delta",
    [],
    [],
    1001,
  ]]);
  // A diff that mixes covered and uncovered levels keeps the covered ones only.
  const mixed = ok(
    sync.onDiff(venue.change([["97.00", "2.00"], ["91.00", "0"]], [["110.00", "0"]])),
    "mixed",
  );
  assert.deepEqual(mixed[0]!.bids, [["97.00", "2.00"]]);
  assert.deepEqual(mixed[0]!.asks, []);
  published.push(...deep, ...mixed);
  for (const price of ["100.00", "99.00", "98.00"]) {
    published.push(...ok(sync.onDiff(venue.change([[price, "0"]], [])), price));
  }
  assert.deepEqual(sync.book.levels("bid"), [["97.00", "2.00"], ["96.00", "1.00"]]);
  assert.deepEqual(sync.book.levels("ask"), ladder(101, 5, 1));
  assert.deepEqual(sync.book.top().bid, venue.book.levels("bid", 1)[0]);
  assertSameBook(replay(published), sync.book, "replayed events");
});

Deno.test("a side emptied within the snapshot's coverage is resync with a reason naming the coverage", () => {
  const venue = new Venue(ladder(100, 10, -1), ladder(101, 10, 1));
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 5 });
  ok(sync.onSnapshot(venue.snapshot(5), RX), "snapshot");
  ok(sync.onDiff(venue.change([["92.00", "7.00"]], [])), "deep bid");
  for (const price of ["100.00", "99.00", "98.00", "97.00"]) {
    ok(sync.onDiff(venue.change([[price, "0"]], [])), price);
  }
  const last = sync.onDiff(venue.change([["96.00", "0"]], []));
  assert.equal(last.status, "resync");
  assert.deepEqual(last.events, []);
  assert.match(
    last.reason!,
    /No level left at update 1006 among the bids down to 96 the 5-level snapshot covered/,
  );
  assert.equal(sync.state, "waiting_snapshot");
  assert.deepEqual(sync.book.size(), { bids: 0, asks: 0 }, "the book is dropped");
  // The fresh snapshot holds the real best bid.
  const fresh = ok(sync.onSnapshot(venue.snapshot(5), RX), "fresh snapshot");
  assert.deepEqual(fresh[0]!.bids[0], ["95.00", "1.00"]);
  assert.deepEqual(sync.book.levels("bid").map(([p]) => p), [
    "95.00",
    "94.00",
    "93.00",
    "92.00",
    "91.00",
  ]);

  // The ask side, bounded above.
  const asks = new Venue(ladder(100, 3, -1), ladder(101, 4, 1));
  const askSync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 2 });
  ok(askSync.onSnapshot(asks.snapshot(2), RX), "ask snapshot");
  ok(askSync.onDiff(asks.change([], [["101.00", "0"]])), "101 taken");
  const emptied = askSync.onDiff(asks.change([], [["102.00", "0"], ["103.50", "4.00"]]));
  assert.equal(emptied.status, "resync");
  assert.match(emptied.reason!, /among the asks up to 102 the 2-level snapshot covered/);
});

Deno.test("a snapshot side with fewer levels than the limit is the whole side: deeper levels are held and it may empty", () => {
  const venue = new Venue(ladder(100, 3, -1), ladder(101, 10, 1));
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 5 });
  const published = ok(sync.onSnapshot(venue.snapshot(5), RX), "snapshot");
  published.push(...ok(sync.onDiff(venue.change([["90.00", "4.00"]], [])), "deep bid"));
  for (const price of ["100.00", "99.00", "98.00"]) {
    published.push(...ok(sync.onDiff(venue.change([[price, "0"]], [])), price));
  }
  assert.deepEqual(sync.book.levels("bid"), [["90.00", "4.00"]]);
  published.push(...ok(sync.onDiff(venue.change([["90.00", "0"]], [])), "last bid"));
  assert.deepEqual(sync.book.levels("bid"), [], "an empty side of a complete snapshot is real");
  assertSameBook(replay(published), sync.book, "replayed events");
});

Deno.test("the boundary price itself is covered, in any spelling", () => {
  const venue = new Venue(ladder(100, 10, -1), ladder(101, 10, 1));
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 5 });
  ok(sync.onSnapshot(venue.snapshot(5), RX), "snapshot");
  const events = ok(
    sync.onDiff(venue.change([["96", "3"], ["95.9", "1"]], [["105.000", "2"]])),
    "edge",
  );
  assert.deepEqual(events[0]!.bids, [["96", "3"]]);
  assert.deepEqual(events[0]!.asks, [["105.000", "2"]]);
  assert.deepEqual(sync.book.levels("bid").at(-1), ["96", "3"]);
  assert.deepEqual(sync.book.levels("ask").at(-1), ["105.000", "2"]);
});

Deno.test("buffered diffs beyond the snapshot's coverage are left out of the snapshot event; one that empties a side is resync", () => {
  const venue = new Venue(ladder(100, 10, -1), ladder(101, 10, 1));
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 5 });
  const snapshot = venue.snapshot(5);
  const diffs = [
    venue.change([["92.00", "7.00"]], []),
    venue.change([["100.00", "0"]], [["120.00", "1.00"]]),
  ];
  for (const diff of diffs) assert.equal(sync.onDiff(diff).status, "waiting_snapshot");
  const [event] = ok(sync.onSnapshot(snapshot, RX), "snapshot");
  assert.deepEqual(event!.bids, ladder(99, 4, -1));
  assert.deepEqual(event!.asks, ladder(101, 5, 1));
  assert.equal(event!.sequence, diffs[1]!.finalUpdateId);
  assertSameBook(replay([event!]), sync.book, "snapshot event");

  const emptying = new Venue(ladder(100, 4, -1), ladder(101, 4, 1));
  const other = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 2 });
  const small = emptying.snapshot(2);
  other.onDiff(emptying.change([["100.00", "0"], ["99.00", "0"]], []));
  const result = other.onSnapshot(small, RX);
  assert.equal(result.status, "resync");
  assert.match(result.reason!, /among the bids down to 99 the 2-level snapshot covered/);
  assert.equal(other.state, "waiting_snapshot");
});

Deno.test("snapshotLimit must be a positive integer; without it a side is cut at Binance's 5000 levels", () => {
  for (const snapshotLimit of [0, -1, 2.5, NaN]) {
    assert.throws(
      () => new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit }),
      RangeError,
      String(snapshotLimit),
    );
  }
  const venue = new Venue(ladder(10_000, 5_000, -1), ladder(10_001, 1, 1));
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT");
  ok(sync.onSnapshot(venue.snapshot(5_000), RX), "snapshot");
  const events = ok(
    sync.onDiff(venue.change([["5000.00", "1.00"]], [["20000.00", "1.00"]])),
    "deep",
  );
  assert.deepEqual(events[0]!.bids, [], "beyond the 5000th bid");
  assert.deepEqual(events[0]!.asks, [["20000.00", "1.00"]], "the one-level ask side is complete");
});

/** A small deterministic PRNG (mulberry32), so a failure replays. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Cents as a price string: 9950 → "99.50". */
function price(cents: number): string {
  return `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, "0")}`;
}

Deno.test("random diffs: the book and the events published stay the venue's book within the snapshot's coverage", () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const next = random(seed);
    const limit = 3 + Math.floor(next() * 8);
    const bids: Level[] = [];
    const asks: Level[] = [];
    for (let c = 9_970; c <= 9_999; c++) if (next() < 0.6) bids.push([price(c), "1.00"]);
    for (let c = 10_001; c <= 10_030; c++) if (next() < 0.6) asks.push([price(c), "1.00"]);
    const venue = new Venue(bids, asks);
    const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: limit });
    let snapshot = venue.snapshot(limit);
    const consumer = consume(new OrderBook(), ok(sync.onSnapshot(snapshot, RX), `seed ${seed}`));
    let resyncs = 0;
    let beyond = 0;
    for (let step = 0; step < 1_500; step++) {
      const label = `seed ${seed} limit ${limit} step ${step}`;
      const changes: { bids: Level[]; asks: Level[] } = { bids: [], asks: [] };
      for (let n = 1 + Math.floor(next() * 3); n > 0; n--) {
        const bid = next() < 0.5;
        const side = bid ? changes.bids : changes.asks;
        const best = venue.book.levels(bid ? "bid" : "ask", 1)[0];
        if (best !== undefined && next() < 0.3) {
          side.push([best[0], "0"]); // The best level is taken.
          continue;
        }
        // Bids 99.70..99.99, asks 100.01..100.30: never crossed.
        const cents = bid ? 9_970 + Math.floor(next() * 30) : 10_001 + Math.floor(next() * 30);
        side.push([price(cents), next() < 0.5 ? "0" : `${1 + Math.floor(next() * 9)}.00`]);
      }
      const result = sync.onDiff(venue.change(changes.bids, changes.asks));
      if (result.status === "resync") {
        resyncs++;
        assert.match(result.reason!, /snapshot covered/, label);
        snapshot = venue.snapshot(limit);
        consume(consumer, ok(sync.onSnapshot(snapshot, RX), `${label} fresh snapshot`));
      } else {
        consume(consumer, ok(result, label));
      }
      // Expected: the venue's levels within the last snapshot's coverage.
      const expected = new OrderBook();
      const bidBound = snapshot.bids.length === limit ? snapshot.bids.at(-1)![0] : null;
      const askBound = snapshot.asks.length === limit ? snapshot.asks.at(-1)![0] : null;
      const venueBids = venue.book.levels("bid");
      const venueAsks = venue.book.levels("ask");
      expected.replace(
        venueBids.filter(([p]) => bidBound === null || compareDecimal(p, bidBound) >= 0),
        venueAsks.filter(([p]) => askBound === null || compareDecimal(p, askBound) <= 0),
      );
      beyond += venueBids.length + venueAsks.length - expected.size().bids - expected.size().asks;
      assertSameBook(sync.book, expected, label);
      assert.deepEqual(sync.book.top(), {
        bid: venueBids[0] ?? null,
        ask: venueAsks[0] ?? null,
      }, `${label}: top of book`);
      assertSameBook(consumer, sync.book, `${label}: the consumer's book`);
    }
    assert.ok(resyncs > 0, `seed ${seed}: no side ever emptied within its coverage`);
    assert.ok(beyond > 0, `seed ${seed}: no level ever lay beyond the coverage`);
  }
});

class FakeIO implements SessionIO {
  /** Every book event published, in order: emitted ones and those returned from onFrame. */
  readonly published: MarketEvent[] = [];
  readonly resyncs: string[] = [];
  readonly fetches: string[] = [];
  readonly log = nullLogger;
  readonly #controller = new AbortController();
  readonly signal = this.#controller.signal;
  constructor(readonly venue: FakeBinanceBook) {}
  send(): void {}
  reconnect(): void {}
  emit(events: MarketEvent[]): void {
    this.published.push(...events);
  }
  resynced(reason: string): void {
    this.resyncs.push(reason);
  }
  error(): void {}
  fetchText(url: string): Promise<string> {
    this.fetches.push(url);
    return Promise.resolve(this.venue.snapshotBody(Number(new URL(url).searchParams.get("limit"))));
  }
  nowUs(): number {
    return Date.now() * 1000;
  }
  close(): void {
    this.#controller.abort(new Error("closed"));
  }
}

Deno.test("binance session resyncs instead of publishing a bid beyond its snapshot_limit as the best bid", async () => {
  // The venue's book: bids 100..91, asks 101..110; snapshots of 5 levels hold bids 100..96.
  const market = new FakeBinanceMarket(["BTC-USDT"], { now: () => 1_786_000_000_123 });
  const venue = market.book("BTCUSDT");
  venue.apply(ladder(100, 10, -1), ladder(101, 10, 1));
  const session = binanceSession({
    ws_url: "ws://127.0.0.1:1",
    rest_url: "http://127.0.0.1:1",
    symbols: ["BTC-USDT"],
    channels: ["book"],
    snapshot_limit: 5,
  }, { snapshotGraceMs: 0 });
  const io = new FakeIO(venue);
  try {
    session.onOpen(io);
    await waitFor(() => io.published.length === 1, 2_000, "first snapshot published");
    // Bid 92, beyond the snapshot, changes; then the five bids the snapshot holds are taken.
    const changes: Level[] = [["92.00", "7.00"]];
    for (const p of ["100.00", "99.00", "98.00", "97.00", "96.00"]) changes.push([p, "0"]);
    for (const change of changes) {
      const frame = market.depthUpdate("BTCUSDT", [change], []);
      io.published.push(...session.onFrame(frame, 1, io));
      if (io.resyncs.length > 0) break;
      assert.deepEqual(replay(io.published).top().bid, venue.levels("bid", 1)[0]);
    }
    assert.equal(io.resyncs.length, 1, "taking 96, the last bid the snapshot covered, is resync");
    assert.match(
      io.resyncs[0]!,
      /^BTCUSDT: No level left .* bids down to 96 the 5-level snapshot covered/,
    );
    const status = () => session.status().books["BTC-USDT"]!;
    await waitFor(() => status().snapshots === 2, 2_000, "fresh snapshot published");
    assert.equal(io.fetches.length, 2);
    const book = replay(io.published);
    assert.deepEqual(book.levels("bid"), venue.levels("bid", 5));
    assert.deepEqual(book.top().bid, ["95.00", "1.00"]);
    assert.equal(status().resyncs, 1);
    assert.equal(status().state, "synced");
    assert.match(status().last_resync!, /bids down to 96/);
  } finally {
    io.close();
  }
});
