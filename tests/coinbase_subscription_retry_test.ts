/**
 * A Coinbase `level2` subscription refused or never answered on a connection
 * kept up by heartbeats (review 47): the `subscriptions` acknowledgements are
 * compared with what was asked, what is missing is asked for again with
 * jittered backoff within Coinbase's message rate, and every book has a first
 * snapshot deadline.
 *
 * Coinbase's rate-limit page: "Advanced Trade API WebSocket unauthenticated
 * messages are rate-limited at 8 per second per IP address" — a subscribe
 * beyond that is refused with `{"type":"error","message":"Failure to
 * subscribe"}`, which names no channel. The channels page: "Subscribe to
 * heartbeats to keep all subscriptions open" — so the staleness watchdog never
 * fires while a book is missing.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { nullLogger } from "../lib/log.ts";
import {
  coinbaseSession,
  type CoinbaseSessionOptions,
  type CoinbaseSessionStatus,
} from "../venues/coinbase/session.ts";
import type { SessionIO, VenueSession } from "../venues/session.ts";
import { waitFor } from "./_helpers.ts";
import { startCoinbaseServer } from "./fakes/coinbase_server.ts";
import { startTestFeed } from "./_feed_harness.ts";

const NATS_URL = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";
const T0 = 1_786_000_000_000;
const RX = T0 * 1000;
const PRODUCTS = ["BTC-USD", "ETH-USD"];
/** No jitter: `backoffDelay`'s spread is 0 at 0.5. */
const NO_JITTER = () => 0.5;

/** A SessionIO that records what the session asks for, on a clock the test sets. */
class RecordingIO implements SessionIO {
  readonly sent: string[] = [];
  readonly reconnects: Array<{ reason: string; resync: boolean }> = [];
  readonly errors: string[] = [];
  readonly log = nullLogger;
  readonly signal = new AbortController().signal;
  /** The clock, ms since the epoch. */
  nowMs = T0;

  send(text: string): void {
    this.sent.push(text);
  }
  reconnect(reason: string, options?: { resync?: boolean }): void {
    this.reconnects.push({ reason, resync: options?.resync ?? false });
  }
  emit(): void {
    assert.fail("the Coinbase session publishes only from onFrame");
  }
  resynced(): void {
    assert.fail("the Coinbase session resyncs by reconnecting");
  }
  error(message: string): void {
    this.errors.push(message);
  }
  fetchText(): Promise<string> {
    return Promise.reject(new Error("no REST in this test"));
  }
  nowUs(): number {
    return this.nowMs * 1000;
  }
  /** The requests sent since the last call, as `channel products`. */
  requests(): string[] {
    const out = this.sent.map((text) => JSON.parse(text))
      .map((m) => `${m.channel} ${m.product_ids.join(",")}`);
    this.sent.length = 0;
    return out;
  }
}

/** Frames of one connection, numbered as Coinbase numbers them. */
class Frames {
  #sequence = 0;

  #frame(channel: string, events: unknown[]): string {
    return JSON.stringify({
      channel,
      timestamp: "2026-08-09T21:05:49.000000000Z",
      sequence_num: this.#sequence++,
      events,
    });
  }
  /** The `subscriptions` frame Coinbase answers a request with. */
  subscriptions(subscriptions: Record<string, string[]>): string {
    return this.#frame("subscriptions", [{ subscriptions }]);
  }
  heartbeat(): string {
    return this.#frame("heartbeats", [{
      current_time: "2026-08-09 21:05:48.854840045 +0000 UTC m=+41691.260485341",
      heartbeat_counter: 41_691 + this.#sequence,
    }]);
  }
  /** A `level2` snapshot of one product. */
  snapshot(product: string): string {
    return this.#frame("l2_data", [{
      type: "snapshot",
      product_id: product,
      updates: [
        { side: "bid", event_time: "2026-08-09T21:05:48Z", price_level: "100", new_quantity: "1" },
        {
          side: "offer",
          event_time: "2026-08-09T21:05:48Z",
          price_level: "101",
          new_quantity: "2",
        },
      ],
    }]);
  }
}

const REFUSED = '{"type":"error","message":"Failure to subscribe"}';

/** A session typed as the feed runtime sees it (whose `onTick` is optional). */
function newSession(options: CoinbaseSessionOptions = {}): VenueSession {
  return coinbaseSession({
    ws_url: "wss://advanced-trade-ws.coinbase.com",
    symbols: PRODUCTS,
    channels: ["trades", "book"],
  }, { random: NO_JITTER, ...options });
}

Deno.test("a level2 subscription Coinbase refuses is asked for again with backoff while heartbeats keep the connection", () => {
  const session = newSession();
  const io = new RecordingIO();
  const frames = new Frames();
  session.onOpen(io);
  assert.deepEqual(io.requests(), [
    "heartbeats BTC-USD,ETH-USD",
    "market_trades BTC-USD,ETH-USD",
    "level2 BTC-USD,ETH-USD",
  ]);
  // Heartbeats and trades are acknowledged; the level2 request is refused.
  session.onFrame(frames.subscriptions({ heartbeats: ["heartbeats"] }), RX, io);
  session.onFrame(
    frames.subscriptions({ heartbeats: ["heartbeats"], market_trades: PRODUCTS }),
    RX,
    io,
  );
  session.onFrame(REFUSED, RX, io);
  assert.deepEqual(io.errors, ["Coinbase error: Failure to subscribe"]);
  session.onFrame(frames.heartbeat(), RX, io);
  session.onTick?.(io, T0 + 50);
  assert.deepEqual(io.errors.slice(1), [
    "Coinbase subscriptions missing (Failure to subscribe); asking again for level2 BTC-USD, ETH-USD in 1000 ms",
  ]);
  let status = session.status() as CoinbaseSessionStatus;
  assert.deepEqual(status.resubscribe_at, {
    "level2 BTC-USD": T0 + 1_050,
    "level2 ETH-USD": T0 + 1_050,
  });
  assert.deepEqual(status.waiting, {
    "BTC-USD":
      "level2 not subscribed (Failure to subscribe); asking again at 2026-08-06T07:06:41.050Z",
    "ETH-USD":
      "level2 not subscribed (Failure to subscribe); asking again at 2026-08-06T07:06:41.050Z",
  });
  // While it waits to be asked again, a refused book has no snapshot deadline.
  assert.deepEqual(status.snapshot_due_at, {});
  assert.equal(status.request_failures, 1);
  session.onTick?.(io, T0 + 1_049);
  assert.deepEqual(io.requests(), []);
  session.onTick?.(io, T0 + 1_050);
  assert.deepEqual(io.requests(), ["level2 BTC-USD,ETH-USD"]);
  status = session.status() as CoinbaseSessionStatus;
  assert.deepEqual(status.snapshot_due_at, { "BTC-USD": T0 + 11_050, "ETH-USD": T0 + 11_050 });
  // Refused again: 2 s this time.
  session.onFrame(REFUSED, RX, io);
  session.onTick?.(io, T0 + 1_100);
  assert.match(io.errors.at(-1)!, /asking again for level2 BTC-USD, ETH-USD in 2000 ms$/);
  session.onTick?.(io, T0 + 3_099);
  assert.deepEqual(io.requests(), []);
  session.onTick?.(io, T0 + 3_100);
  assert.deepEqual(io.requests(), ["level2 BTC-USD,ETH-USD"]);
  // Accepted: the snapshots come, nothing is asked again and the books are live.
  session.onFrame(frames.snapshot("BTC-USD"), RX, io);
  session.onFrame(frames.snapshot("ETH-USD"), RX, io);
  session.onFrame(
    frames.subscriptions({
      heartbeats: ["heartbeats"],
      market_trades: PRODUCTS,
      level2: PRODUCTS,
    }),
    RX,
    io,
  );
  for (let s = 4; s <= 60; s++) session.onTick?.(io, T0 + s * 1_000);
  assert.deepEqual(io.requests(), []);
  status = session.status() as CoinbaseSessionStatus;
  assert.deepEqual(status.books, { "BTC-USD": "live", "ETH-USD": "live" });
  assert.deepEqual(status.waiting, {});
  assert.deepEqual(status.resubscribe_at, {});
  assert.deepEqual(io.reconnects, []);
});

Deno.test("a Coinbase book with no snapshot within resyncTimeoutMs is asked for again, then the connection renewed", () => {
  const session = newSession({ resyncTimeoutMs: 5_000 });
  const io = new RecordingIO();
  const frames = new Frames();
  session.onOpen(io);
  io.requests();
  // Everything is acknowledged, but no level2 snapshot of BTC-USD ever comes.
  session.onFrame(frames.subscriptions({ heartbeats: ["heartbeats"] }), RX, io);
  session.onFrame(
    frames.subscriptions({ heartbeats: ["heartbeats"], market_trades: PRODUCTS }),
    RX,
    io,
  );
  session.onFrame(frames.snapshot("ETH-USD"), RX, io);
  const all = { heartbeats: ["heartbeats"], market_trades: PRODUCTS, level2: PRODUCTS };
  session.onFrame(frames.subscriptions(all), RX, io);
  for (let s = 1; s <= 4; s++) {
    session.onFrame(frames.heartbeat(), RX, io);
    session.onTick?.(io, T0 + s * 1_000);
  }
  assert.deepEqual(io.requests(), []);
  const waiting = (session.status() as CoinbaseSessionStatus).waiting;
  io.nowMs = T0 + 5_000;
  session.onTick?.(io, io.nowMs);
  assert.deepEqual(io.errors, [
    "Coinbase book BTC-USD: no snapshot within 5000 ms of subscribing; asking again in 1000 ms",
  ]);
  assert.deepEqual(waiting, { "BTC-USD": "subscribed; waiting for the snapshot" });
  io.nowMs = T0 + 6_000;
  session.onTick?.(io, io.nowMs);
  assert.deepEqual(io.requests(), ["level2 BTC-USD"]);
  session.onFrame(frames.subscriptions(all), RX, io);
  assert.deepEqual(io.reconnects, []);
  // Missed again: the connection is renewed, with a resync.
  io.nowMs = T0 + 11_000;
  session.onTick?.(io, io.nowMs);
  assert.deepEqual(io.reconnects, [{
    reason: "Book BTC-USD: no snapshot within 5000 ms of subscribing, twice",
    resync: true,
  }]);
  session.onTick?.(io, T0 + 12_000);
  assert.equal(io.reconnects.length, 1);
  // The new connection starts over: a snapshot in time, and nothing more.
  session.onClose();
  session.onOpen(io);
  io.requests();
  const again = new Frames();
  session.onFrame(again.snapshot("BTC-USD"), RX, io);
  session.onFrame(again.snapshot("ETH-USD"), RX, io);
  for (let s = 13; s <= 60; s++) session.onTick?.(io, T0 + s * 1_000);
  assert.equal(io.reconnects.length, 1);
  assert.deepEqual((session.status() as CoinbaseSessionStatus).waiting, {});
});

Deno.test("Coinbase subscribe requests left unanswered are asked for again, within the message rate", () => {
  const session = newSession({ resyncTimeoutMs: 5_000, maxMessagesPerSecond: 2 });
  const io = new RecordingIO();
  session.onOpen(io);
  io.requests();
  // No answer at all (lost requests, or lost answers).
  session.onTick?.(io, T0 + 4_999);
  assert.deepEqual(io.errors, []);
  session.onTick?.(io, T0 + 5_000);
  assert.deepEqual(io.errors, [
    "Coinbase subscriptions missing (no answer within 5000 ms); asking again for heartbeats " +
    "BTC-USD, ETH-USD in 1000 ms; asking again for market_trades BTC-USD, ETH-USD in 1000 ms; " +
    "asking again for level2 BTC-USD, ETH-USD in 1000 ms",
  ]);
  let status = session.status() as CoinbaseSessionStatus;
  assert.equal(status.request_failures, 3);
  assert.deepEqual(status.snapshot_due_at, {});
  // Two requests a second at most: the third waits for the next second.
  session.onTick?.(io, T0 + 6_000);
  assert.deepEqual(io.requests(), ["heartbeats BTC-USD,ETH-USD", "market_trades BTC-USD,ETH-USD"]);
  session.onTick?.(io, T0 + 6_500);
  assert.deepEqual(io.requests(), []);
  session.onTick?.(io, T0 + 7_000);
  assert.deepEqual(io.requests(), ["level2 BTC-USD,ETH-USD"]);
  status = session.status() as CoinbaseSessionStatus;
  assert.deepEqual(status.snapshot_due_at, { "BTC-USD": T0 + 12_000, "ETH-USD": T0 + 12_000 });
  assert.deepEqual(io.reconnects, []);
  assert.throws(() => newSession({ resyncTimeoutMs: 0 }), RangeError);
  assert.throws(() => newSession({ maxMessagesPerSecond: 0 }), RangeError);
});

Deno.test("a late Coinbase acknowledgement cancels the subscription due again and starts its book's deadline", () => {
  const session = newSession({ resyncTimeoutMs: 5_000 });
  const io = new RecordingIO();
  const frames = new Frames();
  session.onOpen(io);
  io.requests();
  session.onFrame(frames.subscriptions({ heartbeats: ["heartbeats"] }), RX, io);
  session.onFrame(REFUSED, RX, io);
  session.onFrame(REFUSED, RX, io);
  session.onTick?.(io, T0 + 100);
  const refused = (session.status() as CoinbaseSessionStatus).resubscribe_at;
  // An acknowledgement listing level2 after all (another request's answer, say).
  io.nowMs = T0 + 500;
  session.onFrame(
    frames.subscriptions({ heartbeats: ["heartbeats"], level2: PRODUCTS }),
    RX,
    io,
  );
  const status = session.status() as CoinbaseSessionStatus;
  session.onTick?.(io, T0 + 1_100);
  assert.deepEqual(io.requests(), ["market_trades BTC-USD,ETH-USD"]);
  assert.deepEqual(Object.keys(refused), [
    "market_trades BTC-USD",
    "market_trades ETH-USD",
    "level2 BTC-USD",
    "level2 ETH-USD",
  ]);
  assert.deepEqual(Object.keys(status.resubscribe_at), [
    "market_trades BTC-USD",
    "market_trades ETH-USD",
  ]);
  assert.deepEqual(status.snapshot_due_at, { "BTC-USD": T0 + 5_500, "ETH-USD": T0 + 5_500 });
});

Deno.test("a Coinbase feed whose level2 subscription is refused once asks for it again and gets the book", async () => {
  const product = `R${crypto.randomUUID().slice(0, 6).toUpperCase()}-USD`;
  const venue = await startCoinbaseServer({ products: [product], heartbeatMs: 100 });
  venue.setBook(product, [["100", "1"]], [["101", "2"]]);
  // The first level2 subscribe is refused, as Coinbase refuses a request over its message
  // rate; everything else is answered as usual.
  const inner = venue.ws.hooks.onMessage!;
  let refused = 0;
  venue.ws.hooks = {
    ...venue.ws.hooks,
    onMessage: (socket, text) => {
      if (refused === 0 && text.includes('"level2"')) {
        refused++;
        socket.send(REFUSED);
        return;
      }
      inner(socket, text);
    },
  };
  const nc = await connect({ servers: NATS_URL });
  const session = coinbaseSession({
    ws_url: venue.url,
    symbols: [product],
    channels: ["trades", "book"],
  }, { resubscribeInitialMs: 100 });
  const feed = startTestFeed(session, nc, venue, { staleAfterMs: 20_000 });
  try {
    await waitFor(() => session.status().books[product] === "live", 5_000, "the book live");
    assert.equal(refused, 1);
    assert.equal(venue.requests.filter((r) => r.request.channel === "level2").length, 1);
    assert.equal(venue.ws.connections, 1);
    assert.equal(feed.status.state, "live");
    assert.match(
      feed.status.last_error!,
      new RegExp(
        `^Coinbase subscriptions missing \\(Failure to subscribe\\); asking again for level2 ${product} in \\d+ ms$`,
      ),
    );
    assert.equal(session.status().request_failures, 1);
  } finally {
    await feed.close();
  }
});

Deno.test("a Coinbase feed whose level2 subscription gets no answer asks for it again and gets the book", async () => {
  const product = `R${crypto.randomUUID().slice(0, 6).toUpperCase()}-USD`;
  const venue = await startCoinbaseServer({ products: [product], heartbeatMs: 100 });
  venue.setBook(product, [["100", "1"]], [["101", "2"]]);
  // The first level2 subscribe is lost: no frame comes back for it.
  const inner = venue.ws.hooks.onMessage!;
  let lost = 0;
  venue.ws.hooks = {
    ...venue.ws.hooks,
    onMessage: (socket, text) => {
      if (lost === 0 && text.includes('"level2"')) {
        lost++;
        return;
      }
      inner(socket, text);
    },
  };
  const nc = await connect({ servers: NATS_URL });
  const session = coinbaseSession({
    ws_url: venue.url,
    symbols: [product],
    channels: ["trades", "book"],
  }, { resyncTimeoutMs: 300, resubscribeInitialMs: 100 });
  const feed = startTestFeed(session, nc, venue, { staleAfterMs: 20_000 });
  try {
    await waitFor(() => session.status().books[product] === "live", 5_000, "the book live");
    assert.equal(lost, 1);
    assert.equal(venue.ws.connections, 1);
    assert.equal(feed.status.state, "live");
    assert.deepEqual(session.status().waiting, {});
  } finally {
    await feed.close();
  }
});
