/**
 * The Binance Spot {@linkcode VenueSession}: one combined-stream connection
 * for every configured symbol, order books kept by {@linkcode BinanceBookSync}
 * on REST depth snapshots.
 *
 * Connection and subscriptions:
 *
 * - {@linkcode BinanceSession.url} is the combined-stream URL
 *   `<ws_url>/stream?streams=…` naming every stream, so the subscription is
 *   in the URL and nothing is sent after the socket opens (no `SUBSCRIBE`
 *   request, no request-rate limit to respect). Channels map to streams:
 *   `trades` → `<sym>@trade`, `book` → `<sym>@depth@100ms`, `top` →
 *   `<sym>@bookTicker`.
 * - One connection carries at most 1,024 streams
 *   ({@linkcode BINANCE_MAX_STREAMS_PER_CONNECTION}) and opens only with a URL
 *   of at most {@linkcode BINANCE_MAX_URL_LENGTH} characters (about 130
 *   symbols with all three channels, fewer with long symbols); the
 *   constructor throws a `RangeError` beyond either, and the configuration
 *   refuses such an `exchanges.binance.symbols` up front. The default 24
 *   symbols × 3 channels = 72 streams fit easily; more would need several
 *   feeds.
 * - Binance pings with WebSocket ping frames every 20 s and closes the
 *   connection when no pong comes within a minute; Deno's WebSocket answers
 *   pings by itself, so there is no application-level keepalive and no
 *   `onTick`.
 * - Binance closes every connection after 24 hours (and announces planned
 *   restarts with a `serverShutdown` event, which asks the runtime to
 *   reconnect at once). Either way the runtime reconnects, `onClose` drops
 *   every book and `onOpen` fetches fresh snapshots.
 *
 * Order books, per symbol, following Binance's "manage a local order book"
 * procedure: once the socket is open, diffs are buffered by the sync while
 * the session fetches `GET <rest_url>/api/v3/depth?symbol=<SYM>&limit=<snapshot_limit>`
 * through {@linkcode SessionIO.fetchText}. A snapshot side that comes back
 * with `snapshot_limit` levels covers the book only down to its worst price:
 * the sync neither holds nor publishes levels beyond it, and resyncs when
 * none is left within it (see {@linkcode BinanceBookSync}). Fetches go
 * through a small queue: at most `snapshotConcurrency` at a time (default
 * 2), and within a budget of request weight per rolling minute
 * (`snapshotWeightPerMinute`, default 3,000 — half of the 6,000 Binance
 * allows an IP; a 1,000-level snapshot
 * weighs 50, see {@linkcode binanceDepthWeight}), so 24 symbols do not hit
 * the REST API at once and a flapping connection cannot get the IP banned
 * (HTTP 429, then 418). The budget outlives connections. The snapshot event
 * the sync produces is published with {@linkcode SessionIO.emit} when
 * buffered diffs confirm it (Binance's steps 4–5: one at or before it, or
 * one bridging it). A snapshot taken before any diff is held — REST can lag
 * the stream — and published with the first diff that bridges it or is at
 * or before it, returned from `onFrame`; a first diff that starts after it
 * (`U > L + 1`) refutes it: counted as a stale snapshot and fetched again,
 * never published. A quiet symbol that sends no diff for `snapshotGraceMs`
 * ({@linkcode DEFAULT_BINANCE_SNAPSHOT_GRACE_MS}, 1 s) gets its snapshot
 * published then. Later diffs become delta events returned from `onFrame`.
 * A gap in update ids (or a crossed book) is counted with
 * {@linkcode SessionIO.resynced} and heals with a fresh snapshot for that
 * symbol alone — the connection stays up. A failed fetch
 * (network error, non-2xx, an unreadable body, or no whole answer within the
 * runtime's REST timeout — `rest_timeout_ms` of `actors/feed.ts`, so a request
 * Binance accepts and never answers frees its slot instead of keeping the
 * book waiting for the life of the connection) is reported with
 * {@linkcode SessionIO.error} and retried with exponential backoff, through
 * the same queue and weight budget as any fetch. A 429
 * (too many requests) or 418 (the IP is banned) pauses every snapshot fetch
 * of the session, not only that symbol's: for the response's `Retry-After`,
 * else `rateLimitPauseMs` (default a minute, Binance's weight window) —
 * Binance bans an IP that keeps sending after a 429. The pause lasts at most
 * `maxRateLimitPauseMs` (default 3 days, Binance's longest ban), whatever the
 * header says (a proxy's, a typo, a date far ahead). The pause, like the
 * budget, outlives connections; fetches already under way finish. The pause
 * and the budget are kept on the clock's monotonic time
 * ({@linkcode monotonicOf}: `performance.now()` for the system clock), so a
 * wall clock set back (NTP, a VM resumed) does not stretch them. A session
 * that plays a capture ({@linkcode BinanceSession.onReplay}) spends no
 * weight: its fetches are answered from the recording.
 *
 * @example
 * ```ts
 * import { binanceSession } from "./session.ts";
 *
 * const session = binanceSession({
 *   ws_url: "wss://stream.binance.com:9443",
 *   rest_url: "https://api.binance.com",
 *   symbols: ["BTC-USDT", "ETH-USDT"],
 *   channels: ["trades", "book", "top"],
 *   snapshot_limit: 1000,
 * });
 * session.url();
 * // "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade/…"
 * ```
 *
 * @module
 */

import type { Config } from "../../config/mod.ts";
import { backoffDelay } from "../../lib/backoff.ts";
import { type Clock, monotonicOf, systemClock } from "../../lib/clock.ts";
import type { MarketEvent } from "../../market/events.ts";
import type { SessionIO, VenueSession } from "../session.ts";
import { BinanceBookSync, type BinanceSyncResult } from "./book_sync.ts";
import { type BinanceDepthDiff, parseBinanceDepthSnapshot, parseBinanceFrame } from "./parse.ts";
import {
  BINANCE_MAX_STREAMS_PER_CONNECTION,
  BINANCE_MAX_URL_LENGTH,
  binanceChannelStreams,
  binanceCombinedUrl,
  binanceSymbolMap,
  type SymbolMap,
} from "./symbols.ts";
import { assertPositiveInteger } from "../../lib/assert.ts";

export { BINANCE_MAX_STREAMS_PER_CONNECTION, BINANCE_MAX_URL_LENGTH };

/** The keys of the `exchanges.binance` config section a session uses (read-only lists welcome). */
export interface BinanceSessionConfig {
  /** WebSocket base URL; the combined-stream path is appended. */
  ws_url: string;
  /** REST base URL, for `GET /api/v3/depth`. */
  rest_url: string;
  /** Canonical symbols (`BTC-USDT`). */
  symbols: readonly string[];
  /** Channels: `trades`, `book`, `top`. */
  channels: readonly Config["exchanges"]["binance"]["channels"][number][];
  /** Levels requested in each REST depth snapshot. */
  snapshot_limit: number;
}

/** Most REST depth snapshots fetched at the same time. */
export const DEFAULT_BINANCE_SNAPSHOT_CONCURRENCY = 2;
/** Delay before the first retry of a failed or stale snapshot, in milliseconds. */
export const DEFAULT_BINANCE_SNAPSHOT_RETRY_INITIAL_MS = 500;
/** Longest delay between snapshot retries, in milliseconds. */
export const DEFAULT_BINANCE_SNAPSHOT_RETRY_MAX_MS = 30_000;
/**
 * How long a REST snapshot taken before any diff of its symbol is held
 * without a diff before it is published anyway, in milliseconds. The depth
 * stream pushes a diff every 100 ms while a book changes, so a second is ten
 * push intervals plus network jitter: a symbol that stays silent that long is
 * quiet, and a snapshot no diff contradicted in that time is the best book
 * there is (a later first diff that does not bridge it still resyncs it).
 * Longer would leave quiet symbols without a book for longer after every
 * connect; much shorter would publish before the first diff of a busy symbol
 * could arrive.
 */
export const DEFAULT_BINANCE_SNAPSHOT_GRACE_MS = 1_000;
/** REST request weight the session's snapshots may use per rolling minute (Binance allows 6,000). */
export const DEFAULT_BINANCE_SNAPSHOT_WEIGHT_PER_MINUTE = 3_000;
/** How long snapshot fetches pause after a 429 or 418 that has no `Retry-After`, in milliseconds. */
export const DEFAULT_BINANCE_RATE_LIMIT_PAUSE_MS = 60_000;
/**
 * The longest pause a 429 or 418 imposes, in milliseconds: 3 days, the longest
 * IP ban Binance documents ("from 2 minutes to 3 days").
 */
export const DEFAULT_BINANCE_MAX_RATE_LIMIT_PAUSE_MS = 3 * 24 * 3_600_000;
/** The HTTP statuses by which Binance says stop: 429 (too many requests), 418 (IP banned). */
const RATE_LIMIT_STATUSES: ReadonlySet<number> = new Set([418, 429]);

/**
 * Binance's request weight of `GET /api/v3/depth` for `limit` levels:
 * 5 up to 100, 25 up to 500, 50 up to 1,000, 250 beyond.
 *
 * @example
 * ```ts
 * binanceDepthWeight(1000); // 50
 * ```
 */
export function binanceDepthWeight(limit: number): number {
  if (limit <= 100) return 5;
  if (limit <= 500) return 25;
  if (limit <= 1000) return 50;
  return 250;
}

/** Tuning of {@linkcode binanceSession}; the venue settings come from the config section. */
export interface BinanceSessionOptions {
  /** Most REST depth snapshots in flight at once. @default {DEFAULT_BINANCE_SNAPSHOT_CONCURRENCY} */
  snapshotConcurrency?: number;
  /** First retry delay of a snapshot fetch, in ms. @default {DEFAULT_BINANCE_SNAPSHOT_RETRY_INITIAL_MS} */
  snapshotRetryInitialMs?: number;
  /** Longest retry delay of a snapshot fetch, in ms. @default {DEFAULT_BINANCE_SNAPSHOT_RETRY_MAX_MS} */
  snapshotRetryMaxMs?: number;
  /**
   * Request weight snapshots may use per rolling minute; a fetch that would
   * exceed it waits (one fetch always may start when none was made in the
   * last minute). @default {DEFAULT_BINANCE_SNAPSHOT_WEIGHT_PER_MINUTE}
   */
  snapshotWeightPerMinute?: number;
  /**
   * How long every snapshot fetch waits after a 429 or 418 whose response
   * has no `Retry-After`, in ms. @default {DEFAULT_BINANCE_RATE_LIMIT_PAUSE_MS}
   */
  rateLimitPauseMs?: number;
  /**
   * The longest pause after a 429 or 418, in ms: a longer `Retry-After` is cut
   * to it. @default {DEFAULT_BINANCE_MAX_RATE_LIMIT_PAUSE_MS}
   */
  maxRateLimitPauseMs?: number;
  /** Diffs buffered per symbol while waiting for a snapshot. @default {10_000} (the sync's default) */
  maxBufferedDiffs?: number;
  /**
   * How long a snapshot no diff has confirmed yet is held, in ms, before it
   * is published without one; 0 publishes it at once, unconfirmed.
   * @default {DEFAULT_BINANCE_SNAPSHOT_GRACE_MS}
   */
  snapshotGraceMs?: number;
  /**
   * Clock for retry delays, the snapshot grace period, the rate-limit pause
   * and the weight budget (the last two on its monotonic time,
   * {@linkcode monotonicOf}). @default {systemClock}
   */
  clock?: Clock;
}

/** One symbol's book figures in {@linkcode BinanceSessionStatus}. */
export interface BinanceBookStatus {
  /**
   * "synced" once a snapshot is applied and published, "waiting" while diffs
   * buffer for one or a snapshot waits for a diff to confirm it.
   */
  state: "synced" | "waiting";
  /** The update id the book is as of, or null while waiting. */
  last_update_id: number | null;
  /** Diffs buffered while waiting for a snapshot. */
  buffered_diffs: number;
  /**
   * Books dropped since the session started: for a gap, a crossed book, or a
   * side with no level left within the depth its snapshot covered.
   */
  resyncs: number;
  /** Snapshots fetched, accepted and published. */
  snapshots: number;
  /** Snapshot fetches that failed (network, HTTP status, unreadable body, no answer in time). */
  snapshot_failures: number;
  /**
   * Snapshots refused as older than the stream: than the buffered diffs, or
   * than the first diff after a held one (fetched again).
   */
  stale_snapshots: number;
  /** The last reason the book was dropped, or null. */
  last_resync: string | null;
}

/** What {@linkcode BinanceSession.status} reports. */
export type BinanceSessionStatus = {
  /** Streams on the connection. */
  streams: number;
  /** Books configured. */
  books_total: number;
  /** Books in sync now. */
  books_synced: number;
  /** Resyncs of every book. */
  resyncs: number;
  /** Snapshot fetches waiting for a free slot. */
  snapshots_queued: number;
  /** Snapshot fetches under way. */
  snapshots_in_flight: number;
  /** REST request weight used by snapshots over the last minute. */
  snapshot_weight_1m: number;
  /**
   * Until when (ms since the epoch: now plus the pause left) snapshot fetches
   * wait after Binance answered 429 or 418, or null when they do not.
   */
  snapshots_paused_until: number | null;
  /** 429 and 418 answers since the session started. */
  rate_limited: number;
  /** Per canonical symbol. */
  books: Record<string, BinanceBookStatus>;
  /** Request errors Binance sent (`{"code":…,"msg":…}`). */
  venue_errors: number;
  /** `serverShutdown` notices received. */
  server_shutdowns: number;
};

interface BookSlot {
  readonly sync: BinanceBookSync;
  /** Waiting in the fetch queue. */
  queued: boolean;
  /** A fetch is under way or a retry delay is pending. */
  busy: boolean;
  /** Consecutive failed or refused snapshots, for the backoff. */
  attempts: number;
  resyncs: number;
  snapshots: number;
  snapshotFailures: number;
  staleSnapshots: number;
  lastResync: string | null;
  /**
   * The snapshot's events when the sync took it before any diff and no diff
   * has confirmed it yet: held, not published; else null.
   */
  held: MarketEvent[] | null;
}

/**
 * The Binance session: see the module documentation. Create it with
 * {@linkcode binanceSession}.
 */
export class BinanceSession implements VenueSession {
  /** The venue. */
  readonly exchange = "binance" as const;
  readonly #url: string;
  readonly #streams: number;
  readonly #restUrl: string;
  readonly #limit: number;
  readonly #symbols: SymbolMap;
  /** Book slots by Binance symbol; empty when the `book` channel is off. */
  readonly #books = new Map<string, BookSlot>();
  readonly #concurrency: number;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  readonly #graceMs: number;
  readonly #clock: Clock;
  /** Milliseconds on a clock that never steps back: the pause and the budget run on it. */
  readonly #monotonic: () => number;
  /** Bumped by every open and close, so work of an old connection is ignored. */
  #generation = 0;
  #io: SessionIO | null = null;
  #queue: string[] = [];
  #inFlight = 0;
  readonly #weight: number;
  readonly #weightBudget: number;
  /** Start times (monotonic ms) and weights of the fetches of the last minute, oldest first. */
  #spent: Array<{ at: number; weight: number }> = [];
  /** The generation whose pump waits for weight to free up, or -1. */
  #pumpWaiting = -1;
  readonly #rateLimitPauseMs: number;
  readonly #maxRateLimitPauseMs: number;
  /** No fetch starts before this time (monotonic ms), set by a 429 or 418. */
  #pausedUntil = -Infinity;
  #rateLimited = 0;
  /** Set by {@linkcode BinanceSession.onReplay}: fetches are answered from a capture, unmetered. */
  #replayed = false;
  #venueErrors = 0;
  #serverShutdowns = 0;

  /**
   * Makes a session for `config`. Throws a `TypeError` for a malformed symbol
   * or URL, a `RangeError` for no streams, more than
   * {@linkcode BINANCE_MAX_STREAMS_PER_CONNECTION} streams, a URL longer than
   * {@linkcode BINANCE_MAX_URL_LENGTH} or a bad option.
   */
  constructor(config: BinanceSessionConfig, options: BinanceSessionOptions = {}) {
    const {
      snapshotConcurrency = DEFAULT_BINANCE_SNAPSHOT_CONCURRENCY,
      snapshotRetryInitialMs = DEFAULT_BINANCE_SNAPSHOT_RETRY_INITIAL_MS,
      snapshotRetryMaxMs = Math.max(DEFAULT_BINANCE_SNAPSHOT_RETRY_MAX_MS, snapshotRetryInitialMs),
      snapshotWeightPerMinute = DEFAULT_BINANCE_SNAPSHOT_WEIGHT_PER_MINUTE,
      rateLimitPauseMs = DEFAULT_BINANCE_RATE_LIMIT_PAUSE_MS,
      maxRateLimitPauseMs = DEFAULT_BINANCE_MAX_RATE_LIMIT_PAUSE_MS,
      maxBufferedDiffs,
      snapshotGraceMs = DEFAULT_BINANCE_SNAPSHOT_GRACE_MS,
      clock = systemClock,
    } = options;
    if (!(snapshotGraceMs >= 0)) {
      throw new RangeError(`snapshotGraceMs must be 0 or more, got ${snapshotGraceMs}`);
    }
    this.#graceMs = snapshotGraceMs;
    if (!(snapshotWeightPerMinute > 0)) {
      throw new RangeError(
        `snapshotWeightPerMinute must be positive, got ${snapshotWeightPerMinute}`,
      );
    }
    assertPositiveInteger(snapshotConcurrency, "snapshotConcurrency");
    if (!(rateLimitPauseMs >= 0)) {
      throw new RangeError(`rateLimitPauseMs must be >= 0, got ${rateLimitPauseMs}`);
    }
    this.#rateLimitPauseMs = rateLimitPauseMs;
    if (!(maxRateLimitPauseMs >= 0) || !Number.isFinite(maxRateLimitPauseMs)) {
      throw new RangeError(
        `maxRateLimitPauseMs must be finite and >= 0, got ${maxRateLimitPauseMs}`,
      );
    }
    this.#maxRateLimitPauseMs = maxRateLimitPauseMs;
    if (!(snapshotRetryInitialMs >= 0) || !(snapshotRetryMaxMs >= snapshotRetryInitialMs)) {
      throw new RangeError(
        `Snapshot retry delays must satisfy 0 <= initial <= max, got ${snapshotRetryInitialMs} and ${snapshotRetryMaxMs}`,
      );
    }
    const book = config.channels.includes("book");
    this.#symbols = binanceSymbolMap(config.symbols);
    const streams = binanceChannelStreams(config.symbols, config.channels);
    this.#url = binanceCombinedUrl(config.ws_url, streams);
    this.#streams = streams.length;
    this.#restUrl = config.rest_url.replace(/\/+$/, "");
    this.#limit = config.snapshot_limit;
    this.#weight = binanceDepthWeight(config.snapshot_limit);
    this.#weightBudget = snapshotWeightPerMinute;
    this.#concurrency = snapshotConcurrency;
    this.#retryInitialMs = snapshotRetryInitialMs;
    this.#retryMaxMs = snapshotRetryMaxMs;
    this.#clock = clock;
    this.#monotonic = monotonicOf(clock);
    if (book) {
      const syncOptions = {
        snapshotLimit: config.snapshot_limit,
        ...(maxBufferedDiffs === undefined ? {} : { maxBufferedDiffs }),
      };
      for (const symbol of config.symbols) {
        const venueSymbol = this.#symbols.venue(symbol)!;
        this.#books.set(venueSymbol, {
          sync: new BinanceBookSync(symbol, venueSymbol, syncOptions),
          queued: false,
          busy: false,
          attempts: 0,
          resyncs: 0,
          snapshots: 0,
          snapshotFailures: 0,
          staleSnapshots: 0,
          lastResync: null,
          held: null,
        });
      }
    }
  }

  /** The combined-stream URL naming every configured stream. */
  url(): string {
    return this.#url;
  }

  /**
   * The session plays a capture (`venues/replay.ts` calls this before its
   * first pass): its snapshot fetches are answered from the recording and
   * reach no venue, so the request-weight budget, which guards Binance's
   * per-IP limit, no longer holds them back — a fast or looped replay would
   * otherwise stop building books after a minute's worth of weight.
   */
  onReplay(): void {
    this.#replayed = true;
  }

  /** The REST snapshot URL of a Binance symbol. */
  snapshotUrl(venueSymbol: string): string {
    return `${this.#restUrl}/api/v3/depth?symbol=${venueSymbol}&limit=${this.#limit}`;
  }

  /** Nothing to send (the streams are in the URL); queues a snapshot fetch for every book. */
  onOpen(io: SessionIO): void {
    this.#generation++;
    this.#io = io;
    this.#queue = [];
    this.#inFlight = 0;
    for (const [venueSymbol, slot] of this.#books) {
      slot.sync.reset();
      slot.held = null;
      slot.queued = false;
      slot.busy = false;
      slot.attempts = 0;
      this.#enqueue(venueSymbol, slot);
    }
    this.#pump();
  }

  /**
   * Parses a frame: trades and tops are returned; depth diffs go through the
   * symbol's book sync (deltas returned once synced); `serverShutdown` asks
   * for a reconnect; an error reply is reported. Throws
   * `MalformedFrameError` for a frame it cannot use.
   */
  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[] {
    const { events, control } = parseBinanceFrame(frame, receivedUs, this.#symbols);
    if (control === null) return events;
    switch (control.type) {
      case "depth_diff":
        return this.#onDiff(control, io);
      case "server_shutdown":
        this.#serverShutdowns++;
        io.reconnect("Binance announced a server shutdown");
        return events;
      case "error":
        this.#venueErrors++;
        io.error(`Binance error ${control.code}: ${control.msg}`);
        return events;
      case "result":
        io.log.debug("binance request result", { id: control.id, result: control.result });
        return events;
      case "unsupported":
        return events;
    }
  }

  /** Drops every book and forgets pending snapshot fetches; they start again on the next open. */
  onClose(): void {
    this.#generation++;
    this.#io = null;
    this.#queue = [];
    this.#inFlight = 0;
    for (const slot of this.#books.values()) {
      slot.sync.reset();
      slot.held = null;
      slot.queued = false;
      slot.busy = false;
      slot.attempts = 0;
    }
  }

  /** Per-symbol book states, resync and snapshot counts. */
  status(): BinanceSessionStatus {
    const books: Record<string, BinanceBookStatus> = {};
    let synced = 0;
    let resyncs = 0;
    for (const slot of this.#books.values()) {
      const { sync } = slot;
      const state = sync.state === "synced" && slot.held === null ? "synced" : "waiting";
      if (state === "synced") synced++;
      resyncs += slot.resyncs;
      books[sync.symbol] = {
        state,
        last_update_id: state === "synced" ? sync.lastUpdateId : null,
        buffered_diffs: sync.bufferedDiffs,
        resyncs: slot.resyncs,
        snapshots: slot.snapshots,
        snapshot_failures: slot.snapshotFailures,
        stale_snapshots: slot.staleSnapshots,
        last_resync: slot.lastResync,
      };
    }
    return {
      streams: this.#streams,
      books_total: this.#books.size,
      books_synced: synced,
      resyncs,
      snapshots_queued: this.#queue.length,
      snapshots_in_flight: this.#inFlight,
      snapshot_weight_1m: this.#spentLastMinute(),
      snapshots_paused_until: this.#pausedUntilWall(),
      rate_limited: this.#rateLimited,
      books,
      venue_errors: this.#venueErrors,
      server_shutdowns: this.#serverShutdowns,
    };
  }

  #onDiff(diff: BinanceDepthDiff, io: SessionIO): MarketEvent[] {
    const slot = this.#books.get(diff.venueSymbol);
    // Diffs without the book channel cannot arrive on our URL; ignore them if they do.
    if (slot === undefined) return [];
    const result = slot.sync.onDiff(diff);
    const held = slot.held;
    if (held !== null) {
      // The first diff after a snapshot taken before any: it confirms the snapshot, which is
      // published now with what the diff changed, or refutes it (older than the stream).
      if (result.status === "ok" && slot.sync.confirmed) {
        slot.held = null;
        slot.snapshots++;
        return [...held, ...result.events];
      }
      if (result.status === "resync") {
        slot.held = null;
        slot.staleSnapshots++;
        io.log.debug("binance snapshot refused", {
          symbol: diff.venueSymbol,
          reason: result.reason,
        });
        this.#enqueue(diff.venueSymbol, slot);
        this.#pump();
        return [];
      }
    }
    if (result.status === "ok") return result.events;
    if (result.status === "resync") this.#resync(diff.venueSymbol, slot, result, io);
    this.#enqueue(diff.venueSymbol, slot);
    this.#pump();
    return [];
  }

  #resync(venueSymbol: string, slot: BookSlot, result: BinanceSyncResult, io: SessionIO): void {
    const reason = `${venueSymbol}: ${result.reason ?? "book dropped"}`;
    slot.resyncs++;
    slot.lastResync = reason;
    io.resynced(reason);
  }

  /**
   * Holds a snapshot no diff has confirmed yet: the first diff publishes or
   * refutes it; without one for `snapshotGraceMs` it is published as it is.
   */
  #hold(
    venueSymbol: string,
    slot: BookSlot,
    events: MarketEvent[],
    io: SessionIO,
    generation: number,
  ): void {
    slot.held = events;
    this.#clock.sleep(this.#graceMs, io.signal).then(() => {
      if (generation !== this.#generation || slot.held !== events) return;
      slot.held = null;
      slot.snapshots++;
      io.log.debug("binance snapshot published without a diff", { symbol: venueSymbol });
      io.emit(events);
    }, () => {});
  }

  /** Queues a snapshot fetch unless one is already queued, under way or waiting to retry. */
  #enqueue(venueSymbol: string, slot: BookSlot): void {
    if (slot.queued || slot.busy) return;
    slot.queued = true;
    this.#queue.push(venueSymbol);
  }

  /** Starts queued fetches while slots and request weight are free. */
  #pump(): void {
    const io = this.#io;
    if (io === null || this.#pumpWaiting === this.#generation) return;
    while (this.#inFlight < this.#concurrency && this.#queue.length > 0) {
      const waitMs = this.#replayed ? 0 : this.#weightWaitMs();
      if (waitMs > 0) {
        this.#pumpLater(waitMs, io);
        return;
      }
      if (!this.#replayed) this.#spent.push({ at: this.#monotonic(), weight: this.#weight });
      const venueSymbol = this.#queue.shift()!;
      const slot = this.#books.get(venueSymbol)!;
      slot.queued = false;
      slot.busy = true;
      this.#inFlight++;
      void this.#fetch(venueSymbol, slot, io, this.#generation);
    }
  }

  /** Weight spent by the fetches started within the last minute. */
  #spentLastMinute(): number {
    const since = this.#monotonic() - 60_000;
    const spent = this.#spent;
    let drop = 0;
    while (drop < spent.length && spent[drop]!.at <= since) drop++;
    if (drop > 0) spent.splice(0, drop);
    let used = 0;
    for (const entry of spent) used += entry.weight;
    return used;
  }

  /** How long until one more fetch may start: the pause after a 429 or 418, and the weight budget (0: now). */
  #weightWaitMs(): number {
    const now = this.#monotonic();
    const paused = Math.max(0, this.#pausedUntil - now);
    const used = this.#spentLastMinute();
    if (used === 0 || used + this.#weight <= this.#weightBudget) return paused;
    let excess = used + this.#weight - this.#weightBudget;
    for (const entry of this.#spent) {
      excess -= entry.weight;
      if (excess <= 0) return Math.max(paused, 1, entry.at + 60_000 - now);
    }
    return Math.max(paused, 60_000);
  }

  /**
   * After a 429 or 418: no fetch starts for the response's `Retry-After`, else
   * `rateLimitPauseMs`, at most `maxRateLimitPauseMs` (a later pause already
   * set stands). Returns the pause in ms.
   */
  #pause(retryAfterMs: number | null): number {
    const pauseMs = Math.min(retryAfterMs ?? this.#rateLimitPauseMs, this.#maxRateLimitPauseMs);
    this.#rateLimited++;
    this.#pausedUntil = Math.max(this.#pausedUntil, this.#monotonic() + pauseMs);
    return pauseMs;
  }

  /** When the pause ends as wall time (ms since the epoch), or null when there is none. */
  #pausedUntilWall(): number | null {
    const leftMs = this.#pausedUntil - this.#monotonic();
    return leftMs > 0 ? Math.round(this.#clock.now() + leftMs) : null;
  }

  /** Pumps again once `ms` have passed, unless the connection closes first. */
  #pumpLater(ms: number, io: SessionIO): void {
    const generation = this.#generation;
    this.#pumpWaiting = generation;
    io.log.debug("binance snapshots wait for request weight or a rate-limit pause", {
      wait_ms: ms,
    });
    this.#clock.sleep(ms, io.signal).then(() => {
      if (generation !== this.#generation) return;
      this.#pumpWaiting = -1;
      this.#pump();
    }, () => {});
  }

  async #fetch(venueSymbol: string, slot: BookSlot, io: SessionIO, generation: number) {
    let retry = false;
    try {
      let body: string;
      try {
        body = await io.fetchText(this.snapshotUrl(venueSymbol));
      } catch (error) {
        if (generation !== this.#generation) return;
        throw error;
      }
      if (generation !== this.#generation) return;
      const snapshot = parseBinanceDepthSnapshot(body);
      const result = slot.sync.onSnapshot(snapshot, io.nowUs());
      if (result.status === "ok") {
        slot.attempts = 0;
        if (result.events.length > 0 && !slot.sync.confirmed && this.#graceMs > 0) {
          this.#hold(venueSymbol, slot, result.events, io, generation);
        } else if (result.events.length > 0) {
          slot.snapshots++;
          io.emit(result.events);
        }
      } else {
        // Older than the buffered diffs (REST lags the stream), or unusable: fetch again.
        slot.staleSnapshots++;
        io.log.debug("binance snapshot refused", { symbol: venueSymbol, reason: result.reason });
        retry = true;
      }
    } catch (error) {
      const limited = rateLimit(error);
      // A 429 or 418 pauses the session's fetches even when its connection is gone.
      const pauseMs = limited === null ? null : this.#pause(limited.retryAfterMs);
      if (generation !== this.#generation) return;
      slot.snapshotFailures++;
      const detail = error instanceof Error ? error.message : String(error);
      io.error(
        `Depth snapshot of ${venueSymbol} failed: ${detail}` +
          (pauseMs === null ? "" : `; snapshots paused for ${pauseMs} ms`),
      );
      retry = true;
    } finally {
      if (generation === this.#generation) this.#inFlight--;
    }
    if (generation !== this.#generation) return;
    if (retry) {
      const delayMs = backoffDelay(Math.min(slot.attempts, 30), {
        initialMs: this.#retryInitialMs,
        maxMs: this.#retryMaxMs,
      });
      slot.attempts++;
      this.#pump();
      try {
        await this.#clock.sleep(delayMs, io.signal);
      } catch {
        return; // The connection closed; onOpen starts over.
      }
      if (generation !== this.#generation) return;
    }
    slot.busy = false;
    // A diff may have asked for a snapshot meanwhile (a gap after this one was applied).
    if (retry || slot.sync.state === "waiting_snapshot") this.#enqueue(venueSymbol, slot);
    this.#pump();
  }
}

/**
 * The `Retry-After` (ms, or null) of an error by which Binance says stop
 * (status 429 or 418, as `fetchText` rejects), or null for any other error.
 */
function rateLimit(error: unknown): { retryAfterMs: number | null } | null {
  if (typeof error !== "object" || error === null) return null;
  const { status, retryAfterMs } = error as { status?: unknown; retryAfterMs?: unknown };
  if (typeof status !== "number" || !RATE_LIMIT_STATUSES.has(status)) return null;
  return {
    retryAfterMs: typeof retryAfterMs === "number" && retryAfterMs >= 0 ? retryAfterMs : null,
  };
}

/**
 * The Binance {@linkcode VenueSession} for the `exchanges.binance` config
 * section; see {@linkcode BinanceSession}.
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG } from "../../config/mod.ts";
 * import { binanceSession } from "./session.ts";
 *
 * const session = binanceSession(DEFAULT_CONFIG.exchanges.binance);
 * ```
 */
export function binanceSession(
  config: BinanceSessionConfig,
  options: BinanceSessionOptions = {},
): BinanceSession {
  return new BinanceSession(config, options);
}
