/**
 * {@linkcode OrderBook} keeps its levels on a float sort key per price with
 * exact ties and validates decimals by a character loop, and Coinbase's
 * book sync runs over it. These tests hold both to a straightforward
 * reference — the book and the sync as they were written first, with
 * `normalizeDecimal`'s regular expressions and prices compared as
 * normalized decimals, inlined here — on the captured session and on random
 * `level2` updates (odd spellings, zero sizes, malformed values, sequence
 * gaps): every result (status, reason, events), every error thrown, and the
 * book after each input. The parser reads `l2_data` frames written as
 * Coinbase writes them on a compact path; it is held to the general path
 * (`JSON.parse`, reached by a leading space) on every captured frame and on
 * mutated ones.
 */
import assert from "node:assert/strict";
import type { BookEvent, Level } from "../market/events.ts";
import { compareNormalized, isZero, normalizeDecimal } from "../market/decimal.ts";
import { OrderBook } from "../market/order_book.ts";
import {
  CoinbaseBookSync,
  type CoinbaseBookSyncResult,
  SequenceTracker,
} from "../venues/coinbase/book_sync.ts";
import {
  type CoinbaseBookControl,
  parseCoinbaseCompactBook,
  parseCoinbaseFrame,
} from "../venues/coinbase/parse.ts";

const FIXTURES = new URL("../../shared/fixtures/coinbase/", import.meta.url);
const RX = 1_786_309_548_300_000;

interface ReferenceEntry {
  key: string;
  price: string;
  size: string;
}

/** One side of the reference book: a sorted array searched by exact decimal comparison. */
class ReferenceSide {
  entries: ReferenceEntry[] = [];

  constructor(readonly descending: boolean) {}

  apply(price: string, size: string): void {
    const key = normalizeDecimal(price);
    normalizeDecimal(size);
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const cmp = compareNormalized(this.entries[mid]!.key, key);
      if (this.descending ? cmp > 0 : cmp < 0) lo = mid + 1;
      else hi = mid;
    }
    const found = lo < this.entries.length && this.entries[lo]!.key === key;
    if (isZero(size)) {
      if (found) this.entries.splice(lo, 1);
    } else if (found) {
      this.entries[lo] = { key, price, size };
    } else {
      this.entries.splice(lo, 0, { key, price, size });
    }
  }

  levels(limit: number): Level[] {
    return this.entries.slice(0, limit).map((e) => [e.price, e.size]);
  }
}

/** {@linkcode OrderBook} as it was first written. */
class ReferenceBook {
  bids = new ReferenceSide(true);
  asks = new ReferenceSide(false);

  replace(bids: readonly Level[], asks: readonly Level[]): void {
    this.bids.entries = [];
    this.asks.entries = [];
    this.applyAll(bids, asks);
  }

  apply(side: "bid" | "ask", price: string, size: string): void {
    (side === "bid" ? this.bids : this.asks).apply(price, size);
  }

  applyAll(bids: readonly Level[], asks: readonly Level[]): void {
    for (const [price, size] of bids) this.bids.apply(price, size);
    for (const [price, size] of asks) this.asks.apply(price, size);
  }

  levels(side: "bid" | "ask", limit = Infinity): Level[] {
    return (side === "bid" ? this.bids : this.asks).levels(limit);
  }

  truncate(depth: number): void {
    for (const side of [this.bids, this.asks]) {
      if (side.entries.length > depth) side.entries.length = depth;
    }
  }

  size(): { bids: number; asks: number } {
    return { bids: this.bids.entries.length, asks: this.asks.entries.length };
  }

  top(): { bid: Level | null; ask: Level | null } {
    const bid = this.bids.entries[0];
    const ask = this.asks.entries[0];
    return {
      bid: bid ? [bid.price, bid.size] : null,
      ask: ask ? [ask.price, ask.size] : null,
    };
  }

  crossed(): boolean {
    const bid = this.bids.entries[0];
    const ask = this.asks.entries[0];
    return bid !== undefined && ask !== undefined && compareNormalized(bid.key, ask.key) >= 0;
  }
}

/** Coinbase's book sync as it was first written, over the reference book. */
class ReferenceSync {
  readonly book = new ReferenceBook();
  state: "empty" | "live" | "stale" = "empty";

  constructor(readonly symbol: string) {}

  onBook(control: CoinbaseBookControl, receivedUs: number): CoinbaseBookSyncResult {
    if (control.venue_symbol !== this.symbol) {
      throw new TypeError(`Book of ${control.venue_symbol} given to the sync of ${this.symbol}`);
    }
    const snapshot = control.action === "snapshot";
    if (snapshot) {
      try {
        this.book.replace(control.bids, control.asks);
      } catch (error) {
        return this.resync(`Snapshot has a malformed level: ${(error as Error).message}`);
      }
    } else {
      if (this.state === "stale") return { status: "waiting", events: [] };
      if (this.state === "empty") return this.resync("Book update arrived before a snapshot");
      try {
        this.book.applyAll(control.bids, control.asks);
      } catch (error) {
        return this.resync(`Update has a malformed level: ${(error as Error).message}`);
      }
    }
    if (this.book.crossed()) {
      const { bid, ask } = this.book.top();
      return this.resync(
        `Book crossed after the ${control.action} of sequence ${control.sequence}: ` +
          `best bid ${bid?.[0]} is at or above best ask ${ask?.[0]}`,
      );
    }
    this.state = "live";
    const event: BookEvent = {
      exchange: "coinbase",
      symbol: this.symbol,
      venue_symbol: this.symbol,
      ts_exchange: control.timestamp,
      ts_local: receivedUs,
      kind: "book",
      action: snapshot ? "snapshot" : "delta",
      bids: snapshot ? this.book.levels("bid") : control.bids,
      asks: snapshot ? this.book.levels("ask") : control.asks,
      sequence: control.sequence,
    };
    return { status: "ok", events: [event] };
  }

  reset(): void {
    if (this.state !== "empty") this.state = "stale";
  }

  resync(reason: string): CoinbaseBookSyncResult {
    this.state = "stale";
    return { status: "resync", reason, events: [] };
  }
}

/** What calling `run` did: its value, or the error it threw (class and message). */
function outcome<T>(run: () => T): { value: T } | { error: string } {
  try {
    return { value: run() };
  } catch (error) {
    return { error: `${(error as Error).constructor.name}: ${(error as Error).message}` };
  }
}

function assertSameBook(book: OrderBook | CoinbaseBookSync, reference: ReferenceBook): void {
  assert.deepEqual(book.levels("bid"), reference.levels("bid"));
  assert.deepEqual(book.levels("ask"), reference.levels("ask"));
  assert.deepEqual(book.top(), reference.top());
  if (book instanceof OrderBook) {
    assert.deepEqual(book.size(), reference.size());
    assert.equal(book.crossed(), reference.crossed());
  }
}

/** A deterministic random source (an LCG), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

/** One of `items`, picked by `next`. */
function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)]!;
}

/** A price or size in some spelling: canonical, padded with zeros, huge, or malformed. */
function decimalText(next: () => number, ticks: number, malformed: number): string {
  const r = next();
  if (r < malformed) {
    return pick(next, ["", "-1", "1e5", "1.", ".5", "abc", "1,5", " 1", "1 ", "+1", "0x10", "١"]);
  }
  const tick = Math.floor(next() * ticks);
  const text = (tick / 100).toFixed(2);
  const spelling = next();
  if (spelling < 0.15) return `00${text}`;
  if (spelling < 0.3) return `${text}000`;
  if (spelling < 0.4) return text.replace(/\.?0+$/, "") || "0";
  if (spelling < 0.45) return `${text}00000000000000000001`; // beyond a float's precision
  if (spelling < 0.5) return `9007199254740993${text.slice(text.indexOf("."))}`;
  return text;
}

/** A size: zero in some spelling, malformed (with odds `malformed`), or a level's size. */
function sizeText(next: () => number, malformed: number): string {
  const r = next();
  if (r < 0.3) return pick(next, ["0", "0.0", "0.00000000", "000", "00.000"]);
  if (r < 0.3 + malformed) return pick(next, ["-1", "", "1e3", "0.", "NaN", "0 "]);
  return pick(next, ["1", "2.5", "0.00000011", "03", "4.000", "0.10", "7"]);
}

Deno.test("OrderBook gives the reference's levels, tops, sizes, crossings and errors over random operations", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const next = random(seed);
    const book = new OrderBook();
    const reference = new ReferenceBook();
    for (let i = 0; i < 4_000; i++) {
      const r = next();
      if (r < 0.01) {
        const bids = Array.from(
          { length: Math.floor(next() * 30) },
          (): Level => [decimalText(next, 400, 0.005), sizeText(next, 0)],
        );
        const asks = Array.from(
          { length: Math.floor(next() * 30) },
          (): Level => [decimalText(next, 400, 0.005), sizeText(next, 0)],
        );
        assert.deepEqual(
          outcome(() => book.replace(bids, asks)),
          outcome(() => reference.replace(bids, asks)),
        );
      } else if (r < 0.02) {
        const depth = pick(next, [0, 1, 5, 50, 1_000]);
        book.truncate(depth);
        reference.truncate(depth);
      } else if (r < 0.03) {
        const limit = pick(next, [0, 1, 2.5, -1, NaN, 10, Infinity]);
        assert.deepEqual(book.levels("bid", limit), reference.levels("bid", limit));
        assert.deepEqual(book.levels("ask", limit), reference.levels("ask", limit));
      } else {
        const side = next() < 0.5 ? "bid" : "ask";
        const price = decimalText(next, 400, 0.03);
        const size = sizeText(next, 0.02);
        assert.deepEqual(
          outcome(() => book.apply(side, price, size)),
          outcome(() => reference.apply(side, price, size)),
        );
      }
      assertSameBook(book, reference);
    }
  }
});

Deno.test("OrderBook orders prices that one float cannot tell apart by their exact value", () => {
  const book = new OrderBook();
  const reference = new ReferenceBook();
  const prices = [
    "9007199254740993",
    "9007199254740992",
    "9007199254740992.5",
    "0.10000000000000000001",
    "0.1",
    "0.09999999999999999999",
    "00.1000",
    "1" + "0".repeat(400),
    "1" + "0".repeat(399) + "1",
  ];
  for (const price of prices) {
    book.apply("bid", price, "1");
    reference.apply("bid", price, "1");
    book.apply("ask", price, "2");
    reference.apply("ask", price, "2");
    assertSameBook(book, reference);
  }
  assert.deepEqual(book.levels("bid", 3), [
    ["1" + "0".repeat(399) + "1", "1"],
    ["1" + "0".repeat(400), "1"],
    ["9007199254740993", "1"],
  ]);
});

/** A price near `center` ticks, in some spelling (see {@linkcode decimalText}), or malformed. */
function priceNear(next: () => number, center: number, spread: number, malformed: number): string {
  if (next() < malformed) return pick(next, ["", "1e5", ".5", "1.", "abc", " 1", "-2"]);
  const tick = Math.max(0, center + Math.floor((next() - 0.5) * spread));
  const text = (tick / 100).toFixed(2);
  const spelling = next();
  if (spelling < 0.1) return `0${text}`;
  if (spelling < 0.2) return `${text}0`;
  if (spelling < 0.25) return text.replace(/\.?0+$/, "") || "0";
  if (spelling < 0.28) return `${text}00000000000000000001`;
  return text;
}

/**
 * A snapshot side of about `length` levels around `center` ticks: best first,
 * worst first or shuffled, with (by the odds given) repeated prices, zero
 * sizes and malformed levels.
 */
function snapshotSide(
  next: () => number,
  bid: boolean,
  length: number,
  odds: { repeat: number; zero: number; malformed: number },
): Level[] {
  const levels: Level[] = [];
  for (let i = 0; i < length; i++) {
    if (next() < odds.repeat && levels.length > 0) {
      const [price] = pick(next, levels);
      levels.push([price, next() < 0.5 ? pick(next, ["0", "0.000"]) : sizeText(next, 0)]);
      continue;
    }
    const price = ((bid ? 200_000 - i * 3 : 200_001 + i * 3) / 100).toFixed(2);
    const size = next() < odds.zero ? pick(next, ["0", "00.0"]) : pick(next, ["1", "0.5", "2.000"]);
    levels.push([price, size]);
  }
  if (next() < odds.malformed * length) {
    const at = Math.floor(next() * levels.length);
    levels[at] = next() < 0.5 ? [pick(next, ["", "1e5", "x"]), "1"] : [levels[at]![0], "-1"];
  }
  const order = next();
  if (order < 0.3) levels.reverse();
  else if (order < 0.5) {
    for (let i = levels.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [levels[i], levels[j]] = [levels[j]!, levels[i]!];
    }
  }
  return levels;
}

Deno.test("OrderBook replaces its sides as applying the snapshot level by level would, repeats, zeros and malformed levels included", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const next = random(seed);
    const book = new OrderBook();
    const reference = new ReferenceBook();
    // Something to replace first.
    const start: Level[] = [["1999.00", "1"], ["2000.00", "2"]];
    book.replace(start, [["2001", "1"]]);
    reference.replace(start, [["2001", "1"]]);
    const odds = {
      repeat: pick(next, [0, 0.05, 0.3]),
      zero: pick(next, [0, 0.1, 0.5]),
      malformed: pick(next, [0, 0.01, 0.05]),
    };
    const bids = snapshotSide(next, true, Math.floor(next() * 80), odds);
    const asks = snapshotSide(next, false, Math.floor(next() * 80), odds);
    assert.deepEqual(
      outcome(() => book.replace(bids, asks)),
      outcome(() => reference.replace(bids, asks)),
      `seed ${seed}`,
    );
    assertSameBook(book, reference);
    for (let i = 0; i < 50; i++) {
      const side = next() < 0.5 ? "bid" : "ask";
      const price = priceNear(next, 200_000, 400, 0.02);
      const size = sizeText(next, 0.02);
      assert.deepEqual(
        outcome(() => book.apply(side, price, size)),
        outcome(() => reference.apply(side, price, size)),
      );
    }
    assertSameBook(book, reference);
  }
});

Deno.test("OrderBook truncates to the best levels as the reference does, and refuses a bad depth alike", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const next = random(seed);
    const book = new OrderBook();
    const reference = new ReferenceBook();
    const odds = { repeat: 0.1, zero: 0.1, malformed: 0 };
    const bids = snapshotSide(next, true, Math.floor(next() * 60), odds);
    const asks = snapshotSide(next, false, Math.floor(next() * 60), odds);
    book.replace(bids, asks);
    reference.replace(bids, asks);
    for (let i = 0; i < 20; i++) {
      if (next() < 0.3) {
        const depth = pick(next, [0, 1, 3, 10, 40, 100, -1, 2.5, NaN, Infinity, -0, 2 ** 32]);
        assert.deepEqual(
          outcome(() => book.truncate(depth)),
          outcome(() => reference.truncate(depth)),
        );
      } else {
        const side = next() < 0.5 ? "bid" : "ask";
        const price = priceNear(next, 200_000, 200, 0);
        const size = sizeText(next, 0);
        book.apply(side, price, size);
        reference.apply(side, price, size);
      }
      assertSameBook(book, reference);
      const limit = pick(next, [0, 1, 2.5, -1, -3.5, NaN, 7, 1_000, Infinity, -Infinity]);
      assert.deepEqual(book.levels("bid", limit), reference.levels("bid", limit));
      assert.deepEqual(book.levels("ask", limit), reference.levels("ask", limit));
    }
  }
});

Deno.test("OrderBook keeps a deep book (over 20000 levels a side) as the reference does", () => {
  for (const seed of [1, 2, 3]) {
    const next = random(seed);
    const book = new OrderBook();
    const reference = new ReferenceBook();
    const odds = { repeat: seed === 3 ? 0.01 : 0, zero: 0.01, malformed: 0 };
    const bids = snapshotSide(next, true, 22_000, odds);
    const asks = snapshotSide(next, false, 25_000, odds);
    assert.deepEqual(
      outcome(() => book.replace(bids, asks)),
      outcome(() => reference.replace(bids, asks)),
    );
    assertSameBook(book, reference);
    assert.ok(book.size().bids > 20_000 && book.size().asks > 20_000);
    for (let i = 0; i < 20_000; i++) {
      const side = next() < 0.5 ? "bid" : "ask";
      // Mostly near the top, now and then anywhere in the book.
      const deep = next() < 0.05;
      const center = side === "bid" ? 200_000 - (deep ? Math.floor(next() * 66_000) : 0) : 200_001 +
        (deep ? Math.floor(next() * 75_000) : 0);
      const price = priceNear(next, center, deep ? 20 : 600, 0.005);
      const size = sizeText(next, 0.005);
      assert.deepEqual(
        outcome(() => book.apply(side, price, size)),
        outcome(() => reference.apply(side, price, size)),
      );
      assert.deepEqual(book.top(), reference.top());
      assert.equal(book.crossed(), reference.crossed());
      if (i % 5_000 === 0) assertSameBook(book, reference);
    }
    assertSameBook(book, reference);
    for (const depth of [30_000, 20_000, 1_000, 10]) {
      book.truncate(depth);
      reference.truncate(depth);
      assertSameBook(book, reference);
    }
  }
});

Deno.test("Coinbase's book sync gives the reference's results and book over the captured session", () => {
  const frames = Deno.readTextFileSync(
    new URL("advanced_trade_session_2026-08-09.raw.jsonl", FIXTURES),
  ).split("\n").filter((line) => line);
  const syncs = new Map<string, [CoinbaseBookSync, ReferenceSync]>();
  let books = 0;
  for (const frame of frames) {
    const { control } = parseCoinbaseFrame(frame, RX);
    if (control?.type !== "book") continue;
    let pair = syncs.get(control.venue_symbol);
    if (!pair) {
      pair = [new CoinbaseBookSync(control.venue_symbol), new ReferenceSync(control.venue_symbol)];
      syncs.set(control.venue_symbol, pair);
    }
    const [sync, reference] = pair;
    assert.deepEqual(sync.onBook(control, RX), reference.onBook(control, RX));
    assert.equal(sync.live, reference.state === "live");
    assert.deepEqual(sync.top(), reference.book.top());
    // The whole book (thousands of levels) now and then, and after the last frame.
    if (books % 25 === 0) assertSameBook(sync, reference.book);
    books++;
  }
  assert.ok(books > 700, `${books} book frames`);
  for (const [sync, reference] of syncs.values()) {
    assert.ok(sync.live);
    assertSameBook(sync, reference.book);
  }
});

/** The text of one `l2_data` frame. */
function level2Frame(
  sequence: number,
  action: "snapshot" | "update",
  productId: string,
  updates: { side: string; price: unknown; size: unknown }[],
): string {
  return JSON.stringify({
    channel: "l2_data",
    client_id: "",
    timestamp: "2026-08-09T21:05:48.483587501Z",
    sequence_num: sequence,
    events: [{
      type: action,
      product_id: productId,
      updates: updates.map(({ side, price, size }) => ({
        side,
        event_time: "2026-08-09T21:05:48.170326Z",
        price_level: price,
        new_quantity: size,
      })),
    }],
  });
}

Deno.test("Coinbase's book sync gives the reference's results over random level2 frames with gaps and bad values", () => {
  for (const seed of [11, 12, 13, 14]) {
    const next = random(seed);
    const tracker = new SequenceTracker();
    const sync = new CoinbaseBookSync("BTC-USD");
    const reference = new ReferenceSync("BTC-USD");
    let sequence = 0;
    let statuses = new Set<string>();
    for (let i = 0; i < 3_000; i++) {
      // Gaps: now and then a number is skipped, and every book of the connection is reset.
      sequence += next() < 0.02 ? 2 + Math.floor(next() * 3) : 1;
      const snapshot = next() < 0.03 || i === 0;
      // Bids under 1.90 and asks from 1.90 up, in odd spellings; now and then a bid is placed
      // among the asks (the book crosses) or a value is malformed (the parser refuses it).
      const updates = Array.from({ length: snapshot ? 40 : 1 + Math.floor(next() * 6) }, () => {
        const bid = next() < 0.5;
        const crossing = !snapshot && bid && next() < 0.03;
        const tick = Math.floor(next() * (crossing ? 10 : 90));
        const text = ((bid && !crossing ? 100 + tick : 190 + tick) / 100).toFixed(2);
        const spelling = next();
        const price = spelling < 0.002
          ? 1.5
          : spelling < 0.004
          ? pick(next, ["", "-1", "1e5", "1.", ".5", " 1", "1,5"])
          : spelling < 0.1
          ? `0${text}0`
          : spelling < 0.15
          ? `${text}00000000000000000001`
          : spelling < 0.2
          ? text.replace(/\.?0+$/, "")
          : text;
        return { side: bid ? "bid" : "offer", price, size: sizeText(next, 0.002) };
      });
      const frame = level2Frame(sequence, snapshot ? "snapshot" : "update", "BTC-USD", updates);
      const parsed = outcome(() => parseCoinbaseFrame(frame, RX));
      if ("error" in parsed) {
        // A value the parser refuses never reaches a book.
        statuses.add("malformed frame");
        continue;
      }
      const { control, sequence: got } = parsed.value;
      if (got !== null && tracker.observe(got).status === "gap") {
        sync.reset();
        reference.reset();
      }
      assert.ok(control?.type === "book");
      const result = sync.onBook(control, RX);
      assert.deepEqual(result, reference.onBook(control, RX));
      statuses.add(result.status === "resync" ? result.reason.split(" ")[0]! : result.status);
      assert.equal(sync.live, reference.state === "live");
      assertSameBook(sync, reference.book);
    }
    // Every path was taken: published, waited, resynced (crossed, malformed, no snapshot).
    for (const status of ["ok", "waiting", "Book", "malformed frame"]) {
      assert.ok(statuses.has(status), `seed ${seed} never gave ${status}: ${[...statuses]}`);
    }
    statuses = new Set();
  }
});

Deno.test("Coinbase's book sync resyncs on a level OrderBook refuses, as the reference does", () => {
  // The parser refuses malformed decimals; a control built by hand can still carry one.
  const control = (action: "snapshot" | "update", bids: Level[], asks: Level[], sequence = 1) => ({
    type: "book" as const,
    action,
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    bids,
    asks,
    sequence,
    timestamp: RX,
  });
  const sync = new CoinbaseBookSync("BTC-USD");
  const reference = new ReferenceSync("BTC-USD");
  const inputs = [
    control("update", [["1", "1"]], []),
    control("snapshot", [["1", "1"], ["x", "1"]], [["2", "1"]]),
    control("update", [["1", "1"]], []),
    control("snapshot", [["1.0", "1"]], [["2", "1"]]),
    control("update", [["1", "-1"]], []),
    control("snapshot", [["1.0", "1"]], [["2", "1"]]),
    control("update", [["2.00", "3"]], [], 7),
    control("snapshot", [["3", "1"]], [["03.000", "1"]], 8),
  ];
  for (const input of inputs) {
    assert.deepEqual(sync.onBook(input, RX), reference.onBook(input, RX));
    assertSameBook(sync, reference.book);
  }
  assert.deepEqual(
    outcome(() => sync.onBook({ ...control("update", [], []), venue_symbol: "ETH-USD" }, RX)),
    outcome(() => reference.onBook({ ...control("update", [], []), venue_symbol: "ETH-USD" }, RX)),
  );
});

/** The frame read on the general path: a leading space keeps it off the compact one. */
function generalPath(frame: string) {
  return outcome(() => parseCoinbaseFrame(` ${frame}`, RX));
}

Deno.test("the compact level2 path reads every captured frame as the general path does", () => {
  const frames = Deno.readTextFileSync(
    new URL("advanced_trade_session_2026-08-09.raw.jsonl", FIXTURES),
  ).split("\n").filter((line) => line);
  let compact = 0;
  for (const frame of frames) {
    const fast = parseCoinbaseCompactBook(frame);
    if (frame.includes('"channel":"l2_data"')) {
      assert.ok(fast !== null, frame.slice(0, 200));
      compact++;
    } else {
      assert.equal(fast, null);
    }
    assert.deepEqual(outcome(() => parseCoinbaseFrame(frame, RX)), generalPath(frame));
  }
  assert.ok(compact > 700, `${compact} compact frames`);
});

Deno.test("the compact level2 path gives the general path's result or error on mutated frames, or leaves them to it", () => {
  const frames = Deno.readTextFileSync(
    new URL("advanced_trade_session_2026-08-09.raw.jsonl", FIXTURES),
  ).split("\n").filter((line) => line.includes('"channel":"l2_data"') && line.length < 2_000);
  frames.push(
    '{"channel":"l2_data","timestamp":"2026-08-09T21:05:48.5Z","sequence_num":0,' +
      '"events":[{"type":"snapshot","product_id":"","updates":[]}]}',
    '{"channel":"l2_data","timestamp":"2026-08-09T21:05:48Z","sequence_num":999999999999999,' +
      '"events":[{"type":"update","product_id":"\u00e9\ud800","updates":[{"side":"bid",' +
      '"event_time":"2026-02-30T21:05:48Z","price_level":"0","new_quantity":"00.0"}]}]}',
  );
  const inserts = [
    '"',
    "\\",
    ",",
    "]",
    "}",
    "{",
    "0",
    "9",
    ".",
    " ",
    "\n",
    "x",
    "\u0001",
    "-",
    "e",
  ];
  const next = random(7);
  let compact = 0;
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    const frame = pick(next, frames);
    const at = Math.floor(next() * (frame.length + 1));
    const r = next();
    const mutated = r < 0.3
      ? frame.slice(0, at) + frame.slice(at + 1)
      : r < 0.6
      ? frame.slice(0, at) + pick(next, inserts) + frame.slice(at)
      : r < 0.9
      ? frame.slice(0, at) + pick(next, inserts) + frame.slice(at + 1)
      : frame.slice(0, at);
    const fast = outcome(() => parseCoinbaseCompactBook(mutated));
    const general = generalPath(mutated);
    if ("value" in fast && fast.value === null) {
      refused++;
      continue;
    }
    compact++;
    // Read on the compact path: the same result, or the same error (a bad time).
    assert.deepEqual(fast, general, mutated);
    assert.deepEqual(outcome(() => parseCoinbaseFrame(mutated, RX)), general, mutated);
  }
  assert.ok(compact > 1_000 && refused > 1_000, `${compact} read, ${refused} left`);
});
