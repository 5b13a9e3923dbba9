/**
 * The batch writer inserts each trade of a fresh batch once, even when the
 * batch carries it twice (after a restart the validator's trade-id memory is
 * empty, and Coinbase's subscribe snapshot re-sends trades still waiting in
 * the stream): `market_trades` would collapse the copies, but the `candles`
 * view counts every inserted row. Copies within a batch are found without
 * asking ClickHouse. Runs against the real NATS JetStream, ClickHouse and
 * PostgreSQL (migration lock); each test uses its own tw_test_<random>
 * ClickHouse database (dropped) and its own stream and consumer.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import type { ClickHouseClient } from "@clickhouse/client";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { createClickHouse, quoteIdentifier } from "../adapters/clickhouse.ts";
import { encodeJson } from "../adapters/codec.ts";
import { Migrator } from "../adapters/migrator.ts";
import { ensureStreams } from "../adapters/nats.ts";
import {
  batchWriterActor,
  type BatchWriterChildSpec,
  type BatchWriterOptions,
} from "../actors/batch_writer.ts";
import type { Running } from "../actors/types.ts";
import type { MarketEvent, TradeEvent } from "../market/events.ts";
import { mdCleanStream } from "../market/md_stream.ts";
import { MarketStatus } from "../market/status.ts";
import { cleanSubject } from "../market/subjects.ts";
import { waitFor } from "./_helpers.ts";

const CH_URL = "http://127.0.0.1:8123";
const NATS_URL = "nats://127.0.0.1:4222";
const PG_URL = "postgres://postgres@127.0.0.1:5432/postgres";
const REPO_MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
/** 2023-11-14 22:13:00 UTC, on a minute boundary, in µs. */
const T0 = 1_699_999_980_000_000;

function randomId(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 12);
}

function trade(i: number, overrides: Partial<TradeEvent> = {}): TradeEvent {
  return {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: T0 + i * 1_000,
    ts_local: T0 + i * 1_000 + 250,
    trade_id: String(1_000_000 + i),
    price: `${100 + (i % 7)}.5`,
    qty: "0.1",
    side: "buy",
    ...overrides,
  };
}

interface MarketDatabase extends AsyncDisposable {
  admin: ClickHouseClient;
  database: string;
  table(name: string): string;
  rows<T>(query: string): Promise<T[]>;
  count(query: string): Promise<number>;
}

async function marketDatabase(): Promise<MarketDatabase> {
  const admin = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  const database = `tw_test_dup_${randomId()}`;
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
  try {
    await new Migrator(sql, {
      dir: REPO_MIGRATIONS,
      lockKey: 7_000_000 + Math.floor(Math.random() * 1_000_000) * 2,
      clickhouse: { client: admin, database },
    }).up(undefined, { only: "clickhouse" });
  } finally {
    await sql.end();
  }
  const rows = async <T>(query: string) => {
    const result = await admin.query({ query, format: "JSONEachRow" });
    return await result.json<T>();
  };
  return {
    admin,
    database,
    table: (name) => `${quoteIdentifier(database)}.${quoteIdentifier(name)}`,
    rows,
    count: async (query) => Number((await rows<{ n: string | number }>(query))[0]?.n ?? NaN),
    [Symbol.asyncDispose]: async () => {
      try {
        await admin.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
      } finally {
        await admin.close();
      }
    },
  };
}

interface StreamEnv extends AsyncDisposable {
  nc: NatsConnection;
  jsm: JetStreamManager;
  prefix: string;
  stream: string;
  consumer: string;
  publish(events: unknown[] | Uint8Array, subject?: string): Promise<void>;
  publishAll(messages: unknown[][]): Promise<void>;
}

async function streamEnv(): Promise<StreamEnv> {
  const id = randomId();
  const prefix = `t${id}.`;
  const stream = `TW_TEST_DUP_${id}`;
  const consumer = `writer_${id}`;
  const nc = await connect({ servers: NATS_URL, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
  const jsm = await jetstreamManager(nc);
  await ensureStreams(nc, [
    mdCleanStream({
      stream,
      subject_prefix: prefix,
      stream_max_bytes: 64 * 1024 * 1024,
      stream_max_age_s: 3_600,
    }),
  ]);
  const js = jetstream(nc);
  const publish = async (events: unknown[] | Uint8Array, subject?: string) => {
    const first = Array.isArray(events) ? events[0] as MarketEvent | undefined : undefined;
    const target = subject ??
      (first ? `${prefix}${cleanSubject(first.kind, first.exchange, first.symbol)}` : "");
    await js.publish(target, events instanceof Uint8Array ? events : encodeJson(events));
  };
  return {
    nc,
    jsm,
    prefix,
    stream,
    consumer,
    publish,
    publishAll: async (messages) => {
      for (const message of messages) await publish(message);
    },
    [Symbol.asyncDispose]: async () => {
      try {
        await jsm.streams.delete(stream).catch(() => {});
      } finally {
        await nc.close();
      }
    },
  };
}

function writerOptions(
  env: StreamEnv,
  overrides: Partial<BatchWriterOptions> = {},
): BatchWriterOptions {
  return {
    batch_rows: 500,
    flush_interval_ms: 30,
    stream_max_bytes: 64 * 1024 * 1024,
    stream_max_age_s: 3_600,
    retry_initial_ms: 50,
    retry_max_ms: 300,
    stream: env.stream,
    consumer: env.consumer,
    subject_prefix: env.prefix,
    ack_wait_ms: 10_000,
    fetch_messages: 100,
    status_interval_ms: 25,
    consumer_info_interval_ms: 100,
    shutdown_grace_ms: 2_000,
    ...overrides,
  };
}

interface RunningWriter extends AsyncDisposable {
  spec: BatchWriterChildSpec;
  running: Running;
  status: MarketStatus;
  stop(): Promise<void>;
}

async function startWriter(
  env: StreamEnv,
  db: MarketDatabase,
  options: { overrides?: Partial<BatchWriterOptions>; clickhouse?: ClickHouseClient } = {},
): Promise<RunningWriter> {
  const status = new MarketStatus();
  const spec = batchWriterActor({
    nats: env.nc,
    clickhouse: options.clickhouse ?? db.admin,
    database: db.database,
    status,
    options: writerOptions(env, options.overrides),
    clickhouseReady: Promise.resolve(),
  });
  const controller = new AbortController();
  const running = spec.start(controller.signal);
  await running.ready;
  let stopped: Promise<void> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      controller.abort();
      await running.done;
    })();
  return { spec, running, status, stop, [Symbol.asyncDispose]: stop };
}

const countFinal = (db: MarketDatabase, table: string) =>
  db.count(`SELECT count() AS n FROM ${db.table(table)} FINAL`);

/** The `candles` of the test's trades (all in one minute): trades and volume as text. */
async function candle(db: MarketDatabase) {
  const [row] = await db.rows<{ trades: string; volume: string }>(
    `SELECT toString(countMerge(trades)) AS trades, toString(sumMerge(volume)) AS volume
     FROM ${db.table("candles")}`,
  );
  return row;
}

Deno.test("a fresh batch carrying the same trade twice counts it once in the candles, as in market_trades", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  // Two messages of one batch carry trade 1 (e.g. the validator restarted between them and its
  // trade-id memory was empty): neither is redelivered, and the symbol has no watermark yet.
  const t0 = trade(0);
  const t1 = trade(1);
  await env.publishAll([[t0, t1], [t1]]);
  await using writer = await startWriter(env, db, { overrides: { flush_interval_ms: 500 } });
  await waitFor(() => writer.spec.counters.acked === 2, 10_000, "both messages written");
  assert.equal(writer.spec.counters.batches, 1, "one batch");
  assert.equal(await countFinal(db, "market_trades"), 2);
  assert.deepEqual(
    await candle(db),
    { trades: "2", volume: "0.200000000000000000" },
    "the candle counts each stored trade once",
  );
  assert.equal(writer.spec.counters.duplicates_skipped, 1);
  assert.equal(writer.spec.counters.stored_checks, 0, "copies within a batch need no query");
  await writer.stop();
});

Deno.test("a fresh batch above the watermark drops a trade it repeats out of order, without asking ClickHouse", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  await env.publish([trade(0), trade(1), trade(2)]);
  await using writer = await startWriter(env, db, { overrides: { flush_interval_ms: 500 } });
  await waitFor(() => writer.spec.counters.acked === 1, 10_000, "the first batch written");
  // Newer than everything stored, but trade 5 comes again after trade 6 (a re-sent snapshot).
  await env.publishAll([[trade(5), trade(6)], [trade(4), trade(5)]]);
  await waitFor(() => writer.spec.counters.acked === 3, 10_000, "the second batch written");
  assert.equal(writer.spec.counters.batches, 2, "two batches");
  assert.equal(await countFinal(db, "market_trades"), 6);
  assert.deepEqual(await candle(db), { trades: "6", volume: "0.600000000000000000" });
  assert.equal(writer.spec.counters.duplicates_skipped, 1);
  assert.equal(writer.spec.counters.stored_checks, 0, "trades above the watermark need no query");
  await writer.stop();
});

Deno.test("trades sharing one exchange time with different ids are all stored, whatever their order", async () => {
  await using db = await marketDatabase();
  await using env = await streamEnv();
  // Fills of one order at one time: ids in order in the first message, not in the second.
  const at = (id: number) => trade(0, { trade_id: String(id) });
  await env.publishAll([[at(10), at(11), at(12)], [at(14), at(13)]]);
  await using writer = await startWriter(env, db, { overrides: { flush_interval_ms: 500 } });
  await waitFor(() => writer.spec.counters.acked === 2, 10_000, "both messages written");
  assert.equal(writer.spec.counters.batches, 1, "one batch");
  assert.equal(await countFinal(db, "market_trades"), 5);
  assert.deepEqual(await candle(db), { trades: "5", volume: "0.500000000000000000" });
  assert.equal(writer.spec.counters.duplicates_skipped, 0);
  await writer.stop();
});
