/**
 * Entry point of the batch writer's own thread (a Web Worker started by
 * {@linkcode batchWriterWorker}). It opens its own NATS connection and
 * ClickHouse client from the configuration it is sent, runs
 * {@linkcode batchWriterActor} exactly as the main thread would, and reports
 * to the main thread:
 *
 * - `ready` once the actor is ready, `done` / `failed` when it exits;
 * - `status` (the writer's `status.writer` figures and counters) every
 *   `status_interval_ms` and once more at the end;
 * - `log` lines, written by the main thread's logger.
 *
 * The main thread sends `start` (once), `clickhouse_ready` when ClickHouse's
 * migrations are applied, and `stop`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { ClickHouseClient } from "@clickhouse/client";
import type { NatsConnection } from "@nats-io/nats-core";
import { createClickHouse } from "../adapters/clickhouse.ts";
import { connectNats } from "../adapters/nats.ts";
import { errorFields, type Fields, type Level, type Logger, loggerOf } from "../lib/log.ts";
import { MarketStatus } from "../market/status.ts";
import { batchWriterActor, newBatchWriterCounters } from "./batch_writer.ts";
import type { FromWriterThread, ToWriterThread, WriterThreadStart } from "./batch_writer_worker.ts";

function post(message: FromWriterThread): void {
  self.postMessage(message);
}

/** A logger whose lines are written by the main thread (errors as plain fields). */
function threadLogger(bindings: Fields): Logger {
  const emit = (level: Level, message: string, fields?: Fields) => {
    let plain: Fields | undefined;
    if (fields) {
      plain = {};
      for (const [key, value] of Object.entries(fields)) {
        plain[key] = value instanceof Error ? errorFields(value) : value;
      }
    }
    try {
      post({ type: "log", level, bindings, message, ...(plain ? { fields: plain } : {}) });
    } catch {
      // A field that cannot be cloned: the line still goes, without its fields.
      post({ type: "log", level, bindings, message });
    }
  };
  return loggerOf(emit, (more) => threadLogger({ ...bindings, ...more }));
}

const stop = new AbortController();
let markClickHouseReady: () => void = () => {};
const clickhouseReady = new Promise<void>((resolve) => markClickHouseReady = resolve);

async function run(start: WriterThreadStart): Promise<void> {
  const log = threadLogger({});
  let nats: NatsConnection | null = null;
  let clickhouse: ClickHouseClient | null = null;
  const status = new MarketStatus();
  const counters = newBatchWriterCounters();
  const report = () => post({ type: "status", writer: status.writer, counters });
  const timer = setInterval(report, start.status_interval_ms);
  try {
    nats = await connectNats(start.nats, {
      log: log.child({ component: "nats" }),
      signal: stop.signal,
    });
    clickhouse = createClickHouse(start.clickhouse, { log, database: "default" });
    const running = batchWriterActor({
      nats,
      clickhouse,
      database: start.database,
      status,
      options: start.writer,
      clickhouseReady,
      log: log.child({ actor: "batch_writer" }),
      counters,
    }).start(stop.signal);
    await running.ready;
    post({ type: "ready" });
    await running.done;
    report();
    post({ type: "done" });
  } catch (error) {
    report();
    post({ type: "failed", error: errorFields(error as Error) });
  } finally {
    clearInterval(timer);
    await nats?.close().catch(() => {});
    await clickhouse?.close().catch(() => {});
    self.close();
  }
}

self.onmessage = (event: MessageEvent<ToWriterThread>) => {
  const message = event.data;
  if (message.type === "start") void run(message.start);
  else if (message.type === "clickhouse_ready") markClickHouseReady();
  else if (message.type === "stop") stop.abort();
};
