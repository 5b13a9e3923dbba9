/**
 * {@linkcode OrderBook} keeps each side in blocks of entries (a change moves
 * one block's entries, not the side's) and finds a price by its float rank,
 * ties by exact decimal order. These tests hold it to the book as it was
 * before — one sorted array a side, searched by float with exact ties —
 * copied here as `PreviousOrderBook`: every result and error of `replace`,
 * `apply`, `applyAll`, `truncate`, `levels`, `top`, `size` and `crossed`, and
 * the book after each step, over random operations on books deep enough to
 * span many blocks, with many prices that one float cannot tell apart (runs
 * of equal ranks longer than a block), zero sizes and malformed values.
 */
import assert from "node:assert/strict";
import type { Level } from "../market/events.ts";
import { compareNormalized, decimalValue, normalizeDecimal } from "../market/decimal.ts";
import { OrderBook } from "../market/order_book.ts";
import { prng } from "./_helpers.ts";

// ---- the previous OrderBook, as it was (market/order_book.ts at bf94f51) ----

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
class PreviousSide {
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
class PreviousOrderBook {
  readonly #bids = new PreviousSide(true);
  readonly #asks = new PreviousSide(false);

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

// ---- the tests ----

type Book = OrderBook | PreviousOrderBook;

function outcome<T>(run: () => T): { value: T } | { error: string } {
  try {
    return { value: run() };
  } catch (error) {
    return { error: `${(error as Error).name}: ${(error as Error).message}` };
  }
}

/** Every observable of `book`: levels (all and a few limits), top, size, crossed. */
function observe(book: Book): unknown {
  return {
    bids: book.levels("bid"),
    asks: book.levels("ask"),
    top: book.top(),
    size: book.size(),
    crossed: book.crossed(),
  };
}

function assertSame(book: OrderBook, previous: PreviousOrderBook, step: string): void {
  assert.deepEqual(observe(book), observe(previous), step);
}

function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)]!;
}

/**
 * A price near `center` ticks of 0.01: odd spellings (leading zeros,
 * trailing zeros), and now and then one of many prices a float cannot tell
 * apart from `center` (20 digits after the point), or a malformed one.
 */
function price(next: () => number, center: number, spread: number, odds: Odds): string {
  const r = next();
  if (r < odds.malformed) return pick(next, ["", "1e5", "-1", "1.", ".5", "abc", " 1", "1..2"]);
  const tick = Math.max(0, center + Math.floor((next() - 0.5) * 2 * spread));
  const integer = String(Math.floor(tick / 100));
  const cents = String(tick % 100).padStart(2, "0");
  if (r < odds.malformed + odds.tie) {
    // Many spellings of prices within 1e-18 of one tick: one float for all of them.
    const tail = String(Math.floor(next() * 300)).padStart(3, "0");
    return `${integer}.${cents}0000000000000000${tail}`;
  }
  const lead = next() < 0.05 ? "00" : "";
  const trail = next() < 0.1 ? "000" : "";
  return `${lead}${integer}.${cents}${trail}`;
}

function size(next: () => number, odds: Odds): string {
  const r = next();
  if (r < odds.malformed) return pick(next, ["", "-1", "x", "1e3", "0.", "NaN"]);
  if (r < odds.malformed + odds.zero) return pick(next, ["0", "0.000", "00"]);
  return `${1 + Math.floor(next() * 99)}.${Math.floor(next() * 1000)}`;
}

interface Odds {
  malformed: number;
  zero: number;
  tie: number;
}

function levels(next: () => number, count: number, center: number, spread: number, odds: Odds) {
  const out: Level[] = [];
  for (let i = 0; i < count; i++) out.push([price(next, center, spread, odds), size(next, odds)]);
  return out;
}

/** A sorted snapshot side (best first, worst first or shuffled) around `center`. */
function snapshot(next: () => number, count: number, center: number, odds: Odds): Level[] {
  const side = levels(next, count, center, count, odds);
  const order = next();
  if (order < 0.6) {
    const keyed = side.map((level) => ({ level, key: outcome(() => normalizeDecimal(level[0])) }));
    if (keyed.every((k) => "value" in k.key)) {
      keyed.sort((a, b) =>
        compareNormalized((a.key as { value: string }).value, (b.key as { value: string }).value)
      );
      const sorted = keyed.map((k) => k.level);
      return order < 0.3 ? sorted : sorted.reverse();
    }
  }
  return side;
}

function randomRun(seed: number, steps: number, depth: number, odds: Odds): void {
  const next = prng(seed);
  const book = new OrderBook();
  const previous = new PreviousOrderBook();
  const center = 100_000;
  for (let i = 0; i < steps; i++) {
    const r = next();
    let step: string;
    if (i === 0 || r < 0.003) {
      const bids = snapshot(next, Math.floor(next() * depth), center, odds);
      const asks = snapshot(next, Math.floor(next() * depth), center + depth, odds);
      step = `replace at ${i}`;
      assert.deepEqual(
        outcome(() => book.replace(bids, asks)),
        outcome(() => previous.replace(bids, asks)),
        step,
      );
    } else if (r < 0.006) {
      const d = pick(next, [0, 1, 63, 64, 65, 128, 500, depth, 2.5, -1, NaN, -0, Infinity]);
      step = `truncate(${d}) at ${i}`;
      assert.deepEqual(outcome(() => book.truncate(d)), outcome(() => previous.truncate(d)), step);
    } else if (r < 0.03) {
      const limit = pick(next, [0, 1, 2.5, -1, -70.5, NaN, 63, 64, 65, 200, Infinity, -Infinity]);
      step = `levels(${limit}) at ${i}`;
      assert.deepEqual(book.levels("bid", limit), previous.levels("bid", limit), step);
      assert.deepEqual(book.levels("ask", limit), previous.levels("ask", limit), step);
    } else if (r < 0.06) {
      const bids = levels(next, Math.floor(next() * 12), center, depth, odds);
      const asks = levels(next, Math.floor(next() * 12), center + depth, depth, odds);
      step = `applyAll at ${i}`;
      assert.deepEqual(
        outcome(() => book.applyAll(bids, asks)),
        outcome(() => previous.applyAll(bids, asks)),
        step,
      );
    } else {
      const side = next() < 0.5 ? "bid" : "ask";
      // Mostly near the top of the side, now and then anywhere in it.
      const near = next() < 0.8;
      const c = side === "bid" ? center : center + depth;
      const p = price(
        next,
        c + (near ? (side === "bid" ? depth / 2 : -depth / 2) : 0),
        near ? depth / 8 : depth,
        odds,
      );
      const s = size(next, odds);
      step = `apply(${side}, ${p}, ${s}) at ${i}`;
      assert.deepEqual(
        outcome(() => book.apply(side, p, s)),
        outcome(() => previous.apply(side, p, s)),
        step,
      );
    }
    if (i % 7 === 0 || step.startsWith("replace") || step.startsWith("truncate")) {
      assertSame(book, previous, step);
    } else {
      assert.deepEqual(book.top(), previous.top(), step);
      assert.equal(book.crossed(), previous.crossed(), step);
    }
  }
  assertSame(book, previous, "end");
}

Deno.test("OrderBook in blocks gives the previous book's results over random operations on books of many blocks", () => {
  for (let seed = 1; seed <= 12; seed++) {
    randomRun(seed, 3_000, 600, { malformed: 0.01, zero: 0.3, tie: 0.02 });
  }
});

Deno.test("OrderBook in blocks keeps runs of equal-float prices longer than a block in exact order", () => {
  for (let seed = 100; seed <= 110; seed++) {
    randomRun(seed, 3_000, 80, { malformed: 0.005, zero: 0.25, tie: 0.7 });
  }
});

Deno.test("OrderBook in blocks empties and refills its blocks as the previous book did", () => {
  for (let seed = 200; seed <= 210; seed++) {
    // Mostly removals: blocks empty out and go; then grow again.
    randomRun(seed, 4_000, 300, { malformed: 0.002, zero: 0.55, tie: 0.05 });
  }
});

Deno.test("OrderBook in blocks keeps a deep book (tens of thousands of levels) as the previous book did", () => {
  const next = prng(7);
  const book = new OrderBook();
  const previous = new PreviousOrderBook();
  const odds = { malformed: 0, zero: 0.01, tie: 0.001 };
  const bids = snapshot(next, 30_000, 1_000_000, odds);
  const asks = snapshot(next, 30_000, 1_060_000, odds);
  book.replace(bids, asks);
  previous.replace(bids, asks);
  assertSame(book, previous, "snapshot");
  for (let i = 0; i < 30_000; i++) {
    const side = next() < 0.5 ? "bid" : "ask";
    const deep = next() < 0.1;
    const c = side === "bid" ? 1_030_000 - (deep ? 25_000 : 0) : 1_030_000 + (deep ? 25_000 : 0);
    const p = price(next, c, deep ? 20_000 : 800, { malformed: 0.001, zero: 0, tie: 0.01 });
    const s = size(next, { malformed: 0.001, zero: 0.45, tie: 0 });
    assert.deepEqual(
      outcome(() => book.apply(side, p, s)),
      outcome(() => previous.apply(side, p, s)),
    );
    if (i % 3_000 === 0) assertSame(book, previous, `update ${i}`);
  }
  assertSame(book, previous, "updates");
  for (const depth of [50_000, 29_999, 4_097, 64, 63, 1, 0]) {
    book.truncate(depth);
    previous.truncate(depth);
    assertSame(book, previous, `truncate(${depth})`);
  }
});

Deno.test("OrderBook in blocks counts levels(limit) as slice does for limits of any type", () => {
  const book = new OrderBook();
  const previous = new PreviousOrderBook();
  const bids = Array.from({ length: 150 }, (_, i): Level => [String(1000 + i), "1"]);
  book.replace(bids, []);
  previous.replace(bids, []);
  const limits: unknown[] = [
    "3",
    "abc",
    null,
    undefined,
    true,
    [],
    [5],
    {},
    { valueOf: () => 70 },
    -0,
    0.9,
    -149.5,
    1e300,
    2 ** 32,
    -(2 ** 32),
    150,
    149,
    151,
  ];
  for (const limit of limits) {
    assert.deepEqual(
      outcome(() => book.levels("bid", limit as number)),
      outcome(() => previous.levels("bid", limit as number)),
      String(limit),
    );
  }
  for (const limit of [Symbol("x"), 10n]) {
    assert.deepEqual(
      outcome(() => book.levels("bid", limit as unknown as number)),
      outcome(() => previous.levels("bid", limit as unknown as number)),
    );
  }
});

Deno.test("OrderBook in blocks tells a price from a longer one of the same float, whichever came first", () => {
  // "100.1" and "100.10000000000000001" are one double; so are "100.2" and its long twin.
  const long = "100.10000000000000001";
  const cases: { snapshot: Level[]; updates: Level[] }[] = [
    { snapshot: [[long, "1"]], updates: [["100.1", "2"], [long, "3"], ["100.1", "0"]] },
    { snapshot: [["100.1", "1"]], updates: [[long, "2"], ["100.1", "3"], [long, "0"]] },
    { snapshot: [], updates: [["100.1", "1"], [long, "2"], ["100.10", "0"], [long, "0"]] },
    { snapshot: [["100.2", "1"], ["100.1", "1"]], updates: [["100.20000000000000001", "5"]] },
  ];
  for (const { snapshot, updates } of cases) {
    for (const side of ["bid", "ask"] as const) {
      const book = new OrderBook();
      const previous = new PreviousOrderBook();
      book.replace(side === "bid" ? snapshot : [], side === "ask" ? snapshot : []);
      previous.replace(side === "bid" ? snapshot : [], side === "ask" ? snapshot : []);
      for (const [p, s] of updates) {
        book.apply(side, p, s);
        previous.apply(side, p, s);
        assertSame(book, previous, `${side} ${p} ${s}`);
      }
    }
  }
});
