import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { type Logger, memoryLogger, nullLogger } from "../lib/log.ts";
import { MalformedFrameError, type MarketEvent } from "../market/events.ts";
import { type FeedStatus, MarketStatus } from "../market/status.ts";
import type { DeadLetter } from "../market/subjects.ts";
import {
  ALPACA_MISSING_CREDENTIALS,
  AlpacaCredentialsError,
  alpacaSession,
  type AlpacaSessionConfig,
  type AlpacaSessionStatus,
} from "../venues/alpaca/session.ts";
import type { SessionIO } from "../venues/session.ts";
import { createSessions } from "../venues/mod.ts";
import { configSchema } from "../config/mod.ts";
import { clockAt, deadline, waitFor } from "./_helpers.ts";
import type { Clock } from "../lib/clock.ts";
import { type FakeAlpacaServer, startAlpacaServer } from "./fakes/alpaca_server.ts";
import { ofKind, startTestFeed, watchVenue } from "./_feed_harness.ts";

const FIXTURES = new URL("../../shared/fixtures/alpaca/", import.meta.url);
const DOC_MESSAGES = "docs_stream_data_v2_messages.jsonl";
const RECEIVED_US = 1_700_000_000_000_000;
const KEY_ID = "AKTESTKEY0000000001";
const SECRET = "test-secret-do-not-log-0123456789";

function docLines(): string[] {
  return Deno.readTextFileSync(new URL(DOC_MESSAGES, FIXTURES)).split("\n")
    .filter((line) => line !== "");
}

/** Documented data points (shown bare in the docs), as the arrays they arrive in. */
const DATA_FRAMES = docLines().filter((line) => line.startsWith('{"T":')).map((line) =>
  `[${line}]`
);

// ---- the session alone, on a recording SessionIO ----------------------------

/** A SessionIO that records every request a session makes. */
function recordingIO(log: Logger = nullLogger) {
  const sent: string[] = [];
  const reconnects: string[] = [];
  const errors: string[] = [];
  const controller = new AbortController();
  const io: SessionIO = {
    send: (text) => void sent.push(text),
    reconnect: (reason) => void reconnects.push(reason),
    emit: () => assert.fail("the Alpaca session publishes only from onFrame"),
    resynced: () => assert.fail("the Alpaca session has no books"),
    error: (message) => void errors.push(message),
    fetchText: () => Promise.reject(new Error("no REST in this test")),
    nowUs: () => Date.now() * 1000,
    signal: controller.signal,
    log,
  };
  return { io, sent, reconnects, errors };
}

function config(overrides: Partial<AlpacaSessionConfig> = {}): AlpacaSessionConfig {
  return {
    ws_url: "wss://stream.data.alpaca.markets/v2",
    feed: "iex",
    key_id: KEY_ID,
    secret_key: SECRET,
    symbols: ["AAPL", "AMD"],
    channels: ["trades", "quotes", "bars"],
    ...overrides,
  };
}

const frame = (message: Record<string, unknown>) => JSON.stringify([message]);

Deno.test("the Alpaca session connects to <ws_url>/<feed>", () => {
  assert.equal(alpacaSession(config()).url(), "wss://stream.data.alpaca.markets/v2/iex");
  assert.equal(
    alpacaSession(config({ ws_url: "ws://127.0.0.1:9/v2/", feed: "sip" })).url(),
    "ws://127.0.0.1:9/v2/sip",
  );
  assert.throws(() => alpacaSession(config({ symbols: [] })), TypeError);
  assert.throws(() => alpacaSession(config({ symbols: ["aapl; drop"] })), TypeError);
});

Deno.test("the Alpaca session authenticates after connected and subscribes after authenticated", () => {
  const session = alpacaSession(config());
  const { io, sent, errors, reconnects } = recordingIO();
  session.onOpen(io);
  assert.deepEqual(sent, [], "nothing is sent before the greeting");
  assert.equal((session.status() as AlpacaSessionStatus).state, "connecting");

  session.onFrame('[{"T":"success","msg":"connected"}]', RECEIVED_US, io);
  assert.deepEqual(sent.map((text) => JSON.parse(text)), [
    { action: "auth", key: KEY_ID, secret: SECRET },
  ]);
  assert.equal((session.status() as AlpacaSessionStatus).state, "authenticating");

  session.onFrame('[{"T":"success","msg":"authenticated"}]', RECEIVED_US, io);
  assert.deepEqual(JSON.parse(sent[1]!), {
    action: "subscribe",
    trades: ["AAPL", "AMD"],
    quotes: ["AAPL", "AMD"],
    bars: ["AAPL", "AMD"],
  });
  assert.equal((session.status() as AlpacaSessionStatus).state, "subscribing");

  session.onFrame(
    frame({
      T: "subscription",
      trades: ["AAPL", "AMD"],
      quotes: ["AAPL", "AMD"],
      bars: ["AAPL", "AMD"],
    }),
    RECEIVED_US,
    io,
  );
  const status = session.status() as AlpacaSessionStatus;
  assert.equal(status.state, "subscribed");
  assert.equal(status.authenticated, true);
  assert.deepEqual(status.subscribed, {
    trades: ["AAPL", "AMD"],
    quotes: ["AAPL", "AMD"],
    bars: ["AAPL", "AMD"],
  });
  assert.equal(sent.length, 2);
  assert.deepEqual(errors, []);
  assert.deepEqual(reconnects, []);
  assert.ok(!JSON.stringify(status).includes(SECRET), "the status never shows the secret");
  assert.ok(!JSON.stringify(status).includes(KEY_ID), "nor the key id");

  session.onClose();
  const closed = session.status() as AlpacaSessionStatus;
  assert.equal(closed.state, "connecting");
  assert.equal(closed.authenticated, false);
  assert.deepEqual(closed.subscribed, { trades: [], quotes: [], bars: [] });
});

Deno.test("the Alpaca session subscribes only the configured channels", () => {
  const session = alpacaSession(config({ channels: ["quotes"], symbols: ["SPY"] }));
  const { io, sent } = recordingIO();
  session.onOpen(io);
  session.onFrame('[{"T":"success","msg":"connected"}]', RECEIVED_US, io);
  session.onFrame('[{"T":"success","msg":"authenticated"}]', RECEIVED_US, io);
  assert.equal(sent[1], '{"action":"subscribe","quotes":["SPY"]}');
});

Deno.test("the documented Alpaca data points become events with exact decimals", () => {
  const session = alpacaSession(config());
  const { io } = recordingIO();
  session.onOpen(io);
  const events = DATA_FRAMES.flatMap((text) => session.onFrame(text, RECEIVED_US, io));
  assert.deepEqual(events.map((event) => event.kind), ["trade", "quote", "bar", "bar"]);
  assert.deepEqual(events[0], {
    kind: "trade",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: Date.UTC(2021, 1, 22, 15, 51, 44, 208) * 1000,
    ts_local: RECEIVED_US,
    trade_id: "D:96921",
    price: "126.55",
    qty: "1",
    side: "unknown",
  });
  assert.equal(events[2]!.kind === "bar" && events[2]!.low, "388.975");
  // The trading status of the docs is a notice, counted.
  assert.equal((session.status() as AlpacaSessionStatus).notices.trading_status, 1);
});

Deno.test("corrections and cancels are logged and counted, never published", () => {
  const { log, lines } = memoryLogger();
  const session = alpacaSession(config());
  const { io } = recordingIO(log);
  session.onOpen(io);
  const events = session.onFrame(
    JSON.stringify([
      {
        T: "c",
        S: "AAPL",
        x: "D",
        oi: 1,
        op: 126.5,
        os: 10,
        oc: ["@"],
        ci: 2,
        cp: 126.55,
        cs: 10,
        cc: ["@"],
        t: "2021-02-22T15:51:44.208Z",
        z: "C",
      },
      {
        T: "x",
        S: "AAPL",
        i: 3,
        x: "D",
        p: 126.5,
        s: 5,
        a: "C",
        t: "2021-02-22T15:51:45Z",
        z: "C",
      },
    ]),
    RECEIVED_US,
    io,
  );
  assert.deepEqual(events, []);
  const notices = (session.status() as AlpacaSessionStatus).notices;
  assert.equal(notices.correction, 1);
  assert.equal(notices.cancel_error, 1);
  assert.deepEqual(lines.map((line) => line.message), [
    "Alpaca trade correction",
    "Alpaca trade cancel",
  ]);
});

Deno.test("every documented Alpaca error is reported with its code; refusals stop the handshake", () => {
  const errorsOfDocs = docLines().filter((line) => line.includes('"T":"error"'));
  assert.equal(errorsOfDocs.length, 11);
  for (const text of errorsOfDocs) {
    const { code, msg } = JSON.parse(text)[0];
    const session = alpacaSession(config());
    const { io, sent, errors, reconnects } = recordingIO();
    session.onOpen(io);
    session.onFrame('[{"T":"success","msg":"connected"}]', RECEIVED_US, io);
    session.onFrame(text, RECEIVED_US, io);
    assert.deepEqual(errors, [`Alpaca error ${code}: ${msg}`]);
    assert.deepEqual(reconnects, [], "the session never reconnects by itself");
    const status = session.status() as AlpacaSessionStatus;
    assert.equal(status.last_error_code, code);
    assert.equal(status.last_error, msg);
    const refused = [402, 406, 408, 409].includes(code);
    assert.equal(status.state, refused ? "refused" : "authenticating", `code ${code}`);
    // A late greeting does not restart the handshake.
    session.onFrame('[{"T":"success","msg":"connected"}]', RECEIVED_US, io);
    assert.equal(sent.length, 1);
  }
});

Deno.test("missing Alpaca credentials: no URL to connect to, and nothing is sent", () => {
  for (const overrides of [{ key_id: "" }, { secret_key: "" }]) {
    const session = alpacaSession(config(overrides));
    assert.throws(() => session.url(), AlpacaCredentialsError);
    assert.throws(() => session.url(), new RegExp(ALPACA_MISSING_CREDENTIALS));
    const { io, sent, errors, reconnects } = recordingIO();
    session.onOpen(io);
    session.onFrame('[{"T":"success","msg":"connected"}]', RECEIVED_US, io);
    assert.deepEqual(errors, [ALPACA_MISSING_CREDENTIALS]);
    assert.deepEqual(sent, []);
    assert.deepEqual(reconnects, []);
    const status = session.status() as AlpacaSessionStatus;
    assert.equal(status.state, "refused");
    assert.equal(status.credentials_configured, false);
  }
});

Deno.test("malformed Alpaca frames throw MalformedFrameError and leave the session as it was", () => {
  const session = alpacaSession(config());
  const { io, sent } = recordingIO();
  session.onOpen(io);
  session.onFrame('[{"T":"success","msg":"connected"}]', RECEIVED_US, io);
  for (const garbage of ["not json", "[]", '[{"T":"t","S":"AAPL"}]', '{"T":"zz"}']) {
    assert.throws(() => session.onFrame(garbage, RECEIVED_US, io), MalformedFrameError);
  }
  session.onFrame('[{"T":"success","msg":"authenticated"}]', RECEIVED_US, io);
  assert.equal(sent.length, 2);
  assert.equal((session.status() as AlpacaSessionStatus).state, "subscribing");
});

Deno.test("createSessions makes one session per enabled exchange, Alpaca only when enabled", () => {
  const defaults = configSchema.parse({});
  assert.deepEqual(createSessions(defaults).map((session) => session.exchange), [
    "binance",
    "coinbase",
    "kraken",
  ]);
  const config = configSchema.parse({
    exchanges: {
      binance: { enabled: false },
      kraken: { enabled: false },
      alpaca: { enabled: true, key_id: KEY_ID, secret_key: SECRET, symbols: ["AAPL"] },
    },
  });
  const sessions = createSessions(config);
  assert.deepEqual(sessions.map((session) => session.exchange), ["coinbase", "alpaca"]);
  assert.equal(sessions[0]!.url(), "wss://advanced-trade-ws.coinbase.com");
  assert.equal(sessions[1]!.url(), "wss://stream.data.alpaca.markets/v2/iex");
});

// ---- the real feed runtime, the fake venue and the real NATS ----------------

const NATS_URL = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";

/** A ticker no other test uses, so its subjects are this test's alone. */
function uniqueTicker(): string {
  return `T${crypto.randomUUID().replaceAll("-", "").slice(0, 7).toUpperCase()}`;
}

interface Harness extends AsyncDisposable {
  venue: FakeAlpacaServer;
  /** The feed's figures in MarketStatus. */
  status: FeedStatus;
  /** The whole MarketStatus, as the API would show it. */
  marketStatus: MarketStatus;
  /** Events received on md.> for this test's tickers, in arrival order. */
  events: MarketEvent[];
  /** Dead letters on dlq.md.alpaca whose frame carries this test's token or tickers. */
  letters: DeadLetter[];
  /** A token to put in garbage frames so their dead letters can be told apart. */
  token: string;
  /** The feed's log lines. */
  logLines: Array<Record<string, unknown>>;
  venueStatus(): AlpacaSessionStatus;
}

interface HarnessOptions {
  /** Credentials the session uses. @default {the venue's} */
  keyId?: string;
  secretKey?: string;
  staleAfterMs?: number;
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Runs once the venue is up, before the feed starts. */
  beforeFeed?: (venue: FakeAlpacaServer) => Promise<void>;
  /**
   * The feed's clock. @default {real time read from a Wednesday at 11:00 ET:
   * the market is open whatever day the tests run}
   */
  clock?: Clock;
}

/** A Wednesday, 11:00 New York time: the regular session is open. */
const MARKET_OPEN = "2026-12-09T16:00:00Z";

async function startHarness(tickers: string[], options: HarnessOptions = {}): Promise<Harness> {
  const venue = await startAlpacaServer({ keyId: KEY_ID, secretKey: SECRET });
  await options.beforeFeed?.(venue);
  const nc = await connect({ servers: NATS_URL });
  const token = crypto.randomUUID();
  const { events, letters } = await watchVenue(nc, "alpaca", tickers, [token, ...tickers]);
  const session = alpacaSession(config({
    ws_url: venue.url,
    key_id: options.keyId ?? KEY_ID,
    secret_key: options.secretKey ?? SECRET,
    symbols: tickers,
  }));
  const { log, lines } = memoryLogger();
  const feed = startTestFeed(session, nc, venue, {
    staleAfterMs: options.staleAfterMs,
    reconnectInitialMs: options.reconnectInitialMs,
    reconnectMaxMs: options.reconnectMaxMs,
    log,
    clock: options.clock ?? clockAt(MARKET_OPEN),
  });
  return {
    venue,
    status: feed.status,
    marketStatus: feed.marketStatus,
    events,
    letters,
    token,
    logLines: lines,
    venueStatus: () => session.status(),
    [Symbol.asyncDispose]: feed.close,
  };
}

/** Waits until connection `n` (1, 2…) has authenticated and subscribed. */
async function handshake(h: Harness, n: number): Promise<void> {
  await waitFor(
    () => {
      const socket = h.venue.ws.sockets[n - 1];
      return socket !== undefined && socket.received.length >= 2 &&
        h.venue.subscribed(socket, "trades").length > 0;
    },
    5_000,
    `handshake of connection ${n}`,
  );
  await waitFor(() => h.venueStatus().state === "subscribed", 5_000, "subscription ack");
}

/** Whether `text` (a MarketStatus snapshot, log lines…) shows the secret anywhere. */
function showsSecret(text: string): boolean {
  return text.includes(SECRET);
}

Deno.test("alpaca feed authenticates, subscribes and publishes trades, quotes and bars exactly", async () => {
  const a = uniqueTicker();
  const b = uniqueTicker();
  await using h = await startHarness([a, b]);
  await handshake(h, 1);
  const socket = h.venue.ws.sockets[0]!;
  assert.equal(socket.path, "/v2/iex");
  assert.deepEqual(socket.received.map((text) => JSON.parse(text)), [
    { action: "auth", key: KEY_ID, secret: SECRET },
    { action: "subscribe", trades: [a, b], quotes: [a, b], bars: [a, b] },
  ]);
  assert.deepEqual(h.venueStatus().subscribed, { trades: [a, b], quotes: [a, b], bars: [a, b] });
  const before = Date.now() * 1000;

  h.venue.trade(a, {
    price: "126.50",
    size: "1e2",
    id: "96921",
    exchange: "V",
    time: "2021-02-22T15:51:44.208123Z",
  });
  h.venue.quote(a, {
    bidPrice: "87.660",
    bidSize: "1",
    askPrice: "87.68",
    askSize: "4",
    time: "2021-02-22T15:51:45.335689322Z",
  });
  h.venue.bar(b, {
    open: "388.985",
    high: "389.13",
    low: "388.975",
    close: "389.12",
    volume: "49378",
    time: "2021-02-22T19:15:00Z",
    trades: "1210",
    vwap: "389.062639",
  });
  // The documented data points, renamed to this test's ticker, as they arrive on the wire.
  for (const frame of DATA_FRAMES) h.venue.raw(frame.replaceAll(/"(AAPL|AMD|SPY)"/g, `"${a}"`));
  await waitFor(() => ofKind(h.events, "bar", a).length === 2, 5_000, "documented bars");
  const after = Date.now() * 1000 + 1_000;

  const [trade, docTrade] = ofKind(h.events, "trade", a);
  assert.ok(trade && docTrade);
  const { ts_local: tsLocal, ...fields } = trade;
  assert.deepEqual(fields, {
    kind: "trade",
    exchange: "alpaca",
    symbol: a,
    venue_symbol: a,
    ts_exchange: Date.UTC(2021, 1, 22, 15, 51, 44) * 1000 + 208_123,
    trade_id: "V:96921",
    price: "126.50",
    qty: "100",
    side: "unknown",
  });
  assert.ok(Number.isSafeInteger(tsLocal) && tsLocal >= before && tsLocal <= after);
  assert.equal(docTrade.price, "126.55");
  assert.equal(docTrade.trade_id, "D:96921");

  const [quote] = ofKind(h.events, "quote", a);
  assert.deepEqual(
    [quote?.bid_price, quote?.bid_qty, quote?.ask_price, quote?.ask_qty, quote?.ts_exchange],
    ["87.660", "1", "87.68", "4", Date.UTC(2021, 1, 22, 15, 51, 45) * 1000 + 335_689],
  );
  const [bar] = ofKind(h.events, "bar", b);
  assert.deepEqual(
    [bar?.interval, bar?.open, bar?.low, bar?.volume, bar?.trades, bar?.vwap, bar?.start],
    ["1m", "388.985", "388.975", "49378", 1210, "389.062639", Date.UTC(2021, 1, 22, 19, 15) * 1000],
  );
  assert.deepEqual(ofKind(h.events, "bar", a).map((event) => event.interval), ["1m", "1d"]);
  assert.equal(h.status.state, "live");
  assert.equal(h.status.last_error, null);
  assert.equal(h.status.malformed, 0);
  assert.equal(h.status.reconnects, 0);
  await waitFor(
    () => (h.status.venue as AlpacaSessionStatus).state === "subscribed",
    2_000,
    "venue figures in MarketStatus",
  );
  assert.ok(!showsSecret(JSON.stringify(h.marketStatus.snapshot())));
  assert.ok(!showsSecret(JSON.stringify(h.logLines)), "the secret is never logged");
});

Deno.test("wrong alpaca credentials: 402 in MarketStatus and reconnects spaced by backoff", async () => {
  const a = uniqueTicker();
  await using h = await startHarness([a], {
    secretKey: "wrong-secret",
    reconnectInitialMs: 50,
    reconnectMaxMs: 200,
  });
  await waitFor(
    () => h.venue.errorsSent.filter(([code]) => code === 402).length >= 5,
    10_000,
    "five refused attempts",
  );
  await waitFor(() => h.status.last_error !== null, 2_000, "last error");
  assert.equal(h.status.last_error, "Alpaca error 402: auth failed");
  const venue = h.venueStatus();
  assert.equal(venue.last_error_code, 402);
  assert.equal(venue.authenticated, false);
  // Each attempt authenticated once and subscribed never.
  for (const socket of h.venue.ws.sockets.slice(0, 5)) {
    assert.deepEqual(socket.received.map((text) => JSON.parse(text).action), ["auth"]);
  }
  // No tight loop: attempts are spaced by the runtime's backoff (50 ms doubling to 200 ms,
  // ±20 % jitter), never retried at once by the session.
  const gaps = h.venue.openedAt.slice(1, 5).map((at, i) => at - h.venue.openedAt[i]!);
  const floors = [50, 100, 200, 200].map((ms) => ms * 0.8);
  gaps.forEach((gap, i) => assert.ok(gap >= floors[i]!, `gap ${i}: ${gap} ms < ${floors[i]} ms`));
  assert.equal(h.venue.authenticated(), 0);
  assert.equal(h.events.length, 0);
  assert.ok(!showsSecret(JSON.stringify(h.logLines)));
});

Deno.test("alpaca connection limit 406 is surfaced; the feed gets in once the other client leaves", async () => {
  const a = uniqueTicker();
  // Another client of the same account holds the one connection allowed.
  let holder!: WebSocket;
  let holderClosed!: Promise<unknown>;
  await using h = await startHarness([a], {
    reconnectInitialMs: 50,
    reconnectMaxMs: 200,
    beforeFeed: async (venue) => {
      holder = new WebSocket(`${venue.url}/iex`);
      holderClosed = new Promise((resolve) => holder.onclose = resolve);
      holder.onmessage = (event) => {
        if (String(event.data).includes('"connected"')) {
          holder.send(JSON.stringify({ action: "auth", key: KEY_ID, secret: SECRET }));
        }
      };
      await waitFor(() => venue.authenticated() === 1, 5_000, "the other client authenticated");
    },
  });
  try {
    await waitFor(
      () => h.status.last_error === "Alpaca error 406: connection limit exceeded",
      10_000,
      "406 in MarketStatus",
    );
    assert.equal(h.venueStatus().last_error_code, 406);
    // The venue closes the refused connection (the holder's is the first).
    await deadline(h.venue.ws.sockets[1]!.closed, 5_000, "refused connection closed");
    assert.equal(h.venue.ws.sockets[1]!.received.length, 1, "only the auth was sent");
  } finally {
    holder.close();
    await deadline(holderClosed, 5_000, "holder closed");
  }
  // The next attempt of the feed's backoff gets in.
  await waitFor(() => h.venueStatus().state === "subscribed", 10_000, "subscribed at last");
  h.venue.trade(a, { price: "10.01", size: "5" });
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "a trade");
});

Deno.test("missing alpaca credentials: the error is in MarketStatus and no connection is made", async () => {
  const a = uniqueTicker();
  await using h = await startHarness([a], {
    keyId: "",
    reconnectInitialMs: 20,
    reconnectMaxMs: 80,
  });
  await waitFor(() => h.status.reconnects >= 3, 5_000, "three attempts");
  assert.match(h.status.last_error ?? "", /Alpaca credentials are not configured/);
  assert.equal(h.venue.ws.connections, 0);
  assert.notEqual(h.status.state, "live");
});

Deno.test("alpaca feed dead-letters malformed frames with the raw frame and carries on", async () => {
  const a = uniqueTicker();
  await using h = await startHarness([a]);
  await handshake(h, 1);
  const garbage = `[{"T":"t","garbage":"${h.token}"`;
  h.venue.garbage(garbage);
  h.venue.raw(
    `[{"T":"t","S":"${a}","i":1,"x":"V","p":"12.5","s":1,"t":"2021-02-22T15:51:44.208Z"}]`,
  );
  h.venue.trade(a, { price: "12.50", size: "3" });
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "the next trade");
  await waitFor(() => h.letters.length === 2, 5_000, "two dead letters");
  assert.equal(h.letters[0]!.frame, garbage);
  assert.ok(h.letters[1]!.frame?.includes('"p":"12.5"'));
  for (const letter of h.letters) {
    assert.equal(letter.exchange, "alpaca");
    assert.equal(letter.stage, "feed");
    assert.equal(letter.reason, "malformed");
  }
  assert.equal(h.status.malformed, 2);
  assert.equal(h.status.reconnects, 0);
  assert.equal(ofKind(h.events, "trade", a)[0]!.price, "12.50");
});

Deno.test("alpaca feed re-authenticates and resubscribes after a drop and after silence", async () => {
  const a = uniqueTicker();
  await using h = await startHarness([a], { staleAfterMs: 300 });
  await handshake(h, 1);
  h.venue.drop();
  await handshake(h, 2);
  h.venue.silence();
  await handshake(h, 3);
  assert.equal(h.status.reconnects, 2);
  for (const socket of h.venue.ws.sockets) {
    assert.deepEqual(socket.received.map((text) => JSON.parse(text).action), [
      "auth",
      "subscribe",
    ]);
  }
  h.venue.trade(a, { price: "1.0001", size: "7" });
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "a trade");
  assert.equal(h.status.last_error === null || !h.status.last_error.startsWith("Alpaca"), true);
});

Deno.test("alpaca feed: silence while the market is closed is no reason to reconnect", async () => {
  const a = uniqueTicker();
  const clock = clockAt("2026-12-05T17:00:00Z"); // Saturday noon in New York
  await using h = await startHarness([a], { staleAfterMs: 200, clock });
  await handshake(h, 1);
  h.venue.silence();
  await waitFor(() => h.status.quiet !== null, 5_000, "quiet");
  assert.equal(h.status.quiet, "US equity market closed: weekend (Saturday)");
  // Four times stale_after_ms of silence: still the first connection.
  const quietSince = Date.now();
  await waitFor(() => Date.now() - quietSince >= 800, 5_000, "800 ms");
  assert.equal(h.venue.ws.sockets.length, 1);
  assert.equal(h.status.reconnects, 0);
  // Monday's pre-market: silence counts again, from when the quiet ended.
  clock.jump("2026-12-07T09:30:00Z"); // 04:30 New York
  await handshake(h, 2);
  assert.equal(h.status.quiet, null);
  assert.equal(h.status.reconnects, 1);
});

Deno.test("after the overnight quiet, the alpaca watchdog counts silence from the session's start, not from before it", async () => {
  const a = uniqueTicker();
  // Monday 2026-12-07, 03:59:58 in New York (EST): two seconds before the pre-market.
  const clock = clockAt("2026-12-07T08:59:58.000Z");
  const sessionStart = Date.parse("2026-12-07T09:00:00.000Z");
  const staleAfterMs = 3_000;
  await using h = await startHarness([a], { staleAfterMs, clock });
  await handshake(h, 1);
  assert.notEqual(h.status.quiet, null, "03:59:58 ET is outside the extended session");
  h.venue.silence();
  let reconnectedAt: number | null = null;
  await waitFor(
    () => {
      if (h.status.reconnects >= 1 && reconnectedAt === null) reconnectedAt = clock.now();
      return reconnectedAt !== null;
    },
    10_000,
    "the watchdog's reconnect",
  );
  assert.equal(h.status.quiet, null);
  const silentInSessionMs = reconnectedAt! - sessionStart;
  assert.ok(
    silentInSessionMs >= staleAfterMs - 250,
    `reconnected ${silentInSessionMs} ms after the session started at 04:00 ET, ` +
      `with stale_after_ms ${staleAfterMs}: silence was counted from before the session`,
  );
});

Deno.test("an alpaca error message is surfaced with its code and the stream goes on", async () => {
  const a = uniqueTicker();
  await using h = await startHarness([a]);
  await handshake(h, 1);
  h.venue.error(407, "slow client");
  await waitFor(() => h.status.last_error !== null, 5_000, "last error");
  assert.equal(h.status.last_error, "Alpaca error 407: slow client");
  assert.equal(h.venueStatus().last_error_code, 407);
  h.venue.trade(a, { price: "2", size: "1" });
  await waitFor(() => ofKind(h.events, "trade", a).length === 1, 5_000, "a trade");
  assert.equal(h.venue.ws.connections, 1);
});
