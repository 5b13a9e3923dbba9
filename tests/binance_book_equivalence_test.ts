/**
 * {@linkcode BinanceBookSync} keeps its book in its own sorted arrays (a
 * float sort key per price, exact ties) rather than in {@linkcode OrderBook}.
 * These tests hold it to a straightforward reference — the same rules over
 * an {@linkcode OrderBook}, prices compared as normalized decimals — on the
 * captured session and on random diffs: every result (status, events,
 * reason), every error thrown, the state and the book after each input.
 */
import assert from "node:assert/strict";
import type { BookEvent, Level } from "../market/events.ts";
import { compareNormalized, normalizeDecimal } from "../market/decimal.ts";
import { OrderBook } from "../market/order_book.ts";
import { BinanceBookSync, type BinanceSyncResult } from "../venues/binance/book_sync.ts";
import {
  type BinanceDepthDiff,
  type BinanceDepthSnapshot,
  parseBinanceDepthSnapshot,
  parseBinanceFrame,
} from "../venues/binance/parse.ts";
import { binanceSymbolMap } from "../venues/binance/symbols.ts";
import { prng } from "./_helpers.ts";

const FIXTURES = new URL("../../shared/fixtures/binance/", import.meta.url);
const RX = 1_786_000_000_000_000;

/** The sync's rules, written plainly over an {@linkcode OrderBook}. */
class ReferenceSync {
  readonly book = new OrderBook();
  state: "waiting_snapshot" | "synced" = "waiting_snapshot";
  buffer: BinanceDepthDiff[] = [];
  lastUpdateId = -1;
  bridged = false;
  confirmed = false;
  bidBound: string | null = null;
  askBound: string | null = null;

  constructor(
    readonly symbol: string,
    readonly venueSymbol: string,
    readonly options: { maxBufferedDiffs: number; resyncOnCrossed: boolean; snapshotLimit: number },
  ) {}

  onDiff(diff: BinanceDepthDiff): BinanceSyncResult {
    if (diff.venueSymbol !== this.venueSymbol) {
      throw new TypeError(
        `Diff for ${diff.venueSymbol} given to the ${this.venueSymbol} book sync`,
      );
    }
    if (this.state === "waiting_snapshot") {
      const previous = this.buffer.at(-1);
      if (previous !== undefined && diff.firstUpdateId !== previous.finalUpdateId + 1) {
        this.buffer = [];
      }
      if (this.buffer.length >= this.options.maxBufferedDiffs) {
        this.buffer = [diff];
        return {
          status: "resync",
          events: [],
          reason:
            `More than ${this.options.maxBufferedDiffs} diffs buffered waiting for a snapshot`,
        };
      }
      this.buffer.push(diff);
      return { status: "waiting_snapshot", events: [] };
    }
    const expected = this.lastUpdateId + 1;
    if (!this.bridged) {
      if (diff.finalUpdateId < expected) {
        this.confirmed = true;
        return { status: "ok", events: [] };
      }
      if (diff.firstUpdateId > expected) {
        return this.restart(
          diff,
          `Diff U=${diff.firstUpdateId} does not bridge the snapshot at lastUpdateId ${this.lastUpdateId}`,
        );
      }
    } else if (diff.firstUpdateId !== expected) {
      return this.restart(
        diff,
        `Gap: diff U=${diff.firstUpdateId} does not follow the previous u=${this.lastUpdateId}`,
      );
    }
    const { bids, asks } = this.apply(diff);
    const broken = this.broken();
    if (broken !== null) return this.restart(diff, broken);
    const event: BookEvent = {
      kind: "book",
      exchange: "binance",
      symbol: this.symbol,
      venue_symbol: this.venueSymbol,
      ts_exchange: diff.eventTimeUs,
      ts_local: diff.receivedUs,
      action: "delta",
      bids,
      asks,
      sequence: diff.finalUpdateId,
    };
    return { status: "ok", events: [event] };
  }

  onSnapshot(snapshot: BinanceDepthSnapshot, receivedUs: number): BinanceSyncResult {
    if (this.state === "synced") {
      return { status: "ok", events: [], reason: "Already synced; snapshot ignored" };
    }
    const last = snapshot.lastUpdateId;
    const buffer = this.buffer;
    const first = buffer.findIndex((diff) => diff.finalUpdateId > last);
    const kept = first < 0 ? [] : buffer.slice(first);
    if (kept.length > 0 && kept[0]!.firstUpdateId > last + 1) {
      this.buffer = kept;
      return {
        status: "resync",
        events: [],
        reason: `Snapshot lastUpdateId ${last} is older than the first buffered diff U=${
          kept[0]!.firstUpdateId
        }`,
      };
    }
    this.book.replace(snapshot.bids, snapshot.asks);
    const bound = (side: "bid" | "ask", count: number) => {
      const worst = this.book.levels(side).at(-1);
      return count < this.options.snapshotLimit || worst === undefined
        ? null
        : normalizeDecimal(worst[0]);
    };
    this.bidBound = bound("bid", snapshot.bids.length);
    this.askBound = bound("ask", snapshot.asks.length);
    this.state = "synced";
    this.lastUpdateId = last;
    this.bridged = false;
    this.confirmed = buffer.length > 0;
    this.buffer = [];
    let tsExchange = receivedUs;
    for (const [i, diff] of kept.entries()) {
      if (this.bridged && diff.firstUpdateId !== this.lastUpdateId + 1) {
        this.reset();
        this.buffer = kept.slice(i);
        return {
          status: "resync",
          events: [],
          reason: `Gap in buffered diffs at U=${diff.firstUpdateId}`,
        };
      }
      this.apply(diff);
      tsExchange = diff.eventTimeUs;
    }
    const broken = this.broken();
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
      bids: this.book.levels("bid"),
      asks: this.book.levels("ask"),
      sequence: this.lastUpdateId,
    };
    return { status: "ok", events: [event] };
  }

  reset(): void {
    this.state = "waiting_snapshot";
    this.buffer = [];
    this.lastUpdateId = -1;
    this.bridged = false;
    this.confirmed = false;
    this.bidBound = null;
    this.askBound = null;
    this.book.replace([], []);
  }

  apply(diff: BinanceDepthDiff): { bids: Level[]; asks: Level[] } {
    const within = (levels: Level[], bound: string | null, sign: number) => {
      if (bound === null) return levels;
      const inside = (level: Level) =>
        sign * compareNormalized(normalizeDecimal(level[0]), bound) >= 0;
      const kept = levels.filter(inside);
      return kept.length === levels.length ? levels : kept;
    };
    const bids = within(diff.bids, this.bidBound, 1);
    const asks = within(diff.asks, this.askBound, -1);
    this.book.applyAll(bids, asks);
    this.lastUpdateId = diff.finalUpdateId;
    this.bridged = true;
    this.confirmed = true;
    return { bids, asks };
  }

  broken(): string | null {
    const { bids, asks } = this.book.size();
    const side = this.bidBound !== null && bids === 0
      ? `bids down to ${this.bidBound}`
      : this.askBound !== null && asks === 0
      ? `asks up to ${this.askBound}`
      : null;
    if (side !== null) {
      return `No level left at update ${this.lastUpdateId} among the ${side} the ${this.options.snapshotLimit}-level snapshot covered; the best price beyond them is unknown`;
    }
    if (!this.options.resyncOnCrossed || !this.book.crossed()) return null;
    const { bid, ask } = this.book.top();
    return `Book crossed at update ${this.lastUpdateId}: bid ${bid?.[0]} >= ask ${ask?.[0]}`;
  }

  restart(diff: BinanceDepthDiff, reason: string): BinanceSyncResult {
    this.reset();
    this.buffer.push(diff);
    return { status: "resync", events: [], reason };
  }
}

/** The result of `run`, or the error it threw. */
function outcome<T>(run: () => T): { ok: T } | { error: string } {
  try {
    return { ok: run() };
  } catch (error) {
    return { error: `${(error as Error).name}: ${(error as Error).message}` };
  }
}

function assertSame(sync: BinanceBookSync, reference: ReferenceSync, label: string): void {
  assert.deepEqual(
    {
      state: sync.state,
      lastUpdateId: sync.lastUpdateId,
      confirmed: sync.confirmed,
      buffered: sync.bufferedDiffs,
    },
    {
      state: reference.state,
      lastUpdateId: reference.state === "synced" ? reference.lastUpdateId : null,
      confirmed: reference.state === "synced" && reference.confirmed,
      buffered: reference.buffer.length,
    },
    label,
  );
  const book = sync.book;
  const expected = reference.book;
  assert.deepEqual(book.levels("bid"), expected.levels("bid"), `${label}: bids`);
  assert.deepEqual(book.levels("ask"), expected.levels("ask"), `${label}: asks`);
  assert.deepEqual(book.levels("bid", 3), expected.levels("bid", 3), `${label}: best bids`);
  assert.deepEqual(book.size(), expected.size(), `${label}: size`);
  assert.deepEqual(book.top(), expected.top(), `${label}: top`);
  assert.equal(book.crossed(), expected.crossed(), `${label}: crossed`);
}

Deno.test("the captured session gives the reference's events, book and state, diff by diff", () => {
  const symbols = ["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"];
  const map = binanceSymbolMap(symbols);
  const read = (name: string) =>
    Deno.readTextFileSync(new URL(name, FIXTURES)).split("\n").filter((line) => line);
  const snapshots = read("rest_depth_snapshots_2021-10-12.raw.jsonl");
  const frames = read("ws_combined_session_2021-10-12.raw.jsonl");
  // Snapshot first, as the bench does; then snapshot last, every diff buffered.
  for (const snapshotFirst of [true, false]) {
    const pairs = new Map<string, [BinanceBookSync, ReferenceSync]>();
    for (const symbol of symbols) {
      const venueSymbol = map.venue(symbol)!;
      const options = { maxBufferedDiffs: 10_000, resyncOnCrossed: true, snapshotLimit: 1000 };
      pairs.set(venueSymbol, [
        new BinanceBookSync(symbol, venueSymbol, options),
        new ReferenceSync(symbol, venueSymbol, options),
      ]);
    }
    const snapshot = (i: number) => {
      const [sync, reference] = pairs.get(map.venue(symbols[i]!)!)!;
      const result = sync.onSnapshot(parseBinanceDepthSnapshot(snapshots[i]!), RX);
      assert.deepEqual(result, reference.onSnapshot(parseBinanceDepthSnapshot(snapshots[i]!), RX));
      assert.equal(result.status, "ok");
      assertSame(sync, reference, `snapshot ${symbols[i]}`);
    };
    if (snapshotFirst) symbols.forEach((_, i) => snapshot(i));
    let deltas = 0;
    for (const [i, frame] of frames.entries()) {
      const { control } = parseBinanceFrame(frame, RX + i, map);
      if (control?.type !== "depth_diff") continue;
      const [sync, reference] = pairs.get(control.venueSymbol)!;
      const result = sync.onDiff(control);
      const { control: again } = parseBinanceFrame(frame, RX + i, map);
      assert.deepEqual(result, reference.onDiff(again as BinanceDepthDiff), `frame ${i}`);
      deltas += result.events.length;
      assertSame(sync, reference, `frame ${i}`);
    }
    if (!snapshotFirst) symbols.forEach((_, i) => snapshot(i));
    assert.ok(snapshotFirst ? deltas > 100 : deltas === 0, `${deltas} deltas`);
  }
});

Deno.test("random diffs and snapshots give the reference's results, errors, book and state", () => {
  const random = prng(20261207);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  /** Price `ticks` hundredths in various spellings, some equal only exactly, not as floats. */
  const price = (ticks: number) => {
    const text = (ticks / 100).toFixed(2);
    return pick([
      text,
      text,
      `${text}000`,
      `0${text}`,
      String(Number(text)),
      (ticks / 100).toFixed(8),
      `${text}00000000000000000001`,
    ]);
  };
  const size = () =>
    random() < 0.3 ? pick(["0", "0.00", "0.00000000"]) : (random() * 10).toFixed(pick([0, 2, 8]));
  const malformed = ["", ".5", "5.", "1e3", "-1", "abc", "1.2.3"];
  const levels = (lo: number, hi: number, held: Level[], bad: number): Level[] =>
    Array.from({ length: Math.floor(random() * 6) }, (): Level => {
      if (held.length > 0 && random() < 0.4) {
        const [at] = pick(held);
        return [random() < 0.5 ? at : `${at}0`, random() < 0.7 ? "0.000" : size()];
      }
      const ticks = lo + Math.floor(random() * (hi - lo));
      return [
        random() < bad ? pick(malformed) : price(ticks),
        random() < bad ? pick(malformed) : size(),
      ];
    });
  const seen = new Map<string, number>();
  const mid = 1000;
  for (let round = 0; round < 400; round++) {
    const options = {
      maxBufferedDiffs: pick([2, 5, 100]),
      resyncOnCrossed: random() < 0.9,
      snapshotLimit: pick([3, 5, 10, 50]),
    };
    const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", options);
    const reference = new ReferenceSync("BTC-USDT", "BTCUSDT", options);
    const bad = random() < 0.05 ? 0.02 : 0;
    let id = 100;
    for (let step = 0; step < 60; step++) {
      const label = `round ${round} step ${step}`;
      const roll = random();
      let got: unknown;
      let want: unknown;
      if (roll < 0.05 || (reference.state === "waiting_snapshot" && roll < 0.4)) {
        const limit = options.snapshotLimit;
        const ladder = (from: number, by: number, count: number) =>
          Array.from({ length: count }, (_, i): Level => [price(from + by * i), size()]);
        const snapshot: BinanceDepthSnapshot = {
          lastUpdateId: id - Math.floor(random() * 5) - (random() < 0.1 ? 3 : 0),
          bids: random() < 0.8
            ? ladder(mid - 1, -2, random() < 0.5 ? limit : Math.floor(random() * limit))
            : levels(mid - 40, mid, [], bad),
          asks: random() < 0.8
            ? ladder(mid + 1, 2, Math.floor(random() * (limit + 1)))
            : levels(mid, mid + 40, [], bad),
        };
        got = outcome(() => sync.onSnapshot(structuredClone(snapshot), RX));
        want = outcome(() => reference.onSnapshot(structuredClone(snapshot), RX));
      } else if (roll < 0.06) {
        sync.reset();
        reference.reset();
      } else {
        const first = random() < 0.97 ? id + 1 : id + Math.floor(random() * 3);
        id = first + Math.floor(random() * 3);
        const crossing = random() < 0.1 ? 10 : 0;
        const diff: BinanceDepthDiff = {
          type: "depth_diff",
          symbol: "BTC-USDT",
          venueSymbol: "BTCUSDT",
          firstUpdateId: first,
          finalUpdateId: id,
          bids: levels(mid - 60, mid + crossing, reference.book.levels("bid"), bad),
          asks: levels(mid - crossing, mid + 60, reference.book.levels("ask"), bad),
          eventTimeUs: RX + step,
          receivedUs: RX + step + 1,
        };
        got = outcome(() => sync.onDiff(structuredClone(diff)));
        want = outcome(() => reference.onDiff(structuredClone(diff)));
      }
      assert.deepEqual(got, want, label);
      assertSame(sync, reference, label);
      const kind = got === undefined
        ? "reset"
        : "error" in (got as object)
        ? "error"
        : `${(got as { ok: BinanceSyncResult }).ok.status}: ${
          (got as { ok: BinanceSyncResult }).ok.reason?.split(" ", 2).join(" ")
        }`;
      seen.set(kind, (seen.get(kind) ?? 0) + 1);
    }
  }
  // Every outcome was reached: deltas, buffering, each resync reason, refused decimals.
  for (
    const kind of [
      "ok: undefined",
      "waiting_snapshot: undefined",
      "ok: Already synced;",
      "resync: Snapshot lastUpdateId",
      "resync: More than",
      "resync: No level",
      "resync: Gap: diff",
      "resync: Book crossed",
      "error",
    ]
  ) {
    assert.ok((seen.get(kind) ?? 0) > 0, `${kind}: ${JSON.stringify([...seen])}`);
  }
  // "Diff U=<id> does not bridge the snapshot": the id varies.
  assert.ok([...seen.keys()].some((kind) => /^resync: Diff U=\d+$/.test(kind)));
});
