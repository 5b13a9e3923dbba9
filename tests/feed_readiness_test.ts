/**
 * The feed runtime (`actors/feed.ts`) and a session's readiness
 * (`VenueSession.readiness`, `venues/session.ts`): the feed is `live` only
 * once the session says the connection is ready, a `refused` connection is
 * closed by the feed and retried on a growing backoff, and the backoff starts
 * over only after a connection that was ready — not after mere uptime. Also
 * `io.fetchText`'s own deadline (`rest_timeout_ms`).
 *
 * A loopback WebSocket server and a scripted session; no NATS (the sinks are
 * callbacks).
 */
import assert from "node:assert/strict";
import type { FeedDeps } from "../actors/feed.ts";
import { memoryLogger } from "../lib/log.ts";
import type { MarketEvent } from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import type { SessionIO, SessionReadiness, VenueSession } from "../venues/session.ts";
import { startWsServer } from "./fakes/ws_server.ts";
import { runFeed } from "./_feed_harness.ts";
import { deadline, waitFor } from "./_helpers.ts";

/**
 * A session whose readiness the venue scripts: `{"ready":true}` makes the
 * connection ready, `{"refuse":"<why>"}` reports `why` and refuses it; any
 * other frame is data. Without `tellsReadiness` it has no `readiness`.
 */
class ScriptedSession implements VenueSession {
  readonly exchange = "coinbase" as const;
  readonly #url: string;
  #readiness: SessionReadiness = "pending";
  io: SessionIO | null = null;
  declare readiness?: () => SessionReadiness;

  constructor(url: string, tellsReadiness = true) {
    this.#url = url;
    if (tellsReadiness) this.readiness = () => this.#readiness;
  }

  url(): string {
    return this.#url;
  }

  onOpen(io: SessionIO): void {
    this.io = io;
    this.#readiness = "pending";
    io.send("hello");
  }

  onFrame(frame: string, _receivedUs: number, io: SessionIO): MarketEvent[] {
    const message = JSON.parse(frame) as { ready?: boolean; refuse?: string };
    if (message.ready) this.#readiness = "ready";
    if (message.refuse !== undefined) {
      io.error(message.refuse);
      this.#readiness = "refused";
    }
    return [];
  }

  onClose(): void {
    this.#readiness = "pending";
  }

  status(): Record<string, unknown> {
    return {};
  }
}

function feedDeps(overrides: Partial<FeedDeps> = {}): FeedDeps & { status: MarketStatus } {
  return {
    status: new MarketStatus(),
    sink: () => {},
    deadLetters: () => {},
    random: () => 0.5, // no jitter
    ...overrides,
  };
}

/** The delays the feed logged before each reconnect, in order. */
function delays(lines: Array<Record<string, unknown>>): number[] {
  return lines.filter((line) => line.message === "feed reconnecting").map((line) =>
    line.delay_ms as number
  );
}

Deno.test("a session that tells its readiness makes the feed live once ready, not on the first frame", async () => {
  await using venue = await startWsServer();
  const session = new ScriptedSession(venue.url);
  const deps = feedDeps({ options: { stale_after_ms: 20_000, tick_ms: 20 } });
  const stop = runFeed(session, deps);
  try {
    const status = deps.status.feed("coinbase");
    await waitFor(() => venue.latest?.received.length === 1, 5_000, "the session's hello");
    venue.latest!.send('{"greeting":"connected"}');
    venue.latest!.send('{"data":1}');
    await waitFor(() => status.frames === 2, 5_000, "two frames");
    assert.equal(status.state, "subscribing", "frames before the session is ready");
    venue.latest!.send('{"ready":true}');
    await waitFor(() => status.state === "live", 5_000, "live once ready");
  } finally {
    await stop();
  }
});

Deno.test("a session without readiness is live on its first frame, as before", async () => {
  await using venue = await startWsServer();
  const session = new ScriptedSession(venue.url, false);
  const deps = feedDeps();
  const stop = runFeed(session, deps);
  try {
    const status = deps.status.feed("coinbase");
    await waitFor(() => venue.latest?.received.length === 1, 5_000, "the session's hello");
    assert.equal(status.state, "subscribing");
    venue.latest!.send('{"data":1}');
    await waitFor(() => status.state === "live", 5_000, "live on the first frame");
  } finally {
    await stop();
  }
});

Deno.test("a refused connection is closed by the feed, shown refused with the venue's reason, and retried on a growing backoff", async () => {
  await using venue = await startWsServer({
    // The venue refuses every connection and leaves it open, as Alpaca may.
    onMessage: (socket) => socket.send('{"refuse":"Venue error 409: insufficient subscription"}'),
  });
  const session = new ScriptedSession(venue.url);
  const { log, lines } = memoryLogger();
  const deps = feedDeps({
    log,
    options: { stale_after_ms: 60_000, reconnect_initial_ms: 40, reconnect_max_ms: 320 },
  });
  const status = deps.status.feed("coinbase");
  const states = new Set<string>();
  const sampler = setInterval(() => states.add(status.state), 2);
  const stop = runFeed(session, deps);
  try {
    await waitFor(() => venue.connections >= 5, 10_000, "five refused connections");
    // Each closed by the feed (stale_after_ms is a minute away), with its reconnect code.
    for (const socket of venue.sockets.slice(0, 4)) {
      await deadline(socket.closed, 2_000, `connection ${socket.id} closed`);
      assert.equal(socket.closeInfo?.code, 4000);
    }
    await waitFor(() => status.state === "refused", 2_000, "refused between attempts");
    assert.equal(status.last_error, "Venue error 409: insufficient subscription");
    assert.deepEqual(delays(lines).slice(0, 4), [40, 80, 160, 320], "the backoff grows");
    assert.ok(!states.has("live"), `states seen: ${[...states].join(", ")}`);
  } finally {
    clearInterval(sampler);
    await stop();
  }
});

Deno.test("the backoff starts over only after a connection that was ready stayed so for stable_after_ms, not after uptime", async () => {
  let answerReady = false;
  await using venue = await startWsServer({
    onMessage: (socket) => {
      if (answerReady) socket.send('{"ready":true}');
    },
  });
  const session = new ScriptedSession(venue.url);
  const { log, lines } = memoryLogger();
  const deps = feedDeps({
    log,
    options: {
      stale_after_ms: 60_000,
      reconnect_initial_ms: 20,
      reconnect_max_ms: 1_000,
      stable_after_ms: 100,
    },
  });
  const stop = runFeed(session, deps);
  try {
    // Four connections, each open three times stable_after_ms, none ever ready.
    for (let n = 1; n <= 4; n++) {
      await waitFor(() => venue.connections === n, 5_000, `connection ${n}`);
      const socket = venue.latest!;
      await waitFor(() => socket.received.length === 1, 5_000, `hello on connection ${n}`);
      await new Promise((resolve) => setTimeout(resolve, 300)); // the uptime under test
      socket.drop();
    }
    await waitFor(() => delays(lines).length === 4, 5_000, "four reconnects");
    assert.deepEqual(delays(lines), [20, 40, 80, 160], "uptime without readiness resets nothing");

    // A connection ready for longer than stable_after_ms: the next delay is the first again.
    answerReady = true;
    await waitFor(() => venue.connections === 5, 5_000, "connection 5");
    await waitFor(() => deps.status.feed("coinbase").state === "live", 5_000, "ready");
    await new Promise((resolve) => setTimeout(resolve, 300));
    venue.latest!.drop();
    await waitFor(() => delays(lines).length === 5, 5_000, "fifth reconnect");
    assert.equal(delays(lines)[4], 20);
  } finally {
    await stop();
  }
});

Deno.test("io.fetchText gives up a REST request not answered within rest_timeout_ms, and aborts it", async () => {
  await using venue = await startWsServer();
  const session = new ScriptedSession(venue.url);
  const signals: AbortSignal[] = [];
  const deps = feedDeps({
    options: { rest_timeout_ms: 200 },
    // Accepted, never answered; the first ignores its signal, the others honour it.
    fetchText: (_url, signal) => {
      signals.push(signal);
      return new Promise<string>((_, reject) => {
        if (signals.length > 1) signal.addEventListener("abort", () => reject(signal.reason));
      });
    },
  });
  const stop = runFeed(session, deps);
  try {
    await waitFor(() => session.io !== null, 5_000, "open");
    const io = session.io!;
    for (const url of ["http://venue.invalid/ignores", "http://venue.invalid/honours"]) {
      const started = Date.now();
      const error = await deadline(io.fetchText(url).then(() => null, (e) => e), 5_000, url);
      const tookMs = Date.now() - started;
      assert.ok(error instanceof DOMException, `${url}: ${error}`);
      assert.equal(error.name, "TimeoutError");
      assert.equal(error.message, `GET ${url} got no answer within 200 ms`);
      assert.ok(tookMs >= 190 && tookMs < 2_000, `${url}: gave up after ${tookMs} ms`);
      assert.ok(signals.at(-1)!.aborted, "the request is aborted");
    }
    // The connection is unaffected.
    assert.equal(deps.status.feed("coinbase").state, "subscribing");
    assert.equal(venue.connections, 1);
  } finally {
    await stop();
  }
});

Deno.test("io.fetchText answered in time resolves with the body, whatever rest_timeout_ms", async () => {
  await using venue = await startWsServer({
    http: () => new Response("snapshot body"),
  });
  const session = new ScriptedSession(venue.url);
  const deps = feedDeps({ options: { rest_timeout_ms: 5_000 } });
  const stop = runFeed(session, deps);
  try {
    await waitFor(() => session.io !== null, 5_000, "open");
    assert.equal(await session.io!.fetchText(`${venue.httpUrl}/depth`), "snapshot body");
  } finally {
    await stop();
  }
});
