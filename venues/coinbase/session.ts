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
 * - Subscriptions are checked. Coinbase answers each request with a
 *   `subscriptions` frame listing everything the connection is subscribed to,
 *   or with `{"type":"error","message":"Failure to subscribe"}`, which names
 *   no channel (a request over its limit of 8 unauthenticated messages a
 *   second per IP is refused so). Once every request sent has its answer —
 *   or the oldest went `resyncTimeoutMs` (10 s) without one — the next tick
 *   compares the last `subscriptions` frame with what is configured, and each
 *   channel and product missing is asked for again from `onTick` after
 *   `resubscribeInitialMs` (1 s), the delay doubling with each refusal up to
 *   `resubscribeMaxMs` (60 s), spread by ±20 % of jitter; those due on the same
 *   tick go in one request per channel, and `onTick` sends no more than
 *   `maxMessagesPerSecond` (8) requests in any second, counting those of
 *   `onOpen`. One acknowledged meanwhile is not asked again. A new connection
 *   starts the delays over. The heartbeats keep the connection up whether or
 *   not a book ever comes, so nothing else would notice.
 * - Every book subscribed (by `onOpen`, or asked again) must get its first
 *   snapshot within `resyncTimeoutMs`. A book that misses it is asked for
 *   again the same way; one that misses it again asks for a reconnect with
 *   resync. The status says why each book waits (`waiting`) and until when
 *   (`snapshot_due_at`).
 * - `{"type":"error"}` messages are counted and go to `io.error` (health's
 *   `last_error`); what is asked for again is reported the same way
 *   (`Coinbase subscriptions missing (Failure to subscribe); asking again for
 *   level2 BTC-USD in 1000 ms`).
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
import { backoffDelay } from "../../lib/backoff.ts";
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

/**
 * How long a book subscribed may wait for its first snapshot, and a subscribe
 * request for its answer, before it is asked for again, in milliseconds (the
 * same deadline as Kraken's `resyncTimeoutMs`).
 */
export const DEFAULT_COINBASE_RESYNC_TIMEOUT_MS = 10_000;
/** First delay before a refused or missing subscription is asked for again, in milliseconds. */
export const DEFAULT_COINBASE_RESUBSCRIBE_INITIAL_MS = 1_000;
/** Longest such delay, in milliseconds. */
export const DEFAULT_COINBASE_RESUBSCRIBE_MAX_MS = 60_000;
/** Fraction of such a delay by which it is randomly spread both ways. */
export const DEFAULT_COINBASE_RESUBSCRIBE_JITTER = 0.2;
/**
 * Most requests sent in any second: Coinbase's limit of unauthenticated
 * WebSocket messages, 8 a second per IP address.
 */
export const DEFAULT_COINBASE_MAX_MESSAGES_PER_S = 8;

/** Tuning of {@linkcode coinbaseSession}; the venue settings come from the config section. */
export interface CoinbaseSessionOptions {
  /**
   * Most levels per side in one published book event.
   * @default {DEFAULT_COINBASE_BOOK_EVENT_MAX_LEVELS}
   */
  bookEventMaxLevels?: number;
  /**
   * Milliseconds a book subscribed waits for its first snapshot, and a
   * subscribe request for its answer, before `onTick` asks again (a second
   * miss of a book asks for a reconnect). @default {DEFAULT_COINBASE_RESYNC_TIMEOUT_MS}
   */
  resyncTimeoutMs?: number;
  /**
   * Milliseconds before a refused or missing subscription is asked for again
   * (doubling each time). @default {DEFAULT_COINBASE_RESUBSCRIBE_INITIAL_MS}
   */
  resubscribeInitialMs?: number;
  /** Longest of those delays, in ms. @default {DEFAULT_COINBASE_RESUBSCRIBE_MAX_MS} */
  resubscribeMaxMs?: number;
  /**
   * Most requests sent in any second (a request due beyond it waits for the
   * next tick). @default {DEFAULT_COINBASE_MAX_MESSAGES_PER_S}
   */
  maxMessagesPerSecond?: number;
  /**
   * Source of uniform numbers in [0, 1) for the jitter of those delays; inject
   * `() => 0.5` in tests for none. @default {Math.random}
   */
  random?: () => number;
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
  /**
   * Why each book not live waits: subscribed and no snapshot yet, refused or
   * missing and to be asked again, connection closed.
   */
  waiting: Record<string, string>;
  /** When a book waiting on a deadline is asked for again if no snapshot comes, ms since the epoch. */
  snapshot_due_at: Record<string, number>;
  /** Subscriptions waiting to be asked for again (`"level2 BTC-USD"`) and when, ms since the epoch. */
  resubscribe_at: Record<string, number>;
  /** Subscribe requests refused by an error, or left without an answer. */
  request_failures: number;
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

/** A subscribe request of this connection that Coinbase has not answered yet. */
interface Request {
  readonly channel: CoinbaseChannel;
  /** When it was sent (ms). */
  readonly sentAtMs: number;
}

/** Where one book stands on its way to a first snapshot. */
interface BookWait {
  /** When its `level2` subscription was sent and it still waits for the snapshot (ms), else null. */
  sinceMs: number | null;
  /** Deadlines it missed on this connection. */
  misses: number;
  /** Why it waits, or null when live. */
  reason: string | null;
}

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
  readonly #resyncTimeoutMs: number;
  readonly #resubscribeInitialMs: number;
  readonly #resubscribeMaxMs: number;
  readonly #maxMessagesPerSecond: number;
  readonly #random: () => number;
  /** The subscribe requests of this connection not answered yet, oldest first. */
  #requests: Request[] = [];
  /** When this connection's last requests were sent (ms), for the message rate. */
  #sentAtMs: number[] = [];
  /** Subscriptions to ask for again and when (ms), by `"<channel> <product>"`. */
  readonly #retries = new Map<string, number>();
  /** Consecutive refusals of each subscription, by `"<channel> <product>"`. */
  readonly #refusals = new Map<string, number>();
  /** Each followed book's wait for its first snapshot. */
  readonly #waits = new Map<string, BookWait>();
  #requestFailures = 0;
  /**
   * Set once every request sent has its answer (or was given up): why what
   * the last `subscriptions` frame lacks is missing — the last refusal, or
   * none — until the next tick compares them. Null when nothing is to check.
   */
  #unchecked: string | null = null;
  /** The last refusal of a request since the last check, or null. */
  #refusal: string | null = null;

  /**
   * Makes a session for `config`; throws a `TypeError` for no symbols or an
   * unknown channel, a `RangeError` for a bad option.
   */
  constructor(config: CoinbaseSessionConfig, options: CoinbaseSessionOptions = {}) {
    const { ws_url, symbols, channels } = config;
    const {
      bookEventMaxLevels = DEFAULT_COINBASE_BOOK_EVENT_MAX_LEVELS,
      resyncTimeoutMs = DEFAULT_COINBASE_RESYNC_TIMEOUT_MS,
      resubscribeInitialMs = DEFAULT_COINBASE_RESUBSCRIBE_INITIAL_MS,
      resubscribeMaxMs = Math.max(DEFAULT_COINBASE_RESUBSCRIBE_MAX_MS, resubscribeInitialMs),
      maxMessagesPerSecond = DEFAULT_COINBASE_MAX_MESSAGES_PER_S,
      random = Math.random,
    } = options;
    assertPositiveInteger(bookEventMaxLevels, "bookEventMaxLevels");
    assertPositiveInteger(maxMessagesPerSecond, "maxMessagesPerSecond");
    if (!(resyncTimeoutMs > 0)) {
      throw new RangeError(`resyncTimeoutMs must be positive, got ${resyncTimeoutMs}`);
    }
    if (!(resubscribeInitialMs > 0) || !(resubscribeMaxMs >= resubscribeInitialMs)) {
      throw new RangeError(
        `Resubscribe delays must satisfy 0 < initial <= max, got ${resubscribeInitialMs} and ${resubscribeMaxMs}`,
      );
    }
    this.#maxLevels = bookEventMaxLevels;
    this.#resyncTimeoutMs = resyncTimeoutMs;
    this.#resubscribeInitialMs = resubscribeInitialMs;
    this.#resubscribeMaxMs = resubscribeMaxMs;
    this.#maxMessagesPerSecond = maxMessagesPerSecond;
    this.#random = random;
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
      for (const symbol of this.#symbols) {
        this.#books.set(symbol, new CoinbaseBookSync(symbol));
        this.#waits.set(symbol, { sinceMs: null, misses: 0, reason: "not subscribed yet" });
      }
    }
  }

  /** The WebSocket URL, as configured. */
  url(): string {
    return this.#url;
  }

  /**
   * Subscribes: `heartbeats` first, then one request per configured channel,
   * each book with its snapshot deadline; the delays of refused subscriptions
   * start over.
   */
  onOpen(io: SessionIO): void {
    this.#resetConnection();
    this.#retries.clear();
    this.#refusals.clear();
    const nowMs = io.nowUs() / 1000;
    for (const channel of this.#wanted()) this.#subscribe(io, channel, this.#symbols, nowMs);
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
        this.#onAnswer(null, io);
        break;
      case "heartbeat":
        this.#heartbeat = control.counter;
        break;
      case "error":
        this.#errors++;
        this.#lastError = control.message;
        io.error(`Coinbase error: ${control.message}`);
        this.#onAnswer(control.message, io);
        break;
    }
    return parsed.events;
  }

  /**
   * Asks again, at most `maxMessagesPerSecond` requests a second, for the
   * subscriptions whose delay has passed; takes requests unanswered for
   * `resyncTimeoutMs` as lost, and asks again for a book that got no snapshot
   * within `resyncTimeoutMs` of its subscription — or, the second time, for a
   * reconnect with resync.
   */
  onTick(io: SessionIO, nowMs: number): void {
    const oldest = this.#requests[0];
    if (oldest !== undefined && nowMs - oldest.sentAtMs >= this.#resyncTimeoutMs) {
      this.#requestFailures += this.#requests.length;
      this.#requests = [];
      this.#unchecked = `no answer within ${this.#resyncTimeoutMs} ms`;
    }
    if (this.#unchecked !== null && this.#requests.length === 0) {
      const retry = this.#reconcile(this.#unchecked, nowMs);
      if (retry !== "") io.error(`Coinbase subscriptions missing (${this.#unchecked})${retry}`);
      this.#unchecked = null;
    }
    this.#sendDue(io, nowMs);
    for (const [product, wait] of this.#waits) {
      if (wait.sinceMs === null || nowMs - wait.sinceMs < this.#resyncTimeoutMs) continue;
      wait.sinceMs = null;
      wait.misses++;
      const why = `no snapshot within ${this.#resyncTimeoutMs} ms of subscribing`;
      if (wait.misses >= 2) {
        wait.reason = `${why} twice; reconnecting`;
        this.#resync(`Book ${product}: ${why}, twice`, io);
        return;
      }
      const delayMs = this.#retryRefused("level2", product, why, nowMs);
      io.error(`Coinbase book ${product}: ${why}; asking again in ${delayMs} ms`);
    }
  }

  /** Resets the sequence tracker and marks every book stale. */
  onClose(): void {
    this.#resetConnection();
  }

  /** Books live or waiting (and why), last sequence number, gaps, subscriptions, errors. */
  status(): CoinbaseSessionStatus {
    const books: Record<string, CoinbaseBookState> = {};
    const waiting: Record<string, string> = {};
    const due: Record<string, number> = {};
    for (const [symbol, sync] of this.#books) {
      books[symbol] = sync.live ? "live" : "waiting";
      const wait = this.#waits.get(symbol);
      if (sync.live || wait === undefined) continue;
      waiting[symbol] = wait.reason ?? "waiting for a snapshot after a resync";
      if (wait.sinceMs !== null) due[symbol] = wait.sinceMs + this.#resyncTimeoutMs;
    }
    return {
      books,
      last_sequence: this.#lastSequence,
      gaps: this.#gaps,
      book_resyncs: this.#bookResyncs,
      subscriptions: structuredClone(this.#subscriptions),
      waiting,
      snapshot_due_at: due,
      resubscribe_at: Object.fromEntries(this.#retries),
      request_failures: this.#requestFailures,
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
    this.#requests = [];
    this.#sentAtMs = [];
    this.#unchecked = null;
    this.#refusal = null;
    for (const wait of this.#waits.values()) {
      wait.sinceMs = null;
      wait.misses = 0;
      wait.reason = "connection closed; the next one subscribes again";
    }
  }

  /** The Coinbase channels to subscribe: `heartbeats`, then one per configured channel. */
  #wanted(): CoinbaseChannel[] {
    return ["heartbeats", ...this.#channels.map((channel) => COINBASE_CHANNEL_NAMES[channel])];
  }

  /** Sends a subscribe request, counting it; a `level2` one starts its books' snapshot deadlines. */
  #subscribe(
    io: SessionIO,
    channel: CoinbaseChannel,
    products: readonly string[],
    nowMs: number,
  ): void {
    this.#requests.push({ channel, sentAtMs: nowMs });
    this.#sentAtMs.push(nowMs);
    if (channel === "level2") {
      for (const product of products) {
        const wait = this.#waits.get(product);
        if (wait === undefined) continue;
        wait.sinceMs = nowMs;
        wait.reason = "subscribed; waiting for the snapshot";
      }
    }
    io.send(subscribeMessage(channel, products));
  }

  /** Whether the last `subscriptions` frame lists `product` on `channel`. */
  #acknowledged(channel: CoinbaseChannel, product: string): boolean {
    const listed = this.#subscriptions[channel];
    if (listed === undefined) return false;
    // Coinbase lists the heartbeats subscription as ["heartbeats"].
    return channel === "heartbeats" || listed.includes(product);
  }

  /**
   * An answer to the oldest request (a `subscriptions` frame, or an error:
   * `refusal`): subscriptions acknowledged are not asked again, and once every
   * request has its answer the next tick asks again for what is still missing
   * (not at once: an answer still on its way, to a request this session did
   * not count, need not be taken for a refusal).
   */
  #onAnswer(refusal: string | null, io: SessionIO): void {
    const nowMs = io.nowUs() / 1000;
    const answered = this.#requests.shift() !== undefined;
    if (refusal !== null && answered) {
      this.#requestFailures++;
      this.#refusal = refusal;
    }
    for (const key of this.#retries.keys()) {
      const [channel, product] = splitKey(key);
      if (!this.#acknowledged(channel, product)) continue;
      this.#retries.delete(key);
      this.#refusals.delete(key);
      const wait = channel === "level2" ? this.#waits.get(product) : undefined;
      if (wait !== undefined && wait.sinceMs === null && !this.#books.get(product)?.live) {
        wait.sinceMs = nowMs;
        wait.reason = "subscribed; waiting for the snapshot";
      }
    }
    if (!answered || this.#requests.length > 0) return;
    this.#unchecked = this.#refusal ?? "not acknowledged";
    this.#refusal = null;
  }

  /**
   * Schedules every configured subscription the last `subscriptions` frame
   * lacks, and not already scheduled, to be asked for again (`why`); returns
   * what to add to the message reporting it.
   */
  #reconcile(why: string, nowMs: number): string {
    let out = "";
    for (const channel of this.#wanted()) {
      const asked: string[] = [];
      const delays: number[] = [];
      for (const product of this.#symbols) {
        if (this.#acknowledged(channel, product)) continue;
        if (this.#retries.has(`${channel} ${product}`)) continue;
        asked.push(product);
        delays.push(
          this.#retryRefused(channel, product, `${channel} not subscribed (${why})`, nowMs),
        );
      }
      if (asked.length === 0) continue;
      const low = Math.min(...delays);
      const high = Math.max(...delays);
      out += `; asking again for ${channel} ${asked.join(", ")} in ${
        low === high ? low : `${low}-${high}`
      } ms`;
    }
    return out;
  }

  /**
   * Schedules a subscription to be asked for again after the jittered delay
   * of its next refusal; returns that delay in ms. Its book, if any, has no
   * snapshot deadline until then, and waits for the reason `why`.
   */
  #retryRefused(channel: CoinbaseChannel, product: string, why: string, nowMs: number): number {
    const key = `${channel} ${product}`;
    const refusals = (this.#refusals.get(key) ?? 0) + 1;
    this.#refusals.set(key, refusals);
    const delayMs = backoffDelay(Math.min(refusals - 1, 30), {
      initialMs: this.#resubscribeInitialMs,
      maxMs: this.#resubscribeMaxMs,
      jitter: DEFAULT_COINBASE_RESUBSCRIBE_JITTER,
      random: this.#random,
    });
    const atMs = Math.max(this.#retries.get(key) ?? 0, nowMs + delayMs);
    this.#retries.set(key, atMs);
    const wait = channel === "level2" ? this.#waits.get(product) : undefined;
    if (wait !== undefined) {
      wait.sinceMs = null;
      wait.reason = `${why}; asking again at ${new Date(atMs).toISOString()}`;
    }
    return delayMs;
  }

  /**
   * Sends the subscriptions due again, one request per channel, while fewer
   * than `maxMessagesPerSecond` requests went in the last second; the rest
   * wait for a later tick.
   */
  #sendDue(io: SessionIO, nowMs: number): void {
    this.#sentAtMs = this.#sentAtMs.filter((atMs) => nowMs - atMs < 1_000);
    for (const channel of this.#wanted()) {
      const due: string[] = [];
      for (const product of this.#symbols) {
        const atMs = this.#retries.get(`${channel} ${product}`);
        if (atMs !== undefined && atMs <= nowMs) due.push(product);
      }
      if (due.length === 0) continue;
      if (this.#sentAtMs.length >= this.#maxMessagesPerSecond) return;
      for (const product of due) this.#retries.delete(`${channel} ${product}`);
      this.#subscribe(io, channel, due, nowMs);
    }
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
    const wait = this.#waits.get(control.venue_symbol);
    if (result.status === "ok" && control.action === "snapshot" && wait !== undefined) {
      wait.sinceMs = null;
      wait.misses = 0;
      wait.reason = null;
    }
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

/** A retry key's channel and product. */
function splitKey(key: string): [CoinbaseChannel, string] {
  const at = key.indexOf(" ");
  return [key.slice(0, at) as CoinbaseChannel, key.slice(at + 1)];
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
