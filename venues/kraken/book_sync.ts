/**
 * Keeps one Kraken v2 book in sync and decides what to publish: snapshots
 * replace the book, updates change it, the book is truncated to the
 * subscribed depth (Kraken sends no removal for levels that fall out of it)
 * and Kraken's checksum is verified after every frame. A mismatch means the
 * local book is wrong: nothing is published and the feed resubscribes for a
 * fresh snapshot.
 *
 * Published deltas are self-contained: when truncation drops levels, the delta
 * carries them with size `"0"`, so a consumer applying deltas to its own book
 * ends with exactly this book. When the best bid or ask changed, a
 * {@linkcode TopEvent} follows the book event (Kraken's book top; turn off
 * with `emitTop: false`).
 *
 * Times: every event carries Kraken's `timestamp` as `ts_exchange` and the
 * receive time as `ts_local`. For an update that is when the book changed.
 * For a snapshot it is when the book last changed — minutes old on a quiet
 * pair — although the snapshot states the book as it is when sent; so a
 * snapshot, and the top made from it, carry the {@linkcode AsOfReceipt} mark,
 * by which the validator holds them to the stale rule by `ts_local`. A top
 * made from an update is held to the update's own time, as the update is.
 *
 * @example
 * ```ts
 * import { KrakenBookSync } from "./book_sync.ts";
 * import { parseKrakenFrame } from "./parse.ts";
 *
 * const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
 * function onFrame(frame: string, receivedUs: number) {
 *   const { control } = parseKrakenFrame(frame, receivedUs);
 *   if (control?.type !== "book") return;
 *   const result = sync.onBook(control, receivedUs);
 *   if (result.status === "resync") {
 *     // unsubscribe and subscribe again; publish nothing until the snapshot
 *   }
 * }
 * ```
 *
 * @module
 */

import type { BookEvent, Level, TopEvent } from "../../market/events.ts";
import { isZeroDecimal, normalizeDecimal } from "../../market/decimal.ts";
import type { AsOfReceipt } from "../../market/validation.ts";
import {
  KRAKEN_CHECKSUM_LEVELS,
  KRAKEN_CHECKSUM_START,
  krakenChecksumAppend,
  krakenChecksumEnd,
  krakenLevelDigits,
  krakenLevelShare,
} from "./checksum.ts";
import type { KrakenBookControl } from "./parse.ts";
import { assertPositiveInteger } from "../../lib/assert.ts";

/** Options for {@linkcode KrakenBookSync}. */
export interface KrakenBookSyncOptions {
  /** Whether to publish a {@linkcode TopEvent} when the best bid or ask changes. @default {true} */
  emitTop?: boolean;
}

/** What {@linkcode KrakenBookSync.onBook} decided. */
export type KrakenBookSyncResult =
  | {
    /** The frame was applied and verified; publish `events`. */
    status: "ok";
    /**
     * A book snapshot or delta, then a top event when the top changed; a
     * snapshot and its top carry the {@linkcode AsOfReceipt} mark.
     */
    events: (BookEvent | TopEvent)[];
  }
  | {
    /** The book is wrong (checksum mismatch, update without a snapshot): resubscribe. */
    status: "resync";
    /** Why, in a sentence. */
    reason: string;
    /** Always empty: nothing is published from a wrong book. */
    events: (BookEvent | TopEvent)[];
  }
  | {
    /** An update dropped while waiting for the snapshot a resync asked for. */
    status: "waiting";
    /** Always empty. */
    events: (BookEvent | TopEvent)[];
  };

/**
 * One symbol's Kraken v2 book: applies book controls, verifies checksums and
 * returns the events to publish.
 */
export class KrakenBookSync {
  /** Canonical symbol, e.g. `BTC-USD`. */
  readonly symbol: string;
  /** Kraken's symbol, e.g. `BTC/USD`. */
  readonly venueSymbol: string;
  /** The subscribed depth the book is truncated to. */
  readonly depth: number;
  readonly #emitTop: boolean;
  readonly #book = new KrakenBook();
  /** `empty`: no snapshot yet; `live`: in sync; `stale`: a resync was asked for. */
  #state: "empty" | "live" | "stale" = "empty";
  #top: [string, string, string, string] | null = null;

  /**
   * Makes the sync of `symbol` (Kraken's `venueSymbol`) subscribed at
   * `depth`; throws a `RangeError` when `depth` is not a positive integer.
   */
  constructor(
    symbol: string,
    venueSymbol: string,
    depth: number,
    options: KrakenBookSyncOptions = {},
  ) {
    assertPositiveInteger(depth, "Book depth");
    this.symbol = symbol;
    this.venueSymbol = venueSymbol;
    this.depth = depth;
    this.#emitTop = options.emitTop ?? true;
  }

  /** Whether the book is in sync (a verified snapshot, and every update since verified). */
  get live(): boolean {
    return this.#state === "live";
  }

  /**
   * Applies one book control received at `receivedUs` and says what to
   * publish. Throws a `TypeError` when the control is for another symbol.
   */
  onBook(control: KrakenBookControl, receivedUs: number): KrakenBookSyncResult {
    if (control.venue_symbol !== this.venueSymbol) {
      throw new TypeError(
        `Book of ${control.venue_symbol} given to the sync of ${this.venueSymbol}`,
      );
    }
    const book = this.#book;
    let bids = control.bids;
    let asks = control.asks;
    if (control.action === "snapshot") {
      try {
        book.replace(bids, asks);
      } catch (error) {
        return this.#resync(`Snapshot has a malformed level: ${(error as Error).message}`);
      }
      book.truncate(this.depth);
    } else {
      if (this.#state === "stale") return { status: "waiting", events: [] };
      if (this.#state === "empty") return this.#resync("Book update arrived before a snapshot");
      try {
        book.applyAll(bids, asks);
      } catch (error) {
        return this.#resync(`Update has a malformed level: ${(error as Error).message}`);
      }
      bids = this.#withDropped("bid", bids);
      asks = this.#withDropped("ask", asks);
      book.truncate(this.depth);
    }
    const checksum = book.checksum();
    if (checksum !== control.checksum) {
      return this.#resync(
        `Checksum mismatch after ${control.action} at ${control.timestamp}: ` +
          `Kraken sent ${control.checksum}, the local book gives ${checksum}`,
      );
    }
    this.#state = "live";
    const snapshot = control.action === "snapshot";
    const event: BookEvent = {
      exchange: "kraken",
      symbol: this.symbol,
      venue_symbol: this.venueSymbol,
      ts_exchange: control.timestamp,
      ts_local: receivedUs,
      kind: "book",
      action: snapshot ? "snapshot" : "delta",
      bids: snapshot ? book.levels("bid") : bids,
      asks: snapshot ? book.levels("ask") : asks,
      sequence: null,
    };
    const events: (BookEvent | TopEvent)[] = [snapshot ? asOfReceipt(event) : event];
    if (this.#emitTop) {
      const top = this.#topEvent(control.timestamp, receivedUs);
      if (top) events.push(snapshot ? asOfReceipt(top) : top);
    }
    return { status: "ok", events };
  }

  /**
   * Says what to do about a book frame of this symbol that could not be
   * parsed (`action` when it could be read, else null): a change was lost, so
   * the book is marked stale and a resync asked for — unless it is an update
   * of a book already waiting for its snapshot, which would have been dropped
   * anyway. Kraken's checksum covers only the top 10 levels, so a lost change
   * deeper down would never be caught by a later checksum.
   */
  onMalformed(action: "snapshot" | "update" | null): KrakenBookSyncResult {
    if (action === "update" && this.#state === "stale") return { status: "waiting", events: [] };
    return this.#resync(`Malformed book ${action ?? "frame"}`);
  }

  /**
   * Marks the book stale, as after a resync: updates are dropped until the
   * next snapshot. Call it when the connection drops or the feed resubscribes.
   */
  reset(): void {
    this.#state = this.#state === "empty" ? "empty" : "stale";
    this.#top = null;
  }

  /** The best `limit` levels of a side, best first, as sent. */
  levels(side: "bid" | "ask", limit = Infinity): Level[] {
    return this.#book.levels(side, limit);
  }

  /** Best bid and ask levels, or null for an empty side. */
  top(): { bid: Level | null; ask: Level | null } {
    return this.#book.top();
  }

  #resync(reason: string): KrakenBookSyncResult {
    this.#state = "stale";
    this.#top = null;
    return { status: "resync", reason, events: [] };
  }

  /** `levels` plus a removal for each level beyond the depth, which truncation is about to drop. */
  #withDropped(side: "bid" | "ask", levels: Level[]): Level[] {
    const entries = (side === "bid" ? this.#book.bids : this.#book.asks).entries;
    if (entries.length <= this.depth) return levels;
    const out = levels.slice();
    for (let i = this.depth; i < entries.length; i++) out.push([entries[i]!.price, "0"]);
    return out;
  }

  #topEvent(tsExchange: number, receivedUs: number): TopEvent | null {
    const bid = this.#book.bids.entries[0];
    const ask = this.#book.asks.entries[0];
    if (!bid || !ask) {
      this.#top = null;
      return null;
    }
    const last = this.#top;
    if (
      last && last[0] === bid.price && last[1] === bid.size && last[2] === ask.price &&
      last[3] === ask.size
    ) {
      return null;
    }
    this.#top = [bid.price, bid.size, ask.price, ask.size];
    return {
      exchange: "kraken",
      symbol: this.symbol,
      venue_symbol: this.venueSymbol,
      ts_exchange: tsExchange,
      ts_local: receivedUs,
      kind: "top",
      bid_price: bid.price,
      bid_qty: bid.size,
      ask_price: ask.price,
      ask_qty: ask.size,
    };
  }
}

/** A level of a {@linkcode BookSide}. */
interface Entry {
  /** Normalized price (see `normalizeDecimal`), the level's identity and sort key. */
  key: string;
  /** Length of the integer part of `key`: keys compare by it first. */
  integerLength: number;
  /** Price as Kraken sent it. */
  price: string;
  /** Size as Kraken sent it. */
  size: string;
  /** The level's `krakenLevelShare`, once the checksum has needed it. */
  share: number;
  /** The level's `krakenLevelDigits`; -1 until the checksum needs it. */
  digits: number;
}

/**
 * One side of a {@linkcode KrakenBook}, best level first (a Kraken book is at
 * most its subscribed depth, 1000 levels): it holds what `OrderBook`'s side
 * holds (the same levels, order, errors and partial application of a
 * malformed batch), and records the best position it changed since the last
 * checksum.
 */
class BookSide {
  readonly entries: Entry[] = [];
  /** The first position changed since the checksum last read this side. */
  changedFrom = 0;
  readonly #descending: boolean;

  constructor(descending: boolean) {
    this.#descending = descending;
  }

  clear(): void {
    this.entries.length = 0;
    this.changedFrom = 0;
  }

  /** Sets the level at `price` to `size`; a zero size removes it. Throws as `OrderBook` does. */
  apply(price: string, size: string): void {
    const key = normalizeDecimal(price);
    const zero = isZeroDecimal(size);
    const entries = this.entries;
    const integerLength = integerPartLength(key);
    const descending = this.#descending;
    // Index of the first entry not better than `key`: after the last when that one is better
    // (as each level of a snapshot comes), else by binary search.
    let lo = 0;
    let hi = entries.length;
    if (hi > 0) {
      const cmp = compareKeys(entries[hi - 1]!, key, integerLength);
      if (descending ? cmp > 0 : cmp < 0) lo = hi;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const cmp = compareKeys(entries[mid]!, key, integerLength);
      if (descending ? cmp > 0 : cmp < 0) lo = mid + 1;
      else hi = mid;
    }
    const found = lo < entries.length && entries[lo]!.key === key;
    if (zero) {
      if (!found) return;
      entries.splice(lo, 1);
    } else if (found) {
      const entry = entries[lo]!;
      entry.price = price;
      entry.size = size;
      entry.digits = -1;
    } else {
      const entry = { key, integerLength, price, size, share: 0, digits: -1 };
      if (lo === entries.length) entries.push(entry);
      else entries.splice(lo, 0, entry);
    }
    if (lo < this.changedFrom) this.changedFrom = lo;
  }

  truncate(depth: number): void {
    if (this.entries.length <= depth) return;
    this.entries.length = depth;
    if (depth < this.changedFrom) this.changedFrom = depth;
  }

  levels(limit: number): Level[] {
    return this.entries.slice(0, limit).map((e) => [e.price, e.size]);
  }
}

/**
 * The book a {@linkcode KrakenBookSync} keeps: `OrderBook`'s levels, with
 * Kraken's checksum kept up to date level by level — the CRC32 register after
 * each of the top 10 asks and bids is kept, and a checksum feeds again only
 * the levels from the first one that changed.
 */
class KrakenBook {
  readonly bids = new BookSide(true);
  readonly asks = new BookSide(false);
  /** The register before the asks' levels (slot 0), after each ask (1–10) and bid (11–20). */
  readonly #registers = new Int32Array(2 * KRAKEN_CHECKSUM_LEVELS + 1).fill(KRAKEN_CHECKSUM_START);

  replace(bids: readonly Level[], asks: readonly Level[]): void {
    this.bids.clear();
    this.asks.clear();
    for (const [price, size] of bids) this.bids.apply(price, size);
    for (const [price, size] of asks) this.asks.apply(price, size);
  }

  applyAll(bids: readonly Level[], asks: readonly Level[]): void {
    for (const [price, size] of bids) this.bids.apply(price, size);
    for (const [price, size] of asks) this.asks.apply(price, size);
  }

  truncate(depth: number): void {
    this.bids.truncate(depth);
    this.asks.truncate(depth);
  }

  levels(side: "bid" | "ask", limit = Infinity): Level[] {
    return (side === "bid" ? this.bids : this.asks).levels(limit);
  }

  top(): { bid: Level | null; ask: Level | null } {
    const bid = this.bids.entries[0];
    const ask = this.asks.entries[0];
    return {
      bid: bid ? [bid.price, bid.size] : null,
      ask: ask ? [ask.price, ask.size] : null,
    };
  }

  /** Kraken's checksum of the book as it is (see `krakenChecksum`). */
  checksum(): number {
    const registers = this.#registers;
    const levels = KRAKEN_CHECKSUM_LEVELS;
    const asks = this.asks;
    const bids = this.bids;
    let crc: number;
    if (asks.changedFrom < levels) {
      crc = registers[asks.changedFrom]!;
      const entries = asks.entries;
      for (let i = asks.changedFrom; i < levels; i++) {
        const entry = entries[i];
        if (entry !== undefined) crc = feedLevel(crc, entry);
        registers[i + 1] = crc;
      }
      bids.changedFrom = 0;
    } else if (bids.changedFrom < levels) {
      crc = registers[levels + bids.changedFrom]!;
    } else {
      asks.changedFrom = bids.changedFrom = levels;
      return krakenChecksumEnd(registers[2 * levels]!);
    }
    const entries = bids.entries;
    for (let i = bids.changedFrom; i < levels; i++) {
      const entry = entries[i];
      if (entry !== undefined) crc = feedLevel(crc, entry);
      registers[levels + i + 1] = crc;
    }
    asks.changedFrom = bids.changedFrom = levels;
    return krakenChecksumEnd(crc);
  }
}

/** The CRC32 register `crc` after `entry`'s level is fed into it. */
function feedLevel(crc: number, entry: Entry): number {
  if (entry.digits < 0) {
    entry.share = krakenLevelShare(entry.price, entry.size);
    entry.digits = krakenLevelDigits(entry.price, entry.size);
  }
  return krakenChecksumAppend(crc, entry.share, entry.digits);
}

/**
 * Orders a level against a normalized price `key` whose integer part is
 * `integerLength` long: negative when the level's price is lower. As
 * `compareNormalized`: with integer parts of one length, normalized decimals
 * order as their texts do.
 */
function compareKeys(entry: Entry, key: string, integerLength: number): number {
  if (entry.integerLength !== integerLength) return entry.integerLength - integerLength;
  const other = entry.key;
  return other === key ? 0 : other < key ? -1 : 1;
}

function integerPartLength(key: string): number {
  const dot = key.indexOf(".");
  return dot < 0 ? key.length : dot;
}

/**
 * `event` marked {@linkcode AsOfReceipt}: its `ts_exchange` is the book's last
 * change, and it holds as of when it was received.
 */
function asOfReceipt<T extends BookEvent | TopEvent>(event: T): T & AsOfReceipt {
  return Object.assign(event, { as_of_receipt: true as const });
}
