import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import {
  type BookEvent,
  isoToUs,
  MalformedFrameError,
  type MarketEvent,
  type TopEvent,
  type TradeEvent,
} from "../market/events.ts";
import { OrderBook } from "../market/order_book.ts";
import type { FeedStatus } from "../market/status.ts";
import type { DeadLetter } from "../market/subjects.ts";
import { Validator } from "../market/validation.ts";
import type { SessionIO } from "../venues/session.ts";
import { krakenChecksum } from "../venues/kraken/checksum.ts";
import {
  KrakenSession,
  krakenSession,
  type KrakenSessionConfig,
  type KrakenSessionStatus,
} from "../venues/kraken/session.ts";
import { waitFor } from "./_helpers.ts";
import {
  FakeKrakenMarket,
  type FakeKrakenServer,
  HEARTBEAT_FRAME,
  startKrakenServer,
  statusFrame,
} from "./fakes/kraken_server.ts";
import { ofKind, startTestFeed, watchVenue } from "./_feed_harness.ts";

const FIXTURES = new URL("../../shared/fixtures/kraken/", import.meta.url);
/** The real MINA/GBP v2 session: line 1 is the subscribe this client sent. */
const MINA = Deno.readTextFileSync(new URL("v2_book_minagbp_d25_2026-08-16.raw.jsonl", FIXTURES))
  .split("\n").filter((line) => line !== "");
const RX = 1_786_000_000_000_000;
const NATS_URL = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";

function config(overrides: Partial<KrakenSessionConfig> = {}): KrakenSessionConfig {
  return {
    ws_url: "ws://127.0.0.1:1/v2",
    symbols: ["BTC-USD"],
    channels: ["trades", "book"],
    book_depth: 10,
    ...overrides,
  };
}

/** A SessionIO that records what the session asks for. */
class FakeIO implements SessionIO {
  readonly sent: string[] = [];
  readonly reconnects: string[] = [];
  readonly emitted: MarketEvent[] = [];
  readonly resyncs: string[] = [];
  readonly errors: string[] = [];
  readonly log = nullLogger;
  readonly signal = new AbortController().signal;

  send(text: string): void {
    this.sent.push(text);
  }
  reconnect(reason: string): void {
    this.reconnects.push(reason);
  }
  emit(events: MarketEvent[]): void {
    this.emitted.push(...events);
  }
  resynced(reason: string): void {
    this.resyncs.push(reason);
  }
  error(message: string): void {
    this.errors.push(message);
  }
  fetchText(): Promise<string> {
    return Promise.reject(new Error("Kraken sessions fetch nothing"));
  }
  /** What `nowUs` answers; the wall clock unless a test sets it. */
  now: () => number = () => Date.now() * 1000;
  nowUs(): number {
    return this.now();
  }
}

/** Applies published book events to a book, as a consumer would. */
function replay(events: readonly MarketEvent[], symbol: string): OrderBook {
  const book = new OrderBook();
  for (const event of events) {
    if (event.kind !== "book" || event.symbol !== symbol) continue;
    if (event.action === "snapshot") book.replace(event.bids, event.asks);
    else book.applyAll(event.bids, event.asks);
  }
  return book;
}

function seeded(depth = 10): FakeKrakenMarket {
  const market = new FakeKrakenMarket(["BTC/USD"], {
    priceDecimals: { "BTC/USD": 1 },
    nowUs: () => RX - 5_000,
  });
  const bids: [number, number][] = [];
  const asks: [number, number][] = [];
  for (let i = 0; i < depth + 5; i++) {
    bids.push([65_000 - i * 0.5, 0.1 + i]);
    asks.push([65_000.5 + i * 0.5, 0.2 + i]);
  }
  market.book("BTC/USD").set("bid", bids);
  market.book("BTC/USD").set("ask", asks);
  return market;
}

Deno.test("kraken session subscribes to trade and book for every symbol on open", () => {
  const session = krakenSession(config({ symbols: ["BTC-USD", "ETH-BTC"], book_depth: 25 }));
  const io = new FakeIO();
  session.onOpen(io);
  const sent = io.sent.map((text) => JSON.parse(text));
  assert.equal(sent.length, 2);
  assert.deepEqual(sent[0].params, {
    channel: "trade",
    symbol: ["BTC/USD", "ETH/BTC"],
    snapshot: false,
  });
  assert.deepEqual(sent[1].params, {
    channel: "book",
    symbol: ["BTC/USD", "ETH/BTC"],
    depth: 25,
    snapshot: true,
  });
  assert.equal(sent[0].method, "subscribe");
  assert.equal(typeof sent[1].req_id, "number");
  assert.equal(session.url(), "ws://127.0.0.1:1/v2");

  const tradesOnly = krakenSession(config({ channels: ["trades"] }));
  const io2 = new FakeIO();
  tradesOnly.onOpen(io2);
  assert.equal(io2.sent.length, 1);
  assert.equal(krakenSession(DEFAULT_CONFIG.exchanges.kraken).status().books_total, 21);
});

Deno.test("kraken session verifies every checksum of the real MINA/GBP session", () => {
  const session = krakenSession(config({ symbols: ["MINA-GBP"], book_depth: 25 }));
  const io = new FakeIO();
  session.onOpen(io);
  const events: MarketEvent[] = [];
  for (const frame of MINA.slice(1)) events.push(...session.onFrame(frame, RX, io));
  assert.deepEqual(io.resyncs, []);
  assert.deepEqual(io.errors, []);
  const books = events.filter((event): event is BookEvent => event.kind === "book");
  assert.equal(books.length, 30);
  assert.equal(books[0]?.action, "snapshot");
  assert.equal(books[0]?.bids[0]?.[0], "0.0286");
  assert.equal(books[0]?.bids[0]?.[1], "74198.19125726");
  assert.ok(books.slice(1).every((event) => event.action === "delta"));
  assert.ok(events.some((event) => event.kind === "top"));
  const status = session.status();
  assert.equal(status.system, "online");
  assert.deepEqual(status.subscribed, { trade: 0, book: 1 });
  assert.equal(status.books_live, 1);
  assert.equal(status.checksum_failures, 0);
  assert.equal(status.heartbeats, MINA.filter((line) => line === HEARTBEAT_FRAME).length);
  // A consumer applying the deltas ends with the book Kraken's last checksum vouches for.
  const rebuilt = replay(events, "MINA-GBP");
  assert.deepEqual(rebuilt.size(), { bids: 25, asks: 25 });
  const lastChecksum = Number(
    MINA.filter((line) => line.startsWith('{"channel":"book"')).at(-1)!
      .match(/"checksum":(\d+)/)![1],
  );
  assert.equal(krakenChecksum(rebuilt.levels("ask", 10), rebuilt.levels("bid", 10)), lastChecksum);
});

Deno.test("the snapshot of a quiet Kraken book and its top pass the validator, and the update after it has its base", () => {
  // Kraken stamps a snapshot with the time the book last changed. MINA/GBP, received 3 minutes
  // after that (longer than the validator's default max_lag_ms of 2 minutes).
  const at = MINA.findIndex((frame) => frame.includes('"type":"snapshot"'));
  const lastChangeUs = isoToUs(/"timestamp":"([^"]+)"/.exec(MINA[at]!)![1]!);
  const receivedUs = lastChangeUs + 180_000_000;
  const session = krakenSession(config({ symbols: ["MINA-GBP"], book_depth: 25 }));
  const io = new FakeIO();
  session.onOpen(io);
  const snapshot = session.onFrame(MINA[at]!, receivedUs, io);
  assert.deepEqual(io.resyncs, []);
  assert.deepEqual(snapshot.map((event) => event.kind), ["book", "top"]);
  assert.ok(snapshot.every((event) => event.ts_exchange === lastChangeUs), "the venue's time");
  // The book then moves: the capture's first update, as if it happened 1 s after we subscribed.
  const update = MINA.slice(at + 1).find((frame) => frame.includes('"type":"update"'))!;
  const movedUs = receivedUs + 1_000_000;
  const moved = update.replace(
    /"timestamp":"[^"]+"/,
    `"timestamp":"${new Date(movedUs / 1000).toISOString()}"`,
  );
  const after = session.onFrame(moved, movedUs, io);
  assert.deepEqual(io.resyncs, []);
  const validator = new Validator(DEFAULT_CONFIG.validator);
  const verdicts = [...snapshot, ...after].map((event) => {
    const { rejected } = validator.validate([event], movedUs);
    return `${event.kind} ${event.kind === "book" ? event.action : ""}: ${
      rejected.map((r) => `${r.reason} ${r.detail}`).join() || "accepted"
    }`;
  });
  assert.deepEqual(verdicts, [
    "book snapshot: accepted",
    "top : accepted",
    ...after.map((event) => `${event.kind} ${event.kind === "book" ? event.action : ""}: accepted`),
  ]);
});

Deno.test("a Kraken top made from a book update delivered late is refused as stale, as the update is", () => {
  // The snapshot and its top hold as of their receipt (Kraken stamps a snapshot with the book's
  // last change); an update's top is the book as of the update's own time, here 5 minutes before
  // it arrived.
  let venueUs = RX - 180_000_000; // the book last changed 3 minutes before it was subscribed
  const market = new FakeKrakenMarket(["BTC/USD"], {
    priceDecimals: { "BTC/USD": 1 },
    nowUs: () => venueUs,
  });
  market.book("BTC/USD").set("bid", [[65_000, 1], [64_999.5, 2]]);
  market.book("BTC/USD").set("ask", [[65_000.5, 1], [65_001, 2]]);
  const session = krakenSession(config());
  const io = new FakeIO();
  session.onOpen(io);
  const snapshot = session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  const snapshotUs = venueUs;
  venueUs = RX + 60_000_000;
  const lateUs = venueUs + 300_000_000;
  const late = session.onFrame(
    market.update("BTC/USD", 10, { bids: [[65_000, 1.5]] })!,
    lateUs,
    io,
  );
  assert.deepEqual(io.resyncs, []);
  const validator = new Validator(DEFAULT_CONFIG.validator);
  assert.deepEqual(
    [...snapshot, ...late].map((event) => {
      const { rejected } = validator.validate([event], event.ts_local);
      return `${event.kind}: ${rejected.map((r) => r.reason).join() || "accepted"}`;
    }),
    ["book: accepted", "top: accepted", "book: stale", "top: stale"],
  );
  // Only the snapshot and its top carry the mark; every event keeps Kraken's time.
  const marked = (event: MarketEvent) => (event as { as_of_receipt?: unknown }).as_of_receipt;
  assert.deepEqual([...snapshot, ...late].map((e) => [e.kind, e.ts_exchange, marked(e)]), [
    ["book", snapshotUs, true],
    ["top", snapshotUs, true],
    ["book", venueUs, undefined],
    ["top", venueUs, undefined],
  ]);
});

Deno.test("kraken session resubscribes one book after a checksum mismatch", () => {
  const market = seeded();
  const session = krakenSession(config());
  const io = new FakeIO();
  session.onOpen(io);
  io.sent.length = 0;
  const published: MarketEvent[] = [];
  published.push(...session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io));
  published.push(
    ...session.onFrame(market.update("BTC/USD", 10, { bids: [[65_000, 1.5]] })!, RX, io),
  );
  assert.equal(published.filter((event) => event.kind === "book").length, 2);
  const corrupt = market.update("BTC/USD", 10, { asks: [[65_000.5, 0]] }, { corrupt: true })!;
  assert.deepEqual(session.onFrame(corrupt, RX, io), []);
  assert.equal(io.resyncs.length, 1);
  assert.match(io.resyncs[0]!, /^BTC\/USD: Checksum mismatch/);
  assert.deepEqual(io.sent.map((text) => JSON.parse(text)).map((m) => [m.method, m.params]), [
    ["unsubscribe", { channel: "book", symbol: ["BTC/USD"], depth: 10 }],
    ["subscribe", { channel: "book", symbol: ["BTC/USD"], depth: 10, snapshot: true }],
  ]);
  assert.deepEqual(io.reconnects, []);
  // Updates are dropped until the fresh snapshot.
  const dropped = market.update("BTC/USD", 10, { bids: [[64_999.5, 2]] })!;
  assert.deepEqual(session.onFrame(dropped, RX, io), []);
  assert.equal(session.status().books["BTC-USD"]?.state, "waiting");
  assert.equal(io.resyncs.length, 1);
  const fresh = session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  assert.equal((fresh[0] as BookEvent).action, "snapshot");
  published.push(...fresh);
  published.push(
    ...session.onFrame(market.update("BTC/USD", 10, { asks: [[65_001, 0]] })!, RX, io),
  );
  const rebuilt = replay(published, "BTC-USD");
  rebuilt.truncate(10);
  assert.deepEqual(rebuilt.levels("bid"), market.book("BTC/USD").levels("bid", 10));
  assert.deepEqual(rebuilt.levels("ask"), market.book("BTC/USD").levels("ask", 10));
  const status = session.status();
  assert.equal(status.checksum_failures, 1);
  assert.equal(status.books["BTC-USD"]?.resyncs, 1);
  assert.equal(status.books["BTC-USD"]?.snapshots, 2);
  assert.equal(status.books_live, 1);
});

Deno.test("kraken session reconnects when a book resubscribed in place gets no snapshot in time", () => {
  const market = seeded();
  const session = krakenSession(config(), { resyncTimeoutMs: 5_000 });
  const io = new FakeIO();
  const t0 = io.nowUs() / 1000;
  session.onOpen(io);
  session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  const corrupt = market.update("BTC/USD", 10, { asks: [[65_000.5, 0]] }, { corrupt: true })!;
  session.onFrame(corrupt, RX, io);
  assert.equal(io.resyncs.length, 1);
  // Kraken refuses (or loses) the resubscribe: heartbeats go on, no snapshot comes.
  session.onFrame(JSON.stringify({ channel: "heartbeat" }), RX, io);
  session.onTick(io, t0 + 4_000);
  assert.deepEqual(io.reconnects, []);
  session.onTick(io, t0 + 6_000);
  assert.deepEqual(io.reconnects, ["BTC/USD: no snapshot within 5000 ms of resubscribing"]);
  // A snapshot in time ends the wait: no reconnect after it.
  const again = krakenSession(config(), { resyncTimeoutMs: 5_000 });
  const io2 = new FakeIO();
  again.onOpen(io2);
  again.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io2);
  again.onFrame(
    market.update("BTC/USD", 10, { asks: [[65_001, 0]] }, { corrupt: true })!,
    RX,
    io2,
  );
  again.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io2);
  again.onTick(io2, t0 + 60_000);
  assert.deepEqual(io2.reconnects, []);
  assert.throws(() => krakenSession(config(), { resyncTimeoutMs: 0 }), RangeError);
});

/** `frame` with its checksum off by one, as a book Tradewire cannot verify would have it. */
function badChecksum(frame: string): string {
  return frame.replace(/"checksum":(\d+)/, (_, n) => `"checksum":${(Number(n) + 1) >>> 0}`);
}

/** The requests a session sent, as `method channel symbol`, and forgets them. */
function requests(io: FakeIO): string[] {
  const out = io.sent.map((text) => JSON.parse(text))
    .map((m) => `${m.method} ${m.params?.channel} ${m.params?.symbol?.join(",")}`);
  io.sent.length = 0;
  return out;
}

/** No jitter: `backoffDelay`'s spread is 0 at 0.5. */
const NO_JITTER = () => 0.5;

Deno.test("a Kraken book whose snapshots keep failing their checksum is resubscribed at a slowing pace", () => {
  const market = seeded();
  const session = krakenSession(config(), { resyncTimeoutMs: 600_000, random: NO_JITTER });
  const io = new FakeIO();
  const t0 = 1_786_000_000_000;
  let now = t0;
  io.now = () => now * 1000;
  session.onOpen(io);
  requests(io);
  // The first mismatch resubscribes at once, as a lost update is healed fastest that way.
  session.onFrame(badChecksum(market.snapshotFrame("BTC/USD", 10)), RX, io);
  assert.deepEqual(requests(io), ["unsubscribe book BTC/USD", "subscribe book BTC/USD"]);
  // The fresh snapshot fails too: unsubscribed, and subscribed again only 1 s later.
  now = t0 + 100;
  session.onFrame(badChecksum(market.snapshotFrame("BTC/USD", 10)), RX, io);
  assert.deepEqual(requests(io), ["unsubscribe book BTC/USD"]);
  assert.deepEqual(session.status().resubscribe_at, { "book BTC/USD": t0 + 1_100 });
  session.onTick(io, t0 + 1_099);
  assert.deepEqual(requests(io).filter((r) => r.startsWith("subscribe")), []);
  session.onTick(io, t0 + 1_100);
  assert.deepEqual(requests(io), ["subscribe book BTC/USD"]);
  // And again: 2 s, then 4 s.
  now = t0 + 1_200;
  session.onFrame(badChecksum(market.snapshotFrame("BTC/USD", 10)), RX, io);
  assert.deepEqual(session.status().resubscribe_at, { "book BTC/USD": t0 + 3_200 });
  session.onTick(io, t0 + 3_200);
  now = t0 + 3_300;
  session.onFrame(badChecksum(market.snapshotFrame("BTC/USD", 10)), RX, io);
  assert.deepEqual(session.status().resubscribe_at, { "book BTC/USD": t0 + 7_300 });
  session.onTick(io, t0 + 7_300);
  requests(io);
  // A good snapshot; a mismatch over a minute after the last resubscription is healed at once.
  session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  assert.equal(session.status().books_live, 1);
  now = t0 + 7_300 + 60_000;
  session.onFrame(
    market.update("BTC/USD", 10, { bids: [[65_000, 2]] }, { corrupt: true })!,
    RX,
    io,
  );
  assert.deepEqual(requests(io), ["unsubscribe book BTC/USD", "subscribe book BTC/USD"]);
  assert.deepEqual(io.reconnects, []);
  assert.equal(session.status().checksum_failures, 5);
});

Deno.test("a subscription Kraken refuses is asked for again with backoff while heartbeats keep the connection", () => {
  const market = seeded();
  const session = krakenSession(config(), { random: NO_JITTER });
  const io = new FakeIO();
  const t0 = 1_786_000_000_000;
  let now = t0;
  io.now = () => now * 1000;
  session.onOpen(io);
  const [trade, book] = io.sent.map((text) => JSON.parse(text).req_id as number);
  requests(io);
  // Kraken's refusal names the symbol, not the channel: the req_id tells which it was.
  const refuse = (reqId: number) =>
    JSON.stringify({
      error: "Internal error",
      method: "subscribe",
      req_id: reqId,
      success: false,
      symbol: "BTC/USD",
      time_in: "2026-08-16T23:37:04.849274Z",
      time_out: "2026-08-16T23:37:04.849309Z",
    });
  session.onFrame(refuse(book!), RX, io);
  session.onFrame(refuse(trade!), RX, io);
  session.onFrame(HEARTBEAT_FRAME, RX, io);
  session.onTick(io, t0 + 999);
  assert.deepEqual(requests(io), []);
  session.onTick(io, t0 + 1_000);
  const again = io.sent.map((text) => JSON.parse(text));
  assert.deepEqual(again.map((m) => [m.method, m.params]), [
    ["subscribe", { channel: "book", symbol: ["BTC/USD"], depth: 10, snapshot: true }],
    ["subscribe", { channel: "trade", symbol: ["BTC/USD"], snapshot: false }],
  ]);
  assert.deepEqual(io.errors, [
    "Kraken subscribe BTC/USD failed: Internal error; asking again in 1000 ms",
    "Kraken subscribe BTC/USD failed: Internal error; asking again in 1000 ms",
  ]);
  requests(io);
  // Refused again: 2 s this time.
  now = t0 + 1_000;
  session.onFrame(refuse(again[0].req_id), RX, io);
  assert.match(io.errors.at(-1)!, /asking again in 2000 ms$/);
  session.onTick(io, t0 + 2_999);
  assert.deepEqual(requests(io), []);
  session.onTick(io, t0 + 3_000);
  assert.deepEqual(requests(io), ["subscribe book BTC/USD"]);
  // Accepted: the book arrives, and a later refusal starts from 1 s again.
  session.onFrame(
    JSON.stringify({
      method: "subscribe",
      req_id: 99,
      result: { channel: "book", symbol: "BTC/USD", depth: 10, snapshot: true },
      success: true,
      time_in: "2026-08-16T23:37:04.849274Z",
      time_out: "2026-08-16T23:37:04.849309Z",
    }),
    RX,
    io,
  );
  session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  assert.equal(session.status().books_live, 1);
  assert.deepEqual(io.reconnects, []);
});

/** Kraken's answer to a subscribe: a refusal (`symbol` where it names one) or an acknowledgement. */
function answer(
  reqId: number,
  fields: { error: string; symbol?: string } | { channel: string; symbol: string },
): string {
  const times = { time_in: "2026-08-16T23:37:04.849274Z", time_out: "2026-08-16T23:37:04.849309Z" };
  return JSON.stringify(
    "error" in fields
      ? { ...fields, method: "subscribe", req_id: reqId, success: false, ...times }
      : { method: "subscribe", req_id: reqId, result: fields, success: true, ...times },
  );
}

Deno.test("a Kraken refusal of a subscribe request that names no symbol asks again for each of its symbols not acknowledged", () => {
  // 54c5d1c asked again only when the refusal named a symbol; Kraken's answer to a request it
  // refuses whole ("Exceeded msg rate") need not, so those books were never asked for again.
  const session = krakenSession(
    config({ symbols: ["BTC-USD", "ETH-USD", "SOL-USD"], channels: ["trades", "book"] }),
    // No snapshot comes in this test: the books' snapshot deadline is kept out of its way.
    { random: NO_JITTER, resyncTimeoutMs: 600_000 },
  );
  const io = new FakeIO();
  const t0 = 1_786_000_000_000;
  let now = t0;
  io.now = () => now * 1000;
  session.onOpen(io);
  const book = JSON.parse(io.sent[1]!).req_id as number;
  requests(io);
  // BTC/USD's book is acknowledged; then Kraken refuses the request, naming no symbol.
  session.onFrame(answer(book, { channel: "book", symbol: "BTC/USD" }), RX, io);
  session.onFrame(answer(book, { error: "Exceeded msg rate" }), RX, io);
  assert.deepEqual(io.errors, [
    "Kraken subscribe failed: Exceeded msg rate; asking again for book ETH/USD, SOL/USD in 1000 ms",
  ]);
  assert.deepEqual(session.status().resubscribe_at, {
    "book ETH/USD": t0 + 1_000,
    "book SOL/USD": t0 + 1_000,
  });
  // An answer that comes after the refusal still counts: ETH/USD's book is acknowledged.
  session.onFrame(answer(book, { channel: "book", symbol: "ETH/USD" }), RX, io);
  assert.deepEqual(Object.keys(session.status().resubscribe_at), ["book SOL/USD"]);
  session.onFrame(HEARTBEAT_FRAME, RX, io);
  session.onTick(io, t0 + 999);
  assert.deepEqual(requests(io), []);
  session.onTick(io, t0 + 1_000);
  const retry = JSON.parse(io.sent[0]!);
  assert.deepEqual(requests(io), ["subscribe book SOL/USD"]);
  // Refused whole again: 2 s this time, for SOL/USD alone; the trades were never touched.
  now = t0 + 1_000;
  session.onFrame(answer(retry.req_id, { error: "Exceeded msg rate" }), RX, io);
  assert.equal(
    io.errors.at(-1),
    "Kraken subscribe failed: Exceeded msg rate; asking again for book SOL/USD in 2000 ms",
  );
  for (let s = 2; s <= 180; s++) {
    session.onFrame(HEARTBEAT_FRAME, RX, io);
    session.onTick(io, t0 + s * 1_000);
  }
  const asked = io.sent.map((text) => JSON.parse(text)).filter((m) => m.method === "subscribe");
  assert.deepEqual(asked.map((m) => `${m.params.channel} ${m.params.symbol}`), ["book SOL/USD"]);
  session.onFrame(answer(asked[0].req_id, { channel: "book", symbol: "SOL/USD" }), RX, io);
  assert.deepEqual(session.status().subscribed, { trade: 0, book: 3 });
  assert.deepEqual(session.status().resubscribe_at, {});
  assert.deepEqual(io.reconnects, []);
});

Deno.test("Kraken subscriptions refused together are asked for again at jittered times, in one request per channel", () => {
  const draws = [0, 0.999, 0.5];
  const session = krakenSession(
    config({ symbols: ["BTC-USD", "ETH-USD", "SOL-USD"], channels: ["trades"] }),
    { random: () => draws.shift() ?? 0.5 },
  );
  const io = new FakeIO();
  const t0 = 1_786_000_000_000;
  io.now = () => t0 * 1000;
  session.onOpen(io);
  const trade = JSON.parse(io.sent[0]!).req_id as number;
  requests(io);
  for (const symbol of ["BTC/USD", "ETH/USD", "SOL/USD"]) {
    session.onFrame(answer(trade, { error: "Internal error", symbol }), RX, io);
  }
  // 1 s ± 20 %.
  assert.deepEqual(session.status().resubscribe_at, {
    "trade BTC/USD": t0 + 800,
    "trade ETH/USD": t0 + 1_200,
    "trade SOL/USD": t0 + 1_000,
  });
  assert.equal(
    io.errors[1],
    "Kraken subscribe ETH/USD failed: Internal error; asking again in 1200 ms",
  );
  session.onTick(io, t0 + 1_000);
  assert.deepEqual(requests(io), ["subscribe trade BTC/USD,SOL/USD"]);
  session.onTick(io, t0 + 1_200);
  assert.deepEqual(requests(io), ["subscribe trade ETH/USD"]);
  // Unseeded, the delays stay within the spread.
  const spread = krakenSession(config({ channels: ["trades"] }));
  const io2 = new FakeIO();
  io2.now = () => t0 * 1000;
  spread.onOpen(io2);
  spread.onFrame(
    answer(JSON.parse(io2.sent[0]!).req_id, { error: "Internal error", symbol: "BTC/USD" }),
    RX,
    io2,
  );
  const at = Object.values(spread.status().resubscribe_at)[0]!;
  assert.ok(at >= t0 + 800 && at <= t0 + 1_200, `${at - t0} ms`);
});

Deno.test("a new Kraken connection starts the delays of refused subscriptions and of resubscribed books over", () => {
  const market = seeded();
  const session = krakenSession(config(), { resyncTimeoutMs: 600_000, random: NO_JITTER });
  const io = new FakeIO();
  const t0 = 1_786_000_000_000;
  let now = t0;
  io.now = () => now * 1000;
  session.onOpen(io);
  const trade = JSON.parse(io.sent[0]!).req_id as number;
  requests(io);
  // The trades refused three times (1 s, 2 s, 4 s); the book's snapshots fail twice (the second
  // resubscription waits).
  let reqId = trade;
  for (let i = 0; i < 3; i++) {
    session.onFrame(answer(reqId, { error: "Internal error", symbol: "BTC/USD" }), RX, io);
    now += 10_000;
    session.onTick(io, now);
    reqId = JSON.parse(io.sent.find((text) => text.includes('"trade"'))!).req_id;
    requests(io);
  }
  assert.match(io.errors.at(-1)!, /asking again in 4000 ms$/);
  session.onFrame(badChecksum(market.snapshotFrame("BTC/USD", 10)), RX, io);
  session.onFrame(badChecksum(market.snapshotFrame("BTC/USD", 10)), RX, io);
  assert.deepEqual(requests(io), [
    "unsubscribe book BTC/USD",
    "subscribe book BTC/USD",
    "unsubscribe book BTC/USD",
  ]);
  // The connection drops and comes back: the first refusal waits 1 s again, and the first
  // mismatch resubscribes at once again.
  session.onClose();
  session.onOpen(io);
  const [trade2] = io.sent.map((text) => JSON.parse(text).req_id as number);
  requests(io);
  session.onFrame(answer(trade2!, { error: "Internal error", symbol: "BTC/USD" }), RX, io);
  assert.match(io.errors.at(-1)!, /asking again in 1000 ms$/);
  session.onFrame(badChecksum(market.snapshotFrame("BTC/USD", 10)), RX, io);
  assert.deepEqual(requests(io), ["unsubscribe book BTC/USD", "subscribe book BTC/USD"]);
});

Deno.test("kraken session returns trades with exact fields", () => {
  const market = seeded();
  const session = krakenSession(config());
  const io = new FakeIO();
  const id = market.nextTradeId;
  const frame = market.trade("BTC/USD", "sell", "65000.1", 0.0012, 1_786_000_000_123_456);
  assert.match(frame, /"price":65000\.1,"qty":0\.00120000,/);
  const [trade] = session.onFrame(frame, RX, io) as TradeEvent[];
  assert.deepEqual(trade, {
    exchange: "kraken",
    symbol: "BTC-USD",
    venue_symbol: "BTC/USD",
    ts_exchange: 1_786_000_000_123_456,
    ts_local: RX,
    kind: "trade",
    trade_id: String(id),
    price: "65000.1",
    qty: "0.00120000",
    side: "sell",
  });
});

Deno.test("kraken session publishes the book top from verified books", () => {
  const market = seeded();
  const session = krakenSession(config());
  const io = new FakeIO();
  const events = session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  const top = events.find((event): event is TopEvent => event.kind === "top");
  assert.deepEqual(
    [top?.bid_price, top?.bid_qty, top?.ask_price, top?.ask_qty],
    ["65000.0", "0.10000000", "65000.5", "0.20000000"],
  );
  assert.equal(top?.ts_exchange, RX - 5_000);
});

Deno.test("kraken session with top but not book publishes only the tops of verified books", () => {
  const market = seeded();
  const session = krakenSession(config({ channels: ["top"] }));
  const io = new FakeIO();
  session.onOpen(io);
  assert.deepEqual(io.sent.map((text) => JSON.parse(text).params.channel), ["book"]);
  const events = session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  assert.deepEqual(events.map((event) => event.kind), ["top"]);
  const update = market.update("BTC/USD", 10, { bids: [[65_000, 9]] })!;
  assert.deepEqual(session.onFrame(update, RX, io).map((event) => event.kind), ["top"]);
  assert.equal(session.status().books_live, 1);
});

Deno.test("kraken session reports failed acks, a non-online status and venue errors", () => {
  const session = krakenSession(config());
  const io = new FakeIO();
  session.onFrame(
    '{"error":"Currency pair not supported FOO/USD","method":"subscribe","req_id":2,' +
      '"success":false,"symbol":"FOO/USD","time_in":"2026-08-16T23:37:04.849274Z",' +
      '"time_out":"2026-08-16T23:37:04.849309Z"}',
    RX,
    io,
  );
  session.onFrame(statusFrame("maintenance"), RX, io);
  session.onFrame('{"error":"Exceeded msg rate"}', RX, io);
  assert.deepEqual(io.errors, [
    "Kraken subscribe FOO/USD failed: Currency pair not supported FOO/USD",
    "Kraken system status is maintenance",
    "Kraken error: Exceeded msg rate",
  ]);
  assert.equal(session.status().request_failures, 1);
  assert.equal(session.status().system, "maintenance");
  session.onFrame(statusFrame("online"), RX, io);
  assert.equal(io.errors.length, 3);
});

Deno.test("kraken session pings from onTick every pingIntervalMs", () => {
  const session = krakenSession(config(), { pingIntervalMs: 15_000 });
  const io = new FakeIO();
  session.onOpen(io);
  io.sent.length = 0;
  for (let t = 0; t <= 40_000; t += 1_000) session.onTick!(io, 1_000_000 + t);
  assert.equal(io.sent.length, 2);
  assert.deepEqual(Object.keys(JSON.parse(io.sent[0]!)), ["method", "req_id"]);
  assert.equal(JSON.parse(io.sent[0]!).method, "ping");
  session.onFrame('{"method":"pong","req_id":3,"time_in":"x","time_out":"y"}', RX, io);
  assert.equal(session.status().pongs, 1);
  assert.equal(session.status().pings, 2);
});

Deno.test("kraken session marks books stale on close until the next snapshot", () => {
  const market = seeded();
  const session = krakenSession(config());
  const io = new FakeIO();
  session.onOpen(io);
  session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  session.onFrame(
    '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,' +
      '"symbol":"BTC/USD"},"success":true,"time_in":"x","time_out":"y"}',
    RX,
    io,
  );
  assert.deepEqual(session.status().subscribed, { trade: 0, book: 1 });
  session.onClose();
  assert.equal(session.status().books_live, 0);
  assert.deepEqual(session.status().subscribed, { trade: 0, book: 0 });
  const update = market.update("BTC/USD", 10, { bids: [[65_000, 3]] })!;
  assert.deepEqual(session.onFrame(update, RX, io), []);
  assert.deepEqual(io.resyncs, []);
  session.onFrame(market.snapshotFrame("BTC/USD", 10), RX, io);
  assert.equal(session.status().books_live, 1);
});

Deno.test("kraken session throws MalformedFrameError for frames it cannot use", () => {
  const session = krakenSession(config());
  const io = new FakeIO();
  const other = new FakeKrakenMarket(["ETH/USD"]);
  other.book("ETH/USD").set("bid", [[3000, 1]]);
  for (
    const frame of [
      "garbage",
      '{"channel":"nope"}',
      '{"channel":"book","type":"update","data":[]}',
      other.snapshotFrame("ETH/USD", 10),
    ]
  ) {
    assert.throws(() => session.onFrame(frame, RX, io), MalformedFrameError, frame);
  }
  assert.deepEqual(session.onFrame(HEARTBEAT_FRAME, RX, io), []);
});

/** A market of BTC/USD and ETH/USD, 30 levels a side, for depth-25 books. */
function deepMarket(): FakeKrakenMarket {
  const market = new FakeKrakenMarket(["BTC/USD", "ETH/USD"], {
    priceDecimals: { "BTC/USD": 1, "ETH/USD": 2 },
    nowUs: () => RX - 5_000,
  });
  for (const [symbol, mid] of [["BTC/USD", 65_000], ["ETH/USD", 3_000]] as const) {
    const bids: [number, number][] = [];
    const asks: [number, number][] = [];
    for (let i = 0; i < 30; i++) {
      bids.push([mid - i, 0.5 + i]);
      asks.push([mid + 1 + i, 0.25 + i]);
    }
    market.book(symbol).set("bid", bids);
    market.book(symbol).set("ask", asks);
  }
  return market;
}

Deno.test("a Kraken book frame that cannot be parsed resyncs the depth-25 books it names, since the checksum covers only the top 10", () => {
  const market = deepMarket();
  const session = krakenSession(config({ symbols: ["BTC-USD", "ETH-USD"], book_depth: 25 }));
  const io = new FakeIO();
  io.now = () => RX;
  session.onOpen(io);
  io.sent.length = 0;
  const published: MarketEvent[] = [];
  published.push(...session.onFrame(market.snapshotFrame("BTC/USD", 25), RX, io));
  published.push(...session.onFrame(market.snapshotFrame("ETH/USD", 25), RX, io));
  // One update frame carrying both pairs (valid JSON, refused by the parser), each changing
  // the 16th bid: below the 10 levels the checksum covers.
  const btc = market.update("BTC/USD", 25, { bids: [[65_000 - 15, 7.77]] })!;
  const eth = market.update("ETH/USD", 25, { bids: [[3_000 - 15, 8.88]] })!;
  const ethEntry = eth.slice(eth.indexOf("[{") + 1, eth.lastIndexOf("}]") + 1);
  const batched = btc.slice(0, btc.lastIndexOf("]}")) + "," + ethEntry + "]}";
  JSON.parse(batched);
  assert.throws(() => session.onFrame(batched, RX, io), MalformedFrameError);
  assert.deepEqual(io.resyncs, [
    "BTC/USD: Malformed book update",
    "ETH/USD: Malformed book update",
  ]);
  assert.deepEqual(io.sent.map((text) => JSON.parse(text)).map((m) => [m.method, m.params]), [
    ["unsubscribe", { channel: "book", symbol: ["BTC/USD"], depth: 25 }],
    ["subscribe", { channel: "book", symbol: ["BTC/USD"], depth: 25, snapshot: true }],
    ["unsubscribe", { channel: "book", symbol: ["ETH/USD"], depth: 25 }],
    ["subscribe", { channel: "book", symbol: ["ETH/USD"], depth: 25, snapshot: true }],
  ]);
  assert.deepEqual(io.reconnects, []);
  let status = session.status();
  assert.equal(status.books["BTC-USD"]?.state, "waiting");
  assert.equal(status.books["BTC-USD"]?.resyncs, 1);
  assert.equal(status.books["BTC-USD"]?.last_resync, "BTC/USD: Malformed book update");
  assert.equal(status.checksum_failures, 0);
  assert.equal(status.books_live, 0);
  // The next update's checksum matches (the lost change is outside the top 10): it is
  // dropped, not published over the wrong book.
  assert.deepEqual(
    session.onFrame(market.update("BTC/USD", 25, { asks: [[65_001, 3.5]] })!, RX, io),
    [],
  );
  published.push(...session.onFrame(market.snapshotFrame("BTC/USD", 25), RX, io));
  const rebuilt = replay(published, "BTC-USD");
  rebuilt.truncate(25);
  assert.deepEqual(rebuilt.levels("bid"), market.book("BTC/USD").levels("bid", 25));
  assert.deepEqual(rebuilt.levels("ask"), market.book("BTC/USD").levels("ask", 25));
  status = session.status();
  assert.equal(status.books["BTC-USD"]?.state, "live");
  assert.equal(status.books["ETH-USD"]?.state, "waiting");
});

Deno.test("a Kraken book frame naming no readable symbol resyncs every book; other malformed frames resync none", () => {
  const market = deepMarket();
  const session = krakenSession(config({ symbols: ["BTC-USD", "ETH-USD"], book_depth: 25 }));
  const io = new FakeIO();
  io.now = () => RX;
  session.onOpen(io);
  session.onFrame(market.snapshotFrame("BTC/USD", 25), RX, io);
  session.onFrame(market.snapshotFrame("ETH/USD", 25), RX, io);
  io.sent.length = 0;
  for (
    const frame of [
      "garbage",
      '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}',
      // A book of a pair not configured names only that pair.
      '{"channel":"book","type":"update","data":[{"symbol":"XBT/EUR"}]}',
    ]
  ) {
    assert.throws(() => session.onFrame(frame, RX, io), MalformedFrameError, frame);
  }
  assert.deepEqual(io.resyncs, []);
  assert.equal(session.status().books_live, 2);
  const truncated = market.update("BTC/USD", 25, { bids: [[64_990, 1]] })!.slice(0, 40);
  assert.throws(() => session.onFrame(truncated, RX, io), MalformedFrameError);
  assert.deepEqual(io.resyncs, [
    "BTC/USD: Malformed book update",
    "ETH/USD: Malformed book update",
  ]);
  assert.equal(session.status().books_live, 0);
  // A malformed update of a book already waiting for its snapshot is not resynced again.
  const unreadable = '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[1]}]}';
  assert.throws(() => session.onFrame(unreadable, RX, io), MalformedFrameError);
  assert.equal(io.resyncs.length, 2);
  assert.equal(session.status().resyncs, 2);
});

// ---- the real feed runtime, the fake venue and NATS -------------------------

/** A Kraken pair no other test uses, so md.> traffic can be filtered to this test. */
function uniqueSymbol(quote = "USD"): string {
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 8).toUpperCase();
  return `K${id}-${quote}`;
}

interface Harness extends AsyncDisposable {
  venue: FakeKrakenServer;
  status: FeedStatus;
  session: KrakenSession;
  /** Events received on md.> for this test's symbols, in arrival order. */
  events: MarketEvent[];
  /** Every NATS message of this test's symbols (each a JSON array). */
  messages: Array<{ subject: string; events: MarketEvent[] }>;
  /** Dead letters on dlq.md.kraken whose frame carries this test's token or symbols. */
  letters: DeadLetter[];
  /** A token to put in garbage frames so their dead letters can be told apart. */
  token: string;
}

interface HarnessOptions {
  staleAfterMs?: number;
  depth?: number;
  heartbeatMs?: number;
  pingIntervalMs?: number;
  market?: FakeKrakenMarket;
  bookScripts?: Record<string, string[]>;
}

/** Seeds a fake book with `levels` levels a side around `mid`. */
function seed(market: FakeKrakenMarket, venueSymbol: string, levels: number, mid = 65_000): void {
  const bids: [number, number][] = [];
  const asks: [number, number][] = [];
  for (let i = 0; i < levels; i++) {
    bids.push([mid - 0.5 - i * 0.5, 0.1 + i]);
    asks.push([mid + i * 0.5, 0.2 + i]);
  }
  market.book(venueSymbol).set("bid", bids);
  market.book(venueSymbol).set("ask", asks);
}

async function startHarness(symbols: string[], options: HarnessOptions = {}): Promise<Harness> {
  const depth = options.depth ?? 10;
  const venueSymbols = symbols.map((symbol) => symbol.replace("-", "/"));
  const market = options.market ?? new FakeKrakenMarket(venueSymbols);
  if (!options.market) { for (const symbol of venueSymbols) seed(market, symbol, depth + 5); }
  const venue = await startKrakenServer({
    market,
    heartbeatMs: options.heartbeatMs ?? 0,
    ...(options.bookScripts ? { bookScripts: options.bookScripts } : {}),
  });
  const nc = await connect({ servers: NATS_URL });
  const token = crypto.randomUUID();
  const { events, messages, letters } = await watchVenue(nc, "kraken", symbols, [
    token,
    ...venueSymbols,
  ]);
  const session = krakenSession({
    ws_url: venue.wsUrl,
    symbols,
    channels: ["trades", "book"],
    book_depth: depth,
  }, { pingIntervalMs: options.pingIntervalMs ?? 60_000 });
  const feed = startTestFeed(session, nc, venue, {
    staleAfterMs: options.staleAfterMs,
    tickMs: 20,
  });
  return {
    venue,
    status: feed.status,
    session,
    events,
    messages,
    letters,
    token,
    [Symbol.asyncDispose]: feed.close,
  };
}

function snapshots(h: Harness, symbol: string): number {
  return ofKind(h.events, "book", symbol).filter((event) => event.action === "snapshot").length;
}

/** Waits until what NATS consumers rebuilt for `symbol` equals the venue's book at `depth`. */
async function bookMatches(h: Harness, symbol: string, depth: number, what: string) {
  const book = h.venue.market.book(symbol.replace("-", "/"));
  await waitFor(
    () => {
      const rebuilt = replay(h.events, symbol);
      return JSON.stringify([rebuilt.levels("bid"), rebuilt.levels("ask")]) ===
        JSON.stringify([book.levels("bid", depth), book.levels("ask", depth)]);
    },
    5_000,
    what,
  );
}

function requestsOf(h: Harness, socket: number) {
  return h.venue.requests.filter((request) => request.socket === socket)
    .map(({ method, params }) => [method, params]);
}

Deno.test("kraken feed subscribes and publishes trades, verified books and tops on NATS", async () => {
  const a = uniqueSymbol();
  const b = uniqueSymbol("EUR");
  const [ka, kb] = [a.replace("-", "/"), b.replace("-", "/")];
  await using h = await startHarness([a, b]);
  await waitFor(() => snapshots(h, a) === 1 && snapshots(h, b) === 1, 5_000, "snapshots");
  // The handshake, as the fake venue saw it.
  assert.deepEqual(requestsOf(h, 1), [
    ["subscribe", { channel: "trade", symbol: [ka, kb], snapshot: false }],
    ["subscribe", { channel: "book", symbol: [ka, kb], depth: 10, snapshot: true }],
  ]);
  await waitFor(
    () => (h.status.venue as KrakenSessionStatus).subscribed?.book === 2,
    2_000,
    "acks counted",
  );
  assert.deepEqual((h.status.venue as KrakenSessionStatus).subscribed, { trade: 2, book: 2 });
  const before = Date.now() * 1000;
  const tradeId = h.venue.market.nextTradeId;
  h.venue.trade(ka, "buy", "65000.5", 0.015);
  // A removal inside the window (a deeper level enters it), an insert that pushes one out.
  h.venue.bookUpdate(ka, { bids: [[64_999.5, 0]] });
  h.venue.bookUpdate(ka, { asks: [[64_999.9, 1.25]] });
  h.venue.bookUpdate(kb, { bids: [[64_999.5, 7]] });
  await waitFor(() => ofKind(h.events, "book", a).length === 3, 5_000, "two deltas of A");
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "trade");
  const after = Date.now() * 1000 + 1_000;
  const [trade] = ofKind(h.events, "trade", a);
  assert.ok(trade);
  assert.equal(trade.exchange, "kraken");
  assert.equal(trade.venue_symbol, ka);
  assert.equal(trade.trade_id, String(tradeId));
  assert.equal(trade.price, "65000.5");
  assert.equal(trade.qty, "0.01500000");
  assert.equal(trade.side, "buy");
  assert.ok(Number.isSafeInteger(trade.ts_exchange) && trade.ts_exchange >= before - 1_000_000);
  assert.ok(trade.ts_exchange <= after);
  assert.ok(
    Number.isSafeInteger(trade.ts_local) && trade.ts_local >= before && trade.ts_local <= after,
  );

  const deltas = ofKind(h.events, "book", a).slice(1);
  assert.deepEqual(deltas[0]?.bids, [["64999.5", "0.00000000"], ["64994.5", "10.10000000"]]);
  assert.deepEqual(deltas[1]?.asks, [["64999.9", "1.25000000"], ["65004.5", "0"]]);
  await bookMatches(h, a, 10, "book of A matches the venue");
  await bookMatches(h, b, 10, "book of B matches the venue");
  const tops = ofKind(h.events, "top", a);
  assert.deepEqual(
    [tops.at(-1)?.bid_price, tops.at(-1)?.ask_price, tops.at(-1)?.ask_qty],
    ["64999.0", "64999.9", "1.25000000"],
  );
  for (const { subject, events } of h.messages) {
    for (const event of events) assert.equal(subject, `md.${event.kind}.kraken.${event.symbol}`);
  }
  assert.equal(h.status.state, "live");
  assert.equal(h.status.resyncs, 0);
  assert.equal(h.status.reconnects, 0);
});

Deno.test("kraken feed resubscribes after a drop and rebuilds the book from a new snapshot", async () => {
  const a = uniqueSymbol();
  const ka = a.replace("-", "/");
  await using h = await startHarness([a], { depth: 25 });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  // A change the feed never hears of (lost with the connection).
  h.venue.market.book(ka).set("bid", [[64_999.5, 3.3]]);
  h.venue.drop();
  await waitFor(() => h.venue.ws.connections === 2, 5_000, "reconnect");
  await waitFor(() => snapshots(h, a) === 2, 5_000, "second snapshot");
  assert.deepEqual(requestsOf(h, 2), [
    ["subscribe", { channel: "trade", symbol: [ka], snapshot: false }],
    ["subscribe", { channel: "book", symbol: [ka], depth: 25, snapshot: true }],
  ]);
  h.venue.bookUpdate(ka, { asks: [[65_000, 0]] });
  await bookMatches(h, a, 25, "book after the reconnect");
  assert.equal(h.status.reconnects, 1);
  assert.equal(h.status.resyncs, 0);
});

Deno.test("kraken feed resubscribes one book after a checksum mismatch, without reconnecting", async () => {
  const a = uniqueSymbol();
  const b = uniqueSymbol();
  const [ka, kb] = [a.replace("-", "/"), b.replace("-", "/")];
  await using h = await startHarness([a, b]);
  await waitFor(() => snapshots(h, a) === 1 && snapshots(h, b) === 1, 5_000, "snapshots");
  h.venue.bookUpdate(ka, { bids: [[64_999.5, 2]] }, { corrupt: true });
  await waitFor(() => snapshots(h, a) === 2, 5_000, "fresh snapshot of A");
  assert.equal(h.status.resyncs, 1);
  assert.equal(h.status.reconnects, 0);
  assert.equal(h.venue.ws.connections, 1);
  assert.deepEqual(requestsOf(h, 1).slice(2), [
    ["unsubscribe", { channel: "book", symbol: [ka], depth: 10 }],
    ["subscribe", { channel: "book", symbol: [ka], depth: 10, snapshot: true }],
  ]);
  // The corrupt update was never published; B was not touched.
  assert.equal(ofKind(h.events, "book", a).length, 2);
  assert.equal(snapshots(h, b), 1);
  h.venue.bookUpdate(ka, { asks: [[65_000, 0.5]] });
  h.venue.bookUpdate(kb, { asks: [[65_000, 0.75]] });
  await bookMatches(h, a, 10, "book of A after the resync");
  await bookMatches(h, b, 10, "book of B");
  await waitFor(
    () => (h.status.venue as KrakenSessionStatus).books_live === 2,
    2_000,
    "both books live",
  );
  const venue = h.status.venue as KrakenSessionStatus;
  assert.equal(venue.checksum_failures, 1);
  assert.equal(venue.books[a]?.checksum_failures, 1);
  assert.equal(venue.books[b]?.checksum_failures, 0);
  assert.deepEqual(venue.subscribed, { trade: 2, book: 2 });
});

Deno.test("kraken feed reports a subscription the venue refuses and serves the others", async () => {
  const a = uniqueSymbol();
  const missing = uniqueSymbol();
  const market = new FakeKrakenMarket([a.replace("-", "/")]);
  seed(market, a.replace("-", "/"), 15);
  await using h = await startHarness([a, missing], { market });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "snapshot of the listed pair");
  await waitFor(() => h.status.last_error !== null, 5_000, "error reported");
  assert.match(
    h.status.last_error!,
    new RegExp(
      `^Kraken subscribe ${missing.replace("-", "/")} failed: Currency pair not supported`,
    ),
  );
  await waitFor(
    () => (h.status.venue as KrakenSessionStatus).request_failures === 2,
    2_000,
    "trade and book refusals counted",
  );
  assert.equal(h.status.reconnects, 0);
});

Deno.test("kraken feed dead-letters malformed frames with the raw frame and carries on", async () => {
  const a = uniqueSymbol();
  const ka = a.replace("-", "/");
  await using h = await startHarness([a]);
  await waitFor(() => snapshots(h, a) === 1, 5_000, "snapshot");
  const garbage = `{"channel":"trade","type":"update","data":[${h.token}`;
  const badTrade = '{"channel":"trade","type":"update","data":[{"symbol":"' + ka +
    '","side":"buy","price":6.5e4,"qty":1.00000000,"ord_type":"limit","trade_id":1,' +
    '"timestamp":"2026-08-16T23:37:04.190019Z"}]}';
  h.venue.send(garbage);
  h.venue.send(badTrade);
  h.venue.trade(ka, "sell", 65_000, 2);
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "good trade");
  await waitFor(() => h.letters.length === 2, 5_000, "dead letters");
  assert.deepEqual(h.letters.map((letter) => letter.frame), [garbage, badTrade]);
  for (const letter of h.letters) {
    assert.deepEqual([letter.exchange, letter.stage, letter.reason], [
      "kraken",
      "feed",
      "malformed",
    ]);
  }
  assert.equal(h.status.malformed, 2);
  assert.equal(h.status.reconnects, 0);
  assert.equal(ofKind(h.events, "trade", a)[0]?.price, "65000.0");
});

Deno.test("kraken feed stays up on heartbeats and pings, and reconnects a silent venue", async () => {
  const a = uniqueSymbol();
  await using h = await startHarness([a], {
    staleAfterMs: 500,
    heartbeatMs: 50,
    pingIntervalMs: 100,
  });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "snapshot");
  // Heartbeats alone keep the watchdog quiet well past stale_after_ms.
  await waitFor(
    () => ((h.status.venue as KrakenSessionStatus).heartbeats ?? 0) >= 20,
    5_000,
    "heartbeats for twice stale_after_ms",
  );
  assert.equal(h.venue.ws.connections, 1);
  await waitFor(
    () => ((h.status.venue as KrakenSessionStatus).pongs ?? 0) >= 2,
    5_000,
    "pongs",
  );
  assert.ok(h.venue.requests.some((request) => request.method === "ping"));
  h.venue.silent = true;
  await waitFor(() => h.venue.ws.connections >= 2, 5_000, "watchdog reconnect");
  h.venue.silent = false;
  await waitFor(() => snapshots(h, a) >= 2, 5_000, "snapshot after the reconnect");
  assert.ok(h.status.reconnects >= 1);
  h.venue.bookUpdate(a.replace("-", "/"), { bids: [[64_999.5, 1]] });
  await bookMatches(h, a, 10, "book after the watchdog reconnect");
});

Deno.test("kraken feed replays the real MINA/GBP session through the fake venue", async () => {
  // The fake sends its own status frame, then the captured ack, snapshot, updates and heartbeats.
  // The pair is renamed so concurrent runs on the shared NATS stay apart; Kraken's checksum
  // covers prices and sizes only, and those stay byte for byte as captured.
  const symbol = uniqueSymbol("GBP");
  const pair = symbol.replace("-", "/");
  const script = MINA.slice(1).filter((line) => !line.includes('"channel":"status"'))
    .map((line) => line.replaceAll("MINA/GBP", pair));
  const market = new FakeKrakenMarket([pair]);
  await using h = await startHarness([symbol], {
    depth: 25,
    market,
    bookScripts: { [pair]: script },
  });
  const books = script.filter((line) => line.startsWith('{"channel":"book"')).length;
  await waitFor(() => ofKind(h.events, "book", symbol).length === books, 5_000, "every book");
  assert.equal(books, 30);
  assert.equal(h.status.resyncs, 0);
  assert.equal(h.status.malformed, 0);
  const rebuilt = replay(h.events, symbol);
  const lastChecksum = Number(
    script.filter((line) => line.startsWith('{"channel":"book"')).at(-1)!
      .match(/"checksum":(\d+)/)![1],
  );
  assert.equal(krakenChecksum(rebuilt.levels("ask", 10), rebuilt.levels("bid", 10)), lastChecksum);
  await waitFor(
    () => (h.status.venue as KrakenSessionStatus).books_live === 1,
    2_000,
    "book live",
  );
});
