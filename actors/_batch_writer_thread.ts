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
import { MarketStatus } from "../market/status.ts";
import { batchWriterActor, newBatchWriterCounters } from "./batch_writer.ts";
import {
  CLICKHOUSE_READY,
  type WriterThreadStart,
  type WriterThreadStatus,
} from "./batch_writer_worker.ts";
import { serveThread } from "./thread_child.ts";

let markClickHouseReady: () => void = () => {};
const clickhouseReady = new Promise<void>((resolve) => markClickHouseReady = resolve);

serveThread<WriterThreadStart, WriterThreadStatus>(async (start, thread) => {
  const { log } = thread;
  let nats: NatsConnection | null = null;
  let clickhouse: ClickHouseClient | null = null;
  const status = new MarketStatus();
  const counters = newBatchWriterCounters();
  thread.reportStatus(() => ({ writer: status.writer, counters }));
  try {
    nats = await connectNats(start.nats, {
      log: log.child({ component: "nats" }),
      signal: thread.signal,
    });
    clickhouse = createClickHouse(start.clickhouse, { log, database: "default" });
    await thread.runChild(batchWriterActor({
      nats,
      clickhouse,
      database: start.database,
      status,
      options: start.writer,
      clickhouseReady,
      log: log.child({ actor: "batch_writer" }),
      counters,
    }));
  } finally {
    await nats?.close().catch(() => {});
    await clickhouse?.close().catch(() => {});
  }
}, (message) => {
  if (message.type === CLICKHOUSE_READY) markClickHouseReady();
});
