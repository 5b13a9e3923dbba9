/**
 * A Kraken book that never arrives on a connection kept up by heartbeats
 * (review 47): the first book subscription has a snapshot deadline, and an
 * error frame that names no request refuses every request still waiting for
 * an answer, which is asked for again.
 *
 * Kraken's heartbeat doc: heartbeats are "sent approximately once every
 * second in the absence of any other channel updates", "automatically
 * generated on subscription to any channel" — so one acknowledged trade
 * subscription keeps the staleness watchdog quiet whether or not a book ever
 * comes.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { nullLogger } from "../lib/log.ts";
import type { MarketEvent } from "../market/events.ts";
import type { SessionIO } from "../venues/session.ts";
import {
  krakenSession,
  type KrakenSessionConfig,
  type KrakenSessionStatus,
} from "../venues/kraken/session.ts";
import { waitFor } from "./_helpers.ts";
import { FakeKrakenMarket, HEARTBEAT_FRAME, startKrakenServer } from "./fakes/kraken_server.ts";
import { startTestFeed } from "./_feed_harness.ts";

const NATS_URL = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";
const RX = 1_786_000_000_000_000;
const T0 = 1_786_000_000_000;
/** No jitter: `backoffDelay`'s spread is 0 at 0.5. */
const NO_JITTER = () => 0.5;

function config(overrides: Partial<KrakenSessionConfig> = {}): KrakenSessionConfig {
  return {
    ws_url: "ws://127.0.0.1:1/v2",
    symbols: ["BTC-USD"],
    channels: ["trades", "book"],
    book_depth: 10,
    ...overrides,
  };
}

/** A SessionIO that records what the session asks for, on a clock the test sets. */
class RecordingIO implements SessionIO {
  readonly sent: string[] = [];
  readonly reconnects: string[] = [];
  readonly resyncs: string[] = [];
  readonly errors: string[] = [];
  readonly log = nullLogger;
  readonly signal = new AbortController().signal;
  /** The clock, ms since the epoch. */
  nowMs = T0;

  send(text: string): void {
    this.sent.push(text);
  }
  reconnect(reason: string): void {
    this.reconnects.push(reason);
  }
  emit(_events: MarketEvent[]): void {}
  resynced(reason: string): void {
    this.resyncs.push(reason);
  }
  error(message: string): void {
    this.errors.push(message);
  }
  fetchText(): Promise<string> {
    return Promise.reject(new Error("Kraken sessions fetch nothing"));
  }
  nowUs(): number {
    return this.nowMs * 1000;
  }
  /** The requests sent since the last call, as `method channel symbols`. */
  requests(): string[] {
    const out = this.sent.map((text) => JSON.parse(text))
      .map((m) => `${m.method} ${m.params?.channel} ${m.params?.symbol?.join(",")}`);
    this.sent.length = 0;
    return out;
  }
}

/** Kraken's acknowledgement of a subscribe. */
function ack(reqId: number, channel: string, symbol: string): string {
  return JSON.stringify({
    method: "subscribe",
    req_id: reqId,
    result: { channel, symbol },
    success: true,
    time_in: "2026-08-16T23:37:04.849274Z",
    time_out: "2026-08-16T23:37:04.849309Z",
  });
}

function seeded(): FakeKrakenMarket {
  const market = new FakeKrakenMarket(["BTC/USD"], { priceDecimals: { "BTC/USD": 1 } });
  market.book("BTC/USD").set("bid", [[65_000, 1]]);
  market.book("BTC/USD").set("ask", [[65_000.5, 1]]);
  return market;
}

Deno.test("a Kraken book whose first subscription gets no answer is resubscribed after resyncTimeoutMs, then the connection renewed", () => {
  const session = krakenSession(config(), { resyncTimeoutMs: 5_000, random: NO_JITTER });
  const io = new RecordingIO();
  session.onOpen(io);
  const [trade] = io.sent.map((text) => JSON.parse(text).req_id as number);
  assert.deepEqual(io.requests(), ["subscribe trade BTC/USD", "subscribe book BTC/USD"]);
  const waiting = session.status().books["BTC-USD"];
  // The trades are acknowledged and heartbeats flow; the book request gets no frame back.
  session.onFrame(ack(trade!, "trade", "BTC/USD"), RX, io);
  for (let s = 1; s <= 4; s++) {
    session.onFrame(HEARTBEAT_FRAME, RX, io);
    io.nowMs = T0 + s * 1_000;
    session.onTick(io, io.nowMs);
  }
  assert.deepEqual(io.requests(), []);
  io.nowMs = T0 + 5_000;
  session.onTick(io, io.nowMs);
  // Resynced like a book that failed its checksum: resubscribed in place at once.
  assert.deepEqual(io.requests(), ["unsubscribe book BTC/USD", "subscribe book BTC/USD"]);
  assert.deepEqual(io.resyncs, ["BTC/USD: No snapshot within 5000 ms of subscribing"]);
  assert.deepEqual(waiting, {
    state: "waiting",
    reason: "subscribed; waiting for the snapshot",
    snapshot_due_at: T0 + 5_000,
    checksum_failures: 0,
    resyncs: 0,
    snapshots: 0,
    last_resync: null,
  });
  const book = session.status().books["BTC-USD"]!;
  assert.equal(
    book.reason,
    "resubscribed after: BTC/USD: No snapshot within 5000 ms of subscribing",
  );
  assert.equal(book.snapshot_due_at, T0 + 10_000);
  assert.equal(book.resyncs, 1);
  assert.deepEqual(io.reconnects, []);
  // Nothing again: the connection is renewed.
  io.nowMs = T0 + 10_000;
  session.onTick(io, io.nowMs);
  assert.deepEqual(io.reconnects, ["BTC/USD: no snapshot within 5000 ms of resubscribing"]);
  // On the new connection the snapshot comes in time: nothing more happens.
  session.onClose();
  assert.equal(session.status().books["BTC-USD"]?.snapshot_due_at, null);
  session.onOpen(io);
  io.requests();
  session.onFrame(seeded().snapshotFrame("BTC/USD", 10), RX, io);
  for (let s = 11; s <= 40; s++) session.onTick(io, T0 + s * 1_000);
  assert.deepEqual(io.requests().filter((r) => !r.startsWith("ping")), []);
  assert.equal(io.reconnects.length, 1);
  assert.deepEqual(session.status().books["BTC-USD"], {
    state: "live",
    reason: null,
    snapshot_due_at: null,
    checksum_failures: 0,
    resyncs: 1,
    snapshots: 1,
    last_resync: "BTC/USD: No snapshot within 5000 ms of subscribing",
  });
});

Deno.test("an error frame naming no request refuses every Kraken subscribe request still unanswered, asked again with backoff", () => {
  const session = krakenSession(
    config({ symbols: ["BTC-USD", "ETH-USD"] }),
    { resyncTimeoutMs: 5_000, random: NO_JITTER },
  );
  const io = new RecordingIO();
  session.onOpen(io);
  const [trade, book] = io.sent.map((text) => JSON.parse(text).req_id as number);
  io.requests();
  // Trades of both and the book of BTC/USD are acknowledged; then Kraken's rate limiter
  // answers with an error frame carrying neither method nor req_id.
  session.onFrame(ack(trade!, "trade", "BTC/USD"), RX, io);
  session.onFrame(ack(trade!, "trade", "ETH/USD"), RX, io);
  session.onFrame(ack(book!, "book", "BTC/USD"), RX, io);
  session.onFrame('{"error":"Exceeded msg rate","success":false}', RX, io);
  assert.deepEqual(io.errors, [
    "Kraken error: Exceeded msg rate; asking again for book ETH/USD in 1000 ms",
  ]);
  let status: KrakenSessionStatus = session.status();
  assert.equal(status.errors, 1);
  assert.equal(status.last_error, "Exceeded msg rate");
  assert.equal(status.request_failures, 1);
  assert.deepEqual(status.resubscribe_at, { "book ETH/USD": T0 + 1_000 });
  // While it waits to be asked again, the refused book has no snapshot deadline.
  assert.deepEqual(status.books["ETH-USD"], {
    state: "waiting",
    reason: "subscription refused (Exceeded msg rate); asking again at 2026-08-06T07:06:41.000Z",
    snapshot_due_at: null,
    checksum_failures: 0,
    resyncs: 0,
    snapshots: 0,
    last_resync: null,
  });
  session.onFrame(HEARTBEAT_FRAME, RX, io);
  session.onTick(io, T0 + 999);
  assert.deepEqual(io.requests(), []);
  io.nowMs = T0 + 1_000;
  session.onTick(io, io.nowMs);
  const retry = JSON.parse(io.sent[0]!).req_id as number;
  assert.deepEqual(io.requests(), ["subscribe book ETH/USD"]);
  status = session.status();
  assert.equal(status.books["ETH-USD"]?.snapshot_due_at, T0 + 6_000);
  // The same again: 2 s this time.
  session.onFrame('{"error":"Exceeded msg rate","success":false}', RX, io);
  assert.equal(
    io.errors.at(-1),
    "Kraken error: Exceeded msg rate; asking again for book ETH/USD in 2000 ms",
  );
  io.nowMs = T0 + 3_000;
  session.onTick(io, io.nowMs);
  assert.deepEqual(io.requests(), ["subscribe book ETH/USD"]);
  // An error frame with no request waiting is reported as it is.
  session.onFrame(ack(retry + 1, "book", "ETH/USD"), RX, io);
  session.onFrame('{"error":"Exceeded msg rate","success":false}', RX, io);
  assert.equal(io.errors.at(-1), "Kraken error: Exceeded msg rate");
  assert.equal(session.status().errors, 3);
  assert.deepEqual(session.status().resubscribe_at, {});
  assert.deepEqual(io.reconnects, []);
});

Deno.test("a Kraken book acknowledged after its request was refused still has a snapshot deadline", () => {
  const session = krakenSession(config(), { resyncTimeoutMs: 5_000, random: NO_JITTER });
  const io = new RecordingIO();
  session.onOpen(io);
  const [, book] = io.sent.map((text) => JSON.parse(text).req_id as number);
  io.requests();
  session.onFrame('{"error":"Exceeded msg rate","success":false}', RX, io);
  const refused = session.status().books["BTC-USD"]?.snapshot_due_at;
  // The answer to the request comes after all: not asked again, but its snapshot is due.
  io.nowMs = T0 + 500;
  session.onFrame(ack(book!, "book", "BTC/USD"), RX, io);
  const acknowledged = session.status().books["BTC-USD"]?.snapshot_due_at;
  io.nowMs = T0 + 5_500;
  session.onTick(io, io.nowMs);
  assert.deepEqual(io.requests(), [
    "subscribe trade BTC/USD",
    "unsubscribe book BTC/USD",
    "subscribe book BTC/USD",
  ]);
  assert.equal(refused, null);
  assert.equal(acknowledged, T0 + 5_500);
});

/** The book subscribe requests the fake venue received. */
function bookSubscribes(
  venue: { requests: Array<{ method: string; params: Record<string, unknown> }> },
) {
  return venue.requests.filter((request) =>
    request.method === "subscribe" && request.params.channel === "book"
  ).length;
}

Deno.test("a Kraken feed whose first book subscription is never answered asks for it again and gets the book", async () => {
  const market = seeded();
  // The book subscription gets no frame back at all (a lost request or answer); trades are
  // acknowledged and heartbeats flow every 100 ms, so the connection is not silent.
  const bookScripts: Record<string, string[]> = { "BTC/USD": [] };
  const venue = await startKrakenServer({ market, heartbeatMs: 100, bookScripts });
  const nc = await connect({ servers: NATS_URL });
  const session = krakenSession({
    ws_url: venue.wsUrl,
    symbols: ["BTC-USD"],
    channels: ["trades", "book"],
    book_depth: 10,
  }, { resyncTimeoutMs: 500 });
  const feed = startTestFeed(session, nc, venue, { staleAfterMs: 20_000 });
  const venueStatus = () => feed.status.venue as KrakenSessionStatus;
  try {
    await waitFor(() => venueStatus().heartbeats >= 3, 5_000, "heartbeats");
    // From now on Kraken answers the book.
    delete bookScripts["BTC/USD"];
    await waitFor(() => bookSubscribes(venue) >= 2, 5_000, "the book asked for again");
    await waitFor(() => venueStatus().books_live === 1, 5_000, "the book live");
    assert.equal(venue.ws.connections, 1);
    assert.equal(feed.status.state, "live");
    assert.equal(feed.status.resyncs, 1);
    assert.equal(
      venueStatus().books["BTC-USD"]?.last_resync,
      "BTC/USD: No snapshot within 500 ms of subscribing",
    );
  } finally {
    await feed.close();
  }
});

Deno.test("a Kraken feed whose book subscription is refused by an error frame naming no request asks for it again", async () => {
  const market = seeded();
  // Kraken's rate limiter answers the book request with an error that carries neither method
  // nor req_id (as reported for its "Exceeded msg rate": xchange-stream issue #502).
  const bookScripts: Record<string, string[]> = {
    "BTC/USD": ['{"error":"Exceeded msg rate","success":false}'],
  };
  const venue = await startKrakenServer({ market, heartbeatMs: 100, bookScripts });
  const nc = await connect({ servers: NATS_URL });
  const session = krakenSession({
    ws_url: venue.wsUrl,
    symbols: ["BTC-USD"],
    channels: ["trades", "book"],
    book_depth: 10,
  }, { resyncTimeoutMs: 60_000, resubscribeInitialMs: 100 });
  const feed = startTestFeed(session, nc, venue, { staleAfterMs: 20_000 });
  const venueStatus = () => feed.status.venue as KrakenSessionStatus;
  try {
    await waitFor(() => feed.status.last_error !== null, 5_000, "the error frame");
    // The session's own figures (the feed copies them to its status on its next tick).
    const reason = session.status().books["BTC-USD"]?.reason;
    delete bookScripts["BTC/USD"];
    await waitFor(() => venueStatus().books_live === 1, 5_000, "the book live");
    assert.match(
      feed.status.last_error!,
      /^Kraken error: Exceeded msg rate; asking again for book BTC\/USD in \d+ ms$/,
    );
    assert.match(reason!, /^subscription refused \(Exceeded msg rate\); asking again at /);
    assert.ok(bookSubscribes(venue) >= 2);
    assert.equal(venue.ws.connections, 1);
    assert.equal(venueStatus().last_error, "Exceeded msg rate");
  } finally {
    await feed.close();
  }
});
