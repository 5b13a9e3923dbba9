/**
 * The contract between the generic feed runtime (`actors/feed.ts`: WebSocket,
 * reconnects, watchdog, publishing, dead-lettering) and one venue's protocol
 * logic (a {@linkcode VenueSession}: subscribe messages, frame parsing, book
 * synchronisation, sequence checks).
 *
 * A session is created once per feed actor start and lives across reconnects;
 * `onOpen`/`onClose` bracket each connection. Its decision logic stays pure:
 * it returns events, and asks for I/O only through {@linkcode SessionIO}.
 *
 * @module
 */

import type { Exchange, MarketEvent } from "../market/events.ts";
import type { Logger } from "../lib/log.ts";

/** What a session may ask of the connection it runs on. */
export interface SessionIO {
  /** Sends a text frame on the open socket (subscribe, auth, ping…). */
  send(text: string): void;
  /**
   * Drops the connection and reconnects (with backoff); `onOpen` then
   * resubscribes. Counted as a resync when `resync` is true.
   */
  reconnect(reason: string, options?: { resync?: boolean }): void;
  /** Publishes events produced outside `onFrame` (e.g. once a REST snapshot arrives). */
  emit(events: MarketEvent[]): void;
  /** Counts an order-book resync that did not need a reconnect (e.g. a fresh REST snapshot). */
  resynced(reason: string): void;
  /** Reports a venue error (auth failure, connection limit…) to health. */
  error(message: string): void;
  /**
   * GETs `url` and resolves with the body; rejects on a network error, and on
   * a non-2xx status with an error whose `status` is that status and whose
   * `retryAfterMs` is the response's `Retry-After` in ms, or null (the live
   * feed's `HttpStatusError` of `actors/feed.ts`). The live feed also rejects
   * (a `DOMException` named `TimeoutError`) when the whole answer has not
   * come within its REST timeout (`rest_timeout_ms`), so a request the venue
   * never answers fails like any other instead of waiting for the connection
   * to end.
   */
  fetchText(url: string): Promise<string>;
  /**
   * When data is received now, µs since the epoch, for stamping events made
   * outside `onFrame` (a book built on a REST answer): the clock's time on a
   * live connection; in a replay, the recorded time of the venue's latest
   * line — with `retime` too: the replay moves the events when the session
   * hands them over.
   */
  nowUs(): number;
  /** Aborts when the connection closes or the feed stops. */
  signal: AbortSignal;
  /** The feed's logger. */
  log: Logger;
}

/**
 * Where the current connection stands, as {@linkcode VenueSession.readiness}
 * says: `pending` (the handshake is under way: authenticating, subscribing),
 * `ready` (the venue accepted it and sends data), or `refused` (the venue
 * turned it down for a reason no retry on this connection can cure, e.g.
 * Alpaca's 402 auth failed or 409 insufficient subscription).
 */
export type SessionReadiness = "pending" | "ready" | "refused";

/** One venue's protocol logic. */
export interface VenueSession {
  /** The venue. */
  readonly exchange: Exchange;
  /** The WebSocket URL to connect to (e.g. Binance's combined-stream URL for the symbols). */
  url(): string;
  /** The socket opened: send auth and subscriptions. */
  onOpen(io: SessionIO): void | Promise<void>;
  /**
   * A text frame arrived at `receivedUs` (µs since epoch). Returns the events
   * to publish. Throws `MalformedFrameError` for a frame it cannot use (the
   * runtime counts and dead-letters it and carries on).
   */
  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[];
  /** The connection closed: reset per-connection state (sequence counters, books). */
  onClose(): void;
  /** Called about once a second while connected, for application-level pings. */
  onTick?(io: SessionIO, nowMs: number): void;
  /**
   * Why the venue is expected to be silent at `nowMs` (its market is closed),
   * or null. While there is a reason, the runtime's staleness watchdog does not
   * reconnect, and silence counts from when the reason ends.
   */
  quiet?(nowMs: number): string | null;
  /**
   * Whether the current connection is ready. Optional: a session without it
   * is ready on the connection's first frame. The runtime asks after `onOpen`,
   * after every frame and on every tick; the feed is `live` only once this
   * says `ready`, and its reconnect backoff starts over only after a
   * connection that stayed ready `stable_after_ms`. On `refused` the runtime
   * closes the connection itself (the session reports why with `io.error`
   * first), shows the feed as `refused` and reconnects on its backoff, which
   * keeps growing.
   */
  readiness?(): SessionReadiness;
  /** Venue-specific figures for health (books in sync, subscriptions acknowledged…). */
  status(): Record<string, unknown>;
}
