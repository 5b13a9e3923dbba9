/**
 * The Alpaca market data v2 stock-stream session: what the generic feed
 * runtime (`actors/feed.ts`) runs against
 * `wss://stream.data.alpaca.markets/v2/<feed>` (`iex` or `sip`).
 *
 * The handshake, one step per server message:
 *
 * 1. The server greets with `[{"T":"success","msg":"connected"}]`; the
 *    session answers with the auth message ({@linkcode alpacaAuthMessage}).
 *    The message holds the secret: it is sent, never logged, and the status
 *    never shows the key or the secret.
 * 2. `[{"T":"success","msg":"authenticated"}]`: the session sends one
 *    subscribe message ({@linkcode alpacaSubscribeMessage}) for the
 *    configured channels (`trades`, `quotes`, `bars`) and symbols.
 * 3. `[{"T":"subscription",…}]` acknowledges; from then on data frames
 *    (arrays of `t`/`q`/`b`… messages) become events.
 *
 * {@linkcode AlpacaSession.readiness} tells the runtime where the connection
 * stands: `ready` only once authenticated and subscribed — the feed is `live`
 * then, not on the greeting, which comes before any check of the key.
 *
 * Errors (`[{"T":"error","code":…,"msg":…}]`) go to `io.error` as
 * `Alpaca error <code>: <msg>` (health's `last_error`), and the code is kept
 * in the status. Those that no retry on the same terms can cure — 402 auth
 * failed, 406 connection limit exceeded (another client holds the account's
 * one connection), 408 v2 not enabled, 409 insufficient subscription (`sip`
 * without a subscription) — put the session in the `refused` state: it sends
 * nothing more and its readiness says `refused`. The runtime then closes the
 * connection itself, shows the feed `refused` with this message in
 * `last_error` (health degraded), and reconnects on its backoff
 * (`reconnect_initial_ms` doubling up to `reconnect_max_ms`), which starts
 * over only after a connection that got subscribed: the session never asks
 * for a reconnect, and a wrong key or a missing subscription cannot make a
 * tight loop. Closing does not wait for Alpaca, which may leave a refused
 * connection open ("Any attempt to access a data feed not available for your
 * subscription will result in an error during authentication", no word of
 * closing it): open and silent outside market hours, it would outlast the
 * staleness watchdog, which waits while the market is closed. The other codes
 * (400, 401, 403, 404, 405, 407, 500) are reported and nothing else is done:
 * the server decides whether the connection survives them (Alpaca closes one
 * left unauthenticated, after 404 auth timeout).
 *
 * Empty `key_id` or `secret_key`: there is nothing to connect with, so
 * {@linkcode AlpacaSession.url} throws {@linkcode AlpacaCredentialsError}
 * (`Alpaca credentials are not configured`). The runtime reports it as the
 * feed's `last_error` and retries on its backoff without ever opening a
 * socket: no connection reaches Alpaca at all. (Should a runtime open one
 * anyway, `onOpen` reports the same message with `io.error` and nothing is
 * sent.)
 *
 * Trading statuses, LULD bands, trade corrections and cancels (the
 * parser's notices) are not market events: they are counted in the status
 * and corrections and cancels are logged at info.
 *
 * Outside the US equity extended session (04:00–20:00 ET on trading days,
 * 17:00 after an early close) the stream sends nothing: the session is
 * `quiet` then, so the runtime's staleness watchdog waits instead of
 * reconnecting every `stale_after_ms` through nights, weekends and
 * holidays.
 *
 * @example
 * ```ts
 * import { alpacaSession } from "./session.ts";
 *
 * const session = alpacaSession({
 *   ws_url: "wss://stream.data.alpaca.markets/v2",
 *   feed: "iex",
 *   key_id: "AK…",
 *   secret_key: "…",
 *   symbols: ["AAPL", "MSFT"],
 *   channels: ["trades", "quotes", "bars"],
 * });
 * session.url(); // "wss://stream.data.alpaca.markets/v2/iex"
 * ```
 *
 * @module
 */

import type { Config } from "../../config/mod.ts";
import type { MarketEvent } from "../../market/events.ts";
import type { SessionIO, SessionReadiness, VenueSession } from "../session.ts";
import { usEquityDataPause } from "../../trading/market_hours.ts";
import {
  alpacaAuthMessage,
  type AlpacaChannels,
  type AlpacaControl,
  type AlpacaNotice,
  alpacaSubscribeMessage,
  parseAlpacaFrame,
} from "./parse.ts";

/** A market-data channel as configured: `trades`, `quotes` or `bars`. */
export type AlpacaFeedChannel = Config["exchanges"]["alpaca"]["channels"][number];

/** The keys of the `exchanges.alpaca` config section a session uses (read-only lists welcome). */
export interface AlpacaSessionConfig {
  /** The market-data stream base, e.g. `wss://stream.data.alpaca.markets/v2`. */
  ws_url: string;
  /** `iex` or `sip`, appended to `ws_url`. */
  feed: Config["exchanges"]["alpaca"]["feed"];
  /** API key id; empty when not configured. Sent in the auth message only. */
  key_id: string;
  /** API secret; empty when not configured. Sent in the auth message only, never logged. */
  secret_key: string;
  /** Tickers to follow (`AAPL`). */
  symbols: readonly string[];
  /** What to follow: `trades`, `quotes`, `bars` (minute bars). */
  channels: readonly AlpacaFeedChannel[];
}

/**
 * Error codes after which the session stops talking on the connection and
 * leaves the pacing of the next attempt to the runtime's backoff: 402 auth
 * failed, 406 connection limit exceeded, 408 v2 not enabled, 409 insufficient
 * subscription.
 */
export const ALPACA_REFUSAL_CODES: ReadonlySet<number> = new Set([402, 406, 408, 409]);

/** The message reported when the key id or the secret is empty. */
export const ALPACA_MISSING_CREDENTIALS = "Alpaca credentials are not configured";

/**
 * Thrown by {@linkcode AlpacaSession.url} when `key_id` or `secret_key` is
 * empty: the feed cannot connect until they are configured.
 */
export class AlpacaCredentialsError extends Error {
  /** Makes the error; the message is {@linkcode ALPACA_MISSING_CREDENTIALS}. */
  constructor() {
    super(ALPACA_MISSING_CREDENTIALS);
    this.name = "AlpacaCredentialsError";
  }
}

/**
 * Where a connection is in the handshake: `connecting` (waiting for the
 * greeting), `authenticating`, `subscribing`, `subscribed`, or `refused`
 * (missing credentials or an error in {@linkcode ALPACA_REFUSAL_CODES}).
 */
export type AlpacaSessionState =
  | "connecting"
  | "authenticating"
  | "subscribing"
  | "subscribed"
  | "refused";

/** The figures of {@linkcode AlpacaSession.status}. */
export type AlpacaSessionStatus = {
  /** The handshake state of the current connection. */
  state: AlpacaSessionState;
  /** Whether the server accepted the credentials on this connection. */
  authenticated: boolean;
  /** Whether a key id and a secret are configured (neither is ever shown). */
  credentials_configured: boolean;
  /** The feed: `iex` or `sip`. */
  feed: string;
  /** Symbols per channel as the server last acknowledged them on this connection. */
  subscribed: { trades: string[]; quotes: string[]; bars: string[] };
  /** Errors the server sent since the session started. */
  errors: number;
  /** The code of the last of them, or null. */
  last_error_code: number | null;
  /** Its text, or null. */
  last_error: string | null;
  /** Trading statuses, LULD bands, corrections, cancels and imbalances received, by type. */
  notices: Record<AlpacaNotice["type"], number>;
};

const NO_SUBSCRIPTION = Object.freeze({ trades: [], quotes: [], bars: [] });

/**
 * The Alpaca session. Use {@linkcode alpacaSession} to make one; the class is
 * exported for its typed {@linkcode AlpacaSession.status}.
 */
export class AlpacaSession implements VenueSession {
  /** The venue. */
  readonly exchange = "alpaca" as const;
  readonly #url: string;
  readonly #feed: string;
  readonly #key: string;
  readonly #secret: string;
  readonly #subscribe: string;
  #state: AlpacaSessionState = "connecting";
  #authenticated = false;
  #subscribed: AlpacaSessionStatus["subscribed"] = { ...NO_SUBSCRIPTION };
  #errors = 0;
  #lastErrorCode: number | null = null;
  #lastError: string | null = null;
  readonly #notices: Record<AlpacaNotice["type"], number> = {
    trading_status: 0,
    luld: 0,
    correction: 0,
    cancel_error: 0,
    imbalance: 0,
  };

  /**
   * Makes a session for `config`. Throws a `TypeError` for no channel, no
   * symbol or a symbol Alpaca cannot take. Empty credentials are not an
   * error here: they are reported to health once connected.
   */
  constructor(config: AlpacaSessionConfig) {
    const { ws_url, feed, key_id, secret_key, symbols, channels } = config;
    const subscription: AlpacaChannels = {};
    for (const channel of new Set(channels)) {
      if (channel !== "trades" && channel !== "quotes" && channel !== "bars") {
        throw new TypeError(`Unknown Alpaca channel ${JSON.stringify(channel)}`);
      }
      subscription[channel] = [...new Set(symbols)];
    }
    this.#subscribe = alpacaSubscribeMessage(subscription);
    this.#url = `${ws_url.replace(/\/+$/, "")}/${feed}`;
    this.#feed = feed;
    this.#key = key_id;
    this.#secret = secret_key;
  }

  /**
   * `<ws_url>/<feed>`, e.g. `wss://stream.data.alpaca.markets/v2/iex`.
   * Throws {@linkcode AlpacaCredentialsError} when the key id or the secret
   * is empty.
   */
  url(): string {
    if (!this.#credentialsConfigured()) throw new AlpacaCredentialsError();
    return this.#url;
  }

  /** Starts a handshake; reports missing credentials instead of trying them. */
  onOpen(io: SessionIO): void {
    this.#resetConnection();
    if (!this.#credentialsConfigured()) {
      this.#state = "refused";
      io.error(ALPACA_MISSING_CREDENTIALS);
    }
  }

  /**
   * Parses a frame, answers handshake messages and returns the events.
   * Throws `MalformedFrameError` for a frame that is not Alpaca's protocol.
   */
  onFrame(frame: string, receivedUs: number, io: SessionIO): MarketEvent[] {
    const parsed = parseAlpacaFrame(frame, receivedUs);
    if (parsed.control !== null) this.#onControl(parsed.control, io);
    const notices = parsed.notices;
    for (let i = 0; i < notices.length; i++) this.#onNotice(notices[i]!, io);
    return parsed.events;
  }

  /** Forgets the connection's handshake; the error figures stay. */
  onClose(): void {
    this.#resetConnection();
  }

  /** Why the stream is silent at `nowMs` (no US equity session, regular or extended), or null. */
  quiet(nowMs: number): string | null {
    const pause = usEquityDataPause(nowMs);
    return pause === null ? null : `US equity market closed: ${pause}`;
  }

  /**
   * `ready` once the connection is authenticated and subscribed, `refused`
   * after an error of {@linkcode ALPACA_REFUSAL_CODES} (or without
   * credentials), else `pending`.
   */
  readiness(): SessionReadiness {
    if (this.#state === "refused") return "refused";
    return this.#state === "subscribed" && this.#authenticated ? "ready" : "pending";
  }

  /** Handshake state, acknowledged subscription, last error code and text, notices. */
  status(): AlpacaSessionStatus {
    return {
      state: this.#state,
      authenticated: this.#authenticated,
      credentials_configured: this.#credentialsConfigured(),
      feed: this.#feed,
      subscribed: structuredClone(this.#subscribed),
      errors: this.#errors,
      last_error_code: this.#lastErrorCode,
      last_error: this.#lastError,
      notices: { ...this.#notices },
    };
  }

  #credentialsConfigured(): boolean {
    return this.#key !== "" && this.#secret !== "";
  }

  #resetConnection(): void {
    this.#state = "connecting";
    this.#authenticated = false;
    this.#subscribed = { ...NO_SUBSCRIPTION };
  }

  #onControl(control: AlpacaControl, io: SessionIO): void {
    switch (control.type) {
      case "connected":
        if (this.#state !== "connecting") return;
        this.#state = "authenticating";
        io.send(alpacaAuthMessage(this.#key, this.#secret));
        return;
      case "authenticated":
        this.#authenticated = true;
        if (this.#state === "refused" || this.#state === "subscribed") return;
        this.#state = "subscribing";
        io.send(this.#subscribe);
        return;
      case "subscription":
        this.#subscribed = {
          trades: control.trades,
          quotes: control.quotes,
          bars: control.bars,
        };
        if (this.#state !== "refused") this.#state = "subscribed";
        return;
      case "error":
        this.#errors++;
        this.#lastErrorCode = control.code;
        this.#lastError = control.msg;
        if (ALPACA_REFUSAL_CODES.has(control.code)) this.#state = "refused";
        io.error(`Alpaca error ${control.code}: ${control.msg}`);
        return;
    }
  }

  #onNotice(notice: AlpacaNotice, io: SessionIO): void {
    this.#notices[notice.type]++;
    if (notice.type === "correction") {
      io.log.info("Alpaca trade correction", {
        symbol: notice.symbol,
        original: notice.original,
        corrected: notice.corrected,
      });
    } else if (notice.type === "cancel_error") {
      io.log.info("Alpaca trade cancel", {
        symbol: notice.symbol,
        trade_id: notice.tradeId,
        action: notice.action,
      });
    }
  }
}

/**
 * Makes the Alpaca stock-stream session for the `exchanges.alpaca` config
 * section (`ws_url`, `feed`, `key_id`, `secret_key`, `symbols`, `channels`).
 *
 * @example
 * ```ts
 * import { alpacaSession } from "./session.ts";
 *
 * const session = alpacaSession({
 *   ws_url: "wss://stream.data.alpaca.markets/v2",
 *   feed: "sip",
 *   key_id: "",
 *   secret_key: "",
 *   symbols: ["SPY"],
 *   channels: ["trades"],
 * });
 * session.status().credentials_configured; // false
 * session.url(); // throws AlpacaCredentialsError
 * ```
 */
export function alpacaSession(config: AlpacaSessionConfig): AlpacaSession {
  return new AlpacaSession(config);
}
