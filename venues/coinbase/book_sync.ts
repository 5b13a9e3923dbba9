/**
 * Keeps Coinbase Advanced Trade books in sync.
 *
 * - {@linkcode SequenceTracker}: one per connection. Coinbase numbers every
 *   frame of a connection, all channels together (`sequence_num` 0, 1, 2, …);
 *   a number other than the previous one plus one means frames were lost, and
 *   since an `l2_data` update may be among them, every book of the connection
 *   is suspect: the feed resets its books and resubscribes to `level2` for
 *   fresh snapshots.
 * - {@linkcode CoinbaseBookSync}: one per product. Snapshots replace the
 *   book, updates change it, and each becomes a {@linkcode BookEvent} whose
 *   `sequence` is the frame's `sequence_num`. A book that is crossed (best bid
 *   at or above best ask) after a frame is wrong: nothing is published and the
 *   feed resubscribes.
 *
 * @example
 * ```ts
 * import { CoinbaseBookSync, SequenceTracker } from "./book_sync.ts";
 * import { parseCoinbaseFrame } from "./parse.ts";
 *
 * const sequence = new SequenceTracker();
 * const book = new CoinbaseBookSync("BTC-USD");
 * function onFrame(frame: string, receivedUs: number) {
 *   const parsed = parseCoinbaseFrame(frame, receivedUs);
 *   if (parsed.sequence !== null && sequence.observe(parsed.sequence).status === "gap") {
 *     book.reset(); // and resubscribe to level2
 *   }
 *   if (parsed.control?.type === "book" && parsed.control.symbol === book.symbol) {
 *     const result = book.onBook(parsed.control, receivedUs);
 *     if (result.status === "resync") {
 *       // resubscribe to level2 for a fresh snapshot
 *     }
 *   }
 * }
 * ```
 *
 * @module
 */

import type { BookEvent, Level } from "../../market/events.ts";
import { OrderBook } from "../../market/order_book.ts";
import type { CoinbaseBookControl } from "./parse.ts";

/** The `sequence_num` of the first frame on a Coinbase connection. */
export const DEFAULT_FIRST_SEQUENCE = 0;

/** Options for {@linkcode SequenceTracker}. */
export interface SequenceTrackerOptions {
  /**
   * The sequence number expected first on a connection; null accepts
   * whatever comes first.
   * @default {DEFAULT_FIRST_SEQUENCE}
   */
  first?: number | null;
}

/** What {@linkcode SequenceTracker.observe} found. */
export type SequenceCheck =
  | { status: "ok" }
  | {
    /** The number is not the one expected: frames were lost (or repeated). */
    status: "gap";
    /** The number that should have come. */
    expected: number;
    /** The number that came. */
    got: number;
  };

const OK: SequenceCheck = Object.freeze({ status: "ok" as const });

/**
 * Checks that a connection's `sequence_num`s follow each other without a gap.
 *
 * @example
 * ```ts
 * import { SequenceTracker } from "./book_sync.ts";
 *
 * const tracker = new SequenceTracker();
 * tracker.observe(0); // { status: "ok" }
 * tracker.observe(2); // { status: "gap", expected: 1, got: 2 }
 * tracker.observe(3); // { status: "ok" }: counting carries on from the new number
 * ```
 */
export class SequenceTracker {
  readonly #first: number | null;
  #next: number | null;

  /** Makes a tracker for a new connection. */
  constructor(options: SequenceTrackerOptions = {}) {
    const { first = DEFAULT_FIRST_SEQUENCE } = options;
    if (first !== null && (!Number.isSafeInteger(first) || first < 0)) {
      throw new RangeError(`First sequence number must be a non-negative integer, got ${first}`);
    }
    this.#first = first;
    this.#next = first;
  }

  /** The sequence number expected next, or null when any is. */
  get expected(): number | null {
    return this.#next;
  }

  /**
   * Records the `sequence_num` of a frame and says whether it was the one
   * expected. After a gap, counting carries on from `sequence`.
   */
  observe(sequence: number): SequenceCheck {
    const expected = this.#next;
    this.#next = sequence + 1;
    if (expected === null || sequence === expected) return OK;
    return { status: "gap", expected, got: sequence };
  }

  /** Starts over, for a new connection. */
  reset(): void {
    this.#next = this.#first;
  }
}

/** What {@linkcode CoinbaseBookSync.onBook} decided. */
export type CoinbaseBookSyncResult =
  | {
    /** The frame was applied; publish `events`. */
    status: "ok";
    /** One book snapshot or delta. */
    events: BookEvent[];
  }
  | {
    /** The book is wrong (crossed, or an update without a snapshot): resubscribe. */
    status: "resync";
    /** Why, in a sentence. */
    reason: string;
    /** Always empty: nothing is published from a wrong book. */
    events: BookEvent[];
  }
  | {
    /** An update dropped while waiting for the snapshot a resync asked for. */
    status: "waiting";
    /** Always empty. */
    events: BookEvent[];
  };

/**
 * One product's Coinbase `level2` book: applies book controls and returns the
 * events to publish.
 */
export class CoinbaseBookSync {
  /** Canonical symbol, the same as Coinbase's product id (`BTC-USD`). */
  readonly symbol: string;
  readonly #book = new OrderBook();
  /** `empty`: no snapshot yet; `live`: in sync; `stale`: a resync was asked for. */
  #state: "empty" | "live" | "stale" = "empty";

  /** Makes the sync of the product `productId`. */
  constructor(productId: string) {
    this.symbol = productId;
  }

  /** Whether the book is in sync (a snapshot, and every update since, applied). */
  get live(): boolean {
    return this.#state === "live";
  }

  /**
   * Applies one book control received at `receivedUs` and says what to
   * publish. Throws a `TypeError` when the control is for another product.
   */
  onBook(control: CoinbaseBookControl, receivedUs: number): CoinbaseBookSyncResult {
    if (control.venue_symbol !== this.symbol) {
      throw new TypeError(`Book of ${control.venue_symbol} given to the sync of ${this.symbol}`);
    }
    const book = this.#book;
    const snapshot = control.action === "snapshot";
    if (snapshot) {
      try {
        book.replace(control.bids, control.asks);
      } catch (error) {
        return this.#resync(`Snapshot has a malformed level: ${(error as Error).message}`);
      }
    } else {
      if (this.#state === "stale") return { status: "waiting", events: [] };
      if (this.#state === "empty") return this.#resync("Book update arrived before a snapshot");
      try {
        book.applyAll(control.bids, control.asks);
      } catch (error) {
        return this.#resync(`Update has a malformed level: ${(error as Error).message}`);
      }
    }
    if (book.crossed()) {
      const { bid, ask } = book.top();
      return this.#resync(
        `Book crossed after the ${control.action} of sequence ${control.sequence}: ` +
          `best bid ${bid?.[0]} is at or above best ask ${ask?.[0]}`,
      );
    }
    this.#state = "live";
    return {
      status: "ok",
      events: [{
        exchange: "coinbase",
        symbol: this.symbol,
        venue_symbol: this.symbol,
        ts_exchange: control.timestamp,
        ts_local: receivedUs,
        kind: "book",
        action: snapshot ? "snapshot" : "delta",
        bids: snapshot ? book.levels("bid") : control.bids,
        asks: snapshot ? book.levels("ask") : control.asks,
        sequence: control.sequence,
      }],
    };
  }

  /**
   * Marks the book stale: updates are dropped until the next snapshot. Call
   * it on a sequence gap, a reconnect or a resubscribe.
   */
  reset(): void {
    if (this.#state !== "empty") this.#state = "stale";
  }

  /** The best `limit` levels of a side, best first, as sent. */
  levels(side: "bid" | "ask", limit = Infinity): Level[] {
    return this.#book.levels(side, limit);
  }

  /** Best bid and ask levels, or null for an empty side. */
  top(): { bid: Level | null; ask: Level | null } {
    return this.#book.top();
  }

  #resync(reason: string): CoinbaseBookSyncResult {
    this.#state = "stale";
    return { status: "resync", reason, events: [] };
  }
}
