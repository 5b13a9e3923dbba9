/**
 * The batch writer's tests' services: a scratch ClickHouse database with the
 * repository's migrations applied (the migration lock in PostgreSQL), a
 * private MD_CLEAN-like JetStream stream with its own subject prefix and
 * consumer, and a writer started on them. `TW_TEST_CLICKHOUSE_URL`,
 * `TW_TEST_NATS_URL` and `TW_TEST_POSTGRES_URL` override the local services.
 *
 * @module
 */

import postgres from "postgres";
import type { ClickHouseClient } from "@clickhouse/client";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { createClickHouse, quoteIdentifier } from "../adapters/clickhouse.ts";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { Migrator } from "../adapters/migrator.ts";
import { ensureStreams } from "../adapters/nats.ts";
import {
  batchWriterActor,
  type BatchWriterChildSpec,
  type BatchWriterOptions,
  type WriterDeadLetter,
} from "../actors/batch_writer.ts";
import type { Running } from "../actors/types.ts";
import { batchWriterWorker } from "../actors/batch_writer_worker.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { MarketEvent } from "../market/events.ts";
import { mdCleanStream } from "../market/md_stream.ts";
import { MarketStatus } from "../market/status.ts";
import { cleanSubject } from "../market/subjects.ts";
import { waitFor } from "./_helpers.ts";

/** ClickHouse's HTTP URL. */
export const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
/** The shared NATS server. */
export const NATS_URL = Deno.env.get("TW_TEST_NATS_URL") ?? "nats://127.0.0.1:4222";
/** PostgreSQL's admin database (it holds the migration lock). */
export const PG_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
/** The repository's migrations (`migrations/`). */
export const REPO_MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;

/** 12 random hex digits, for names of scratch databases, streams and prefixes. */
export function randomId(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 12);
}

/** A scratch ClickHouse database with the market-data schema, and ways to read it. */
export interface MarketDatabase extends AsyncDisposable {
  /** Client bound to "default". */
  admin: ClickHouseClient;
  database: string;
  /** `<database>.<table>`, quoted. */
  table(name: string): string;
  rows<T>(query: string): Promise<T[]>;
  count(query: string): Promise<number>;
}

/** A fresh ClickHouse database with the repository's migrations applied; dropped on dispose. */
export async function marketDatabase(): Promise<MarketDatabase> {
  const admin = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  const database = `tw_test_${randomId()}`;
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
  try {
    const migrator = new Migrator(sql, {
      dir: REPO_MIGRATIONS,
      lockKey: 7_000_000 + Math.floor(Math.random() * 1_000_000) * 2,
      clickhouse: { client: admin, database },
    });
    await migrator.up(undefined, { only: "clickhouse" });
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

/** A NATS connection and a private MD_CLEAN-like stream, subject prefix and consumer name. */
export interface StreamEnv extends AsyncDisposable {
  nc: NatsConnection;
  jsm: JetStreamManager;
  prefix: string;
  stream: string;
  consumer: string;
  /** Publishes one message (a JSON array of events) and waits for JetStream to store it. */
  publish(events: unknown[] | Uint8Array, subject?: string): Promise<void>;
  /** Publishes each message in order. */
  publishAll(messages: unknown[][]): Promise<void>;
  consumerInfo(): Promise<{ num_pending: number; num_ack_pending: number }>;
}

/**
 * The writer's dead letters published under `env`'s prefix (`dlq.md.>`), in
 * the order they arrive; disposing it unsubscribes.
 */
export function deadLetters(env: StreamEnv): WriterDeadLetter[] & Disposable {
  const letters: WriterDeadLetter[] = [];
  const sub = env.nc.subscribe(`${env.prefix}dlq.md.>`, {
    callback: (_error, msg) => {
      letters.push(decodeJson<WriterDeadLetter>(msg.data));
    },
  });
  return Object.assign(letters, { [Symbol.dispose]: () => sub.unsubscribe() });
}

/** A NATS connection with a private MD_CLEAN-like stream; the stream is deleted on dispose. */
export async function streamEnv(url = NATS_URL): Promise<StreamEnv> {
  const id = randomId();
  const prefix = `t${id}.`;
  const stream = `TW_TEST_${id}`;
  const consumer = `writer_${id}`;
  const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
  const jsm = await jetstreamManager(nc);
  await ensureStreams(nc, [
    mdCleanStream({
      stream,
      subject_prefix: prefix,
      stream_max_bytes: 256 * 1024 * 1024,
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
    consumerInfo: async () => {
      const info = await jsm.consumers.info(stream, consumer);
      return { num_pending: info.num_pending, num_ack_pending: info.num_ack_pending };
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

/** The batch writer's options for `env`: small batches, quick flushes and retries, but for `overrides`. */
export function writerOptions(
  env: StreamEnv,
  overrides: Partial<BatchWriterOptions> = {},
): BatchWriterOptions {
  return {
    batch_rows: 500,
    flush_interval_ms: 30,
    stream_max_bytes: 256 * 1024 * 1024,
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

/** A batch writer started by {@linkcode startWriter}; disposing it stops it. */
export interface RunningWriter extends AsyncDisposable {
  spec: BatchWriterChildSpec;
  running: Running;
  status: MarketStatus;
  stop(): Promise<void>;
}

/**
 * Starts a batch writer reading `env`'s stream into `db` (in its own thread
 * with `worker`), once it is ready.
 */
export async function startWriter(
  env: StreamEnv,
  db: MarketDatabase,
  options: {
    overrides?: Partial<BatchWriterOptions>;
    clickhouse?: ClickHouseClient;
    ready?: Promise<void>;
    /** Run the writer in its own thread (`batchWriterWorker`), with its own connections. */
    worker?: boolean;
  } = {},
): Promise<RunningWriter> {
  const status = new MarketStatus();
  const spec = options.worker
    ? batchWriterWorker({
      nats: { ...DEFAULT_CONFIG.nats, url: NATS_URL },
      clickhouse: { ...DEFAULT_CONFIG.clickhouse, url: CH_URL },
      database: db.database,
      status,
      options: writerOptions(env, options.overrides),
      clickhouseReady: options.ready ?? Promise.resolve(),
      statusIntervalMs: 25,
    })
    : batchWriterActor({
      nats: env.nc,
      clickhouse: options.clickhouse ?? db.admin,
      database: db.database,
      status,
      options: writerOptions(env, options.overrides),
      clickhouseReady: options.ready ?? Promise.resolve(),
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

/** Waits until the writer's consumer has nothing pending and nothing unacknowledged. */
export async function allAcknowledged(env: StreamEnv): Promise<void> {
  await waitFor(
    async () => {
      const info = await env.consumerInfo();
      return info.num_pending === 0 && info.num_ack_pending === 0;
    },
    10_000,
    "every message acknowledged",
  );
}

/** Rows of `table` once ClickHouse has collapsed its duplicates (`FINAL`). */
export const countFinal = (db: MarketDatabase, table: string) =>
  db.count(`SELECT count() AS n FROM ${db.table(table)} FINAL`);
/** Rows of `table` as stored, duplicates included. */
export const countRaw = (db: MarketDatabase, table: string) =>
  db.count(`SELECT count() AS n FROM ${db.table(table)}`);
