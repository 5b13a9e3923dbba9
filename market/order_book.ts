/**
 * A level-2 order book kept exactly: prices and sizes stay the decimal strings
 * the venue sent, levels are ordered by exact decimal comparison.
 *
 * @module
 */

import type { Level } from "./events.ts";
import { compareNormalized, isZero, normalizeDecimal } from "./decimal.ts";

interface Entry {
  /** Normalized price, the level's identity and sort key. */
  key: string;
  /** Price as the venue sent it. */
  price: string;
  /** Size as the venue sent it. */
  size: string;
}

/** One side of a book, best level first. */
class Side {
  readonly #entries: Entry[] = [];
  readonly #descending: boolean;

  constructor(descending: boolean) {
    this.#descending = descending;
  }

  get length(): number {
    return this.#entries.length;
  }

  clear(): void {
    this.#entries.length = 0;
  }

  /** Sets the level at `price` to `size`; a zero size removes it. */
  apply(price: string, size: string): void {
    const key = normalizeDecimal(price);
    normalizeDecimal(size);
    const index = this.#find(key);
    const found = index < this.#entries.length && this.#entries[index]!.key === key;
    if (isZero(size)) {
      if (found) this.#entries.splice(index, 1);
    } else if (found) {
      this.#entries[index] = { key, price, size };
    } else {
      this.#entries.splice(index, 0, { key, price, size });
    }
  }

  levels(limit: number): Level[] {
    return this.#entries.slice(0, limit).map((e) => [e.price, e.size]);
  }

  truncate(depth: number): void {
    if (this.#entries.length > depth) this.#entries.length = depth;
  }

  best(): Entry | undefined {
    return this.#entries[0];
  }

  /** Index of the first entry not better than `key` (binary search). */
  #find(key: string): number {
    let lo = 0;
    let hi = this.#entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const cmp = compareNormalized(this.#entries[mid]!.key, key);
      const better = this.#descending ? cmp > 0 : cmp < 0;
      if (better) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * An order book: bids best (highest) first, asks best (lowest) first.
 *
 * @example
 * ```ts
 * const book = new OrderBook();
 * book.replace([["100.0", "1"]], [["101", "2"]]);
 * book.apply("bid", "100", "0"); // removes the 100.0 level
 * book.levels("ask", 10); // [["101", "2"]]
 * ```
 */
export class OrderBook {
  readonly #bids = new Side(true);
  readonly #asks = new Side(false);

  /** Replaces the whole book with a snapshot's levels. */
  replace(bids: readonly Level[], asks: readonly Level[]): void {
    this.#bids.clear();
    this.#asks.clear();
    for (const [price, size] of bids) this.#bids.apply(price, size);
    for (const [price, size] of asks) this.#asks.apply(price, size);
  }

  /** Sets one level; a zero size removes it. Throws a `TypeError` on a malformed decimal. */
  apply(side: "bid" | "ask", price: string, size: string): void {
    (side === "bid" ? this.#bids : this.#asks).apply(price, size);
  }

  /** Applies a delta's levels to both sides. */
  applyAll(bids: readonly Level[], asks: readonly Level[]): void {
    for (const [price, size] of bids) this.#bids.apply(price, size);
    for (const [price, size] of asks) this.#asks.apply(price, size);
  }

  /** The best `limit` levels of a side, best first, as `[price, size]` as sent. */
  levels(side: "bid" | "ask", limit = Infinity): Level[] {
    return (side === "bid" ? this.#bids : this.#asks).levels(limit);
  }

  /** Drops levels beyond `depth` on each side (Kraken keeps only the subscribed depth). */
  truncate(depth: number): void {
    this.#bids.truncate(depth);
    this.#asks.truncate(depth);
  }

  /** Number of levels on each side. */
  size(): { bids: number; asks: number } {
    return { bids: this.#bids.length, asks: this.#asks.length };
  }

  /** Best bid and ask levels, or null for an empty side. */
  top(): { bid: Level | null; ask: Level | null } {
    const bid = this.#bids.best();
    const ask = this.#asks.best();
    return {
      bid: bid ? [bid.price, bid.size] : null,
      ask: ask ? [ask.price, ask.size] : null,
    };
  }

  /** Whether the best bid is at or above the best ask (a crossed or locked book). */
  crossed(): boolean {
    const bid = this.#bids.best();
    const ask = this.#asks.best();
    return bid !== undefined && ask !== undefined && compareNormalized(bid.key, ask.key) >= 0;
  }
}
