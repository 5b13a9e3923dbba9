/**
 * The Coinbase Advanced Trade market-data session: what the generic feed
 * runtime (`actors/feed.ts`) runs against `wss://advanced-trade-ws.coinbase.com`.
 *
 * - On open it sends one subscribe request per channel, in the shape Coinbase
 *   documents and the captured session shows
 *   (`{"type":"subscribe","product_ids":[…],"channel":"…"}`): `heartbeats`
 *   always (Coinbase closes a connection that has no traffic, and the
 *   heartbeats keep the runtime's staleness watchdog quiet on slow products),
 *   then `market_trades` for `trades`, `level2` for `book`, `ticker` for `top`.
 * - Every frame's `sequence_num` goes through one {@linkcode SequenceTracker}
 *   (one counter per connection, all channels together). A gap means frames
 *   were lost and any of them may have been a `level2` update, so every book
 *   is marked stale and the session asks for
 *   `io.reconnect("Sequence gap …", { resync: true })`: a new connection
 *   starts again at `sequence_num` 0 with fresh `level2` snapshots.
 *   Unsubscribing and resubscribing `level2` on the same connection would
 *   also bring snapshots, but it cannot be shown here (no access to Coinbase)
 *   that a resubscribe always sends one, and the frames lost in the gap are
 *   gone either way; a reconnect is the path that is known to resynchronise.
 * - Books: one {@linkcode CoinbaseBookSync} per product. A book that a frame
 *   leaves crossed, or an update before any snapshot, is a resync the same
 *   way. At most one reconnect is asked for per connection. Coinbase's
 *   snapshots hold the whole book (5 MB for BTC-USD in the capture, above
 *   NATS's 1 MB message limit), so a snapshot with more than
 *   `bookEventMaxLevels` levels on a side is published in parts: `snapshot`
 *   events marked `part` 0…`parts` − 1 ({@linkcode SnapshotPart}), the best
 *   levels first, all with the snapshot's sequence and times. The validator
 *   checks them as one snapshot, and the stored rows of one snapshot are
 *   told by their common `ts_exchange`, `ts_local` and `sequence`.
 * - A malformed frame (the runtime dead-letters it) would look like a gap at
 *   the next frame, since it used up a sequence number. When its
 *   `sequence_num` can still be read from the text, the session counts it, so
 *   one bad trade or ticker frame does not cost a reconnect; a malformed
 *   `l2_data` frame does (its book can no longer be trusted).
 * - `{"type":"error"}` messages go to `io.error` (health's `last_error`).
 * - `onClose` resets the sequence tracker and marks every book stale: updates
 *   are dropped until the next connection's snapshot.
 *
 * @example
 * ```ts
 * import { coinbaseSession } from "./session.ts";
 *
 * const session = coinbaseSession({
 *   ws_url: "wss://advanced-trade-ws.coinbase.com",
 *   symbols: ["BTC-USD", "ETH-USD"],
 *   channels: ["trades", "book", "top"],
 * });
 * session.url(); // "wss://advanced-trade-ws.coinbase.com"
 * ```
 *
 * @module
 */

import type { Config } from "../../config/mod.ts";
import type { BookEvent, MarketEvent } from "../../market/events.ts";
import type { SnapshotPart } from "../../market/validation.ts";
import type { SessionIO, VenueSession } from "../session.ts";
import { CoinbaseBookSync, type SequenceCheck, SequenceTracker } from "./book_sync.ts";
import {
  type CoinbaseBookControl,
  type CoinbaseChannel,
  type CoinbaseParsedFrame,
  parseCoinbaseFrame,
  subscribeMessage,
} from "./parse.ts";
import { assertPositiveInteger } from "../../lib/assert.ts";

/** A market-data channel as configured: `trades`, `book` or `top`. */
export type CoinbaseFeedChannel = Config["exchanges"]["coinbase"]["channels"][number];

/** The keys of the `exchanges.coinbase` config section a session uses (read-only lists welcome). */
export interface CoinbaseSessionConfig {
  /** The Advanced Trade market-data WebSocket URL. */
  ws_url: string;
  /** Products to follow; Coinbase's product ids are already canonical (`BTC-USD`). */
  symbols: readonly string[];
  /** What to follow: `trades` (`market_trades`), `book` (`level2`), `top` (`ticker`). */
  channels: readonly CoinbaseFeedChannel[];
}

/**
 * Most levels per side in one published book event. A Coinbase `level2`
 * snapshot holds the whole book (the captured BTC-USD one: a 5 MB frame), far
 * above NATS's 1 MB message limit once normalized; larger snapshots are
 * published in parts ({@linkcode SnapshotPart}): `snapshot` events with
 * `part` 0…`parts` − 1, each with the next `bookEventMaxLevels` levels a
 * side, best first, all with the snapshot's sequence and times. Part 0
 * replaces the book and each later part adds its levels, so a consumer
 * applying them in order has the whole book, and one that reads only part 0
 * has the top of it.
 */
export const DEFAULT_COINBASE_BOOK_EVENT_MAX_LEVELS = 2_000;

/** Tuning of {@linkcode coinbaseSession}; the venue settings come from the config section. */
export interface CoinbaseSessionOptions {
  /**
   * Most levels per side in one published book event.
   * @default {DEFAULT_COINBASE_BOOK_EVENT_MAX_LEVELS}
   */
  bookEventMaxLevels?: number;
}

/** The Coinbase channel subscribed for each configured channel. */
export const COINBASE_CHANNEL_NAMES: Readonly<Record<CoinbaseFeedChannel, CoinbaseChannel>> = {
  trades: "market_trades",
  book: "level2",
  top: "ticker",
};

/** State of one product's book, as health shows it. */
export type CoinbaseBookState = "live" | "waiting";

/** The figures of {@linkcode CoinbaseSession.status}. */
export type CoinbaseSessionStatus = {
  /** Each followed product's book: `live` (in sync) or `waiting` (for a snapshot). */
  books: Record<string, CoinbaseBookState>;
  /** The last `sequence_num` seen on this connection, or null before the first frame. */
  last_sequence: number | null;
  /** Sequence gaps seen since the session started. */
  gaps: number;
  /** Books found crossed or updated before a snapshot since the session started. */
  book_resyncs: number;
  /** The current subscriptions, as Coinbase last acknowledged them. */
  subscriptions: Record<string, string[]>;
  /** The last `heartbeat_counter`, or null before the first heartbeat on this connection. */
  heartbeat_counter: number | null;
  /** Error messages Coinbase sent since the session started. */
  errors: number;
  /** The last of them, or null. */
  last_error: string | null;
};

/** Finds a frame's `sequence_num` in its text, for frames the parser refused. */
const SEQUENCE_NUM = /"sequence_num"\s*:\s*(\d{1,15})(?=\s*[,}])/;
/** Whether a frame's text says it belongs to the `l2_data` channel. */
const L2_DATA_CHANNEL = /"channel"\s*:\s*"l2_data"/;

/**
 * The Coinbase session. Use {@linkcode coinbaseSession} to make one; the
 * class is exported for its typed {@linkcode CoinbaseSession.status}.
 */
export class CoinbaseSession implements VenueSession {
  /** The venue. */
  readonly exchange = "coinbase" as const;
  readonly #url: string;
  readonly #symbols: readonly string[];
  readonly #channels: readonly CoinbaseFeedChannel[];
  readonly #sequence = new SequenceTracker();
  readonly #books = new Map<string, CoinbaseBookSync>();
  #lastSequence: number | null = null;
  #gaps = 0;
  #bookResyncs = 0;
  #subscriptions: Record<string, string[]> = {};
  #heartbeat: number | null = null;
  #errors = 0;
  #lastError: string | null = null;
  /** Whether this connection already asked for a reconnect. */
  #reconnecting = false;
  readonly #maxLevels: number;

  /**
   * Makes a session for `config`; throws a `TypeError` for no symbols or an
   * unknown channel, a `RangeError` for a bad option.
   */
  constructor(config: CoinbaseSessionConfig, options: CoinbaseSessionOptions = {}) {
    const { ws_url, symbols, channels } = config;
    const { bookEventMaxLevels = DEFAULT_COINBASE_BOOK_EVENT_MAX_LEVELS } = options;
    assertPositiveInteger(bookEventMaxLevels, "bookEventMaxLevels");
    this.#maxLevels = bookEventMaxLevels;
    if (symbols.length === 0) throw new TypeError("Coinbase session needs at least one symbol");
    for (const channel of channels) {
      if (!Object.hasOwn(COINBASE_CHANNEL_NAMES, channel)) {
        throw new TypeError(`Unknown Coinbase channel ${JSON.stringify(channel)}`);
      }
    }
    this.#url = ws_url;
    this.#symbols = [...new Set(symbols)];
    this.#channels = [...new Set(channels)];
    if (this.#channels.includes("book")) {
      for (const symbol of this.#symbols) this.#books.set(symbol, new CoinbaseBookSync(symbol));
    }
  }

  /** The WebSocket URL, as configured. */
  url(): string {
    return this.#url;
  }

  /** Subscribes: `heartbeats` first, then one request per configured channel. */
  onOpen(io: SessionIO): void {
    this.#resetConnection();
    io.send(subscribeMessage("heartbeats", this.#symbols));
    for (const channel of this.#channels) {
      io.send(subscribeMessage(COINBASE_CHANNEL_NAMES[channel], this.#symbols));
    }
  }

  /**
   * Parses a frame, checks its sequence number and applies book frames.
   * Throws `MalformedFrameError` for a frame that is not Coinbase's protocol.
   */
  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[] {
    let parsed: CoinbaseParsedFrame;
    try {
      parsed = parseCoinbaseFrame(frame, receivedUs);
    } catch (error) {
      this.#afterMalformed(frame, io);
      throw error;
    }
    if (parsed.sequence !== null) this.#observe(parsed.sequence, io);
    const control = parsed.control;
    if (control === null) return parsed.events;
    switch (control.type) {
      case "book":
        return this.#onBook(control, receivedUs, io);
      case "subscriptions":
        this.#subscriptions = control.subscriptions;
        break;
      case "heartbeat":
        this.#heartbeat = control.counter;
        break;
      case "error":
        this.#errors++;
        this.#lastError = control.message;
        io.error(`Coinbase error: ${control.message}`);
        break;
    }
    return parsed.events;
  }

  /** Resets the sequence tracker and marks every book stale. */
  onClose(): void {
    this.#resetConnection();
  }

  /** Books live or waiting, last sequence number, gaps, subscriptions, errors. */
  status(): CoinbaseSessionStatus {
    const books: Record<string, CoinbaseBookState> = {};
    for (const [symbol, sync] of this.#books) books[symbol] = sync.live ? "live" : "waiting";
    return {
      books,
      last_sequence: this.#lastSequence,
      gaps: this.#gaps,
      book_resyncs: this.#bookResyncs,
      subscriptions: structuredClone(this.#subscriptions),
      heartbeat_counter: this.#heartbeat,
      errors: this.#errors,
      last_error: this.#lastError,
    };
  }

  #resetConnection(): void {
    this.#sequence.reset();
    this.#resetBooks();
    this.#lastSequence = null;
    this.#heartbeat = null;
    this.#subscriptions = {};
    this.#reconnecting = false;
  }

  #observe(sequence: number, io: SessionIO): void {
    this.#lastSequence = sequence;
    const check: SequenceCheck = this.#sequence.observe(sequence);
    if (check.status === "ok") return;
    this.#gaps++;
    this.#resetBooks();
    this.#resync(`Sequence gap: expected ${check.expected}, got ${check.got}`, io);
  }

  #onBook(control: CoinbaseBookControl, receivedUs: number, io: SessionIO): MarketEvent[] {
    let sync = this.#books.get(control.venue_symbol);
    if (sync === undefined) {
      sync = new CoinbaseBookSync(control.venue_symbol);
      this.#books.set(control.venue_symbol, sync);
    }
    const result = sync.onBook(control, receivedUs);
    if (result.status === "resync") {
      this.#bookResyncs++;
      this.#resync(`Book ${control.symbol} out of sync: ${result.reason}`, io);
    }
    const [event] = result.events;
    if (
      event === undefined || event.action !== "snapshot" ||
      (event.bids.length <= this.#maxLevels && event.asks.length <= this.#maxLevels)
    ) {
      return result.events;
    }
    return splitSnapshot(event, this.#maxLevels);
  }

  /** Accounts for the sequence number a refused frame used up, when it can be read. */
  #afterMalformed(frame: string, io: SessionIO): void {
    if (typeof frame !== "string") return;
    const match = SEQUENCE_NUM.exec(frame);
    if (match === null) return;
    this.#observe(Number(match[1]), io);
    if (L2_DATA_CHANNEL.test(frame)) {
      this.#resetBooks();
      this.#resync("Malformed level2 frame", io);
    }
  }

  /** Marks every book stale: updates are dropped until its next snapshot. */
  #resetBooks(): void {
    for (const sync of this.#books.values()) sync.reset();
  }

  #resync(reason: string, io: SessionIO): void {
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    io.reconnect(reason, { resync: true });
  }
}

/**
 * A snapshot too large for one message as {@linkcode SnapshotPart}s: `snapshot`
 * events of `maxLevels` levels per side each, best first.
 */
function splitSnapshot(snapshot: BookEvent, maxLevels: number): (BookEvent & SnapshotPart)[] {
  const { bids, asks } = snapshot;
  const parts = Math.ceil(Math.max(bids.length, asks.length) / maxLevels);
  const out: (BookEvent & SnapshotPart)[] = [];
  for (let part = 0; part < parts; part++) {
    const at = part * maxLevels;
    out.push({
      ...snapshot,
      bids: bids.slice(at, at + maxLevels),
      asks: asks.slice(at, at + maxLevels),
      part,
      parts,
    });
  }
  return out;
}

/**
 * Makes the Coinbase Advanced Trade session for the `exchanges.coinbase`
 * config section (`ws_url`, `symbols`, `channels`).
 *
 * @example
 * ```ts
 * import { coinbaseSession } from "./session.ts";
 *
 * const session = coinbaseSession({
 *   ws_url: "wss://advanced-trade-ws.coinbase.com",
 *   symbols: ["BTC-USD"],
 *   channels: ["book"],
 * });
 * session.status().books; // { "BTC-USD": "waiting" }
 * ```
 */
export function coinbaseSession(
  config: CoinbaseSessionConfig,
  options: CoinbaseSessionOptions = {},
): CoinbaseSession {
  return new CoinbaseSession(config, options);
}
