/**
 * The batch writer in a thread of its own: a child of the market supervisor
 * that runs {@linkcode batchWriterActor} in a Web Worker
 * (`_batch_writer_thread.ts`) with its own NATS connection and ClickHouse
 * client, so that pulling, row conversion and inserts never take time from
 * the feeds on the main thread. Same stream, same durable consumer, same
 * guarantees: the writer code is the one that runs in-thread.
 *
 * The thread's life is that of any {@linkcode startThreadChild} child;
 * stopping lets the writer finish its pull and write what it holds. Its
 * figures arrive by message: `status.writer` and the writer's counters are
 * refreshed every `status_interval_ms`, and its log lines are written by
 * `log`. The thread pulls nothing before it is sent `clickhouse_ready`.
 *
 * @example
 * ```ts ignore
 * batchWriterWorker({
 *   nats: config.nats, clickhouse: config.clickhouse, database: config.clickhouse.database,
 *   options: config.writer, status, clickhouseReady, log,
 * });
 * ```
 *
 * @module
 */

import type { ClickHouseOptions } from "../adapters/clickhouse.ts";
import type { NatsOptions } from "../adapters/nats.ts";
import type { Logger } from "../lib/log.ts";
import { nullLogger } from "../lib/log.ts";
import type { MarketStatus, WriterStatus } from "../market/status.ts";
import {
  BATCH_WRITER_NAME,
  type BatchWriterChildSpec,
  type BatchWriterCounters,
  type BatchWriterOptions,
  DEFAULT_SHUTDOWN_GRACE_MS,
  DEFAULT_STATUS_INTERVAL_MS,
  FETCH_EXPIRES_MS,
  newBatchWriterCounters,
} from "./batch_writer.ts";
import { startThreadChild } from "./thread_child.ts";
import type { Running } from "./types.ts";
import { addCounts } from "../lib/counts.ts";

/** How often the worker reports its figures by default, in ms. */
export const DEFAULT_WORKER_STATUS_INTERVAL_MS = 250;

/** What the writer's thread is started with (everything it needs to connect on its own). */
export interface WriterThreadStart {
  /** The `nats` section: the thread opens its own connection. */
  nats: NatsOptions;
  /** The `clickhouse` section: the thread creates its own client (bound to `default`). */
  clickhouse: ClickHouseOptions;
  /** The database holding the market-data tables. */
  database: string;
  /** The writer's settings. */
  writer: BatchWriterOptions;
}

/** The figures the writer's thread reports. */
export interface WriterThreadStatus {
  /** `status.writer` of the thread. */
  writer: WriterStatus;
  /** The writer's counters. */
  counters: BatchWriterCounters;
}

/** Sent to the writer's thread once ClickHouse's migrations are applied. */
export const CLICKHOUSE_READY = "clickhouse_ready";

/** What {@linkcode batchWriterWorker} needs. */
export interface BatchWriterWorkerDeps {
  /** NATS settings for the thread's own connection. */
  nats: NatsOptions;
  /** ClickHouse settings for the thread's own client. */
  clickhouse: ClickHouseOptions;
  /** The database holding the market-data tables. */
  database: string;
  /** The writer's settings. */
  options: BatchWriterOptions;
  /** Shared pipeline figures; `status.writer` is refreshed from the thread. */
  status: MarketStatus;
  /** Resolves once ClickHouse's migrations are applied; the thread pulls nothing before. */
  clickhouseReady: Promise<void>;
  /** Writes the thread's log lines. @default {nullLogger} */
  log?: Logger;
  /** How often the thread reports its figures, in ms. @default {DEFAULT_WORKER_STATUS_INTERVAL_MS} */
  statusIntervalMs?: number;
}

/**
 * The batch writer as a supervised child running in a Web Worker; restart
 * `permanent`. A restart starts a new worker (the durable consumer carries
 * on where the last one stopped; what it held unacknowledged is redelivered).
 */
export function batchWriterWorker(deps: BatchWriterWorkerDeps): BatchWriterChildSpec {
  const counters = newBatchWriterCounters();
  const grace = deps.options.shutdown_grace_ms ?? DEFAULT_SHUTDOWN_GRACE_MS;
  const shutdownMs = FETCH_EXPIRES_MS + grace + 3_000;
  return {
    name: BATCH_WRITER_NAME,
    shutdownMs,
    counters,
    // The thread is terminated when it has not stopped by the time the supervisor gives up on it.
    start: (signal) => startWorker(deps, counters, signal, shutdownMs),
  };
}

/**
 * The figures of a writer thread (`life`, counted from its start) on top of
 * those of the threads before it (`base`): counts since the engine started
 * (`rows_written`, `failures`, `dropped_messages`) are added, the rest is the
 * thread's, except that a thread that has written nothing (or found no loss)
 * yet keeps the last `last_flush_at` (`last_dropped_at`).
 */
export function addWriterStatus(base: WriterStatus, life: WriterStatus): WriterStatus {
  return {
    ...life,
    rows_written: addCounts(base.rows_written, life.rows_written) as Record<string, number>,
    failures: base.failures + life.failures,
    last_flush_at: life.last_flush_at ?? base.last_flush_at,
    dropped_messages: base.dropped_messages + life.dropped_messages,
    last_dropped_at: life.last_dropped_at ?? base.last_dropped_at,
  };
}

function startWorker(
  deps: BatchWriterWorkerDeps,
  counters: BatchWriterCounters,
  signal: AbortSignal,
  stopTimeoutMs: number,
): Running {
  // Each thread counts from zero: its figures are added to those of the threads before it.
  const writerBase = structuredClone(deps.status.writer);
  const countersBase = { ...counters };
  const thread = startThreadChild<WriterThreadStart, WriterThreadStatus>({
    module: new URL("./_batch_writer_thread.ts", import.meta.url),
    name: BATCH_WRITER_NAME,
    start: {
      nats: deps.nats,
      clickhouse: deps.clickhouse,
      database: deps.database,
      writer: deps.options,
    },
    statusIntervalMs: Math.min(
      deps.statusIntervalMs ?? DEFAULT_WORKER_STATUS_INTERVAL_MS,
      deps.options.status_interval_ms ?? DEFAULT_STATUS_INTERVAL_MS,
    ),
    onStatus: (status) => {
      Object.assign(deps.status.writer, addWriterStatus(writerBase, status.writer));
      Object.assign(counters, addCounts(countersBase, status.counters));
    },
    log: deps.log ?? nullLogger,
    stopTimeoutMs,
  }, signal);
  deps.clickhouseReady.then(() => thread.send({ type: CLICKHOUSE_READY }), () => {});
  return thread;
}
