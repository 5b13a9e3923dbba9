/**
 * The Kraken WebSocket v2 {@linkcode VenueSession}: trades, and order books
 * verified frame by frame with Kraken's CRC32 checksum.
 *
 * Connection and subscriptions:
 *
 * - {@linkcode KrakenSession.url} is the configured `ws_url` (`wss://ws.kraken.com/v2`).
 * - `onOpen` sends one v2 `subscribe` per channel for every configured symbol:
 *   `trade` with `snapshot: false` (Kraken's default; a snapshot would replay
 *   the last 50 trades on every reconnect as duplicates) and `book` at
 *   `book_depth` with `snapshot: true`. Kraken has no best-bid/ask channel
 *   of its own in this design: `top` events come from the verified books
 *   (with `top` but not `book` configured, the book is still subscribed and
 *   checked, and only its tops are published). Kraken answers each symbol with an
 *   ack; a failed ack (`success: false`, an unknown pair for instance) is
 *   reported with {@linkcode SessionIO.error}, and that symbol's subscription
 *   is asked again from `onTick` after `resubscribeInitialMs` (1 s), the delay
 *   doubling with each refusal up to `resubscribeMaxMs` (60 s), spread by
 *   ±20 % of jitter, while the connection (kept up by heartbeats) carries the
 *   others. A refusal does not name its channel, and need not name a symbol
 *   (`"Exceeded msg rate"` answers the request): the session keeps each
 *   subscribe request's channel and the symbols not yet answered by its
 *   `req_id`, and a refusal naming no symbol asks again for each of those.
 *   Subscriptions due again on the same tick go in one request per channel;
 *   one acknowledged meanwhile is not asked again. Acknowledged subscriptions
 *   are counted in {@linkcode KrakenSession.status}. A new connection starts
 *   the delays over.
 * - An error frame that names neither a method nor a `req_id` (Kraken's rate
 *   limiter answers `{"error":"Exceeded msg rate","success":false}`) cannot be
 *   tied to a request: it is taken as a refusal of every subscribe request
 *   still waiting for an answer, and each of their symbols not acknowledged
 *   is asked for again the same way. Error frames are counted (`errors`,
 *   `last_error` in the status).
 * - Every book subscribed (by `onOpen`, or asked again after a refusal) must
 *   get its snapshot within `resyncTimeoutMs` (10 s): heartbeats keep the
 *   connection up whether or not a book ever comes, so a subscribe request or
 *   answer that is lost would otherwise leave the book waiting for ever. A
 *   book that misses it is resynced like a book that failed its checksum
 *   (below): resubscribed in place, and the connection renewed when that
 *   resubscription gets no snapshot in time either. A refused subscription
 *   has no deadline while it waits to be asked again. Each book's `reason`
 *   and `snapshot_due_at` in the status say why it waits and until when.
 * - Keepalive: Kraken sends a `heartbeat` about every second once subscribed
 *   (the runtime's staleness watchdog sees them); `onTick` also sends an
 *   application-level `{"method":"ping","req_id":n}` every `pingIntervalMs`
 *   (default 20 s), answered by `pong`.
 * - The `status` channel: a system status other than `online`
 *   (`maintenance`, `cancel_only`, `post_only`) is reported with
 *   {@linkcode SessionIO.error}; a venue error frame likewise.
 *
 * Order books: one {@linkcode KrakenBookSync} per symbol applies snapshots
 * and updates, truncates to the subscribed depth and checks every frame's
 * checksum. A mismatch (or an update without a snapshot) is counted with
 * {@linkcode SessionIO.resynced}, and that symbol's book alone is
 * resubscribed — `unsubscribe`, then `subscribe` with `snapshot: true` — on
 * the same connection; updates are dropped ("waiting") until the fresh
 * snapshot arrives. A book frame that cannot be parsed (`"channel":"book"`
 * in a frame that throws `MalformedFrameError`) resyncs the same way the
 * books it names, or every book when it names none that can be read: the
 * checksum covers only the top 10 levels, so a lost change deeper down would
 * otherwise stay in the book. A book resubscribed again within
 * `resubscribeMaxMs` of its last resubscription (a snapshot that fails its
 * checksum too) is unsubscribed at once but subscribed again only from
 * `onTick`, after
 * `resubscribeInitialMs` doubling up to `resubscribeMaxMs`, so a book that
 * cannot be verified is not asked for as fast as Kraken answers. On a
 * reconnect `onClose` marks every book stale and the new connection's
 * snapshots replace them.
 *
 * @example
 * ```ts
 * import { krakenSession } from "./session.ts";
 *
 * const session = krakenSession({
 *   ws_url: "wss://ws.kraken.com/v2",
 *   symbols: ["BTC-USD", "ETH-USD"],
 *   channels: ["trades", "book"],
 *   book_depth: 10,
 * });
 * session.url(); // "wss://ws.kraken.com/v2"
 * ```
 *
 * @module
 */

import type { Config } from "../../config/mod.ts";
import { backoffDelay } from "../../lib/backoff.ts";
import { MalformedFrameError, type MarketEvent } from "../../market/events.ts";
import type { SessionIO, VenueSession } from "../session.ts";
import { KrakenBookSync } from "./book_sync.ts";
import {
  type KrakenAckControl,
  type KrakenBookControl,
  parseKrakenFrame,
  pingMessage,
  subscribeMessage,
  toKrakenSymbol,
  unsubscribeMessage,
} from "./parse.ts";

/** The keys of the `exchanges.kraken` config section a session uses (read-only lists welcome). */
export interface KrakenSessionConfig {
  /** The v2 WebSocket URL. */
  ws_url: string;
  /** Canonical symbols (`BTC-USD`). */
  symbols: readonly string[];
  /** Channels: `trades`, `book` (`top` has no Kraken channel of its own; books publish tops). */
  channels: readonly Config["exchanges"]["kraken"]["channels"][number][];
  /** Book depth: 10, 25, 100, 500 or 1000. */
  book_depth: number;
}

/** A frame of the `book` channel (tested on frames that failed to parse). */
const BOOK_CHANNEL = /"channel"\s*:\s*"book"/;
/** A book frame's `type` (`snapshot` or `update`). */
const BOOK_ACTION = /"type"\s*:\s*"(snapshot|update)"/;
/** Each `symbol` a frame names. */
const SYMBOL_FIELD = /"symbol"\s*:\s*"([^"\\]*)"/g;

/** How often `onTick` sends an application-level ping, in milliseconds. */
export const DEFAULT_KRAKEN_PING_INTERVAL_MS = 20_000;
/**
 * How long a book subscribed may wait for its snapshot before it is
 * resubscribed in place, and a book resubscribed in place before the whole
 * connection is renewed, in milliseconds.
 */
export const DEFAULT_KRAKEN_RESYNC_TIMEOUT_MS = 10_000;

/**
 * First delay before a refused subscription, or a book resubscribed again soon
 * after its last resubscription, is asked for again, in milliseconds.
 */
export const DEFAULT_KRAKEN_RESUBSCRIBE_INITIAL_MS = 1_000;
/** Longest such delay, in milliseconds; also how soon "again soon after" is. */
export const DEFAULT_KRAKEN_RESUBSCRIBE_MAX_MS = 60_000;
/**
 * Fraction of such a delay by which it is randomly spread both ways, so that
 * subscriptions refused together are not all asked for again together.
 */
export const DEFAULT_KRAKEN_RESUBSCRIBE_JITTER = 0.2;

/** Tuning of {@linkcode krakenSession}; the venue settings come from the config section. */
export interface KrakenSessionOptions {
  /** Milliseconds between pings sent from `onTick`. @default {DEFAULT_KRAKEN_PING_INTERVAL_MS} */
  pingIntervalMs?: number;
  /**
   * Milliseconds a book subscribed waits for its snapshot before `onTick`
   * resubscribes it in place, and a book resubscribed in place before `onTick`
   * asks for a reconnect. @default {DEFAULT_KRAKEN_RESYNC_TIMEOUT_MS}
   */
  resyncTimeoutMs?: number;
  /**
   * Whether changes of the best bid or ask also publish a top event (always
   * on when the `top` channel is configured). @default {true}
   */
  emitTop?: boolean;
  /**
   * Milliseconds before a refused subscription, or a book resubscribed again
   * soon after, is asked for again (doubling each time).
   * @default {DEFAULT_KRAKEN_RESUBSCRIBE_INITIAL_MS}
   */
  resubscribeInitialMs?: number;
  /** Longest of those delays, in ms. @default {DEFAULT_KRAKEN_RESUBSCRIBE_MAX_MS} */
  resubscribeMaxMs?: number;
  /**
   * Source of uniform numbers in [0, 1) for the jitter of those delays; inject
   * `() => 0.5` in tests for none. @default {Math.random}
   */
  random?: () => number;
}

/** One symbol's book figures in {@linkcode KrakenSessionStatus}. */
export type KrakenBookStatus = {
  /** "live" when the book is verified, "waiting" for a snapshot. */
  state: "live" | "waiting";
  /**
   * Why the book is waiting (subscribed and no snapshot yet, refused and to
   * be asked again, resubscribed after a fault, connection closed), or null
   * when live.
   */
  reason: string | null;
  /**
   * When the session acts if no snapshot has come (resubscribes the book, or
   * renews the connection after a resubscription), ms since the epoch; null
   * when no snapshot is awaited on a deadline.
   */
  snapshot_due_at: number | null;
  /** Checksum mismatches since the session started. */
  checksum_failures: number;
  /** Resubscriptions (checksum mismatches and other book faults). */
  resyncs: number;
  /** Snapshots received. */
  snapshots: number;
  /** The last reason the book was resubscribed, or null. */
  last_resync: string | null;
};

/** What {@linkcode KrakenSession.status} reports. */
export type KrakenSessionStatus = {
  /** Kraken's last system status (`online`…), or null before the first. */
  system: string | null;
  /** Acknowledged subscriptions per channel on the current connection. */
  subscribed: { trade: number; book: number };
  /** Failed subscribe or unsubscribe requests. */
  request_failures: number;
  /** Books configured. */
  books_total: number;
  /** Books verified now. */
  books_live: number;
  /** Checksum mismatches of every book. */
  checksum_failures: number;
  /** Resubscriptions of every book. */
  resyncs: number;
  /** Per canonical symbol. */
  books: Record<string, KrakenBookStatus>;
  /** Subscriptions waiting to be asked for again (`"book BTC/USD"`) and when, ms since the epoch. */
  resubscribe_at: Record<string, number>;
  /** Pings sent. */
  pings: number;
  /** Pongs received. */
  pongs: number;
  /** Heartbeats received. */
  heartbeats: number;
  /** Error frames Kraken sent that answer no particular request, since the session started. */
  errors: number;
  /** The last of them, or null. */
  last_error: string | null;
};

interface BookSlot {
  readonly sync: KrakenBookSync;
  checksumFailures: number;
  resyncs: number;
  snapshots: number;
  lastResync: string | null;
  /** When it was resubscribed in place and still waits for the snapshot (ms), else null. */
  resyncAtMs: number | null;
  /**
   * When it was subscribed (on open, or asked again after a refusal) and still
   * waits for its first snapshot (ms), else null.
   */
  subscribedAtMs: number | null;
  /** Why it is waiting, or null when live. */
  reason: string | null;
  /** When its last resubscription for a resync was asked for (ms), or null. */
  lastResubscribeMs: number | null;
  /** Resubscriptions for a resync, each within `resubscribeMaxMs` of the one before. */
  resubscribeStreak: number;
}

/** A subscribe request of this connection, by its `req_id`. */
interface Request {
  readonly channel: "trade" | "book";
  /** The symbols it asked for that Kraken has not answered yet. */
  readonly pending: Set<string>;
}

/** A subscription to ask for again from `onTick`. */
interface Retry {
  readonly channel: "trade" | "book";
  readonly venueSymbol: string;
  /** When to ask (ms). */
  atMs: number;
  /** Whether it is a book's resync (its resubscription starts the snapshot watchdog). */
  readonly resync: boolean;
}

/**
 * The Kraken session: see the module documentation. Create it with
 * {@linkcode krakenSession}.
 */
export class KrakenSession implements VenueSession {
  /** The venue. */
  readonly exchange = "kraken" as const;
  readonly #url: string;
  readonly #depth: number;
  readonly #trades: boolean;
  /** Whether book events are published (`book` configured), not only the tops of the books. */
  readonly #publishBooks: boolean;
  /** Kraken symbols (`BTC/USD`) in configured order. */
  readonly #venueSymbols: string[];
  /** Book slots by Kraken symbol; empty when the `book` channel is off. */
  readonly #books = new Map<string, BookSlot>();
  readonly #pingIntervalMs: number;
  readonly #resyncTimeoutMs: number;
  readonly #resubscribeInitialMs: number;
  readonly #resubscribeMaxMs: number;
  readonly #random: () => number;
  /** The subscribe requests of this connection Kraken has not fully answered, by `req_id`. */
  readonly #requests = new Map<number, Request>();
  /** Subscriptions to ask for again, by `"<channel> <symbol>"`. */
  readonly #retries = new Map<string, Retry>();
  /** Consecutive refusals of each subscription, by `"<channel> <symbol>"`. */
  readonly #refusals = new Map<string, number>();
  #lastPingMs: number | null = null;
  #reqId = 0;
  #system: string | null = null;
  readonly #subscribed = { trade: new Set<string>(), book: new Set<string>() };
  #requestFailures = 0;
  #pings = 0;
  #pongs = 0;
  #heartbeats = 0;
  #errors = 0;
  #lastError: string | null = null;

  /**
   * Makes a session for `config`. Throws a `TypeError` for a symbol that is
   * not `BASE-QUOTE`, a `RangeError` for a bad depth or ping interval.
   */
  constructor(config: KrakenSessionConfig, options: KrakenSessionOptions = {}) {
    const {
      pingIntervalMs = DEFAULT_KRAKEN_PING_INTERVAL_MS,
      resyncTimeoutMs = DEFAULT_KRAKEN_RESYNC_TIMEOUT_MS,
      emitTop = true,
      resubscribeInitialMs = DEFAULT_KRAKEN_RESUBSCRIBE_INITIAL_MS,
      resubscribeMaxMs = Math.max(DEFAULT_KRAKEN_RESUBSCRIBE_MAX_MS, resubscribeInitialMs),
      random = Math.random,
    } = options;
    if (!(resubscribeInitialMs > 0) || !(resubscribeMaxMs >= resubscribeInitialMs)) {
      throw new RangeError(
        `Resubscribe delays must satisfy 0 < initial <= max, got ${resubscribeInitialMs} and ${resubscribeMaxMs}`,
      );
    }
    this.#resubscribeInitialMs = resubscribeInitialMs;
    this.#resubscribeMaxMs = resubscribeMaxMs;
    this.#random = random;
    if (!(pingIntervalMs > 0)) {
      throw new RangeError(`pingIntervalMs must be positive, got ${pingIntervalMs}`);
    }
    if (!(resyncTimeoutMs > 0)) {
      throw new RangeError(`resyncTimeoutMs must be positive, got ${resyncTimeoutMs}`);
    }
    this.#resyncTimeoutMs = resyncTimeoutMs;
    const channels = new Set(config.channels);
    this.#url = config.ws_url;
    this.#depth = config.book_depth;
    this.#trades = channels.has("trades");
    this.#publishBooks = channels.has("book");
    this.#pingIntervalMs = pingIntervalMs;
    this.#venueSymbols = config.symbols.map(toKrakenSymbol);
    if (channels.has("book") || channels.has("top")) {
      config.symbols.forEach((symbol, i) => {
        const venueSymbol = this.#venueSymbols[i]!;
        this.#books.set(venueSymbol, {
          sync: new KrakenBookSync(symbol, venueSymbol, config.book_depth, {
            emitTop: emitTop || channels.has("top"),
          }),
          checksumFailures: 0,
          resyncs: 0,
          snapshots: 0,
          lastResync: null,
          resyncAtMs: null,
          subscribedAtMs: null,
          reason: "not subscribed yet",
          lastResubscribeMs: null,
          resubscribeStreak: 0,
        });
      });
    }
  }

  /** The configured v2 endpoint. */
  url(): string {
    return this.#url;
  }

  /**
   * Subscribes to `trade` and `book` for every configured symbol, each book
   * with its snapshot deadline; the delays of refused subscriptions and of
   * books resubscribed again soon after start over.
   */
  onOpen(io: SessionIO): void {
    this.#lastPingMs = null;
    this.#subscribed.trade.clear();
    this.#subscribed.book.clear();
    this.#requests.clear();
    this.#retries.clear();
    this.#refusals.clear();
    for (const slot of this.#books.values()) {
      slot.lastResubscribeMs = null;
      slot.resubscribeStreak = 0;
    }
    if (this.#venueSymbols.length === 0) return;
    if (this.#trades) this.#subscribe(io, "trade", this.#venueSymbols);
    if (this.#books.size > 0) {
      const nowMs = io.nowUs() / 1000;
      for (const slot of this.#books.values()) this.#awaitSnapshot(slot, nowMs);
      this.#subscribe(io, "book", [...this.#books.keys()]);
    }
  }

  /**
   * Parses a frame: trades are returned; book frames go through the symbol's
   * sync (verified book and top events returned; a checksum mismatch
   * resubscribes that book); acks, status, pong and heartbeats update the
   * figures. Throws `MalformedFrameError` for a frame it cannot use, including
   * a book of a symbol that is not configured.
   */
  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[] {
    let parsed;
    try {
      parsed = parseKrakenFrame(frame, receivedUs);
    } catch (error) {
      this.#afterMalformed(frame, io);
      throw error;
    }
    const { events, control } = parsed;
    if (control === null) return events;
    switch (control.type) {
      case "book":
        return this.#onBook(control, receivedUs, io);
      case "heartbeat":
        this.#heartbeats++;
        return events;
      case "ack":
        this.#onAck(control, io);
        return events;
      case "pong":
        this.#pongs++;
        return events;
      case "status":
        this.#system = control.system;
        if (control.system !== "online") io.error(`Kraken system status is ${control.system}`);
        return events;
      case "error":
        this.#onError(control.message, io);
        return events;
    }
  }

  /** Marks every book stale and forgets the subscriptions; the next open subscribes again. */
  onClose(): void {
    this.#subscribed.trade.clear();
    this.#subscribed.book.clear();
    this.#requests.clear();
    this.#retries.clear();
    for (const slot of this.#books.values()) {
      slot.sync.reset();
      slot.resyncAtMs = null;
      slot.subscribedAtMs = null;
      slot.reason = "connection closed; the next one subscribes again";
    }
  }

  /**
   * Sends a ping every `pingIntervalMs` (the first one interval after the
   * first tick), asks again for the subscriptions whose delay has passed (a
   * refused one, a book resubscribed again soon after), resyncs a book
   * subscribed that got no snapshot within `resyncTimeoutMs`, and asks for a
   * reconnect when a book resubscribed in place got none within
   * `resyncTimeoutMs` either (a refused or lost request would otherwise leave
   * it waiting while heartbeats keep the connection).
   */
  onTick(io: SessionIO, nowMs: number): void {
    const due = { trade: [] as string[], book: [] as string[] };
    for (const [key, retry] of this.#retries) {
      if (retry.atMs > nowMs) continue;
      this.#retries.delete(key);
      if (retry.resync) {
        const slot = this.#books.get(retry.venueSymbol);
        if (slot !== undefined) {
          slot.resyncAtMs = nowMs;
          slot.lastResubscribeMs = nowMs;
          slot.reason = `resubscribed after: ${slot.lastResync}`;
        }
      } else if (this.#subscribed[retry.channel].has(retry.venueSymbol)) {
        continue; // Acknowledged meanwhile (an answer that came after the refusal).
      } else if (retry.channel === "book") {
        const slot = this.#books.get(retry.venueSymbol);
        if (slot !== undefined) this.#awaitSnapshot(slot, nowMs);
      }
      due[retry.channel].push(retry.venueSymbol);
    }
    if (due.book.length > 0) this.#subscribe(io, "book", due.book);
    if (due.trade.length > 0) this.#subscribe(io, "trade", due.trade);
    for (const [venueSymbol, slot] of this.#books) {
      if (slot.resyncAtMs === null || nowMs - slot.resyncAtMs < this.#resyncTimeoutMs) continue;
      io.reconnect(
        `${venueSymbol}: no snapshot within ${this.#resyncTimeoutMs} ms of resubscribing`,
        { resync: true },
      );
      return;
    }
    for (const [venueSymbol, slot] of this.#books) {
      if (slot.subscribedAtMs === null) continue;
      if (nowMs - slot.subscribedAtMs < this.#resyncTimeoutMs) continue;
      slot.subscribedAtMs = null;
      this.#resyncBook(
        venueSymbol,
        slot,
        `No snapshot within ${this.#resyncTimeoutMs} ms of subscribing`,
        io,
      );
    }
    if (this.#lastPingMs === null) {
      this.#lastPingMs = nowMs;
      return;
    }
    if (nowMs - this.#lastPingMs < this.#pingIntervalMs) return;
    this.#lastPingMs = nowMs;
    this.#pings++;
    io.send(pingMessage(++this.#reqId));
  }

  /** Per-symbol book states, checksum failures, subscriptions and keepalive counts. */
  status(): KrakenSessionStatus {
    const books: Record<string, KrakenBookStatus> = {};
    let live = 0;
    let checksumFailures = 0;
    let resyncs = 0;
    for (const slot of this.#books.values()) {
      const state = slot.sync.live ? "live" : "waiting";
      if (state === "live") live++;
      checksumFailures += slot.checksumFailures;
      resyncs += slot.resyncs;
      const since = slot.resyncAtMs ?? slot.subscribedAtMs;
      books[slot.sync.symbol] = {
        state,
        reason: state === "live" ? null : slot.reason,
        snapshot_due_at: since === null ? null : since + this.#resyncTimeoutMs,
        checksum_failures: slot.checksumFailures,
        resyncs: slot.resyncs,
        snapshots: slot.snapshots,
        last_resync: slot.lastResync,
      };
    }
    return {
      system: this.#system,
      subscribed: { trade: this.#subscribed.trade.size, book: this.#subscribed.book.size },
      request_failures: this.#requestFailures,
      books_total: this.#books.size,
      books_live: live,
      checksum_failures: checksumFailures,
      resyncs,
      books,
      resubscribe_at: Object.fromEntries(
        [...this.#retries].map(([key, retry]) => [key, retry.atMs]),
      ),
      pings: this.#pings,
      pongs: this.#pongs,
      heartbeats: this.#heartbeats,
      errors: this.#errors,
      last_error: this.#lastError,
    };
  }

  #onBook(control: KrakenBookControl, receivedUs: number, io: SessionIO): MarketEvent[] {
    const slot = this.#books.get(control.venue_symbol);
    if (slot === undefined) {
      throw new MalformedFrameError(
        `Book frame for ${JSON.stringify(control.venue_symbol)}, which is not subscribed`,
      );
    }
    const result = slot.sync.onBook(control, receivedUs);
    if (result.status === "ok") {
      if (control.action === "snapshot") {
        slot.snapshots++;
        slot.resyncAtMs = null;
        slot.subscribedAtMs = null;
        slot.reason = null;
      }
      return this.#publishBooks
        ? result.events
        : result.events.filter((event) => event.kind === "top");
    }
    if (result.status === "resync") this.#resyncBook(control.venue_symbol, slot, result.reason, io);
    return [];
  }

  /**
   * After a frame that could not be parsed: when it looks like a book frame
   * (`"channel":"book"`), the books it names — every book when it names none
   * that can be read — lost a change and are resynced. Kraken's checksum
   * covers only the top 10 levels, so with a deeper book a later checksum
   * need not catch it.
   */
  #afterMalformed(frame: string, io: SessionIO): void {
    if (typeof frame !== "string" || !BOOK_CHANNEL.test(frame)) return;
    const action = BOOK_ACTION.exec(frame)?.[1] as "snapshot" | "update" | undefined;
    const named = [...frame.matchAll(SYMBOL_FIELD)].map((match) => match[1]!);
    const venueSymbols = named.length === 0 ? [...this.#books.keys()] : named;
    for (const venueSymbol of new Set(venueSymbols)) {
      const slot = this.#books.get(venueSymbol);
      if (slot === undefined) continue;
      const result = slot.sync.onMalformed(action ?? null);
      if (result.status === "resync") this.#resyncBook(venueSymbol, slot, result.reason, io);
    }
  }

  /**
   * Counts a resync of a book and resubscribes it in place: unsubscribe, then
   * subscribe with a snapshot — at once, or from `onTick` after a growing
   * delay when it was resubscribed for a resync again soon before.
   */
  #resyncBook(venueSymbol: string, slot: BookSlot, why: string, io: SessionIO): void {
    const reason = `${venueSymbol}: ${why}`;
    slot.resyncs++;
    if (why.startsWith("Checksum mismatch")) slot.checksumFailures++;
    slot.lastResync = reason;
    slot.subscribedAtMs = null;
    io.resynced(reason);
    this.#subscribed.book.delete(venueSymbol);
    io.send(unsubscribeMessage("book", [venueSymbol], {
      depth: this.#depth,
      reqId: ++this.#reqId,
    }));
    // Again soon after the last resubscription: wait, longer each time.
    const nowMs = io.nowUs() / 1000;
    const soon = slot.lastResubscribeMs !== null &&
      nowMs - slot.lastResubscribeMs < this.#resubscribeMaxMs;
    slot.resubscribeStreak = soon ? slot.resubscribeStreak + 1 : 0;
    if (slot.resubscribeStreak === 0) {
      slot.resyncAtMs = nowMs;
      slot.lastResubscribeMs = nowMs;
      slot.reason = `resubscribed after: ${reason}`;
      this.#subscribe(io, "book", [venueSymbol]);
    } else {
      slot.resyncAtMs = null;
      const atMs = nowMs + this.#delayMs(slot.resubscribeStreak);
      slot.reason = `resubscribing at ${new Date(atMs).toISOString()} after: ${reason}`;
      this.#retries.set(`book ${venueSymbol}`, {
        channel: "book",
        venueSymbol,
        atMs,
        resync: true,
      });
    }
  }

  /** Starts the deadline of a book's first snapshot after a subscribe sent at `nowMs`. */
  #awaitSnapshot(slot: BookSlot, nowMs: number): void {
    slot.subscribedAtMs = nowMs;
    slot.reason = "subscribed; waiting for the snapshot";
  }

  /**
   * An error frame that names no request: counted and reported, and taken as
   * the refusal of every subscribe request not fully answered (Kraken's rate
   * limiter answers a request with one), whose symbols are asked for again.
   */
  #onError(message: string, io: SessionIO): void {
    this.#errors++;
    this.#lastError = message;
    const pending = [...this.#requests.values()];
    this.#requests.clear();
    this.#requestFailures += pending.length;
    let retry = "";
    for (const channel of ["book", "trade"] as const) {
      const venueSymbols = new Set(
        pending.filter((request) => request.channel === channel)
          .flatMap((request) => [...request.pending]),
      );
      if (venueSymbols.size === 0) continue;
      retry += this.#retryAll(channel, [...venueSymbols], message, io);
    }
    io.error(`Kraken error: ${message}${retry}`);
  }

  /**
   * The delay before the `attempt`th ask again (from 1): the initial delay,
   * doubling, capped, spread by {@linkcode DEFAULT_KRAKEN_RESUBSCRIBE_JITTER}.
   */
  #delayMs(attempt: number): number {
    return backoffDelay(Math.min(attempt - 1, 30), {
      initialMs: this.#resubscribeInitialMs,
      maxMs: this.#resubscribeMaxMs,
      jitter: DEFAULT_KRAKEN_RESUBSCRIBE_JITTER,
      random: this.#random,
    });
  }

  /** Sends a subscribe request for `channel` of `venueSymbols`, remembering it by its `req_id`. */
  #subscribe(io: SessionIO, channel: "trade" | "book", venueSymbols: readonly string[]): void {
    // Asked again: only the new request waits for their answers now.
    for (const [reqId, request] of this.#requests) {
      if (request.channel !== channel) continue;
      for (const venueSymbol of venueSymbols) request.pending.delete(venueSymbol);
      if (request.pending.size === 0) this.#requests.delete(reqId);
    }
    const reqId = ++this.#reqId;
    this.#requests.set(reqId, { channel, pending: new Set(venueSymbols) });
    io.send(subscribeMessage(
      channel,
      venueSymbols,
      channel === "trade"
        ? { snapshot: false, reqId }
        : { depth: this.#depth, snapshot: true, reqId },
    ));
  }

  #onAck(ack: KrakenAckControl, io: SessionIO): void {
    const named = ack.channel === "trade" || ack.channel === "book" ? ack.channel : null;
    // A refusal does not name its channel; the request's req_id does.
    const request = ack.method === "subscribe" && ack.req_id !== null
      ? this.#requests.get(ack.req_id)
      : undefined;
    const channel = named ?? request?.channel ?? null;
    // The symbols this answer is about: the one it names, else every one of the request not
    // answered yet (a refusal of the whole request, such as "Exceeded msg rate").
    let answered: string[] = [];
    if (request !== undefined && (named === null || named === request.channel)) {
      answered = ack.venue_symbol !== null
        ? (request.pending.has(ack.venue_symbol) ? [ack.venue_symbol] : [])
        : ack.success
        ? []
        : [...request.pending];
      for (const symbol of answered) request.pending.delete(symbol);
      if (request.pending.size === 0) this.#requests.delete(ack.req_id!);
    }
    if (!ack.success) {
      this.#requestFailures++;
      const about = [ack.channel, ack.venue_symbol].filter((part) => part !== null).join(" ");
      let retry = "";
      if (ack.method === "subscribe" && channel !== null) {
        if (ack.venue_symbol !== null) {
          const delayMs = this.#retryRefused(channel, ack.venue_symbol, ack.error, io);
          if (delayMs !== null) retry = `; asking again in ${delayMs} ms`;
        } else {
          retry = this.#retryAll(channel, answered, ack.error, io);
        }
      }
      io.error(
        `Kraken ${ack.method}${about === "" ? "" : ` ${about}`} failed: ${ack.error}${retry}`,
      );
      return;
    }
    if (channel === null || ack.venue_symbol === null) return;
    if (ack.method === "subscribe") {
      const key = `${channel} ${ack.venue_symbol}`;
      this.#subscribed[channel].add(ack.venue_symbol);
      this.#refusals.delete(key);
      // A refusal of its request may have scheduled it again: no need now, but its snapshot
      // is due again.
      if (this.#retries.get(key)?.resync === false) this.#retries.delete(key);
      const slot = channel === "book" ? this.#books.get(ack.venue_symbol) : undefined;
      if (
        slot !== undefined && !slot.sync.live && slot.subscribedAtMs === null &&
        slot.resyncAtMs === null && !this.#retries.has(key)
      ) {
        this.#awaitSnapshot(slot, io.nowUs() / 1000);
      }
    } else if (ack.method === "unsubscribe") this.#subscribed[channel].delete(ack.venue_symbol);
  }

  /**
   * Schedules the refused subscriptions of `venueSymbols` (a request refused
   * whole) to be asked for again; returns what to add to the error message.
   */
  #retryAll(
    channel: "trade" | "book",
    venueSymbols: readonly string[],
    why: string | null,
    io: SessionIO,
  ): string {
    const asked: string[] = [];
    const delays: number[] = [];
    for (const venueSymbol of venueSymbols) {
      if (this.#subscribed[channel].has(venueSymbol)) continue;
      const delayMs = this.#retryRefused(channel, venueSymbol, why, io);
      if (delayMs === null) continue;
      asked.push(venueSymbol);
      delays.push(delayMs);
    }
    if (asked.length === 0) return "";
    const low = Math.min(...delays);
    const high = Math.max(...delays);
    return `; asking again for ${channel} ${asked.join(", ")} in ${
      low === high ? low : `${low}-${high}`
    } ms`;
  }

  /**
   * Schedules a refused subscription of a configured symbol to be asked for
   * again (`why`: Kraken's error text); returns the delay in ms, or null when
   * the symbol is not configured. A refused book has no snapshot deadline
   * until it is asked for again.
   */
  #retryRefused(
    channel: "trade" | "book",
    venueSymbol: string,
    why: string | null,
    io: SessionIO,
  ): number | null {
    const configured = channel === "book"
      ? this.#books.has(venueSymbol)
      : this.#venueSymbols.includes(venueSymbol);
    if (!configured) return null;
    const key = `${channel} ${venueSymbol}`;
    const refusals = (this.#refusals.get(key) ?? 0) + 1;
    this.#refusals.set(key, refusals);
    const delayMs = this.#delayMs(refusals);
    const retry = this.#retries.get(key);
    const atMs = io.nowUs() / 1000 + delayMs;
    const at = retry === undefined ? atMs : Math.max(retry.atMs, atMs);
    this.#retries.set(key, { channel, venueSymbol, atMs: at, resync: retry?.resync ?? false });
    const slot = channel === "book" ? this.#books.get(venueSymbol) : undefined;
    if (slot !== undefined) {
      slot.subscribedAtMs = null;
      slot.reason = `subscription refused${why === null ? "" : ` (${why})`}; asking again at ${
        new Date(at).toISOString()
      }`;
    }
    return delayMs;
  }
}

/**
 * The Kraken {@linkcode VenueSession} for the `exchanges.kraken` config
 * section; see {@linkcode KrakenSession}.
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG } from "../../config/mod.ts";
 * import { krakenSession } from "./session.ts";
 *
 * const session = krakenSession(DEFAULT_CONFIG.exchanges.kraken);
 * ```
 */
export function krakenSession(
  config: KrakenSessionConfig,
  options: KrakenSessionOptions = {},
): KrakenSession {
  return new KrakenSession(config, options);
}
