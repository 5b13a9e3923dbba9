/**
 * Keeps a Binance Spot order book in step with the diff depth stream, as a
 * pure state machine: the feed hands it diffs and REST snapshots, it hands
 * back the book events to publish and whether a new snapshot is needed.
 *
 * It follows Binance's "How to manage a local order book correctly"
 * (web-socket-streams.md, 2023-12-04), with `L` the snapshot's
 * `lastUpdateId`:
 *
 * 1. Buffer diffs until the REST snapshot arrives.
 * 2. Drop any diff with `u <= L`.
 * 3. The first diff applied must have `U <= L + 1` and `u >= L + 1`; when the
 *    first diff kept has `U > L + 1` the snapshot is older than the stream:
 *    status "resync" (fetch the snapshot again; the buffer is kept).
 * 4. Each following diff must have `U` equal to the previous `u + 1`;
 *    anything else is a gap: status "resync", the book is dropped and the
 *    sync starts over buffering from that diff.
 * 5. Sizes are absolute; size 0 removes the level (removing an unknown level
 *    is normal).
 *
 * Coverage (the doc's closing note: "you won't learn the quantities for the
 * levels outside of the initial snapshot unless they change"): a snapshot
 * side that comes back with `snapshotLimit` levels is cut there, so the
 * venue may hold levels beyond its worst price, unseen. That price is the
 * side's boundary for as long as the snapshot stands: every diff is still
 * applied for update-id continuity, but its levels beyond the boundary are
 * unknown, not absent — neither held nor published (a level that changes
 * out there does not say what rests between it and the boundary). When a
 * side with a boundary has no level left within it, its best level is
 * unknown: "resync". A side that came back with fewer levels is the whole
 * side and has no boundary.
 *
 * Binance's newer text ("ignore `u` < book id, restart when `U` > book id")
 * tolerates overlapping diffs; this one keeps the stricter chain above, which
 * spot's consecutive ids always satisfy (spot diffs have no `pu`).
 *
 * Publishing: when a snapshot is applied, one {@linkcode BookEvent}
 * "snapshot" of the whole book, buffered diffs included, with `sequence` the
 * last applied `u` (or `L` when none applied); then one "delta" per applied
 * diff, `sequence` = its `u`, with only the diff's levels within the
 * boundaries (possibly none), so replaying the events rebuilds exactly
 * {@linkcode BinanceBookSync.book}.
 *
 * A snapshot taken with no diff buffered is returned too, but nothing yet
 * shows it is not older than the stream (REST can lag it: the case rule 3
 * exists for), so it is not {@linkcode BinanceBookSync.confirmed} until a
 * diff is seen at or before it (`u <= L`) or bridges it (`U <= L + 1 <= u`);
 * one that does not (`U > L + 1`) is "resync". The caller holds such a
 * snapshot instead of publishing it — {@linkcode BinanceSession} publishes it
 * with the diff that confirms it, or after a short grace period without a
 * diff for a quiet symbol, and fetches again when the first diff refutes it.
 *
 * A crossed book (best bid at or above best ask) after an update means the
 * local book is corrupt: "resync" as well, unless `resyncOnCrossed` is off.
 *
 * @example
 * ```ts
 * import { type BinanceDepthDiff, parseBinanceDepthSnapshot } from "./parse.ts";
 * declare const diff: BinanceDepthDiff; // from parseBinanceFrame
 * declare const body: string; // GET /api/v3/depth?symbol=BTCUSDT&limit=5000
 *
 * const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { snapshotLimit: 5000 });
 * sync.onDiff(diff); // { status: "waiting_snapshot", events: [] }
 * const result = sync.onSnapshot(parseBinanceDepthSnapshot(body), Date.now() * 1000);
 * // result.events[0].action === "snapshot"
 * ```
 *
 * @module
 */

import { compareNormalized, normalizeDecimal } from "../../market/decimal.ts";
import type { BookEvent, Level } from "../../market/events.ts";
import { OrderBook } from "../../market/order_book.ts";
import type { BinanceDepthDiff, BinanceDepthSnapshot } from "./parse.ts";
import { assertPositiveInteger } from "../../lib/assert.ts";

/** Diffs kept while waiting for a snapshot before giving up with "resync". */
export const DEFAULT_BINANCE_MAX_BUFFERED_DIFFS = 10_000;
/**
 * Levels per side a snapshot is taken as cut at when the sync is not told the
 * `limit` it was fetched with: the most `GET /api/v3/depth` returns.
 */
export const DEFAULT_BINANCE_SNAPSHOT_LIMIT = 5_000;

/** Options of {@linkcode BinanceBookSync}. */
export interface BinanceBookSyncOptions {
  /** Most diffs buffered while waiting for a snapshot; one more is "resync". @default {DEFAULT_BINANCE_MAX_BUFFERED_DIFFS} */
  maxBufferedDiffs?: number;
  /** Whether a crossed or locked book after an update is "resync". @default {true} */
  resyncOnCrossed?: boolean;
  /**
   * The `limit` the REST snapshots are fetched with: a side with this many
   * levels is cut at its worst price (see the module documentation).
   * @default {DEFAULT_BINANCE_SNAPSHOT_LIMIT}
   */
  snapshotLimit?: number;
}

/** Where the sync is: buffering diffs for a snapshot, or keeping the book. */
export type BinanceBookSyncState = "waiting_snapshot" | "synced";

/**
 * The outcome of one input: "ok" (the book is current; publish `events`),
 * "waiting_snapshot" (diffs are buffered; a snapshot is needed), "resync"
 * (the book was dropped or the snapshot refused, see `reason`: fetch a new
 * snapshot).
 */
export type BinanceSyncStatus = "ok" | "waiting_snapshot" | "resync";

/** What {@linkcode BinanceBookSync.onDiff} and {@linkcode BinanceBookSync.onSnapshot} return. */
export interface BinanceSyncResult {
  /** What the caller should do next; see {@linkcode BinanceSyncStatus}. */
  status: BinanceSyncStatus;
  /** Book events to publish, in order; empty unless the status is "ok". */
  events: BookEvent[];
  /** Why the status is "resync", or why an input was ignored. */
  reason?: string;
}

/**
 * The Binance local order book procedure for one symbol; see the module
 * documentation for the rules.
 *
 * @example
 * ```ts
 * import type { BookEvent } from "../../market/events.ts";
 * import { parseBinanceFrame } from "./parse.ts";
 * import { binanceSymbolMap } from "./symbols.ts";
 * declare const frame: string;
 * declare function fetchSnapshotAgain(): void;
 * declare function publish(event: BookEvent): void;
 *
 * const symbols = binanceSymbolMap(["NKN-USDT"]);
 * const receivedUs = Date.now() * 1000;
 * const sync = new BinanceBookSync("NKN-USDT", "NKNUSDT", { maxBufferedDiffs: 1_000 });
 * const parsed = parseBinanceFrame(frame, receivedUs, symbols);
 * if (parsed.control?.type === "depth_diff") {
 *   const { status, events } = sync.onDiff(parsed.control);
 *   if (status === "resync") fetchSnapshotAgain();
 *   for (const event of events) publish(event);
 * }
 * ```
 */
export class BinanceBookSync {
  /** Canonical symbol. */
  readonly symbol: string;
  /** Binance symbol. */
  readonly venueSymbol: string;
  readonly #book = new OrderBook();
  readonly #maxBuffered: number;
  readonly #resyncOnCrossed: boolean;
  readonly #snapshotLimit: number;
  /** Normalized worst bid price the snapshot covers, or null when it holds every bid. */
  #bidBound: string | null = null;
  /** Normalized worst ask price the snapshot covers, or null when it holds every ask. */
  #askBound: string | null = null;
  #state: BinanceBookSyncState = "waiting_snapshot";
  #buffer: BinanceDepthDiff[] = [];
  /** Update id the book is as of, once synced. */
  #lastUpdateId = -1;
  /** Whether a diff has been applied on top of the current snapshot. */
  #bridged = false;
  /** Whether a diff at or after the current snapshot showed it is not older than the stream. */
  #confirmed = false;

  /**
   * Makes a sync waiting for its first snapshot. Throws a `RangeError` when
   * `maxBufferedDiffs` or `snapshotLimit` is not a positive integer.
   */
  constructor(symbol: string, venueSymbol: string, options: BinanceBookSyncOptions = {}) {
    const {
      maxBufferedDiffs = DEFAULT_BINANCE_MAX_BUFFERED_DIFFS,
      resyncOnCrossed = true,
      snapshotLimit = DEFAULT_BINANCE_SNAPSHOT_LIMIT,
    } = options;
    assertPositiveInteger(maxBufferedDiffs, "maxBufferedDiffs");
    assertPositiveInteger(snapshotLimit, "snapshotLimit");
    this.symbol = symbol;
    this.venueSymbol = venueSymbol;
    this.#maxBuffered = maxBufferedDiffs;
    this.#resyncOnCrossed = resyncOnCrossed;
    this.#snapshotLimit = snapshotLimit;
  }

  /** The current state. */
  get state(): BinanceBookSyncState {
    return this.#state;
  }

  /**
   * The local book, levels beyond the snapshot's coverage left out; empty
   * while waiting for a snapshot. Read it, don't change it.
   */
  get book(): OrderBook {
    return this.#book;
  }

  /** The update id the book is as of, or null while waiting for a snapshot. */
  get lastUpdateId(): number | null {
    return this.#state === "synced" ? this.#lastUpdateId : null;
  }

  /**
   * Whether the stream has confirmed the current snapshot: a diff was seen at
   * or before it (`u <= L`) or bridged it (`U <= L + 1 <= u`), buffered or
   * after. False while waiting, and after a snapshot taken with no diff
   * buffered until the next diff: until then the snapshot may be older than
   * the stream, and should not be published.
   */
  get confirmed(): boolean {
    return this.#state === "synced" && this.#confirmed;
  }

  /** Number of diffs buffered while waiting for a snapshot. */
  get bufferedDiffs(): number {
    return this.#buffer.length;
  }

  /**
   * Takes a diff from the stream. Throws a `TypeError` for another symbol's
   * diff.
   */
  onDiff(diff: BinanceDepthDiff): BinanceSyncResult {
    if (diff.venueSymbol !== this.venueSymbol) {
      throw new TypeError(
        `Diff for ${diff.venueSymbol} given to the ${this.venueSymbol} book sync`,
      );
    }
    if (this.#state === "waiting_snapshot") return this.#buffered(diff);
    const expected = this.#lastUpdateId + 1;
    if (!this.#bridged) {
      if (diff.finalUpdateId < expected) {
        this.#confirmed = true;
        return { status: "ok", events: [] };
      }
      if (diff.firstUpdateId > expected) {
        return this.#restart(
          diff,
          `Diff U=${diff.firstUpdateId} does not bridge the snapshot at lastUpdateId ${this.#lastUpdateId}`,
        );
      }
    } else if (diff.firstUpdateId !== expected) {
      return this.#restart(
        diff,
        `Gap: diff U=${diff.firstUpdateId} does not follow the previous u=${this.#lastUpdateId}`,
      );
    }
    const delta = this.#delta(diff, this.#apply(diff));
    const broken = this.#uncoveredReason() ?? this.#crossedReason();
    if (broken !== null) return this.#restart(diff, broken);
    return { status: "ok", events: [delta] };
  }

  /**
   * Takes a REST depth snapshot received at `receivedUs`. A snapshot that
   * arrives while already synced is ignored (reason given); call
   * {@linkcode BinanceBookSync.reset} first to start over.
   */
  onSnapshot(snapshot: BinanceDepthSnapshot, receivedUs: number): BinanceSyncResult {
    if (this.#state === "synced") {
      return { status: "ok", events: [], reason: "Already synced; snapshot ignored" };
    }
    const last = snapshot.lastUpdateId;
    const buffer = this.#buffer;
    let first = 0;
    while (first < buffer.length && buffer[first]!.finalUpdateId <= last) first++;
    const bridge = buffer[first];
    if (bridge !== undefined && bridge.firstUpdateId > last + 1) {
      // Keep the buffer: the next snapshot will likely be recent enough.
      this.#buffer = buffer.slice(first);
      return {
        status: "resync",
        events: [],
        reason:
          `Snapshot lastUpdateId ${last} is older than the first buffered diff U=${bridge.firstUpdateId}`,
      };
    }
    this.#book.replace(snapshot.bids, snapshot.asks);
    this.#bidBound = this.#boundOf("bid", snapshot.bids.length);
    this.#askBound = this.#boundOf("ask", snapshot.asks.length);
    this.#state = "synced";
    this.#lastUpdateId = last;
    this.#bridged = false;
    // A buffered diff at or before the snapshot, or bridging it, shows it is not stale.
    this.#confirmed = buffer.length > 0;
    this.#buffer = [];
    let tsExchange = receivedUs;
    for (let i = first; i < buffer.length; i++) {
      const diff = buffer[i]!;
      // Buffering keeps the chain unbroken, so only the first can fail to fit.
      if (diff.firstUpdateId !== this.#lastUpdateId + 1 && this.#bridged) {
        this.reset();
        this.#buffer = buffer.slice(i);
        return {
          status: "resync",
          events: [],
          reason: `Gap in buffered diffs at U=${diff.firstUpdateId}`,
        };
      }
      this.#apply(diff);
      tsExchange = diff.eventTimeUs;
    }
    const broken = this.#uncoveredReason() ?? this.#crossedReason();
    if (broken !== null) {
      this.reset();
      return { status: "resync", events: [], reason: broken };
    }
    const event: BookEvent = {
      kind: "book",
      exchange: "binance",
      symbol: this.symbol,
      venue_symbol: this.venueSymbol,
      ts_exchange: tsExchange,
      ts_local: receivedUs,
      action: "snapshot",
      bids: this.#book.levels("bid"),
      asks: this.#book.levels("ask"),
      sequence: this.#lastUpdateId,
    };
    return { status: "ok", events: [event] };
  }

  /** Drops the book and the buffer and waits for a snapshot again (after a reconnect). */
  reset(): void {
    this.#state = "waiting_snapshot";
    this.#buffer = [];
    this.#lastUpdateId = -1;
    this.#bridged = false;
    this.#confirmed = false;
    this.#bidBound = null;
    this.#askBound = null;
    this.#book.replace([], []);
  }

  #buffered(diff: BinanceDepthDiff): BinanceSyncResult {
    const buffer = this.#buffer;
    const previous = buffer[buffer.length - 1];
    if (previous !== undefined && diff.firstUpdateId !== previous.finalUpdateId + 1) {
      // The buffered chain broke: the older diffs can never be applied.
      buffer.length = 0;
    }
    if (buffer.length >= this.#maxBuffered) {
      buffer.length = 0;
      buffer.push(diff);
      return {
        status: "resync",
        events: [],
        reason: `More than ${this.#maxBuffered} diffs buffered waiting for a snapshot`,
      };
    }
    buffer.push(diff);
    return { status: "waiting_snapshot", events: [] };
  }

  /** Applies the diff's levels within the boundaries; returns those levels. */
  #apply(diff: BinanceDepthDiff): { bids: Level[]; asks: Level[] } {
    const bids = within(diff.bids, this.#bidBound, "bid");
    const asks = within(diff.asks, this.#askBound, "ask");
    this.#book.applyAll(bids, asks);
    this.#lastUpdateId = diff.finalUpdateId;
    this.#bridged = true;
    this.#confirmed = true;
    return { bids, asks };
  }

  /**
   * The boundary of a side just replaced from a snapshot side of `count`
   * levels: its worst price when the side is full, else null.
   */
  #boundOf(side: "bid" | "ask", count: number): string | null {
    if (count < this.#snapshotLimit) return null;
    const worst = this.#book.levels(side).at(-1);
    return worst === undefined ? null : normalizeDecimal(worst[0]);
  }

  /** Why the book is unusable because a side with a boundary has no level left within it, or null. */
  #uncoveredReason(): string | null {
    const { bids, asks } = this.#book.size();
    const side = this.#bidBound !== null && bids === 0
      ? `bids down to ${this.#bidBound}`
      : this.#askBound !== null && asks === 0
      ? `asks up to ${this.#askBound}`
      : null;
    if (side === null) return null;
    return `No level left at update ${this.#lastUpdateId} among the ${side} the ${this.#snapshotLimit}-level snapshot covered; the best price beyond them is unknown`;
  }

  /** Why the book is crossed or locked when that is "resync", or null. */
  #crossedReason(): string | null {
    if (!this.#resyncOnCrossed || !this.#book.crossed()) return null;
    const { bid, ask } = this.#book.top();
    return `Book crossed at update ${this.#lastUpdateId}: bid ${bid?.[0]} >= ask ${ask?.[0]}`;
  }

  /** Drops the book and starts buffering again from `diff`. */
  #restart(diff: BinanceDepthDiff, reason: string): BinanceSyncResult {
    this.reset();
    this.#buffer.push(diff);
    return { status: "resync", events: [], reason };
  }

  #delta(diff: BinanceDepthDiff, levels: { bids: Level[]; asks: Level[] }): BookEvent {
    return {
      kind: "book",
      exchange: "binance",
      symbol: this.symbol,
      venue_symbol: this.venueSymbol,
      ts_exchange: diff.eventTimeUs,
      ts_local: diff.receivedUs,
      action: "delta",
      bids: levels.bids,
      asks: levels.asks,
      sequence: diff.finalUpdateId,
    };
  }
}

/**
 * The levels of a `side` at or better than the normalized price `bound`: all
 * of `levels` (the same array) when `bound` is null or none lies beyond it.
 */
function within(levels: Level[], bound: string | null, side: "bid" | "ask"): Level[] {
  if (bound === null) return levels;
  const beyond = (level: Level) => {
    const cmp = compareNormalized(normalizeDecimal(level[0]), bound);
    return side === "bid" ? cmp < 0 : cmp > 0;
  };
  return levels.some(beyond) ? levels.filter((level) => !beyond(level)) : levels;
}
