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

import {
  compareNormalized,
  decimalValue,
  isZeroDecimal,
  normalizeDecimal,
} from "../../market/decimal.ts";
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
  readonly #bids = new Side(true);
  readonly #asks = new Side(false);
  readonly #book = new SyncBook(this.#bids, this.#asks);
  readonly #maxBuffered: number;
  readonly #resyncOnCrossed: boolean;
  readonly #snapshotLimit: number;
  /** Worst bid price the snapshot covers, or null when it holds every bid. */
  #bidBound: Price | null = null;
  /** Worst ask price the snapshot covers, or null when it holds every ask. */
  #askBound: Price | null = null;
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
   * while waiting for a snapshot. Read it, don't change it. (An
   * {@linkcode OrderBook} over the sync's own levels, which it keeps sorted
   * on a float key per price with exact ties, worst first.)
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
    this.#bidBound = this.#boundOf(this.#bids, snapshot.bids.length);
    this.#askBound = this.#boundOf(this.#asks, snapshot.asks.length);
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
      bids: this.#bids.levels(Infinity),
      asks: this.#asks.levels(Infinity),
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
    this.#bids.clear();
    this.#asks.clear();
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
    const bidBound = this.#bidBound;
    const askBound = this.#askBound;
    const bids = bidBound === null
      ? diff.bids
      : within(diff.bids, bidBound, this.#bids, keptBidKeys);
    const asks = askBound === null
      ? diff.asks
      : within(diff.asks, askBound, this.#asks, keptAskKeys);
    this.#bids.applyAll(bids, bidBound === null ? null : keptBidKeys);
    this.#asks.applyAll(asks, askBound === null ? null : keptAskKeys);
    this.#lastUpdateId = diff.finalUpdateId;
    this.#bridged = true;
    this.#confirmed = true;
    return { bids, asks };
  }

  /**
   * The boundary of a side just replaced from a snapshot side of `count`
   * levels: its worst price when the side is full, else null.
   */
  #boundOf(side: Side, count: number): Price | null {
    return count < this.#snapshotLimit ? null : side.worst();
  }

  /** Why the book is unusable because a side with a boundary has no level left within it, or null. */
  #uncoveredReason(): string | null {
    const side = this.#bidBound !== null && this.#bids.length === 0
      ? `bids down to ${normalizeDecimal(this.#bidBound.text)}`
      : this.#askBound !== null && this.#asks.length === 0
      ? `asks up to ${normalizeDecimal(this.#askBound.text)}`
      : null;
    if (side === null) return null;
    return `No level left at update ${this.#lastUpdateId} among the ${side} the ${this.#snapshotLimit}-level snapshot covered; the best price beyond them is unknown`;
  }

  /** Why the book is crossed or locked when that is "resync", or null. */
  #crossedReason(): string | null {
    if (!this.#resyncOnCrossed || !crossed(this.#bids, this.#asks)) return null;
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
 * The levels of `side` at or better than `bound`: all of `levels` (the same
 * array) when none lies beyond it; their prices' sort keys in `keys`. Throws
 * a `TypeError` for a price that is not a decimal, as the book would.
 */
function within(levels: Level[], bound: Price, side: Side, keys: number[]): Level[] {
  keys.length = 0;
  let kept: Level[] | null = null;
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    const price = level[0];
    const key = priceKey(price);
    const beyond = side.better(bound.key, bound.text, key, price);
    if (beyond) {
      kept ??= levels.slice(0, i);
    } else {
      keys.push(key);
      if (kept !== null) kept.push(level);
    }
  }
  return kept ?? levels;
}

/** The sort keys of the levels {@linkcode within} kept last, bids and asks. */
const keptBidKeys: number[] = [];
const keptAskKeys: number[] = [];

/** A price as sent with its sort key. */
interface Price {
  /** `Number(text)`: orders prices, ties broken by exact comparison. */
  key: number;
  /** The price as sent. */
  text: string;
}

/**
 * Compares two decimal prices exactly: negative when `a < b`, zero when they
 * are one number in any spelling, positive when `a > b`. Correct rounding
 * keeps `Number` monotonic, so unequal keys order the prices; equal keys are
 * settled on the exact text.
 */
function comparePrices(aKey: number, aText: string, bKey: number, bText: string): number {
  if (aKey !== bKey) return aKey < bKey ? -1 : 1;
  if (aText === bText) return 0;
  return compareNormalized(normalizeDecimal(aText), normalizeDecimal(bText));
}

/** Throws the `TypeError` of {@linkcode normalizeDecimal}, as {@linkcode OrderBook} does. */
function refuse(text: string): never {
  normalizeDecimal(text);
  throw new TypeError(`Not a decimal: ${JSON.stringify(text)}`);
}

/**
 * The sort key of the price `text`, `Number(text)`, read in the same pass that
 * checks it is a plain non-negative decimal (else the `TypeError` of
 * {@linkcode normalizeDecimal}), by {@linkcode decimalValue}.
 */
function priceKey(text: string): number {
  const n = text.length;
  let mantissa = 0;
  let dot = -1;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) mantissa = mantissa * 10 + (c - 48);
    else if (c === 46 && dot < 0) dot = i;
    else refuse(text);
  }
  if (n === 0 || dot === 0 || dot === n - 1) refuse(text);
  return decimalValue(mantissa, dot < 0 ? 0 : n - dot - 1, text);
}

/**
 * One side of the sync's book, kept as {@linkcode OrderBook} keeps one
 * (levels identified by exact price, sizes and prices as last sent) but
 * ordered worst first, so that the busy top of the book is at the end of
 * its arrays, and sorted on `Number(price)` ({@linkcode priceKey}) with exact ties.
 */
class Side {
  /** Whether this is the bid side (higher is better). */
  readonly #bid: boolean;
  /** Sort keys, worst first. */
  #keys: number[] = [];
  /** Prices as sent, worst first. */
  #prices: string[] = [];
  /** Sizes as sent, worst first. */
  #sizes: string[] = [];

  constructor(bid: boolean) {
    this.#bid = bid;
  }

  get length(): number {
    return this.#keys.length;
  }

  clear(): void {
    this.#keys.length = 0;
    this.#prices.length = 0;
    this.#sizes.length = 0;
  }

  /** Whether the price `a` is better than `b` on this side. */
  better(aKey: number, aText: string, bKey: number, bText: string): boolean {
    const cmp = comparePrices(aKey, aText, bKey, bText);
    return this.#bid ? cmp > 0 : cmp < 0;
  }

  /** Whether the level at `index` is worse than the price `text` of sort key `key`. */
  #worse(index: number, key: number, text: string): boolean {
    const at = this.#keys[index]!;
    const cmp = at !== key ? at < key ? -1 : 1 : comparePrices(at, this.#prices[index]!, key, text);
    return this.#bid ? cmp < 0 : cmp > 0;
  }

  /** Sets the level at `price` to `size`; a zero size removes it. */
  apply(price: string, size: string, key = priceKey(price)): void {
    const zero = isZeroDecimal(size);
    const keys = this.#keys;
    const prices = this.#prices;
    const n = keys.length;
    // The first level not worse than `price`, searched from the top (the end), where
    // most changes land: steps of 1, 2, 4, ... back, then halving.
    let lo = 0;
    let hi = n;
    for (let step = 1; step <= n; step *= 2) {
      const probe = n - step;
      if (this.#worse(probe, key, price)) {
        lo = probe + 1;
        break;
      }
      hi = probe;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#worse(mid, key, price)) lo = mid + 1;
      else hi = mid;
    }
    const found = lo < keys.length && comparePrices(keys[lo]!, prices[lo]!, key, price) === 0;
    if (zero) {
      if (found) {
        keys.splice(lo, 1);
        prices.splice(lo, 1);
        this.#sizes.splice(lo, 1);
      }
    } else if (found) {
      prices[lo] = price;
      this.#sizes[lo] = size;
    } else {
      keys.splice(lo, 0, key);
      prices.splice(lo, 0, price);
      this.#sizes.splice(lo, 0, size);
    }
  }

  /** Applies `levels` in order; `keys`, when given, are their prices' sort keys. */
  applyAll(levels: readonly Level[], keys: readonly number[] | null = null): void {
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i]!;
      if (keys === null) this.apply(level[0], level[1]);
      else this.apply(level[0], level[1], keys[i]!);
    }
  }

  /**
   * Replaces the side's levels with `levels` applied in order. A snapshot
   * comes best first: its levels are gathered so and turned round at the end.
   */
  fill(levels: readonly Level[]): void {
    this.clear();
    const keys = this.#keys;
    const prices = this.#prices;
    const sizes = this.#sizes;
    try {
      for (let i = 0; i < levels.length; i++) {
        const [price, size] = levels[i]!;
        const key = priceKey(price);
        const zero = isZeroDecimal(size);
        const last = keys.length - 1;
        // Best first for now: a level worse than every one so far goes at the end (or,
        // when its size is zero, removes nothing).
        if (last < 0 || this.better(keys[last]!, prices[last]!, key, price)) {
          if (!zero) {
            keys.push(key);
            prices.push(price);
            sizes.push(size);
          }
          continue;
        }
        keys.reverse();
        prices.reverse();
        sizes.reverse();
        try {
          this.apply(price, size);
        } finally {
          keys.reverse();
          prices.reverse();
          sizes.reverse();
        }
      }
    } finally {
      keys.reverse();
      prices.reverse();
      sizes.reverse();
    }
  }

  /** The best `limit` levels, best first (`limit` as `Array.prototype.slice` takes an end). */
  levels(limit: number): Level[] {
    const prices = this.#prices;
    const sizes = this.#sizes;
    const levels: Level[] = [];
    for (let i = prices.length - 1; i >= 0; i--) levels.push([prices[i]!, sizes[i]!]);
    return limit === Infinity ? levels : levels.slice(0, limit);
  }

  /** Drops the levels beyond the best `depth`. */
  truncate(depth: number): void {
    if (this.#keys.length <= depth) return;
    const best = this.levels(Infinity);
    best.length = depth;
    this.fill(best);
  }

  /** The best level, or null on an empty side. */
  best(): Level | null {
    const last = this.#keys.length - 1;
    return last < 0 ? null : [this.#prices[last]!, this.#sizes[last]!];
  }

  /** The best price's sort key (`-1` on an empty side; keys are never negative). */
  bestKey(): number {
    const last = this.#keys.length - 1;
    return last < 0 ? -1 : this.#keys[last]!;
  }

  /** The best price as sent; the side must not be empty. */
  bestText(): string {
    return this.#prices[this.#prices.length - 1]!;
  }

  /** The worst price, or null on an empty side. */
  worst(): Price | null {
    return this.#keys.length === 0 ? null : { key: this.#keys[0]!, text: this.#prices[0]! };
  }
}

/** Whether the best bid is at or above the best ask (a crossed or locked book). */
function crossed(bids: Side, asks: Side): boolean {
  const bid = bids.bestKey();
  const ask = asks.bestKey();
  if (bid < 0 || ask < 0) return false;
  return bid !== ask ? bid > ask : comparePrices(bid, bids.bestText(), ask, asks.bestText()) >= 0;
}

/**
 * {@linkcode BinanceBookSync.book}: an {@linkcode OrderBook} whose every
 * method works on the sync's own two sides (the inherited ones stay empty),
 * so it reads and changes exactly as an {@linkcode OrderBook} holding the
 * same levels would.
 */
class SyncBook extends OrderBook {
  readonly #bids: Side;
  readonly #asks: Side;

  constructor(bids: Side, asks: Side) {
    super();
    this.#bids = bids;
    this.#asks = asks;
  }

  override replace(bids: readonly Level[], asks: readonly Level[]): void {
    this.#bids.clear();
    this.#asks.clear();
    this.#bids.fill(bids);
    this.#asks.fill(asks);
  }

  override apply(side: "bid" | "ask", price: string, size: string): void {
    (side === "bid" ? this.#bids : this.#asks).apply(price, size);
  }

  override applyAll(bids: readonly Level[], asks: readonly Level[]): void {
    this.#bids.applyAll(bids);
    this.#asks.applyAll(asks);
  }

  override levels(side: "bid" | "ask", limit = Infinity): Level[] {
    return (side === "bid" ? this.#bids : this.#asks).levels(limit);
  }

  override truncate(depth: number): void {
    this.#bids.truncate(depth);
    this.#asks.truncate(depth);
  }

  override size(): { bids: number; asks: number } {
    return { bids: this.#bids.length, asks: this.#asks.length };
  }

  override top(): { bid: Level | null; ask: Level | null } {
    return { bid: this.#bids.best(), ask: this.#asks.best() };
  }

  override crossed(): boolean {
    return crossed(this.#bids, this.#asks);
  }
}
