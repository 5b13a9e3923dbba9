/**
 * The Binance feed's connection, checked against Binance's docs.
 *
 * WebSocket Streams: "The WebSocket server will send a ping frame every 20
 * seconds. If the WebSocket server does not receive a pong frame back from
 * the connection within a minute the connection will be disconnected. When
 * you receive a ping, you must send a pong with a copy of ping's payload as
 * soon as possible." `venues/binance/session.ts` has no application
 * keepalive and relies on Deno's WebSocket for that; the fake servers of
 * tests/fakes are built on `Deno.upgradeWebSocket`, which cannot send a ping
 * with a chosen payload, so here a raw RFC 6455 server pings the live feed
 * runtime and checks the pong echoes the payload.
 *
 * REST depth snapshots: a request Binance accepts and never answers (a
 * degraded API, a stuck load balancer) fails after the runtime's
 * `rest_timeout_ms` (`io.fetchText`, `actors/feed.ts`) like any failed
 * snapshot — counted, reported, retried on the session's backoff within its
 * request-weight budget — instead of keeping the symbol's book waiting for
 * the life of the connection (up to Binance's 24-hour disconnect) while
 * diffs keep the feed `live`.
 */
import assert from "node:assert/strict";
import { runFeed } from "./_feed_harness.ts";
import { MarketStatus } from "../market/status.ts";
import { binanceSession, type BinanceSessionStatus } from "../venues/binance/session.ts";
import { binanceSymbol } from "../venues/binance/symbols.ts";
import {
  FakeBinanceMarket,
  type FakeBinanceServer,
  startBinanceServer,
} from "./fakes/binance_server.ts";
import { waitFor } from "./_helpers.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

async function accept(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(8192);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("client left during the handshake");
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  const key = /sec-websocket-key:\s*(\S+)/i.exec(text)![1]!;
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + GUID));
  await conn.write(new TextEncoder().encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${btoa(String.fromCharCode(...new Uint8Array(digest)))}\r\n\r\n`,
  ));
}

/** Reads client frames until one with `opcode` arrives; returns its unmasked payload. */
async function readFrame(conn: Deno.Conn, opcode: number, timeoutMs: number): Promise<string> {
  let data = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    while (data.length >= 6) {
      const len = data[1]! & 0x7f; // small control frames only
      if (data.length < 6 + len) break;
      const mask = data.subarray(2, 6);
      const payload = data.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]!);
      const op = data[0]! & 0x0f;
      data = data.slice(6 + len);
      if (op === opcode) return new TextDecoder().decode(payload);
    }
    if (Date.now() > deadline) throw new Error(`no frame with opcode ${opcode} in ${timeoutMs} ms`);
    const n = await conn.read(chunk);
    if (n === null) throw new Error("client closed");
    const merged = new Uint8Array(data.length + n);
    merged.set(data);
    merged.set(chunk.subarray(0, n), data.length);
    data = merged;
  }
}

Deno.test("the live feed runtime answers a Binance ping frame with a pong echoing its payload (Deno does it)", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const session = binanceSession({
    ws_url: `ws://127.0.0.1:${port}`,
    rest_url: `http://127.0.0.1:${port}`,
    symbols: ["BTC-USDT"],
    channels: ["trades"],
    snapshot_limit: 100,
  });
  const stop = runFeed(session, {
    status: new MarketStatus(),
    sink: () => {},
    deadLetters: () => {},
    options: { stale_after_ms: 20_000, reconnect_initial_ms: 50 },
  });
  const conn = await listener.accept();
  try {
    await accept(conn);
    const payload = "1699999999999";
    const bytes = new TextEncoder().encode(payload);
    await conn.write(new Uint8Array([0x89, bytes.length, ...bytes]));
    assert.equal(await readFrame(conn, 0x0a, 3_000), payload);
  } finally {
    await stop();
    try {
      conn.close();
    } catch { /* closed */ }
    listener.close();
  }
});

/**
 * A fake Binance whose first `hang` depth requests are accepted and never
 * answered (their requests are kept, to see them aborted); later ones are
 * answered from the market's book.
 */
async function startHangingBinance(symbol: string, hang: number) {
  const venueSymbol = binanceSymbol(symbol);
  const market = new FakeBinanceMarket([symbol]);
  market.book(venueSymbol).apply([["100.00", "1.000"]], [["100.50", "1.500"]]);
  const venue: FakeBinanceServer = await startBinanceServer({ market });
  const inner = venue.ws.hooks.http!;
  const hung: Request[] = [];
  const answered: string[] = [];
  venue.ws.hooks = {
    ...venue.ws.hooks,
    http: (request) => {
      if (new URL(request.url).pathname === "/api/v3/depth") {
        if (hung.length < hang) {
          hung.push(request);
          return new Promise<Response>(() => {}); // accepted, never answered
        }
        answered.push(request.url);
      }
      return inner(request);
    },
  };
  return { venue, venueSymbol, hung, answered };
}

/** Sends a depth diff every 100 ms, as `@depth@100ms` does on a busy book; returns the stop. */
function busyBook(venue: FakeBinanceServer, venueSymbol: string): () => void {
  let price = 0;
  const timer = setInterval(() => {
    price = (price + 1) % 50;
    venue.depthUpdate(venueSymbol, [[`99.${String(price).padStart(2, "0")}`, "1.000"]], []);
  }, 100);
  return () => clearInterval(timer);
}

function uniqueSymbol(): string {
  return `T${crypto.randomUUID().replaceAll("-", "").slice(0, 8).toUpperCase()}-USDT`;
}

Deno.test("a Binance depth snapshot request never answered fails after rest_timeout_ms and is retried, so the book syncs", async () => {
  const symbol = uniqueSymbol();
  const { venue, venueSymbol, hung, answered } = await startHangingBinance(symbol, 1);
  const status = new MarketStatus();
  const session = binanceSession({
    ws_url: venue.wsUrl,
    rest_url: venue.restUrl,
    symbols: [symbol],
    channels: ["trades", "book"],
    snapshot_limit: 100,
  }, { snapshotRetryInitialMs: 20, snapshotRetryMaxMs: 200 });
  const stop = runFeed(session, {
    status,
    sink: () => {},
    deadLetters: () => {},
    options: { stale_after_ms: 20_000, reconnect_initial_ms: 50, rest_timeout_ms: 300 },
  });
  const stopDiffs = busyBook(venue, venueSymbol);
  try {
    const feed = status.feed("binance");
    const venueStatus = () => session.status() as BinanceSessionStatus;
    await waitFor(() => hung.length === 1, 5_000, "the first snapshot request");
    await waitFor(
      () => venueStatus().books_synced === 1,
      5_000,
      `the book synced (${JSON.stringify(venueStatus().books[symbol])})`,
    );
    const book = venueStatus().books[symbol]!;
    assert.equal(book.snapshot_failures, 1);
    assert.equal(book.snapshots, 1);
    assert.equal(answered.length, 1, "one retry, answered");
    assert.equal(
      feed.last_error,
      `Depth snapshot of ${venueSymbol} failed: GET ${session.snapshotUrl(venueSymbol)} ` +
        "got no answer within 300 ms",
    );
    // The request given up is aborted, not left holding a connection to Binance.
    await waitFor(() => hung[0]!.signal.aborted, 5_000, "the hung request aborted");
    // Both requests count against the request-weight budget (5 each for 100 levels).
    assert.equal(venueStatus().snapshot_weight_1m, 10);
    assert.equal(feed.state, "live");
    assert.equal(venue.ws.connections, 1, "no reconnect was needed");
  } finally {
    stopDiffs();
    await stop();
    await venue.stop();
  }
});

Deno.test("the retry of a timed-out Binance snapshot waits for the request-weight budget", async () => {
  const symbol = uniqueSymbol();
  const { venue, venueSymbol, hung, answered } = await startHangingBinance(symbol, 1);
  const session = binanceSession({
    ws_url: venue.wsUrl,
    rest_url: venue.restUrl,
    symbols: [symbol],
    channels: ["book"],
    snapshot_limit: 100,
    // One 100-level snapshot (weight 5) per rolling minute.
  }, { snapshotRetryInitialMs: 20, snapshotRetryMaxMs: 20, snapshotWeightPerMinute: 5 });
  const stop = runFeed(session, {
    status: new MarketStatus(),
    sink: () => {},
    deadLetters: () => {},
    options: { stale_after_ms: 20_000, rest_timeout_ms: 200 },
  });
  const stopDiffs = busyBook(venue, venueSymbol);
  try {
    const venueStatus = () => session.status() as BinanceSessionStatus;
    await waitFor(() => venueStatus().books[symbol]!.snapshot_failures === 1, 5_000, "timed out");
    await waitFor(() => venueStatus().snapshots_queued === 1, 2_000, "the retry queued");
    // Well past the retry delay: the retry still waits for the minute's weight to free up.
    const until = Date.now() + 600;
    await waitFor(() => Date.now() >= until, 2_000, "600 ms");
    assert.equal(hung.length + answered.length, 1, "no second request within the minute");
    assert.equal(venueStatus().snapshots_in_flight, 0, "the timed-out request freed its slot");
    assert.equal(venueStatus().snapshots_queued, 1);
    assert.equal(venueStatus().snapshot_weight_1m, 5);
  } finally {
    stopDiffs();
    await stop();
    await venue.stop();
  }
});
