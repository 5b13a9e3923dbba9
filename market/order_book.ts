/**
 * A level-2 order book kept exactly: prices and sizes stay the decimal strings
 * the venue sent, levels are ordered by exact decimal comparison.
 *
 * @module
 */

import type { Level } from "./events.ts";
import { compareNormalized, decimalValue, isZeroDecimal, normalizeDecimal } from "./decimal.ts";

interface Entry {
  /** Normalized price, the level's identity (its rank, a float, is kept beside it in its block). */
  key: string;
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

/** The most entries a {@linkcode Block} holds; a full one splits in two. */
const BLOCK_SIZE = 64;

/**
 * The longest normalized price whose rank tells it from every other price of
 * at most this length: it has at most 15 digits, and two decimals of at most
 * 15 significant digits never round to one double.
 */
const SHORT_KEY = 15;

/** How full {@linkcode Side.fill} makes its blocks, leaving room for inserts. */
const FILL_SIZE = 48;

/**
 * A run of a side's entries, worst first, with their ranks beside them: a
 * level set or removed moves at most a block's entries, not the side's.
 */
interface Block {
  /** Entries, worst first (never more than {@linkcode BLOCK_SIZE}). */
  entries: Entry[];
  /**
   * `ranks[i]` is the rank of `entries[i]`: its value, negated on the ask
   * side, so ranks ascend worst to best. Always an array of doubles.
   */
  ranks: number[];
}

/**
 * An empty array that holds its numbers as unboxed doubles from the start:
 * every block's ranks alike, so the searches read one kind of array.
 */
function doubles(): number[] {
  const out = [0.5];
  out.pop();
  return out;
}

/**
 * Where {@linkcode Side.locate} found a price: the block's index, the index
 * in it, and whether the entry there is the price's own level.
 */
let foundBlock = 0;
let foundIndex = 0;
let foundLevel = false;

/**
 * One side of a book, kept WORST first in blocks of at most
 * {@linkcode BLOCK_SIZE} entries: the best level is the last entry of the
 * last block. A change moves the entries of one block only, and the search
 * from the best end, where most changes land, reads packed ranks.
 */
class Side {
  #blocks: Block[] = [];
  /** `tops[b]` is the rank of block `b`'s last entry: the blocks are searched by it. */
  #tops: number[] = doubles();
  /**
   * Whether a price longer than {@linkcode SHORT_KEY} characters may be
   * held: until one is, two prices of one rank are one price.
   */
  #longKeys = false;
  #length = 0;
  /** 1 on the bid side, -1 on the ask side: a rank is `sign * value`, ascending worst to best. */
  readonly #sign: number;

  constructor(descending: boolean) {
    this.#sign = descending ? 1 : -1;
  }

  get length(): number {
    return this.#length;
  }

  clear(): void {
    this.#blocks = [];
    this.#tops = doubles();
    this.#longKeys = false;
    this.#length = 0;
  }

  /** Sets the level at `price` to `size`; a zero size removes it. */
  apply(price: string, size: string): void {
    const key = normalizePrice(price);
    const value = priceValue;
    const zero = isZeroDecimal(size);
    const rank = this.#sign * value;
    const blocks = this.#blocks;
    if (blocks.length === 0) {
      if (!zero) {
        const ranks = doubles();
        ranks.push(rank);
        blocks.push({ entries: [{ key, price, size }], ranks });
        if (key.length > SHORT_KEY) this.#longKeys = true;
        this.#tops.push(rank);
        this.#length = 1;
      }
      return;
    }
    this.#locate(rank, key);
    const b = foundBlock;
    const i = foundIndex;
    const { entries, ranks } = blocks[b]!;
    if (zero) {
      if (!foundLevel) return;
      const last = entries.length - 1;
      for (let j = i; j < last; j++) {
        entries[j] = entries[j + 1]!;
        ranks[j] = ranks[j + 1]!;
      }
      entries.pop();
      ranks.pop();
      this.#length--;
      if (last === 0) {
        blocks.splice(b, 1);
        this.#tops.splice(b, 1);
      } else if (i === last) {
        this.#tops[b] = ranks[last - 1]!;
      }
    } else if (foundLevel) {
      const entry = entries[i]!;
      entry.price = price;
      entry.size = size;
    } else {
      if (key.length > SHORT_KEY) this.#longKeys = true;
      this.#insert(b, i, { key, price, size }, rank);
    }
  }

  /** Puts `entry` of rank `rank` at index `i` of block `b`, splitting a full block. */
  #insert(b: number, i: number, entry: Entry, rank: number): void {
    const blocks = this.#blocks;
    let target = blocks[b]!;
    let at = i;
    if (target.entries.length === BLOCK_SIZE) {
      const half = BLOCK_SIZE >>> 1;
      const upper = { entries: target.entries.slice(half), ranks: target.ranks.slice(half) };
      target.entries.length = half;
      target.ranks.length = half;
      blocks.splice(b + 1, 0, upper);
      this.#tops.splice(b, 0, target.ranks[half - 1]!);
      if (at > half) {
        target = upper;
        at -= half;
        b++;
      }
    }
    const { entries, ranks } = target;
    let j = entries.length;
    entries.push(entry);
    ranks.push(rank);
    for (; j > at; j--) {
      entries[j] = entries[j - 1]!;
      ranks[j] = ranks[j - 1]!;
    }
    entries[at] = entry;
    ranks[at] = rank;
    if (at === entries.length - 1) this.#tops[b] = rank;
    this.#length++;
  }

  /**
   * Replaces the side's levels with `levels` applied in order, in bulk: the
   * last occurrence of a price wins (a zero size leaves it out), sorted once.
   * When reading a level throws, the side holds the levels before it, as if
   * applied one by one, and the error goes on.
   */
  fill(levels: readonly Level[]): void {
    const read: Entry[] = [];
    const ranks = doubles();
    const zeros: boolean[] = [];
    const sign = this.#sign;
    try {
      for (const [price, size] of levels) {
        // Read as apply reads a level: the same key, rank and zero test.
        const key = normalizePrice(price);
        const rank = sign * priceValue;
        zeros.push(isZeroDecimal(size));
        ranks.push(rank);
        read.push({ key, price, size });
      }
    } finally {
      this.#build(read, ranks, zeros);
    }
  }

  /**
   * Makes the side of `read`'s levels (of `ranks`), worst first in blocks:
   * the last of each price, unless its size is zero.
   */
  #build(read: Entry[], ranks: number[], zeros: boolean[]): void {
    const n = read.length;
    // A snapshot comes best first (Coinbase, Kraken) or worst first: a strictly monotonic
    // list has no repeated price and needs no sorting.
    let bestFirst = true;
    let worstFirst = true;
    for (let i = 1; i < n && (bestFirst || worstFirst); i++) {
      const order = this.#order(read, ranks, i - 1, i);
      if (order >= 0) worstFirst = false;
      if (order <= 0) bestFirst = false;
    }
    // The indexes of the levels kept, worst first.
    const kept: number[] = [];
    if (worstFirst) {
      for (let i = 0; i < n; i++) if (!zeros[i]) kept.push(i);
    } else if (bestFirst) {
      for (let i = n - 1; i >= 0; i--) if (!zeros[i]) kept.push(i);
    } else {
      // Worst first, a price's occurrences in the order given (the sort is stable).
      const order = Array.from({ length: n }, (_, i) => i);
      order.sort((a, b) => this.#order(read, ranks, a, b));
      for (let i = 0; i < n; i++) {
        const index = order[i]!;
        const next = order[i + 1];
        if (next !== undefined && read[next]!.key === read[index]!.key) continue;
        if (!zeros[index]) kept.push(index);
      }
    }
    const blocks: Block[] = [];
    const tops = doubles();
    let longKeys = false;
    for (let start = 0; start < kept.length; start += FILL_SIZE) {
      const end = Math.min(start + FILL_SIZE, kept.length);
      const entries: Entry[] = [];
      const blockRanks = doubles();
      for (let k = start; k < end; k++) {
        const index = kept[k]!;
        const entry = read[index]!;
        if (entry.key.length > SHORT_KEY) longKeys = true;
        entries.push(entry);
        blockRanks.push(ranks[index]!);
      }
      blocks.push({ entries, ranks: blockRanks });
      tops.push(blockRanks[blockRanks.length - 1]!);
    }
    this.#blocks = blocks;
    this.#tops = tops;
    this.#length = kept.length;
    this.#longKeys = longKeys;
  }

  /** The best `limit` levels, best first (`limit` as `Array.prototype.slice` takes an end). */
  levels(limit: number): Level[] {
    const length = this.#length;
    const count = limit >= length ? length : sliceCount(length, limit);
    const out: Level[] = new Array(count);
    const blocks = this.#blocks;
    let n = 0;
    for (let b = blocks.length - 1; b >= 0 && n < count; b--) {
      const entries = blocks[b]!.entries;
      for (let i = entries.length - 1; i >= 0 && n < count; i--) {
        const entry = entries[i]!;
        out[n++] = [entry.price, entry.size];
      }
    }
    return out;
  }

  /** Drops the levels beyond the best `depth`: the first ones here. */
  truncate(depth: number): void {
    const length = this.#length;
    if (!(length > depth)) return;
    let kept: number = depth;
    if (!(typeof depth === "number" && Number.isInteger(depth) && depth >= 0)) {
      // The RangeError that setting the length to `depth` throws, or its value as a length.
      const scratch: Entry[] = [];
      scratch.length = depth;
      kept = scratch.length;
    }
    const blocks = this.#blocks;
    let drop = length - kept;
    this.#length = length - drop;
    let whole = 0;
    while (whole < blocks.length && blocks[whole]!.entries.length <= drop) {
      drop -= blocks[whole]!.entries.length;
      whole++;
    }
    blocks.splice(0, whole);
    this.#tops.splice(0, whole);
    if (drop > 0) {
      const { entries, ranks } = blocks[0]!;
      entries.splice(0, drop);
      ranks.splice(0, drop);
    }
  }

  /** The best level's value (the side has one). */
  bestValue(): number {
    return this.#sign * this.#tops[this.#tops.length - 1]!;
  }

  best(): Entry | undefined {
    const blocks = this.#blocks;
    const entries = blocks[blocks.length - 1]?.entries;
    return entries?.[entries.length - 1];
  }

  /** Positive when level `a` of `read` (of `ranks`) is better than level `b`, negative when worse, else 0. */
  #order(read: Entry[], ranks: number[], a: number, b: number): number {
    const rankA = ranks[a]!;
    const rankB = ranks[b]!;
    if (rankA !== rankB) return rankA > rankB ? 1 : -1;
    const keyA = read[a]!.key;
    const keyB = read[b]!.key;
    return keyA === keyB ? 0 : this.#sign * compareNormalized(keyA, keyB);
  }

  /**
   * Finds where the price of rank `rank` and key `key` is or goes, in
   * {@linkcode foundBlock} and {@linkcode foundIndex}: the first entry not
   * worse than it, or just past the best entry; {@linkcode foundLevel} says
   * whether that entry is the price's. The side has at least one block.
   *
   * Ranks alone place the price among the entries of other ranks (a float
   * order agrees with the exact one wherever the floats differ): the search
   * finds the first entry of a rank not below it — its block from the best
   * end, where most changes land (steps of 1, 2, 4, ... back, then halving),
   * by its last rank, then the entry in the block by halving. Among
   * entries of its very rank, the price goes after those whose exact price
   * is worse.
   */
  #locate(rank: number, key: string): void {
    const blocks = this.#blocks;
    const tops = this.#tops;
    const n = blocks.length;
    let lo = 0;
    let hi = n;
    for (let step = 1; step <= n; step *= 2) {
      const probe = n - step;
      if (tops[probe]! < rank) {
        lo = probe + 1;
        break;
      }
      hi = probe;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (tops[mid]! < rank) lo = mid + 1;
      else hi = mid;
    }
    if (lo === n) {
      foundBlock = n - 1;
      foundIndex = blocks[n - 1]!.entries.length;
      foundLevel = false;
      return;
    }
    const ranks = blocks[lo]!.ranks;
    // Its last rank is not below `rank`: the first such entry is in this block.
    let first = 0;
    let last = ranks.length - 1;
    while (first < last) {
      const mid = (first + last) >>> 1;
      if (ranks[mid]! < rank) first = mid + 1;
      else last = mid;
    }
    foundBlock = lo;
    foundIndex = first;
    // One price has one rank: an entry of another rank is another price.
    foundLevel = false;
    if (ranks[first] === rank) {
      if (
        (key.length <= SHORT_KEY && !this.#longKeys) || blocks[lo]!.entries[first]!.key === key
      ) {
        foundLevel = true;
      } else this.#passTies(lo, first, rank, key);
    }
  }

  /**
   * From the entry at `index` of block `b`, of rank `rank`, steps past the
   * entries of that rank whose exact price is worse than `key`, into the
   * {@linkcode foundBlock} and {@linkcode foundIndex} of the first one not
   * worse (or just past the best entry).
   */
  #passTies(b: number, index: number, rank: number, key: string): void {
    const blocks = this.#blocks;
    const sign = this.#sign;
    let at = index;
    for (;;) {
      const { entries, ranks } = blocks[b]!;
      while (at < entries.length) {
        const entryKey = entries[at]!.key;
        if (
          ranks[at] !== rank || entryKey === key || sign * compareNormalized(entryKey, key) > 0
        ) {
          foundBlock = b;
          foundIndex = at;
          foundLevel = entryKey === key;
          return;
        }
        at++;
      }
      if (b === blocks.length - 1) {
        foundBlock = b;
        foundIndex = at;
        foundLevel = false;
        return;
      }
      b++;
      at = 0;
    }
  }
}

/**
 * How many entries `Array.prototype.slice(0, limit)` takes from an array of
 * `length` entries (a `limit` below it).
 */
function sliceCount(length: number, limit: number): number {
  if (typeof limit !== "number") {
    return Array.prototype.slice.call({ length }, 0, limit).length;
  }
  const end = limit !== limit ? 0 : Math.trunc(limit);
  return end < 0 ? Math.max(length + end, 0) : Math.min(end, length);
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
    if (bid === undefined || ask === undefined) return false;
    const bidValue = this.#bids.bestValue();
    const askValue = this.#asks.bestValue();
    if (bidValue !== askValue) return bidValue > askValue;
    return bid.key === ask.key || compareNormalized(bid.key, ask.key) > 0;
  }
}
