/**
 * An Alpaca feed refused at authentication (409 insufficient subscription,
 * 402 auth failed…) is never `live`: the feed is `live` only once the
 * session is authenticated and subscribed (`AlpacaSession.readiness`), and a
 * refused connection is closed by the feed itself — Alpaca may leave it open,
 * and outside the US equity session the watchdog waits — shown `refused` with
 * Alpaca's message in `last_error`, and retried on a backoff that keeps
 * growing. Health is degraded meanwhile.
 *
 * Alpaca's stream doc: "Any attempt to access a data feed not available for
 * your subscription will result in an error during authentication" —
 * `[{"T":"error","code":409,"msg":"insufficient subscription"}]`.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { alpacaSession } from "../venues/alpaca/session.ts";
import type { SessionIO } from "../venues/session.ts";
import { nullLogger } from "../lib/log.ts";
import { type FakeWsServer, startWsServer } from "./fakes/ws_server.ts";
import { startTestFeed } from "./_feed_harness.ts";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { clockAt, deadline, waitFor } from "./_helpers.ts";

const NATS_URL = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";
const REFUSAL = '[{"T":"error","code":409,"msg":"insufficient subscription"}]';
const REFUSAL_ERROR = "Alpaca error 409: insufficient subscription";

/** A `sip` stream of an account without the subscription, unless `admit` is set. */
interface SipVenue extends AsyncDisposable {
  ws: FakeWsServer;
  /** When each connection opened (ms, real time). */
  openedAt: number[];
  /** From now on, authenticate and subscribe as for a paying account. */
  admit(): void;
  stop(): Promise<void>;
}

/**
 * A fake Alpaca `sip` stream that greets, answers the auth with 409 and
 * leaves the connection open (no close, no more frames) — until `admit()`:
 * then `authenticated` and the subscription acknowledged.
 */
async function startSipVenue(): Promise<SipVenue> {
  let admitted = false;
  const openedAt: number[] = [];
  const ws = await startWsServer({
    onOpen: (socket) => {
      openedAt.push(Date.now());
      socket.send('[{"T":"success","msg":"connected"}]');
    },
    onMessage: (socket, text) => {
      const message = JSON.parse(text);
      if (message.action === "auth") {
        socket.send(admitted ? '[{"T":"success","msg":"authenticated"}]' : REFUSAL);
      } else if (message.action === "subscribe" && admitted) {
        socket.send(JSON.stringify([{
          T: "subscription",
          trades: message.trades ?? [],
          quotes: message.quotes ?? [],
          bars: message.bars ?? [],
        }]));
      }
    },
  });
  return {
    ws,
    openedAt,
    admit: () => void (admitted = true),
    stop: () => ws.stop(),
    [Symbol.asyncDispose]: () => ws.stop(),
  };
}

function sipSession(venue: SipVenue) {
  return alpacaSession({
    ws_url: `${venue.ws.url}/v2`,
    feed: "sip",
    key_id: "AKTEST",
    secret_key: "basic-plan-secret",
    symbols: ["AAPL"],
    channels: ["trades", "quotes", "bars"],
  });
}

/** Records which feed states were seen, every few ms, until stopped. */
function sampleStates(read: () => string): { seen: Set<string>; stop(): void } {
  const seen = new Set<string>([read()]);
  const timer = setInterval(() => seen.add(read()), 2);
  return { seen, stop: () => clearInterval(timer) };
}

function recordingIO(): SessionIO {
  return {
    send: () => {},
    reconnect: () => {},
    emit: () => {},
    resynced: () => {},
    error: () => {},
    fetchText: () => Promise.reject(new Error("no REST")),
    nowUs: () => Date.now() * 1000,
    signal: new AbortController().signal,
    log: nullLogger,
  };
}

Deno.test("the Alpaca session is ready only once authenticated and subscribed, and refused after a refusal code", () => {
  const config = {
    ws_url: "wss://stream.data.alpaca.markets/v2",
    feed: "iex" as const,
    key_id: "AKTEST",
    secret_key: "secret",
    symbols: ["AAPL"],
    channels: ["trades" as const],
  };
  const io = recordingIO();
  const session = alpacaSession(config);
  session.onOpen(io);
  assert.equal(session.readiness(), "pending");
  session.onFrame('[{"T":"success","msg":"connected"}]', 1, io);
  assert.equal(session.readiness(), "pending", "the greeting comes before any check of the key");
  session.onFrame('[{"T":"success","msg":"authenticated"}]', 1, io);
  assert.equal(session.readiness(), "pending", "authenticated, not yet subscribed");
  session.onFrame('[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]', 1, io);
  assert.equal(session.readiness(), "ready");
  session.onClose();
  assert.equal(session.readiness(), "pending", "a new connection starts over");

  // A subscription message without authentication makes nothing ready.
  session.onOpen(io);
  session.onFrame('[{"T":"success","msg":"connected"}]', 1, io);
  session.onFrame('[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]', 1, io);
  assert.equal(session.readiness(), "pending");

  for (const code of [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 500]) {
    const each = alpacaSession(config);
    each.onOpen(io);
    each.onFrame('[{"T":"success","msg":"connected"}]', 1, io);
    each.onFrame(`[{"T":"error","code":${code},"msg":"m"}]`, 1, io);
    const refused = [402, 406, 408, 409].includes(code);
    assert.equal(each.readiness(), refused ? "refused" : "pending", `code ${code}`);
  }
  // After a refusal, a late authenticated or subscription does not make it ready.
  const late = alpacaSession(config);
  late.onOpen(io);
  late.onFrame('[{"T":"success","msg":"connected"}]', 1, io);
  late.onFrame(REFUSAL, 1, io);
  late.onFrame('[{"T":"success","msg":"authenticated"}]', 1, io);
  late.onFrame('[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]', 1, io);
  assert.equal(late.readiness(), "refused");

  const noKeys = alpacaSession({ ...config, key_id: "" });
  noKeys.onOpen(io);
  assert.equal(noKeys.readiness(), "refused");
});

Deno.test("an Alpaca feed refused with 409 on a connection left open is never live: the feed closes it and shows the refusal", async () => {
  await using venue = await startSipVenue();
  const nc = await connect({ servers: NATS_URL });
  // A Wednesday 11:00 ET, the regular session open; Alpaca's default stale_after_ms.
  const feed = startTestFeed(sipSession(venue), nc, venue, {
    staleAfterMs: 60_000,
    reconnectInitialMs: 200,
    reconnectMaxMs: 1_000,
    clock: clockAt("2026-12-09T16:00:00Z"),
  });
  const states = sampleStates(() => feed.status.state);
  try {
    await waitFor(() => venue.ws.sockets.length >= 1, 5_000, "first connection");
    // Closed by the feed, long before stale_after_ms, with its reconnect code.
    await deadline(venue.ws.sockets[0]!.closed, 2_000, "the refused connection closed");
    assert.equal(venue.ws.sockets[0]!.closeInfo?.code, 4000);
    assert.deepEqual(venue.ws.sockets[0]!.received.map((text) => JSON.parse(text).action), [
      "auth",
    ]);
    await waitFor(() => feed.status.state === "refused", 2_000, "the feed shown refused");
    assert.equal(feed.status.last_error, REFUSAL_ERROR);
    assert.equal(feed.status.connected_at, null);
    assert.ok(!states.seen.has("live"), `states seen: ${[...states.seen].join(", ")}`);
  } finally {
    states.stop();
    await feed.close();
  }
});

Deno.test("outside the US equity session a refused Alpaca connection left open is closed at once and retried on a growing backoff", async () => {
  await using venue = await startSipVenue();
  const nc = await connect({ servers: NATS_URL });
  // Saturday noon in New York: the watchdog waits while the market is quiet.
  const feed = startTestFeed(sipSession(venue), nc, venue, {
    staleAfterMs: 200,
    reconnectInitialMs: 100,
    reconnectMaxMs: 400,
    clock: clockAt("2026-12-05T17:00:00Z"),
  });
  const states = sampleStates(() => feed.status.state);
  try {
    await waitFor(() => venue.openedAt.length >= 5, 10_000, "five attempts");
    assert.equal(feed.status.quiet, "US equity market closed: weekend (Saturday)");
    for (const socket of venue.ws.sockets.slice(0, 4)) {
      assert.equal(socket.closeInfo?.code, 4000, `connection ${socket.id} closed by the feed`);
    }
    // 100 ms doubling to 400 ms, ±20 % jitter: the backoff grows and is never started over.
    const gaps = venue.openedAt.slice(1, 5).map((at, i) => at - venue.openedAt[i]!);
    [100, 200, 400, 400].forEach((ms, i) =>
      assert.ok(gaps[i]! >= ms * 0.8, `gap ${i}: ${gaps[i]} ms < ${ms * 0.8} ms (${gaps})`)
    );
    assert.equal(feed.status.last_error, REFUSAL_ERROR);
    assert.ok(!states.seen.has("live"), `states seen: ${[...states.seen].join(", ")}`);
    assert.ok(states.seen.has("refused"));

    // Once the account may use the feed, the next attempt gets in and the feed is live.
    venue.admit();
    await waitFor(() => feed.status.state === "live", 5_000, "live once subscribed");
  } finally {
    states.stop();
    await feed.close();
  }
});

Deno.test("health is degraded naming the Alpaca feed while Alpaca refuses it, and ok once it gets in", async () => {
  await using nats = await startNatsServer();
  await using venue = await startSipVenue();
  await using engine = await startEngineProcess({
    NATS_URL: nats.url,
    TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "true",
    TRADEWIRE_EXCHANGES__ALPACA__WS_URL: `${venue.ws.url}/v2`,
    TRADEWIRE_EXCHANGES__ALPACA__FEED: "sip",
    TRADEWIRE_EXCHANGES__ALPACA__KEY_ID: "AKTEST",
    TRADEWIRE_EXCHANGES__ALPACA__SECRET_KEY: "basic-plan-secret",
    TRADEWIRE_EXCHANGES__ALPACA__SYMBOLS: "AAPL",
    TRADEWIRE_EXCHANGES__ALPACA__RECONNECT_INITIAL_MS: "100",
    TRADEWIRE_EXCHANGES__ALPACA__RECONNECT_MAX_MS: "300",
    // Ten minutes: whatever ends a refused connection here, it is not the watchdog.
    TRADEWIRE_EXCHANGES__ALPACA__STALE_AFTER_MS: "600000",
  });
  type Feed = { exchange: string; state: string; last_error: string | null };
  const alpaca = (body: Record<string, unknown>) =>
    ((body.market as { feeds: Feed[] } | undefined)?.feeds ?? []).find((f) =>
      f.exchange === "alpaca"
    );
  const degraded = await waitForJson(
    engine,
    "/api/health/detailed",
    (b, status) => status === 503 && venue.openedAt.length >= 2 && alpaca(b) !== undefined,
    30_000,
  );
  const problems = degraded.problems as string[];
  assert.ok(
    problems.some((p) => /^feed alpaca is (refused|connecting|subscribing|disconnected)$/.test(p)),
    `problems name the feed: ${JSON.stringify(problems)}`,
  );
  assert.equal(alpaca(degraded)!.last_error, REFUSAL_ERROR);
  assert.notEqual(alpaca(degraded)!.state, "live");

  venue.admit();
  const ok = await waitForJson(
    engine,
    "/api/health/detailed",
    (b, status) => status === 200 && b.status === "ok",
    20_000,
  );
  assert.equal(alpaca(ok)!.state, "live");
});
