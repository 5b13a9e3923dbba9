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
import { OrderBook } from "../../market/order_book.ts";
import type { AsOfReceipt } from "../../market/validation.ts";
import { KRAKEN_CHECKSUM_LEVELS, krakenChecksum } from "./checksum.ts";
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
  readonly #book = new OrderBook();
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
    const checksum = krakenChecksum(
      book.levels("ask", KRAKEN_CHECKSUM_LEVELS),
      book.levels("bid", KRAKEN_CHECKSUM_LEVELS),
    );
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
    const size = this.#book.size();
    if ((side === "bid" ? size.bids : size.asks) <= this.depth) return levels;
    const all = this.#book.levels(side);
    const out = levels.slice();
    for (let i = this.depth; i < all.length; i++) out.push([all[i]![0], "0"]);
    return out;
  }

  #topEvent(tsExchange: number, receivedUs: number): TopEvent | null {
    const { bid, ask } = this.#book.top();
    if (!bid || !ask) {
      this.#top = null;
      return null;
    }
    const last = this.#top;
    if (
      last && last[0] === bid[0] && last[1] === bid[1] && last[2] === ask[0] && last[3] === ask[1]
    ) {
      return null;
    }
    this.#top = [bid[0], bid[1], ask[0], ask[1]];
    return {
      exchange: "kraken",
      symbol: this.symbol,
      venue_symbol: this.venueSymbol,
      ts_exchange: tsExchange,
      ts_local: receivedUs,
      kind: "top",
      bid_price: bid[0],
      bid_qty: bid[1],
      ask_price: ask[0],
      ask_qty: ask[1],
    };
  }
}

/**
 * `event` marked {@linkcode AsOfReceipt}: its `ts_exchange` is the book's last
 * change, and it holds as of when it was received.
 */
function asOfReceipt<T extends BookEvent | TopEvent>(event: T): T & AsOfReceipt {
  return Object.assign(event, { as_of_receipt: true as const });
}
