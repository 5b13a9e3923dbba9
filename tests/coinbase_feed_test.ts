import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { nullLogger } from "../lib/log.ts";
import {
  type BookEvent,
  isoToUs,
  type Level,
  MalformedFrameError,
  type MarketEvent,
} from "../market/events.ts";
import { OrderBook } from "../market/order_book.ts";
import type { FeedStatus } from "../market/status.ts";
import type { DeadLetter } from "../market/subjects.ts";
import { snapshotPart, Validator } from "../market/validation.ts";
import { parseCoinbaseFrame } from "../venues/coinbase/parse.ts";
import { coinbaseSession, type CoinbaseSessionStatus } from "../venues/coinbase/session.ts";
import type { SessionIO } from "../venues/session.ts";
import { waitFor } from "./_helpers.ts";
import { type FakeCoinbaseServer, startCoinbaseServer } from "./fakes/coinbase_server.ts";
import { ofKind, startTestFeed, watchVenue } from "./_feed_harness.ts";

const FIXTURES = new URL("../../shared/fixtures/coinbase/", import.meta.url);
const SESSION = "advanced_trade_session_2026-08-09.raw.jsonl";
const SUBSCRIBES = "advanced_trade_subscribe_requests_2026-08-09.raw.jsonl";
const RECEIVED_US = 1_786_309_549_000_000;
const PRODUCTS = ["BTC-USD", "ETH-USD"];

function lines(file: string): string[] {
  return Deno.readTextFileSync(new URL(file, FIXTURES)).split("\n").filter((line) => line !== "");
}

const captured = lines(SESSION);

// ---- the session alone, on a recording SessionIO ----------------------------

/** A SessionIO that records every request a session makes. */
function recordingIO() {
  const sent: string[] = [];
  const reconnects: Array<{ reason: string; resync: boolean }> = [];
  const errors: string[] = [];
  const controller = new AbortController();
  const io: SessionIO = {
    send: (text) => void sent.push(text),
    reconnect: (reason, options) => void reconnects.push({ reason, resync: !!options?.resync }),
    emit: () => assert.fail("the Coinbase session publishes only from onFrame"),
    resynced: () => assert.fail("the Coinbase session resyncs by reconnecting"),
    error: (message) => void errors.push(message),
    fetchText: () => Promise.reject(new Error("no REST in this test")),
    nowUs: () => Date.now() * 1000,
    signal: controller.signal,
    log: nullLogger,
  };
  return { io, sent, reconnects, errors };
}

function newSession(channels: Array<"trades" | "book" | "top"> = ["trades", "book", "top"]) {
  return coinbaseSession({
    ws_url: "wss://advanced-trade-ws.coinbase.com",
    symbols: PRODUCTS,
    channels,
  });
}

/** An `l2_data` frame for one product. */
function l2Frame(
  sequence: number,
  productId: string,
  type: "snapshot" | "update",
  updates: Array<[side: "bid" | "offer", price: string, qty: string]>,
): string {
  return JSON.stringify({
    channel: "l2_data",
    timestamp: "2026-08-09T21:05:49.000000000Z",
    sequence_num: sequence,
    events: [{
      type,
      product_id: productId,
      updates: updates.map(([side, price_level, new_quantity]) => ({
        side,
        event_time: "2026-08-09T21:05:48.999999Z",
        price_level,
        new_quantity,
      })),
    }],
  });
}

/**
 * Asserts that `book` equals the book of `product` (a captured product id)
 * at the end of the capture, rebuilt here by hand from the raw frames.
 */
function assertBookIsCaptured(book: OrderBook, product: string): void {
  const bids = new Map<string, string>();
  const asks = new Map<string, string>();
  for (const frame of captured) {
    const message = JSON.parse(frame);
    if (message.channel !== "l2_data") continue;
    for (const event of message.events) {
      if (event.product_id !== product) continue;
      if (event.type === "snapshot") {
        bids.clear();
        asks.clear();
      }
      for (const update of event.updates) {
        const side = update.side === "bid" ? bids : asks;
        if (Number(update.new_quantity) === 0) side.delete(update.price_level);
        else side.set(update.price_level, update.new_quantity);
      }
    }
  }
  assert.ok(bids.size > 1_000 && asks.size > 1_000);
  assert.deepEqual(new Map(book.levels("bid")), bids, `bids of ${product}`);
  assert.deepEqual(new Map(book.levels("ask")), asks, `asks of ${product}`);
  assert.ok(!book.crossed());
}

/** A frame with its `sequence_num` replaced. */
function renumber(frame: string, sequence: number): string {
  return frame.replace(/"sequence_num":\d+/, `"sequence_num":${sequence}`);
}

Deno.test("the Coinbase session subscribes to heartbeats and one channel per request, as captured", () => {
  const session = newSession();
  const { io, sent } = recordingIO();
  session.onOpen(io);
  const captured = new Set(lines(SUBSCRIBES));
  assert.deepEqual(sent.map((text) => JSON.parse(text).channel), [
    "heartbeats",
    "market_trades",
    "level2",
    "ticker",
  ]);
  for (const text of sent) assert.ok(captured.has(text), `not a captured request: ${text}`);
  const bookOnly = recordingIO();
  newSession(["book"]).onOpen(bookOnly.io);
  assert.deepEqual(bookOnly.sent.map((text) => JSON.parse(text).channel), [
    "heartbeats",
    "level2",
  ]);
});

Deno.test("the Coinbase session replays the captured session without a gap or a resync", () => {
  const session = newSession();
  const { io, reconnects, errors } = recordingIO();
  session.onOpen(io);
  const events: MarketEvent[] = [];
  for (const frame of captured) events.push(...session.onFrame(frame, RECEIVED_US, io));
  assert.deepEqual(reconnects, []);
  assert.deepEqual(errors, []);
  const counts: Record<string, number> = {};
  for (const event of events) counts[event.kind] = (counts[event.kind] ?? 0) + 1;
  // Every trade, ticker and candle of the capture; one book event per l2_data frame, but for
  // the two snapshots (18,764 bids and 27,236 offers; 6,935 and 16,399), split in 2,000 levels.
  assert.deepEqual(counts, { trade: 279, bar: 204, top: 160, book: 773 + 14 + 9 });
  const books = events.filter((event): event is BookEvent => event.kind === "book");
  for (const [product, parts] of [["BTC-USD", 14], ["ETH-USD", 9]] as const) {
    const ofProduct = books.filter((book) => book.symbol === product);
    assert.deepEqual(
      ofProduct.slice(0, parts).map((book) => [book.action, snapshotPart(book)]),
      Array.from({ length: parts }, (_, part) => ["snapshot", { part, parts }]),
    );
    assert.ok(ofProduct.slice(parts).every((book) => book.action === "delta"));
    assert.ok(ofProduct.every((book) => book.bids.length <= 2_000 && book.asks.length <= 2_000));
    assertBookIsCaptured(rebuild(books, product), product);
  }
  const status = session.status() as CoinbaseSessionStatus;
  assert.deepEqual(status.books, { "BTC-USD": "live", "ETH-USD": "live" });
  assert.equal(status.last_sequence, captured.length - 1);
  assert.equal(status.gaps, 0);
  assert.equal(status.heartbeat_counter, 41715);
  assert.deepEqual(status.subscriptions.level2, ["BTC-USD", "ETH-USD"]);
});

Deno.test("every part of the captured Coinbase snapshots passes the validator, and what passes is the whole book", () => {
  // BTC-USD's snapshot has 46,000 levels and ETH-USD's 23,334: 14 and 9 parts of 2,000 a side.
  const session = newSession(["book"]);
  const { io, reconnects } = recordingIO();
  session.onOpen(io);
  const events = captured.flatMap((frame) => session.onFrame(frame, RECEIVED_US, io));
  assert.deepEqual(reconnects, []);
  // As the validator actor sees them: one subject per product, in order. The capture is old,
  // so the time window is opened; the book rules are what is checked.
  const validator = new Validator({ max_lag_ms: 1e12, max_future_ms: 1e12 });
  const accepted: MarketEvent[] = [];
  for (const product of PRODUCTS) {
    const result = validator.validate(ofKind(events, "book", product), RECEIVED_US);
    assert.deepEqual(
      result.rejected.map((rejection) => `${rejection.reason}: ${rejection.detail}`),
      [],
      product,
    );
    accepted.push(...result.accepted);
  }
  for (const product of PRODUCTS) assertBookIsCaptured(rebuild(accepted, product), product);
});

Deno.test("a Coinbase sequence gap resets every book and asks for one resync reconnect", () => {
  const session = newSession();
  const { io, reconnects } = recordingIO();
  session.onOpen(io);
  const lastSnapshot = captured.findLastIndex((frame) =>
    frame.includes('"type":"snapshot","product_id"')
  );
  const firstUpdate = captured.findIndex((frame, i) =>
    i > lastSnapshot && frame.includes('"l2_data"')
  );
  for (const frame of captured.slice(0, firstUpdate)) session.onFrame(frame, RECEIVED_US, io);
  assert.deepEqual((session.status() as CoinbaseSessionStatus).books, {
    "BTC-USD": "live",
    "ETH-USD": "live",
  });
  // Frame firstUpdate is lost: the next one shows the gap.
  const afterGap = session.onFrame(captured[firstUpdate + 1]!, RECEIVED_US, io);
  assert.deepEqual(reconnects, [{
    reason: `Sequence gap: expected ${firstUpdate}, got ${firstUpdate + 1}`,
    resync: true,
  }]);
  assert.ok(afterGap.every((event) => event.kind !== "book"), "no book event after a gap");
  // Later frames of the same connection: no book events, no second reconnect.
  const later = captured.slice(firstUpdate + 2, firstUpdate + 60)
    .flatMap((frame) => session.onFrame(frame, RECEIVED_US, io));
  assert.ok(later.some((event) => event.kind === "trade" || event.kind === "top"));
  assert.ok(later.every((event) => event.kind !== "book"));
  assert.equal(reconnects.length, 1);
  const status = session.status() as CoinbaseSessionStatus;
  assert.equal(status.gaps, 1);
  assert.deepEqual(status.books, { "BTC-USD": "waiting", "ETH-USD": "waiting" });

  // The new connection starts at 0 again with fresh snapshots.
  session.onClose();
  assert.equal((session.status() as CoinbaseSessionStatus).last_sequence, null);
  session.onOpen(io);
  const events = captured.slice(0, firstUpdate)
    .flatMap((frame) => session.onFrame(frame, RECEIVED_US, io));
  const books = events.filter((event): event is BookEvent => event.kind === "book");
  assert.deepEqual(
    books.filter((book) => book.action === "snapshot" && snapshotPart(book)?.part === 0)
      .map((book) => book.symbol),
    PRODUCTS,
  );
  assert.deepEqual((session.status() as CoinbaseSessionStatus).books, {
    "BTC-USD": "live",
    "ETH-USD": "live",
  });
  assert.equal(reconnects.length, 1);
});

Deno.test("a crossed Coinbase book publishes nothing and asks for a resync reconnect", () => {
  const session = newSession(["book"]);
  const { io, reconnects } = recordingIO();
  session.onOpen(io);
  assert.equal(
    session.onFrame(
      l2Frame(0, "BTC-USD", "snapshot", [["bid", "100.5", "1"], ["offer", "101", "2"]]),
      RECEIVED_US,
      io,
    ).length,
    1,
  );
  const crossed = session.onFrame(
    l2Frame(1, "BTC-USD", "update", [["bid", "101.5", "0.1"]]),
    RECEIVED_US,
    io,
  );
  assert.deepEqual(crossed, []);
  assert.equal(reconnects.length, 1);
  assert.equal(reconnects[0]!.resync, true);
  assert.match(reconnects[0]!.reason, /^Book BTC-USD out of sync: Book crossed/);
  assert.deepEqual(
    session.onFrame(l2Frame(2, "BTC-USD", "update", [["bid", "99", "1"]]), RECEIVED_US, io),
    [],
  );
  assert.equal(reconnects.length, 1);
  const status = session.status() as CoinbaseSessionStatus;
  assert.equal(status.book_resyncs, 1);
  assert.equal(status.books["BTC-USD"], "waiting");
});

Deno.test("a Coinbase snapshot deeper than bookEventMaxLevels is published as numbered snapshot parts", () => {
  const session = coinbaseSession({
    ws_url: "wss://advanced-trade-ws.coinbase.com",
    symbols: ["BTC-USD"],
    channels: ["book"],
  }, { bookEventMaxLevels: 2 });
  const { io } = recordingIO();
  session.onOpen(io);
  const events = session.onFrame(
    l2Frame(0, "BTC-USD", "snapshot", [
      ["offer", "103", "1"],
      ["bid", "99", "1"],
      ["offer", "101", "2"],
      ["bid", "100", "2"],
      ["offer", "102", "3"],
    ]),
    RECEIVED_US,
    io,
  ) as BookEvent[];
  assert.deepEqual(
    events.map((event) => [
      event.action,
      snapshotPart(event),
      event.bids,
      event.asks,
      event.sequence,
    ]),
    [
      [
        "snapshot",
        { part: 0, parts: 2 },
        [["100", "2"], ["99", "1"]],
        [["101", "2"], ["102", "3"]],
        0,
      ],
      ["snapshot", { part: 1, parts: 2 }, [], [["103", "1"]], 0],
    ],
  );
  assert.ok(events.every((event) => event.ts_exchange === events[0]!.ts_exchange));
  assert.ok(events.every((event) => event.ts_local === events[0]!.ts_local));
  // Small snapshots and updates stay one event.
  const update = session.onFrame(
    l2Frame(1, "BTC-USD", "update", [["bid", "98", "1"], ["bid", "97", "1"], ["bid", "96", "1"]]),
    RECEIVED_US,
    io,
  );
  assert.equal(update.length, 1);
  assert.throws(
    () =>
      coinbaseSession({ ws_url: "wss://x", symbols: ["BTC-USD"], channels: ["book"] }, {
        bookEventMaxLevels: 0,
      }),
    RangeError,
  );
});

Deno.test("a Coinbase error message goes to io.error and the status", () => {
  const session = newSession();
  const { io, errors, reconnects } = recordingIO();
  session.onOpen(io);
  assert.deepEqual(
    session.onFrame('{"type":"error","message":"Failure to subscribe"}', RECEIVED_US, io),
    [],
  );
  assert.deepEqual(errors, ["Coinbase error: Failure to subscribe"]);
  assert.deepEqual(reconnects, []);
  const status = session.status() as CoinbaseSessionStatus;
  assert.equal(status.errors, 1);
  assert.equal(status.last_error, "Failure to subscribe");
});

Deno.test("malformed Coinbase frames throw; a readable sequence number is still counted", () => {
  const session = newSession();
  const { io, reconnects } = recordingIO();
  session.onOpen(io);
  for (const frame of captured.slice(0, 20)) session.onFrame(frame, RECEIVED_US, io);

  // Garbage without a sequence number: refused, nothing else happens.
  assert.throws(() => session.onFrame("}{ not json", RECEIVED_US, io), MalformedFrameError);
  // A trade frame with a bad price uses up sequence 20: no gap at 21.
  const trade = captured.findIndex((frame) =>
    frame.includes('"market_trades"') && frame.includes('"update"')
  );
  const badTrade = renumber(captured[trade]!, 20).replace(/"price":"[^"]+"/, '"price":"1e5"');
  assert.throws(() => session.onFrame(badTrade, RECEIVED_US, io), MalformedFrameError);
  const heartbeat = captured.find((frame) => frame.includes('"heartbeats"'))!;
  session.onFrame(renumber(heartbeat, 21), RECEIVED_US, io);
  assert.deepEqual(reconnects, []);
  assert.equal((session.status() as CoinbaseSessionStatus).gaps, 0);

  // A bad l2_data frame: its book can no longer be trusted.
  const badBook = l2Frame(22, "BTC-USD", "update", [["bid", "-1", "1"]]);
  assert.throws(() => session.onFrame(badBook, RECEIVED_US, io), MalformedFrameError);
  assert.deepEqual(reconnects, [{ reason: "Malformed level2 frame", resync: true }]);
});

Deno.test("the Coinbase session reports every followed product's book, waiting until a snapshot", () => {
  const session = newSession(["trades"]);
  assert.deepEqual((session.status() as CoinbaseSessionStatus).books, {});
  assert.throws(
    () => coinbaseSession({ ws_url: "wss://x", symbols: [], channels: ["book"] }),
    TypeError,
  );
  const withBooks = newSession(["book"]);
  assert.deepEqual((withBooks.status() as CoinbaseSessionStatus).books, {
    "BTC-USD": "waiting",
    "ETH-USD": "waiting",
  });
  assert.equal(withBooks.url(), "wss://advanced-trade-ws.coinbase.com");
  // The parser is what the session uses: a sanity check on a captured frame.
  assert.equal(parseCoinbaseFrame(captured[0]!, RECEIVED_US).sequence, 0);
});

// ---- the real feed runtime, the fake venue and the real NATS ----------------

const NATS_URL = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";

/** A product id no other test uses, so its subjects are this test's alone. */
function uniqueProduct(quote = "USD"): string {
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 8).toUpperCase();
  return `T${id}-${quote}`;
}

interface Harness extends AsyncDisposable {
  venue: FakeCoinbaseServer;
  /** The feed's figures in MarketStatus. */
  status: FeedStatus;
  /** Events received on md.> for this test's products, in arrival order. */
  events: MarketEvent[];
  /** Every NATS message of this test's products (each a JSON array). */
  messages: Array<{ subject: string; events: MarketEvent[] }>;
  /** Dead letters on dlq.md.coinbase whose frame carries this test's token or products. */
  letters: DeadLetter[];
  /** A token to put in garbage frames so their dead letters can be told apart. */
  token: string;
  venueStatus(): CoinbaseSessionStatus;
}

interface HarnessOptions {
  staleAfterMs?: number;
  heartbeatMs?: number;
  answer?: boolean;
  books?: Record<string, [bids: Level[], asks: Level[]]>;
}

async function startHarness(products: string[], options: HarnessOptions = {}): Promise<Harness> {
  const venue = await startCoinbaseServer({
    products,
    heartbeatMs: options.heartbeatMs ?? 1_000,
    answer: options.answer ?? true,
  });
  for (const [product, [bids, asks]] of Object.entries(options.books ?? {})) {
    venue.setBook(product, bids, asks);
  }
  const nc = await connect({ servers: NATS_URL });
  const token = crypto.randomUUID();
  const { events, messages, letters } = await watchVenue(nc, "coinbase", products, [
    token,
    ...products,
  ]);
  const session = coinbaseSession({
    ws_url: venue.url,
    symbols: products,
    channels: ["trades", "book", "top"],
  });
  const feed = startTestFeed(session, nc, venue, { staleAfterMs: options.staleAfterMs });
  return {
    venue,
    status: feed.status,
    events,
    messages,
    letters,
    token,
    venueStatus: () => session.status(),
    [Symbol.asyncDispose]: feed.close,
  };
}

/** Applies published book events to a book, as a consumer would. */
function rebuild(events: readonly MarketEvent[], symbol: string): OrderBook {
  const book = new OrderBook();
  for (const event of ofKind(events, "book", symbol)) {
    // Part 0 (or a whole snapshot) replaces the book; later parts add their levels.
    if (event.action === "snapshot" && (snapshotPart(event)?.part ?? 0) === 0) {
      book.replace(event.bids, event.asks);
    } else book.applyAll(event.bids, event.asks);
  }
  return book;
}

function snapshots(h: Harness, symbol: string): number {
  return ofKind(h.events, "book", symbol).filter((event) => event.action === "snapshot").length;
}

/** Waits until the book NATS consumers rebuild for `product` equals the fake venue's. */
async function bookMatches(h: Harness, product: string, what: string): Promise<void> {
  const venueBook = h.venue.books.get(product)!;
  await waitFor(
    () => {
      const rebuilt = rebuild(h.events, product);
      return JSON.stringify([rebuilt.levels("bid"), rebuilt.levels("ask")]) ===
        JSON.stringify([venueBook.levels("bid"), venueBook.levels("ask")]);
    },
    5_000,
    what,
  );
}

/** Waits until `connection` (1, 2…) has sent its four subscribe requests. */
async function subscribed(h: Harness, connection: number): Promise<void> {
  await waitFor(
    () => h.venue.requests.filter((r) => r.connection === connection).length >= 4,
    5_000,
    `subscribe requests of connection ${connection}`,
  );
}

const BIDS: Level[] = [["100.10", "1.50000000"], ["100.00", "2"], ["99.5", "0.00000015"]];
const ASKS: Level[] = [["100.20", "0.25000000"], ["101", "3"], ["105.125", "12.5"]];

function seeded(products: string[]): Record<string, [bids: Level[], asks: Level[]]> {
  return Object.fromEntries(products.map((product) => [product, [BIDS, ASKS]]));
}

Deno.test("coinbase feed subscribes and publishes trades, book and top with exact decimals", async () => {
  const a = uniqueProduct();
  const b = uniqueProduct("BTC");
  await using h = await startHarness([a, b], { books: seeded([a, b]) });
  const before = Date.now() * 1000;
  await subscribed(h, 1);
  assert.deepEqual(
    h.venue.requests.map(({ request }) => request),
    ["heartbeats", "market_trades", "level2", "ticker"].map((channel) => ({
      type: "subscribe",
      product_ids: [a, b],
      channel,
    })),
  );
  await waitFor(
    () => snapshots(h, a) === 1 && snapshots(h, b) === 1 && ofKind(h.events, "top", a).length === 1,
    5_000,
    "snapshots of the book and the ticker",
  );
  const [snapshot] = ofKind(h.events, "book", a);
  assert.deepEqual([snapshot?.bids, snapshot?.asks], [BIDS, ASKS]);
  assert.equal(snapshot?.sequence !== null && typeof snapshot?.sequence, "number");

  h.venue.trade(a, {
    price: "100.20000000",
    size: "0.00000015",
    side: "SELL",
    time: "2026-08-09T21:05:48.167634Z",
    trade_id: "1068572091",
  });
  h.venue.updateBook(a, [["100.15", "0.5"]], [["100.20", "0"]]);
  h.venue.updateBook(a, [["100.00", "0"]], [["100.25", "7.25000000"]]);
  h.venue.ticker(a);
  await waitFor(() => ofKind(h.events, "top", a).length === 2, 5_000, "ticker update");
  const after = Date.now() * 1000 + 1_000;

  const [trade] = ofKind(h.events, "trade", a);
  assert.ok(trade);
  const { ts_local: tsLocal, ...fields } = trade;
  assert.deepEqual(fields, {
    exchange: "coinbase",
    symbol: a,
    venue_symbol: a,
    ts_exchange: Date.UTC(2026, 7, 9, 21, 5, 48) * 1000 + 167_634,
    kind: "trade",
    trade_id: "1068572091",
    price: "100.20000000",
    qty: "0.00000015",
    side: "buy", // the maker sold
  });
  assert.ok(Number.isSafeInteger(tsLocal) && tsLocal >= before && tsLocal <= after);

  const [snapshotTop, top] = ofKind(h.events, "top", a);
  assert.deepEqual(
    [snapshotTop?.bid_price, snapshotTop?.bid_qty, snapshotTop?.ask_price, snapshotTop?.ask_qty],
    ["100.10", "1.50000000", "100.20", "0.25000000"],
  );
  assert.deepEqual(
    [top?.bid_price, top?.bid_qty, top?.ask_price, top?.ask_qty],
    ["100.15", "0.5", "100.25", "7.25000000"],
  );
  assert.ok(top && Number.isSafeInteger(top.ts_exchange) && top.ts_exchange <= after);
  const deltas = ofKind(h.events, "book", a).filter((event) => event.action === "delta");
  assert.deepEqual(deltas.map((event) => [event.bids, event.asks]), [
    [[["100.15", "0.5"]], [["100.20", "0"]]],
    [[["100.00", "0"]], [["100.25", "7.25000000"]]],
  ]);
  // Sequence numbers of book events follow the connection's counter.
  const sequences = ofKind(h.events, "book", a).map((event) => event.sequence!);
  assert.deepEqual(sequences, [...sequences].sort((x, y) => x - y));
  await bookMatches(h, a, "book of A matches the venue");
  await bookMatches(h, b, "book of B matches the venue");
  for (const { subject, events } of h.messages) {
    assert.ok(events.length >= 1);
    for (const event of events) assert.equal(subject, `md.${event.kind}.coinbase.${event.symbol}`);
  }
  assert.equal(h.status.state, "live");
  assert.equal(h.status.reconnects, 0);
  assert.equal(h.status.resyncs, 0);
  assert.equal(h.status.malformed, 0);
  await waitFor(
    () => {
      const venue = h.status.venue as CoinbaseSessionStatus;
      return venue.books?.[a] === "live" && venue.books?.[b] === "live" &&
        venue.subscriptions?.level2?.length === 2;
    },
    2_000,
    "venue figures in MarketStatus",
  );
});

Deno.test("coinbase feed replays the captured Advanced Trade session through the fake venue", async () => {
  // The capture's products, renamed so the subjects are this test's alone.
  const a = uniqueProduct();
  const b = uniqueProduct();
  const frames = captured.map((frame) =>
    frame.replaceAll('"BTC-USD"', JSON.stringify(a)).replaceAll('"ETH-USD"', JSON.stringify(b))
  );
  await using h = await startHarness([a, b], { answer: false });
  await subscribed(h, 1);
  h.venue.replay(frames);
  const expected = { trade: 279, top: 160, bar: 204, book: 773 + 14 + 9 };
  const count = () => {
    const counts: Record<string, number> = {};
    for (const event of h.events) counts[event.kind] = (counts[event.kind] ?? 0) + 1;
    return counts;
  };
  await waitFor(
    () =>
      JSON.stringify(count()) === JSON.stringify(expected) ||
      h.events.length >= 279 + 160 + 204 + 773 + 14 + 9,
    10_000,
    "every event of the capture",
  );
  assert.deepEqual(count(), expected);

  // The newest trade of the capture's first snapshot, exactly (its trades come out oldest first).
  const first = h.events.find((event) => event.kind === "trade" && event.trade_id === "1068572090");
  assert.ok(first?.kind === "trade");
  assert.equal(first.symbol, a);
  assert.equal(first.trade_id, "1068572090");
  assert.equal(first.price, "65083.67");
  assert.equal(first.qty, "0.002186");
  assert.equal(first.side, "buy");
  assert.equal(first.ts_exchange, isoToUs("2026-08-09T21:05:42.514318Z"));

  // The books NATS consumers rebuild equal the capture's, applied by hand.
  assertBookIsCaptured(rebuild(h.events, a), "BTC-USD");
  assertBookIsCaptured(rebuild(h.events, b), "ETH-USD");
  assert.equal(h.status.malformed, 0);
  assert.equal(h.status.resyncs, 0);
  assert.equal(h.status.reconnects, 0);
  const venue = h.venueStatus();
  assert.equal(venue.last_sequence, captured.length - 1);
  assert.equal(venue.gaps, 0);
  assert.deepEqual(venue.books, { [a]: "live", [b]: "live" });
});

Deno.test("coinbase feed reconnects after a drop, resubscribes and takes fresh snapshots", async () => {
  const a = uniqueProduct();
  await using h = await startHarness([a], { books: seeded([a]) });
  await subscribed(h, 1);
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  h.venue.drop();
  await waitFor(() => h.venue.ws.connections === 2, 5_000, "second connection");
  await subscribed(h, 2);
  await waitFor(() => snapshots(h, a) === 2, 5_000, "fresh snapshot");
  assert.ok(h.status.reconnects >= 1);
  assert.equal(h.status.resyncs, 0);
  h.venue.updateBook(a, [["100.12", "4"]], [["100.20", "0"]]);
  await bookMatches(h, a, "book after the reconnect");
  await waitFor(() => h.status.state === "live", 2_000, "live again");
});

Deno.test("coinbase feed resyncs after a sequence gap: counted, reconnected, fresh snapshot", async () => {
  const a = uniqueProduct();
  await using h = await startHarness([a], { books: seeded([a]) });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  h.venue.skipSequence();
  h.venue.updateBook(a, [["100.11", "1"]], []);
  await waitFor(() => h.status.resyncs === 1, 5_000, "resync counted");
  await waitFor(() => snapshots(h, a) === 2, 5_000, "fresh snapshot");
  assert.equal(h.venue.ws.connections, 2);
  // The update after the gap was never published as a delta: the snapshot carries it.
  assert.equal(ofKind(h.events, "book", a).filter((event) => event.action === "delta").length, 0);
  await bookMatches(h, a, "book after the resync");
  assert.equal(h.venueStatus().gaps, 1);
  assert.equal(h.status.malformed, 0);
});

Deno.test("coinbase feed resyncs a crossed book with a reconnect and a fresh snapshot", async () => {
  const a = uniqueProduct();
  await using h = await startHarness([a], { books: seeded([a]) });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  // A bid above the best ask that the venue's own book never had.
  h.venue.sendChannel("l2_data", [{
    type: "update",
    product_id: a,
    updates: [{
      side: "bid",
      event_time: "2026-08-09T21:05:48.170326Z",
      price_level: "250",
      new_quantity: "1",
    }],
  }]);
  await waitFor(() => h.status.resyncs === 1, 5_000, "resync counted");
  await waitFor(() => snapshots(h, a) === 2, 5_000, "fresh snapshot");
  await bookMatches(h, a, "book after the resync");
  assert.equal(h.venueStatus().book_resyncs, 1);
  assert.equal(h.venueStatus().gaps, 0);
});

Deno.test("coinbase feed dead-letters malformed frames with the raw frame and carries on", async () => {
  const a = uniqueProduct();
  await using h = await startHarness([a], { books: seeded([a]) });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  const garbage = `{"garbage":"${h.token}"`;
  h.venue.garbage(garbage);
  // A numbered trade frame with a price that is not a decimal.
  h.venue.sendChannel("market_trades", [{
    type: "update",
    trades: [{
      product_id: a,
      trade_id: "1",
      price: "12,5",
      size: "1",
      time: "2026-08-09T21:05:48.167634Z",
      side: "BUY",
    }],
  }]);
  h.venue.trade(a, { price: "100.2", size: "1", side: "BUY" });
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "the next trade");
  await waitFor(() => h.letters.length === 2, 5_000, "two dead letters");
  assert.equal(h.letters[0]!.frame, garbage);
  assert.ok(h.letters[1]!.frame?.includes('"price":"12,5"'));
  for (const letter of h.letters) {
    assert.equal(letter.exchange, "coinbase");
    assert.equal(letter.stage, "feed");
    assert.equal(letter.reason, "malformed");
    assert.ok(letter.detail.length > 0);
  }
  assert.equal(h.status.malformed, 2);
  // The bad trade used up its sequence number: no gap, no reconnect.
  assert.equal(h.venueStatus().gaps, 0);
  assert.equal(h.status.resyncs, 0);
  assert.equal(h.venue.ws.connections, 1);
  assert.equal(ofKind(h.events, "trade", a)[0]!.side, "sell");
});

Deno.test("coinbase heartbeats keep a quiet feed up; a silent venue is reconnected by the watchdog", async () => {
  const a = uniqueProduct();
  await using h = await startHarness([a], {
    books: seeded([a]),
    staleAfterMs: 300,
    heartbeatMs: 40,
  });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  await waitFor(() => h.venueStatus().heartbeat_counter !== null, 5_000, "a heartbeat");
  const first = h.venueStatus().heartbeat_counter!;
  // Heartbeats alone for well over stale_after_ms: the connection stays.
  await waitFor(
    () => h.venueStatus().heartbeat_counter! - first >= 15,
    5_000,
    "fifteen heartbeats",
  );
  assert.equal(h.venue.ws.connections, 1);
  h.venue.silence();
  await waitFor(() => h.venue.ws.connections === 2, 5_000, "watchdog reconnect");
  await waitFor(() => snapshots(h, a) === 2, 5_000, "fresh snapshot");
  assert.equal(h.status.reconnects, 1);
  assert.equal(h.status.resyncs, 0);
});

Deno.test("a coinbase error message is surfaced as the feed's last error", async () => {
  const a = uniqueProduct();
  await using h = await startHarness([a], { books: seeded([a]) });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  h.venue.error("Failure to subscribe");
  await waitFor(() => h.status.last_error !== null, 5_000, "last error");
  assert.equal(h.status.last_error, "Coinbase error: Failure to subscribe");
  assert.equal(h.venueStatus().last_error, "Failure to subscribe");
  assert.equal(h.venue.ws.connections, 1);
});
