/**
 * The generic market-data feed runtime: one supervised child per venue that
 * keeps a WebSocket to the venue, hands each frame to the venue's
 * {@linkcode VenueSession}, and publishes the events it returns.
 *
 * - Connection: connects to `session.url()`; on open the state is
 *   `"subscribing"` and `session.onOpen(io)` sends subscriptions (and
 *   authenticates); the connection is `"live"` once it is ready: when the
 *   session has `readiness()`, once that says `ready` (Alpaca: authenticated
 *   and subscribed), else on the first frame. Binary frames are decoded as
 *   UTF-8.
 * - Refusal: when `session.readiness()` says `refused` (the venue turned the
 *   connection down: Alpaca's 402 auth failed, 409 insufficient
 *   subscription…), the runtime closes the connection itself and the state is
 *   `"refused"` until the next attempt; `last_error` keeps the venue's reason.
 * - Reconnects: on any close or error it reconnects forever, waiting
 *   {@linkcode backoffDelay}`(attempt)` (from `reconnect_initial_ms`, doubling
 *   up to `reconnect_max_ms`, ±20 % jitter); the attempt counter goes back to
 *   0 only after a connection that was ready stayed so for `stable_after_ms`
 *   — mere uptime does not count, so a venue refusing every connection (or
 *   holding it open without ever getting ready) is retried less and less
 *   often. `session.onClose()` is called after every connection that opened.
 *   `io.reconnect()` closes the socket and takes the same path (and counts a
 *   resync when asked).
 * - REST: `io.fetchText` is bounded by `rest_timeout_ms` as well as by the
 *   connection: a request the venue accepts and never answers rejects with a
 *   `TimeoutError`, and the session retries it as any failed request.
 * - Watchdog: no frame for `stale_after_ms` → logged and reconnected.
 * - `session.onTick(io, now)` runs every `tick_ms` while connected.
 * - Publishing ({@linkcode FeedOutput}, shared with the replay): events are
 *   coalesced per subject (`md.<kind>.<exchange>.<symbol>`) and published as
 *   one JSON array when `publish_batch_ms` has passed since the first of them,
 *   or at once when a subject holds `publish_batch_max` (with
 *   `publish_batch_ms` 0, at the end of every frame). Order is kept within a
 *   subject.
 * - Bad input never crashes the feed: any exception from `session.onFrame`
 *   counts the frame in `malformed` and dead-letters it on `dlq.md.<exchange>`
 *   ({@linkcode DeadLetter} `stage: "feed"`, `reason: "malformed"`).
 *   Everything else that fails inside the runtime (a NATS publish, the
 *   record tap) crashes the child, and its supervisor restarts it.
 * - Stop (signal aborted): the socket is closed with code 1000, pending
 *   batches are flushed, the state becomes `"stopped"` and `done` resolves.
 *
 * Receive stamps (`receivedUs`, the events' `ts_local`) come from `nowUs`
 * (µs wall clock from `performance`, sub-millisecond); timers, backoff, the
 * watchdog and the status times (`connected_at`, `last_message_at`, ms) come
 * from the injected {@linkcode Clock}.
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { startRoot } from "./mod.ts";
 * import { feedActor } from "./feed.ts";
 * import { MarketStatus } from "../market/status.ts";
 * import type { VenueSession } from "../venues/session.ts";
 *
 * declare const session: VenueSession; // e.g. from venues/mod.ts
 * const nats = await connect({ servers: "127.0.0.1:4222" });
 * const status = new MarketStatus();
 * const root = await startRoot({ name: "root" }, [
 *   feedActor(session, { nats, status, options: { stale_after_ms: 30_000 } }),
 * ]);
 * status.feed(session.exchange).state; // "connecting", then "subscribing", "live"
 * await root.stop();
 * await nats.close();
 * ```
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import { encodeJson } from "../adapters/codec.ts";
import { backoffDelay } from "../lib/backoff.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import {
  CANONICAL_SYMBOL_PATTERN,
  type Exchange,
  MalformedFrameError,
  type MarketEvent,
} from "../market/events.ts";
import type { FeedStatus, MarketStatus } from "../market/status.ts";
import { isAsOfReceipt } from "../market/validation.ts";
import { DEFAULT_MAX_PAYLOAD, fitLetter } from "../market/dead_letters.ts";
import { type DeadLetter, dlqSubject, subjectOf } from "../market/subjects.ts";
import type { SessionIO, SessionReadiness, VenueSession } from "../venues/session.ts";
import type { ChildSpec, ChildStats, Running } from "./types.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** No frame for this long (ms) → reconnect. */
export const DEFAULT_STALE_AFTER_MS = 30_000;
/** Delay before the first reconnect attempt (ms). */
export const DEFAULT_RECONNECT_INITIAL_MS = 500;
/** Longest delay between reconnect attempts (ms). */
export const DEFAULT_RECONNECT_MAX_MS = 30_000;
/** Events of one subject within this many ms go out in one message; 0 = at the end of each frame. */
export const DEFAULT_PUBLISH_BATCH_MS = 2;
/** Most events in one message. */
export const DEFAULT_PUBLISH_BATCH_MAX = 500;
/** A connection ready (live) this long (ms) resets the reconnect backoff to its first delay. */
export const DEFAULT_STABLE_AFTER_MS = 10_000;
/**
 * Longest wait (ms) for the whole answer to a REST request of a session
 * (`io.fetchText`, e.g. a Binance depth snapshot) before it fails with a
 * `TimeoutError` and is retried: ten times a slow answer, and short enough
 * that a request never answered does not leave a book unsynced for long.
 */
export const DEFAULT_REST_TIMEOUT_MS = 10_000;
/** Interval of `session.onTick` while connected (ms). */
export const DEFAULT_TICK_MS = 1_000;
/** How long (ms, real time) a closing socket may take to report its close before it is abandoned. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;
/** Longest frame text (characters) copied into a dead letter; longer ones are cut. */
export const DEFAULT_DEAD_LETTER_FRAME_MAX = 65_536;
/** Longest detail text (characters) of a dead letter; a longer one is cut. */
export const DEAD_LETTER_DETAIL_MAX = 1_024;
/** `fitLetter` and the assumed NATS payload limit live with the dead letters, shared with the validator. */
export { DEFAULT_MAX_PAYLOAD, fitLetter } from "../market/dead_letters.ts";
/** Shortest interval (ms) between two "malformed frame" warnings of one feed; others are debug. */
export const MALFORMED_WARN_INTERVAL_MS = 10_000;

/** Close code the feed uses when it drops a connection to reconnect (stale, resync, session request). */
export const RECONNECT_CLOSE_CODE = 4000;

/** Timing and batching settings of a feed (the keys of its config section). */
export interface FeedOptions {
  /** No frame for this long (ms) → reconnect. @default {DEFAULT_STALE_AFTER_MS} */
  stale_after_ms?: number;
  /** First reconnect delay (ms). @default {DEFAULT_RECONNECT_INITIAL_MS} */
  reconnect_initial_ms?: number;
  /** Longest reconnect delay (ms). @default {DEFAULT_RECONNECT_MAX_MS} */
  reconnect_max_ms?: number;
  /** Coalescing window per subject (ms); 0 publishes at the end of each frame. @default {DEFAULT_PUBLISH_BATCH_MS} */
  publish_batch_ms?: number;
  /** Most events in one message. @default {DEFAULT_PUBLISH_BATCH_MAX} */
  publish_batch_max?: number;
  /** Time ready (ms) after which the backoff starts over. @default {DEFAULT_STABLE_AFTER_MS} */
  stable_after_ms?: number;
  /** Longest wait (ms) for a REST answer of `io.fetchText`. @default {DEFAULT_REST_TIMEOUT_MS} */
  rest_timeout_ms?: number;
  /** Interval of `session.onTick` (ms). @default {DEFAULT_TICK_MS} */
  tick_ms?: number;
  /** Real-time limit (ms) for a closing socket to report its close. @default {DEFAULT_CLOSE_TIMEOUT_MS} */
  close_timeout_ms?: number;
}

/** Receives one coalesced batch: same kind, exchange and symbol, in order. */
export type EventSink = (subject: string, events: MarketEvent[]) => void;
/** Receives one dead letter. */
export type DeadLetterSink = (letter: DeadLetter) => void;
/** Sees every text frame as received, before it is parsed (the record tap). */
export type RawFrameTap = (exchange: Exchange, frame: string, receivedUs: number) => void;
/** GETs `url` and resolves with the body; rejects on a non-2xx status or a network error. */
export type FetchText = (url: string, signal: AbortSignal) => Promise<string>;
/** Opens a WebSocket to `url`. */
export type WebSocketFactory = (url: string) => WebSocket;

/** Where a feed (or a replay) sends its output, and how it batches it. */
export interface FeedOutputOptions {
  /** NATS connection for the default sinks; required unless both `sink` and `deadLetters` are given. */
  nats?: NatsConnection | undefined;
  /** Where batches go. @default {publishes the JSON array on the batch's subject over `nats`} */
  sink?: EventSink | undefined;
  /** Where dead letters go. @default {publishes the JSON object on `dlq.md.<exchange>` over `nats`} */
  deadLetters?: DeadLetterSink | undefined;
  /** Coalescing window (ms); 0 flushes at the end of each frame. @default {DEFAULT_PUBLISH_BATCH_MS} */
  batchMs?: number | undefined;
  /** Most events per message. @default {DEFAULT_PUBLISH_BATCH_MAX} */
  batchMax?: number | undefined;
  /** Clock for the batch window and status times. @default {systemClock} */
  clock?: Clock | undefined;
  /** Logger. @default {nullLogger} */
  log?: Logger | undefined;
  /** Called when a batch timer fails to publish (the owner should crash). @default {logs the error} */
  onFatal?: ((error: unknown) => void) | undefined;
  /** Longest frame text kept in a dead letter. @default {DEFAULT_DEAD_LETTER_FRAME_MAX} */
  deadLetterFrameMax?: number | undefined;
}

/** A µs wall clock with sub-millisecond resolution: `performance.timeOrigin + performance.now()`. */
export function wallClockUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** Options of {@linkcode HttpStatusError}. */
export interface HttpStatusErrorOptions {
  /**
   * How long the server asked to wait before the next request (its
   * `Retry-After`), in ms; null when it did not say. @default {null}
   */
  retryAfterMs?: number | null;
}

/**
 * Thrown by the default `fetchText` for a response whose status is not 2xx.
 * A session reads `status` and `retryAfterMs` from it (a 429 asks it to slow
 * down; Binance bans an IP that does not, answering 418).
 *
 * @example
 * ```ts
 * const error = new HttpStatusError("https://api.binance.com/api/v3/depth", 429, "Too Many Requests", {
 *   retryAfterMs: 30_000,
 * });
 * error.message; // "GET https://api.binance.com/api/v3/depth answered 429 Too Many Requests"
 * ```
 */
export class HttpStatusError extends Error {
  /** The response status. */
  readonly status: number;
  /** The URL requested. */
  readonly url: string;
  /** The response's `Retry-After` in ms, or null when it had none (or none readable). */
  readonly retryAfterMs: number | null;

  /** Makes the error for `url` answered with `status`. */
  constructor(
    url: string,
    status: number,
    statusText: string,
    options: HttpStatusErrorOptions = {},
  ) {
    super(`GET ${url} answered ${status}${statusText ? ` ${statusText}` : ""}`);
    this.name = "HttpStatusError";
    this.status = status;
    this.url = url;
    this.retryAfterMs = options.retryAfterMs ?? null;
  }
}

/** RFC 7231's IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`: day, month, year, h, m, s. */
const IMF_FIXDATE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/**
 * A `Retry-After` header value in ms from `nowMs`, as RFC 7231 §7.1.3 writes
 * it: delay-seconds (`"120"`; at most `Number.MAX_SAFE_INTEGER` ms), or an
 * HTTP date in the IMF-fixdate form (a date past is 0). Null when `value` is
 * null or anything else — `Date.parse`'s lenient readings (`"May 2"`, a bare
 * year), impossible dates (`31 Feb`), the obsolete RFC 850 and asctime forms —
 * so the caller falls back to a pause of its own rather than to none.
 * Bounding the delay is the caller's business.
 *
 * @example
 * ```ts
 * parseRetryAfter("120", Date.now()); // 120000
 * parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", Date.parse("2015-10-21T07:27:00Z")); // 60000
 * parseRetryAfter("soon", Date.now()); // null
 * ```
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text) * 1000, Number.MAX_SAFE_INTEGER);
  const match = IMF_FIXDATE.exec(text);
  if (match === null) return null;
  const [day, month, year, hour, minute, second] = [
    Number(match[1]),
    MONTHS.indexOf(match[2]!),
    Number(match[3]),
    Number(match[4]),
    Number(match[5]),
    Number(match[6]),
  ];
  // second 60: a leap second, which RFC 7231 allows.
  if (hour > 23 || minute > 59 || second > 60) return null;
  const at = Date.UTC(year, month, day, hour, minute, second);
  // Date.UTC rolls 31 Feb over into March: such a date is not one.
  if (new Date(Date.UTC(year, month, day)).getUTCDate() !== day) return null;
  return Math.max(0, at - nowMs);
}

/**
 * The default {@linkcode FetchText}: `fetch`, a non-2xx status →
 * {@linkcode HttpStatusError} (with the response's `Retry-After`).
 */
export async function fetchText(url: string, signal: AbortSignal): Promise<string> {
  const response = await fetch(url, { signal });
  if (!response.ok) {
    await response.body?.cancel().catch(() => {});
    throw new HttpStatusError(url, response.status, response.statusText, {
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), Date.now()),
    });
  }
  return await response.text();
}

/** Options of {@linkcode FeedOutput.malformed}. */
export interface MalformedOptions {
  /** The exception the parser threw, logged when it is not a `MalformedFrameError`. */
  error?: unknown;
  /** The dead letter's reason. @default {"malformed"} */
  reason?: string;
}

interface Batch {
  subject: string;
  events: MarketEvent[];
  queued: boolean;
}

/**
 * The output side of a feed, shared by the live feed and the replay: counts
 * frames, calls the session's parser, coalesces events per subject and
 * publishes them, dead-letters what cannot be parsed, and keeps the feed's
 * figures in its {@linkcode FeedStatus}.
 *
 * @example
 * ```ts
 * import { MarketStatus } from "../market/status.ts";
 *
 * const status = new MarketStatus().feed("binance");
 * const batches: unknown[] = [];
 * const output = new FeedOutput("binance", status, {
 *   sink: (subject, events) => batches.push([subject, events]),
 *   deadLetters: () => {},
 *   batchMs: 0,
 * });
 * output.emit([]); // nothing to publish
 * output.close();
 * ```
 */
export class FeedOutput {
  /** The venue. */
  readonly exchange: Exchange;
  /** The figures this output keeps. */
  readonly status: FeedStatus;
  readonly #sink: EventSink;
  readonly #deadLetters: DeadLetterSink;
  readonly #batchMs: number;
  readonly #batchMax: number;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #onFatal: (error: unknown) => void;
  readonly #frameMax: number;
  readonly #batches = new Map<string, Map<string, Batch>>();
  readonly #foreign = new Map<string, Batch>();
  readonly #pending: Batch[] = [];
  /** Symbols seen to be canonical (most of a feed's events hit this set, not the pattern). */
  readonly #goodSymbols = new Set<string>();
  readonly #timerAbort = new AbortController();
  #timerArmed = false;
  #closed = false;
  #lastMalformedWarn = -Infinity;
  #malformedSinceWarn = 0;

  /** Makes the output of `exchange`'s feed, keeping figures in `status`. */
  constructor(exchange: Exchange, status: FeedStatus, options: FeedOutputOptions = {}) {
    const { nats, sink, deadLetters } = options;
    if (!nats && (!sink || !deadLetters)) {
      throw new TypeError("FeedOutput needs nats unless both sink and deadLetters are given");
    }
    this.exchange = exchange;
    this.status = status;
    this.#batchMs = options.batchMs ?? DEFAULT_PUBLISH_BATCH_MS;
    this.#batchMax = options.batchMax ?? DEFAULT_PUBLISH_BATCH_MAX;
    if (!(this.#batchMs >= 0)) throw new RangeError(`batchMs must be >= 0, got ${this.#batchMs}`);
    assertPositiveInteger(this.#batchMax, "batchMax");
    this.#clock = options.clock ?? systemClock;
    this.#log = options.log ?? nullLogger;
    this.#onFatal = options.onFatal ??
      ((error) => this.#log.error("publishing failed", { error }));
    this.#frameMax = options.deadLetterFrameMax ?? DEFAULT_DEAD_LETTER_FRAME_MAX;
    this.#deadLetters = deadLetters ?? natsDeadLetterSink(nats!);
    this.#sink = sink ?? natsEventSink(nats!, {
      onOversize: (subject, event, bytes) => this.#oversize(subject, event, bytes),
    });
  }

  /**
   * Handles one received frame: counts it, parses it with
   * `session.onFrame` and queues the events; any exception from the parser
   * is counted as malformed and dead-lettered. Throws only when publishing
   * fails.
   */
  frame(session: VenueSession, frame: string, receivedUs: number, io: SessionIO): void {
    const status = this.status;
    status.frames++;
    status.last_message_at = this.#clock.now();
    let events: MarketEvent[];
    try {
      events = session.onFrame(frame, receivedUs, io);
    } catch (error) {
      this.malformed(frame, errorDetail(error), { error });
      return;
    }
    if (events.length > 0) {
      const bad = this.#badSymbols(events);
      if (bad !== null) {
        // The rest of the frame is published; the frame itself, whole, is dead-lettered.
        events = events.filter((event) => !bad.has(event.symbol));
        this.malformed(
          frame,
          `Not a canonical symbol: ${[...bad].map((s) => JSON.stringify(s)).join(", ")}`,
          { reason: "bad_symbol" },
        );
      }
      if (events.length > 0) this.push(events);
    }
    if (this.#batchMs === 0) this.flush();
  }

  /**
   * The symbols of `events` that are not canonical (their subjects would be
   * invalid, e.g. one holding a space), or null when all are.
   */
  #badSymbols(events: readonly MarketEvent[]): Set<string> | null {
    const good = this.#goodSymbols;
    let bad: Set<string> | null = null;
    for (const event of events) {
      const symbol = event.symbol;
      if (good.has(symbol)) continue;
      if (typeof symbol === "string" && CANONICAL_SYMBOL_PATTERN.test(symbol)) {
        if (good.size >= 10_000) good.clear();
        good.add(symbol);
      } else {
        (bad ??= new Set()).add(symbol);
      }
    }
    return bad;
  }

  /** Queues events produced outside a frame (e.g. from a REST snapshot) and flushes when unbatched. */
  emit(events: MarketEvent[]): void {
    if (events.length === 0) return;
    this.push(events);
    if (this.#batchMs === 0) this.flush();
  }

  /** Queues events for their subjects; a subject reaching the batch maximum is published at once. */
  push(events: readonly MarketEvent[]): void {
    const exchange = this.exchange;
    for (const event of events) {
      let batch: Batch | undefined;
      if (event.exchange === exchange) {
        let bySymbol = this.#batches.get(event.kind);
        if (!bySymbol) this.#batches.set(event.kind, bySymbol = new Map());
        batch = bySymbol.get(event.symbol);
        if (!batch) bySymbol.set(event.symbol, batch = newBatch(subjectOf(event)));
      } else {
        const subject = subjectOf(event);
        batch = this.#foreign.get(subject);
        if (!batch) this.#foreign.set(subject, batch = newBatch(subject));
      }
      batch.events.push(event);
      if (!batch.queued) {
        batch.queued = true;
        this.#pending.push(batch);
      }
      if (batch.events.length >= this.#batchMax) this.#publish(batch);
    }
    if (this.#closed) this.flush();
    else if (this.#batchMs > 0 && !this.#timerArmed && this.#pending.length > 0) this.#armTimer();
  }

  /** Publishes every pending batch now. */
  flush(): void {
    const pending = this.#pending;
    if (pending.length === 0) return;
    // Each batch leaves the queue before it is published, so a failing sink leaves no duplicate behind.
    while (pending.length > 0) {
      const batch = pending.shift()!;
      batch.queued = false;
      if (batch.events.length > 0) this.#publish(batch);
    }
  }

  /**
   * Counts a frame that could not be used and dead-letters it with `detail`
   * (reason `"malformed"` unless told otherwise).
   */
  malformed(frame: string, detail: string, options: MalformedOptions = {}): void {
    const { error, reason = "malformed" } = options;
    this.status.malformed++;
    const cut = frame.length > this.#frameMax;
    const shown = detail.length > DEAD_LETTER_DETAIL_MAX
      ? `${detail.slice(0, DEAD_LETTER_DETAIL_MAX)}… (detail cut from ${detail.length} characters)`
      : detail;
    this.#deadLetters({
      exchange: this.exchange,
      stage: "feed",
      reason,
      detail: cut ? `${shown} (frame cut from ${frame.length} characters)` : shown,
      frame: cut ? frame.slice(0, this.#frameMax) : frame,
      at_us: wallClockUs(),
    });
    const now = this.#clock.now();
    this.#malformedSinceWarn++;
    if (now - this.#lastMalformedWarn >= MALFORMED_WARN_INTERVAL_MS) {
      this.#log.warn("malformed frame dead-lettered", {
        exchange: this.exchange,
        detail: shown,
        count: this.#malformedSinceWarn,
        ...(error !== undefined && !(error instanceof MalformedFrameError) ? { error } : {}),
      });
      this.#lastMalformedWarn = now;
      this.#malformedSinceWarn = 0;
    } else {
      this.#log.debug("malformed frame dead-lettered", { exchange: this.exchange, detail: shown });
    }
  }

  /** Counts a resync that needed no reconnect. */
  resynced(reason: string): void {
    this.status.resyncs++;
    this.#log.info("order book resynced", { exchange: this.exchange, reason });
  }

  /** Records a venue or connection error for health. */
  error(message: string): void {
    this.status.last_error = message;
    this.#log.warn("feed error", { exchange: this.exchange, message });
  }

  /** Flushes what is pending and stops the batch timer; later events are published unbatched. */
  close(): void {
    this.#closed = true;
    this.#timerAbort.abort();
    this.flush();
  }

  #armTimer(): void {
    this.#timerArmed = true;
    this.#clock.sleep(this.#batchMs, this.#timerAbort.signal).then(() => {
      this.#timerArmed = false;
      try {
        this.flush();
      } catch (error) {
        this.#onFatal(error);
      }
    }, () => {
      this.#timerArmed = false;
    });
  }

  #publish(batch: Batch): void {
    const events = batch.events;
    batch.events = [];
    this.status.events += events.length;
    const lag = deliveryLagMs(events);
    if (lag !== null) this.status.lag_ms = lag;
    this.#sink(batch.subject, events);
  }

  #oversize(subject: string, event: MarketEvent, bytes: number): void {
    this.status.events--;
    this.status.malformed++;
    const detail = `Event of ${bytes} bytes exceeds the NATS payload limit on ${subject}`;
    this.#deadLetters({
      exchange: this.exchange,
      stage: "feed",
      reason: "oversize",
      detail,
      at_us: wallClockUs(),
    });
    this.#log.error("event too large to publish", {
      exchange: this.exchange,
      subject,
      bytes,
      kind: event.kind,
    });
  }
}

function newBatch(subject: string): Batch {
  return { subject, events: [], queued: false };
}

function errorDetail(error: unknown): string {
  if (error instanceof MalformedFrameError) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/** Options of {@linkcode natsEventSink}. */
export interface NatsEventSinkOptions {
  /** Called for an event that alone exceeds the server's payload limit (it is not published). */
  onOversize?: (subject: string, event: MarketEvent, bytes: number) => void;
}

/**
 * The default {@linkcode EventSink}: publishes the batch as one JSON array.
 * A batch above the server's payload limit is split in halves until each
 * part fits; a single event above it goes to `onOversize`.
 */
export function natsEventSink(nats: NatsConnection, options: NatsEventSinkOptions = {}): EventSink {
  const publish = (subject: string, events: MarketEvent[]): void => {
    const payload = encodeJson(events);
    const limit = nats.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
    if (payload.length <= limit) {
      nats.publish(subject, payload);
    } else if (events.length > 1) {
      const half = events.length >> 1;
      publish(subject, events.slice(0, half));
      publish(subject, events.slice(half));
    } else {
      options.onOversize?.(subject, events[0]!, payload.length);
    }
  };
  return publish;
}

/**
 * The default {@linkcode DeadLetterSink}: publishes the letter on
 * `dlq.md.<exchange>`. A letter above the server's payload limit (a long frame
 * of characters JSON escapes, or of multi-byte ones) has its frame cut until
 * it fits, and says so in its detail.
 */
export function natsDeadLetterSink(nats: NatsConnection): DeadLetterSink {
  return (letter) => {
    const limit = nats.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
    nats.publish(dlqSubject(letter.exchange), fitLetter(letter, limit));
  };
}

/** What a feed needs. */
export interface FeedDeps {
  /** NATS connection; required unless both `sink` and `deadLetters` are given. */
  nats?: NatsConnection | undefined;
  /** The shared figures; the feed writes `status.feed(exchange)`. */
  status: MarketStatus;
  /** Logger. @default {nullLogger} */
  log?: Logger | undefined;
  /** Clock for timers, backoff, watchdog and status times. @default {systemClock} */
  clock?: Clock | undefined;
  /** Timing and batching. @default {{}} (every DEFAULT_*) */
  options?: FeedOptions | undefined;
  /** Opens the socket. @default {(url) => new WebSocket(url)} */
  webSocket?: WebSocketFactory | undefined;
  /** Serves `io.fetchText`. @default {fetchText} */
  fetchText?: FetchText | undefined;
  /** Sees every frame before it is parsed (record). @default {undefined} */
  onRawFrame?: RawFrameTap | undefined;
  /** Where batches go. @default {NATS, see natsEventSink} */
  sink?: EventSink | undefined;
  /** Where dead letters go. @default {NATS, see natsDeadLetterSink} */
  deadLetters?: DeadLetterSink | undefined;
  /** µs clock stamping received frames. @default {wallClockUs} */
  nowUs?: (() => number) | undefined;
  /** Source of the backoff jitter, uniform in [0, 1). @default {Math.random} */
  random?: (() => number) | undefined;
  /** Child name. @default {`feed-${exchange}`} */
  name?: string | undefined;
}

/**
 * How late a batch of events arrived: receive time minus the newest exchange
 * time among its events that carry the time they happened — bars (stamped
 * with their start), snapshots held as of receipt (stamped with the book's
 * last change) and events stamped with their receive time because the venue
 * sends none (Binance spot `bookTicker` and partial depth: `ts_exchange` is
 * `ts_local`) say nothing of delivery; null when none does.
 */
export function deliveryLagMs(events: readonly MarketEvent[]): number | null {
  let newest: MarketEvent | null = null;
  for (const event of events) {
    if (event.kind === "bar" || isAsOfReceipt(event) || event.ts_exchange === event.ts_local) {
      continue;
    }
    if (newest === null || event.ts_exchange >= newest.ts_exchange) newest = event;
  }
  return newest === null ? null : (newest.ts_local - newest.ts_exchange) / 1000;
}

/**
 * The child spec of a live feed for `session` (restart `permanent`). Its
 * `done` resolves when the supervisor stops it and rejects when the runtime
 * itself fails (not on bad input, not on connection trouble).
 */
export function feedActor(session: VenueSession, deps: FeedDeps): ChildSpec {
  const name = deps.name ?? `feed-${session.exchange}`;
  if (!name || name.includes("/")) throw new TypeError(`Invalid feed name: "${name}"`);
  if (!deps.nats && (!deps.sink || !deps.deadLetters)) {
    throw new TypeError(`Feed ${name} needs nats unless both sink and deadLetters are given`);
  }
  resolveTiming(deps.options ?? {}); // bad settings fail here, not at each start
  const batchMs = deps.options?.publish_batch_ms ?? DEFAULT_PUBLISH_BATCH_MS;
  const batchMax = deps.options?.publish_batch_max ?? DEFAULT_PUBLISH_BATCH_MAX;
  if (!(batchMs >= 0)) throw new RangeError(`publish_batch_ms must be >= 0, got ${batchMs}`);
  assertPositiveInteger(batchMax, "publish_batch_max");
  return { name, start: (signal) => startFeed(session, deps, name, signal) };
}

function startFeed(
  session: VenueSession,
  deps: FeedDeps,
  name: string,
  signal: AbortSignal,
): Running {
  const feed = new LiveFeed(session, deps, name, signal);
  const done = feed.run();
  done.catch(() => {});
  return { ready: Promise.resolve(), done, stats: (): ChildStats => ({ kind: "worker" }) };
}

const decoder = new TextDecoder();

interface ConnectionEnd {
  /** How long the connection was ready (live), in ms; 0 when it never was. */
  readyMs: number;
  /** Whether the venue refused it (`session.readiness()` said so). */
  refused: boolean;
  reason: string;
}

/** One feed's connection loop. */
class LiveFeed {
  readonly #session: VenueSession;
  readonly #exchange: Exchange;
  readonly #signal: AbortSignal;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #status: FeedStatus;
  readonly #output: FeedOutput;
  readonly #webSocket: WebSocketFactory;
  readonly #fetchText: FetchText;
  readonly #tap: RawFrameTap | undefined;
  readonly #nowUs: () => number;
  readonly #random: () => number;
  readonly #staleAfterMs: number;
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #stableAfterMs: number;
  readonly #tickMs: number;
  readonly #closeTimeoutMs: number;
  readonly #restTimeoutMs: number;
  /** Aborts on stop or on a runtime failure: ends sleeps and the open connection. */
  readonly #halt = new AbortController();
  #fatal: { error: unknown } | null = null;

  constructor(session: VenueSession, deps: FeedDeps, name: string, signal: AbortSignal) {
    const options = deps.options ?? {};
    this.#session = session;
    this.#exchange = session.exchange;
    this.#signal = signal;
    this.#clock = deps.clock ?? systemClock;
    this.#log = (deps.log ?? nullLogger).child({ actor: name, exchange: session.exchange });
    this.#status = deps.status.feed(session.exchange);
    this.#webSocket = deps.webSocket ?? ((url) => new WebSocket(url));
    this.#fetchText = deps.fetchText ?? fetchText;
    this.#tap = deps.onRawFrame;
    this.#nowUs = deps.nowUs ?? wallClockUs;
    this.#random = deps.random ?? Math.random;
    const timing = resolveTiming(options);
    this.#staleAfterMs = timing.staleAfterMs;
    this.#initialMs = timing.initialMs;
    this.#maxMs = timing.maxMs;
    this.#stableAfterMs = timing.stableAfterMs;
    this.#tickMs = timing.tickMs;
    this.#closeTimeoutMs = timing.closeTimeoutMs;
    this.#restTimeoutMs = timing.restTimeoutMs;
    this.#output = new FeedOutput(session.exchange, this.#status, {
      nats: deps.nats,
      sink: deps.sink,
      deadLetters: deps.deadLetters,
      batchMs: options.publish_batch_ms,
      batchMax: options.publish_batch_max,
      clock: this.#clock,
      log: this.#log,
      onFatal: (error) => this.#fail(error),
    });
  }

  async run(): Promise<void> {
    const stop = () => this.#halt.abort();
    this.#signal.addEventListener("abort", stop, { once: true });
    if (this.#signal.aborted) stop();
    const status = this.#status;
    let attempt = 0;
    try {
      while (!this.#halt.signal.aborted) {
        const end = await this.#connect();
        if (this.#halt.signal.aborted) break;
        if (end.readyMs >= this.#stableAfterMs) attempt = 0;
        const delayMs = backoffDelay(attempt, {
          initialMs: this.#initialMs,
          maxMs: this.#maxMs,
          random: this.#random,
        });
        attempt = Math.min(attempt + 1, 64);
        status.reconnects++;
        status.state = end.refused ? "refused" : "disconnected";
        status.connected_at = null;
        this.#log.info("feed reconnecting", { reason: end.reason, delay_ms: delayMs, attempt });
        try {
          await this.#clock.sleep(delayMs, this.#halt.signal);
        } catch {
          break;
        }
      }
    } finally {
      this.#signal.removeEventListener("abort", stop);
      status.state = "stopped";
      status.connected_at = null;
      try {
        this.#output.close();
      } catch (error) {
        this.#fatal ??= { error };
      }
    }
    if (this.#fatal) throw this.#fatal.error;
    this.#log.debug("feed stopped");
  }

  /** A failure of the runtime itself: ends the loop, and `done` rejects with it. */
  #fail(error: unknown): void {
    if (this.#fatal) return;
    this.#fatal = { error };
    this.#log.error("feed failed", { error });
    this.#halt.abort();
  }

  /** One connection, from opening the socket to its close; never rejects. */
  #connect(): Promise<ConnectionEnd> {
    const session = this.#session;
    const status = this.#status;
    const clock = this.#clock;
    const log = this.#log;
    const output = this.#output;
    status.state = "connecting";
    return new Promise<ConnectionEnd>((resolve) => {
      const connection = new AbortController();
      let ws: WebSocket;
      let opened = false;
      /** When the connection became ready (live), or null while it is not. */
      let readyAt: number | null = null;
      let refused = false;
      let closing = false;
      let ended = false;
      let closeTimer: ReturnType<typeof setTimeout> | undefined;
      let closeReason = "";

      const end = (reason: string) => {
        if (ended) return;
        ended = true;
        clearTimeout(closeTimer);
        this.#halt.signal.removeEventListener("abort", onHalt);
        connection.abort();
        if (opened) {
          try {
            session.onClose();
          } catch (error) {
            log.error("session onClose failed", { error });
          }
          status.venue = safeStatus(session, log);
        }
        resolve({ readyMs: readyAt === null ? 0 : clock.now() - readyAt, refused, reason });
      };

      const requestClose = (code: number, reason: string) => {
        if (closing || ended) return;
        closing = true;
        closeReason = reason;
        try {
          ws.close(code, code === 1000 ? "" : "reconnect");
        } catch (error) {
          log.debug("socket close failed", { error });
        }
        closeTimer = setTimeout(() => {
          log.warn("socket did not report its close in time; abandoned", { reason });
          end(reason);
        }, this.#closeTimeoutMs);
      };

      const onHalt = () => requestClose(1000, this.#fatal ? "runtime failure" : "stopping");

      const becomeReady = () => {
        if (readyAt !== null) return;
        readyAt = clock.now();
        status.state = "live";
      };
      /** Asks a session that tells its readiness: `ready` makes the feed live, `refused` closes. */
      const checkReadiness = () => {
        if (!opened || closing || ended || session.readiness === undefined) return;
        const readiness = this.#readiness();
        if (readiness === "ready") {
          becomeReady();
        } else if (readiness === "refused") {
          refused = true;
          log.warn("the venue refused the connection; closing it", { error: status.last_error });
          requestClose(
            RECONNECT_CLOSE_CODE,
            `refused by the venue${status.last_error ? ` (${status.last_error})` : ""}`,
          );
        }
      };

      /** Set once the venue reported its own error on this connection. */
      let venueReported = false;
      const io: SessionIO = {
        send: (text) => {
          if (!closing && !ended && ws.readyState === WebSocket.OPEN) ws.send(text);
          else log.debug("send dropped: socket not open");
        },
        reconnect: (reason, options) => {
          if (closing || ended) return;
          if (options?.resync) status.resyncs++;
          log.info("session asked for a reconnect", {
            reason,
            resync: options?.resync ?? false,
          });
          requestClose(RECONNECT_CLOSE_CODE, reason);
        },
        emit: (events) => {
          if (ended) {
            log.debug("events emitted after the connection closed were dropped", {
              count: events.length,
            });
            return;
          }
          try {
            output.emit(events);
          } catch (error) {
            this.#fail(error);
          }
        },
        resynced: (reason) => output.resynced(reason),
        error: (message) => {
          venueReported = true;
          output.error(message);
        },
        fetchText: (url) => this.#fetchWithin(url, connection.signal),
        nowUs: () => this.#clock.now() * 1000,
        signal: connection.signal,
        log,
      };

      try {
        ws = this.#webSocket(session.url());
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        status.last_error = `Cannot open WebSocket: ${message}`;
        log.warn("cannot open WebSocket", { error });
        end(status.last_error);
        return;
      }
      ws.binaryType = "arraybuffer";
      this.#halt.signal.addEventListener("abort", onHalt, { once: true });
      if (this.#halt.signal.aborted) onHalt();
      // The watchdog starts once the socket is open; until then, a venue (or a proxy) that
      // accepts the connection but never completes the handshake gets as long as silence would.
      clock.sleep(this.#staleAfterMs, connection.signal).then(() => {
        if (opened || closing || ended) return;
        status.last_error = `No WebSocket handshake within ${this.#staleAfterMs} ms`;
        log.warn("WebSocket handshake timed out; reconnecting", { timeout_ms: this.#staleAfterMs });
        requestClose(RECONNECT_CLOSE_CODE, status.last_error);
      }, () => {});

      ws.onopen = () => {
        if (closing || ended) return;
        opened = true;
        const openedAt = clock.now();
        status.state = "subscribing";
        status.connected_at = openedAt;
        log.info("feed connected", { url: redactQuery(session.url()) });
        void this.#watchdog(openedAt, connection.signal, requestClose);
        void this.#ticker(io, connection.signal, checkReadiness);
        const failed = (error: unknown) => {
          if (ended) return;
          const message = error instanceof Error ? error.message : String(error);
          output.error(`Subscribing failed: ${message}`);
          requestClose(RECONNECT_CLOSE_CODE, "subscribe failed");
        };
        try {
          const result = session.onOpen(io);
          if (result instanceof Promise) result.then(checkReadiness, failed);
        } catch (error) {
          failed(error);
        }
        checkReadiness();
        status.venue = safeStatus(session, log);
      };

      ws.onmessage = (event: MessageEvent) => {
        if (closing || ended) return;
        try {
          const data = event.data;
          const frame = typeof data === "string"
            ? data
            : decoder.decode(data instanceof ArrayBuffer ? data : new Uint8Array());
          const receivedUs = this.#nowUs();
          if (session.readiness === undefined) becomeReady();
          this.#tap?.(this.#exchange, frame, receivedUs);
          output.frame(session, frame, receivedUs, io);
          checkReadiness();
        } catch (error) {
          this.#fail(error);
        }
      };

      let socketError = "";
      ws.onerror = (event: Event) => {
        socketError = event instanceof ErrorEvent && event.message
          ? event.message
          : "WebSocket error";
        // A venue that sends its error and then cuts the connection keeps its own message.
        if (!closing && !venueReported) status.last_error = socketError;
        log.debug("socket error", { message: socketError });
      };

      ws.onclose = (event: CloseEvent) => {
        const reason = closing
          ? closeReason
          : !opened
          ? `connection failed${socketError ? `: ${socketError}` : ""}`
          : `closed by the venue or the network (code ${event.code}${
            event.reason ? `: ${event.reason}` : ""
          })`;
        if (!closing && opened) log.warn("feed connection lost", { code: event.code });
        end(reason);
      };
    });
  }

  /**
   * Reconnects once no frame has arrived for `stale_after_ms` — not counting
   * the time the session says its venue is quiet (`session.quiet`): when a
   * check finds the quiet over, silence counts again from that check (at most
   * `stale_after_ms` after the session started), not from before the quiet.
   */
  async #watchdog(
    openedAt: number,
    signal: AbortSignal,
    requestClose: (code: number, reason: string) => void,
  ): Promise<void> {
    let quietEndedAt = -Infinity;
    let wasQuiet = false;
    try {
      for (;;) {
        const now = this.#clock.now();
        const quiet = this.#quietReason(now);
        this.#status.quiet = quiet;
        if (quiet !== null) {
          wasQuiet = true;
          await this.#clock.sleep(this.#staleAfterMs, signal);
          continue;
        }
        if (wasQuiet) {
          // The session started since the last check: its silence starts now.
          wasQuiet = false;
          quietEndedAt = now;
        }
        const last = Math.max(openedAt, this.#status.last_message_at ?? 0, quietEndedAt);
        const silentMs = now - last;
        if (silentMs >= this.#staleAfterMs) {
          this.#log.warn("feed is stale; reconnecting", { silent_ms: silentMs });
          requestClose(RECONNECT_CLOSE_CODE, `no frame for ${silentMs} ms`);
          return;
        }
        await this.#clock.sleep(this.#staleAfterMs - silentMs, signal);
      }
    } catch {
      // The connection ended.
    }
  }

  /** `session.readiness()`, or `pending` when it throws. */
  #readiness(): SessionReadiness {
    try {
      return this.#session.readiness?.() ?? "pending";
    } catch (error) {
      this.#log.error("session readiness failed", { error });
      return "pending";
    }
  }

  /**
   * `fetchText(url)` bounded by `rest_timeout_ms` as well as by the
   * connection: past the timeout the request is aborted and the promise
   * rejects with a `TimeoutError` (even from a `fetchText` that ignores its
   * signal).
   */
  #fetchWithin(url: string, connection: AbortSignal): Promise<string> {
    const timeoutMs = this.#restTimeoutMs;
    const request = new AbortController();
    const settled = new AbortController();
    return new Promise<string>((resolve, reject) => {
      this.#clock.sleep(timeoutMs, AbortSignal.any([connection, settled.signal])).then(() => {
        const error = new DOMException(
          `GET ${url} got no answer within ${timeoutMs} ms`,
          "TimeoutError",
        );
        request.abort(error);
        reject(error);
      }, () => {});
      let answer: Promise<string>;
      try {
        answer = this.#fetchText(url, AbortSignal.any([connection, request.signal]));
      } catch (error) {
        answer = Promise.reject(error);
      }
      answer.then(resolve, reject).finally(() => settled.abort());
    });
  }

  /** `session.quiet(nowMs)`, or null when it has none or throws. */
  #quietReason(nowMs: number): string | null {
    try {
      return this.#session.quiet?.(nowMs) ?? null;
    } catch (error) {
      this.#log.error("session quiet failed", { error });
      return null;
    }
  }

  /**
   * Calls `session.onTick` every `tick_ms`, then `checkReadiness`, and
   * refreshes the venue figures.
   */
  async #ticker(io: SessionIO, signal: AbortSignal, checkReadiness: () => void): Promise<void> {
    try {
      for (;;) {
        await this.#clock.sleep(this.#tickMs, signal);
        try {
          this.#session.onTick?.(io, this.#clock.now());
        } catch (error) {
          this.#log.error("session onTick failed", { error });
        }
        checkReadiness();
        this.#status.venue = safeStatus(this.#session, this.#log);
      }
    } catch {
      // The connection ended.
    }
  }
}

/** `session.status()`, or `{}` when it throws. */
export function safeStatus(session: VenueSession, log: Logger): Record<string, unknown> {
  try {
    return session.status();
  } catch (error) {
    log.error("session status failed", { error });
    return {};
  }
}

function resolveTiming(options: FeedOptions) {
  const initialMs = positive(
    options.reconnect_initial_ms,
    DEFAULT_RECONNECT_INITIAL_MS,
    "reconnect_initial_ms",
  );
  return {
    staleAfterMs: positive(options.stale_after_ms, DEFAULT_STALE_AFTER_MS, "stale_after_ms"),
    initialMs,
    maxMs: Math.max(
      initialMs,
      positive(options.reconnect_max_ms, DEFAULT_RECONNECT_MAX_MS, "reconnect_max_ms"),
    ),
    stableAfterMs: positive(options.stable_after_ms, DEFAULT_STABLE_AFTER_MS, "stable_after_ms"),
    tickMs: positive(options.tick_ms, DEFAULT_TICK_MS, "tick_ms"),
    closeTimeoutMs: positive(
      options.close_timeout_ms,
      DEFAULT_CLOSE_TIMEOUT_MS,
      "close_timeout_ms",
    ),
    restTimeoutMs: positive(options.rest_timeout_ms, DEFAULT_REST_TIMEOUT_MS, "rest_timeout_ms"),
  };
}

function positive(value: number | undefined, fallback: number, key: string): number {
  const result = value ?? fallback;
  if (!(result > 0) || !Number.isFinite(result)) {
    throw new RangeError(`Feed option ${key} must be a positive number, got ${result}`);
  }
  return result;
}

/** The URL without its query (which may hold tokens), for logs. */
function redactQuery(url: string): string {
  const index = url.indexOf("?");
  return index < 0 ? url : `${url.slice(0, index)}?…`;
}
