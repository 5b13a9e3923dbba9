/**
 * The batch writer: validated market data from the durable JetStream stream
 * `MD_CLEAN` into ClickHouse, losing nothing while ClickHouse is down and
 * writing nothing twice.
 *
 * How it works:
 *
 * 1. It waits for `clickhouseReady` (the ClickHouse migrations), then makes
 *    sure the stream and its durable pull consumer exist
 *    (`market/md_stream.ts`).
 * 2. A fetch loop pulls messages (each a JSON array of events) on one inbox
 *    that lives as long as the writer (`adapters/jetstream_pull.ts`), so a
 *    message sent late for a pull is still received, turns every
 *    event into a row of its table (`market/rows.ts`) and adds them to the
 *    current batch. Messages that are not JSON arrays, and events that cannot
 *    be rows, are dead-lettered on `dlq.md.<exchange>` and acknowledged with
 *    the batch; they never block it. A letter carries the whole message, cut
 *    only to fit the server's payload limit (`fitLetter`, which says so in
 *    its detail).
 * 3. A flush loop writes a batch once it holds `batch_rows` rows (or as many
 *    messages) or its first message is `flush_interval_ms` old: one
 *    `JSONEachRow` insert per table into `<database>.<table>`. Only when every
 *    table's insert succeeded are the batch's messages acknowledged.
 * 4. When an insert fails the batch is kept and retried with backoff
 *    (`retry_initial_ms`..`retry_max_ms`), `status.writer.clickhouse` is
 *    `"down"`, and the tables already written are not written again. The
 *    fetch loop fills at most one more batch and then stops pulling, so memory
 *    stays bounded (about two batches); everything else waits in the stream,
 *    on disk. Held messages are kept from being redelivered (`working()`).
 * 5. On stop it finishes the pull in flight (at most one second), writes what
 *    it holds once more, and negatively acknowledges what it could not write
 *    so the next writer gets it at once. Messages delivered after the stop
 *    request are not written: they are handed back once the pull is over, so
 *    that a message handed back cannot come back to this writer. Inserts get
 *    `shutdown_grace_ms`; then those in flight are aborted and no ClickHouse
 *    request is sent any more. After a crash, JetStream redelivers
 *    unacknowledged messages after `ack_wait_ms`.
 * 6. If ClickHouse stays away so long that the stream reaches its byte or age
 *    limit, the stream drops its oldest messages; the writer sees the gap in
 *    stream sequences, counts it (`counters.dropped`,
 *    `status.writer.dropped_messages` and `last_dropped_at`, which health
 *    reads) and logs it.
 *
 * Rows are serialized (`toRowLine` of `market/rows.ts`: `JSONEachRow` lines,
 * decimals as raw JSON numbers) as messages arrive, so that this work overlaps
 * with ClickHouse parsing the previous batch. Only the lines are kept: the
 * events they came from are decoded again from the held messages in the rare
 * case they are needed (dead letters of refused rows, duplicate checks), so
 * that a batch does not keep every event alive.
 *
 * Refused rows: when ClickHouse refuses a batch's data itself (a parse or range
 * error), the writer splits the batch in halves, breadth first, to find the
 * rows at fault. Once ClickHouse has shown that it takes rows — of any table,
 * in this attempt or an earlier one of the batch, or any insert of the writer
 * in the last `REFUSAL_EVIDENCE_MS` — those rows are bad and are dead-lettered
 * (`reason: "unwritable"`), and the rest of the batch is acknowledged. When it
 * takes none at all, the table may be wrong rather than the rows: the batch is
 * kept, takes in the messages that arrived behind it (up to `batch_rows` rows)
 * and is tried again with them, so a few bad rows wait only for the next good
 * one, while a schema problem dead-letters nothing, shows ClickHouse as down
 * and is retried until it is fixed. A table of which ClickHouse refuses the
 * first `MAX_BLIND_REFUSALS` split inserts while it takes other rows of the
 * batch is tried `MAX_REFUSED_ATTEMPTS` times and then dead-lettered whole, so
 * it cannot hold the stream. Refusals while ClickHouse takes rows are no
 * outage: they leave `status.writer.clickhouse` as it is.
 *
 * Duplicates: a redelivered message, or a retry after an insert whose outcome
 * is unknown (a connection cut mid-request), may carry rows that are already
 * stored. Every table collapses such copies (ReplacingMergeTree; read with
 * FINAL), but the candles view sums trade volumes as they are inserted, so for
 * such batches the writer first asks ClickHouse which of the batch's trades are
 * stored and inserts only the others (`counters.duplicates_skipped`). Each
 * insert carries a `query_id`; before retrying after one whose outcome is
 * unknown, the writer waits until the server is done with it (gone from
 * `system.processes`, ended in `system.query_log`, or not seen within
 * `UNKNOWN_INSERT_GRACE_MS`; killed after `UNKNOWN_INSERT_TIMEOUT_MS`), so the
 * check sees what it stored and the retry never runs beside it. A writer
 * stopped with such an insert hands its batch back and forgets the id: the
 * next writer, before it checks its first redelivered batch, waits until
 * `UNKNOWN_INSERT_GRACE_MS` after its start (the insert was cut off before)
 * and then while any insert of a writer into its database is in
 * `system.processes` (killed after `UNKNOWN_INSERT_TIMEOUT_MS`).
 *
 * Fresh batches can carry stored trades too: after a restart the validator's
 * trade-id memory is empty and Coinbase's subscribe snapshot re-sends recent
 * trades; a capture may be replayed. So the writer keeps, per exchange and
 * symbol, a watermark: the newest `ts_exchange` stored, read once before its
 * first insert of trades (the last minute of each from `candles`, then
 * `max(ts_exchange)` of that minute onwards from `market_trades`; while
 * ClickHouse is away the read fails like an insert and the batch waits) and
 * raised as it writes. A fresh batch's trades at or below their watermark —
 * equal times included — go through the stored-trades check, only those rows
 * (`counters.stored_checks`, `counters.trades_checked`); trades above it, and
 * those of a symbol without a watermark, are not looked up. Such a batch may
 * still hold one trade twice (the snapshot's copy beside the one waiting in
 * the stream): as the times are noted, a trade at or before the last one of
 * its symbol in the batch, save one at the very same time with an id after
 * the last one's, marks the symbol's trades to be told apart by key before
 * they are inserted, in memory, with no query. Trades arrive newest last, so
 * live trades pay nothing: the times are noted as lines are made (a prefix
 * comparison and a number per trade, and an id read for one sharing the
 * previous one's time), and no query is made.
 * Late prints below the watermark are checked and then inserted. For trades
 * sharing the watermark's very time (several fills of one order split between
 * batches), the writer also keeps the ids it stored at that time (at most
 * `MAX_WATERMARK_IDS`), so a new one there needs no query either; memory is
 * one watermark per exchange and symbol. Limit: the watermark only knows what
 * was stored before the writer started and what it wrote itself; engines
 * sharing the consumer would each write their share, and a trade stored by
 * another above this one's watermark would not be looked up.
 *
 * The consumer must have one writer at a time: the engine runs one.
 *
 * @example
 * ```ts
 * const writer = batchWriterActor({
 *   nats, clickhouse: adminClickHouse, database: config.clickhouse.database,
 *   status: marketStatus, options: config.writer,
 *   clickhouseReady: migrations.state.clickhouseReady, log,
 * });
 * // engine: ensureStreams(nats, [mdCleanStream(config.writer)]) before starting it
 * ```
 *
 * @module
 */

import type { ClickHouseClient } from "@clickhouse/client";
import type { NatsConnection } from "@nats-io/nats-core";
import { type Consumer, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { JetStreamPuller, type PulledMessage } from "../adapters/jetstream_pull.ts";
import { actor } from "./actor.ts";
import type { ChildSpec } from "./types.ts";
import {
  clickHouseErrorCode,
  isClickHouseUnavailable,
  literal,
  quoteIdentifier,
} from "../adapters/clickhouse.ts";
import { ensureConsumer, ensureStreams } from "../adapters/nats.ts";
import { backoffDelay } from "../lib/backoff.ts";
import type { Clock } from "../lib/clock.ts";
import type { Logger } from "../lib/log.ts";
import { type Exchange, EXCHANGES, type MarketEvent } from "../market/events.ts";
import {
  batchWriterConsumer,
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_BATCH_WRITER_CONSUMER,
  DEFAULT_FETCH_MESSAGES,
  DEFAULT_MD_CLEAN_STREAM,
  mdCleanStream,
  type MdStreamNames,
} from "../market/md_stream.ts";
import {
  encodedTradeLines,
  MARKET_TABLES,
  type MarketTable,
  RowError,
  toRowLine,
  tradeKey,
} from "../market/rows.ts";
import type { MarketStatus } from "../market/status.ts";
import { type DeadLetter, dlqSubject } from "../market/subjects.ts";
import { DEFAULT_MAX_PAYLOAD, fitLetter } from "../market/dead_letters.ts";
import { Wakeup } from "../lib/wakeup.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** Name of the writer in the supervision tree. */
export const BATCH_WRITER_NAME = "batch_writer";
/** How often `status.writer` figures are refreshed, in ms. */
export const DEFAULT_STATUS_INTERVAL_MS = 1_000;
/** How often the consumer's backlog (`pending_messages`) is asked for, in ms. */
export const DEFAULT_CONSUMER_INFO_INTERVAL_MS = 5_000;
/** How long the last inserts may take once the writer is asked to stop, in ms. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 5_000;
/** Messages asked for by the first pull, before the writer knows how many events a message holds. */
export const FIRST_PULL_MESSAGES = 16;
/** How long one pull waits for messages, in ms (the client's minimum). */
export const FETCH_EXPIRES_MS = 1_000;
/** Pulls in a row without any answer after which the consumer is set up again. */
export const MAX_UNANSWERED_PULLS = 3;
/**
 * Refused inserts of one table, in one attempt and with no row of it accepted
 * yet, after which the writer stops splitting the batch to find the rows at
 * fault (the halves are tried breadth first, so these cover the batch's first
 * three levels of halves). Without a row accepted, a refusal may be a schema
 * problem: the rows are kept and tried again together with the next messages.
 */
export const MAX_BLIND_REFUSALS = 8;
/**
 * How long after the writer's last insert ClickHouse took a refusal still
 * counts as one of bad rows rather than of a wrong table, in ms: ClickHouse
 * has just shown that it takes rows, so rows it refuses are dead-lettered at
 * once.
 */
export const REFUSAL_EVIDENCE_MS = 10_000;
/**
 * Attempts of a batch in which ClickHouse refused every split insert of a
 * table (`MAX_BLIND_REFUSALS`) while it took other rows, after which that
 * table's unwritten rows are dead-lettered (when ClickHouse took rows of the
 * same batch), so that they cannot hold the stream.
 */
export const MAX_REFUSED_ATTEMPTS = 3;
/**
 * How long an insert whose outcome is unknown (its connection was cut, or it
 * timed out) may take to show up on the server, in ms: a request already sent
 * may still sit in the server's queues. Past this, one not seen is taken as
 * never received.
 */
export const UNKNOWN_INSERT_GRACE_MS = 3_000;
/**
 * How long the writer waits for an insert whose outcome is unknown to end on
 * the server before it kills it (`KILL QUERY`), in ms.
 */
export const UNKNOWN_INSERT_TIMEOUT_MS = 60_000;
/** How often the writer looks for such an insert on the server, in ms. */
export const UNKNOWN_INSERT_POLL_MS = 50;
/** How the `query_id` of every insert of the writer starts. */
export const QUERY_ID_PREFIX = "tradewire-writer-";
/**
 * Most trade ids remembered per exchange and symbol at its watermark (trades
 * this writer stored at the newest exchange time): past this, a trade on that
 * very time is looked up in ClickHouse instead.
 */
export const MAX_WATERMARK_IDS = 256;

/**
 * ClickHouse error codes that mean "this data cannot be inserted" (parse and
 * range errors), as opposed to a server or schema problem. A batch failing
 * with one of these is split to find and dead-letter the rows at fault.
 */
export const ROW_DATA_ERROR_CODES: ReadonlySet<number> = new Set([
  6, // CANNOT_PARSE_TEXT
  25, // CANNOT_PARSE_ESCAPE_SEQUENCE (e.g. a lone surrogate)
  26, // CANNOT_PARSE_QUOTED_STRING
  27, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  38, // CANNOT_PARSE_DATE
  41, // CANNOT_PARSE_DATETIME
  69, // ARGUMENT_OUT_OF_BOUND (decimal too big or too precise)
  72, // CANNOT_PARSE_NUMBER
  131, // TOO_LARGE_STRING_SIZE
  190, // SIZES_OF_ARRAYS_DOESNT_MATCH
  407, // DECIMAL_OVERFLOW
]);

/**
 * Writer settings: the `writer` section of the config (`Config["writer"]`
 * fits), plus names and tuning that tests and benchmarks change.
 */
export interface BatchWriterOptions extends MdStreamNames {
  /** Most rows (and most messages) in one batch. */
  batch_rows: number;
  /** Longest a batch waits for more rows after its first message, in ms. */
  flush_interval_ms: number;
  /** `MD_CLEAN`'s byte limit (used when the writer ensures the stream). */
  stream_max_bytes: number;
  /** `MD_CLEAN`'s age limit in seconds (used when the writer ensures the stream). */
  stream_max_age_s: number;
  /** First delay between insert retries, in ms. */
  retry_initial_ms: number;
  /** Longest delay between insert retries, in ms. */
  retry_max_ms: number;
  /** Durable consumer name. @default {DEFAULT_BATCH_WRITER_CONSUMER} */
  consumer?: string | undefined;
  /** Redelivery delay of unacknowledged messages, in ms. @default {DEFAULT_ACK_WAIT_MS} */
  ack_wait_ms?: number | undefined;
  /** Most messages one pull asks for. @default {DEFAULT_FETCH_MESSAGES} */
  fetch_messages?: number | undefined;
  /**
   * The consumer's max ack pending: most messages held at once.
   * @default {2 * (batch_rows + fetch_messages)}
   */
  max_ack_pending?: number | undefined;
  /** Whether the writer creates or updates the stream itself (the engine also does). @default {true} */
  ensure_stream?: boolean | undefined;
  /** Refresh period of `status.writer`, in ms. @default {DEFAULT_STATUS_INTERVAL_MS} */
  status_interval_ms?: number | undefined;
  /** Period of consumer-info requests for `pending_messages`, in ms. @default {DEFAULT_CONSUMER_INFO_INTERVAL_MS} */
  consumer_info_interval_ms?: number | undefined;
  /** Time the last inserts get after a stop request, in ms. @default {DEFAULT_SHUTDOWN_GRACE_MS} */
  shutdown_grace_ms?: number | undefined;
}

/** What {@linkcode batchWriterActor} needs. */
export interface BatchWriterDeps {
  /** The NATS connection (JetStream and dead letters). */
  nats: NatsConnection;
  /** ClickHouse client bound to `"default"`; tables are named `<database>.<table>`. */
  clickhouse: ClickHouseClient;
  /** The database holding the market-data tables. */
  database: string;
  /** Shared pipeline figures; the writer updates `status.writer`. */
  status: MarketStatus;
  /** Settings. */
  options: BatchWriterOptions;
  /** Resolves once ClickHouse's migrations are applied; nothing is pulled before. */
  clickhouseReady: Promise<void>;
  /** Parent logger. @default {nullLogger} */
  log?: Logger;
  /** Clock for batching, backoff and status. @default {systemClock} */
  clock?: Clock;
  /** Jitter source of the retry backoff. @default {Math.random} */
  random?: () => number;
  /** Figures that outlive restarts of the actor. @default {a new BatchWriterCounters} */
  counters?: BatchWriterCounters;
}

/** Writer figures beyond `status.writer`, kept across restarts of the actor. */
export interface BatchWriterCounters {
  /** Messages pulled from the stream (redeliveries included). */
  messages: number;
  /** Messages acknowledged after their rows were written. */
  acked: number;
  /** Messages that arrived again (`redelivered`). */
  redelivered: number;
  /** Dead letters published: malformed messages and events that cannot be rows. */
  dead_letters: number;
  /** Trades not inserted because ClickHouse already had them or the batch held them twice. */
  duplicates_skipped: number;
  /** Stored-trades checks: queries asking ClickHouse which of a batch's trades it has. */
  stored_checks: number;
  /** Trades looked up by those checks. */
  trades_checked: number;
  /**
   * Messages the stream dropped (byte or age limit, oldest first) before the
   * writer got them: gaps in the stream sequence of first deliveries, from the
   * consumer's position when the writer started.
   */
  dropped: number;
  /** Batches written. */
  batches: number;
}

/** A new set of zeroed {@linkcode BatchWriterCounters}. */
export function newBatchWriterCounters(): BatchWriterCounters {
  return {
    messages: 0,
    acked: 0,
    redelivered: 0,
    dead_letters: 0,
    duplicates_skipped: 0,
    stored_checks: 0,
    trades_checked: 0,
    dropped: 0,
    batches: 0,
  };
}

/** The writer's {@linkcode ChildSpec}, with its counters. */
export interface BatchWriterChildSpec extends ChildSpec {
  /** Figures kept across restarts. */
  readonly counters: BatchWriterCounters;
}

/** A dead letter from the writer (`DeadLetter` with `stage: "writer"`). */
export interface WriterDeadLetter extends Omit<DeadLetter, "stage"> {
  /** Always `"writer"`. */
  stage: "writer";
}

/** Options of {@linkcode insertJsonEachRow}. */
export interface InsertJsonEachRowOptions {
  /** Aborts the request. */
  signal?: AbortSignal | undefined;
  /**
   * The insert's `query_id`, by which it can be found in `system.processes`
   * and (logged, `log_queries`) in `system.query_log`. @default {one chosen by the server}
   */
  queryId?: string | undefined;
}

/**
 * Inserts rows already serialized as `JSONEachRow` lines (e.g.
 * `JSON.stringify(toRow(event).row)`) into `<database>.<table>` in one
 * request: the data follows `INSERT … FORMAT JSONEachRow` in the body, which
 * every server reads without a size limit. `client` may be bound to any
 * database. Does nothing for no lines.
 *
 * @example
 * ```ts
 * await insertJsonEachRow(client, "tradewire", "market_trades", [JSON.stringify(row)]);
 * ```
 */
export async function insertJsonEachRow(
  client: ClickHouseClient,
  database: string,
  table: string,
  lines: readonly string[],
  options: InsertJsonEachRowOptions = {},
): Promise<void> {
  if (lines.length === 0) return;
  await client.command({
    query: `INSERT INTO ${quoteIdentifier(database)}.${quoteIdentifier(table)} ` +
      `FORMAT JSONEachRow\n${lines.join("\n")}\n`,
    ...(options.signal === undefined ? {} : { abort_signal: options.signal }),
    ...(options.queryId === undefined
      ? {}
      : { query_id: options.queryId, clickhouse_settings: { log_queries: 1 } }),
  });
}

/**
 * Creates the batch writer child: a `run` actor named `batch_writer`,
 * `restart: "permanent"`. See the module doc for what it does. Its
 * `shutdownMs` covers the pull in flight and `shutdown_grace_ms` of inserts.
 */
export function batchWriterActor(deps: BatchWriterDeps): BatchWriterChildSpec {
  const settings = resolveSettings(deps.options);
  const counters = deps.counters ?? newBatchWriterCounters();
  const spec = actor({
    name: BATCH_WRITER_NAME,
    shutdownMs: FETCH_EXPIRES_MS + settings.shutdownGraceMs + 2_000,
    run: (ctx) => new BatchWriter(deps, settings, counters, ctx.log, ctx.clock, ctx.signal).run(),
  }, {
    nats: deps.nats,
    ...(deps.log ? { log: deps.log } : {}),
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  return Object.assign(spec, { counters });
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

interface Settings {
  batchRows: number;
  flushIntervalMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  stream: string;
  consumer: string;
  subjectPrefix: string;
  ackWaitMs: number;
  fetchMessages: number;
  maxAckPending: number;
  ensureStream: boolean;
  statusIntervalMs: number;
  consumerInfoIntervalMs: number;
  shutdownGraceMs: number;
}

function positiveInt(value: number, what: string): number {
  assertPositiveInteger(value, `Batch writer ${what}`);
  return value;
}

function resolveSettings(o: BatchWriterOptions): Settings {
  const batchRows = positiveInt(o.batch_rows, "batch_rows");
  const fetchMessages = positiveInt(o.fetch_messages ?? DEFAULT_FETCH_MESSAGES, "fetch_messages");
  const retryInitialMs = positiveInt(o.retry_initial_ms, "retry_initial_ms");
  return {
    batchRows,
    flushIntervalMs: positiveInt(o.flush_interval_ms, "flush_interval_ms"),
    retryInitialMs,
    retryMaxMs: Math.max(retryInitialMs, positiveInt(o.retry_max_ms, "retry_max_ms")),
    stream: o.stream ?? DEFAULT_MD_CLEAN_STREAM,
    consumer: o.consumer ?? DEFAULT_BATCH_WRITER_CONSUMER,
    subjectPrefix: o.subject_prefix ?? "",
    ackWaitMs: positiveInt(o.ack_wait_ms ?? DEFAULT_ACK_WAIT_MS, "ack_wait_ms"),
    fetchMessages,
    maxAckPending: positiveInt(
      o.max_ack_pending ?? 2 * (batchRows + fetchMessages),
      "max_ack_pending",
    ),
    ensureStream: o.ensure_stream ?? true,
    statusIntervalMs: positiveInt(
      o.status_interval_ms ?? DEFAULT_STATUS_INTERVAL_MS,
      "status_interval_ms",
    ),
    consumerInfoIntervalMs: positiveInt(
      o.consumer_info_interval_ms ?? DEFAULT_CONSUMER_INFO_INTERVAL_MS,
      "consumer_info_interval_ms",
    ),
    shutdownGraceMs: positiveInt(
      o.shutdown_grace_ms ?? DEFAULT_SHUTDOWN_GRACE_MS,
      "shutdown_grace_ms",
    ),
  };
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

/**
 * A table's rows in a batch, as `JSONEachRow` lines. The lines of each
 * message are kept joined (one flat string per message, lines never holding a
 * newline): the pieces a line is built from die young, and the batch holds a
 * few large strings rather than a string per row, which the garbage collector
 * would copy and mark until the batch is written. Single rows are split out
 * only when needed (duplicate checks, refused rows).
 */
class RowLines {
  #chunks: string[] = [];
  #split = true;
  /** Rows held. */
  count = 0;

  /** Adds the lines of one message, joined by newlines. */
  add(lines: readonly string[]): void {
    if (lines.length === 0) return;
    this.#chunks.push(lines.length === 1 ? lines[0]! : lines.join("\n"));
    this.#split &&= lines.length === 1;
    this.count += lines.length;
  }

  /** The rows' lines joined into strings: what an insert body is made of. */
  chunks(): readonly string[] {
    return this.#chunks;
  }

  /** Every row's line, in order. */
  rows(): string[] {
    if (!this.#split) {
      this.#chunks = this.#chunks.flatMap((chunk) => chunk.split("\n"));
      this.#split = true;
    }
    return this.#chunks;
  }

  /** Adds the rows of `other` after these. */
  append(other: RowLines): void {
    this.#chunks = this.#chunks.concat(other.#chunks);
    this.#split &&= other.#split;
    this.count += other.count;
  }

  /** Keeps only `rows` (lines of rows held, in order). */
  replace(rows: string[]): void {
    this.#chunks = rows;
    this.#split = true;
    this.count = rows.length;
  }
}

type TableLines = Record<MarketTable, RowLines>;
type TableSources = Record<MarketTable, unknown[] | null>;

/**
 * Messages pulled together, their rows per table, and how far writing them
 * got. Rows are kept as their `JSONEachRow` lines, serialized as messages
 * arrive, so that serializing the next batch overlaps with ClickHouse parsing
 * the current one.
 */
class Batch {
  readonly messages: PulledMessage[] = [];
  readonly lines: TableLines = {
    market_trades: new RowLines(),
    orderbook_snapshots: new RowLines(),
    quotes: new RowLines(),
    bars: new RowLines(),
  };
  /**
   * The event each row came from, for dead letters and duplicate checks; null
   * until first needed (see {@linkcode sourcesOf}), so that events are not
   * kept alive for the rare batch that needs them. Set before `lines[table]`
   * is changed, and changed along with it.
   */
  readonly sources: TableSources = {
    market_trades: null,
    orderbook_snapshots: null,
    quotes: null,
    bars: null,
  };
  /** Exchange times of its trades per exchange and symbol (`spanKey`), noted as they arrive. */
  readonly spans = new Map<string, TradeSpan>();
  /** Tables whose rows are all written. */
  readonly done = new Set<MarketTable>();
  rowCount = 0;
  /** When its first message arrived (clock ms). */
  firstAt = 0;
  /** When `working()` was last sent for its messages (clock ms). */
  touchedAt = 0;
  /** Whether a message came again: its rows may be stored already. */
  redelivered = false;
  /** Failed write attempts: after one, rows may be stored already. */
  failures = 0;
  /**
   * Set by an attempt in which ClickHouse refused rows of a table and took
   * none of it: bad rows or a schema problem, which the next messages tell
   * apart.
   */
  refusedBlind = false;
  /** Whether ClickHouse took rows of this batch, of any table, in any attempt. */
  taken = false;
  /** Attempts that kept refused rows while ClickHouse took other rows (`MAX_REFUSED_ATTEMPTS`). */
  refusedAttempts = 0;
}

/**
 * Moves the messages and rows of `next` (the batch filling behind) into
 * `batch` (the one being written): tables `batch` has written keep only the
 * rows of `next`. `next` must not be used afterwards.
 */
function absorb(batch: Batch, next: Batch): void {
  for (const table of MARKET_TABLES) {
    const lines = next.lines[table];
    if (batch.done.has(table)) {
      batch.done.delete(table);
      batch.sources[table] = lines.count === 0 ? [] : sourcesOf(next, table);
      batch.lines[table].replace([]);
    } else if (batch.sources[table] !== null && lines.count > 0) {
      batch.sources[table] = batch.sources[table]!.concat(sourcesOf(next, table));
    }
    batch.lines[table].append(lines);
  }
  for (const [key, span] of next.spans) {
    const mine = batch.spans.get(key);
    if (mine === undefined) batch.spans.set(key, span);
    else mergeSpan(mine, span);
  }
  for (const msg of next.messages) batch.messages.push(msg);
  batch.rowCount += next.rowCount;
  batch.redelivered ||= next.redelivered;
}

// ---------------------------------------------------------------------------
// Watermarks
// ---------------------------------------------------------------------------

/**
 * The newest exchange time of the trades of one exchange and symbol that may
 * be stored, and — when this writer stored them all — the ids of the trades
 * stored at that very time.
 */
interface Watermark {
  /** `ts_exchange`, µs: trades at or below it may be stored already. */
  ts: number;
  /**
   * Ids of the trades stored at `ts`, all written by this writer; null when
   * unknown (`ts` read at startup, or more than {@linkcode MAX_WATERMARK_IDS}).
   */
  ids: Set<string> | null;
}

/** The exchange times of a batch's trades of one exchange and symbol. */
interface TradeSpan {
  exchange: string;
  symbol: string;
  /** Oldest `ts_exchange`, and the lines of the trades at it (null: too many). */
  min: number;
  atMin: string[] | null;
  /** Newest `ts_exchange`, and the lines of the trades at it (null: too many). */
  max: number;
  atMax: string[] | null;
  /** `ts_exchange` of the trade noted last (-Infinity before the first). */
  last: number;
  /** The line of the trade noted last. */
  lastLine: string;
  /** The JSON text of its trade id, once read (null: not read yet). */
  lastId: string | null;
  /**
   * Whether a trade may repeat one noted before it in the batch: it came
   * before `last`, or at `last` with an id not after the last one's
   * ({@linkcode idAfter}). Its trades are then told apart by their keys
   * before they are inserted.
   */
  repeats: boolean;
}

/** The key of an exchange and symbol in watermarks and spans. */
function spanKey(exchange: string, symbol: string): string {
  return `${exchange}\u0000${symbol}`;
}

const TS_FIELD = ',"ts_exchange":';

/**
 * Reads the exchange, symbol and `ts_exchange` of trade lines (`tradeLine`'s
 * form, which `encodedTradeLines` shares): lines of one message mostly share
 * everything before `ts_exchange`, so that part is decoded only when it
 * changes, and each line costs a prefix comparison and a number.
 */
class TradeLineReader {
  #prefix = "";
  exchange = "";
  symbol = "";
  /** {@linkcode spanKey} of the last line read. */
  key = "";

  /** The `ts_exchange` of `line`; sets `exchange`, `symbol` and `key`. */
  read(line: string): number {
    if (this.#prefix === "" || !line.startsWith(this.#prefix)) {
      // A JSON string holds no bare `"`, so the first `,"ts_exchange":` is the field.
      const at = line.indexOf(TS_FIELD);
      this.#prefix = line.slice(0, at + TS_FIELD.length);
      const head = JSON.parse(`${line.slice(0, at)}}`) as { exchange: string; symbol: string };
      this.exchange = head.exchange;
      this.symbol = head.symbol;
      this.key = spanKey(head.exchange, head.symbol);
    }
    const from = this.#prefix.length;
    return Number(line.slice(from, line.indexOf(",", from)));
  }
}

const TRADE_ID_FIELD = ',"trade_id":';
const PRICE_FIELD = ',"price":';

/**
 * The JSON text of the trade id of a trade line (`tradeLine`'s form): ids are
 * equal when their texts are, since both ways of making lines write an id as
 * `JSON.stringify` does. A JSON string holds no bare `"`, so the first
 * `,"trade_id":` and the `,"price":` after it are the fields.
 */
function tradeIdTextOf(line: string): string {
  const from = line.indexOf(TRADE_ID_FIELD) + TRADE_ID_FIELD.length;
  return line.slice(from, line.indexOf(PRICE_FIELD, from));
}

/**
 * Whether the id text `id` comes after `previous`: numeric ids (as exchanges
 * number their trades) by value, others in some fixed order. Ids that each
 * come after the one before are all different.
 */
function idAfter(id: string, previous: string): boolean {
  return id.length > previous.length || (id.length === previous.length && id > previous);
}

/** The trade id of a trade line. */
function tradeIdOf(line: string): string {
  return JSON.parse(tradeIdTextOf(line)) as string;
}

/** `list` with `line` added (or only `line`, when `reset`); null once it would pass the bound. */
function edgeLines(list: string[] | null, line: string, reset: boolean): string[] | null {
  if (reset) {
    if (list === null) return [line];
    list.length = 0;
  } else if (list === null || list.length >= MAX_WATERMARK_IDS) {
    return null;
  }
  list.push(line);
  return list;
}

/**
 * Notes the exchange times of trade lines in `spans`, and whether a trade may
 * repeat one noted before it (`TradeSpan.repeats`). Trades arrive newest last,
 * so for a trade newer than the last one this costs a comparison; only trades
 * sharing the last one's time have their ids read and compared with the last
 * one's.
 */
function noteTradeSpans(
  spans: Map<string, TradeSpan>,
  lines: readonly string[],
  reader = new TradeLineReader(),
): void {
  let key = "";
  let span: TradeSpan | undefined;
  for (const line of lines) {
    const ts = reader.read(line);
    if (span === undefined || reader.key !== key) {
      key = reader.key;
      span = spans.get(key);
      if (span === undefined) {
        span = {
          exchange: reader.exchange,
          symbol: reader.symbol,
          min: ts,
          atMin: [],
          max: ts,
          atMax: [],
          last: -Infinity,
          lastLine: "",
          lastId: null,
          repeats: false,
        };
        spans.set(key, span);
      }
    }
    if (ts > span.last) {
      span.last = ts;
      span.lastLine = line;
      span.lastId = null;
    } else if (ts < span.last) {
      span.repeats = true;
    } else if (!span.repeats) {
      const id = tradeIdTextOf(line);
      if (!idAfter(id, span.lastId ?? tradeIdTextOf(span.lastLine))) span.repeats = true;
      span.lastLine = line;
      span.lastId = id;
    }
    if (ts <= span.min) span.atMin = edgeLines(span.atMin, line, ts < span.min);
    if (ts < span.min) span.min = ts;
    if (ts >= span.max) span.atMax = edgeLines(span.atMax, line, ts > span.max);
    if (ts > span.max) span.max = ts;
  }
}

/** Adds the times of `other` (noted after `span`) to `span` (same exchange and symbol). */
function mergeSpan(span: TradeSpan, other: TradeSpan): void {
  // Ids at the edge are not compared: a batch that takes in the next one failed before.
  span.repeats ||= other.repeats || other.min <= span.last;
  span.last = other.last;
  span.lastLine = other.lastLine;
  span.lastId = other.lastId;
  if (other.min < span.min) {
    span.min = other.min;
    span.atMin = other.atMin;
  } else if (other.min === span.min) {
    span.atMin = span.atMin && other.atMin && [...span.atMin, ...other.atMin];
  }
  if (other.max > span.max) {
    span.max = other.max;
    span.atMax = other.atMax;
  } else if (other.max === span.max) {
    span.atMax = span.atMax && other.atMax && [...span.atMax, ...other.atMax];
  }
}

/**
 * The exchanges and symbols of `spans` whose trades may be stored already,
 * each with the watermark at or below which its trades must be looked up:
 * those with a trade at or below their watermark, save a batch whose oldest
 * trades are exactly at the watermark and are none of the ids stored there.
 * Empty for trades newer than every watermark: the steady state.
 */
function suspectSpans(
  spans: ReadonlyMap<string, TradeSpan>,
  marks: ReadonlyMap<string, Watermark>,
): Map<string, number> {
  const suspects = new Map<string, number>();
  for (const [key, span] of spans) {
    const mark = marks.get(key);
    if (mark === undefined || span.min > mark.ts) continue;
    const ids = mark.ids;
    if (
      span.min === mark.ts && ids !== null && span.atMin !== null &&
      span.atMin.every((line) => !ids.has(tradeIdOf(line)))
    ) continue;
    suspects.set(key, mark.ts);
  }
  return suspects;
}

/** The exchanges and symbols of `spans` whose trades may repeat within the batch. */
function repeatingSpans(spans: ReadonlyMap<string, TradeSpan>): Set<string> {
  const repeating = new Set<string>();
  for (const [key, span] of spans) if (span.repeats) repeating.add(key);
  return repeating;
}

/** Raises `marks` to the trades of `spans`, now stored. */
function raiseWatermarks(marks: Map<string, Watermark>, spans: ReadonlyMap<string, TradeSpan>) {
  for (const [key, span] of spans) {
    const mark = marks.get(key);
    if (mark === undefined || span.max > mark.ts) {
      const ids = span.atMax && new Set(span.atMax.map(tradeIdOf));
      marks.set(key, { ts: span.max, ids });
    } else if (span.max === mark.ts && mark.ids !== null) {
      if (span.atMax === null) {
        mark.ids = null;
        continue;
      }
      for (const line of span.atMax) mark.ids.add(tradeIdOf(line));
      if (mark.ids.size > MAX_WATERMARK_IDS) mark.ids = null;
    }
  }
}

/**
 * The events that became `batch.lines[table]`, in the same order. While the
 * lines are the ones made as messages arrived, the events are decoded again
 * from the messages with the same pure steps as then (messages that are not
 * JSON arrays, and events that are not rows, were dead-lettered and are
 * skipped; a message whose lines were read off its text by
 * `encodedTradeLines` gives the same lines this way); after that they are
 * kept with the batch.
 */
function sourcesOf(batch: Batch, table: MarketTable): unknown[] {
  const kept = batch.sources[table];
  if (kept !== null) return kept;
  const sources: unknown[] = [];
  for (const msg of batch.messages) {
    let events: unknown;
    try {
      events = JSON.parse(decoder.decode(msg.data));
    } catch {
      continue;
    }
    if (!Array.isArray(events)) continue;
    for (const event of events) {
      try {
        if (toRowLine(event as MarketEvent).table === table) sources.push(event);
      } catch (error) {
        if (!(error instanceof RowError)) throw error;
      }
    }
  }
  if (sources.length !== batch.lines[table].count) {
    throw new Error(`Batch writer lost track of the events of ${table}`);
  }
  batch.sources[table] = sources;
  return sources;
}

/** Settles like `promise`, or resolves `false` when `signal` aborts first. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | false> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(false);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then((value) => {
      signal.removeEventListener("abort", onAbort);
      resolve(value);
    }, (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
  });
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message.trim() : String(error);
}

const EXCHANGE_SET: ReadonlySet<string> = new Set(EXCHANGES);
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------

class BatchWriter {
  readonly #deps: BatchWriterDeps;
  readonly #s: Settings;
  readonly #counters: BatchWriterCounters;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #signal: AbortSignal;
  /** Aborted when the writer is asked to stop, or when it cannot go on (NATS closed). */
  readonly #stop = new AbortController();
  /** Aborts in-flight inserts `shutdown_grace_ms` after the stop request. */
  readonly #insertAbort = new AbortController();
  /** Aborts the timer loops once the writer is done. */
  readonly #loops = new AbortController();
  readonly #random: () => number;

  #current = new Batch();
  #flushing: Batch | null = null;
  /** Set once the fetch loop has ended: the flush loop then drains and exits. */
  #fetchDone = false;
  /** Wakes the flush loop: a batch is full, or the fetch loop ended. */
  readonly #flushWake = new Wakeup();
  /** Wakes the fetch loop: a batch was taken for writing or written. */
  readonly #space = new Wakeup();
  /** For the backlog figure (`pending_messages`). */
  #consumer: Consumer | null = null;
  /** Pulls on one inbox for the writer's whole life; see adapters/jetstream_pull.ts. */
  #puller: JetStreamPuller | null = null;
  #rowsTotal = 0;
  #downSince: number | null = null;
  /** When ClickHouse last took an insert of this writer (clock ms), for `#takesRows`. */
  #takenAt: number | null = null;
  /** Whether `system.query_log` can be flushed and read (until it fails once). */
  #queryLog = true;
  /**
   * Inserts of this writer that failed without an answer from the server
   * (`query_id`, and when they failed, clock ms): they may still be running
   * there. Kept for the writer, not the batch, so that no batch is checked or
   * written beside one of them, whichever batch it was of.
   */
  readonly #unknown: Array<{ id: string; at: number }> = [];
  /** When the writer started (clock ms): inserts of writers before it were cut off by then. */
  #startedAt = 0;
  /** Whether inserts of earlier writers are known to be over (`#awaitEarlierInserts`). */
  #earlierOver = false;
  /**
   * Messages delivered after the stop request (by the pull still in flight,
   * or handed back by this writer itself): not written, but handed back once
   * the pull is over, so that they cannot come back to this writer.
   */
  readonly #late: PulledMessage[] = [];
  /**
   * Running average of events per message, to size pulls in rows rather than
   * messages; 0 until the first message, whose pull is kept small.
   */
  #eventsPerMessage = 0;
  /** Stream sequence of the last first delivery, to see messages the stream dropped. */
  #lastStreamSeq = 0;
  /**
   * Per exchange and symbol, the newest trade time that may be stored: read
   * before the first insert of trades, raised as trades are written. Null
   * until read.
   */
  #watermarks: Map<string, Watermark> | null = null;
  /** Reads the times of trade lines as messages arrive. */
  readonly #lineReader = new TradeLineReader();

  constructor(
    deps: BatchWriterDeps,
    settings: Settings,
    counters: BatchWriterCounters,
    log: Logger,
    clock: Clock,
    signal: AbortSignal,
  ) {
    this.#deps = deps;
    this.#s = settings;
    this.#counters = counters;
    this.#log = log;
    this.#clock = clock;
    this.#signal = signal;
    this.#random = deps.random ?? Math.random;
  }

  get #status() {
    return this.#deps.status.writer;
  }

  async run(): Promise<void> {
    this.#startedAt = this.#clock.now();
    const onAbort = () => this.#beginStop();
    this.#signal.addEventListener("abort", onAbort, { once: true });
    if (this.#signal.aborted) this.#beginStop();
    try {
      const ready = await untilAborted(
        this.#deps.clickhouseReady.then(() => true),
        this.#stop.signal,
      );
      if (!ready) return;
      await this.#setUp();
      if (this.#stop.signal.aborted) return;
      this.#log.info("Batch writer started", {
        stream: this.#s.stream,
        consumer: this.#s.consumer,
        database: this.#deps.database,
        batch_rows: this.#s.batchRows,
      });
      const flusher = this.#flushLoop();
      const loops = [this.#statusLoop(), this.#keepAliveLoop()];
      let fatal: unknown = null;
      try {
        await this.#fetchLoop();
      } catch (error) {
        fatal = error;
        this.#beginStop();
      }
      // No pull is in flight now, so nothing more is on its way.
      await this.#puller?.close();
      this.#settle(this.#late, "nak");
      this.#fetchDone = true;
      this.#flushWake.notify();
      try {
        await flusher;
      } finally {
        this.#loops.abort();
        await Promise.allSettled(loops);
        this.#refreshStatus();
      }
      if (fatal !== null) throw fatal;
    } finally {
      this.#signal.removeEventListener("abort", onAbort);
      this.#loops.abort();
    }
  }

  /** Stops pulling; in-flight inserts get `shutdown_grace_ms`, then are aborted. */
  #beginStop(): void {
    if (this.#stop.signal.aborted) return;
    this.#stop.abort();
    this.#flushWake.notify();
    this.#space.notify();
    this.#clock.sleep(this.#s.shutdownGraceMs, this.#loops.signal).then(
      () => this.#insertAbort.abort(new Error("Batch writer stopped")),
      () => {},
    );
  }

  /** Ensures the stream (optionally) and the durable consumer; retries while NATS says no. */
  async #setUp(): Promise<void> {
    const s = this.#s;
    for (let attempt = 0; !this.#stop.signal.aborted; attempt++) {
      try {
        if (s.ensureStream) {
          await ensureStreams(this.#deps.nats, [
            mdCleanStream({
              stream: s.stream,
              subject_prefix: s.subjectPrefix,
              stream_max_bytes: this.#deps.options.stream_max_bytes,
              stream_max_age_s: this.#deps.options.stream_max_age_s,
            }),
          ], this.#log);
        }
        const jsm = await jetstreamManager(this.#deps.nats);
        const info = await ensureConsumer(
          jsm,
          s.stream,
          batchWriterConsumer({
            consumer: s.consumer,
            subject_prefix: s.subjectPrefix,
            ack_wait_ms: s.ackWaitMs,
            max_ack_pending: s.maxAckPending,
          }),
          this.#log,
        );
        this.#lastStreamSeq = info.delivered.stream_seq;
        this.#consumer = await jetstream(this.#deps.nats).consumers.get(s.stream, s.consumer);
        // A working puller is kept: messages still on their way to its inbox are received.
        if (this.#puller === null || this.#puller.closed) {
          this.#puller = new JetStreamPuller(
            this.#deps.nats,
            s.stream,
            s.consumer,
            (msg) => this.#add(msg),
          );
        }
        return;
      } catch (error) {
        if (this.#deps.nats.isClosed()) throw error;
        const delayMs = this.#delay(attempt);
        this.#log.warn("Batch writer cannot set up its JetStream consumer, retrying", {
          stream: s.stream,
          consumer: s.consumer,
          attempt: attempt + 1,
          retry_in_ms: delayMs,
          error: errorMessage(error),
        });
        await this.#clock.sleep(delayMs, this.#stop.signal).catch(() => {});
      }
    }
  }

  #delay(attempt: number): number {
    return backoffDelay(Math.min(attempt, 30), {
      initialMs: this.#s.retryInitialMs,
      maxMs: this.#s.retryMaxMs,
      random: this.#random,
    });
  }

  #held(): number {
    return this.#current.messages.length + (this.#flushing?.messages.length ?? 0);
  }

  #isFull(batch: Batch): boolean {
    return batch.rowCount >= this.#s.batchRows || batch.messages.length >= this.#s.batchRows;
  }

  // -- fetching ---------------------------------------------------------------

  async #fetchLoop(): Promise<void> {
    let failures = 0;
    /** Pulls in a row that NATS neither answered nor sent anything for. */
    let unanswered = 0;
    while (!this.#stop.signal.aborted) {
      const rowsLeft = this.#s.batchRows - this.#current.rowCount;
      const room = Math.min(
        this.#s.fetchMessages,
        this.#s.maxAckPending - this.#held(),
        this.#eventsPerMessage === 0
          ? FIRST_PULL_MESSAGES
          : Math.ceil(rowsLeft / this.#eventsPerMessage),
      );
      if (this.#isFull(this.#current) || room < 1) {
        await this.#space.wait();
        continue;
      }
      try {
        // A pull is never abandoned: messages already on their way would only come back after
        // ack_wait. The server ends it within FETCH_EXPIRES_MS, or the puller gives it up
        // DEFAULT_PULL_GRACE_MS later; its inbox still receives what comes after.
        const { received, status, timedOut } = await this.#puller!.pull(room, {
          expiresMs: FETCH_EXPIRES_MS,
        });
        // An expired pull that NATS did not end (it happens now and then) is simply followed by
        // the next one: anything still on its way reaches the same inbox. Pulls that get no
        // answer at all, several in a row, mean a missing consumer or a NATS in trouble.
        unanswered = timedOut && received === 0 ? unanswered + 1 : 0;
        if (unanswered >= MAX_UNANSWERED_PULLS) {
          unanswered = 0;
          throw new Error(`NATS answered none of the last ${MAX_UNANSWERED_PULLS} pull requests`);
        }
        // 408 is the request's normal expiry; anything else is a refusal.
        if (status && status.code !== 408) {
          throw new Error(`NATS refused the pull request: ${status.code} ${status.description}`);
        }
        failures = 0;
      } catch (error) {
        if (this.#deps.nats.isClosed()) throw error;
        if (this.#stop.signal.aborted) break;
        const delayMs = this.#delay(failures++);
        this.#log.warn("Batch writer pull failed, retrying", {
          stream: this.#s.stream,
          consumer: this.#s.consumer,
          retry_in_ms: delayMs,
          error: errorMessage(error),
        });
        await this.#clock.sleep(delayMs, this.#stop.signal).catch(() => {});
        // The consumer may be gone (NATS does not answer a pull for a missing consumer), or
        // the puller closed by an error: make sure of both.
        if (!this.#stop.signal.aborted) await this.#setUp();
      }
    }
  }

  /** Adds one message's rows to the current batch; dead-letters what cannot be rows. */
  #add(msg: PulledMessage): void {
    if (this.#stop.signal.aborted) {
      // Stopping: the writer writes only what it held. A message handed back meanwhile (its
      // insert cut off) must not be written again beside that insert.
      if (this.#fetchDone) msg.nak();
      else this.#late.push(msg);
      return;
    }
    const batch = this.#current;
    if (batch.messages.length === 0) {
      batch.firstAt = this.#clock.now();
      batch.touchedAt = batch.firstAt;
      this.#flushWake.notify();
    }
    batch.messages.push(msg);
    this.#counters.messages++;
    if (msg.redelivered) {
      batch.redelivered = true;
      this.#counters.redelivered++;
    } else {
      this.#noteSequence(msg.seq);
    }
    const text = decoder.decode(msg.data);
    const trades: string[] = [];
    // Most messages are trades as the feeds encode them: their lines are read off the text.
    if (encodedTradeLines(text, trades)) {
      this.#countEvents(trades.length);
      noteTradeSpans(batch.spans, trades, this.#lineReader);
      batch.lines.market_trades.add(trades);
      batch.rowCount += trades.length;
      if (this.#isFull(batch)) this.#flushWake.notify();
      return;
    }
    let events: unknown;
    try {
      events = JSON.parse(text);
    } catch (error) {
      this.#deadLetterFrame(msg, `Message is not JSON: ${errorMessage(error)}`);
      return;
    }
    if (!Array.isArray(events)) {
      this.#deadLetterFrame(msg, "Message is not a JSON array of events");
      return;
    }
    this.#countEvents(events.length);
    const lines: Record<MarketTable, string[]> = {
      market_trades: [],
      orderbook_snapshots: [],
      quotes: [],
      bars: [],
    };
    for (const event of events) {
      try {
        const { table, line } = toRowLine(event as MarketEvent);
        lines[table].push(line);
        batch.rowCount++;
      } catch (error) {
        if (!(error instanceof RowError)) throw error;
        this.#deadLetterEvent(msg.subject, event, error.reason, error.message);
      }
    }
    noteTradeSpans(batch.spans, lines.market_trades, this.#lineReader);
    for (const table of MARKET_TABLES) batch.lines[table].add(lines[table]);
    if (this.#isFull(batch)) this.#flushWake.notify();
  }

  /** Keeps the running average of events per message that sizes pulls. */
  #countEvents(count: number): void {
    const size = Math.max(1, count);
    this.#eventsPerMessage = this.#eventsPerMessage === 0
      ? size
      : this.#eventsPerMessage + (size - this.#eventsPerMessage) / 16;
  }

  /** Counts messages the stream dropped before delivering them (limits, discard old). */
  #noteSequence(seq: number): void {
    const gap = seq - this.#lastStreamSeq - 1;
    if (seq > this.#lastStreamSeq) this.#lastStreamSeq = seq;
    if (gap <= 0) return;
    this.#counters.dropped += gap;
    this.#status.dropped_messages += gap;
    this.#status.last_dropped_at = this.#clock.now();
    this.#log.warn("The stream dropped market data before it was written (stream limits)", {
      stream: this.#s.stream,
      dropped: gap,
      dropped_total: this.#counters.dropped,
    });
  }

  // -- dead letters -----------------------------------------------------------

  /** The venue of a message, from its event or else from its subject (`…md.<kind>.<exchange>.<symbol>`). */
  #exchangeOf(subject: string, event: unknown): Exchange | null {
    const fromEvent = (event as { exchange?: unknown } | null)?.exchange;
    if (typeof fromEvent === "string" && EXCHANGE_SET.has(fromEvent)) return fromEvent as Exchange;
    const tokens = subject.split(".");
    const token = tokens[tokens.length - 2];
    return token !== undefined && EXCHANGE_SET.has(token) ? token as Exchange : null;
  }

  #publishDeadLetter(letter: Omit<WriterDeadLetter, "exchange">, subject: string, event: unknown) {
    const exchange = this.#exchangeOf(subject, event);
    this.#counters.dead_letters++;
    this.#log.warn("Market data dead-lettered by the writer", {
      subject,
      reason: letter.reason,
      detail: letter.detail,
      exchange,
    });
    if (exchange === null) return;
    const full: WriterDeadLetter = { exchange, ...letter };
    try {
      // Fitted to the server's payload limit: the letter wraps the message with more fields, so it
      // can exceed it even when the message fitted; what is cut is said in its detail.
      const limit = this.#deps.nats.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
      this.#deps.nats.publish(
        `${this.#s.subjectPrefix}${dlqSubject(exchange)}`,
        fitLetter(full, limit),
      );
    } catch (error) {
      this.#log.error("Dead letter could not be published", { error: errorMessage(error) });
    }
  }

  #deadLetterFrame(msg: PulledMessage, detail: string): void {
    const text = decoder.decode(msg.data);
    this.#publishDeadLetter(
      {
        stage: "writer",
        reason: "malformed",
        detail,
        frame: text,
        at_us: this.#clock.now() * 1000,
      },
      msg.subject,
      null,
    );
  }

  #deadLetterEvent(subject: string, event: unknown, reason: string, detail: string): void {
    this.#publishDeadLetter(
      {
        stage: "writer",
        reason,
        detail,
        event: event as MarketEvent,
        at_us: this.#clock.now() * 1000,
      },
      subject,
      event,
    );
  }

  // -- flushing ---------------------------------------------------------------

  /** Resolves when the current batch should be written, or when there is nothing more to do. */
  async #waitForFlush(): Promise<void> {
    for (;;) {
      const batch = this.#current;
      if (this.#fetchDone || this.#isFull(batch)) return;
      if (batch.messages.length === 0) {
        await this.#flushWake.wait();
        continue;
      }
      const remaining = batch.firstAt + this.#s.flushIntervalMs - this.#clock.now();
      if (remaining <= 0) return;
      const timer = new AbortController();
      const woken = this.#flushWake.wait().then(() => timer.abort());
      await Promise.race([this.#clock.sleep(remaining, timer.signal).catch(() => {}), woken]);
      timer.abort();
    }
  }

  async #flushLoop(): Promise<void> {
    for (;;) {
      await this.#waitForFlush();
      if (this.#current.messages.length === 0) {
        if (this.#fetchDone) return;
        continue;
      }
      const batch = this.#current;
      this.#current = new Batch();
      this.#flushing = batch;
      this.#space.notify();
      try {
        await this.#writeWithRetry(batch);
      } finally {
        this.#flushing = null;
        this.#space.notify();
      }
    }
  }

  /**
   * Writes `batch` until it succeeds; then acknowledges its messages. Once the
   * writer is stopping, tries once more within the grace period and else
   * negatively acknowledges the messages, so they are redelivered at once.
   */
  async #writeWithRetry(batch: Batch): Promise<void> {
    for (let attempt = 0;; attempt++) {
      try {
        await this.#write(batch);
        break;
      } catch (error) {
        batch.failures++;
        // Rows refused while ClickHouse takes others are bad data, not an outage.
        const refusedRows = batch.refusedBlind && this.#takesRows(batch);
        if (refusedRows) batch.refusedAttempts++;
        this.#noteFailure(error, !refusedRows);
        if (this.#stop.signal.aborted || this.#insertAbort.signal.aborted) {
          this.#release(batch, error);
          return;
        }
        if (batch.refusedBlind && this.#absorbNext(batch)) continue;
        const delayMs = this.#delay(attempt);
        this.#log.warn("ClickHouse insert failed, retrying", {
          attempt: attempt + 1,
          retry_in_ms: delayMs,
          rows: batch.rowCount,
          unavailable: isClickHouseUnavailable(error),
          error: errorMessage(error),
        });
        try {
          await this.#clock.sleep(delayMs, this.#stop.signal);
        } catch {
          // Stopping: one last attempt in the grace period, below.
        }
      }
    }
    this.#settle(batch.messages, "ack");
    this.#counters.acked += batch.messages.length;
    this.#counters.batches++;
    const status = this.#status;
    status.last_flush_at = this.#clock.now();
    status.last_error = null;
    if (status.clickhouse !== "up" && this.#downSince !== null) {
      this.#log.info("ClickHouse is taking inserts again", {
        down_ms: this.#clock.now() - this.#downSince,
      });
    }
    status.clickhouse = "up";
    this.#downSince = null;
    status.buffered_rows = this.#current.rowCount;
  }

  /**
   * After ClickHouse refused rows and took none of their table, takes the
   * messages that arrived meanwhile into `batch`, so that they are tried with
   * it at once: if ClickHouse takes some, the refused rows are bad and are
   * dead-lettered; if it refuses those too, it is a schema problem and the
   * batch waits. A batch of `batch_rows` rows or more takes no more, so that
   * memory stays bounded while the schema is wrong. False when nothing was taken.
   */
  #absorbNext(batch: Batch): boolean {
    const next = this.#current;
    if (next.messages.length === 0 || batch.rowCount >= this.#s.batchRows) return false;
    this.#current = new Batch();
    absorb(batch, next);
    this.#space.notify();
    this.#log.info("Rows ClickHouse refused are tried again with the messages behind them", {
      messages: batch.messages.length,
      rows: batch.rowCount,
    });
    return true;
  }

  /** Counts a failed attempt; `outage` when ClickHouse is to be shown down. */
  #noteFailure(error: unknown, outage: boolean): void {
    const status = this.#status;
    status.failures++;
    status.last_error = errorMessage(error);
    if (!outage) return;
    status.clickhouse = "down";
    this.#downSince ??= this.#clock.now();
  }

  /**
   * Whether ClickHouse has shown that it takes rows: some of `batch`'s, or
   * any of the writer's within `REFUSAL_EVIDENCE_MS`. Rows it refuses then
   * are bad, not the table.
   */
  #takesRows(batch: Batch): boolean {
    return batch.taken ||
      (this.#takenAt !== null && this.#clock.now() - this.#takenAt <= REFUSAL_EVIDENCE_MS);
  }

  /** Gives a batch that could not be written back to JetStream. */
  #release(batch: Batch, error: unknown): void {
    this.#log.warn("Batch writer stopping with an unwritten batch; its messages are redelivered", {
      messages: batch.messages.length,
      rows: batch.rowCount,
      error: errorMessage(error),
    });
    this.#settle(batch.messages, "nak");
  }

  /**
   * Acknowledges (or negatively acknowledges) every message of `messages`.
   * When NATS is gone the messages stay unacknowledged and come back after
   * `ack_wait`; rows written meanwhile then collapse as copies.
   */
  #settle(messages: readonly PulledMessage[], how: "ack" | "nak"): void {
    try {
      for (const msg of messages) {
        if (how === "ack") msg.ack();
        else msg.nak();
      }
    } catch (error) {
      this.#log.warn("Messages could not be acknowledged; they will be redelivered", {
        how,
        messages: messages.length,
        error: errorMessage(error),
      });
    }
  }

  /**
   * One attempt: inserts every table of `batch` not written yet. A table whose
   * rows ClickHouse refused without having taken any (`batch.refusedBlind`)
   * does not stop the tables after it; when ClickHouse takes rows of those,
   * it is tried again at once, and its refused rows are then dead-lettered.
   */
  async #write(batch: Batch): Promise<void> {
    batch.refusedBlind = false;
    // An insert cut off may still be running: its rows must be stored before they are looked for.
    if (this.#unknown.length > 0) await this.#awaitUnknownInserts();
    let blind: MarketTable[] | null = null;
    let refusal: unknown = null;
    let takenBefore = false;
    for (const table of MARKET_TABLES) {
      if (batch.done.has(table) || batch.lines[table].count === 0) continue;
      batch.refusedBlind = false;
      try {
        await this.#writeTable(batch, table, true);
      } catch (error) {
        if (!batch.refusedBlind) throw error;
        if (blind === null) {
          takenBefore = this.#takesRows(batch);
          refusal = error;
        }
        (blind ??= []).push(table);
      }
    }
    if (blind === null) return;
    batch.refusedBlind = true;
    // Rows taken after the refusals show that the refused rows are bad: they are dead-lettered.
    if (takenBefore || !this.#takesRows(batch)) throw refusal;
    for (const table of blind) {
      batch.refusedBlind = false;
      await this.#writeTable(batch, table, false);
    }
  }

  /**
   * Writes the rows of `table`, after removing trades ClickHouse may have
   * already (`check`: not needed when tried again in the same attempt).
   */
  async #writeTable(batch: Batch, table: MarketTable, check: boolean): Promise<void> {
    const trades = table === "market_trades";
    if (trades && check) {
      // Read once, before this writer's first trades are inserted (throws while ClickHouse
      // is away: the batch waits like any other, and on its retry all of it is checked).
      const marks = this.#watermarks ??= await this.#readWatermarks();
      if (batch.redelivered || batch.failures > 0) {
        // A redelivered message may be one an earlier writer's insert was cut off in.
        if (batch.redelivered) await this.#awaitEarlierInserts();
        await this.#dropStoredTrades(batch, null);
      } else {
        const suspects = suspectSpans(batch.spans, marks);
        const repeating = repeatingSpans(batch.spans);
        if (suspects.size > 0 || repeating.size > 0) {
          await this.#dropStoredTrades(batch, suspects, repeating);
        }
      }
    }
    if (batch.lines[table].count > 0) await this.#insertTable(batch, table);
    if (trades) raiseWatermarks(this.#watermarks!, batch.spans);
    batch.done.add(table);
  }

  /**
   * Inserts `batch.lines[table]`. When ClickHouse refuses the data itself
   * (parse or range error), splits the rows in halves, breadth first, until
   * the rows at fault are found, and dead-letters them once ClickHouse has
   * shown that it takes rows (`#takesRows`: so the table is fine and the rows
   * are bad). Any other error — or refusals while ClickHouse has taken no
   * row, which may point at the schema rather than the rows
   * (`batch.refusedBlind`) — leaves the unwritten rows in the batch and is
   * thrown. Halves are tried breadth first so that good rows are written
   * before bad ones are refused one by one, wherever in the batch the bad
   * ones are. After `MAX_BLIND_REFUSALS` refusals with none of the table
   * taken, splitting stops; once that happened in `MAX_REFUSED_ATTEMPTS`
   * attempts while ClickHouse took other rows of the batch, the table's rows
   * are dead-lettered.
   */
  async #insertTable(batch: Batch, table: MarketTable): Promise<void> {
    const all = batch.lines[table];
    const total = all.count;
    // Single rows are split out only once ClickHouse refused some.
    let rows: string[] | null = null;
    const rowsOf = () => rows ??= all.rows();
    // A queue: each level of halves is tried before the next, smaller one.
    const ranges: Array<[number, number]> = [[0, total]];
    let next = 0;
    const refused: number[] = [];
    let written = 0;
    let blindRefusals = 0;
    let gaveUp = false;
    let lastRefusal: unknown = null;
    const keepUnwritten = (extra: Array<[number, number]>) => {
      const sources = sourcesOf(batch, table);
      const lines = rowsOf();
      const left = [
        ...refused.map((i): [number, number] => [i, i + 1]),
        ...extra,
        ...ranges.slice(next),
      ].sort((a, b) => a[0] - b[0]);
      const kept = left.flatMap(([a, b]) => sources.slice(a, b));
      all.replace(left.flatMap(([a, b]) => lines.slice(a, b)));
      batch.sources[table] = kept;
    };
    while (next < ranges.length) {
      const [lo, hi] = ranges[next++]!;
      const queryId = `${QUERY_ID_PREFIX}${crypto.randomUUID()}`;
      try {
        await this.#insert(
          table,
          lo === 0 && hi === total ? all.chunks() : rowsOf().slice(lo, hi),
          queryId,
        );
        written += hi - lo;
        batch.taken = true;
        this.#takenAt = this.#clock.now();
        this.#countWritten(table, hi - lo);
      } catch (error) {
        const code = clickHouseErrorCode(error);
        // An insert not sent at all (the writer stopped first) is no unknown one.
        if (code === null && error !== this.#insertAbort.signal.reason) {
          this.#unknown.push({ id: queryId, at: this.#clock.now() });
        }
        const isRowData = code !== null && ROW_DATA_ERROR_CODES.has(code);
        if (!isRowData) {
          keepUnwritten([[lo, hi]]);
          throw error;
        }
        lastRefusal = error;
        if (written === 0 && ++blindRefusals >= MAX_BLIND_REFUSALS) {
          // Given up only while ClickHouse takes other rows of this very batch.
          if (batch.refusedAttempts + 1 < MAX_REFUSED_ATTEMPTS || !batch.taken) {
            batch.refusedBlind = true;
            keepUnwritten([[lo, hi]]);
            throw error;
          }
          const rest: Array<[number, number]> = [[lo, hi], ...ranges.slice(next)];
          for (const [a, b] of rest) for (let i = a; i < b; i++) refused.push(i);
          gaveUp = true;
          break;
        }
        if (hi - lo === 1) {
          refused.push(lo);
        } else {
          const mid = lo + Math.ceil((hi - lo) / 2);
          ranges.push([lo, mid], [mid, hi]);
        }
      }
      // Spent ranges are dropped now and then, so the queue does not grow with the batch.
      if (next > 1_024) {
        ranges.splice(0, next);
        next = 0;
      }
    }
    if (refused.length === 0) return;
    if (!this.#takesRows(batch)) {
      batch.refusedBlind = true;
      keepUnwritten([]);
      throw lastRefusal;
    }
    const sources = sourcesOf(batch, table);
    const detail = gaveUp
      ? `ClickHouse refused the rows of ${table} in ${MAX_REFUSED_ATTEMPTS} attempts while ` +
        `taking other rows: ${errorMessage(lastRefusal)}`
      : `ClickHouse refused the row: ${errorMessage(lastRefusal)}`;
    for (const index of refused) {
      this.#deadLetterEvent("", sources[index], "unwritable", detail);
    }
    this.#log.warn("ClickHouse refused rows; they were dead-lettered", {
      table,
      refused: refused.length,
      written,
      gave_up: gaveUp,
      error: errorMessage(lastRefusal),
    });
  }

  #insert(table: MarketTable, lines: readonly string[], queryId: string): Promise<void> {
    return insertJsonEachRow(this.#deps.clickhouse, this.#deps.database, table, lines, {
      signal: this.#requestSignal(),
      queryId,
    });
  }

  /**
   * The abort signal of a ClickHouse request about to be sent; throws its
   * reason once the grace after a stop is over: the client ignores a signal
   * that is already aborted, so such a request would hold the stop until it
   * timed out.
   */
  #requestSignal(): AbortSignal {
    const signal = this.#insertAbort.signal;
    signal.throwIfAborted();
    return signal;
  }

  /** The first number of a one-row `SELECT … AS n`. */
  async #count(query: string): Promise<number> {
    const [row] = await this.#rows<{ n: number | string }>(query);
    return Number(row?.n ?? 0);
  }

  /**
   * Waits until the inserts of this writer whose outcome is unknown are over
   * on the server, so that a retry never runs beside them and the
   * stored-trades check sees what they stored. One is over once it was seen in
   * `system.processes` and is gone, once `system.query_log` shows it ended,
   * or when it has not shown up `UNKNOWN_INSERT_GRACE_MS` after it failed;
   * one still running `UNKNOWN_INSERT_TIMEOUT_MS` after it failed is killed.
   * Throws when ClickHouse cannot be asked (the ids are kept for the next try).
   */
  async #awaitUnknownInserts(): Promise<void> {
    while (this.#unknown.length > 0) {
      const { id, at } = this.#unknown[0]!;
      const quoted = literal(id);
      let seen = false;
      for (;;) {
        const running = await this.#count(
          `SELECT count() AS n FROM system.processes WHERE query_id = ${quoted}`,
        );
        const age = this.#clock.now() - at;
        if (running > 0) {
          seen = true;
          if (age >= UNKNOWN_INSERT_TIMEOUT_MS) {
            this.#log.warn("Killing an insert cut off long ago that is still running", {
              query_id: id,
              age_ms: age,
            });
            await this.#deps.clickhouse.command({
              query: `KILL QUERY WHERE query_id = ${quoted} ASYNC`,
              abort_signal: this.#requestSignal(),
            });
          }
        } else if (seen || age >= UNKNOWN_INSERT_GRACE_MS || await this.#loggedEnd(quoted)) {
          break;
        }
        await this.#clock.sleep(UNKNOWN_INSERT_POLL_MS, this.#insertAbort.signal);
      }
      this.#unknown.shift();
    }
  }

  /**
   * Waits, once, until the inserts of the writers before this one are over
   * on the server, so that a message one of them was cut off in (and handed
   * back, or left to be redelivered) is not checked and written beside that
   * insert. Such an insert was cut off before this writer started: it shows
   * up in `system.processes` within `UNKNOWN_INSERT_GRACE_MS` of that, or is
   * taken as never received, as the writer's own are. So this waits until
   * that long after the start, then while any insert of a writer
   * (`tradewire-writer-…` query id) into this database runs — none of this
   * writer's own is running then — and kills one still running after
   * `UNKNOWN_INSERT_TIMEOUT_MS`. Works on ClickHouse 18.16 and current
   * servers. Throws when ClickHouse cannot be asked (it is asked again next
   * time).
   */
  async #awaitEarlierInserts(): Promise<void> {
    if (this.#earlierOver) return;
    const wait = this.#startedAt + UNKNOWN_INSERT_GRACE_MS - this.#clock.now();
    if (wait > 0) await this.#clock.sleep(wait, this.#insertAbort.signal);
    const ours = `query_id LIKE ${literal(`${QUERY_ID_PREFIX}%`)} AND position(query, ${
      literal(`INSERT INTO ${quoteIdentifier(this.#deps.database)}.`)
    }) = 1`;
    const timeoutS = UNKNOWN_INSERT_TIMEOUT_MS / 1000;
    for (;;) {
      const [row] = await this.#rows<{ n: number | string; oldest: number | string }>(
        `SELECT count() AS n, max(elapsed) AS oldest FROM system.processes WHERE ${ours}`,
      );
      if (Number(row?.n ?? 0) === 0) break;
      if (Number(row?.oldest ?? 0) >= timeoutS) {
        this.#log.warn("Killing an insert of an earlier writer that is still running", {
          age_ms: Math.round(Number(row?.oldest) * 1000),
        });
        await this.#deps.clickhouse.command({
          query: `KILL QUERY WHERE ${ours} AND elapsed >= ${timeoutS} ASYNC`,
          abort_signal: this.#requestSignal(),
        });
      }
      await this.#clock.sleep(UNKNOWN_INSERT_POLL_MS, this.#insertAbort.signal);
    }
    this.#earlierOver = true;
  }

  /** Whether `system.query_log` shows the query `quoted` (a literal id) ended; false without a log. */
  async #loggedEnd(quoted: string): Promise<boolean> {
    if (!this.#queryLog) return false;
    try {
      await this.#deps.clickhouse.command({
        query: "SYSTEM FLUSH LOGS",
        abort_signal: this.#requestSignal(),
      });
      // type 1 is QueryStart; the others are its end (finished, or failed).
      return await this.#count(
        `SELECT count() AS n FROM system.query_log WHERE query_id = ${quoted} AND type != 1`,
      ) > 0;
    } catch (error) {
      if (clickHouseErrorCode(error) === null) throw error;
      // No query log on this server (or no right to flush it): the grace period decides.
      this.#queryLog = false;
      this.#log.info("ClickHouse's query log cannot be read; cut-off inserts wait their grace", {
        error: errorMessage(error),
      });
      return false;
    }
  }

  #countWritten(table: MarketTable, count: number): void {
    const written = this.#status.rows_written;
    written[table] = (written[table] ?? 0) + count;
    this.#rowsTotal += count;
  }

  /**
   * Removes from the batch the trades ClickHouse already has and copies
   * within the batch, so the candles view never counts a trade twice: all of
   * its trades (`suspects` null), or only those at or below the watermark of
   * an exchange and symbol of `suspects` and those of an exchange and symbol
   * of `repeating`. Asks ClickHouse for the keys stored in the looked-up
   * trades' time range for their venues and symbols — only when some trade is
   * looked up: copies within the batch are found without a query.
   */
  async #dropStoredTrades(
    batch: Batch,
    suspects: ReadonlyMap<string, number> | null,
    repeating: ReadonlySet<string> = new Set(),
  ): Promise<void> {
    const lines = batch.lines.market_trades.rows();
    const reader = new TradeLineReader();
    const picked: number[] = [];
    const keys: string[] = [];
    let lookedUp = 0;
    let min = Infinity;
    let max = -Infinity;
    const exchanges = new Set<string>();
    const symbols = new Set<string>();
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      const ts = reader.read(line);
      const lookUp = suspects === null || ts <= (suspects.get(reader.key) ?? -Infinity);
      if (!lookUp && !repeating.has(reader.key)) continue;
      picked.push(i);
      keys.push(tradeKey(reader.exchange, reader.symbol, ts, tradeIdOf(line)));
      if (!lookUp) continue;
      lookedUp++;
      if (ts < min) min = ts;
      if (ts > max) max = ts;
      exchanges.add(reader.exchange);
      symbols.add(reader.symbol);
    }
    if (picked.length === 0) return;
    const stored = new Set<string>();
    if (lookedUp > 0) {
      this.#counters.stored_checks++;
      this.#counters.trades_checked += lookedUp;
      const table = `${quoteIdentifier(this.#deps.database)}.${quoteIdentifier("market_trades")}`;
      const rows = await this.#rows<
        { exchange: string; symbol: string; ts: string; trade_id: string }
      >(
        `SELECT exchange, symbol, toString(ts_exchange) AS ts, trade_id FROM ${table}
        WHERE timestamp >= toDateTime(${Math.floor(min / 1e6)}, 'UTC')
          AND timestamp <= toDateTime(${Math.floor(max / 1e6)}, 'UTC')
          AND ts_exchange >= ${literal(min)} AND ts_exchange <= ${literal(max)}
          AND exchange IN (${[...exchanges].map((e) => literal(e)).join(", ")})
          AND symbol IN (${[...symbols].map((s) => literal(s)).join(", ")})`,
      );
      for (const row of rows) {
        stored.add(tradeKey(row.exchange, row.symbol, row.ts, row.trade_id));
      }
    }
    const dropped = new Set<number>();
    for (let k = 0; k < picked.length; k++) {
      const key = keys[k]!;
      if (stored.has(key)) dropped.add(picked[k]!);
      else stored.add(key);
    }
    if (dropped.size === 0) return;
    // Sources of stored rows passed toRowLine(), so they are well-formed trades.
    const sources = sourcesOf(batch, "market_trades");
    const keptLines: string[] = [];
    const keptSources: unknown[] = [];
    for (let i = 0; i < lines.length; i++) {
      if (dropped.has(i)) continue;
      keptLines.push(lines[i]!);
      keptSources.push(sources[i]);
    }
    this.#counters.duplicates_skipped += dropped.size;
    this.#log.info("Trades already stored or repeated in the batch were not inserted again", {
      skipped: dropped.size,
    });
    batch.lines.market_trades.replace(keptLines);
    batch.sources.market_trades = keptSources;
  }

  /**
   * Reads the watermarks: per exchange and symbol, the newest `ts_exchange`
   * stored. The last minute of each comes from the small `candles` table, and
   * only that minute onwards is read from `market_trades` (its sorting key
   * starts with exchange, symbol, timestamp), so the read stays cheap however
   * much is stored. Works on ClickHouse 18.16 and current servers.
   */
  async #readWatermarks(): Promise<Map<string, Watermark>> {
    const db = quoteIdentifier(this.#deps.database);
    const lasts = await this.#rows<{ exchange: string; symbol: string; m: number | string }>(
      `SELECT exchange, symbol, toUInt32(max(minute)) AS m FROM ${db}.${quoteIdentifier("candles")}
      GROUP BY exchange, symbol`,
    );
    const marks = new Map<string, Watermark>();
    if (lasts.length > 0) {
      const where = lasts.map((r) =>
        `(exchange = ${literal(r.exchange)} AND symbol = ${literal(r.symbol)} ` +
        `AND timestamp >= toDateTime(${Number(r.m)}, 'UTC'))`
      ).join(" OR ");
      const newest = await this.#rows<{ exchange: string; symbol: string; ts: string }>(
        `SELECT exchange, symbol, toString(max(ts_exchange)) AS ts
        FROM ${db}.${quoteIdentifier("market_trades")} WHERE ${where} GROUP BY exchange, symbol`,
      );
      for (const row of newest) {
        marks.set(spanKey(row.exchange, row.symbol), { ts: Number(row.ts), ids: null });
      }
    }
    this.#log.info("Batch writer read the newest stored trade times", { symbols: marks.size });
    return marks;
  }

  /** The rows of a `SELECT`, as JSON objects. */
  async #rows<T>(query: string): Promise<T[]> {
    const result = await this.#deps.clickhouse.query({
      query,
      format: "JSONEachRow",
      abort_signal: this.#requestSignal(),
    });
    return await result.json<T>();
  }

  // -- background loops -------------------------------------------------------

  /** Keeps held messages from being redelivered while they wait (slow inserts, ClickHouse down). */
  async #keepAliveLoop(): Promise<void> {
    const every = Math.max(250, Math.floor(this.#s.ackWaitMs / 3));
    const signal = this.#loops.signal;
    while (!signal.aborted) {
      try {
        await this.#clock.sleep(every, signal);
      } catch {
        return;
      }
      const now = this.#clock.now();
      for (const batch of [this.#flushing, this.#current]) {
        if (!batch || batch.messages.length === 0 || now - batch.touchedAt < every) continue;
        batch.touchedAt = now;
        for (const msg of batch.messages) msg.working();
      }
    }
  }

  #refreshStatus(): void {
    this.#status.buffered_rows = this.#current.rowCount + (this.#flushing?.rowCount ?? 0);
  }

  /** Refreshes `status.writer`: throughput, buffered rows, and now and then the backlog. */
  async #statusLoop(): Promise<void> {
    const signal = this.#loops.signal;
    const samples: Array<[number, number]> = [[this.#clock.now(), this.#rowsTotal]];
    let infoAt = -Infinity;
    while (!signal.aborted) {
      const now = this.#clock.now();
      samples.push([now, this.#rowsTotal]);
      while (samples.length > 2 && now - samples[0]![0] > 5_000) samples.shift();
      const [t0, r0] = samples[0]!;
      this.#status.rows_per_s = now > t0
        ? Math.round((this.#rowsTotal - r0) * 1000 / (now - t0))
        : 0;
      this.#refreshStatus();
      if (now - infoAt >= this.#s.consumerInfoIntervalMs && this.#consumer) {
        infoAt = now;
        try {
          const info = await this.#consumer.info(false);
          this.#status.pending_messages = info.num_pending + info.num_ack_pending;
        } catch (error) {
          this.#log.debug("Consumer info failed", { error: errorMessage(error) });
        }
      }
      try {
        await this.#clock.sleep(this.#s.statusIntervalMs, signal);
      } catch {
        return;
      }
    }
  }
}
