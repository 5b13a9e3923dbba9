/**
 * The batch writer in a thread of its own: a child of the market supervisor
 * that runs {@linkcode batchWriterActor} in a Web Worker
 * (`_batch_writer_thread.ts`) with its own NATS connection and ClickHouse
 * client, so that pulling, row conversion and inserts never take time from
 * the feeds and the validator on the main thread. Same stream, same durable
 * consumer, same guarantees: the writer code is the one that runs in-thread.
 *
 * The child's life maps onto the worker's: `ready` when the writer in the
 * worker is ready, `done` when it exits (rejecting when it failed or the
 * worker died), and stopping asks the worker to stop (it finishes its pull and
 * writes what it holds) before the worker is terminated. Its figures arrive
 * by message: `status.writer` and the writer's counters are refreshed every
 * `status_interval_ms`, and its log lines are written by `log`.
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
import type { Fields, Level, Logger } from "../lib/log.ts";
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
import type { Running } from "./types.ts";

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
  /** How often the thread reports `status`, in ms. */
  status_interval_ms: number;
}

/** Messages from the main thread to the writer's thread. */
export type ToWriterThread =
  | { type: "start"; start: WriterThreadStart }
  | { type: "clickhouse_ready" }
  | { type: "stop" };

/** Messages from the writer's thread to the main thread. */
export type FromWriterThread =
  | { type: "ready" }
  | { type: "done" }
  | { type: "failed"; error: Record<string, unknown> }
  | { type: "status"; writer: WriterStatus; counters: BatchWriterCounters }
  | { type: "log"; level: Level; bindings: Fields; message: string; fields?: Fields };

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
  return {
    name: BATCH_WRITER_NAME,
    shutdownMs: FETCH_EXPIRES_MS + grace + 3_000,
    counters,
    start: (signal) => startWorker(deps, counters, signal),
  };
}

function startWorker(
  deps: BatchWriterWorkerDeps,
  counters: BatchWriterCounters,
  signal: AbortSignal,
): Running {
  const log = deps.log ?? nullLogger;
  const worker = new Worker(new URL("./_batch_writer_thread.ts", import.meta.url), {
    type: "module",
    name: BATCH_WRITER_NAME,
  });
  const ready = Promise.withResolvers<void>();
  const done = Promise.withResolvers<void>();
  let finished = false;
  const finish = (error?: Error) => {
    if (finished) return;
    finished = true;
    signal.removeEventListener("abort", onAbort);
    worker.terminate();
    if (error) {
      ready.reject(error);
      done.reject(error);
    } else {
      ready.resolve();
      done.resolve();
    }
  };
  const send = (message: ToWriterThread) => {
    if (!finished) worker.postMessage(message);
  };
  const onAbort = () => send({ type: "stop" });

  worker.onmessage = (event: MessageEvent<FromWriterThread>) => {
    const message = event.data;
    switch (message.type) {
      case "ready":
        ready.resolve();
        break;
      case "status":
        Object.assign(deps.status.writer, message.writer);
        Object.assign(counters, message.counters);
        break;
      case "log":
        log.child(message.bindings)[message.level](message.message, message.fields);
        break;
      case "done":
        finish();
        break;
      case "failed": {
        const error = new Error(String(message.error.message ?? "Batch writer thread failed"));
        error.name = String(message.error.name ?? "Error");
        finish(error);
        break;
      }
    }
  };
  worker.onerror = (event: ErrorEvent) => {
    // Handled here: an error in the worker must not take the engine down.
    event.preventDefault();
    finish(new Error(`Batch writer thread died: ${event.message}`));
  };
  worker.onmessageerror = () => {
    finish(new Error("Batch writer thread sent a message that could not be read"));
  };

  send({
    type: "start",
    start: {
      nats: deps.nats,
      clickhouse: deps.clickhouse,
      database: deps.database,
      writer: deps.options,
      status_interval_ms: Math.min(
        deps.statusIntervalMs ?? DEFAULT_WORKER_STATUS_INTERVAL_MS,
        deps.options.status_interval_ms ?? DEFAULT_STATUS_INTERVAL_MS,
      ),
    },
  });
  deps.clickhouseReady.then(() => send({ type: "clickhouse_ready" }), () => {});
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) onAbort();
  ready.promise.catch(() => {});
  done.promise.catch(() => {});
  return { ready: ready.promise, done: done.promise, stats: () => ({ kind: "worker" }) };
}
