/**
 * The batch writer and the market-data schema against the real services:
 * NATS JetStream (`TW_TEST_NATS_URL`, default `nats://127.0.0.1:4222`),
 * ClickHouse (`TW_TEST_CLICKHOUSE_URL`, default `http://127.0.0.1:8123`) and
 * PostgreSQL (`TW_TEST_POSTGRES_URL`; it holds the migration lock). Each test
 * gets its own `tw_test_<random>` database with the repository's ClickHouse
 * migrations applied, and its own stream, consumer and subject prefix. The
 * conversions of `market/rows.ts` are tested first, without services.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import type { ClickHouseClient } from "@clickhouse/client";
import { jetstream } from "@nats-io/jetstream";
import { createClickHouse, quoteString } from "../adapters/clickhouse.ts";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { Migrator } from "../adapters/migrator.ts";
import { ensureConsumer, ensureStreams } from "../adapters/nats.ts";
import type { BatchWriterOptions } from "../actors/batch_writer.ts";
import { addWriterStatus, batchWriterWorker } from "../actors/batch_writer_worker.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { memoryLogger } from "../lib/log.ts";
import type {
  BarEvent,
  BookEvent,
  MarketEvent,
  QuoteEvent,
  TopEvent,
  TradeEvent,
} from "../market/events.ts";
import { batchWriterConsumer, mdCleanStream } from "../market/md_stream.ts";
import {
  encodedTradeLines,
  encodeJsonEachRow,
  RowError,
  toRawDecimal,
  toRow,
  toRowLine,
  tradeLine,
  type TradeRow,
  tradeRow,
} from "../market/rows.ts";
import { parseAlpacaFrame } from "../venues/alpaca/parse.ts";
import { parseBinanceFrame } from "../venues/binance/parse.ts";
import { binanceSymbolMap } from "../venues/binance/symbols.ts";
import { parseCoinbaseFrame } from "../venues/coinbase/parse.ts";
import { parseKrakenFrame } from "../venues/kraken/parse.ts";
import { MarketStatus } from "../market/status.ts";
import { cleanSubject } from "../market/subjects.ts";
import { fixtureLines, waitFor } from "./_helpers.ts";
import {
  allAcknowledged,
  CH_URL,
  countFinal,
  countRaw,
  deadLetters,
  type MarketDatabase,
  marketDatabase,
  NATS_URL,
  PG_URL,
  REPO_MIGRATIONS,
  startWriter,
  type StreamEnv,
  streamEnv,
  writerOptions,
} from "./_batch_writer.ts";
import { freePort, startNatsServer } from "./_nats_server.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";

/** 2023-11-14 22:13:00 UTC, on a minute boundary, in µs. */
const T0 = 1_699_999_980_000_000;

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

function trade(i: number, overrides: Partial<TradeEvent> = {}): TradeEvent {
  return {
    kind: "trade",
    exchange: "binance",
    symbol: i % 2 === 0 ? "BTC-USDT" : "ETH-USDT",
    venue_symbol: i % 2 === 0 ? "BTCUSDT" : "ETHUSDT",
    ts_exchange: T0 + i * 1_000,
    ts_local: T0 + i * 1_000 + 250,
    trade_id: String(1_000_000 + i),
    price: `${100 + (i % 97)}.${String(i % 1000).padStart(3, "0")}000000000000001`,
    qty: `0.${String((i % 9) + 1).padStart(8, "0")}`,
    side: i % 3 === 0 ? "sell" : "buy",
    ...overrides,
  };
}

/** Trades `from`..`to` (exclusive) in messages of 1..`most` events of one symbol each. */
function tradeMessages(from: number, to: number, most = 10): TradeEvent[][] {
  const bySymbol = new Map<string, TradeEvent[]>();
  for (let i = from; i < to; i++) {
    const event = trade(i);
    const list = bySymbol.get(event.symbol) ?? [];
    list.push(event);
    bySymbol.set(event.symbol, list);
  }
  const messages: TradeEvent[][] = [];
  for (const list of bySymbol.values()) {
    for (let i = 0, size = 1; i < list.length; i += size, size = (size % most) + 1) {
      messages.push(list.slice(i, i + size));
    }
  }
  return messages;
}

// ---------------------------------------------------------------------------
// rows.ts (no services)
// ---------------------------------------------------------------------------

Deno.test("a trade becomes a market_trades row whose JSON keeps every decimal digit unquoted", () => {
  const { table, row } = toRow(trade(0, {
    price: "43251.120000000000000001",
    qty: "0.00005100",
    trade_id: "42",
  }));
  assert.equal(table, "market_trades");
  assert.equal(
    JSON.stringify(row),
    `{"exchange":"binance","symbol":"BTC-USDT","venue_symbol":"BTCUSDT",` +
      `"ts_exchange":${T0},"ts_local":${T0 + 250},"trade_id":"42",` +
      `"price":43251.120000000000000001,"qty":0.00005100,"side":"sell"}`,
  );
  assert.equal(encodeJsonEachRow([row, row]).split("\n").length, 3);
});

Deno.test("the fast trade line is byte for byte the JSON of the trade row, errors included", () => {
  const cases = [
    trade(0),
    trade(1, { trade_id: 'quote"back\\slash\u0001', price: "00012.50" }),
    trade(2, { qty: "1.1000000000000000000000", side: "unknown" }),
    trade(3, { symbol: "BRK.B", venue_symbol: "BRK.B", exchange: "alpaca" }),
  ];
  for (const event of cases) {
    assert.equal(toRowLine(event).line, JSON.stringify(toRow(event).row));
    assert.equal(toRowLine(event).table, "market_trades");
  }
  const bad = [
    trade(4, { price: "1e5" }),
    trade(5, { qty: "-1" }),
    trade(6, { trade_id: "\ud800" }),
    { ...trade(7), ts_exchange: Number.NaN },
  ];
  for (const event of bad) {
    let expected: unknown;
    try {
      toRow(event);
    } catch (error) {
      expected = error;
    }
    assert.ok(expected instanceof RowError, JSON.stringify(event));
    assert.throws(
      () => toRowLine(event),
      (error: unknown) =>
        error instanceof RowError && error.message === (expected as RowError).message,
    );
  }
});

/** The lines of a message's events the slow way: parse, then one `tradeLine` each. */
function parsedTradeLines(text: string): string[] {
  return (JSON.parse(text) as MarketEvent[]).map((event) => tradeLine(event));
}

Deno.test("trades as the feeds encode them give the same lines read off the text", () => {
  const message = JSON.stringify(Array.from({ length: 300 }, (_, i) => trade(i)));
  const lines = ["an earlier line"];
  assert.equal(encodedTradeLines(message, lines), true);
  assert.deepEqual(lines, ["an earlier line", ...parsedTradeLines(message)]);

  const edges = [
    trade(0, { ts_exchange: 0, ts_local: 4_294_967_295_999_999, exchange: "alpaca" }),
    trade(1, { price: "0", qty: "99999999999999999999.999999999999999999", side: "unknown" }),
    trade(2, { symbol: "BRK.B", venue_symbol: "BRK.B", trade_id: "D:96921" }),
    trade(3, { symbol: "ETH/XBT ~!#$%&'()*+,-./:;<=>?@[]^_`{|}", exchange: "kraken" }),
  ];
  const text = JSON.stringify(edges);
  const out: string[] = [];
  assert.equal(encodedTradeLines(text, out), true, text);
  assert.deepEqual(out, parsedTradeLines(text));
});

Deno.test("anything but trades in the feeds' own encoding is left to JSON.parse", () => {
  const one = (overrides: Partial<TradeEvent>) => JSON.stringify([trade(0, overrides)]);
  const { kind: _, ...rest } = trade(0);
  const declined = [
    // Values tradeLine trims, escapes or refuses.
    one({ price: "00012.50" }),
    one({ qty: "1.1000000000000000000000" }),
    one({ price: "1e5" }),
    one({ qty: "-1" }),
    one({ trade_id: 'quote"back\\slash' }),
    one({ trade_id: "control\u0001" }),
    one({ symbol: "BTC-€" }),
    one({ trade_id: "\ud800" }),
    one({ symbol: "" }),
    one({ trade_id: "x".repeat(257) }),
    one({ ts_exchange: 4_294_967_296_000_000 }),
    one({ ts_local: 9_999_999_999_999_999 }),
    one({ exchange: "bitmex" as TradeEvent["exchange"] }),
    one({ side: "short" as TradeEvent["side"] }),
    // Other shapes and spellings of the same data.
    JSON.stringify([trade(0)], null, 1),
    JSON.stringify([{ ...rest, kind: "trade" }]),
    JSON.stringify([{ ...trade(0), extra: 1 }]),
    JSON.stringify([trade(0), { ...trade(1), kind: "top" }]),
    JSON.stringify([trade(0)]) + " ",
    JSON.stringify([trade(0)]).replace('"ts_local":', '"ts_local":0'),
    JSON.stringify(trade(0)),
    "[]",
    "[",
    "",
  ];
  for (const text of declined) {
    const lines = ["kept"];
    assert.equal(encodedTradeLines(text, lines), false, text);
    assert.deepEqual(lines, ["kept"], text);
  }
});

Deno.test("every venue's parser encodes its trades in the form read off the text", () => {
  const RX = 1_700_000_000_000_000;
  const binance = fixtureLines("binance", "nautilus_ws_spot_trade_2021-12-12.jsonl");
  const coinbase = fixtureLines("coinbase", "channel_market_trades_2026-08-09.raw.jsonl");
  const alpaca = fixtureLines("alpaca", "docs_stream_data_v2_messages.jsonl")
    .filter((line) => line.includes('"T":"t"'));
  const kraken = '{"channel":"trade","type":"update","data":[' +
    '{"symbol":"BTC/USD","side":"buy","price":65083.10,"qty":0.00005100,"ord_type":"market",' +
    '"trade_id":4665906,"timestamp":"2026-08-16T23:37:04.708706Z"}]}';
  const symbols = binanceSymbolMap(["ETH-USDT", "BTC-USDT"]);
  const byVenue: Record<string, MarketEvent[]> = {
    binance: binance.flatMap((frame) => parseBinanceFrame(frame, RX, symbols).events),
    coinbase: coinbase.flatMap((frame) => parseCoinbaseFrame(frame, RX).events),
    kraken: parseKrakenFrame(kraken, RX).events,
    alpaca: alpaca.flatMap((frame) => parseAlpacaFrame(`[${frame}]`, RX).events),
  };
  for (const [venue, events] of Object.entries(byVenue)) {
    const trades = events.filter((event) => event.kind === "trade");
    assert.ok(trades.length > 0, `${venue}: trades in the fixtures`);
    const text = new TextDecoder().decode(encodeJson(trades));
    const lines: string[] = [];
    assert.equal(encodedTradeLines(text, lines), true, `${venue}: ${text.slice(0, 300)}`);
    assert.deepEqual(lines, parsedTradeLines(text), venue);
  }
});

Deno.test("decimals are trimmed only as far as needed to fit Decimal(38, 18)", () => {
  const text = (value: string) => toRawDecimal(value).rawJSON;
  assert.equal(text("0.00005100"), "0.00005100");
  assert.equal(text("00012.50"), "12.5");
  assert.equal(text("1.1000000000000000000000"), "1.1");
  assert.equal(
    text("99999999999999999999.999999999999999999"),
    "99999999999999999999.999999999999999999",
  );
  assert.equal(text("000"), "0");
  for (const bad of ["1e5", "-1", "1.", ".5", "", " 1", "0x10", "1,5"]) {
    assert.throws(
      () => toRawDecimal(bad),
      (e: unknown) => e instanceof RowError && e.reason === "malformed",
      bad,
    );
  }
  for (const big of ["100000000000000000000", "0.0000000000000000001"]) {
    assert.throws(
      () => toRawDecimal(big),
      (e: unknown) => e instanceof RowError && e.reason === "out_of_range",
      big,
    );
  }
  assert.throws(
    () => toRawDecimal(1.5),
    (e: unknown) => e instanceof RowError && e.reason === "malformed",
  );
});

Deno.test("book, top, quote and bar events become rows of their tables", () => {
  const book = toRow({
    kind: "book",
    exchange: "kraken",
    symbol: "BTC-USD",
    venue_symbol: "BTC/USD",
    ts_exchange: T0,
    ts_local: T0 + 1,
    action: "delta",
    bids: [["100.5", "0"], ["100.4", "2.25"]],
    asks: [],
    sequence: null,
  });
  assert.equal(book.table, "orderbook_snapshots");
  assert.match(
    JSON.stringify(book.row),
    /"bid_prices":\[100\.5,100\.4\],"bid_sizes":\[0,2\.25\],"ask_prices":\[\],"ask_sizes":\[\]/,
  );
  const top = toRow({
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: T0,
    ts_local: T0,
    bid_price: "1.1",
    bid_qty: "2",
    ask_price: "1.2",
    ask_qty: "3",
  });
  assert.equal(top.table, "quotes");
  assert.equal((top.row as { source: string }).source, "top");
  assert.equal((top.row as { bid_exchange: string }).bid_exchange, "");
  const quote = toRow({
    kind: "quote",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: T0,
    ts_local: T0,
    bid_price: "1.1",
    bid_qty: "2",
    ask_price: "1.2",
    ask_qty: "3",
    bid_exchange: "V",
    ask_exchange: null,
  });
  assert.equal((quote.row as { source: string }).source, "quote");
  assert.equal((quote.row as { bid_exchange: string }).bid_exchange, "V");
  assert.equal((quote.row as { ask_exchange: string }).ask_exchange, "");
  const bar = toRow({
    kind: "bar",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: T0,
    ts_local: T0,
    interval: "1m",
    start: T0,
    open: "1",
    high: "2",
    low: "0.5",
    close: "1.5",
    volume: "100",
    trades: null,
    vwap: null,
  });
  assert.equal(bar.table, "bars");
  assert.match(
    JSON.stringify(bar.row),
    /"bar_interval":"1m","start":\d+,"open":1,"high":2,"low":0\.5,"close":1\.5,"volume":100,"trades":null,"vwap":null/,
  );
});

Deno.test("events that cannot be stored throw RowError with a reason, whatever their shape", () => {
  const cases: Array<[unknown, string]> = [
    [null, "malformed"],
    [[], "malformed"],
    ["trade", "malformed"],
    [{ kind: "nope" }, "malformed"],
    [{ ...trade(1), exchange: "nyse" }, "malformed"],
    [{ ...trade(1), price: 1.5 }, "malformed"],
    [{ ...trade(1), side: "up" }, "malformed"],
    [{ ...trade(1), ts_exchange: 1.5 }, "malformed"],
    [{ ...trade(1), ts_exchange: -1 }, "out_of_range"],
    [{ ...trade(1), ts_local: 2 ** 53 }, "malformed"],
    [{ ...trade(1), trade_id: 7 }, "malformed"],
    [{ ...trade(1), symbol: "" }, "malformed"],
    [{ ...trade(1), symbol: "BTC\ud800" }, "malformed"],
    [{ ...trade(1), qty: "0.0000000000000000001" }, "out_of_range"],
    [
      { ...trade(1), kind: "book", action: "delta", bids: [["1"]], asks: [], sequence: 1 },
      "malformed",
    ],
    [{ ...trade(1), kind: "book", action: "delta", bids: {}, asks: [], sequence: 1 }, "malformed"],
    [
      { ...trade(1), kind: "book", action: "replace", bids: [], asks: [], sequence: 1 },
      "malformed",
    ],
  ];
  for (const [event, reason] of cases) {
    assert.throws(
      () => toRow(event as MarketEvent),
      (e: unknown) => e instanceof RowError && e.reason === reason,
      JSON.stringify(event),
    );
  }
  assert.equal(tradeRow(trade(3)).side, "sell");
});

// ---------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------

const candleTrades = (db: MarketDatabase) =>
  db.count(`SELECT sum(trades) AS n FROM ${db.table("candles_1m")}`);

async function tradeKeysUnique(db: MarketDatabase): Promise<number> {
  return await db.count(
    `SELECT uniqExact(exchange, symbol, ts_exchange, trade_id) AS n FROM ${
      db.table("market_trades")
    }`,
  );
}

Deno.test("the market-data migration creates its tables on this server and reverts cleanly", async () => {
  await using db = await marketDatabase();
  const tables = await db.rows<{ name: string; engine: string }>(
    `SELECT name, engine FROM system.tables WHERE database = ${
      quoteString(db.database)
    } ORDER BY name`,
  );
  assert.deepEqual(Object.fromEntries(tables.map((t) => [t.name, t.engine])), {
    bars: "ReplacingMergeTree",
    candles: "AggregatingMergeTree",
    candles_1m: "View",
    candles_mv: "MaterializedView",
    market_trades: "ReplacingMergeTree",
    orderbook_snapshots: "ReplacingMergeTree",
    quotes: "ReplacingMergeTree",
    schema_migrations: "ReplacingMergeTree",
  });
  const columns = await db.rows<{ name: string; type: string }>(
    `SELECT name, type FROM system.columns WHERE database = ${quoteString(db.database)} ` +
      `AND table = 'market_trades'`,
  );
  const types = Object.fromEntries(columns.map((c) => [c.name, c.type]));
  assert.equal(types.price, "Decimal(38, 18)");
  assert.equal(types.ts_exchange, "Int64");
  assert.equal(types.timestamp, "DateTime('UTC')");
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
  try {
    const migrator = new Migrator(sql, {
      dir: REPO_MIGRATIONS,
      lockKey: 7_000_001 + Math.floor(Math.random() * 1_000_000) * 2,
      clickhouse: { client: db.admin, database: db.database },
    });
    await migrator.down(0, { only: "clickhouse" });
    const left = await db.rows<{ name: string }>(
      `SELECT name FROM system.tables WHERE database = ${quoteString(db.database)}`,
    );
    assert.deepEqual(left.map((t) => t.name), ["schema_migrations"]);
  } finally {
    await sql.end();
  }
});

for (const worker of [false, true]) {
  Deno.test(
    `N trades published on clean.md.trade.* become exactly N rows, once ClickHouse is ready${
      worker ? " (writer in its own thread)" : ""
    }`,
    async () => {
      await using db = await marketDatabase();
      await using env = await streamEnv();
      const n = 3_000;
      const messages = tradeMessages(0, n);
      await env.publishAll(messages.slice(0, 100));
      let markReady!: () => void;
      const ready = new Promise<void>((resolve) => markReady = resolve);
      await using writer = await startWriter(env, db, { ready, worker });
      // Before clickhouseReady the writer has not even created its consumer.
      await env.nc.flush();
      await assert.rejects(env.consumerInfo(), /consumer not found/i);
      assert.equal(await countRaw(db, "market_trades"), 0);
      markReady();
      await env.publishAll(messages.slice(100));
      await waitFor(async () => (await countFinal(db, "market_trades")) === n, 30_000, "N rows");
      const w = writer.status.writer;
      // The rate covers the last 5 s: read it while the rows are recent.
      await waitFor(() => w.rows_per_s > 0, 5_000, "rows_per_s");
      assert.equal(await countRaw(db, "market_trades"), n);
      await allAcknowledged(env);
      assert.equal(await candleTrades(db), n);
      // A writer in its own thread reports its figures every few ms: wait for the last report.
      await waitFor(
        () => w.rows_written.market_trades === n && writer.spec.counters.acked === messages.length,
        5_000,
        "figures of every row and message",
      );
      assert.equal(w.clickhouse, "up");
      assert.equal(w.failures, 0);
      assert.equal(w.last_error, null);
      assert.equal(typeof w.last_flush_at, "number");
      assert.equal(writer.spec.counters.dead_letters, 0);
      await waitFor(() => w.pending_messages === 0 && w.buffered_rows === 0, 5_000, "status");
      assert.equal(writer.spec.counters.dropped, 0);
      await writer.stop();
    },
  );
}

Deno.test("a writer thread that cannot start fails its child with the reason; its log lines reach the main thread", async () => {
  await using env = await streamEnv();
  const { log, lines } = memoryLogger();
  const spec = batchWriterWorker({
    nats: { ...DEFAULT_CONFIG.nats, url: NATS_URL },
    clickhouse: { ...DEFAULT_CONFIG.clickhouse, url: CH_URL },
    database: "default",
    status: new MarketStatus(),
    options: writerOptions(env, { batch_rows: 0 }),
    clickhouseReady: Promise.resolve(),
    log,
  });
  const running = spec.start(new AbortController().signal);
  await assert.rejects(running.ready, /batch_rows/);
  await assert.rejects(running.done, /batch_rows/);
  // The thread connected to NATS before the writer refused its settings, and logged it here.
  assert.ok(lines.some((line) => line.message === "NATS connected" && line.component === "nats"));
});

/** Lets the stream keep only 16 KiB, after the writer's consumer exists: returns the messages it kept of 200. */
async function overflowStream(env: StreamEnv, options: BatchWriterOptions): Promise<number> {
  await ensureStreams(env.nc, [
    mdCleanStream({
      stream: env.stream,
      subject_prefix: env.prefix,
      stream_max_age_s: 3_600,
      stream_max_bytes: options.stream_max_bytes,
    }),
  ]);
  // The writer's consumer exists (it ran before); then ClickHouse stays away too long.
  await ensureConsumer(
    env.jsm,
    env.stream,
    batchWriterConsumer({
      consumer: env.consumer,
      subject_prefix: env.prefix,
      ack_wait_ms: options.ack_wait_ms,
      max_ack_pending: 2 * (options.batch_rows + (options.fetch_messages ?? 0)),
    }),
  );
  await env.publishAll(Array.from({ length: 200 }, (_, i) => [trade(i * 2)]));
  const kept = (await env.jsm.streams.info(env.stream)).state.messages;
  assert.ok(kept > 0 && kept < 200, `kept ${kept}`);
  return kept;
}

for (const worker of [false, true]) {
  Deno.test(
    `messages the stream dropped at its byte limit before they were written are counted and reported in status.writer${
      worker ? " (writer in its own thread)" : ""
    }`,
    async () => {
      await using db = await marketDatabase();
      await using env = await streamEnv();
      const small = { stream_max_bytes: 16 * 1024 };
      const kept = await overflowStream(env, writerOptions(env, small));
      const before = Date.now();
      await using writer = await startWriter(env, db, { overrides: small, worker });
      const w = writer.status.writer;
      await waitFor(
        () => writer.spec.counters.acked === kept && w.rows_written.market_trades === kept,
        10_000,
        "kept messages written",
      );
      assert.equal(writer.spec.counters.dropped, 200 - kept);
      assert.equal(w.dropped_messages, 200 - kept, "the loss reaches stream_status and health");
      assert.ok(w.last_dropped_at !== null && w.last_dropped_at >= before, `${w.last_dropped_at}`);
      assert.match(writer.status.droppedRecently(Date.now()) ?? "", /dropped \d+ messages/);
      assert.equal(await countFinal(db, "market_trades"), kept);
      await writer.stop();
      assert.equal(w.dropped_messages, 200 - kept, "kept after the writer stopped");
    },
  );
}

/** ClickHouse behind a TCP proxy the test can cut, and a client that goes through it. */
function clickHouseBehindProxy() {
  const proxy = startTcpProxy({
    hostname: new URL(CH_URL).hostname,
    port: Number(new URL(CH_URL).port || 8123),
  });
  const client = createClickHouse({ url: proxy.url, request_timeout_ms: 5_000 }, {
    database: "default",
  });
  return {
    proxy,
    client,
    async [Symbol.asyncDispose]() {
      await client.close();
      await proxy[Symbol.asyncDispose]();
    },
  };
}

Deno.test("while ClickHouse is cut off rows wait in a bounded buffer and the stream, then all N arrive once", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  await using behind = clickHouseBehindProxy();
  const { proxy, client: viaProxy } = behind;
  const n = 3_000;
  const messages = tradeMessages(0, n);
  const batchRows = 200;
  const fetchMessages = 20;
  await using writer = await startWriter(env, db, {
    clickhouse: viaProxy,
    overrides: { batch_rows: batchRows, fetch_messages: fetchMessages },
  });
  const half = Math.floor(messages.length / 3);
  await env.publishAll(messages.slice(0, half));
  await waitFor(
    async () => (await countRaw(db, "market_trades")) >= 200,
    20_000,
    "rows before the cut",
  );
  proxy.cut();
  await env.publishAll(messages.slice(half));
  const w = writer.status.writer;
  await waitFor(
    () => w.clickhouse === "down" && w.failures > 0,
    10_000,
    "writer sees ClickHouse down",
  );
  // It fills the batch being retried and one more, then stops pulling: the
  // messages it holds stop growing from one retry to the next.
  let held = -1;
  await waitFor(
    async () => {
      const failures = w.failures;
      const now = (await env.consumerInfo()).num_ack_pending;
      const stable = now === held;
      held = now;
      if (!stable) await waitFor(() => w.failures > failures, 5_000, "another retry");
      return stable;
    },
    15_000,
    "pulling stopped",
  );
  const bound = 2 * (batchRows + fetchMessages * 10);
  assert.ok(w.buffered_rows >= batchRows, `buffered ${w.buffered_rows}`);
  assert.ok(w.buffered_rows <= bound, `buffered ${w.buffered_rows} > ${bound}`);
  const info = await env.consumerInfo();
  assert.ok(info.num_pending > 0, "the rest stays in the stream");
  await waitFor(() => w.pending_messages > 0, 5_000, "pending_messages reported");
  assert.ok(w.last_error !== null);
  proxy.restore();
  await waitFor(async () => (await countFinal(db, "market_trades")) === n, 30_000, "all N rows");
  assert.equal(await tradeKeysUnique(db), n);
  assert.equal(await countRaw(db, "market_trades"), n, "no copies, not even before merges");
  await waitFor(() => writer.spec.counters.acked === messages.length, 10_000, "all acknowledged");
  assert.equal(await candleTrades(db), n, "candles count every trade once");
  await waitFor(
    () => w.clickhouse === "up" && w.last_error === null,
    5_000,
    "writer sees ClickHouse up",
  );
  await writer.stop();
});

Deno.test("a writer stopped mid-stream and started again (same durable consumer) writes every row once", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  const n = 4_000;
  const messages = tradeMessages(0, n);
  const split = Math.floor((messages.length * 2) / 3);
  const overrides = { batch_rows: 300, flush_interval_ms: 20, fetch_messages: 50 };
  await env.publishAll(messages.slice(0, split));
  const first = await startWriter(env, db, { overrides });
  await waitFor(async () => (await countRaw(db, "market_trades")) >= 600, 20_000, "first rows");
  await first.stop();
  const afterFirst = await countRaw(db, "market_trades");
  assert.ok(afterFirst >= 600 && afterFirst < n, `stopped mid-stream at ${afterFirst}`);
  await env.publishAll(messages.slice(split));
  await using second = await startWriter(env, db, { overrides });
  await waitFor(async () => (await countFinal(db, "market_trades")) === n, 30_000, "all N rows");
  assert.equal(await tradeKeysUnique(db), n);
  await allAcknowledged(env);
  assert.equal(await candleTrades(db), n);
  assert.equal(first.spec.counters.acked + second.spec.counters.acked, messages.length);
  await second.stop();
});

Deno.test("when NATS restarts mid-stream the writer pulls again and writes every row once", async () => {
  const storeDir = await Deno.makeTempDir({ prefix: "tw-nats-restart-" });
  try {
    const port = freePort();
    let server = await startNatsServer({ port, storeDir });
    try {
      await using db = await marketDatabase();
      await using env = await streamEnv(server.url);
      const n = 3_000;
      const messages = tradeMessages(0, n);
      const split = Math.floor(messages.length / 2);
      await env.publishAll(messages.slice(0, split));
      await using writer = await startWriter(env, db, {
        overrides: { batch_rows: 300, flush_interval_ms: 20, fetch_messages: 50 },
      });
      await waitFor(async () => (await countRaw(db, "market_trades")) >= 300, 20_000, "rows");
      await server.stop();
      server = await startNatsServer({ port, storeDir });
      await waitFor(
        () => env.consumerInfo().then(() => true, () => false),
        10_000,
        "JetStream answering again",
      );
      await env.publishAll(messages.slice(split));
      await waitFor(
        async () => (await countFinal(db, "market_trades")) === n,
        30_000,
        "all N rows",
      );
      assert.equal(await tradeKeysUnique(db), n);
      await allAcknowledged(env);
      assert.equal(await candleTrades(db), n);
      await writer.stop();
    } finally {
      await server.stop();
    }
  } finally {
    await Deno.remove(storeDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("redelivered messages whose trades are already stored are not inserted twice", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  const events = Array.from({ length: 100 }, (_, i) => trade(i * 2, { symbol: "BTC-USDT" }));
  const messages = Array.from({ length: 10 }, (_, i) => events.slice(i * 10, i * 10 + 10));
  await env.publishAll(messages);
  const options = writerOptions(env);
  // A writer that inserted the first five messages and died before acknowledging them.
  await ensureConsumer(
    env.jsm,
    env.stream,
    batchWriterConsumer({
      consumer: env.consumer,
      subject_prefix: env.prefix,
      ack_wait_ms: options.ack_wait_ms,
      max_ack_pending: 2 * (options.batch_rows + (options.fetch_messages ?? 0)),
    }),
  );
  const consumer = await jetstream(env.nc).consumers.get(env.stream, env.consumer);
  const fetched = await consumer.fetch({ max_messages: 5, expires: 2_000 });
  const held = [];
  for await (const msg of fetched) held.push(msg);
  assert.equal(held.length, 5);
  const stored: TradeRow[] = held.flatMap((msg) =>
    decodeJson<TradeEvent[]>(msg.data).map(tradeRow)
  );
  await db.admin.insert({
    table: db.table("market_trades"),
    values: stored,
    format: "JSONEachRow",
  });
  for (const msg of held) msg.nak();
  await env.nc.flush();

  await using writer = await startWriter(env, db);
  await waitFor(async () => (await countFinal(db, "market_trades")) === 100, 20_000, "100 rows");
  await waitFor(() => writer.spec.counters.acked === 10, 10_000, "all acknowledged");
  assert.equal(await countRaw(db, "market_trades"), 100);
  assert.equal(await candleTrades(db), 100);
  assert.equal(writer.spec.counters.duplicates_skipped, 50);
  assert.equal(writer.spec.counters.redelivered, 5);
  const [volume] = await db.rows<{ v: string }>(
    `SELECT toString(sum(volume)) AS v FROM ${db.table("candles_1m")}`,
  );
  const expected = events.reduce((sum, e) => sum + Number(e.qty.replace("0.", "")), 0);
  assert.equal(volume?.v, `0.${String(expected).padStart(8, "0")}0000000000`);
  await writer.stop();
});

Deno.test("after a restart a fresh batch re-sending stored trades counts each trade once in market_trades and the candles", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  const btc = (i: number, overrides: Partial<TradeEvent> = {}) =>
    trade(i, { symbol: "BTC-USDT", venue_symbol: "BTCUSDT", ...overrides });
  // A first engine stores BTC-USDT trades 0..49, then stops.
  const stored = Array.from({ length: 50 }, (_, i) => btc(i));
  await env.publishAll([stored.slice(0, 25), stored.slice(25)]);
  const first = await startWriter(env, db);
  await waitFor(() => first.spec.counters.acked === 2, 10_000, "first trades written");
  await first.stop();
  assert.equal(await candleTrades(db), 50);

  // A new engine: the venue's subscribe snapshot re-sends trades 40..49, fresh messages (not
  // redelivered), among new ones; ETH-USDT was never stored, so its trades have no watermark.
  await using second = await startWriter(env, db);
  const resent = stored.slice(40);
  const fresh = Array.from({ length: 20 }, (_, i) => btc(50 + i));
  const eth = Array.from({ length: 5 }, (_, i) => trade(2 * i + 1)); // older than BTC's newest
  await env.publishAll([[...resent, ...fresh.slice(0, 10)], eth, fresh.slice(10)]);
  await waitFor(() => second.spec.counters.acked === 3, 10_000, "restart batch written");
  assert.equal(second.spec.counters.redelivered, 0, "fresh messages, not redeliveries");
  assert.equal(await countFinal(db, "market_trades"), 75);
  assert.equal(await countRaw(db, "market_trades"), 75, "no trade stored twice");
  assert.equal(await candleTrades(db), 75, "the candles count each trade once");
  const [volume] = await db.rows<{ v: string }>(
    `SELECT toString(sum(volume)) AS v FROM ${db.table("candles_1m")} WHERE symbol = 'BTC-USDT'`,
  );
  const qty = [...stored, ...fresh].reduce((sum, e) => sum + Number(e.qty.replace("0.", "")), 0);
  assert.equal(volume?.v, `0.${String(qty).padStart(8, "0")}0000000000`);
  assert.equal(second.spec.counters.duplicates_skipped, 10);
  // Only the trades at or below BTC-USDT's watermark were looked up, not the whole batch.
  assert.equal(second.spec.counters.trades_checked, 10);
  const checks = second.spec.counters.stored_checks;
  assert.ok(checks >= 1, "the re-sent trades were checked");

  // Live trades: newer than every watermark, one a message, two by two on the same
  // microsecond (several fills of one order), so batch boundaries fall between equal times.
  const live = Array.from(
    { length: 400 },
    (_, i) => btc(100 + i, { ts_exchange: T0 + (100 + Math.floor(i / 2)) * 1_000 }),
  );
  await env.publishAll(live.map((t) => [t]));
  await waitFor(async () => (await candleTrades(db)) === 475, 20_000, "live trades written");
  await allAcknowledged(env);
  assert.equal(second.spec.counters.stored_checks, checks, "live trades trigger no check");
  assert.equal(second.spec.counters.trades_checked, 10);
  assert.equal(await countRaw(db, "market_trades"), 475);
  await second.stop();
});

Deno.test("a writer started while ClickHouse is away reads its watermarks when it returns, before its first insert", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  await using behind = clickHouseBehindProxy();
  const { proxy, client: viaProxy } = behind;
  const btc = (i: number) => trade(i, { symbol: "BTC-USDT", venue_symbol: "BTCUSDT" });
  const stored = Array.from({ length: 50 }, (_, i) => btc(i));
  await env.publishAll([stored]);
  const first = await startWriter(env, db);
  await waitFor(() => first.spec.counters.acked === 1, 10_000, "first trades written");
  await first.stop();

  proxy.cut();
  await using second = await startWriter(env, db, { clickhouse: viaProxy });
  const fresh = Array.from({ length: 20 }, (_, i) => btc(50 + i));
  await env.publishAll([[...stored.slice(40), ...fresh]]);
  const w = second.status.writer;
  await waitFor(() => w.clickhouse === "down" && w.failures > 0, 10_000, "ClickHouse down");
  proxy.restore();
  await waitFor(() => second.spec.counters.acked === 1, 20_000, "written once back");
  // A fresh message re-sending stored trades once ClickHouse is back: the watermarks hold.
  await env.publishAll([stored.slice(30, 40)]);
  await waitFor(() => second.spec.counters.acked === 2, 10_000, "re-sent trades handled");
  assert.equal(await countRaw(db, "market_trades"), 70);
  assert.equal(await candleTrades(db), 70);
  assert.equal(second.spec.counters.duplicates_skipped, 20);
  await second.stop();
});

Deno.test("candles from trades are the hand-computed 1-minute OHLCV, whatever the arrival order", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  const at = (minute: number, second: number, us = 0) =>
    T0 + minute * 60_000_000 + second * 1_000_000 + us;
  const t = (id: string, ts: number, price: string, qty: string, symbol = "BTC-USDT") =>
    trade(0, {
      trade_id: id,
      ts_exchange: ts,
      ts_local: ts,
      price,
      qty,
      symbol,
      venue_symbol: symbol.replace("-", ""),
    });
  // Minute 0 of BTC-USDT: open 100.5 (id 9, earliest at :01 though it arrives second),
  // high 103.25, low 99.125, close 101 (ids 8 and 10 share the last microsecond; 10 comes
  // after 8 as a number), volume 0.25 + 2 + 1.5 + 0.125 + 1 = 4.875, 5 trades.
  // Minute 1 of BTC-USDT: one trade at 18 decimals. Minute 0 of ETH-USDT: two trades.
  const messages: TradeEvent[][] = [
    [t("12", at(0, 30), "103.25", "0.25"), t("11", at(0, 20), "99.125", "2")],
    [t("9", at(0, 1), "100.5", "1.5")],
    [t("8", at(0, 59, 999_999), "102", "0.125"), t("10", at(0, 59, 999_999), "101", "1")],
    [t("13", at(1, 0), "104.000000000000000001", "0.000000000000000001")],
    [t("1", at(0, 5), "2000.1", "3", "ETH-USDT"), t("2", at(0, 6), "1999.9", "4", "ETH-USDT")],
  ];
  await using writer = await startWriter(env, db);
  await env.publishAll(messages);
  // The candles view is filled after market_trades within the same insert: wait for the writer.
  await waitFor(() => writer.spec.counters.acked === messages.length, 10_000, "all written");
  assert.equal(await countRaw(db, "market_trades"), 8);
  const candles = await db.rows<Record<string, string | number>>(
    `SELECT symbol, toUnixTimestamp(minute) AS minute, toString(open) AS open,
      toString(high) AS high, toString(low) AS low, toString(close) AS close,
      toString(volume) AS volume, toUInt32(trades) AS trades
    FROM ${db.table("candles_1m")} ORDER BY symbol, minute`,
  );
  const m0 = T0 / 1e6;
  assert.deepEqual(candles, [
    {
      symbol: "BTC-USDT",
      minute: m0,
      open: "100.500000000000000000",
      high: "103.250000000000000000",
      low: "99.125000000000000000",
      close: "101.000000000000000000",
      volume: "4.875000000000000000",
      trades: 5,
    },
    {
      symbol: "BTC-USDT",
      minute: m0 + 60,
      open: "104.000000000000000001",
      high: "104.000000000000000001",
      low: "104.000000000000000001",
      close: "104.000000000000000001",
      volume: "0.000000000000000001",
      trades: 1,
    },
    {
      symbol: "ETH-USDT",
      minute: m0,
      open: "2000.100000000000000000",
      high: "2000.100000000000000000",
      low: "1999.900000000000000000",
      close: "1999.900000000000000000",
      volume: "7.000000000000000000",
      trades: 2,
    },
  ]);
  await writer.stop();
});

Deno.test("book snapshots and deltas, quotes and tops, and bars land in their tables with exact decimals", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  const base = { exchange: "kraken", symbol: "BTC-USD", venue_symbol: "BTC/USD" } as const;
  const snapshot: BookEvent = {
    ...base,
    kind: "book",
    action: "snapshot",
    ts_exchange: T0 + 1,
    ts_local: T0 + 2,
    sequence: null,
    bids: [["65000.1", "0.5"], ["64999.999999999999999999", "1.000000000000000001"]],
    asks: [["65000.2", "99999999999999999999.999999999999999999"]],
  };
  const delta: BookEvent = {
    ...snapshot,
    action: "delta",
    ts_exchange: T0 + 3,
    sequence: 77,
    bids: [["65000.1", "0"]],
    asks: [],
  };
  const sameMicrosecond: BookEvent = { ...delta, bids: [["64999.5", "2"]] };
  const top: TopEvent = {
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: T0 + 4,
    ts_local: T0 + 5,
    bid_price: "65000.01000000",
    bid_qty: "0.00100000",
    ask_price: "65000.02000000",
    ask_qty: "2.50000000",
  };
  const quote: QuoteEvent = {
    kind: "quote",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: T0 + 6,
    ts_local: T0 + 7,
    bid_price: "189.99",
    bid_qty: "300",
    ask_price: "190.01",
    ask_qty: "100",
    bid_exchange: "V",
    ask_exchange: null,
  };
  const bar: BarEvent = {
    kind: "bar",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: T0 + 60_000_000,
    ts_local: T0 + 60_000_001,
    interval: "1m",
    start: T0,
    open: "189.5",
    high: "190.25",
    low: "189.125",
    close: "190",
    volume: "12345.000000000000000001",
    trades: 321,
    vwap: "189.876543210987654321",
  };
  const corrected: BarEvent = { ...bar, ts_local: bar.ts_local + 1, close: "190.5", trades: 322 };
  const coinbaseBar: BarEvent = {
    ...bar,
    exchange: "coinbase",
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    interval: "5m",
    trades: null,
    vwap: null,
  };
  await using writer = await startWriter(env, db);
  await env.publishAll([[snapshot], [delta, sameMicrosecond], [delta], [top], [quote], [bar], [
    corrected,
    coinbaseBar,
  ]]);
  await waitFor(() => writer.spec.counters.acked === 7, 10_000, "7 messages written");

  const books = await db.rows<Record<string, unknown>>(
    `SELECT action, toString(sequence) AS seq, ts_exchange,
      arrayMap(x -> toString(x), bid_prices) AS bp, arrayMap(x -> toString(x), bid_sizes) AS bs,
      arrayMap(x -> toString(x), ask_prices) AS ap, arrayMap(x -> toString(x), ask_sizes) AS as_
    FROM ${db.table("orderbook_snapshots")} FINAL ORDER BY ts_exchange, action, bp`,
  );
  assert.deepEqual(books, [
    {
      action: "snapshot",
      seq: null,
      ts_exchange: String(T0 + 1),
      bp: ["65000.100000000000000000", "64999.999999999999999999"],
      bs: ["0.500000000000000000", "1.000000000000000001"],
      ap: ["65000.200000000000000000"],
      as_: ["99999999999999999999.999999999999999999"],
    },
    {
      action: "delta",
      seq: "77",
      ts_exchange: String(T0 + 3),
      bp: ["64999.500000000000000000"],
      bs: ["2.000000000000000000"],
      ap: [],
      as_: [],
    },
    {
      action: "delta",
      seq: "77",
      ts_exchange: String(T0 + 3),
      bp: ["65000.100000000000000000"],
      bs: ["0.000000000000000000"],
      ap: [],
      as_: [],
    },
  ]);
  assert.equal(await countRaw(db, "orderbook_snapshots"), 4, "the repeated delta is a copy…");
  assert.equal(await countFinal(db, "orderbook_snapshots"), 3, "…that collapses");

  const quotes = await db.rows<Record<string, unknown>>(
    `SELECT source, exchange, toString(bid_price) AS bp, toString(bid_qty) AS bq,
      toString(ask_price) AS ap, toString(ask_qty) AS aq, bid_exchange, ask_exchange
    FROM ${db.table("quotes")} FINAL ORDER BY ts_exchange`,
  );
  assert.deepEqual(quotes, [
    {
      source: "top",
      exchange: "binance",
      bp: "65000.010000000000000000",
      bq: "0.001000000000000000",
      ap: "65000.020000000000000000",
      aq: "2.500000000000000000",
      bid_exchange: "",
      ask_exchange: "",
    },
    {
      source: "quote",
      exchange: "alpaca",
      bp: "189.990000000000000000",
      bq: "300.000000000000000000",
      ap: "190.010000000000000000",
      aq: "100.000000000000000000",
      bid_exchange: "V",
      ask_exchange: "",
    },
  ]);

  const bars = await db.rows<Record<string, unknown>>(
    `SELECT exchange, bar_interval, start, toString(open) AS o, toString(close) AS c,
      toString(volume) AS v, toString(trades) AS n, toString(vwap) AS vwap
    FROM ${db.table("bars")} FINAL ORDER BY exchange`,
  );
  assert.deepEqual(bars, [
    {
      exchange: "alpaca",
      bar_interval: "1m",
      start: String(T0),
      o: "189.500000000000000000",
      c: "190.500000000000000000",
      v: "12345.000000000000000001",
      n: "322",
      vwap: "189.876543210987654321",
    },
    {
      exchange: "coinbase",
      bar_interval: "5m",
      start: String(T0),
      o: "189.500000000000000000",
      c: "190.000000000000000000",
      v: "12345.000000000000000001",
      n: null,
      vwap: null,
    },
  ]);
  assert.deepEqual(writer.status.writer.rows_written, {
    orderbook_snapshots: 4,
    quotes: 2,
    bars: 3,
  });
  await writer.stop();
});

Deno.test("malformed messages and unstorable events are dead-lettered and acknowledged without blocking the rest", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  using letters = deadLetters(env);
  const subject = `${env.prefix}${cleanSubject("trade", "binance", "BTC-USDT")}`;
  await using writer = await startWriter(env, db);
  await env.publish(new TextEncoder().encode("{not json"), subject);
  await env.publish(encodeJson({ kind: "trade" }), subject);
  await env.publish([trade(0), { ...trade(2), price: "1e5" }, {
    ...trade(4),
    qty: "0.0000000000000000001",
  }]);
  await env.publishAll(tradeMessages(10, 40));
  await waitFor(async () => (await countRaw(db, "market_trades")) === 31, 10_000, "31 trades");
  await waitFor(() => letters.length === 4, 5_000, "4 dead letters");
  assert.deepEqual(letters.map((l) => [l.stage, l.exchange, l.reason]), [
    ["writer", "binance", "malformed"],
    ["writer", "binance", "malformed"],
    ["writer", "binance", "malformed"],
    ["writer", "binance", "out_of_range"],
  ]);
  assert.equal(letters[0]?.frame, "{not json");
  assert.equal((letters[2]?.event as TradeEvent | undefined)?.price, "1e5");
  assert.equal(typeof letters[3]?.at_us, "number");
  await allAcknowledged(env);
  assert.equal(writer.spec.counters.dead_letters, 4);
  await writer.stop();
});

Deno.test("a malformed message's dead letter keeps its whole frame, cut only to fit NATS and then saying so", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  using letters = deadLetters(env);
  const subject = `${env.prefix}${cleanSubject("trade", "binance", "BTC-USDT")}`;
  await using writer = await startWriter(env, db);
  const limit = env.nc.info!.max_payload;
  // Larger than the old 65,536-character cut; then one that fits NATS but whose letter,
  // wrapping it with more fields (and escaping its quotes), would not.
  const mid = `{"${"x".repeat(100_000)}`;
  const near = `{"${'"'.repeat(limit - 2_000)}`;
  await env.publish(new TextEncoder().encode(mid), subject);
  await env.publish(new TextEncoder().encode(near), subject);
  await waitFor(() => letters.length === 2, 5_000, "2 dead letters");
  assert.equal(letters[0]!.frame, mid, "the whole frame, as received");
  assert.doesNotMatch(letters[0]!.detail, /cut/);
  const cut = letters[1]!;
  assert.ok(cut.frame !== undefined && cut.frame.length < near.length, "the frame is cut");
  assert.ok(near.startsWith(cut.frame!), "what is kept is the frame's start");
  assert.match(
    cut.detail,
    new RegExp(`frame cut to ${cut.frame!.length} of ${near.length} characters`),
  );
  assert.equal(writer.spec.counters.dead_letters, 2);
  await allAcknowledged(env);
  await writer.stop();
});

/**
 * `real`, except that inserts containing a row `refuse` picks fail the way
 * ClickHouse refuses bad data (code 27). Validated rows cannot make the real
 * server refuse anything, so this stands in for a row that slipped through.
 * The writer sends `INSERT … FORMAT JSONEachRow` with its rows through `command`.
 */
function refusingClickHouse(
  real: ClickHouseClient,
  refuse: (row: Record<string, unknown>) => boolean,
): ClickHouseClient {
  return new Proxy(real, {
    get(target, property) {
      if (property === "command") {
        return (params: Parameters<ClickHouseClient["command"]>[0]) => {
          const [head = "", ...lines] = params.query.trim().split("\n");
          if (/^INSERT INTO/.test(head) && lines.some((line) => refuse(JSON.parse(line)))) {
            return Promise.reject(
              new Error(
                "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , " +
                  "(simulated), e.what() = DB::Exception",
              ),
            );
          }
          return target.command(params);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("rows ClickHouse refuses are found by splitting the batch and dead-lettered; the rest is written", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  using letters = deadLetters(env);
  const messages = tradeMessages(0, 60).map((events) =>
    events.map((e) =>
      e.trade_id === "1000017" || e.trade_id === "1000042"
        ? { ...e, trade_id: `poison-${e.trade_id}` }
        : e
    )
  );
  await env.publishAll(messages);
  const clickhouse = refusingClickHouse(
    db.admin,
    (row) => String(row.trade_id).startsWith("poison"),
  );
  await using writer = await startWriter(env, db, { clickhouse });
  await waitFor(() => writer.spec.counters.acked === messages.length, 10_000, "all acknowledged");
  assert.equal(await countRaw(db, "market_trades"), 58);
  await waitFor(() => letters.length === 2, 5_000, "2 dead letters");
  assert.deepEqual(
    letters.map((l) => [l.reason, (l.event as TradeEvent | undefined)?.trade_id]).sort(),
    [["unwritable", "poison-1000017"], ["unwritable", "poison-1000042"]],
  );
  assert.equal(writer.status.writer.failures, 0);
  await writer.stop();
});

Deno.test("when ClickHouse refuses every row the batch is kept and retried, not dead-lettered", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  let refuseAll = true;
  const clickhouse = refusingClickHouse(db.admin, () => refuseAll);
  const messages = tradeMessages(0, 30);
  await env.publishAll(messages);
  await using writer = await startWriter(env, db, { clickhouse });
  const w = writer.status.writer;
  await waitFor(() => w.failures >= 2 && w.clickhouse === "down", 10_000, "retrying");
  assert.equal(writer.spec.counters.dead_letters, 0);
  assert.match(w.last_error ?? "", /Code: 27/);
  refuseAll = false;
  await waitFor(() => writer.spec.counters.acked === messages.length, 10_000, "all acknowledged");
  assert.equal(await countFinal(db, "market_trades"), 30);
  assert.equal(writer.spec.counters.dead_letters, 0);
  assert.equal(w.clickhouse, "up");
  await writer.stop();
});

Deno.test("a restarted writer thread adds the messages the stream dropped to those of the threads before it", () => {
  const base = new MarketStatus().writer;
  base.dropped_messages = 7;
  base.last_dropped_at = 1_000;
  const life = new MarketStatus().writer;
  assert.deepEqual(
    [addWriterStatus(base, life).dropped_messages, addWriterStatus(base, life).last_dropped_at],
    [7, 1_000],
    "a thread that found no loss yet keeps the count and time of the ones before",
  );
  life.dropped_messages = 3;
  life.last_dropped_at = 2_000;
  const sum = addWriterStatus(base, life);
  assert.deepEqual([sum.dropped_messages, sum.last_dropped_at], [10, 2_000]);
});

Deno.test("the writer thread's figures count every life of the thread, as the in-thread writer's do", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  const status = new MarketStatus();
  const spec = batchWriterWorker({
    nats: { ...DEFAULT_CONFIG.nats, url: NATS_URL },
    clickhouse: { ...DEFAULT_CONFIG.clickhouse, url: CH_URL },
    database: db.database,
    status,
    options: writerOptions(env),
    clickhouseReady: Promise.resolve(),
    statusIntervalMs: 25,
  });
  const w = status.writer;
  // Each life writes 5 one-trade messages; the supervisor starts the same spec again.
  for (const life of [0, 1]) {
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    await running.ready;
    await env.publishAll(Array.from({ length: 5 }, (_, i) => [trade(life * 5 + i)]));
    const total = (life + 1) * 5;
    await waitFor(
      () => spec.counters.acked === total && w.rows_written.market_trades === total,
      10_000,
      `figures of life ${life}`,
    );
    controller.abort();
    await running.done;
    assert.equal(spec.counters.acked, total, "acked after the thread stopped");
    assert.equal(spec.counters.messages, total, "messages after the thread stopped");
    assert.equal(w.rows_written.market_trades, total, "rows_written after the thread stopped");
    assert.equal(typeof w.last_flush_at, "number");
  }
  assert.equal(await countFinal(db, "market_trades"), 10);
});

Deno.test("refused rows at the head of a batch are dead-lettered and the good rows behind them written", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  using letters = deadLetters(env);
  // More refused rows in a row than the writer tries one by one before it suspects the schema.
  const poison = Array.from(
    { length: 12 },
    (_, i) => trade(i * 2, { trade_id: `poison-${i}` }),
  );
  await env.publish(poison);
  const good = tradeMessages(100, 200);
  await env.publishAll(good);
  const clickhouse = refusingClickHouse(
    db.admin,
    (row) => String(row.trade_id).startsWith("poison"),
  );
  await using writer = await startWriter(env, db, { clickhouse });
  await waitFor(
    () => writer.spec.counters.acked === good.length + 1,
    10_000,
    "all acknowledged",
  );
  assert.equal(await countRaw(db, "market_trades"), 100);
  assert.equal(await candleTrades(db), 100);
  await waitFor(() => letters.length === 12, 5_000, "12 dead letters");
  assert.deepEqual(
    letters.map((l) => (l.event as TradeEvent | undefined)?.trade_id).sort(),
    poison.map((e) => e.trade_id).sort(),
  );
  await writer.stop();
});

Deno.test("a batch of nothing but refused rows waits for the next message, then is dead-lettered when ClickHouse takes that one", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  using letters = deadLetters(env);
  const clickhouse = refusingClickHouse(
    db.admin,
    (row) => String(row.trade_id).startsWith("poison"),
  );
  await using writer = await startWriter(env, db, { clickhouse });
  const w = writer.status.writer;
  // A quiet market: one message of two bad trades, alone. It may be a schema problem: kept.
  await env.publish([trade(0, { trade_id: "poison-a" }), trade(2, { trade_id: "poison-b" })]);
  await waitFor(() => w.failures >= 2, 10_000, "the lone bad batch refused");
  assert.equal(writer.spec.counters.dead_letters, 0);
  // The next message is taken: the table is fine, so the two rows are bad.
  await env.publish([trade(4), trade(6)]);
  await waitFor(() => writer.spec.counters.acked === 2, 10_000, "both acknowledged");
  assert.equal(await countRaw(db, "market_trades"), 2);
  await waitFor(() => letters.length === 2, 5_000, "2 dead letters");
  assert.deepEqual(
    letters.map((l) => [l.reason, (l.event as TradeEvent | undefined)?.trade_id]).sort(),
    [["unwritable", "poison-a"], ["unwritable", "poison-b"]],
  );
  await waitFor(() => w.clickhouse === "up", 5_000, "writer sees ClickHouse up");
  await writer.stop();
});

Deno.test("a lone refused row of a rarely-written table is dead-lettered beside the trades ClickHouse takes, and holds none of them", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  using letters = deadLetters(env);
  const badQuote = (i: number): QuoteEvent => ({
    kind: "quote",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: T0 + i,
    ts_local: T0 + i + 1,
    bid_price: "189.99",
    bid_qty: "300",
    ask_price: "190.01",
    ask_qty: "200",
    bid_exchange: "POISON",
    ask_exchange: "V",
  });
  const clickhouse = refusingClickHouse(db.admin, (row) => row.bid_exchange === "POISON");
  await using writer = await startWriter(env, db, { clickhouse, overrides: { batch_rows: 20 } });
  const w = writer.status.writer;
  // One bad quote and no other quote after it: only trades, many batches' worth. ClickHouse
  // takes them, so the quote row is bad, not the table: it must not hold them.
  await env.publish([badQuote(0)]);
  const trades = tradeMessages(0, 300);
  await env.publishAll(trades);
  await waitFor(
    () => writer.spec.counters.acked === trades.length + 1,
    10_000,
    "all acknowledged",
  );
  assert.equal(await countRaw(db, "market_trades"), 300);
  await waitFor(() => letters.length === 1, 5_000, "1 dead letter");
  assert.deepEqual(
    letters.map((l) => [l.reason, (l.event as QuoteEvent | undefined)?.bid_exchange]),
    [["unwritable", "POISON"]],
  );
  // ClickHouse has just taken rows: another lone bad quote is dead-lettered at once, without
  // a failed attempt, and a refused row is never reported as ClickHouse being down.
  const failures = w.failures;
  await env.publish([badQuote(1)]);
  await waitFor(
    () => writer.spec.counters.acked === trades.length + 2,
    10_000,
    "the second quote acknowledged",
  );
  await waitFor(() => letters.length === 2, 5_000, "2 dead letters");
  assert.equal(w.failures, failures);
  assert.equal(w.clickhouse, "up");
  await writer.stop();
});

Deno.test("a table whose rows ClickHouse refuses again and again while it takes the trades beside them is dead-lettered, not held", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  using letters = deadLetters(env);
  // Every quote is refused (bad rows, or a quotes table that is wrong); trades are taken.
  const clickhouse = refusingClickHouse(db.admin, (row) => row.source === "quote");
  await using writer = await startWriter(env, db, { clickhouse, overrides: { batch_rows: 20 } });
  const quotes = Array.from({ length: 12 }, (_, i): QuoteEvent => ({
    kind: "quote",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: T0 + i,
    ts_local: T0 + i + 1,
    bid_price: "189.99",
    bid_qty: "300",
    ask_price: "190.01",
    ask_qty: "200",
    bid_exchange: "V",
    ask_exchange: null,
  }));
  await env.publish(quotes);
  const trades = tradeMessages(0, 300);
  await env.publishAll(trades);
  await waitFor(
    () => writer.spec.counters.acked === trades.length + 1,
    10_000,
    "all acknowledged",
  );
  assert.equal(await countRaw(db, "market_trades"), 300);
  assert.equal(await countRaw(db, "quotes"), 0);
  await waitFor(() => letters.length === 12, 5_000, "12 dead letters");
  assert.ok(letters.every((l) => l.reason === "unwritable"));
  await writer.stop();
});

Deno.test("an insert cut off while the server still runs it is waited for, so its retry does not count candles twice", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  const messages = tradeMessages(0, 200);
  await env.publishAll(messages);
  // The first market_trades insert reaches the server, which is still reading it when the
  // client loses the connection (ECONNRESET): the server finishes it 1.5 s later.
  let slowInsert: Promise<unknown> | null = null;
  const clickhouse = new Proxy(db.admin, {
    get(target, property) {
      if (property === "command") {
        return (params: Parameters<ClickHouseClient["command"]>[0]) => {
          if (slowInsert === null && /^INSERT INTO .*market_trades/.test(params.query)) {
            const url = new URL(CH_URL);
            url.searchParams.set("query_id", params.query_id ?? "");
            const body = new TextEncoder().encode(params.query);
            slowInsert = fetch(url, {
              method: "POST",
              body: new ReadableStream<Uint8Array>({
                async start(controller) {
                  controller.enqueue(body.subarray(0, body.length - 1));
                  await new Promise((resolve) => setTimeout(resolve, 1_500));
                  controller.enqueue(body.subarray(body.length - 1));
                  controller.close();
                },
              }),
            }).then(async (response) => {
              assert.equal(response.status, 200, await response.text());
            });
            return Promise.reject(
              Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }),
            );
          }
          return target.command(params);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await using writer = await startWriter(env, db, { clickhouse });
  await waitFor(() => writer.spec.counters.acked === messages.length, 10_000, "all acknowledged");
  assert.ok(slowInsert !== null, "the first insert was cut off");
  await slowInsert;
  assert.equal(await countFinal(db, "market_trades"), 200);
  assert.equal(await candleTrades(db), 200, "candles count every trade once");
  assert.equal(await countRaw(db, "market_trades"), 200, "the retry inserted nothing again");
  assert.ok(writer.spec.counters.duplicates_skipped > 0, "the retry found the rows stored");
  await writer.stop();
});
