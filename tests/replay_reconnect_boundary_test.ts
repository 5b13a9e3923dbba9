/**
 * Connection lines: `deno task record` marks a live reconnect with
 * `{"conn":"close"}` and `{"conn":"open"}` lines, and a replay closes and
 * reopens the venue's session there — the way the live feed ran — instead of
 * running the second connection's frames into the first one's sequence and
 * book state (a spurious gap, a resync, the new snapshot lost). In such a
 * capture a session's own reconnect request is left to those lines; a
 * capture without them replays as before.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type BookEvent,
  type Exchange,
  MalformedFrameError,
  type MarketEvent,
} from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import type { DeadLetter } from "../market/subjects.ts";
import { coinbaseSession } from "../venues/coinbase/session.ts";
import {
  CaptureLineError,
  type CaptureRecord,
  formatCaptureLine,
  parseCaptureLine,
  replayActor,
  type ReplayStats,
} from "../venues/replay.ts";
import type { SessionIO, VenueSession } from "../venues/session.ts";
import { recordCapture } from "../scripts/record.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startCoinbaseServer } from "./fakes/coinbase_server.ts";

Deno.test("a capture recorded across a Coinbase reconnect replays without a spurious sequence gap or lost book", async () => {
  const product = `R${crypto.randomUUID().slice(0, 6).toUpperCase()}-USD`;
  await using venue = await startCoinbaseServer({ products: [product], heartbeatMs: 600_000 });
  venue.setBook(product, [["100", "1"]], [["101", "1"]]);
  const dir = await Deno.makeTempDir({ prefix: "tw-reconnect-boundary-" });
  const out = `${dir}/capture.ndjson`;
  try {
    const config = {
      ws_url: venue.url,
      symbols: [product],
      channels: ["trades", "book"] as Array<"trades" | "book">,
    };
    const status = new MarketStatus();
    const live = status.feed("coinbase");
    const controller = new AbortController();
    const liveSession = coinbaseSession(config);
    const recording = recordCapture([liveSession], {
      out,
      signal: controller.signal,
      status,
      flushIntervalMs: 10,
      feedOptions: {
        coinbase: { stale_after_ms: 20_000, reconnect_initial_ms: 20, reconnect_max_ms: 100 },
      },
    });
    const connection = async (n: number) => {
      await waitFor(
        () =>
          venue.ws.connections === n && venue.subscribed("level2") === 1 &&
          liveSession.status().books[product] === "live",
        5_000,
        `connection ${n} live`,
      );
      const before = live.frames;
      venue.trade(product, { price: `100.${n}`, size: "1", side: "BUY" });
      venue.updateBook(product, [[`100.${n}`, "2"]], []);
      await waitFor(() => live.frames >= before + 2, 5_000, `frames of connection ${n}`);
    };
    await connection(1);
    venue.drop(); // the network cuts the connection: the live feed reconnects
    await connection(2);
    controller.abort();
    await deadline(recording, 5_000, "record stop");
    // Live, the reconnect cost nothing: no gap, no resync.
    assert.equal(live.reconnects, 1);
    assert.equal(live.resyncs, 0, "live feed: no resync");
    assert.equal(liveSession.status().gaps, 0);
    // The capture marks the reconnect, and only it: a close and an open line between the frames.
    const records = (await Deno.readTextFile(out)).trimEnd().split("\n").map(parseCaptureLine);
    assert.equal((records[0] as { meta: Record<string, unknown> }).meta.connection_lines, true);
    assert.deepEqual(
      records.flatMap((r) => "conn" in r ? [r.conn] : []),
      ["close", "open"],
    );
    const close = records.findIndex((r) => "conn" in r);
    assert.ok(records.slice(1, close).some((r) => "f" in r), "connection 1 frames before close");
    assert.ok(records.slice(close + 2).some((r) => "f" in r), "connection 2 frames after open");

    // Replay the capture through a fresh session.
    const replayStatus = new MarketStatus();
    const events: MarketEvent[] = [];
    const letters: DeadLetter[] = [];
    const session = coinbaseSession(config);
    const running = replayActor(out, [session], {
      status: replayStatus,
      sink: (_subject, batch) => void events.push(...batch),
      deadLetters: (letter) => void letters.push(letter),
      publish_batch_ms: 0,
    }).start(new AbortController().signal);
    await deadline(running.done, 10_000, "replay");
    const stats = running.stats() as ReplayStats;
    assert.equal(stats.malformed, 0);
    const feed = replayStatus.feed("coinbase");
    const books = events.filter((e): e is BookEvent => e.kind === "book");
    const trades = events.filter((e) => e.kind === "trade");
    const summary = JSON.stringify({
      resyncs: feed.resyncs,
      reconnects: feed.reconnects,
      gaps: session.status().gaps,
      book_actions: books.map((b) => b.action),
      trades: trades.length,
    });
    // The same events as the live feed published: a snapshot and a delta per connection; the
    // trades of both connections (the second one's market_trades snapshot repeats the first trade).
    assert.equal(
      session.status().gaps,
      0,
      `replay saw a sequence gap the live feed never had: ${summary}`,
    );
    assert.equal(feed.resyncs, 0, `replay resynced where the live feed did not: ${summary}`);
    assert.deepEqual(
      books.map((b) => b.action),
      ["snapshot", "delta", "snapshot", "delta"],
      `book events differ from the live feed's: ${summary}`,
    );
    assert.equal(trades.length, 3, summary);
    assert.equal(feed.reconnects, 1, summary);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Trades `{"id":n}`; `{"cmd":"reconnect"}` asks for a reconnect (resync). */
class CountingSession implements VenueSession {
  readonly exchange: Exchange = "kraken";
  opens = 0;
  closes = 0;
  /** The connection (1 = first open) each trade was parsed on. */
  tradesOn: number[] = [];

  url(): string {
    return "ws://127.0.0.1:1/none";
  }

  onOpen(_io: SessionIO): void {
    this.opens++;
  }

  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[] {
    const data = JSON.parse(frame) as { id?: number; cmd?: string };
    if (data.cmd === "reconnect") {
      io.reconnect("asked", { resync: true });
      return [];
    }
    if (typeof data.id !== "number") throw new MalformedFrameError("no id");
    this.tradesOn.push(this.opens);
    return [{
      kind: "trade",
      exchange: "kraken",
      symbol: "A-B",
      venue_symbol: "A/B",
      ts_exchange: receivedUs,
      ts_local: receivedUs,
      trade_id: String(data.id),
      price: "1",
      qty: "1",
      side: "buy",
    }];
  }

  onClose(): void {
    this.closes++;
  }

  status(): Record<string, unknown> {
    return {};
  }
}

const T0 = 1_760_000_000_000_000;
const frame = (t: number, body: unknown): CaptureRecord => ({
  t,
  x: "kraken",
  f: JSON.stringify(body),
});

async function playCounting(records: CaptureRecord[]) {
  const file = await Deno.makeTempFile({ prefix: "tw-reconnect-boundary-", suffix: ".ndjson" });
  await Deno.writeTextFile(file, records.map((r) => formatCaptureLine(r)).join("\n") + "\n");
  try {
    const session = new CountingSession();
    const status = new MarketStatus();
    const running = replayActor(file, [session], {
      status,
      sink: () => {},
      deadLetters: () => {},
      publish_batch_ms: 0,
    }).start(new AbortController().signal);
    await deadline(running.done, 5_000, "replay");
    return { session, feed: status.feed("kraken"), stats: running.stats() as ReplayStats };
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("connection lines close and reopen the session where they stand; frames between are skipped", async () => {
  const { session, feed, stats } = await playCounting([
    { meta: { format: 1, connection_lines: true } },
    frame(T0, { id: 1 }),
    { t: T0 + 10, x: "kraken", conn: "close" },
    frame(T0 + 15, { id: 2 }), // no connection: not played
    { t: T0 + 20, x: "kraken", conn: "open" },
    frame(T0 + 30, { id: 3 }),
  ]);
  assert.deepEqual(session.tradesOn, [1, 2]);
  assert.equal(session.opens, 2);
  assert.equal(session.closes, 2); // the close line, and the end of the file
  assert.equal(feed.reconnects, 1);
  assert.equal(stats.skipped, 1);
  assert.equal(stats.malformed, 0);
});

Deno.test("with connection lines, a session's reconnect request is left to them: the recorded connection's frames reach it", async () => {
  const { session, feed } = await playCounting([
    { meta: { format: 1, connection_lines: true } },
    frame(T0, { id: 1 }),
    frame(T0 + 10, { cmd: "reconnect" }), // live, the feed did not reconnect here
    frame(T0 + 20, { id: 2 }),
    { t: T0 + 30, x: "kraken", conn: "close" },
    { t: T0 + 40, x: "kraken", conn: "open" },
    frame(T0 + 50, { id: 3 }),
  ]);
  assert.deepEqual(session.tradesOn, [1, 1, 2]);
  assert.equal(feed.resyncs, 1);
  assert.equal(feed.reconnects, 1);
});

Deno.test("without connection lines, a session's reconnect request reopens it after the frame, as before", async () => {
  const { session, feed } = await playCounting([
    { meta: { format: 1 } },
    frame(T0, { id: 1 }),
    frame(T0 + 10, { cmd: "reconnect" }),
    frame(T0 + 20, { id: 2 }),
  ]);
  assert.deepEqual(session.tradesOn, [1, 2]);
  assert.equal(feed.resyncs, 1);
  assert.equal(feed.reconnects, 1);
});

Deno.test("connection lines are written and read back; a bad one names its exchange", () => {
  const line = formatCaptureLine({ t: 5, x: "coinbase", conn: "open" });
  assert.equal(line, '{"t":5,"x":"coinbase","conn":"open"}');
  assert.deepEqual(parseCaptureLine(line), { t: 5, x: "coinbase", conn: "open" });
  assert.deepEqual(parseCaptureLine('{"t":6,"x":"binance","conn":"close"}'), {
    t: 6,
    x: "binance",
    conn: "close",
  });
  assert.throws(
    () => parseCaptureLine('{"t":6,"x":"binance","conn":"restart"}'),
    (error: unknown) => error instanceof CaptureLineError && error.exchange === "binance",
  );
});
