import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { HttpStatusError, parseRetryAfter } from "../actors/feed.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import {
  type Clock,
  MAX_TIMER_DELAY_MS,
  monotonicOf,
  RecordingClock,
  systemClock,
} from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import {
  type BookEvent,
  type Level,
  MalformedFrameError,
  type MarketEvent,
  type TopEvent,
  type TradeEvent,
} from "../market/events.ts";
import { OrderBook } from "../market/order_book.ts";
import { type FeedStatus, MarketStatus } from "../market/status.ts";
import type { DeadLetter } from "../market/subjects.ts";
import type { SessionIO } from "../venues/session.ts";
import {
  binanceDepthWeight,
  BinanceSession,
  binanceSession,
  type BinanceSessionConfig,
  type BinanceSessionStatus,
  DEFAULT_BINANCE_MAX_RATE_LIMIT_PAUSE_MS,
  DEFAULT_BINANCE_SNAPSHOT_GRACE_MS,
} from "../venues/binance/session.ts";
import {
  BINANCE_MAX_URL_LENGTH,
  binanceChannelStreams,
  binanceCombinedUrlLength,
  binanceSymbol,
} from "../venues/binance/symbols.ts";
import { waitFor } from "./_helpers.ts";
import {
  FakeBinanceMarket,
  type FakeBinanceServer,
  serverShutdownFrame,
  startBinanceServer,
} from "./fakes/binance_server.ts";
import { ofKind, runFeed, startTestFeed, watchVenue } from "./_feed_harness.ts";

const FIXTURES = new URL("../../shared/fixtures/binance/", import.meta.url);
const NKN = Deno.readTextFileSync(new URL("nknusdt_snapshot_then_depth_diffs.raw.jsonl", FIXTURES))
  .split("\n").filter((line) => line !== "");
const RX = 1_786_000_000_000_000;
const CHANNELS = ["trades", "book", "top"] as const;
const NATS_URL = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";

function config(overrides: Partial<BinanceSessionConfig> = {}): BinanceSessionConfig {
  return {
    ws_url: "ws://127.0.0.1:1",
    rest_url: "http://127.0.0.1:1",
    symbols: ["BTC-USDT"],
    channels: ["trades", "book", "top"],
    snapshot_limit: 100,
    ...overrides,
  };
}

/** A SessionIO that records what the session asks for; REST answers come from `respond`. */
class FakeIO implements SessionIO {
  readonly sent: string[] = [];
  readonly reconnects: string[] = [];
  readonly emitted: MarketEvent[] = [];
  readonly resyncs: string[] = [];
  readonly errors: string[] = [];
  readonly fetches: string[] = [];
  readonly log = nullLogger;
  readonly #controller = new AbortController();
  readonly signal = this.#controller.signal;
  respond: (url: string) => Promise<string>;

  constructor(respond: (url: string) => Promise<string> = () => new Promise(() => {})) {
    this.respond = respond;
  }

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
  fetchText(url: string): Promise<string> {
    this.fetches.push(url);
    return this.respond(url);
  }
  /** What `nowUs` answers; the wall clock unless a test sets it. */
  now: () => number = () => Date.now() * 1000;
  nowUs(): number {
    return this.now();
  }
  /** The connection closed: aborts the signal. */
  close(): void {
    this.#controller.abort(new Error("closed"));
  }
}

/** A REST answer served from the fake market's current books. */
function restFrom(market: FakeBinanceMarket): (url: string) => Promise<string> {
  return (url) => {
    const params = new URL(url).searchParams;
    return Promise.resolve(
      market.book(params.get("symbol")!).snapshotBody(Number(params.get("limit"))),
    );
  };
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

const BIDS: Level[] = [["100.00", "1.000"], ["99.50", "2.000"], ["99.00", "3.000"]];
const ASKS: Level[] = [["100.50", "1.500"], ["101.00", "2.500"], ["102.00", "4.000"]];

function seeded(symbols: readonly string[] = ["BTC-USDT"]): FakeBinanceMarket {
  const market = new FakeBinanceMarket(symbols, { now: () => 1_786_000_000_123 });
  for (const book of market.books.values()) book.apply(BIDS, ASKS);
  return market;
}

// ---- URL ------------------------------------------------------------------

Deno.test("binance session url names a combined stream per symbol and channel", () => {
  const session = binanceSession(config({
    ws_url: "wss://stream.binance.com:9443",
    symbols: ["BTC-USDT", "ETH-BTC"],
  }));
  assert.equal(
    session.url(),
    "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade/" +
      "btcusdt@bookTicker/ethbtc@depth@100ms/ethbtc@trade/ethbtc@bookTicker",
  );
  const tradesOnly = binanceSession(config({ channels: ["trades"] }));
  assert.equal(tradesOnly.url(), "ws://127.0.0.1:1/stream?streams=btcusdt@trade");
  assert.equal(tradesOnly.status().books_total, 0);
});

Deno.test("binance session for the default config fits one connection", () => {
  const session = binanceSession(DEFAULT_CONFIG.exchanges.binance);
  const status = session.status();
  assert.equal(status.streams, 72);
  assert.equal(status.books_total, 24);
  assert.equal(status.books_synced, 0);
});

Deno.test("binance session refuses more streams than one connection carries", () => {
  const symbols = Array.from({ length: 342 }, (_, i) => `S${i}-USDT`);
  assert.throws(() => binanceSession(config({ symbols })), RangeError);
  assert.throws(() => binanceSession(config({ symbols: ["btcusdt"] })), TypeError);
  assert.throws(() => binanceSession(config(), { snapshotConcurrency: 0 }), RangeError);
});

Deno.test("binance session refuses symbols whose combined-stream URL is longer than Binance opens", () => {
  // Binance opens nothing for a URL over ~8,000 characters: 200 symbols with three channels
  // (600 streams, under the 1,024 a connection carries) make one of about 15,000.
  const symbols = Array.from({ length: 200 }, (_, i) => `COIN${i}-USDT`);
  const base = "wss://stream.binance.com:9443";
  const lengthOf = (n: number) =>
    binanceCombinedUrlLength(base, binanceChannelStreams(symbols.slice(0, n), CHANNELS));
  let fit = 0;
  while (lengthOf(fit + 1) <= BINANCE_MAX_URL_LENGTH) fit++;
  assert.ok(fit > 100 && fit < 200, `${fit} symbols fit`);
  const url = binanceSession(config({ ws_url: base, symbols: symbols.slice(0, fit) })).url();
  assert.equal(url.length, lengthOf(fit));
  assert.ok(url.length <= BINANCE_MAX_URL_LENGTH);
  assert.throws(
    () => binanceSession(config({ ws_url: base, symbols: symbols.slice(0, fit + 1) })),
    new RangeError(
      `The combined-stream URL of ${3 * (fit + 1)} streams is ${lengthOf(fit + 1)} characters, ` +
        `over the ${BINANCE_MAX_URL_LENGTH} Binance opens`,
    ),
  );
  assert.throws(() => binanceSession(config({ ws_url: base, symbols })), RangeError);
});

// ---- books ----------------------------------------------------------------

Deno.test("binance session syncs the real NKNUSDT snapshot and 150 diffs", async () => {
  const session = binanceSession(config({ symbols: ["NKN-USDT"], snapshot_limit: 1000 }));
  const io = new FakeIO(() => Promise.resolve(NKN[0]!));
  try {
    // The stream runs ahead of the snapshot: a few diffs buffer before it arrives.
    let answer!: (body: string) => void;
    io.respond = () => new Promise((resolve) => answer = resolve);
    session.onOpen(io);
    assert.deepEqual(io.fetches, [
      "http://127.0.0.1:1/api/v3/depth?symbol=NKNUSDT&limit=1000",
    ]);
    const returned: MarketEvent[] = [];
    for (const frame of NKN.slice(1, 6)) returned.push(...session.onFrame(frame, RX, io));
    assert.equal(returned.length, 0);
    assert.equal(session.status().books["NKN-USDT"]?.buffered_diffs, 5);
    // The snapshot's book is stamped with the connection's time (a replay's recorded one).
    io.now = () => RX + 7_000;
    answer(NKN[0]!);
    await waitFor(() => io.emitted.length === 1, 2_000, "snapshot event");
    const snapshot = io.emitted[0] as BookEvent;
    assert.equal(snapshot.action, "snapshot");
    assert.equal(snapshot.symbol, "NKN-USDT");
    assert.equal(snapshot.ts_local, RX + 7_000);
    for (const frame of NKN.slice(6)) returned.push(...session.onFrame(frame, RX, io));
    assert.equal(returned.length, 145);
    assert.ok(returned.every((event) => event.kind === "book" && event.action === "delta"));
    // Deltas chain on from the snapshot's sequence.
    const sequences = returned.map((event) => (event as BookEvent).sequence!);
    assert.ok(sequences.every((seq, i) => i === 0 || seq > sequences[i - 1]!));
    assert.deepEqual(io.resyncs, []);

    // What a consumer rebuilds equals an independent replay of the fixture.
    const expected = new OrderBook();
    const rest = JSON.parse(NKN[0]!);
    expected.replace(rest.bids, rest.asks);
    for (const line of NKN.slice(1)) {
      const { data } = JSON.parse(line);
      if (data.u > rest.lastUpdateId) expected.applyAll(data.b, data.a);
    }
    const rebuilt = replay([...io.emitted, ...returned], "NKN-USDT");
    assert.deepEqual(rebuilt.levels("bid"), expected.levels("bid"));
    assert.deepEqual(rebuilt.levels("ask"), expected.levels("ask"));
    const status = session.status();
    assert.equal(status.books_synced, 1);
    assert.equal(status.books["NKN-USDT"]?.snapshots, 1);
  } finally {
    io.close();
  }
});

Deno.test("binance session fetches at most snapshotConcurrency snapshots at once", async () => {
  const symbols = DEFAULT_CONFIG.exchanges.binance.symbols;
  const market = seeded(symbols);
  const waiting: Array<() => void> = [];
  let inFlight = 0;
  let most = 0;
  const io = new FakeIO((url) => {
    inFlight++;
    most = Math.max(most, inFlight);
    return new Promise((resolve) => {
      waiting.push(() => {
        inFlight--;
        resolve(restFrom(market)(url));
      });
    });
  });
  try {
    const session = binanceSession(config({ symbols }), {
      snapshotConcurrency: 3,
      snapshotGraceMs: 0,
    });
    session.onOpen(io);
    assert.equal(io.fetches.length, 3);
    assert.equal(session.status().snapshots_queued, 21);
    while (io.emitted.length < symbols.length) {
      await waitFor(() => waiting.length > 0, 2_000, "a pending fetch");
      waiting.shift()!();
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.equal(most, 3);
    assert.equal(io.fetches.length, 24);
    assert.equal(new Set(io.fetches).size, 24);
    assert.equal(session.status().books_synced, 24);
  } finally {
    io.close();
  }
});

Deno.test("binance session keeps snapshots within the REST weight budget per minute", async () => {
  const symbols = DEFAULT_CONFIG.exchanges.binance.symbols.slice(0, 8);
  const market = seeded(symbols);
  const clock = new RecordingClock();
  const io = new FakeIO(restFrom(market));
  try {
    // 5,000 levels weigh 250: four fit a budget of 1,000, the rest wait for the minute to pass.
    assert.equal(binanceDepthWeight(5000), 250);
    const session = binanceSession(config({ symbols, snapshot_limit: 5000 }), {
      clock,
      snapshotGraceMs: 0,
      snapshotConcurrency: 8,
      snapshotWeightPerMinute: 1_000,
    });
    session.onOpen(io);
    assert.equal(io.fetches.length, 4);
    assert.deepEqual(clock.sleeps, [60_000]);
    await waitFor(() => session.status().books_synced === 8, 2_000, "every book synced");
    assert.equal(io.fetches.length, 8);
    assert.deepEqual(clock.sleeps, [60_000]);
    // The first four aged out of the window; the last four are what the minute holds.
    assert.equal(session.status().snapshot_weight_1m, 1_000);
  } finally {
    io.close();
  }
});

Deno.test("binance session resyncs a gap with a fresh snapshot of that symbol only", async () => {
  const market = seeded(["BTC-USDT", "ETH-USDT"]);
  const session = binanceSession(config({ symbols: ["BTC-USDT", "ETH-USDT"] }));
  const io = new FakeIO(restFrom(market));
  try {
    session.onOpen(io);
    await waitFor(() => session.status().books_synced === 2, 2_000, "both books synced");
    const published: MarketEvent[] = [...io.emitted];
    published.push(
      ...session.onFrame(market.depthUpdate("BTCUSDT", [["100.00", "1.100"]], []), RX, io),
    );
    assert.equal(published.length, 3);
    // One change is never sent: the next diff does not follow.
    const gapped = market.depthUpdate("BTCUSDT", [["99.50", "0"]], [], {
      hidden: { bids: [["98.00", "7.000"]], asks: [] },
    });
    assert.deepEqual(session.onFrame(gapped, RX, io), []);
    assert.equal(io.resyncs.length, 1);
    assert.match(io.resyncs[0]!, /^BTCUSDT: Gap/);
    assert.deepEqual(io.reconnects, []);
    await waitFor(() => io.emitted.length === 3, 2_000, "fresh snapshot");
    assert.equal(io.fetches.filter((url) => url.includes("BTCUSDT")).length, 2);
    assert.equal(io.fetches.filter((url) => url.includes("ETHUSDT")).length, 1);
    published.push(io.emitted[2]!);
    published.push(
      ...session.onFrame(market.depthUpdate("BTCUSDT", [], [["100.50", "0"]]), RX, io),
    );
    const rebuilt = replay(published, "BTC-USDT");
    const book = market.book("BTCUSDT");
    assert.deepEqual(rebuilt.levels("bid"), book.levels("bid"));
    assert.deepEqual(rebuilt.levels("ask"), book.levels("ask"));
    const status = session.status();
    assert.equal(status.resyncs, 1);
    assert.equal(status.books["BTC-USDT"]?.resyncs, 1);
    assert.equal(status.books["BTC-USDT"]?.state, "synced");
    assert.equal(status.books["ETH-USDT"]?.resyncs, 0);
  } finally {
    io.close();
  }
});

Deno.test("binance session retries a failed snapshot with backoff and reports it", async () => {
  const market = seeded();
  const clock = new RecordingClock();
  let calls = 0;
  const io = new FakeIO((url) => {
    calls++;
    if (calls <= 2) return Promise.reject(new Error("HTTP 429 Too Many Requests"));
    if (calls === 3) return Promise.resolve('{"code":-1003,"msg":"Too much request weight used"}');
    return restFrom(market)(url);
  });
  try {
    const session = binanceSession(config(), {
      clock,
      snapshotGraceMs: 0,
      snapshotRetryInitialMs: 100,
      snapshotRetryMaxMs: 1_000,
    });
    session.onOpen(io);
    await waitFor(() => session.status().books_synced === 1, 2_000, "book synced");
    assert.equal(calls, 4);
    assert.equal(io.errors.length, 3);
    assert.match(io.errors[0]!, /^Depth snapshot of BTCUSDT failed: HTTP 429/);
    assert.match(io.errors[2]!, /error response -1003/);
    assert.equal(clock.sleeps.length, 3);
    assert.ok(clock.sleeps[0]! >= 80 && clock.sleeps[0]! <= 120, `first delay ${clock.sleeps}`);
    assert.ok(clock.sleeps[2]! > clock.sleeps[0]!, `delays grow: ${clock.sleeps}`);
    assert.equal(session.status().books["BTC-USDT"]?.snapshot_failures, 3);
    assert.equal(session.status().resyncs, 0);
  } finally {
    io.close();
  }
});

/** A clock that stands still until the test moves it; sleeps end when it passes their end. */
class ManualClock implements Clock {
  #now = 1_700_000_000_000;
  #sleepers: Array<{ until: number; wake: () => void }> = [];

  now(): number {
    return this.#now;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const sleeper = { until: this.#now + ms, wake: resolve };
      this.#sleepers.push(sleeper);
      signal?.addEventListener("abort", () => {
        this.#sleepers = this.#sleepers.filter((other) => other !== sleeper);
        reject(signal.reason);
      }, { once: true });
    });
  }

  /** Moves the time forward by `ms`, waking the sleeps that end by then, and lets them run. */
  async advance(ms: number): Promise<void> {
    this.#now += ms;
    const due = this.#sleepers.filter((sleeper) => sleeper.until <= this.#now);
    this.#sleepers = this.#sleepers.filter((sleeper) => sleeper.until > this.#now);
    for (const sleeper of due) sleeper.wake();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

Deno.test("a 429 pauses every Binance snapshot fetch for its Retry-After, across a reconnect", async () => {
  const symbols = DEFAULT_CONFIG.exchanges.binance.symbols.slice(0, 6);
  const market = seeded(symbols);
  const clock = new ManualClock();
  const t0 = clock.now();
  let calls = 0;
  const rest = restFrom(market);
  const limited = (url: string) => {
    calls++;
    return calls === 1
      ? Promise.reject(
        new HttpStatusError(url, 429, "Too Many Requests", { retryAfterMs: 30_000 }),
      )
      : rest(url);
  };
  const io = new FakeIO(limited);
  const session = binanceSession(config({ symbols }), {
    clock,
    snapshotConcurrency: 2,
    snapshotGraceMs: 0,
  });
  try {
    session.onOpen(io);
    // Two fetches were under way when the 429 came; nothing more is asked of Binance.
    await waitFor(() => session.status().snapshots_in_flight === 0, 2_000, "both answered");
    assert.equal(io.fetches.length, 2);
    assert.match(
      io.errors[0]!,
      /^Depth snapshot of \w+ failed: GET .* answered 429 Too Many Requests; snapshots paused for 30000 ms$/,
    );
    const status = session.status();
    assert.equal(status.snapshots_paused_until, t0 + 30_000);
    assert.equal(status.rate_limited, 1);
    assert.equal(status.books_synced, 1);
    // The symbol's own retry delay passes; the pause holds it too.
    await clock.advance(5_000);
    assert.equal(io.fetches.length, 2);
    // A new connection does not end the pause.
    io.close();
    session.onClose();
    const again = new FakeIO(limited);
    session.onOpen(again);
    await clock.advance(24_999);
    assert.deepEqual(again.fetches, []);
    await clock.advance(1);
    await waitFor(
      () => session.status().books_synced === symbols.length,
      2_000,
      "every book synced after the pause",
    );
    assert.equal(again.fetches.length, symbols.length);
    assert.equal(session.status().snapshots_paused_until, null);
    again.close();
  } finally {
    io.close();
    session.onClose();
  }
});

Deno.test("a 418 without Retry-After pauses Binance snapshot fetches for rateLimitPauseMs", async () => {
  const symbols = DEFAULT_CONFIG.exchanges.binance.symbols.slice(0, 3);
  const market = seeded(symbols);
  const clock = new ManualClock();
  const t0 = clock.now();
  let calls = 0;
  const io = new FakeIO((url) => {
    calls++;
    return calls === 1
      ? Promise.reject(new HttpStatusError(url, 418, "I'm a teapot"))
      : restFrom(market)(url);
  });
  const session = binanceSession(config({ symbols }), {
    clock,
    snapshotGraceMs: 0,
    snapshotConcurrency: 1,
    rateLimitPauseMs: 120_000,
  });
  try {
    session.onOpen(io);
    await waitFor(() => session.status().rate_limited === 1, 2_000, "the 418 counted");
    assert.equal(session.status().snapshots_paused_until, t0 + 120_000);
    await clock.advance(119_999);
    assert.equal(io.fetches.length, 1);
    await clock.advance(1);
    await waitFor(() => session.status().books_synced === 3, 2_000, "every book synced");
    // Other failures back off only their own symbol, as before.
    assert.equal(session.status().rate_limited, 1);
    assert.throws(() => binanceSession(config(), { rateLimitPauseMs: -1 }), RangeError);
  } finally {
    io.close();
    session.onClose();
  }
});

const DAY_MS = 24 * 3_600_000;

/** A REST answer that is a 429 with `retryAfterMs` the first time, the fake market's book after. */
function limitedOnce(market: FakeBinanceMarket, retryAfterMs: number | null) {
  let calls = 0;
  return (url: string) => {
    calls++;
    return calls === 1
      ? Promise.reject(new HttpStatusError(url, 429, "Too Many Requests", { retryAfterMs }))
      : restFrom(market)(url);
  };
}

Deno.test("a Retry-After beyond Binance's longest ban pauses Binance snapshots for 3 days, not longer", async () => {
  // b65c23a paused for whatever Retry-After said: 30 days here (a proxy's, a typo).
  const symbols = DEFAULT_CONFIG.exchanges.binance.symbols.slice(0, 2);
  const market = seeded(symbols);
  const clock = new ManualClock();
  const t0 = clock.now();
  const io = new FakeIO(limitedOnce(market, 30 * DAY_MS));
  const session = binanceSession(config({ symbols }), {
    clock,
    snapshotConcurrency: 1,
    snapshotGraceMs: 0,
  });
  try {
    session.onOpen(io);
    await waitFor(() => session.status().rate_limited === 1, 2_000, "the 429 counted");
    assert.equal(DEFAULT_BINANCE_MAX_RATE_LIMIT_PAUSE_MS, 3 * DAY_MS);
    assert.match(io.errors[0]!, /; snapshots paused for 259200000 ms$/);
    assert.equal(session.status().snapshots_paused_until, t0 + 3 * DAY_MS);
    await clock.advance(3 * DAY_MS - 1);
    assert.equal(io.fetches.length, 1);
    await clock.advance(1);
    await waitFor(() => session.status().books_synced === 2, 2_000, "every book synced");
    // The cap is an option, and applies to the default pause too.
    const capped = binanceSession(config(), {
      clock,
      rateLimitPauseMs: 120_000,
      maxRateLimitPauseMs: 90_000,
    });
    const io2 = new FakeIO(limitedOnce(market, null));
    capped.onOpen(io2);
    await waitFor(() => capped.status().rate_limited === 1, 2_000, "the 429 counted");
    assert.match(io2.errors[0]!, /; snapshots paused for 90000 ms$/);
    io2.close();
    capped.onClose();
    assert.throws(() => binanceSession(config(), { maxRateLimitPauseMs: Infinity }), RangeError);
    assert.throws(() => binanceSession(config(), { maxRateLimitPauseMs: -1 }), RangeError);
  } finally {
    io.close();
    session.onClose();
  }
});

Deno.test("on the system clock a 30-day Retry-After arms no timer beyond setTimeout's range, so the snapshot pump does not spin", async () => {
  // setTimeout takes at most 2^31 - 1 ms; a longer delay fires after 1 ms. The pump slept the
  // whole pause in one clock.sleep, so it woke about every millisecond, logging each time.
  const realSetTimeout = globalThis.setTimeout;
  const delays: number[] = [];
  globalThis.setTimeout = ((handler: () => void, delay?: number) => {
    delays.push(delay ?? 0);
    return realSetTimeout(handler, delay);
  }) as unknown as typeof setTimeout;
  const io = new FakeIO((url) =>
    Promise.reject(
      new HttpStatusError(url, 429, "Too Many Requests", {
        retryAfterMs: parseRetryAfter("2592000", Date.now()), // 30 days
      }),
    )
  );
  const session = binanceSession(config({ symbols: ["BTC-USDT", "ETH-USDT", "SOL-USDT"] }));
  try {
    session.onOpen(io);
    // The pump waits out the pause with one long timer.
    await waitFor(() => delays.some((ms) => ms > DAY_MS), 2_000, "the pause's timer armed");
    const overflowing = delays.filter((ms) => ms > MAX_TIMER_DELAY_MS);
    assert.deepEqual(overflowing, [], "a timer that setTimeout fires at once");
    assert.ok(session.status().rate_limited >= 1);
  } finally {
    globalThis.setTimeout = realSetTimeout;
    io.close();
    session.onClose();
  }
});

Deno.test("systemClock sleeps longer than setTimeout's 2^31 - 1 ms in several timers, for the whole time", async () => {
  const realSetTimeout = globalThis.setTimeout;
  const realClearTimeout = globalThis.clearTimeout;
  const armed = new Map<number, { delay: number; fire: () => void }>();
  let id = 0;
  globalThis.setTimeout = ((handler: () => void, delay?: number) => {
    armed.set(++id, { delay: delay ?? 0, fire: handler });
    return id;
  }) as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((timer?: number) => {
    if (timer !== undefined) armed.delete(timer);
  }) as unknown as typeof clearTimeout;
  /** Fires the one armed timer and returns its delay. */
  const fireOne = () => {
    assert.equal(armed.size, 1, "one timer armed");
    const [key, timer] = [...armed][0]!;
    armed.delete(key);
    timer.fire();
    return timer.delay;
  };
  try {
    let done = false;
    const sleep = systemClock.sleep(2 * MAX_TIMER_DELAY_MS + 5).then(() => done = true);
    assert.equal(fireOne(), MAX_TIMER_DELAY_MS);
    assert.equal(fireOne(), MAX_TIMER_DELAY_MS);
    await Promise.resolve();
    assert.equal(done, false, "not over after 2 x (2^31 - 1) ms");
    assert.equal(fireOne(), 5);
    await sleep;
    assert.equal(done, true);
    // Aborted while on a later timer: that timer is cleared, the sleep rejects.
    const controller = new AbortController();
    const aborted = systemClock.sleep(MAX_TIMER_DELAY_MS + 1, controller.signal);
    assert.equal(fireOne(), MAX_TIMER_DELAY_MS);
    controller.abort(new Error("stop"));
    await assert.rejects(aborted, /stop/);
    assert.equal(armed.size, 0);
    // Short sleeps are one timer, as before.
    const short = systemClock.sleep(250);
    assert.equal(fireOne(), 250);
    await short;
  } finally {
    globalThis.setTimeout = realSetTimeout;
    globalThis.clearTimeout = realClearTimeout;
  }
});

/**
 * A clock whose wall time can step (NTP, a VM resumed) while time passes for
 * sleeps alike; with `monotonic`, it also says how much time has passed.
 */
class SteppingClock implements Clock {
  #wall = 1_700_000_000_000;
  #elapsed = 0;
  #sleepers: Array<{ until: number; wake: () => void }> = [];
  monotonic?: () => number;

  constructor(options: { monotonic: boolean }) {
    if (options.monotonic) this.monotonic = () => this.#elapsed;
  }

  now(): number {
    return this.#wall;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const sleeper = { until: this.#elapsed + ms, wake: resolve };
      this.#sleepers.push(sleeper);
      signal?.addEventListener("abort", () => {
        this.#sleepers = this.#sleepers.filter((other) => other !== sleeper);
        reject(signal.reason);
      }, { once: true });
    });
  }

  /** The wall clock is set by `ms` (negative: back); no time passes. */
  step(ms: number): void {
    this.#wall += ms;
  }

  /** `ms` pass, for the wall clock and the sleeps alike; the sleeps due run. */
  async advance(ms: number): Promise<void> {
    this.#wall += ms;
    this.#elapsed += ms;
    const due = this.#sleepers.filter((sleeper) => sleeper.until <= this.#elapsed);
    this.#sleepers = this.#sleepers.filter((sleeper) => sleeper.until > this.#elapsed);
    for (const sleeper of due) sleeper.wake();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

for (const monotonic of [true, false]) {
  Deno.test(
    `a 30 s Binance pause stays 30 s when the wall clock is set back an hour (${
      monotonic ? "a clock with monotonic()" : "a wall clock alone"
    })`,
    async () => {
      // b65c23a kept the pause as a Date.now() deadline: set back an hour, it lasted an hour more.
      const symbols = DEFAULT_CONFIG.exchanges.binance.symbols.slice(0, 2);
      const market = seeded(symbols);
      const clock = new SteppingClock({ monotonic });
      const io = new FakeIO(limitedOnce(market, 30_000));
      const session = binanceSession(config({ symbols }), {
        clock,
        snapshotConcurrency: 1,
        snapshotGraceMs: 0,
      });
      try {
        session.onOpen(io);
        await waitFor(() => session.status().rate_limited === 1, 2_000, "the 429 counted");
        clock.step(-3_600_000);
        assert.equal(session.status().snapshots_paused_until, clock.now() + 30_000);
        await clock.advance(29_999);
        assert.equal(io.fetches.length, 1);
        await clock.advance(1);
        await waitFor(() => session.status().books_synced === 2, 2_000, "every book synced");
        assert.equal(session.status().snapshots_paused_until, null);
      } finally {
        io.close();
        session.onClose();
      }
    },
  );
}

Deno.test("a Binance pause and weight budget last their time when the wall clock jumps ahead or back, on a clock with monotonic()", async () => {
  const symbols = DEFAULT_CONFIG.exchanges.binance.symbols.slice(0, 4);
  const market = seeded(symbols);
  const clock = new SteppingClock({ monotonic: true });
  const io = new FakeIO(limitedOnce(market, 30_000));
  // 5,000 levels weigh 250: a budget of 500 takes two fetches a minute.
  const session = binanceSession(config({ symbols, snapshot_limit: 5000 }), {
    clock,
    snapshotGraceMs: 0,
    snapshotConcurrency: 1,
    snapshotWeightPerMinute: 500,
  });
  const again = new FakeIO(restFrom(market));
  try {
    session.onOpen(io);
    await waitFor(() => session.status().rate_limited === 1, 2_000, "the 429 counted");
    // The wall clock jumps an hour ahead; a new connection asks for every book again.
    clock.step(3_600_000);
    io.close();
    session.onClose();
    session.onOpen(again);
    await clock.advance(0);
    assert.deepEqual(again.fetches, [], "the pause holds");
    await clock.advance(29_999);
    assert.deepEqual(again.fetches, [], "the pause holds");
    await clock.advance(1);
    // The 429's fetch 30 s ago and this one spend the minute's budget.
    await waitFor(() => session.status().books_synced === 1, 2_000, "a book synced");
    assert.equal(again.fetches.length, 1);
    // Set back two hours now: the minute is not stretched.
    clock.step(-7_200_000);
    await clock.advance(29_999);
    assert.equal(again.fetches.length, 1, "the budget holds");
    await clock.advance(1);
    await waitFor(() => again.fetches.length === 2, 2_000, "a fetch a minute after the 429's");
  } finally {
    io.close();
    again.close();
    session.onClose();
  }
});

Deno.test("monotonicOf takes a clock's monotonic(), else its wall time with steps back absorbed", () => {
  assert.equal(typeof systemClock.monotonic, "function");
  const elapsed = monotonicOf(systemClock);
  assert.ok(Math.abs(elapsed() - performance.now()) < 1_000);
  const clock = new SteppingClock({ monotonic: false });
  const read = monotonicOf(clock);
  const t0 = read();
  assert.equal(t0, clock.now());
  clock.step(-3_600_000);
  assert.equal(read(), t0, "time stands still across a step back");
  clock.step(1_000);
  assert.equal(read(), t0 + 1_000);
});

Deno.test("binance session fetches again when the snapshot is older than the stream", async () => {
  const market = seeded();
  const clock = new RecordingClock();
  const stale = market.book("BTCUSDT").snapshotBody(100);
  let answer!: (body: string) => void;
  const io = new FakeIO(() => new Promise((resolve) => answer = resolve));
  try {
    const session = binanceSession(config(), { clock });
    session.onOpen(io);
    // The first diff to arrive is two ids past the snapshot being fetched.
    market.depthUpdate("BTCUSDT", [["98.00", "1.000"]], []);
    session.onFrame(market.depthUpdate("BTCUSDT", [["97.00", "1.000"]], []), RX, io);
    io.respond = restFrom(market);
    answer(stale);
    await waitFor(() => session.status().books_synced === 1, 2_000, "book synced");
    const status = session.status();
    assert.equal(status.books["BTC-USDT"]?.stale_snapshots, 1);
    assert.equal(status.resyncs, 0);
    assert.equal(clock.sleeps.length, 1);
    const rebuilt = replay(io.emitted, "BTC-USDT");
    assert.deepEqual(rebuilt.levels("bid"), market.book("BTCUSDT").levels("bid"));
  } finally {
    io.close();
  }
});

/** Waits until the session has taken every snapshot answer it asked for. */
async function snapshotsTaken(session: BinanceSession, io: FakeIO, fetches: number) {
  await waitFor(
    () => io.fetches.length >= fetches && session.status().snapshots_in_flight === 0,
    2_000,
    `${fetches} snapshot answer(s) taken`,
  );
}

Deno.test("a Binance snapshot taken before any diff is held, and a first diff that starts after it refutes it unpublished", async () => {
  const market = seeded();
  const clock = new ManualClock();
  // REST lags the stream: the snapshot is as of now, and the stream's first diff comes
  // after a change the snapshot does not have (U = lastUpdateId + 2).
  const stale = market.book("BTCUSDT").snapshotBody(100);
  const staleId = JSON.parse(stale).lastUpdateId as number;
  const io = new FakeIO(() => Promise.resolve(stale));
  try {
    const session = binanceSession(config(), { clock });
    session.onOpen(io);
    await snapshotsTaken(session, io, 1);
    assert.deepEqual(io.emitted, [], "held until a diff confirms it");
    assert.equal(session.status().books["BTC-USDT"]?.state, "waiting");
    assert.equal(session.status().books["BTC-USDT"]?.last_update_id, null);
    market.depthUpdate("BTCUSDT", [["98.00", "1.000"]], []);
    io.respond = restFrom(market);
    const returned = session.onFrame(
      market.depthUpdate("BTCUSDT", [["97.00", "1.000"]], []),
      RX,
      io,
    );
    assert.deepEqual(returned, []);
    let status = session.status();
    assert.equal(status.books["BTC-USDT"]?.stale_snapshots, 1);
    assert.equal(status.resyncs, 0);
    assert.deepEqual(io.resyncs, []);
    await snapshotsTaken(session, io, 2);
    // The fresh snapshot has the buffered diff at or before it: published at once.
    assert.equal(io.emitted.length, 1);
    await clock.advance(DEFAULT_BINANCE_SNAPSHOT_GRACE_MS);
    assert.equal(io.emitted.length, 1, "the refuted snapshot's grace period publishes nothing");
    const published = io.emitted as BookEvent[];
    assert.ok(published.every((event) => (event.sequence ?? 0) > staleId));
    const rebuilt = replay(io.emitted, "BTC-USDT");
    assert.deepEqual(rebuilt.levels("bid"), market.book("BTCUSDT").levels("bid"));
    assert.deepEqual(rebuilt.levels("ask"), market.book("BTCUSDT").levels("ask"));
    status = session.status();
    assert.equal(status.books_synced, 1);
    assert.equal(status.books["BTC-USDT"]?.snapshots, 1);
  } finally {
    io.close();
  }
});

Deno.test("a held Binance snapshot is published with the first diff that bridges it, or one at or before it", async () => {
  const clock = new ManualClock();
  {
    const market = seeded();
    const io = new FakeIO(restFrom(market));
    try {
      const session = binanceSession(config(), { clock });
      session.onOpen(io);
      await snapshotsTaken(session, io, 1);
      assert.deepEqual(io.emitted, []);
      const L = market.book("BTCUSDT").lastUpdateId;
      const returned = session.onFrame(
        market.depthUpdate("BTCUSDT", [["99.75", "0.500"]], []),
        RX,
        io,
      ) as BookEvent[];
      assert.deepEqual(returned.map((event) => [event.action, event.sequence]), [
        ["snapshot", L],
        ["delta", L + 1],
      ]);
      await clock.advance(DEFAULT_BINANCE_SNAPSHOT_GRACE_MS);
      assert.deepEqual(io.emitted, [], "published once, with the diff");
      const rebuilt = replay(returned, "BTC-USDT");
      assert.deepEqual(rebuilt.levels("bid"), market.book("BTCUSDT").levels("bid"));
      assert.equal(session.status().books_synced, 1);
      assert.equal(session.status().books["BTC-USDT"]?.last_update_id, L + 1);
      assert.equal(session.status().books["BTC-USDT"]?.snapshots, 1);
    } finally {
      io.close();
    }
  }
  {
    // The stream's first diff is one the snapshot already has (u <= lastUpdateId).
    const market = seeded();
    const early = market.depthUpdate("BTCUSDT", [["99.75", "0.500"]], []);
    const io = new FakeIO(restFrom(market));
    try {
      const session = binanceSession(config(), { clock });
      session.onOpen(io);
      await snapshotsTaken(session, io, 1);
      assert.deepEqual(io.emitted, []);
      const returned = session.onFrame(early, RX, io) as BookEvent[];
      assert.deepEqual(returned.map((event) => [event.action, event.sequence]), [
        ["snapshot", market.book("BTCUSDT").lastUpdateId],
      ]);
      assert.equal(session.status().books_synced, 1);
      const next = session.onFrame(
        market.depthUpdate("BTCUSDT", [], [["100.50", "0"]]),
        RX,
        io,
      );
      const rebuilt = replay([...returned, ...next], "BTC-USDT");
      assert.deepEqual(rebuilt.levels("ask"), market.book("BTCUSDT").levels("ask"));
    } finally {
      io.close();
    }
  }
});

Deno.test("a quiet Binance symbol's held snapshot is published after snapshotGraceMs without a diff", async () => {
  assert.equal(DEFAULT_BINANCE_SNAPSHOT_GRACE_MS, 1_000);
  const market = seeded();
  const clock = new ManualClock();
  const io = new FakeIO(restFrom(market));
  try {
    const session = binanceSession(config(), { clock });
    session.onOpen(io);
    await snapshotsTaken(session, io, 1);
    await clock.advance(DEFAULT_BINANCE_SNAPSHOT_GRACE_MS - 1);
    assert.equal(io.emitted.length, 0);
    assert.equal(session.status().books_synced, 0);
    await clock.advance(1);
    await waitFor(() => io.emitted.length === 1, 2_000, "the snapshot after the grace period");
    const snapshot = io.emitted[0] as BookEvent;
    assert.equal(snapshot.action, "snapshot");
    assert.equal(snapshot.sequence, market.book("BTCUSDT").lastUpdateId);
    assert.equal(session.status().books_synced, 1);
    // The next diff must still bridge it.
    const delta = session.onFrame(market.depthUpdate("BTCUSDT", [["99.00", "0"]], []), RX, io);
    assert.deepEqual(delta.map((event) => (event as BookEvent).action), ["delta"]);
    assert.deepEqual(io.resyncs, []);
  } finally {
    io.close();
  }
  // Tunable; 0 publishes at once, unconfirmed; a negative grace is refused.
  const quick = new FakeIO(restFrom(market));
  try {
    const session = binanceSession(config(), { clock, snapshotGraceMs: 0 });
    session.onOpen(quick);
    await snapshotsTaken(session, quick, 1);
    assert.equal(quick.emitted.length, 1);
  } finally {
    quick.close();
  }
  assert.throws(() => binanceSession(config(), { snapshotGraceMs: -1 }), RangeError);
});

Deno.test("binance session drops books on close and ignores a late snapshot", async () => {
  const market = seeded();
  const session = binanceSession(config());
  const first = new FakeIO();
  let answer!: (body: string) => void;
  first.respond = () => new Promise((resolve) => answer = resolve);
  session.onOpen(first);
  session.onClose();
  first.close();
  answer(market.book("BTCUSDT").snapshotBody(100));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(first.emitted, []);
  assert.equal(session.status().books["BTC-USDT"]?.state, "waiting");

  const second = new FakeIO(restFrom(market));
  try {
    session.onOpen(second);
    await waitFor(() => second.emitted.length === 1, 2_000, "snapshot on the new connection");
    assert.equal(session.status().books_synced, 1);
    session.onClose();
    assert.equal(session.status().books_synced, 0);
    assert.equal(session.status().books["BTC-USDT"]?.last_update_id, null);
  } finally {
    second.close();
  }
});

// ---- other frames -----------------------------------------------------------

Deno.test("binance session returns trades and tops with exact fields", () => {
  const market = seeded();
  const session = binanceSession(config());
  const io = new FakeIO();
  try {
    const id = market.nextTradeId;
    const [trade] = session.onFrame(
      market.trade("BTCUSDT", "100.25000000", "0.00120000", true, 1_786_000_000_456),
      RX,
      io,
    ) as TradeEvent[];
    assert.deepEqual(trade, {
      kind: "trade",
      exchange: "binance",
      symbol: "BTC-USDT",
      venue_symbol: "BTCUSDT",
      ts_exchange: 1_786_000_000_456_000,
      ts_local: RX,
      trade_id: String(id),
      price: "100.25000000",
      qty: "0.00120000",
      side: "sell",
    });
    const [top] = session.onFrame(market.bookTicker("BTCUSDT"), RX, io) as TopEvent[];
    assert.equal(top?.kind, "top");
    assert.equal(top?.bid_price, "100.00");
    assert.equal(top?.ask_qty, "1.500");
  } finally {
    io.close();
  }
});

Deno.test("binance session reconnects on serverShutdown and reports error replies", () => {
  const session = binanceSession(config());
  const io = new FakeIO();
  try {
    assert.deepEqual(session.onFrame(serverShutdownFrame(1_786_000_000_000), RX, io), []);
    assert.equal(io.reconnects.length, 1);
    session.onFrame('{"code":2,"msg":"Invalid request: unknown variant","id":7}', RX, io);
    assert.deepEqual(io.errors, ["Binance error 2: Invalid request: unknown variant"]);
    assert.equal(session.status().server_shutdowns, 1);
    assert.equal(session.status().venue_errors, 1);
  } finally {
    io.close();
  }
});

Deno.test("binance session throws MalformedFrameError for frames it cannot use", () => {
  const session = binanceSession(config());
  const io = new FakeIO();
  try {
    for (const frame of ["not json", "[]", '{"stream":"x@trade","data":{"e":"trade"}}']) {
      assert.throws(() => session.onFrame(frame, RX, io), MalformedFrameError, frame);
    }
    const unknown = new FakeBinanceMarket(["DOGE-USDT"]).trade("DOGEUSDT", "0.1", "1", false);
    assert.throws(() => session.onFrame(unknown, RX, io), MalformedFrameError);
  } finally {
    io.close();
  }
});

// ---- the real feed runtime, the fake venue and NATS -------------------------

/** A Binance symbol no other test uses, so md.> traffic can be filtered to this test. */
function uniqueSymbol(quote = "USDT"): string {
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 8).toUpperCase();
  return `T${id}-${quote}`;
}

interface Harness extends AsyncDisposable {
  venue: FakeBinanceServer;
  status: FeedStatus;
  session: BinanceSession;
  /** Events received on md.> for this test's symbols, in arrival order. */
  events: MarketEvent[];
  /** Every NATS message of this test's symbols, as received (each a JSON array). */
  messages: Array<{ subject: string; events: MarketEvent[] }>;
  /** Dead letters on dlq.md.binance whose frame carries this test's token. */
  letters: DeadLetter[];
  /** A token to put in garbage frames so their dead letters can be told apart. */
  token: string;
  venueStatus(): BinanceSessionStatus;
}

async function startHarness(
  symbols: string[],
  options: {
    staleAfterMs?: number;
    seed?: boolean;
    market?: FakeBinanceMarket;
    snapshotGraceMs?: number;
  } = {},
): Promise<Harness> {
  const market = options.market ?? new FakeBinanceMarket(symbols);
  if (options.seed ?? true) {
    for (const book of market.books.values()) book.apply(BIDS, ASKS);
  }
  const venue = await startBinanceServer({ market });
  const nc = await connect({ servers: NATS_URL });
  const token = crypto.randomUUID();
  const { events, messages, letters } = await watchVenue(
    nc,
    "binance",
    symbols.map((symbol) => symbol.replaceAll(".", "_")),
    [token, ...symbols.map(binanceSymbol)],
  );
  const session = binanceSession({
    ws_url: venue.wsUrl,
    rest_url: venue.restUrl,
    symbols,
    channels: ["trades", "book", "top"],
    snapshot_limit: 1000,
  }, {
    snapshotRetryInitialMs: 20,
    snapshotRetryMaxMs: 200,
    rateLimitPauseMs: 100,
    ...(options.snapshotGraceMs === undefined ? {} : { snapshotGraceMs: options.snapshotGraceMs }),
  });
  const feed = startTestFeed(session, nc, venue, { staleAfterMs: options.staleAfterMs });
  return {
    venue,
    status: feed.status,
    session,
    events,
    messages,
    letters,
    token,
    venueStatus: () => session.status(),
    [Symbol.asyncDispose]: feed.close,
  };
}

/** Waits until what NATS consumers rebuilt for `symbol` equals the fake venue's book. */
async function bookMatches(h: Harness, symbol: string, what: string): Promise<void> {
  const book = h.venue.market.book(binanceSymbol(symbol));
  await waitFor(
    () => {
      const rebuilt = replay(h.events, symbol);
      return JSON.stringify([rebuilt.levels("bid"), rebuilt.levels("ask")]) ===
        JSON.stringify([book.levels("bid"), book.levels("ask")]);
    },
    5_000,
    what,
  );
}

function snapshots(h: Harness, symbol: string): number {
  return ofKind(h.events, "book", symbol).filter((event) => event.action === "snapshot").length;
}

Deno.test("binance feed publishes trades, book and top from the fake venue on NATS", async () => {
  const a = uniqueSymbol();
  const b = uniqueSymbol("BTC");
  await using h = await startHarness([a, b]);
  const before = Date.now() * 1000;
  // The handshake: one connection whose URL names every stream.
  await waitFor(() => h.venue.ws.connections === 1, 5_000, "connection");
  const streams = [...h.venue.streams(h.venue.ws.latest!)];
  const [sa, sb] = [binanceSymbol(a).toLowerCase(), binanceSymbol(b).toLowerCase()];
  assert.deepEqual(streams, [
    `${sa}@depth@100ms`,
    `${sa}@trade`,
    `${sa}@bookTicker`,
    `${sb}@depth@100ms`,
    `${sb}@trade`,
    `${sb}@bookTicker`,
  ]);
  assert.deepEqual(h.venue.ws.latest!.received, [], "combined streams need no SUBSCRIBE");
  await waitFor(() => snapshots(h, a) === 1 && snapshots(h, b) === 1, 5_000, "snapshots");
  assert.deepEqual(h.venue.snapshotRequests.sort(), [binanceSymbol(a), binanceSymbol(b)].sort());

  const va = binanceSymbol(a);
  h.venue.depthUpdate(va, [["100.00", "0"], ["99.75", "0.250"]], [["100.25", "9.000"]]);
  h.venue.depthUpdate(va, [], [["100.50", "0.000"]]);
  const tradeId = h.venue.market.nextTradeId;
  h.venue.trade(va, "100.25", "0.12500000", false);
  h.venue.bookTicker(va);
  await waitFor(() => ofKind(h.events, "top", a).length === 1, 5_000, "top event");
  const after = Date.now() * 1000 + 1_000;

  const [trade] = ofKind(h.events, "trade", a);
  assert.ok(trade);
  assert.equal(trade.exchange, "binance");
  assert.equal(trade.venue_symbol, va);
  assert.equal(trade.trade_id, String(tradeId));
  assert.equal(trade.price, "100.25");
  assert.equal(trade.qty, "0.12500000");
  assert.equal(trade.side, "buy");
  assert.ok(Number.isSafeInteger(trade.ts_exchange) && trade.ts_exchange % 1000 === 0);
  assert.ok(trade.ts_exchange >= before - 1_000_000 && trade.ts_exchange <= after);
  assert.ok(
    Number.isSafeInteger(trade.ts_local) && trade.ts_local >= before && trade.ts_local <= after,
  );

  const [top] = ofKind(h.events, "top", a);
  assert.deepEqual(
    [top?.bid_price, top?.bid_qty, top?.ask_price, top?.ask_qty],
    ["99.75", "0.250", "100.25", "9.000"],
  );
  const deltas = ofKind(h.events, "book", a).filter((event) => event.action === "delta");
  assert.deepEqual(deltas.map((event) => [event.bids, event.asks]), [
    [[["100.00", "0"], ["99.75", "0.250"]], [["100.25", "9.000"]]],
    [[], [["100.50", "0.000"]]],
  ]);
  await bookMatches(h, a, "book of A matches the venue");
  await bookMatches(h, b, "book of B matches the venue");
  // Every message is a JSON array of one kind and one symbol, on its subject.
  for (const { subject, events } of h.messages) {
    assert.ok(events.length >= 1);
    for (const event of events) {
      assert.equal(subject, `md.${event.kind}.binance.${event.symbol}`);
    }
  }
  assert.equal(h.status.state, "live");
  assert.equal(h.status.reconnects, 0);
  assert.equal(h.status.resyncs, 0);
  await waitFor(() => (h.status.venue as BinanceSessionStatus).books_synced === 2, 2_000, "status");
});

Deno.test("binance feed reconnects after a drop or serverShutdown and takes fresh snapshots", async () => {
  const a = uniqueSymbol();
  const va = binanceSymbol(a);
  await using h = await startHarness([a]);
  await waitFor(() => snapshots(h, a) === 1, 5_000, "first snapshot");
  h.venue.depthUpdate(va, [["99.00", "0"]], []);
  await waitFor(() => ofKind(h.events, "book", a).length === 2, 5_000, "delta");

  // A change the feed never hears of (lost with the connection) reaches it through the new snapshot.
  h.venue.market.book(va).apply([["98.50", "5.000"]], []);
  h.venue.market.book(va).lastUpdateId += 1;
  h.venue.drop();
  await waitFor(() => h.venue.ws.connections === 2, 5_000, "reconnect after the drop");
  await waitFor(() => snapshots(h, a) === 2, 5_000, "second snapshot");
  assert.equal(h.venue.snapshotRequests.length, 2);
  assert.equal(h.status.reconnects, 1);
  await bookMatches(h, a, "book after the reconnect");

  h.venue.serverShutdown();
  await waitFor(() => h.venue.ws.connections === 3, 5_000, "reconnect after serverShutdown");
  await waitFor(() => snapshots(h, a) === 3, 5_000, "third snapshot");
  h.venue.depthUpdate(va, [], [["101.00", "0"]]);
  await bookMatches(h, a, "book after serverShutdown");
  assert.equal(h.status.reconnects, 2);
  assert.equal(h.status.resyncs, 0);
  assert.equal(h.venue.ws.openSockets().length, 1);
});

Deno.test("binance feed heals a sequence gap with a fresh REST snapshot, not a reconnect", async () => {
  const a = uniqueSymbol();
  const b = uniqueSymbol();
  const va = binanceSymbol(a);
  await using h = await startHarness([a, b]);
  await waitFor(() => snapshots(h, a) === 1 && snapshots(h, b) === 1, 5_000, "snapshots");
  // The first fresh snapshot is rate limited (429, no Retry-After): every fetch pauses for
  // rateLimitPauseMs (100 ms here), then it is retried.
  h.venue.failSnapshots(1, 429);
  h.venue.depthUpdate(va, [["99.50", "0"]], [], {
    hidden: { bids: [["97.00", "3.300"]], asks: [["103.00", "1.100"]] },
  });
  await waitFor(() => snapshots(h, a) === 2, 5_000, "fresh snapshot after the gap");
  assert.equal(h.status.resyncs, 1);
  assert.equal(h.status.reconnects, 0);
  assert.equal(h.venue.ws.connections, 1);
  assert.match(h.status.last_error ?? "", /Depth snapshot of .* failed: .*429/);
  assert.deepEqual(
    h.venue.snapshotRequests.filter((symbol) => symbol === va).length,
    3,
    "initial, failed, fresh",
  );
  assert.equal(h.venue.snapshotRequests.filter((symbol) => symbol === binanceSymbol(b)).length, 1);
  h.venue.depthUpdate(va, [["99.00", "0.500"]], []);
  await bookMatches(h, a, "book after the resync");
  const venue = h.session.status();
  assert.equal(venue.books[a]?.resyncs, 1);
  assert.equal(venue.books[a]?.snapshot_failures, 1);
  assert.equal(venue.rate_limited, 1);
  assert.equal(venue.books[b]?.resyncs, 0);
});

Deno.test("binance feed dead-letters malformed frames with the raw frame and carries on", async () => {
  const a = uniqueSymbol();
  const va = binanceSymbol(a);
  await using h = await startHarness([a]);
  await waitFor(() => snapshots(h, a) === 1, 5_000, "snapshot");
  const garbage = `garbage ${h.token}`;
  const badTrade = JSON.stringify({
    stream: `${va.toLowerCase()}@trade`,
    data: { e: "trade", E: 1, s: va, t: 1, p: 100.5, q: "1", T: 1, m: true, M: true },
  });
  h.venue.send(garbage);
  h.venue.send(badTrade);
  h.venue.trade(va, "100.50", "2.000", true);
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "good trade");
  await waitFor(() => h.letters.length === 2, 5_000, "dead letters");
  assert.deepEqual(h.letters.map((letter) => letter.frame), [garbage, badTrade]);
  for (const letter of h.letters) {
    assert.equal(letter.exchange, "binance");
    assert.equal(letter.stage, "feed");
    assert.equal(letter.reason, "malformed");
  }
  assert.match(h.letters[1]!.detail, /Field p of trade must be a decimal string/);
  assert.equal(h.status.malformed, 2);
  assert.equal(h.status.reconnects, 0);
  assert.equal(ofKind(h.events, "trade", a)[0]?.side, "sell");
});

Deno.test("a Binance REST snapshot older than the stream's first diff is never published as the book", async () => {
  // Binance's "How to manage a local order book correctly": buffer the stream, note the U of
  // its first event, and fetch the snapshot again while its lastUpdateId is older (< U - 1).
  const symbol = "RVWQ-USDT";
  const venueSymbol = "RVWQUSDT";
  const market = new FakeBinanceMarket([symbol], { startUpdateId: 1000 });
  market.book(venueSymbol).apply(
    [["99.00", "2.000"], ["98.00", "4.000"]],
    [["101.00", "3.000"], ["102.00", "5.000"]],
  );
  await using venue = await startBinanceServer({ market });
  // REST lags the stream: the first answer is the book as of update 990.
  venue.snapshotBodies.set(
    venueSymbol,
    JSON.stringify({
      lastUpdateId: 990,
      bids: [["99.00", "7.000"], ["98.00", "4.000"]],
      asks: [["100.50", "1.000"], ["101.00", "3.000"]],
    }),
  );
  const session = binanceSession({
    ws_url: venue.wsUrl,
    rest_url: venue.restUrl,
    symbols: [symbol],
    channels: ["book"],
    snapshot_limit: 100,
  }, { snapshotRetryInitialMs: 10, snapshotRetryMaxMs: 50, snapshotGraceMs: 60_000 });
  const marketStatus = new MarketStatus();
  const status = marketStatus.feed("binance");
  const books: BookEvent[] = [];
  const stop = runFeed(session, {
    status: marketStatus,
    sink: (_subject: string, events: MarketEvent[]) => {
      for (const event of events) if (event.kind === "book") books.push(event);
    },
    deadLetters: () => {},
    options: {
      stale_after_ms: 20_000,
      reconnect_initial_ms: 20,
      reconnect_max_ms: 100,
      publish_batch_ms: 0,
      tick_ms: 50,
    },
  });
  try {
    await waitFor(
      () => venue.snapshotRequests.length >= 1 && session.status().snapshots_in_flight === 0,
      5_000,
      "the first snapshot taken",
    );
    assert.equal(status.frames, 0);
    assert.equal(books.length, 0, "no diff has said whether the snapshot is current");
    venue.snapshotBodies.delete(venueSymbol);
    // The stream's first diff: U = 1001, so the snapshot at 990 misses updates 991..1000.
    venue.depthUpdate(venueSymbol, [["99.50", "1.000"]], []);
    await waitFor(() => status.frames >= 1, 5_000, "the first diff");
    await waitFor(
      () => books.some((event) => event.action === "snapshot" && (event.sequence ?? 0) >= 1000),
      5_000,
      "a snapshot that the stream bridges",
    );
    const firstU = 1001;
    const stale = books.filter((event) =>
      event.action === "snapshot" && (event.sequence ?? 0) < firstU - 1
    );
    assert.deepEqual(
      stale.map((event) => ({ sequence: event.sequence, asks: event.asks })),
      [],
      `published ${stale.length} snapshot(s) older than the stream (first diff U=${firstU})`,
    );
    const venueStatus = session.status().books[symbol];
    assert.equal(venueStatus?.stale_snapshots, 1);
    assert.equal(venueStatus?.resyncs, 0);
  } finally {
    await stop();
  }
});

Deno.test("binance feed reconnects a silent venue through the watchdog", async () => {
  const a = uniqueSymbol();
  // A grace period well within stale_after_ms, as the defaults have it (1 s and 30 s).
  await using h = await startHarness([a], { staleAfterMs: 300, snapshotGraceMs: 50 });
  await waitFor(() => snapshots(h, a) === 1, 5_000, "snapshot");
  h.venue.silent = true;
  await waitFor(() => h.venue.ws.connections >= 2, 5_000, "watchdog reconnect");
  h.venue.silent = false;
  assert.ok(h.status.reconnects >= 1);
  await waitFor(() => snapshots(h, a) >= 2, 5_000, "snapshot after the reconnect");
  h.venue.depthUpdate(binanceSymbol(a), [["99.00", "1.250"]], []);
  await bookMatches(h, a, "book after the watchdog reconnect");
});

Deno.test("binance feed replays the real NKNUSDT snapshot and diffs through the fake venue", async () => {
  // The captured frames verbatim, but for the pair's name: a unique one keeps concurrent runs
  // on the shared NATS apart (update ids, prices and sizes are untouched).
  const symbol = uniqueSymbol();
  const venueSymbol = binanceSymbol(symbol);
  const frames = NKN.slice(1).map((line) =>
    line.replaceAll("NKNUSDT", venueSymbol).replaceAll("nknusdt", venueSymbol.toLowerCase())
  );
  const market = new FakeBinanceMarket([symbol]);
  await using h = await startHarness([symbol], { market, seed: false });
  h.venue.snapshotBodies.set(venueSymbol, NKN[0]!);
  // Frames sent before the venue's side of the socket is open would be lost.
  await waitFor(() => h.venue.ws.openSockets().length === 1, 5_000, "open connection");
  for (const line of frames) h.venue.send(line);
  const lastU = JSON.parse(NKN.at(-1)!).data.u;
  await waitFor(
    () => ofKind(h.events, "book", symbol).at(-1)?.sequence === lastU,
    5_000,
    "the last diff published",
  );
  const expected = new OrderBook();
  const rest = JSON.parse(NKN[0]!);
  expected.replace(rest.bids, rest.asks);
  for (const line of NKN.slice(1)) {
    const { data } = JSON.parse(line);
    if (data.u > rest.lastUpdateId) expected.applyAll(data.b, data.a);
  }
  const rebuilt = replay(h.events, symbol);
  assert.deepEqual(rebuilt.levels("bid"), expected.levels("bid"));
  assert.deepEqual(rebuilt.levels("ask"), expected.levels("ask"));
  const books = ofKind(h.events, "book", symbol);
  assert.equal(books.filter((event) => event.action === "snapshot").length, 1);
  assert.equal(books[0]?.action, "snapshot");
  assert.equal(h.status.resyncs, 0);
  assert.equal(h.status.malformed, 0);
});
