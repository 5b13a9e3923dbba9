/**
 * KrakenBookSync keeps its own book and updates Kraken's checksum level by
 * level; these tests hold it to a straightforward reference — `OrderBook`,
 * the checksum as the CRC32 of the built string, the sync's decisions as they
 * were written before — on the captured session and on random books, and the
 * checksum's steps to the string's CRC32.
 */

import assert from "node:assert/strict";
import {
  type BookEvent,
  type Level,
  MalformedFrameError,
  type TopEvent,
} from "../market/events.ts";
import { OrderBook } from "../market/order_book.ts";
import { KrakenBookSync, type KrakenBookSyncResult } from "../venues/kraken/book_sync.ts";
import {
  crc32,
  KRAKEN_CHECKSUM_LEVELS,
  KRAKEN_CHECKSUM_START,
  krakenChecksum,
  krakenChecksumAppend,
  krakenChecksumEnd,
  krakenChecksumInput,
  krakenChecksumStep,
  krakenLevelDigits,
  krakenLevelShare,
} from "../venues/kraken/checksum.ts";
import { type KrakenBookControl, krakenSymbol, parseKrakenFrame } from "../venues/kraken/parse.ts";
import { fixtureLines, prng } from "./_helpers.ts";

const RECEIVED_US = 1_786_000_000_000_000;

/** Kraken's checksum as its documentation states it: the CRC32 of the built string. */
function referenceChecksum(book: OrderBook): number {
  return crc32(
    krakenChecksumInput(
      book.levels("ask", KRAKEN_CHECKSUM_LEVELS),
      book.levels("bid", KRAKEN_CHECKSUM_LEVELS),
    ),
  );
}

/** The sync's decisions written plainly over `OrderBook`: what KrakenBookSync must match. */
class ReferenceSync {
  readonly book = new OrderBook();
  #state: "empty" | "live" | "stale" = "empty";
  #top: string[] | null = null;

  constructor(readonly depth: number, readonly emitTop: boolean) {}

  onBook(control: KrakenBookControl, receivedUs: number): KrakenBookSyncResult {
    const book = this.book;
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
      const dropped = (side: "bid" | "ask", levels: Level[]) => {
        const all = book.levels(side);
        if (all.length <= this.depth) return levels;
        return [...levels, ...all.slice(this.depth).map(([price]): Level => [price, "0"])];
      };
      bids = dropped("bid", bids);
      asks = dropped("ask", asks);
      book.truncate(this.depth);
    }
    const checksum = referenceChecksum(book);
    if (checksum !== control.checksum) {
      return this.#resync(
        `Checksum mismatch after ${control.action} at ${control.timestamp}: ` +
          `Kraken sent ${control.checksum}, the local book gives ${checksum}`,
      );
    }
    this.#state = "live";
    const snapshot = control.action === "snapshot";
    const mark = snapshot ? { as_of_receipt: true } : {};
    const events: (BookEvent | TopEvent)[] = [{
      exchange: "kraken",
      symbol: "MINA-GBP",
      venue_symbol: "MINA/GBP",
      ts_exchange: control.timestamp,
      ts_local: receivedUs,
      kind: "book",
      action: snapshot ? "snapshot" : "delta",
      bids: snapshot ? book.levels("bid") : bids,
      asks: snapshot ? book.levels("ask") : asks,
      sequence: null,
      ...mark,
    }];
    const { bid, ask } = book.top();
    if (!bid || !ask) this.#top = null;
    else if (this.emitTop && this.#top?.join() !== [...bid, ...ask].join()) {
      this.#top = [...bid, ...ask];
      events.push({
        exchange: "kraken",
        symbol: "MINA-GBP",
        venue_symbol: "MINA/GBP",
        ts_exchange: control.timestamp,
        ts_local: receivedUs,
        kind: "top",
        bid_price: bid[0],
        bid_qty: bid[1],
        ask_price: ask[0],
        ask_qty: ask[1],
        ...mark,
      });
    }
    return { status: "ok", events };
  }

  #resync(reason: string): KrakenBookSyncResult {
    this.#state = "stale";
    this.#top = null;
    return { status: "resync", reason, events: [] };
  }
}

function assertSame(sync: KrakenBookSync, reference: ReferenceSync, what: string): void {
  assert.deepEqual(sync.levels("bid"), reference.book.levels("bid"), what);
  assert.deepEqual(sync.levels("ask"), reference.book.levels("ask"), what);
  assert.deepEqual(sync.levels("bid", 3), reference.book.levels("bid", 3), what);
  assert.deepEqual(sync.top(), reference.book.top(), what);
}

Deno.test("the captured Kraken session syncs exactly as the reference does", () => {
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  const reference = new ReferenceSync(25, true);
  let ok = 0;
  for (const frame of fixtureLines("kraken", "v2_book_minagbp_d25_2026-08-16.raw.jsonl")) {
    if (frame.startsWith('{"method":"subscribe","params"')) continue;
    const { control } = parseKrakenFrame(frame, RECEIVED_US);
    if (control?.type !== "book") continue;
    const result = sync.onBook(control, RECEIVED_US);
    assert.deepEqual(result, reference.onBook(control, RECEIVED_US), frame);
    assertSame(sync, reference, frame);
    if (result.status === "ok") ok++;
  }
  assert.equal(ok, 30);
});

/** A random spelling of a decimal near `cents` hundredths: leading and trailing zeros vary. */
function spell(random: () => number, units: number, scale: number): string {
  const text = String(units).padStart(scale + 1, "0");
  let out = scale === 0 ? text : `${text.slice(0, -scale)}.${text.slice(-scale)}`;
  if (random() < 0.2) out = `0${out}`;
  if (random() < 0.2) out = out.includes(".") ? `${out}00` : `${out}.0`;
  return out;
}

const MALFORMED = ["", ".5", "5.", "1e3", "-1", "1.2.3", " 1", "0x10", "１"];

function randomLevel(random: () => number, zeroShare: number, malformedShare: number): Level {
  const pick = () => MALFORMED[Math.floor(random() * MALFORMED.length)]!;
  const price = random() < malformedShare
    ? pick()
    : spell(random, 100 + Math.floor(random() * 40), Math.floor(random() * 3));
  let size: string;
  if (random() < malformedShare) size = pick();
  else if (random() < zeroShare) size = random() < 0.5 ? "0" : "0.00000000";
  else size = spell(random, 1 + Math.floor(random() * 100_000), Math.floor(random() * 9));
  return [price, size];
}

Deno.test("random Kraken books sync exactly as the reference does", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const random = prng(seed);
    const depth = 1 + Math.floor(random() * 30);
    const emitTop = random() < 0.8;
    const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", depth, { emitTop });
    const reference = new ReferenceSync(depth, emitTop);
    const malformedShare = seed % 5 === 0 ? 0.02 : 0;
    for (let step = 0; step < 120; step++) {
      const snapshot = step === 0 || random() < 0.05;
      const count = (n: number) => Math.floor(random() * n);
      const levels = (n: number) =>
        Array.from({ length: count(n) }, () => randomLevel(random, 0.3, malformedShare));
      const bids = levels(snapshot ? 40 : 5);
      const asks = levels(snapshot ? 40 : 5);
      // The right checksum (from a copy of the reference's book), else a wrong one.
      const copy = new OrderBook();
      copy.replace(reference.book.levels("bid"), reference.book.levels("ask"));
      let checksum = 12345;
      try {
        if (snapshot) copy.replace(bids, asks);
        else copy.applyAll(bids, asks);
        copy.truncate(depth);
        checksum = random() < 0.97 ? referenceChecksum(copy) : (referenceChecksum(copy) ^ 1) >>> 0;
      } catch {
        // A malformed level: the sync resyncs whatever the checksum.
      }
      const control: KrakenBookControl = {
        type: "book",
        action: snapshot ? "snapshot" : "update",
        symbol: "MINA-GBP",
        venue_symbol: "MINA/GBP",
        bids,
        asks,
        checksum,
        timestamp: RECEIVED_US - 1000 + step,
      };
      const what = `seed ${seed} step ${step}`;
      const result = sync.onBook(control, RECEIVED_US + step);
      assert.deepEqual(result, reference.onBook(control, RECEIVED_US + step), what);
      assertSame(sync, reference, what);
    }
  }
});

Deno.test("krakenChecksumStep over the top levels is the CRC32 of Kraken's string", () => {
  const random = prng(7);
  for (let round = 0; round < 2000; round++) {
    const side = () =>
      Array.from({ length: Math.floor(random() * 14) }, () => randomLevel(random, 0.1, 0));
    const asks = side();
    const bids = side();
    let crc = KRAKEN_CHECKSUM_START;
    for (const [price, qty] of asks.slice(0, KRAKEN_CHECKSUM_LEVELS)) {
      crc = krakenChecksumStep(crc, price, qty);
    }
    for (const [price, qty] of bids.slice(0, KRAKEN_CHECKSUM_LEVELS)) {
      crc = krakenChecksumStep(crc, price, qty);
    }
    const expected = crc32(krakenChecksumInput(asks, bids));
    assert.equal(krakenChecksumEnd(crc), expected);
    assert.equal(krakenChecksum(asks, bids), expected);
  }
});

Deno.test("krakenChecksumAppend of a level's share moves the register as feeding its digits does", () => {
  const random = prng(11);
  const digits = (n: number) => Array.from({ length: n }, () => Math.floor(random() * 10)).join("");
  for (let round = 0; round < 3000; round++) {
    // Short and long levels: the long ones (over 64 digits) take the digit-at-a-time road.
    const long = round % 10 === 0 ? 60 : 0;
    const price = random() < 0.1
      ? "0"
      : `${"0".repeat(Math.floor(random() * 3))}${digits(1 + Math.floor(random() * (4 + long)))}` +
        (random() < 0.7 ? `.${digits(1 + Math.floor(random() * (8 + long)))}` : "");
    const qty = random() < 0.1 ? "0.000" : `${digits(1 + Math.floor(random() * 6))}.${digits(8)}`;
    const crc = Math.floor(random() * 2 ** 32) | 0;
    assert.equal(
      krakenChecksumAppend(crc, krakenLevelShare(price, qty), krakenLevelDigits(price, qty)),
      krakenChecksumStep(crc, price, qty),
      `${price} ${qty}`,
    );
  }
});

Deno.test("krakenSymbol answers alike from its last symbol, its cache and afresh", () => {
  assert.throws(() => krakenSymbol(""), MalformedFrameError);
  for (let round = 0; round < 3; round++) {
    for (const [venue, canonical] of [["XBT/USD", "BTC-USD"], ["MINA/GBP", "MINA-GBP"]]) {
      assert.equal(krakenSymbol(venue!), canonical);
      assert.equal(krakenSymbol(venue!), canonical);
      assert.throws(() => krakenSymbol(""), MalformedFrameError);
      assert.throws(() => krakenSymbol(venue!.replace("/", "")), MalformedFrameError);
    }
  }
});
