/**
 * Replay of captures through venue sessions (real NATS where it publishes,
 * a RecordingClock for the pace), the record script's writer against a
 * loopback WebSocket server, and the shipped sample capture through the real
 * venue sessions.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { decodeJson } from "../adapters/codec.ts";
import { configSchema } from "../config/mod.ts";
import { RecordingClock } from "../lib/clock.ts";
import { memoryLogger } from "../lib/log.ts";
import {
  type BarEvent,
  type Exchange,
  MalformedFrameError,
  type MarketEvent,
  type TradeEvent,
} from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import { type DeadLetter, dlqSubject, mdSubject } from "../market/subjects.ts";
import { createSessions } from "../venues/mod.ts";
import {
  type CaptureRecord,
  formatCaptureLine,
  keepOrder,
  parseCaptureLine,
  readLineBatches,
  replayActor,
  type ReplayDeps,
  ReplayFetchError,
  type ReplayStats,
  shiftEvents,
} from "../venues/replay.ts";
import { staleAt, Validator } from "../market/validation.ts";
import type { SessionIO, VenueSession } from "../venues/session.ts";
import {
  main as recordMain,
  parseRecordArgs,
  recordCapture,
  UsageError,
} from "../scripts/record.ts";
import { buildSampleLines } from "../scripts/build_sample_capture.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startWsServer } from "./fakes/ws_server.ts";

const NATS_URL = "127.0.0.1:4222";
const T0 = 1_760_000_000_000_000; // µs

/** `{"p","q","id"}` frames are trades; `{"cmd":"resync"}` reconnects; anything else is malformed. */
class TradeSession implements VenueSession {
  readonly exchange: Exchange;
  readonly symbol: string;
  opens = 0;
  closes = 0;
  ticks: number[] = [];
  onOpenHook: ((io: SessionIO) => void) | null = null;
  onFrameHook: ((data: Record<string, unknown>, io: SessionIO) => void) | null = null;
  readonly #url: string;

  constructor(symbol: string, exchange: Exchange = "binance", url = "ws://127.0.0.1:1/none") {
    this.symbol = symbol;
    this.exchange = exchange;
    this.#url = url;
  }

  url(): string {
    return this.#url;
  }

  onOpen(io: SessionIO): void {
    this.opens++;
    io.send(`subscribe ${this.symbol}`);
    this.onOpenHook?.(io);
  }

  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[] {
    let data: Record<string, unknown>;
    try {
      data = JSON.parse(frame);
    } catch (error) {
      throw new MalformedFrameError("Frame is not JSON", { cause: error });
    }
    this.onFrameHook?.(data, io);
    if (data.cmd === "resync") {
      io.reconnect("gap", { resync: true });
      return [];
    }
    if (data.cmd) return [];
    if (typeof data.p !== "string" || typeof data.id !== "number") {
      throw new MalformedFrameError("Trade needs p and id");
    }
    const event: TradeEvent = {
      kind: "trade",
      exchange: this.exchange,
      symbol: this.symbol,
      venue_symbol: this.symbol,
      ts_exchange: receivedUs - 2_000,
      ts_local: receivedUs,
      trade_id: String(data.id),
      price: data.p,
      qty: "1",
      side: "sell",
    };
    return [event];
  }

  onClose(): void {
    this.closes++;
  }

  onTick(_io: SessionIO, nowMs: number): void {
    this.ticks.push(nowMs);
  }

  status(): Record<string, unknown> {
    return { opens: this.opens };
  }
}

function uniqueSymbol(): string {
  return `RP${crypto.randomUUID().slice(0, 8).toUpperCase()}-USD`;
}

async function writeCapture(lines: Array<CaptureRecord | string>): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "tw-capture-", suffix: ".ndjson" });
  const text = lines.map((line) => typeof line === "string" ? line : formatCaptureLine(line))
    .join("\n");
  await Deno.writeTextFile(path, text + "\n");
  return path;
}

const trade = (t: number, id: number, x: Exchange = "binance"): CaptureRecord => ({
  t,
  x,
  f: JSON.stringify({ p: `1.${id}`, id }),
});

interface Played {
  stats: ReplayStats;
  status: MarketStatus;
  batches: Array<[string, MarketEvent[]]>;
  letters: DeadLetter[];
}

/** Plays `file` to its end with in-memory sinks. */
async function play(
  file: string,
  sessions: VenueSession[],
  deps: Partial<ReplayDeps> = {},
): Promise<Played> {
  const status = new MarketStatus();
  const batches: Array<[string, MarketEvent[]]> = [];
  const letters: DeadLetter[] = [];
  const spec = replayActor(file, sessions, {
    status,
    sink: (subject, events) => batches.push([subject, events]),
    deadLetters: (letter) => letters.push(letter),
    publish_batch_ms: 0,
    ...deps,
  });
  const running = spec.start(new AbortController().signal);
  await deadline(running.done, 10_000, "replay");
  return { stats: running.stats() as ReplayStats, status, batches, letters };
}

async function natsCollect<T>(nats: NatsConnection, subject: string) {
  const messages: T[] = [];
  const sub = nats.subscribe(subject, {
    callback: (error, msg) => {
      if (!error) messages.push(decodeJson<T>(msg.data));
    },
  });
  await nats.flush();
  return { messages, sub };
}

Deno.test("replay publishes a capture's events on NATS in order, counted like a live feed", async () => {
  const symbol = uniqueSymbol();
  const marker = crypto.randomUUID();
  const file = await writeCapture([
    { meta: { format: 1 } },
    trade(T0, 1),
    trade(T0 + 10, 2),
    { t: T0 + 20, x: "binance", f: `garbage ${marker}` },
    trade(T0 + 30, 3),
    trade(T0 + 40, 4),
    trade(T0 + 50, 5),
  ]);
  const nats = await connect({ servers: NATS_URL });
  const trades = await natsCollect<TradeEvent[]>(nats, mdSubject("trade", "binance", symbol));
  const dlq = await natsCollect<DeadLetter>(nats, dlqSubject("binance"));
  try {
    const status = new MarketStatus();
    const session = new TradeSession(symbol);
    const spec = replayActor(file, [session], { nats, status, speed: 0, loop: false });
    assert.equal(spec.restart, "transient");
    const running = spec.start(new AbortController().signal);
    await running.ready;
    await deadline(running.done, 5_000, "replay");
    await nats.flush();
    await waitFor(() => trades.messages.flat().length === 5, 5_000, "5 events");
    const events = trades.messages.flat();
    assert.deepEqual(events.map((event) => event.trade_id), ["1", "2", "3", "4", "5"]);
    assert.ok(trades.messages.length < 5, "coalesced into fewer messages");
    assert.equal(events[0]!.ts_local, T0, "ts_local is the recorded receive time");
    await waitFor(() => dlq.messages.some((letter) => letter.frame?.includes(marker)));
    const letter = dlq.messages.find((letter) => letter.frame?.includes(marker))!;
    assert.equal(letter.reason, "malformed");
    assert.equal(letter.stage, "feed");
    const feed = status.feed("binance");
    assert.equal(feed.frames, 6);
    assert.equal(feed.events, 5);
    assert.equal(feed.malformed, 1);
    assert.equal(feed.lag_ms, 2);
    assert.equal(feed.state, "stopped");
    const stats = running.stats() as ReplayStats;
    assert.equal(stats.lines, 7);
    assert.equal(stats.meta, 1);
    assert.equal(stats.frames, 6);
    assert.equal(stats.passes, 1);
    assert.equal(session.opens, 1);
    assert.equal(session.closes, 1);
  } finally {
    trades.sub.unsubscribe();
    dlq.sub.unsubscribe();
    await nats.close();
    await Deno.remove(file);
  }
});

Deno.test("speed 1 waits the recorded gaps on the injected clock; speed 2 half; long gaps are capped", async () => {
  const file = await writeCapture([
    trade(T0, 1),
    trade(T0 + 250_000, 2),
    { t: T0 + 1_250_000, x: "binance", rest: "http://venue/snap", f: "{}" },
    trade(T0 + 1_250_000, 3),
    trade(T0 + 61_250_000, 4), // a minute later: capped to max_gap_ms
  ]);
  try {
    const clock = new RecordingClock();
    const original = await play(file, [new TradeSession(uniqueSymbol())], {
      clock,
      speed: 1,
      max_gap_ms: 10_000,
    });
    assert.deepEqual(clock.sleeps, [250, 1_000, 10_000]);
    assert.equal(original.batches.length, 4);

    const fast = new RecordingClock();
    await play(file, [new TradeSession(uniqueSymbol())], {
      clock: fast,
      speed: 2,
      max_gap_ms: 10_000,
    });
    assert.deepEqual(fast.sleeps, [125, 500, 5_000]);

    const unpaced = new RecordingClock();
    await play(file, [new TradeSession(uniqueSymbol())], { clock: unpaced, speed: 0 });
    assert.deepEqual(unpaced.sleeps, []);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("rest lines answer fetchText per URL in recorded order, read before or after the call", async () => {
  const urlA = "https://venue.test/depth?symbol=A";
  const urlB = "https://venue.test/depth?symbol=B";
  const file = await writeCapture([
    { t: T0, x: "binance", rest: urlB, f: "B1" },
    trade(T0 + 1, 1),
    { t: T0 + 2, x: "binance", rest: urlA, f: "A1" },
    { t: T0 + 3, x: "binance", rest: urlA, f: "A2" },
    JSON.stringify({ t: T0 + 4, x: "binance", f: JSON.stringify({ cmd: "fetch-b" }) }),
    trade(T0 + 5, 2),
  ]);
  try {
    const session = new TradeSession(uniqueSymbol());
    const answers: string[] = [];
    const failures: unknown[] = [];
    const ask = (io: SessionIO, url: string) =>
      io.fetchText(url).then((body) => answers.push(body), (error) => failures.push(error));
    session.onOpenHook = (io) => {
      void ask(io, urlA).then(() => ask(io, urlA));
    };
    session.onFrameHook = (data, io) => {
      if (data.cmd === "fetch-b") {
        void ask(io, urlB).then(() => ask(io, urlB)); // the second has no recorded answer
      }
    };
    const played = await play(file, [session]);
    await waitFor(() => failures.length === 1, 1_000, "the unanswered fetch");
    assert.deepEqual(answers, ["A1", "A2", "B1"]);
    assert.ok(failures[0] instanceof ReplayFetchError);
    assert.equal((failures[0] as ReplayFetchError).url, urlB);
    assert.equal(played.stats.rest, 3);
    assert.equal(played.stats.frames, 3);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("malformed capture lines are counted, dead-lettered when their exchange is known, and skipped", async () => {
  const file = await writeCapture([
    "this is not json",
    "[1,2,3]",
    "",
    JSON.stringify({ t: T0, x: "nasdaq", f: "{}" }),
    JSON.stringify({ x: "binance", f: "{}" }),
    JSON.stringify({ t: T0, x: "binance", rest: 42, f: "{}" }),
    trade(T0 + 1, 1, "kraken"), // no kraken session: skipped
    trade(T0 + 2, 1),
  ]);
  try {
    const { log, lines } = memoryLogger();
    const played = await play(file, [new TradeSession(uniqueSymbol())], { log });
    assert.equal(played.stats.malformed, 5);
    assert.equal(played.stats.skipped, 1);
    assert.equal(played.stats.frames, 1);
    assert.equal(played.stats.lines, 7);
    assert.equal(played.batches.length, 1);
    const binance = played.status.feed("binance");
    assert.equal(binance.malformed, 2, "lines naming binance count in its figures");
    assert.deepEqual(played.letters.map((letter) => letter.detail), [
      "Capture line has no numeric t",
      "Capture rest line has no URL",
    ]);
    assert.ok(played.letters.every((letter) => letter.exchange === "binance"));
    assert.equal(
      lines.filter((line) => line.message === "capture line skipped").length,
      5,
    );
    assert.equal(played.status.feeds.has("kraken"), false);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("io.reconnect reopens the session without a socket; sends are counted and shown; ticks follow recorded time", async () => {
  const file = await writeCapture([
    trade(T0, 1),
    trade(T0 + 600_000, 2),
    { t: T0 + 1_100_000, x: "binance", f: JSON.stringify({ cmd: "resync" }) },
    trade(T0 + 2_200_000, 3),
  ]);
  try {
    const session = new TradeSession(uniqueSymbol());
    const sent: string[] = [];
    const played = await play(file, [session], {
      onSend: (exchange, text) => sent.push(`${exchange}: ${text}`),
    });
    const status = played.status.feed("binance");
    assert.equal(status.reconnects, 1);
    assert.equal(status.resyncs, 1);
    assert.equal(session.opens, 2);
    assert.equal(session.closes, 2); // the reconnect, then the end
    assert.deepEqual(sent, [
      `binance: subscribe ${session.symbol}`,
      `binance: subscribe ${session.symbol}`,
    ]);
    assert.equal(played.stats.sent, 2);
    assert.deepEqual(session.ticks, [(T0 + 1_100_000) / 1000]);
    assert.equal(played.batches.length, 3);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("loop starts the file over until the replay is stopped", async () => {
  const file = await writeCapture([trade(T0, 1), trade(T0 + 1, 2)]);
  try {
    const status = new MarketStatus();
    const session = new TradeSession(uniqueSymbol());
    // Each pass reopens the session: subscribing until its first frame, then live.
    const atSecondFrame: string[] = [];
    session.onFrameHook = (data) => {
      if (data.id === 2) atSecondFrame.push(status.feed("binance").state);
    };
    const controller = new AbortController();
    let events = 0;
    const running = replayActor(file, [session], {
      status,
      loop: true,
      speed: 0,
      sink: (_subject, batch) => events += batch.length,
      deadLetters: () => {},
    }).start(controller.signal);
    await waitFor(() => (running.stats() as ReplayStats).passes >= 3, 5_000, "three passes");
    controller.abort();
    await deadline(running.done, 5_000, "stop");
    assert.equal(status.feed("binance").state, "stopped");
    assert.ok(atSecondFrame.length >= 3, `${atSecondFrame.length} passes seen`);
    assert.deepEqual(new Set(atSecondFrame), new Set(["live"]));
    assert.ok(session.opens >= 3);
    assert.equal(session.closes, session.opens);
    assert.ok(events >= 4);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("a replay of a missing file fails to start", async () => {
  const running = replayActor("/nonexistent/capture.ndjson", [], {
    status: new MarketStatus(),
    sink: () => {},
    deadLetters: () => {},
  }).start(new AbortController().signal);
  await assert.rejects(running.ready, Deno.errors.NotFound);
  await assert.rejects(running.done, Deno.errors.NotFound);
  assert.throws(
    () =>
      replayActor("x", [new TradeSession("A-B"), new TradeSession("C-D")], {
        status: new MarketStatus(),
        sink: () => {},
        deadLetters: () => {},
      }),
    TypeError,
  );
});

Deno.test("record writes one NDJSON line per frame and per REST body, and the capture replays to the same events", async () => {
  await using server = await startWsServer({
    onMessage: (socket, text) => {
      if (!text.startsWith("subscribe")) return;
      socket.send(JSON.stringify({ p: "2.5", id: 1 }));
      socket.send(new TextEncoder().encode(JSON.stringify({ p: "2.6", id: 2 })));
      socket.send('{"p": "2.70", "id": 3}'); // kept byte for byte
      socket.send("garbage");
    },
    http: () => new Response('{"snapshot":true}'),
  });
  const symbol = uniqueSymbol();
  const session = new TradeSession(symbol, "binance", `${server.url}/stream`);
  session.onOpenHook = (io) => void io.fetchText(`${server.httpUrl}/depth?symbol=X`);
  const dir = await Deno.makeTempDir({ prefix: "tw-record-" });
  const out = `${dir}/nested/capture.ndjson`;
  try {
    const status = new MarketStatus();
    const controller = new AbortController();
    const recording = recordCapture([session], {
      out,
      signal: controller.signal,
      status,
      meta: { symbols: { binance: [symbol] } },
      flushIntervalMs: 10,
    });
    await waitFor(() => status.feed("binance").frames === 4, 5_000, "4 frames");
    await waitFor(() => server.httpRequests === 1, 5_000, "the REST fetch");
    // The REST body is written once the fetch resolves; the periodic flush puts it on disk.
    await waitFor(
      async () => (await Deno.readTextFile(out)).includes('"rest"'),
      5_000,
      "rest line",
    );
    controller.abort();
    const result = await deadline(recording, 5_000, "record stop");
    assert.equal(result.frames, 4);
    assert.equal(result.rest, 1);
    assert.deepEqual(result.framesByExchange, { binance: 4 });
    assert.equal(server.latest!.closeInfo?.code, 1000);

    const lines = (await Deno.readTextFile(out)).trimEnd().split("\n");
    assert.equal(lines.length, 6);
    const records = lines.map(parseCaptureLine);
    const meta = records[0] as { meta: Record<string, unknown> };
    assert.equal(meta.meta.format, 1);
    assert.deepEqual(meta.meta.symbols, { binance: [symbol] });
    assert.deepEqual((meta.meta.venues as Record<string, unknown>).binance, {
      url: `${server.url}/stream`,
    });
    const rest = records.find((record) => "rest" in record) as { rest: string; f: string };
    assert.deepEqual([rest.rest, rest.f], [
      `${server.httpUrl}/depth?symbol=X`,
      '{"snapshot":true}',
    ]);
    const frames = records.filter((record) => "f" in record && !("rest" in record)) as Array<
      { t: number; x: string; f: string }
    >;
    assert.deepEqual(frames.map((frame) => frame.f), [
      '{"p":"2.5","id":1}',
      '{"p":"2.6","id":2}',
      '{"p": "2.70", "id": 3}',
      "garbage",
    ]);
    assert.ok(frames.every((frame) => frame.x === "binance" && Number.isInteger(frame.t)));
    assert.ok(frames.every((frame, i) => i === 0 || frame.t >= frames[i - 1]!.t));

    const replayed = await play(out, [new TradeSession(symbol)]);
    const events = replayed.batches.flatMap(([, batch]) => batch) as TradeEvent[];
    assert.deepEqual(events.map((event) => event.price), ["2.5", "2.6", "2.70"]);
    assert.deepEqual(events.map((event) => event.ts_local), frames.slice(0, 3).map((f) => f.t));
    assert.equal(replayed.status.feed("binance").malformed, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("record stops after --seconds and parses its own flags", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tw-record-" });
  try {
    const clock = new RecordingClock();
    const result = await recordCapture([], {
      out: `${dir}/c.ndjson`,
      seconds: 2.5,
      clock,
    });
    assert.deepEqual(clock.sleeps, [1_000, 1_000, 500]);
    assert.equal(result.frames, 0);
    const lines = (await Deno.readTextFile(`${dir}/c.ndjson`)).trimEnd().split("\n");
    assert.equal(lines.length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.deepEqual(parseRecordArgs(["--seconds", "10", "--out=x.ndjson", "--http.port=1"]), {
    seconds: 10,
    out: "x.ndjson",
    help: false,
    configArgs: ["--http.port=1"],
  });
  assert.throws(() => parseRecordArgs(["--seconds", "-1"]), UsageError);
  assert.throws(() => parseRecordArgs(["--out"]), UsageError);
});

Deno.test("readLineBatches splits lines across chunks, CRLF included", async () => {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(path, "alpha\r\nbeta\n\ngamma-without-newline");
    const lines: string[] = [];
    for await (const batch of readLineBatches(path, 3)) lines.push(...batch);
    assert.deepEqual(lines, ["alpha", "beta", "", "gamma-without-newline"]);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("the shipped sample capture is what the builder makes from the fixtures", async () => {
  const fixtures = new URL("../../shared/fixtures/", import.meta.url);
  const read = (path: string) => Deno.readTextFile(new URL(path, fixtures));
  const lines = buildSampleLines({
    binance: await read("binance/cryptofeed_session_2021-10-12.envelope.jsonl"),
    coinbase: await read("coinbase/advanced_trade_session_2026-08-09.envelope.jsonl"),
    kraken: await read("kraken/v2_book_minagbp_d25_2026-08-16.capture.ndjson"),
    alpaca: await read("alpaca/docs_stream_data_v2_messages.jsonl"),
  });
  const shipped = await Deno.readTextFile(new URL("../captures/sample.ndjson", import.meta.url));
  assert.equal(shipped, lines.join("\n") + "\n");
  // Kraken frames keep their number tokens as sent.
  const raw = (await read("kraken/v2_book_minagbp_d25_2026-08-16.raw.jsonl")).trimEnd().split("\n");
  const kraken = lines.slice(1).map(parseCaptureLine).filter((record) =>
    "x" in record && record.x === "kraken"
  ) as Array<{ f: string }>;
  assert.deepEqual(kraken.map((record) => record.f), raw.slice(1)); // raw line 1 is the request sent
});

/** A configuration with the venues and symbols of `captures/sample.ndjson`. */
function sampleCaptureConfig() {
  return configSchema.parse({
    exchanges: {
      binance: { symbols: ["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"] },
      coinbase: { symbols: ["BTC-USD", "ETH-USD"] },
      kraken: { symbols: ["MINA-GBP"], book_depth: 25 },
      alpaca: {
        enabled: true,
        key_id: "key",
        secret_key: "secret",
        symbols: ["AAPL", "AMD", "CLDR", "SPY", "VOO"],
      },
    },
  });
}

Deno.test("the sample capture replays through the real venue sessions", async () => {
  const config = sampleCaptureConfig();
  const sessions = createSessions(config);
  const sample = new URL("../captures/sample.ndjson", import.meta.url).pathname;
  const played = await play(sample, sessions, { publish_batch_ms: 2 });
  assert.equal(played.stats.malformed, 0);
  assert.equal(played.stats.skipped, 0);
  assert.equal(played.stats.rest, 4);
  const kinds = new Map<string, number>();
  for (const [subject, events] of played.batches) {
    const key = subject.split(".").slice(1, 3).join(".");
    kinds.set(key, (kinds.get(key) ?? 0) + events.length);
  }
  for (
    const key of [
      "book.binance",
      "top.binance",
      "book.coinbase",
      "trade.coinbase",
      "book.kraken",
      "trade.alpaca",
      "quote.alpaca",
    ]
  ) {
    assert.ok(
      (kinds.get(key) ?? 0) > 0,
      `expected ${key} events, got ${JSON.stringify([...kinds])}`,
    );
  }
  assert.equal(played.status.feed("kraken").resyncs, 0, "every Kraken checksum verifies");
  assert.equal(played.status.feed("coinbase").resyncs, 0, "no Coinbase sequence gap");
  // Every event carries a time of the capture — the books built on REST answers too.
  const recorded = (await Deno.readTextFile(sample)).trimEnd().split("\n").map(parseCaptureLine)
    .flatMap((record) => "t" in record ? [record.t] : []);
  const last = Math.max(...recorded);
  const first = Math.min(...recorded);
  for (const [, events] of played.batches) {
    for (const event of events) {
      assert.ok(
        event.ts_local >= first && event.ts_local <= last,
        JSON.stringify(event).slice(0, 200),
      );
    }
  }
});

Deno.test("shiftEvents moves copies: times by the shift, a bar's start by its whole minutes", () => {
  const trade: TradeEvent = {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: T0 - 2_000,
    ts_local: T0,
    trade_id: "1",
    price: "1",
    qty: "1",
    side: "buy",
  };
  const kline: BarEvent = {
    kind: "bar",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: T0,
    ts_local: T0 + 500,
    interval: "1m",
    start: T0 - 60_000_000,
    open: "1",
    high: "2",
    low: "0.5",
    close: "1.5",
    volume: "10",
    trades: 3,
    vwap: null,
  };
  // Alpaca stamps a bar with its start only.
  const alpaca: BarEvent = { ...kline, exchange: "alpaca", ts_exchange: kline.start };
  const shift = 150_000_123; // 2.5 min
  const [movedTrade, movedKline, movedAlpaca] = shiftEvents([trade, kline, alpaca], shift);
  assert.deepEqual(movedTrade, { ...trade, ts_exchange: T0 - 2_000 + shift, ts_local: T0 + shift });
  assert.deepEqual(movedKline, {
    ...kline,
    ts_exchange: T0 + shift,
    ts_local: T0 + 500 + shift,
    start: T0 - 60_000_000 + 120_000_000,
  });
  assert.deepEqual(movedAlpaca, {
    ...alpaca,
    ts_exchange: T0 - 60_000_000 + 120_000_000,
    ts_local: T0 + 500 + shift,
    start: T0 - 60_000_000 + 120_000_000,
  });
  assert.equal(trade.ts_local, T0, "the originals are left as they were");
  const same = [trade];
  assert.equal(shiftEvents(same, 0), same);
});

Deno.test("retime: events carry the time they are replayed; without it, the recorded one — REST-built ones too", async () => {
  const url = "http://venue/snapshot";
  const file = await writeCapture([
    trade(T0, 1),
    { t: T0 + 400_000, x: "binance", rest: url, f: JSON.stringify({ p: "9.5", id: 99 }) },
    trade(T0 + 1_000_000, 2),
  ]);
  // On open, a session asks for a snapshot and emits a trade from it when it comes, stamped
  // with the connection's time (as the Binance session stamps the book it builds).
  const snapshotSession = () => {
    const session = new TradeSession(uniqueSymbol());
    session.onOpenHook = (io) => {
      void io.fetchText(url).then((body) => {
        const data = JSON.parse(body) as { p: string; id: number };
        const now = io.nowUs();
        io.emit([{
          kind: "trade",
          exchange: "binance",
          symbol: session.symbol,
          venue_symbol: session.symbol,
          ts_exchange: now,
          ts_local: now,
          trade_id: String(data.id),
          price: data.p,
          qty: "1",
          side: "buy",
        }]);
      }, () => {});
    };
    return session;
  };
  try {
    const start = 1_800_000_000_000; // ms
    const clock = new RecordingClock(start);
    const played = await play(file, [snapshotSession()], { clock, speed: 1, retime: true });
    const events = played.batches.flatMap(([, batch]) => batch);
    const byId = new Map(events.map((event) => [(event as TradeEvent).trade_id, event]));
    // Paced at speed 1, each line is played as much later as it was recorded.
    assert.deepEqual(clock.sleeps, [400, 600]);
    const nowUs = start * 1000;
    assert.equal(byId.get("1")!.ts_local, nowUs);
    assert.equal(byId.get("1")!.ts_exchange, nowUs - 2_000, "the recorded latency stays");
    assert.equal(byId.get("2")!.ts_local, nowUs + 1_000_000);
    // The snapshot's trade: the clock's time when its answer was played.
    assert.equal(byId.get("99")!.ts_local, nowUs + 400_000);
    // Without retime, the recorded times — the snapshot's too.
    const plain = await play(file, [snapshotSession()], { speed: 0 });
    const plainById = new Map(
      plain.batches.flatMap(([, batch]) => batch).map((
        event,
      ) => [(event as TradeEvent).trade_id, event]),
    );
    assert.equal(plainById.get("1")!.ts_local, T0);
    assert.equal(plainById.get("99")!.ts_local, T0 + 400_000);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("the sample capture, retimed, looks live to the validator: only what the capture holds late is stale", async () => {
  const config = sampleCaptureConfig();
  const sample = new URL("../captures/sample.ndjson", import.meta.url).pathname;
  const clock = new RecordingClock(1_800_000_000_000);
  const retimed = await play(sample, createSessions(config), { clock, retime: true });
  const plain = await play(sample, createSessions(config), {});
  const count = (played: Played) => played.batches.reduce((n, [, batch]) => n + batch.length, 0);
  assert.equal(count(retimed), count(plain), "every event is still there");
  // The engine's validator with its live limits (max_lag_ms 120 s, max_future_ms 5 s).
  const limits = config.validator;
  const validator = new Validator(limits);
  const nowUs = clock.now() * 1000;
  const outside = retimed.batches
    .flatMap(([, batch]) => validator.validate(batch, nowUs).rejected)
    .filter((rejection) => rejection.reason === "stale" || rejection.reason === "future");
  // Only what is as old in the capture itself: SPY's daily bar of a day that ended days before
  // the frame that carried it.
  assert.deepEqual(
    outside.map((rejection) => {
      const event = rejection.event as MarketEvent;
      return [rejection.reason, event.kind, event.symbol];
    }),
    [["stale", "bar", "SPY"]],
  );
  for (const rejection of outside) {
    const event = rejection.event as MarketEvent;
    assert.ok(staleAt(event) < event.ts_local - limits.max_lag_ms * 1000);
  }
  // Not retimed, most of the capture is months old to it.
  const old = new Validator(limits);
  const stale = plain.batches.flatMap(([, batch]) => old.validate(batch, nowUs).rejected)
    .filter((rejection) => rejection.reason === "stale").length;
  assert.ok(stale > count(plain) / 2, `${stale} of ${count(plain)} stale`);
});

Deno.test("deno task record fails (exit 1) when no venue sends a frame, instead of writing an empty capture", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const code = await recordMain([
      "--seconds",
      "1",
      "--out",
      `${dir}/capture.ndjson`,
      // Nothing listens there, as when there is no network.
      "--exchanges.binance.ws_url=ws://127.0.0.1:1",
      "--exchanges.binance.rest_url=http://127.0.0.1:1",
      "--exchanges.coinbase.enabled=false",
      "--exchanges.kraken.enabled=false",
      "--exchanges.alpaca.enabled=false",
    ]);
    assert.equal(code, 1);
    // Nothing to replay is left behind to be mistaken for a capture.
    await assert.rejects(Deno.stat(`${dir}/capture.ndjson`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("keepOrder never moves an event's exchange time before the last of its kind and symbol", () => {
  const trade = (symbol: string, ts: number, id: string): MarketEvent => ({
    kind: "trade",
    exchange: "coinbase",
    symbol,
    venue_symbol: symbol,
    ts_exchange: ts,
    ts_local: ts + 5,
    trade_id: id,
    price: "1",
    qty: "1",
    side: "buy",
  });
  const last = new Map<string, number>();
  assert.deepEqual(
    keepOrder([trade("A", 100, "1"), trade("B", 50, "1")], last).map((e) => e.ts_exchange),
    [100, 50],
  );
  // A later frame of A retimed before the last A: raised to it (local time at least as late); B goes on.
  const out = keepOrder([trade("A", 90, "2"), trade("B", 60, "2")], last);
  assert.deepEqual(out.map((e) => [e.ts_exchange, e.ts_local]), [[100, 100], [60, 65]]);
  assert.deepEqual(keepOrder([trade("A", 120, "3")], last).map((e) => e.ts_exchange), [120]);
});

Deno.test("a replayed venue is subscribing from its opening until it is ready, as a live feed, then live", async () => {
  const file = await writeCapture([
    trade(T0, 1, "binance"),
    { t: T0 + 1, x: "alpaca", f: JSON.stringify({ cmd: "greeting" }) },
    trade(T0 + 2, 2, "binance"),
    { t: T0 + 3, x: "alpaca", f: JSON.stringify({ cmd: "ready" }) },
    trade(T0 + 4, 3, "binance"),
  ]);
  try {
    const status = new MarketStatus();
    const binance = new TradeSession(uniqueSymbol(), "binance");
    // A session that tells its readiness (as Alpaca's: authenticated and subscribed).
    let ready = false;
    const alpaca = Object.assign(new TradeSession(uniqueSymbol(), "alpaca"), {
      readiness: () => ready ? "ready" as const : "pending" as const,
    });
    alpaca.onFrameHook = (data) => {
      if (data.cmd === "ready") ready = true;
    };
    const seen: string[] = [];
    const look = () =>
      `binance ${status.feed("binance").state}, alpaca ${status.feed("alpaca").state}`;
    binance.onOpenHook = () => seen.push(`binance opens: ${look()}`);
    binance.onFrameHook = (data) => seen.push(`binance frame ${data.id}: ${look()}`);
    await play(file, [binance, alpaca], { status });
    assert.deepEqual(seen, [
      "binance opens: binance subscribing, alpaca connecting",
      "binance frame 1: binance subscribing, alpaca subscribing",
      "binance frame 2: binance live, alpaca subscribing",
      "binance frame 3: binance live, alpaca live",
    ]);
    assert.equal(status.feed("binance").state, "stopped");
  } finally {
    await Deno.remove(file);
  }
});
