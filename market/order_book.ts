/**
 * A level-2 order book kept exactly: prices and sizes stay the decimal strings
 * the venue sent, levels are ordered by exact decimal comparison.
 *
 * @module
 */

import type { Level } from "./events.ts";
import { compareNormalized, decimalValue, normalizeDecimal } from "./decimal.ts";

interface Entry {
  /** Normalized price, the level's identity; the exact tie-break of `value`. */
  key: string;
  /** `key` as the nearest float: ordering by it agrees with the exact order wherever it differs. */
  value: number;
  /** Price as the venue sent it. */
  price: string;
  /** Size as the venue sent it. */
  size: string;
}

/** The sort key `+key` of the last price {@linkcode normalizePrice} read. */
let priceValue = 0;

/**
 * {@linkcode normalize} for a price, leaving its value (`+` the result) in
 * {@linkcode priceValue}, read in the same pass: with at most 15 or so
 * digits, as prices have, the digits make an exact integer and the division
 * by an exact power of ten rounds as `Number` does; longer ones go to `+`.
 */
function normalizePrice(text: string): string {
  if (typeof text !== "string") return valued(normalizeDecimal(text));
  const length = text.length;
  let mantissa = 0;
  let i = 0;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) break;
    mantissa = mantissa * 10 + (c - 0x30);
    i++;
  }
  const integerEnd = i;
  let end = length;
  if (i === 0) return valued(normalizeDecimal(text));
  if (i < length) {
    if (text.charCodeAt(i) !== 0x2e || i === length - 1) return valued(normalizeDecimal(text));
    let lastNonZero = i;
    for (i++; i < length; i++) {
      const c = text.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return valued(normalizeDecimal(text));
      if (c !== 0x30) lastNonZero = i;
      mantissa = mantissa * 10 + (c - 0x30);
    }
    // A fraction of zeros goes with its point.
    end = lastNonZero === integerEnd ? integerEnd : lastNonZero + 1;
  }
  let start = 0;
  while (start < integerEnd - 1 && text.charCodeAt(start) === 0x30) start++;
  const key = start === 0 && end === length ? text : text.slice(start, end);
  const fraction = length - integerEnd - (integerEnd < length ? 1 : 0);
  priceValue = decimalValue(mantissa, fraction, key);
  return key;
}

/** `key`, its value left in {@linkcode priceValue}. */
function valued(key: string): string {
  priceValue = +key;
  return key;
}

/** Exact order of two entries' prices: the floats where they differ, else the decimals. */
function compare(a: Entry, value: number, key: string): number {
  if (a.value !== value) return a.value < value ? -1 : 1;
  return a.key === key ? 0 : compareNormalized(a.key, key);
}

/**
 * One side of a book, kept WORST first: the best level is the last entry, so
 * the changes that land near the top of a deep book move few entries.
 */
class Side {
  #entries: Entry[] = [];
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
    const key = normalizePrice(price);
    const value = priceValue;
    // A valid size is zero exactly when its canonical text is "0".
    const zero = normalizeDecimal(size) === "0";
    const entries = this.#entries;
    const index = this.#find(value, key);
    const entry = entries[index];
    const found = entry !== undefined && entry.key === key;
    if (zero) {
      if (found) entries.splice(index, 1);
    } else if (found) {
      entry.price = price;
      entry.size = size;
    } else if (index === entries.length) {
      entries.push({ key, value, price, size });
    } else {
      entries.splice(index, 0, { key, value, price, size });
    }
  }

  /**
   * Replaces the side's levels with `levels` applied in order, in bulk: the
   * last occurrence of a price wins (a zero size leaves it out), sorted once.
   * When reading a level throws, the side holds the levels before it, as if
   * applied one by one, and the error goes on.
   */
  fill(levels: readonly Level[]): void {
    const read: Entry[] = [];
    const zeros: boolean[] = [];
    try {
      for (const [price, size] of levels) {
        const key = normalizeDecimal(price);
        zeros.push(normalizeDecimal(size) === "0");
        read.push({ key, value: +key, price, size });
      }
    } finally {
      this.#entries = this.#build(read, zeros);
    }
  }

  /** `read`'s levels as a side, worst first: the last of each price, unless its size is zero. */
  #build(read: Entry[], zeros: boolean[]): Entry[] {
    const n = read.length;
    // A snapshot comes best first (Coinbase, Kraken) or worst first: a strictly monotonic
    // list has no repeated price and needs no sorting.
    let bestFirst = true;
    let worstFirst = true;
    for (let i = 1; i < n && (bestFirst || worstFirst); i++) {
      const next = read[i]!;
      const order = this.#order(read[i - 1]!, next);
      if (order >= 0) worstFirst = false;
      if (order <= 0) bestFirst = false;
    }
    const out: Entry[] = [];
    if (worstFirst) {
      for (let i = 0; i < n; i++) if (!zeros[i]) out.push(read[i]!);
      return out;
    }
    if (bestFirst) {
      for (let i = n - 1; i >= 0; i--) if (!zeros[i]) out.push(read[i]!);
      return out;
    }
    // Worst first, a price's occurrences in the order given (the sort is stable).
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => this.#order(read[a]!, read[b]!));
    for (let i = 0; i < n; i++) {
      const index = order[i]!;
      const next = order[i + 1];
      if (next !== undefined && read[next]!.key === read[index]!.key) continue;
      if (!zeros[index]) out.push(read[index]!);
    }
    return out;
  }

  /** The best `limit` levels, best first (`limit` as `Array.prototype.slice` takes an end). */
  levels(limit: number): Level[] {
    const entries = this.#entries;
    const length = entries.length;
    // `slice` gives the count of any other `limit` exactly as the best-first side did.
    const count = limit >= length ? length : entries.slice(0, limit).length;
    const out: Level[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const entry = entries[length - 1 - i]!;
      out[i] = [entry.price, entry.size];
    }
    return out;
  }

  /** Drops the levels beyond the best `depth`: the first ones here. */
  truncate(depth: number): void {
    const entries = this.#entries;
    const length = entries.length;
    if (!(length > depth)) return;
    let kept: number = depth;
    if (!(typeof depth === "number" && Number.isInteger(depth) && depth >= 0)) {
      // The RangeError that setting the length to `depth` throws, or its value as a length.
      const scratch: Entry[] = [];
      scratch.length = depth;
      kept = scratch.length;
    }
    entries.splice(0, length - kept);
  }

  best(): Entry | undefined {
    return this.#entries[this.#entries.length - 1];
  }

  /** Positive when `a` is better than `b` on this side, negative when worse, else 0. */
  #order(a: Entry, b: Entry): number {
    const cmp = compare(a, b.value, b.key);
    return this.#descending ? cmp : -cmp;
  }

  /** Whether `entry` is worse than the price `key` on this side. */
  #worse(entry: Entry, value: number, key: string): boolean {
    const cmp = compare(entry, value, key);
    return this.#descending ? cmp < 0 : cmp > 0;
  }

  /**
   * Index of the first entry not worse than the price `key`: searched from
   * the best end, where most changes land (steps of 1, 2, 4, ... back, then
   * halving).
   */
  #find(value: number, key: string): number {
    const entries = this.#entries;
    const n = entries.length;
    let lo = 0;
    let hi = n;
    for (let step = 1; step <= n; step *= 2) {
      const probe = n - step;
      if (this.#worse(entries[probe]!, value, key)) {
        lo = probe + 1;
        break;
      }
      hi = probe;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#worse(entries[mid]!, value, key)) lo = mid + 1;
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
    this.#bids.fill(bids);
    this.#asks.fill(asks);
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
    return bid !== undefined && ask !== undefined && compare(bid, ask.value, ask.key) >= 0;
  }
}
