/**
 * The durable side of the market-data pipeline: the JetStream stream
 * `MD_CLEAN`, which keeps every validated event (`clean.md.>`) on disk until
 * the batch writer has stored it in ClickHouse, and the writer's durable pull
 * consumer `batch_writer`.
 *
 * While ClickHouse is down the events wait here (file storage, bounded by
 * `writer.stream_max_bytes` and `writer.stream_max_age_s`, oldest dropped
 * first); the writer acknowledges a message only after every row made from it
 * is inserted, so a restart of the engine redelivers whatever was not written.
 *
 * The engine creates the stream with `ensureStreams(nc, [mdCleanStream(config.writer)])`;
 * the writer creates or updates its consumer itself
 * (`ensureConsumer` from adapters/nats.ts). Names and subjects are options so
 * tests run their own stream next to a running engine.
 *
 * @example
 * ```ts
 * import { ensureStreams } from "../adapters/nats.ts";
 * import { mdCleanStream } from "./md_stream.ts";
 *
 * await ensureStreams(nc, [mdCleanStream(config.writer)], log);
 * ```
 *
 * @module
 */

import type { ConsumerConfig } from "@nats-io/jetstream";
import { limitsStream, type StreamSpec, workConsumer } from "../adapters/nats.ts";
import { CLEAN_ALL } from "./subjects.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** Name of the stream of validated market data. */
export const DEFAULT_MD_CLEAN_STREAM = "MD_CLEAN";
/** Name of the batch writer's durable consumer. */
export const DEFAULT_BATCH_WRITER_CONSUMER = "batch_writer";
/**
 * How long a delivered message may stay unacknowledged before JetStream
 * redelivers it, in ms. Messages the writer holds — in a batch, during an
 * insert of up to the ClickHouse request timeout, or while ClickHouse is down —
 * are kept from redelivery by `working()` every third of it. It is short so
 * that a delivery that never reached the writer (a writer that died holding
 * it, or a dropped connection) comes back soon.
 */
export const DEFAULT_ACK_WAIT_MS = 10_000;
/** Most messages one pull asks for. */
export const DEFAULT_FETCH_MESSAGES = 1_000;

/** Where the stream lives and what it captures; shared by the stream and consumer factories. */
export interface MdStreamNames {
  /** Stream name. @default {DEFAULT_MD_CLEAN_STREAM} */
  stream?: string | undefined;
  /**
   * Prepended to every market-data subject the writer uses (`<prefix>clean.md.>`,
   * `<prefix>dlq.md.<exchange>`), e.g. `"t1a2b."` in tests. @default {""}
   */
  subject_prefix?: string | undefined;
}

/** Options of {@linkcode mdCleanStream}: the writer's limits plus {@linkcode MdStreamNames}. */
export interface MdCleanStreamOptions extends MdStreamNames {
  /** Most bytes kept; beyond that the oldest messages are dropped. */
  stream_max_bytes: number;
  /** Longest a message is kept, in seconds. */
  stream_max_age_s: number;
}

/** The subject filter of the stream: `<prefix>clean.md.>`. */
export function mdCleanSubject(names: MdStreamNames = {}): string {
  return `${names.subject_prefix ?? ""}${CLEAN_ALL}`;
}

/**
 * The spec of `MD_CLEAN`: file storage, limits retention, discard old, with
 * the byte and age limits of `options`. Pass it to `ensureStreams`.
 *
 * @example
 * ```ts
 * mdCleanStream({ stream_max_bytes: 1 << 30, stream_max_age_s: 604_800 });
 * // { name: "MD_CLEAN", subjects: ["clean.md.>"], storage: "file", … }
 * ```
 */
export function mdCleanStream(options: MdCleanStreamOptions): StreamSpec {
  assertPositiveInteger(options.stream_max_bytes, "stream_max_bytes");
  assertPositiveInteger(options.stream_max_age_s, "stream_max_age_s");
  return limitsStream({
    name: options.stream ?? DEFAULT_MD_CLEAN_STREAM,
    subject: mdCleanSubject(options),
    max_age_s: options.stream_max_age_s,
    max_bytes: options.stream_max_bytes,
  });
}

/** Options of {@linkcode batchWriterConsumer}. */
export interface BatchWriterConsumerOptions extends MdStreamNames {
  /** Durable consumer name. @default {DEFAULT_BATCH_WRITER_CONSUMER} */
  consumer?: string | undefined;
  /** Redelivery delay of an unacknowledged message, in ms. @default {DEFAULT_ACK_WAIT_MS} */
  ack_wait_ms?: number | undefined;
  /** Most delivered, unacknowledged messages; must cover what the writer holds. */
  max_ack_pending: number;
}

/**
 * The durable pull consumer of the batch writer: explicit acks (each message
 * is acknowledged once its rows are in ClickHouse), all messages from the
 * start of the stream, redelivered for ever until acknowledged.
 */
export function batchWriterConsumer(options: BatchWriterConsumerOptions): ConsumerConfig {
  return workConsumer({
    durable_name: options.consumer ?? DEFAULT_BATCH_WRITER_CONSUMER,
    description: "Tradewire batch writer: validated market data into ClickHouse",
    filter_subject: mdCleanSubject(options),
    ack_wait_ms: options.ack_wait_ms ?? DEFAULT_ACK_WAIT_MS,
    max_ack_pending: options.max_ack_pending,
  });
}
