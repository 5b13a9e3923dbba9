/**
 * The feed runtime against a loopback WebSocket server and the real NATS
 * server (127.0.0.1:4222), with a tiny venue session whose frames are
 * `{"p":"1.5","q":"2","id":7}` trades. Each test uses its own symbol, so its
 * `md.*` subject is its own; dead letters are told apart by a marker in the
 * frame.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { decodeJson } from "../adapters/codec.ts";
import {
  DEAD_LETTER_DETAIL_MAX,
  deliveryLagMs,
  feedActor,
  type FeedDeps,
  FeedOutput,
  fitLetter,
  HttpStatusError,
  parseRetryAfter,
  RECONNECT_CLOSE_CODE,
} from "../actors/feed.ts";
import { startRoot } from "../actors/mod.ts";
import { memoryLogger } from "../lib/log.ts";
import {
  type Exchange,
  MalformedFrameError,
  type MarketEvent,
  type TradeEvent,
} from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import { type DeadLetter, dlqSubject, mdSubject } from "../market/subjects.ts";
import type { SessionIO, VenueSession } from "../venues/session.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { type FakeWsServer, startWsServer } from "./fakes/ws_server.ts";

const NATS_URL = "127.0.0.1:4222";
const EXCHANGE: Exchange = "binance";

let symbolCounter = 0;
/** A symbol no other test uses, so the test's md subject is its own. */
function uniqueSymbol(): string {
  symbolCounter++;
  return `FT${symbolCounter}X${crypto.randomUUID().slice(0, 6).toUpperCase()}-USD`;
}

/**
 * A minimal venue: subscribes on open; `{"p","q","id"[,"ts"]}` is a trade,
 * `{"symbols":[…]}` a trade for each symbol given, `{"unknown":"…"}` an
 * unknown event type (the error quotes it),
 * `{"cmd":"resync"}` asks for a reconnect with resync, `{"cmd":"resynced"}`
 * counts a resync in place, `{"boom":true}` throws a TypeError (a parser
 * bug); anything else is malformed.
 */
class TestSession implements VenueSession {
  readonly exchange: Exchange = EXCHANGE;
  readonly symbol: string;
  opens = 0;
  closes = 0;
  ticks = 0;
  onOpenHook: ((io: SessionIO) => void | Promise<void>) | null = null;
  readonly #url: () => string;

  constructor(url: () => string, symbol: string) {
    this.#url = url;
    this.symbol = symbol;
  }

  url(): string {
    return this.#url();
  }

  onOpen(io: SessionIO): void | Promise<void> {
    this.opens++;
    io.send(JSON.stringify({ op: "subscribe", symbol: this.symbol }));
    return this.onOpenHook?.(io);
  }

  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[] {
    let data: Record<string, unknown>;
    try {
      data = JSON.parse(frame);
    } catch (error) {
      throw new MalformedFrameError("Frame is not JSON", { cause: error });
    }
    if (data.boom) (null as unknown as { crash(): void }).crash();
    if (typeof data.unknown === "string") {
      throw new MalformedFrameError(`Unknown event type ${JSON.stringify(data.unknown)}`);
    }
    if (Array.isArray(data.symbols)) {
      return data.symbols.map((symbol, i) => trade(String(symbol), i, "1.5", "2", receivedUs));
    }
    if (data.cmd === "resync") {
      io.reconnect("sequence gap", { resync: true });
      return [];
    }
    if (data.cmd === "resynced") {
      io.resynced("fresh snapshot");
      return [];
    }
    if (typeof data.venue_error === "string") {
      io.error(data.venue_error);
      return [];
    }
    if (typeof data.p !== "string" || typeof data.q !== "string" || typeof data.id !== "number") {
      throw new MalformedFrameError("Trade needs p, q and id");
    }
    return [trade(this.symbol, data.id, data.p, data.q, receivedUs, data.ts)];
  }

  onClose(): void {
    this.closes++;
  }

  onTick(): void {
    this.ticks++;
  }

  status(): Record<string, unknown> {
    return { opens: this.opens, closes: this.closes };
  }
}

function trade(
  symbol: string,
  id: number,
  price: string,
  qty: string,
  receivedUs: number,
  ts?: unknown,
): TradeEvent {
  return {
    kind: "trade",
    exchange: EXCHANGE,
    symbol,
    venue_symbol: symbol.replace("-", ""),
    ts_exchange: typeof ts === "number" ? ts : receivedUs - 1000,
    ts_local: receivedUs,
    trade_id: String(id),
    price,
    qty,
    side: "buy",
  };
}

function tradeFrame(id: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ p: "1.5", q: "2", id, ...extra });
}

/** Collects the JSON payloads of a subject. */
async function collect<T>(
  nats: NatsConnection,
  subject: string,
): Promise<{ messages: T[]; sub: Subscription }> {
  const messages: T[] = [];
  const sub = nats.subscribe(subject, {
    callback: (error, msg) => {
      if (!error) messages.push(decodeJson<T>(msg.data));
    },
  });
  await nats.flush();
  return { messages, sub };
}

interface Harness extends AsyncDisposable {
  nats: NatsConnection;
  server: FakeWsServer;
  session: TestSession;
  status: MarketStatus;
  trades: { messages: TradeEvent[][]; sub: Subscription };
  lines: Array<Record<string, unknown>>;
  /** Starts the feed with `deps` on top of the harness's. */
  start(deps?: Partial<FeedDeps>): { done: Promise<void>; stop(): Promise<void> };
}

async function harness(): Promise<Harness> {
  const nats = await connect({ servers: NATS_URL });
  const server = await startWsServer();
  const symbol = uniqueSymbol();
  const session = new TestSession(() => `${server.url}/feed`, symbol);
  const status = new MarketStatus();
  const trades = await collect<TradeEvent[]>(nats, mdSubject("trade", EXCHANGE, symbol));
  const { log, lines } = memoryLogger();
  const running: Array<{ controller: AbortController; done: Promise<void> }> = [];
  const h: Harness = {
    nats,
    server,
    session,
    status,
    trades,
    lines,
    start(deps = {}) {
      const controller = new AbortController();
      const spec = feedActor(session, {
        nats,
        status,
        log,
        ...deps,
        options: {
          reconnect_initial_ms: 20,
          reconnect_max_ms: 200,
          publish_batch_ms: 20,
          ...deps.options,
        },
      });
      const child = spec.start(controller.signal);
      running.push({ controller, done: child.done });
      return {
        done: child.done,
        stop: async () => {
          controller.abort();
          await deadline(child.done, 5_000, "feed stop");
        },
      };
    },
    async [Symbol.asyncDispose]() {
      for (const { controller, done } of running) {
        controller.abort();
        await done.catch(() => {});
      }
      trades.sub.unsubscribe();
      await server.stop();
      await nats.close();
    },
  };
  return h;
}

const allEvents = <T>(messages: T[][]): T[] => messages.flat();

Deno.test("feed subscribes on open and publishes frames as coalesced JSON arrays in order", async () => {
  await using h = await harness();
  const feed = h.start({ options: { publish_batch_ms: 50 } });
  await waitFor(() => h.server.latest?.received.length === 1, 5_000, "subscribe");
  assert.deepEqual(JSON.parse(h.server.latest!.received[0]!), {
    op: "subscribe",
    symbol: h.session.symbol,
  });
  assert.equal(h.status.feed(EXCHANGE).state, "subscribing");
  const nowUs = Date.now() * 1000;
  for (let id = 1; id <= 30; id++) h.server.latest!.send(tradeFrame(id, { ts: nowUs - 5_000 }));
  await waitFor(() => allEvents(h.trades.messages).length === 30, 5_000, "30 events");
  const messages = h.trades.messages;
  assert.ok(messages.every((message) => Array.isArray(message) && message.length > 0));
  assert.ok(messages.length < 30, `expected coalescing, got ${messages.length} messages`);
  assert.deepEqual(
    allEvents(messages).map((event) => event.trade_id),
    Array.from({ length: 30 }, (_, i) => String(i + 1)),
  );
  const event = messages[0]![0]!;
  assert.equal(event.kind, "trade");
  assert.equal(event.symbol, h.session.symbol);
  assert.equal(event.price, "1.5");
  const status = h.status.feed(EXCHANGE);
  assert.equal(status.state, "live");
  assert.equal(status.frames, 30);
  assert.equal(status.events, 30);
  assert.equal(status.malformed, 0);
  assert.equal(status.reconnects, 0);
  assert.ok(status.connected_at !== null && status.last_message_at !== null);
  assert.ok(
    status.lag_ms !== null && status.lag_ms >= 5 && status.lag_ms < 5_000,
    `lag ${status.lag_ms}`,
  );
  await feed.stop();
  assert.equal(status.state, "stopped");
});

Deno.test("publish_batch_max caps a message and publish_batch_ms 0 publishes every frame", async () => {
  await using capped = await harness();
  const feed = capped.start({ options: { publish_batch_ms: 10_000, publish_batch_max: 4 } });
  await waitFor(() => capped.server.latest?.received.length === 1);
  for (let id = 1; id <= 10; id++) capped.server.latest!.send(tradeFrame(id));
  await waitFor(() => allEvents(capped.trades.messages).length === 8, 5_000, "two full batches");
  assert.deepEqual(capped.trades.messages.map((m) => m.length), [4, 4]);
  await feed.stop(); // flushes the last 2
  await capped.nats.flush();
  await waitFor(() => capped.trades.messages.length === 3, 5_000, "the flushed rest");
  assert.deepEqual(capped.trades.messages.map((m) => m.length), [4, 4, 2]);

  await using unbatched = await harness();
  unbatched.start({ options: { publish_batch_ms: 0 } });
  await waitFor(() => unbatched.server.latest?.received.length === 1);
  for (let id = 1; id <= 5; id++) unbatched.server.latest!.send(tradeFrame(id));
  await waitFor(() => allEvents(unbatched.trades.messages).length === 5);
  assert.deepEqual(unbatched.trades.messages.map((m) => m.length), [1, 1, 1, 1, 1]);
});

Deno.test("garbage frames are counted and dead-lettered with the raw frame; the feed carries on", async () => {
  await using h = await harness();
  const marker = crypto.randomUUID();
  const dlq = await collect<DeadLetter>(h.nats, dlqSubject(EXCHANGE));
  try {
    h.start();
    await waitFor(() => h.server.latest?.received.length === 1);
    const socket = h.server.latest!;
    socket.send(`not json ${marker}`);
    socket.send(JSON.stringify({ p: 1, marker }));
    socket.send(JSON.stringify({ boom: true, marker }));
    socket.send(new TextEncoder().encode(tradeFrame(1))); // binary frames are text too
    socket.send(tradeFrame(2));
    await waitFor(() => allEvents(h.trades.messages).length === 2, 5_000, "good frames");
    const mine = () => dlq.messages.filter((letter) => letter.frame?.includes(marker));
    await waitFor(() => mine().length === 3, 5_000, "3 dead letters");
    const letters = mine();
    assert.deepEqual(letters.map((letter) => letter.frame), [
      `not json ${marker}`,
      JSON.stringify({ p: 1, marker }),
      JSON.stringify({ boom: true, marker }),
    ]);
    for (const letter of letters) {
      assert.equal(letter.exchange, EXCHANGE);
      assert.equal(letter.stage, "feed");
      assert.equal(letter.reason, "malformed");
      assert.ok(Number.isInteger(letter.at_us) && letter.at_us > 1e15);
    }
    assert.equal(letters[0]!.detail, "Frame is not JSON");
    assert.equal(letters[1]!.detail, "Trade needs p, q and id");
    assert.match(letters[2]!.detail, /^TypeError: /);
    const status = h.status.feed(EXCHANGE);
    assert.equal(status.frames, 5);
    assert.equal(status.malformed, 3);
    assert.equal(status.events, 2);
    assert.equal(status.state, "live");
    assert.equal(h.server.connections, 1);
    assert.ok(h.lines.some((line) => line.message === "malformed frame dead-lettered"));
  } finally {
    dlq.sub.unsubscribe();
  }
});

Deno.test("a dropped connection is reconnected with backoff and the session resubscribes", async () => {
  await using h = await harness();
  h.start();
  await waitFor(() => h.server.latest?.received.length === 1);
  h.server.latest!.send(tradeFrame(1));
  await waitFor(() => h.status.feed(EXCHANGE).state === "live");

  h.server.latest!.drop(); // no close frame
  await waitFor(() => h.server.connections === 2 && h.server.latest!.received.length === 1);
  const status = h.status.feed(EXCHANGE);
  assert.equal(h.session.closes, 1);
  assert.equal(h.session.opens, 2);
  assert.equal(status.reconnects, 1);
  assert.ok(status.last_error !== null, "a cut connection is reported");

  h.server.latest!.close(1001, "going away"); // with a close frame
  await waitFor(() => h.server.connections === 3 && h.server.latest!.received.length === 1);
  assert.equal(h.session.closes, 2);
  assert.equal(h.session.opens, 3);
  assert.equal(status.reconnects, 2);
  h.server.latest!.send(tradeFrame(2));
  await waitFor(() => allEvents(h.trades.messages).length === 2);
  assert.ok(h.lines.some((line) => line.message === "feed reconnecting"));
});

Deno.test("a venue error survives the connection cut that follows it", async () => {
  await using h = await harness();
  h.start();
  await waitFor(() => h.server.latest?.received.length === 1);
  h.server.latest!.send(
    JSON.stringify({ venue_error: "Venue error 406: connection limit exceeded" }),
  );
  await waitFor(() => h.status.feed(EXCHANGE).last_error !== null);
  h.server.latest!.drop();
  await waitFor(() => h.server.connections === 2, 5_000, "reconnected");
  assert.equal(
    h.status.feed(EXCHANGE).last_error,
    "Venue error 406: connection limit exceeded",
  );
});

Deno.test("a refusing server makes the backoff grow; the feed recovers and the backoff starts over", async () => {
  await using h = await harness();
  h.server.refuse();
  h.start({
    random: () => 0.5, // no jitter
    options: { reconnect_initial_ms: 10, reconnect_max_ms: 80, stable_after_ms: 100 },
  });
  const delays = () =>
    h.lines.filter((line) => line.message === "feed reconnecting").map((line) => line.delay_ms);
  await waitFor(() => h.server.refused >= 6, 5_000, "six refused attempts");
  assert.deepEqual(delays().slice(0, 5), [10, 20, 40, 80, 80]);
  assert.equal(h.status.feed(EXCHANGE).state, "disconnected");
  assert.equal(h.session.opens, 0, "onOpen only for connections that opened");
  assert.equal(h.session.closes, 0);

  h.server.accept();
  await waitFor(() => h.server.latest?.received.length === 1, 5_000, "recovered");
  h.server.latest!.send(tradeFrame(1));
  await waitFor(() => h.status.feed(EXCHANGE).state === "live");
  const before = delays().length;
  // Up longer than stable_after_ms: the next delay is the first one again.
  const connectedAt = h.status.feed(EXCHANGE).connected_at!;
  await waitFor(() => Date.now() - connectedAt > 150, 5_000, "stable connection");
  h.server.latest!.drop();
  await waitFor(() => delays().length > before);
  assert.equal(delays()[before], 10);
  assert.ok(h.status.feed(EXCHANGE).reconnects >= 7);
});

Deno.test("a frame whose error quotes 1.2 MB is dead-lettered within the NATS payload limit; the feed carries on", async () => {
  await using h = await harness();
  const marker = crypto.randomUUID();
  const dlq = await collect<DeadLetter>(h.nats, dlqSubject(EXCHANGE));
  try {
    h.start();
    await waitFor(() => h.server.latest?.received.length === 1);
    const socket = h.server.latest!;
    const huge = `${marker}${"A".repeat(1_200_000)}`;
    const frame = JSON.stringify({ unknown: huge });
    socket.send(frame);
    socket.send(tradeFrame(1));
    await waitFor(() => allEvents(h.trades.messages).length === 1, 5_000, "the trade after it");
    const mine = () => dlq.messages.filter((letter) => letter.frame?.includes(marker));
    await waitFor(() => mine().length === 1, 5_000, "its dead letter");
    const letter = mine()[0]!;
    assert.equal(letter.reason, "malformed");
    assert.ok(
      letter.detail.startsWith(`Unknown event type "${marker}AAA`),
      letter.detail.slice(0, 80),
    );
    assert.ok(letter.detail.length < DEAD_LETTER_DETAIL_MAX + 200, `${letter.detail.length}`);
    const detailLength = `Unknown event type "${huge}"`.length;
    assert.ok(
      letter.detail.endsWith(
        `… (detail cut from ${detailLength} characters) (frame cut from ${frame.length} characters)`,
      ),
    );
    assert.equal(letter.frame!.length, 65_536);
    const status = h.status.feed(EXCHANGE);
    assert.deepEqual([status.state, status.malformed, status.events], ["live", 1, 1]);
  } finally {
    dlq.sub.unsubscribe();
  }
});

Deno.test("an event whose symbol is not canonical (its subject would be invalid) is dead-lettered with its frame; the rest is published", async () => {
  await using h = await harness();
  const dlq = await collect<DeadLetter>(h.nats, dlqSubject(EXCHANGE));
  try {
    h.start();
    await waitFor(() => h.server.latest?.received.length === 1);
    const frame = JSON.stringify({ symbols: ["BAD SYM", h.session.symbol, "X.*", ""] });
    h.server.latest!.send(frame);
    await waitFor(() => allEvents(h.trades.messages).length === 1, 5_000, "the good event");
    await waitFor(() => dlq.messages.some((l) => l.frame === frame), 5_000, "the dead letter");
    const letter = dlq.messages.find((l) => l.frame === frame)!;
    assert.equal(letter.reason, "bad_symbol");
    assert.equal(letter.detail, 'Not a canonical symbol: "BAD SYM", "X.*", ""');
    const status = h.status.feed(EXCHANGE);
    assert.deepEqual([status.state, status.malformed, status.events], ["live", 1, 1]);
  } finally {
    dlq.sub.unsubscribe();
  }
});

Deno.test("a venue that accepts the connection but never answers the handshake is left after stale_after_ms", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) conns.push(conn);
  })().catch(() => {});
  const nats = await connect({ servers: NATS_URL });
  const status = new MarketStatus();
  const session = new TestSession(
    () => `ws://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/feed`,
    uniqueSymbol(),
  );
  const controller = new AbortController();
  const child = feedActor(session, {
    nats,
    status,
    options: { stale_after_ms: 300, reconnect_initial_ms: 20, reconnect_max_ms: 50 },
  }).start(controller.signal);
  try {
    await waitFor(() => conns.length >= 2, 5_000, "a second connection");
    const feed = status.feed(EXCHANGE);
    assert.ok(feed.reconnects >= 1);
    assert.equal(feed.last_error, "No WebSocket handshake within 300 ms");
    assert.equal(session.opens, 0);
  } finally {
    controller.abort();
    await deadline(child.done, 5_000, "feed stop");
    for (const conn of conns) conn.close();
    listener.close();
    await accepting;
    await nats.close();
  }
});

Deno.test("fitLetter cuts a dead letter's frame until it fits the payload limit, then leaves it out", () => {
  const letter: DeadLetter = {
    exchange: EXCHANGE,
    stage: "feed",
    reason: "malformed",
    detail: "Frame is not JSON",
    frame: "\u0001".repeat(10_000), // 6 bytes each in JSON
    at_us: 1,
  };
  const fits = (limit: number) => {
    const bytes = fitLetter(letter, limit);
    assert.ok(bytes.length <= limit, `${bytes.length} > ${limit}`);
    return decodeJson<DeadLetter>(bytes);
  };
  assert.deepEqual(fits(100_000), letter);
  const cut = fits(20_000);
  assert.ok(letter.frame!.startsWith(cut.frame!) && cut.frame!.length > 1_000);
  assert.match(
    cut.detail,
    /^Frame is not JSON \(frame cut to \d+ of 10000 characters to fit NATS\)$/,
  );
  const short = fits(250);
  assert.ok(short.frame!.length < 20);
  const none = fits(150);
  assert.equal(none.frame, undefined);
  assert.equal(none.detail, "Frame is not JSON (frame left out: too large for NATS)");
});

Deno.test("the watchdog reconnects a silent connection and leaves a busy one alone", async () => {
  await using h = await harness();
  h.start({ options: { stale_after_ms: 300 } });
  await waitFor(() => h.server.latest?.received.length === 1);
  const socket = h.server.latest!;
  let id = 0;
  const sender = setInterval(() => socket.send(tradeFrame(++id)), 40);
  try {
    await waitFor(() => h.status.feed(EXCHANGE).frames >= 15, 5_000, "frames for ~600 ms");
    assert.equal(h.server.connections, 1, "frames keep the connection");
  } finally {
    clearInterval(sender);
  }
  await waitFor(() => h.server.connections === 2, 5_000, "stale reconnect");
  assert.equal(socket.closeInfo?.code, RECONNECT_CLOSE_CODE);
  assert.equal(h.status.feed(EXCHANGE).reconnects, 1);
  assert.ok(h.lines.some((line) => line.message === "feed is stale; reconnecting"));
  // A connection that never sends a frame is stale as well.
  await waitFor(() => h.server.connections === 3, 5_000, "second stale reconnect");
});

Deno.test("io.reconnect with resync counts a resync and drops the rest of the connection's frames", async () => {
  await using h = await harness();
  h.start();
  await waitFor(() => h.server.latest?.received.length === 1);
  const first = h.server.latest!;
  first.send(JSON.stringify({ cmd: "resynced" }));
  first.send(JSON.stringify({ cmd: "resync" }));
  first.send(tradeFrame(99)); // after the reconnect request: ignored
  await waitFor(() => h.server.connections === 2 && h.server.latest!.received.length === 1);
  const status = h.status.feed(EXCHANGE);
  assert.equal(status.resyncs, 2);
  assert.equal(status.reconnects, 1);
  assert.equal(status.frames, 2);
  assert.equal(first.closeInfo?.code, RECONNECT_CLOSE_CODE);
  assert.equal(h.session.closes, 1);
  h.server.latest!.send(tradeFrame(1));
  await waitFor(() => allEvents(h.trades.messages).length === 1);
  assert.equal(allEvents(h.trades.messages)[0]!.trade_id, "1");
});

Deno.test("stop closes the socket with 1000, flushes the pending batch and resolves done", async () => {
  await using h = await harness();
  const feed = h.start({ options: { publish_batch_ms: 60_000 } });
  await waitFor(() => h.server.latest?.received.length === 1);
  for (let id = 1; id <= 3; id++) h.server.latest!.send(tradeFrame(id));
  await waitFor(() => h.status.feed(EXCHANGE).frames === 3);
  assert.equal(h.trades.messages.length, 0, "held in the batch window");
  await feed.stop();
  await h.nats.flush();
  await waitFor(() => h.trades.messages.length === 1);
  assert.deepEqual(h.trades.messages[0]!.map((event) => event.trade_id), ["1", "2", "3"]);
  await h.server.latest!.closed;
  assert.equal(h.server.latest!.closeInfo?.code, 1000);
  assert.equal(h.session.closes, 1);
  const status = h.status.feed(EXCHANGE);
  assert.equal(status.state, "stopped");
  assert.equal(status.events, 3);
});

Deno.test("onTick runs while connected and refreshes the venue figures", async () => {
  await using h = await harness();
  h.start({ options: { tick_ms: 20 } });
  await waitFor(() => h.session.ticks >= 3, 5_000, "ticks");
  assert.deepEqual(h.status.feed(EXCHANGE).venue, { opens: 1, closes: 0 });
});

Deno.test("io.fetchText reads REST bodies and io.emit publishes events made from them", async () => {
  await using h = await harness();
  h.server.hooks = {
    http: (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/snapshot") return Response.json({ id: 42 });
      return new Response("nope", { status: 429, headers: { "Retry-After": "7" } });
    },
  };
  const errors: unknown[] = [];
  h.session.onOpenHook = async (io) => {
    const body = JSON.parse(await io.fetchText(`${h.server.httpUrl}/snapshot`));
    io.emit([trade(h.session.symbol, body.id, "3", "4", Date.now() * 1000)]);
    await io.fetchText(`${h.server.httpUrl}/limited`).catch((error) => errors.push(error));
  };
  h.start();
  await waitFor(() => allEvents(h.trades.messages).length === 1);
  assert.equal(allEvents(h.trades.messages)[0]!.trade_id, "42");
  await waitFor(() => errors.length === 1);
  assert.ok(errors[0] instanceof HttpStatusError);
  assert.equal((errors[0] as HttpStatusError).status, 429);
  assert.equal((errors[0] as HttpStatusError).retryAfterMs, 7_000, "the venue's Retry-After");
});

Deno.test("parseRetryAfter reads delay-seconds and HTTP dates", () => {
  const now = Date.parse("2015-10-21T07:27:00Z");
  assert.equal(parseRetryAfter("120", now), 120_000);
  assert.equal(parseRetryAfter(" 0 ", now), 0);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", now), 60_000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:26:00 GMT", now), 0, "a date past");
  assert.equal(
    parseRetryAfter("Sat, 29 Feb 2020 23:59:60 GMT", now),
    Date.parse("2020-03-01T00:00:00Z") - now,
    "a leap day and second",
  );
  // Any number of digits is delay-seconds (RFC 7231); bounding the pause is the caller's business.
  assert.equal(parseRetryAfter("12345678901", now), 12_345_678_901_000);
  assert.equal(parseRetryAfter("9".repeat(400), now), Number.MAX_SAFE_INTEGER);
  for (const bad of [null, "", "soon", "-5", "1.5", "+5", "5 s"]) {
    assert.equal(parseRetryAfter(bad, now), null, String(bad));
  }
  assert.equal(new HttpStatusError("http://x/", 503, "").retryAfterMs, null);
});

Deno.test("parseRetryAfter refuses what is neither delay-seconds nor an IMF-fixdate, instead of reading it leniently", () => {
  // Date.parse read "May 2" as 2001-05-02 — a date past, so no pause at all after a 429.
  const now = Date.parse("2026-12-07T00:00:00Z");
  for (
    const bad of [
      "May 2",
      "Dec 2026",
      "2026-12-07T00:01:00Z",
      "Mon, 07 Dec 2026 00:01:00 UTC",
      "mon, 07 dec 2026 00:01:00 GMT",
      "Mon, 7 Dec 2026 00:01:00 GMT",
      "Mon, 07 Dec 2026 00:01 GMT",
      "Mon, 07 Dec 2026 24:00:00 GMT",
      "Wed, 31 Feb 2027 00:00:00 GMT",
      "Mon, 00 Dec 2026 00:01:00 GMT",
      "Monday, 07-Dec-26 00:01:00 GMT", // RFC 850, obsolete
      "Mon Dec  7 00:01:00 2026", // asctime, obsolete
      "Mon, 07 Dec 2026 00:01:00 GMT tomorrow",
    ]
  ) {
    assert.equal(parseRetryAfter(bad, now), null, bad);
  }
  assert.equal(parseRetryAfter("Mon, 07 Dec 2026 00:01:00 GMT", now), 60_000);
});

Deno.test("a failing onOpen is reported and the feed reconnects", async () => {
  await using h = await harness();
  let fail = true;
  h.session.onOpenHook = () => {
    if (fail) {
      fail = false;
      return Promise.reject(new Error("auth refused"));
    }
  };
  h.start();
  await waitFor(() => h.server.connections === 2 && h.server.latest!.received.length === 1);
  assert.equal(h.status.feed(EXCHANGE).last_error, "Subscribing failed: auth refused");
  assert.equal(h.session.closes, 1);
});

Deno.test("a runtime failure (the sink throws) crashes the feed instead of hiding", async () => {
  await using h = await harness();
  const feed = h.start({
    sink: () => {
      throw new Error("sink broke");
    },
    options: { publish_batch_ms: 0 },
  });
  await waitFor(() => h.server.latest?.received.length === 1);
  h.server.latest!.send(tradeFrame(1));
  await assert.rejects(deadline(feed.done, 5_000), /sink broke/);
  assert.equal(h.status.feed(EXCHANGE).state, "stopped");
  await h.server.latest!.closed;
});

Deno.test("a feed runs under a supervisor and stops with it", async () => {
  await using h = await harness();
  const { log } = memoryLogger();
  const root = await startRoot({ name: "root" }, [
    feedActor(h.session, { nats: h.nats, status: h.status, log, options: { publish_batch_ms: 0 } }),
  ]);
  try {
    await waitFor(() => h.server.latest?.received.length === 1);
    h.server.latest!.send(tradeFrame(7));
    await waitFor(() => allEvents(h.trades.messages).length === 1);
    assert.ok(root.inspect().some((row) => row.name === "root/feed-binance"));
  } finally {
    await root.stop();
  }
  assert.equal(h.status.feed(EXCHANGE).state, "stopped");
});

Deno.test("FeedOutput coalesces per subject and keeps each subject's order", () => {
  const status = new MarketStatus().feed(EXCHANGE);
  const batches: Array<[string, string[]]> = [];
  const output = new FeedOutput(EXCHANGE, status, {
    sink: (subject, events) =>
      batches.push([subject, events.map((event) => (event as TradeEvent).trade_id)]),
    deadLetters: () => {},
    batchMs: 1_000,
    batchMax: 3,
  });
  const a = (id: number) => trade("AAA-USD", id, "1", "1", 2_000);
  const b = (id: number) => trade("BBB-USD", id, "1", "1", 2_000);
  output.push([a(1), b(1), a(2), a(3), b(2), a(4)]);
  assert.deepEqual(batches, [["md.trade.binance.AAA-USD", ["1", "2", "3"]]]);
  output.close();
  assert.deepEqual(batches, [
    ["md.trade.binance.AAA-USD", ["1", "2", "3"]],
    ["md.trade.binance.AAA-USD", ["4"]],
    ["md.trade.binance.BBB-USD", ["1", "2"]],
  ]);
  assert.equal(status.events, 6);
  assert.equal(status.lag_ms, 1);
  assert.throws(() => new FeedOutput(EXCHANGE, status, { sink: () => {} }), TypeError);
});

Deno.test("feedActor refuses bad settings when the spec is made", () => {
  const session = new TestSession(() => "ws://127.0.0.1:1", "A-B");
  const status = new MarketStatus();
  const sinks = { sink: () => {}, deadLetters: () => {} };
  assert.throws(() => feedActor(session, { status }), TypeError);
  assert.throws(
    () => feedActor(session, { status, ...sinks, options: { stale_after_ms: 0 } }),
    RangeError,
  );
  assert.throws(
    () => feedActor(session, { status, ...sinks, options: { publish_batch_max: 0 } }),
    RangeError,
  );
  assert.equal(feedActor(session, { status, ...sinks }).name, "feed-binance");
});

Deno.test("batches above the NATS payload limit are split; an event alone above it is dead-lettered", async () => {
  const nats = await connect({ servers: NATS_URL });
  const symbol = uniqueSymbol();
  const subject = mdSubject("book", EXCHANGE, symbol);
  const books = await collect<MarketEvent[]>(nats, subject);
  const dlq = await collect<DeadLetter>(nats, dlqSubject(EXCHANGE));
  try {
    const limit = nats.info!.max_payload;
    const book = (id: number, levels: number): MarketEvent => ({
      kind: "book",
      exchange: EXCHANGE,
      symbol,
      venue_symbol: symbol,
      ts_exchange: 1_000,
      ts_local: 2_000,
      action: "snapshot",
      bids: Array.from({ length: levels }, (_, i) => [`${id}.${i}`, "1.00000000"]),
      asks: [],
      sequence: id,
    });
    const status = new MarketStatus().feed(EXCHANGE);
    const output = new FeedOutput(EXCHANGE, status, { nats, batchMs: 0, batchMax: 500 });
    const perEvent = Math.ceil(limit / 10 / 30); // ~1/10 of the limit per event
    output.emit(Array.from({ length: 40 }, (_, id) => book(id, perEvent)));
    await nats.flush();
    await waitFor(() => books.messages.flat().length === 40, 5_000, "40 book events");
    assert.ok(books.messages.length >= 4, `split into ${books.messages.length} messages`);
    assert.deepEqual(
      books.messages.flat().map((event) => (event as { sequence: number }).sequence),
      Array.from({ length: 40 }, (_, id) => id),
    );
    output.emit([book(99, Math.ceil(limit / 20))]); // ~1.5 × the limit
    await nats.flush();
    await waitFor(
      () =>
        dlq.messages.some((letter) =>
          letter.reason === "oversize" && letter.detail.includes(subject)
        ),
      5_000,
      "oversize dead letter",
    );
    assert.equal(status.events, 40);
    assert.equal(status.malformed, 1);
    output.close();
  } finally {
    books.sub.unsubscribe();
    dlq.sub.unsubscribe();
    await nats.close();
  }
});

Deno.test("deliveryLagMs counts the batch's newest timely event, not bars or snapshots held as of receipt", () => {
  const at = (kind: string, ts_exchange: number, ts_local: number, extra = {}) =>
    ({ kind, exchange: "alpaca", symbol: "AAPL", ts_exchange, ts_local, ...extra }) as never;
  const hour = 3_600_000_000;
  // Coinbase lists a frame's trades newest first: the newest, not the last, tells the lag.
  assert.equal(deliveryLagMs([at("trade", 9_000, 12_000), at("trade", 7_000, 12_000)]), 3);
  // A running daily bar is stamped with its start: hours "late" while on time.
  assert.equal(
    deliveryLagMs([at("trade", 20 * hour, 20 * hour + 5_000), at("bar", 0, 20 * hour)]),
    5,
  );
  assert.equal(
    deliveryLagMs([at("book", 1_000, 9_000_000, { as_of_receipt: true })]),
    null,
  );
  assert.equal(deliveryLagMs([]), null);
});
