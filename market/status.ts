/**
 * Live figures of the market-data pipeline, read by health and by
 * `GET /api/v1/market-data/stream_status`. Each actor writes only its own part.
 *
 * @module
 */

import type { Exchange } from "./events.ts";

/**
 * Connection state of a feed: `subscribing` from the socket's open until the
 * venue is ready (its first frame, or the session says so: Alpaca once
 * authenticated and subscribed), `refused` after the venue turned the
 * connection down (its reason in `last_error`) until the next attempt.
 */
export type FeedState =
  | "connecting"
  | "subscribing"
  | "live"
  | "refused"
  | "disconnected"
  | "stopped";

/** One feed's figures. */
export interface FeedStatus {
  /** The venue. */
  exchange: Exchange;
  /** Connection state. */
  state: FeedState;
  /** Reconnects since the engine started. */
  reconnects: number;
  /** When the current connection opened (ms since epoch), or null. */
  connected_at: number | null;
  /** When the last frame arrived (ms since epoch), or null. */
  last_message_at: number | null;
  /** How late the last batch arrived, in ms: see `deliveryLagMs` in actors/feed.ts (bars, snapshots held as of receipt and events stamped with their receive time say nothing of it). */
  lag_ms: number | null;
  /** Frames received. */
  frames: number;
  /** Events published. */
  events: number;
  /** Frames that could not be parsed (dead-lettered). */
  malformed: number;
  /** Order-book resyncs (gaps, checksum mismatches). */
  resyncs: number;
  /** The last error the venue or the connection reported, e.g. an auth failure. */
  last_error: string | null;
  /** Why silence is expected now (the venue's market is closed), or null: the watchdog waits meanwhile. */
  quiet: string | null;
  /** Venue-specific figures (books in sync, subscriptions…). */
  venue: Record<string, unknown>;
}

/** Validator figures. */
export interface ValidatorStatus {
  /** Events accepted. */
  accepted: number;
  /** Events rejected, by reason. */
  rejected: Record<string, number>;
  /** Events rejected, by exchange. */
  rejected_by_exchange: Partial<Record<Exchange, number>>;
}

/** Batch-writer figures. */
export interface WriterStatus {
  /** Rows written to ClickHouse since the engine started, by table. */
  rows_written: Record<string, number>;
  /** Recent throughput, rows per second. */
  rows_per_s: number;
  /** Rows held in memory waiting for the next insert. */
  buffered_rows: number;
  /** Messages waiting in the durable stream (not yet written). */
  pending_messages: number;
  /** When the last insert succeeded (ms since epoch), or null. */
  last_flush_at: number | null;
  /** Insert failures since the engine started. */
  failures: number;
  /** The last insert error, or null after a success. */
  last_error: string | null;
  /** Whether ClickHouse is taking inserts. */
  clickhouse: "up" | "down" | "unknown";
  /**
   * Messages the stream discarded (byte or age limit, oldest first) before
   * they were written, since the engine started: market data lost for good.
   */
  dropped_messages: number;
  /** When the writer last found such a loss (ms since epoch), or null. */
  last_dropped_at: number | null;
}

/**
 * How long market data the stream discarded keeps health degraded after the
 * writer found the loss, in ms: long enough to be seen, short enough that a
 * one-off loss does not leave health degraded for good.
 */
export const DROPPED_DEGRADED_MS = 10 * 60_000;

/** The pipeline's figures, shared by its actors and the API. */
export class MarketStatus {
  /** Per-feed figures. */
  readonly feeds = new Map<Exchange, FeedStatus>();
  /** Validator figures. */
  readonly validator: ValidatorStatus = { accepted: 0, rejected: {}, rejected_by_exchange: {} };
  /** Writer figures. */
  readonly writer: WriterStatus = {
    rows_written: {},
    rows_per_s: 0,
    buffered_rows: 0,
    pending_messages: 0,
    last_flush_at: null,
    failures: 0,
    last_error: null,
    clickhouse: "unknown",
    dropped_messages: 0,
    last_dropped_at: null,
  };

  /** The figures of `exchange`'s feed, created on first use. */
  feed(exchange: Exchange): FeedStatus {
    let status = this.feeds.get(exchange);
    if (!status) {
      status = {
        exchange,
        state: "connecting",
        reconnects: 0,
        connected_at: null,
        last_message_at: null,
        lag_ms: null,
        frames: 0,
        events: 0,
        malformed: 0,
        resyncs: 0,
        last_error: null,
        quiet: null,
        venue: {},
      };
      this.feeds.set(exchange, status);
    }
    return status;
  }

  /** Counts one rejected event. */
  reject(exchange: Exchange, reason: string): void {
    this.validator.rejected[reason] = (this.validator.rejected[reason] ?? 0) + 1;
    this.validator.rejected_by_exchange[exchange] =
      (this.validator.rejected_by_exchange[exchange] ?? 0) + 1;
  }

  /**
   * The writer's recent loss of market data, or null: a problem for health
   * when the stream discarded messages before they were written within the
   * last `windowMs` before `now`.
   *
   * @example
   * ```ts
   * const status = new MarketStatus();
   * status.writer.dropped_messages = 3;
   * status.writer.last_dropped_at = 1_000;
   * status.droppedRecently(61_000); // "the stream dropped 3 messages of market data…"
   * ```
   */
  droppedRecently(now: number, windowMs: number = DROPPED_DEGRADED_MS): string | null {
    const { dropped_messages: dropped, last_dropped_at: at } = this.writer;
    if (at === null || dropped === 0 || now - at >= windowMs) return null;
    return `the stream dropped ${dropped} messages of market data before they were written ` +
      `(stream limits; last ${Math.max(0, Math.round((now - at) / 1000))} s ago)`;
  }

  /** A plain copy for JSON output. */
  snapshot(): {
    feeds: FeedStatus[];
    validator: ValidatorStatus;
    writer: WriterStatus;
  } {
    return structuredClone({
      feeds: [...this.feeds.values()],
      validator: this.validator,
      writer: this.writer,
    });
  }
}
