/**
 * The engine's NATS connections (the main thread's, and each actor thread's):
 * connect (waiting while NATS is down, with a clear log line per attempt),
 * reconnect forever with jittered exponential backoff, subject helpers, and
 * the JetStream streams the engine needs.
 *
 * @module
 */

import { connect } from "@nats-io/transport-node";
// Not exported by the package's entry point: patched below (see `keepSocketErrorsHandled`).
import { NodeTransport } from "@nats-io/transport-node/lib/node_transport.js";
import type { ConnectionOptions, NatsConnection, Status } from "@nats-io/nats-core";
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  jetstreamManager,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import { redactUrl } from "../lib/redact.ts";
import { assertPositiveInteger } from "../lib/assert.ts";
import { Wakeup } from "../lib/wakeup.ts";

/** NATS settings: the `nats` section of the configuration. */
export interface NatsOptions {
  /** Server URL, or several separated by commas. */
  url: string;
  /** Connection name shown by the server. */
  name: string;
  /** User for user/password auth; empty for none. */
  user: string;
  /** Password for user/password auth. */
  password: string;
  /** Token auth; empty for none. */
  token: string;
  /** Milliseconds one connection attempt may take. */
  connect_timeout_ms: number;
  /** First delay between reconnect attempts. */
  reconnect_wait_ms: number;
  /** Largest delay between reconnect attempts. */
  reconnect_max_wait_ms: number;
  /** Random jitter added to each delay, up to this many milliseconds. */
  reconnect_jitter_ms: number;
}

/** Options for {@linkcode connectNats}. */
export interface ConnectNatsOptions {
  /** Gives up waiting for the first connection when aborted. */
  signal?: AbortSignal | undefined;
  /** @default {nullLogger} */
  log?: Logger;
  /** @default {systemClock} */
  clock?: Clock;
  /** For jitter. @default {Math.random} */
  random?: () => number;
}

/** The delay after reconnect attempt `attempt` (0-based) before the next: exponential, capped, jittered. */
export function reconnectDelay(
  attempt: number,
  options: Pick<NatsOptions, "reconnect_wait_ms" | "reconnect_max_wait_ms" | "reconnect_jitter_ms">,
  random: () => number = Math.random,
): number {
  const base = Math.min(
    options.reconnect_max_wait_ms,
    options.reconnect_wait_ms * 2 ** Math.min(attempt, 30),
  );
  return Math.round(base + random() * options.reconnect_jitter_ms);
}

/** Credentials found in server URLs: `nats://user:pass@host` or `nats://token@host`. */
export interface UrlCredentials {
  /** The server URLs without their userinfo, in order. */
  servers: string[];
  /** User and password (percent-decoded) of the first URL that has them. */
  user?: { name: string; password: string };
  /** Token (percent-decoded) of the first URL that has one. */
  token?: string;
}

/**
 * Splits `nats.url` (one URL or several, comma-separated) into server URLs
 * without userinfo and the credentials they held: nats.js ignores a URL's
 * userinfo, so `nats://tw:pass@host` would connect without authenticating.
 * A user and password (`user:pass@`) or a token (`token@`) are
 * percent-decoded. A part that does not parse as a URL is kept as it is.
 *
 * @example
 * ```ts
 * urlCredentials("nats://tw:p%40ss@n1:4222,nats://n2:4222");
 * // { servers: ["nats://n1:4222", "nats://n2:4222"], user: { name: "tw", password: "p@ss" } }
 * ```
 */
export function urlCredentials(url: string): UrlCredentials {
  const result: UrlCredentials = { servers: [] };
  for (const part of url.split(",").map((s) => s.trim()).filter((s) => s.length > 0)) {
    let parsed: URL;
    try {
      parsed = new URL(part);
    } catch {
      result.servers.push(part);
      continue;
    }
    // The URL parser splits the userinfo as here (the authority's last `@`, then the first `:`),
    // but gives `tw:@host` and `tw@host` alike: whether there is a `:` is read from the text.
    const authority = part.slice(part.indexOf("//") + 2).split(/[/?#]/)[0] ?? "";
    const at = authority.lastIndexOf("@");
    if (at !== -1 && authority.slice(0, at).includes(":")) {
      result.user ??= { name: decode(parsed.username), password: decode(parsed.password) };
    } else if (at > 0) result.token ??= decode(parsed.username);
    parsed.username = "";
    parsed.password = "";
    result.servers.push(parsed.href);
  }
  return result;
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a lone `%`: taken as written
  }
}

/** Options of {@linkcode reconnectSchedule}. */
export interface ReconnectScheduleOptions {
  /** For jitter. @default {Math.random} */
  random?: () => number;
  /** Wall time in ms, the clock nats.js times its dials by. @default {Date.now} */
  now?: () => number;
}

/** The reconnect backoff of one connection ({@linkcode reconnectSchedule}). */
export interface ReconnectSchedule {
  /** nats.js's `reconnectDelayHandler`: 0 when a dial is due, else the delay being waited out. */
  delay(): number;
  /** The connection is up: after its next drop the delays start over at `reconnect_wait_ms`. */
  connected(): void;
}

/**
 * The reconnect backoff of a connection, as nats.js's `reconnectDelayHandler`:
 * after a drop the first dial comes at once (at least `reconnect_wait_ms`
 * after the connection came up), then the dials are
 * `reconnectDelay(0)`, `reconnectDelay(1)`, … apart — the delay doubles per
 * dial, up to `reconnect_max_wait_ms`. nats.js asks for the delay on every
 * pass of its dial loop, also on the passes that only wait out the delay, and
 * dials once the delay has passed since its last dial: so the delay advances
 * only when a dial is due, and a due dial is answered with 0 (dial now).
 *
 * @example
 * ```ts
 * const schedule = reconnectSchedule(config.nats);
 * const options = { reconnectDelayHandler: () => schedule.delay() };
 * ```
 */
export function reconnectSchedule(
  options: Pick<NatsOptions, "reconnect_wait_ms" | "reconnect_max_wait_ms" | "reconnect_jitter_ms">,
  { random = Math.random, now = Date.now }: ReconnectScheduleOptions = {},
): ReconnectSchedule {
  let attempt = 0;
  // When the last dial was due, and the delay after it.
  let dialedAt = Number.NEGATIVE_INFINITY;
  let delay = 0;
  return {
    delay() {
      const at = now();
      if (at < dialedAt + delay) return delay;
      dialedAt = at;
      delay = reconnectDelay(attempt++, options, random);
      return 0;
    },
    connected() {
      attempt = 0;
      dialedAt = now();
      delay = reconnectDelay(0, options, random);
    },
  };
}

/**
 * The nats.js connection options for `options`. Credentials in the URLs
 * ({@linkcode urlCredentials}) are used unless `user` or `token` is set,
 * which then beat them; a user and password beat a token. Call
 * `onConnected` whenever the connection comes up (reconnects included): the
 * reconnect backoff ({@linkcode reconnectSchedule}) starts over.
 */
export function natsConnectionOptions(
  options: NatsOptions,
  random: () => number = Math.random,
): ConnectionOptions & { onConnected: () => void } {
  const schedule = reconnectSchedule(options, { random });
  const fromUrl = urlCredentials(options.url);
  const set = options.user !== "" || options.token !== "";
  const user = options.user
    ? { name: options.user, password: options.password }
    : set
    ? undefined
    : fromUrl.user;
  const token = options.token || (set || user ? undefined : fromUrl.token);
  return {
    servers: fromUrl.servers,
    name: options.name,
    timeout: options.connect_timeout_ms,
    reconnect: true,
    maxReconnectAttempts: -1,
    // A connection that went silent (a frozen server, a partition) is noticed within
    // NATS_PING_INTERVAL_MS × NATS_MAX_PINGS_OUT, not nats.js's 2 × 2 minutes.
    pingInterval: NATS_PING_INTERVAL_MS,
    maxPingOut: NATS_MAX_PINGS_OUT,
    // Credentials refused on a reconnect (changed on the server) are tried again like an outage,
    // not given up after two refusals, which would leave the engine with a closed connection.
    ignoreAuthErrorAbort: true,
    reconnectDelayHandler: () => schedule.delay(),
    onConnected: () => schedule.connected(),
    ...(user ? { user: user.name, pass: user.password } : {}),
    ...(token ? { token } : {}),
  };
}

/**
 * NATS refused the connection's credentials (`Authorization Violation`, or
 * they expired): waiting will not help, so {@linkcode connectNats} gives up.
 * The message names no secret.
 */
export class NatsAuthError extends Error {
  /** Creates the error for the redacted server `url`; `cause` is nats.js's error. */
  constructor(url: string, options?: ErrorOptions) {
    const reason = options?.cause instanceof Error ? options.cause.message : "refused";
    super(
      `NATS at ${url} refused the credentials (${reason}): check nats.user and nats.password, ` +
        "nats.token, or the user and password in nats.url",
      options,
    );
    this.name = "NatsAuthError";
  }
}

/** Whether `error` is nats.js's refusal of the credentials (not an authentication timeout). */
function isAuthRefusal(error: unknown): boolean {
  return error instanceof Error &&
    (error.name === "AuthorizationError" || error.name === "UserAuthenticationExpiredError") &&
    !/timeout/i.test(error.message);
}

/**
 * nats.js's Node transport strips every listener from a socket it closes or
 * discards (after a server's `-ERR 'Authorization Violation'`, on each
 * reconnect, when a connection attempt fails) and destroys it; Deno's
 * `node:net` may still emit the read error (`ECONNRESET`) the peer's reset
 * gives that socket, and an `error` event without a listener is an uncaught
 * exception that ends the process (`Uncaught Error: read ECONNRESET`). A
 * socket the transport has let go of keeps a listener that ignores them.
 */
function keepSocketErrorsHandled(): void {
  type Socket = {
    on(event: "error", listener: () => void): unknown;
    listeners(event: "error"): unknown[];
  };
  type Transport = {
    socket?: Socket;
    connect(...args: unknown[]): Promise<void>;
    discard(): void;
    _closed(err?: Error, internal?: boolean): Promise<void>;
  };
  const proto = NodeTransport.prototype as unknown as Transport;
  const ignore = () => {};
  const guard = (socket: Socket | undefined) => {
    if (socket && !socket.listeners("error").includes(ignore)) socket.on("error", ignore);
  };
  const discard = proto.discard;
  proto.discard = function (this: Transport) {
    const socket = this.socket;
    discard.call(this);
    guard(socket);
  };
  const closed = proto._closed;
  proto._closed = function (this: Transport, err?: Error, internal?: boolean) {
    const socket = this.socket;
    return closed.call(this, err, internal).finally(() => guard(socket));
  };
  // A connection attempt that fails after the server's INFO (its listeners gone) destroys it too.
  const connect = proto.connect;
  proto.connect = function (this: Transport, ...args: unknown[]) {
    return connect.apply(this, args).catch((error: unknown) => {
      guard(this.socket);
      throw error;
    });
  };
}
keepSocketErrorsHandled();

/**
 * Connects to NATS. While the server is unreachable it logs
 * "NATS unreachable, retrying" with the attempt and delay and tries again with
 * jittered backoff, until it connects or `signal` aborts. When the server
 * refuses the credentials it logs "NATS refused the credentials" and throws a
 * {@linkcode NatsAuthError} instead. Once connected the client reconnects
 * forever, also while the server refuses the credentials (they were changed
 * on the server: "NATS refused the credentials; reconnecting"); disconnects,
 * reconnects and errors are logged.
 *
 * @example
 * ```ts
 * const nc = await connectNats(config.nats, { log });
 * ```
 */
export async function connectNats(
  options: NatsOptions,
  { signal, log = nullLogger, clock = systemClock, random = Math.random }: ConnectNatsOptions = {},
): Promise<NatsConnection> {
  const { onConnected, ...connectionOptions } = natsConnectionOptions(options, random);
  const url = redactUrl(options.url);
  for (let attempt = 0;; attempt++) {
    signal?.throwIfAborted();
    try {
      const nc = await connect(connectionOptions);
      if (signal?.aborted) {
        // Stopped while connecting: the connection is not handed out, so it is closed here.
        await nc.close().catch(() => {});
        signal.throwIfAborted();
      }
      log.info("NATS connected", { url, server: nc.info?.server_name ?? null });
      // Failed first dials above advanced the backoff: the first outage starts it over.
      onConnected();
      watchStatus(nc, log, onConnected);
      return nc;
    } catch (error) {
      if (isAuthRefusal(error)) {
        const refused = new NatsAuthError(url, { cause: error });
        log.error("NATS refused the credentials", {
          url,
          error: error instanceof Error ? error.message : String(error),
        });
        throw refused;
      }
      const delay = reconnectDelay(attempt, options, random);
      log.warn("NATS unreachable, retrying", {
        url,
        attempt: attempt + 1,
        retry_in_ms: delay,
        error: error instanceof Error ? error.message : String(error),
      });
      await clock.sleep(delay, signal);
    }
  }
}

async function watchStatus(nc: NatsConnection, log: Logger, onConnected: () => void) {
  for await (const status of nc.status()) {
    switch (status.type) {
      case "disconnect":
        log.warn("NATS disconnected", { server: status.server });
        break;
      case "reconnect":
        onConnected();
        log.info("NATS reconnected", { server: status.server });
        break;
      case "error":
        if (isAuthRefusal(status.error)) {
          log.error("NATS refused the credentials; reconnecting", {
            server: nc.getServer(),
            error: status.error.message,
          });
        } else log.error("NATS error", { error: status.error });
        break;
      case "slowConsumer":
        log.warn("NATS slow consumer", { subject: status.sub.getSubject() });
        break;
    }
  }
}

/** The NATS round trip to the server, in milliseconds; rejects when not connected. */
export async function pingNats(nc: NatsConnection): Promise<number> {
  if (nc.isClosed()) throw new Error("NATS connection is closed");
  const started = performance.now();
  await nc.flush();
  return performance.now() - started;
}

const TOKEN = /^[A-Za-z0-9_\-:@+=~]+$/;

/**
 * Joins subject tokens with dots, refusing tokens that are empty or contain
 * dots, spaces or wildcards, so data can never change a subject's shape.
 *
 * @example
 * ```ts
 * subject("md", "trade", "binance", "BTC-USDT"); // "md.trade.binance.BTC-USDT"
 * ```
 */
export function subject(...tokens: string[]): string {
  for (const token of tokens) {
    if (!TOKEN.test(token)) throw new TypeError(`Invalid subject token: ${JSON.stringify(token)}`);
  }
  return tokens.join(".");
}

/** A JetStream stream the engine needs, with the settings it is kept at. */
export type StreamSpec = Partial<StreamConfig> & { name: string; subjects: string[] };

/** Nanoseconds in a millisecond: JetStream's durations are in nanoseconds. */
export const NANOS_PER_MS = 1_000_000;

/** What {@linkcode limitsStream} is built from (already checked by the caller). */
export interface LimitsStreamOptions {
  /** Stream name. */
  name: string;
  /** Its one subject filter. */
  subject: string;
  /** Longest a message is kept, in seconds. */
  max_age_s: number;
  /** Most bytes kept. */
  max_bytes: number;
  /** Duplicate window of `Nats-Msg-Id`, in ms, at most the age limit. @default {DEFAULT_DUPLICATE_WINDOW_MS} */
  duplicate_window_ms?: number | undefined;
}

/** How often the client pings the server, in ms. */
export const NATS_PING_INTERVAL_MS = 10_000;
/** Pings left unanswered before the connection is taken for lost and re-opened. */
export const NATS_MAX_PINGS_OUT = 3;
/**
 * The longest a silent connection goes unnoticed, in ms: nats.js pings on a
 * timer every `NATS_PING_INTERVAL_MS` and gives the connection up at the tick
 * that finds `NATS_MAX_PINGS_OUT` pings unanswered, so the silence is noticed
 * 30 to 40 s after it began, depending on where in the interval it began.
 */
export const NATS_SILENCE_DETECTION_MS = NATS_PING_INTERVAL_MS * (NATS_MAX_PINGS_OUT + 1);

/** JetStream's default duplicate window of `Nats-Msg-Id`: two minutes. */
export const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;

/**
 * A durable stream that keeps messages within age and byte limits, dropping
 * the oldest beyond them: file storage, limits retention, discard old. The
 * duplicate window is never longer than the age limit: an existing stream
 * whose age is set below the server's default window is refused otherwise
 * ("duplicates window can not be larger then max age").
 */
export function limitsStream(options: LimitsStreamOptions): StreamSpec {
  const maxAgeMs = options.max_age_s * 1_000;
  const windowMs = Math.min(options.duplicate_window_ms ?? DEFAULT_DUPLICATE_WINDOW_MS, maxAgeMs);
  return {
    name: options.name,
    subjects: [options.subject],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: maxAgeMs * NANOS_PER_MS,
    max_bytes: options.max_bytes,
    duplicate_window: windowMs * NANOS_PER_MS,
  };
}

/** What {@linkcode workConsumer} is built from. */
export interface WorkConsumerOptions {
  /** Durable name. */
  durable_name: string;
  /** What it is for, shown by the server. */
  description: string;
  /** Subjects it takes. */
  filter_subject: string;
  /** Redelivery delay of an unacknowledged message, in ms (>= 1000). */
  ack_wait_ms: number;
  /** Most delivered, unacknowledged messages (> 0). */
  max_ack_pending: number;
}

/**
 * A durable pull consumer that takes every message of its subjects once,
 * acknowledged one by one and redelivered without limit until acknowledged.
 * Throws a `RangeError` for an `ack_wait_ms` under 1000 or a
 * `max_ack_pending` that is not a positive integer.
 */
export function workConsumer(options: WorkConsumerOptions): ConsumerConfig {
  const { ack_wait_ms: ackWaitMs, max_ack_pending: maxAckPending } = options;
  if (!Number.isSafeInteger(ackWaitMs) || ackWaitMs < 1_000) {
    throw new RangeError(`ack_wait_ms must be an integer >= 1000, got ${ackWaitMs}`);
  }
  assertPositiveInteger(maxAckPending, "max_ack_pending");
  return {
    durable_name: options.durable_name,
    description: options.description,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    replay_policy: ReplayPolicy.Instant,
    filter_subject: options.filter_subject,
    ack_wait: ackWaitMs * NANOS_PER_MS,
    max_ack_pending: maxAckPending,
    max_deliver: -1,
  };
}

/** Streams the engine itself needs. Later features append theirs. */
export const ENGINE_STREAMS: readonly StreamSpec[] = [
  {
    name: "ENGINE_EVENTS",
    subjects: ["engine.events.>"],
    // 7 days, in nanoseconds.
    max_age: 7 * 24 * 3600 * 1e9,
    max_bytes: 256 * 1024 * 1024,
  },
];

/** What {@linkcode ensureStreams} did to one stream. */
export interface EnsuredStream {
  /** The stream's name. */
  name: string;
  /** Whether it was created, updated or already as wanted. */
  action: "created" | "updated" | "unchanged";
}

/**
 * Creates each stream that is missing and updates each whose settings differ
 * from its spec. Running it again changes nothing.
 */
export async function ensureStreams(
  nc: NatsConnection,
  specs: readonly StreamSpec[],
  log: Logger = nullLogger,
): Promise<EnsuredStream[]> {
  const jsm = await jetstreamManager(nc);
  const results: EnsuredStream[] = [];
  for (const spec of specs) {
    let current: StreamConfig | undefined;
    try {
      current = (await jsm.streams.info(spec.name)).config;
    } catch (error) {
      if (!isStreamNotFound(error)) throw error;
    }
    let action: EnsuredStream["action"] = "unchanged";
    if (!current) {
      await jsm.streams.add(spec);
      action = "created";
    } else if (differs(spec, current)) {
      await jsm.streams.update(spec.name, spec);
      action = "updated";
    }
    if (action !== "unchanged") log.info(`JetStream stream ${action}`, { stream: spec.name });
    results.push({ name: spec.name, action });
  }
  return results;
}

/** Whether `error` is JetStream's answer that the stream does not exist. */
export function isStreamNotFound(error: unknown): boolean {
  return error instanceof Error &&
    (error.name === "StreamNotFoundError" || /stream not found/i.test(error.message));
}

function differs(spec: StreamSpec, current: StreamConfig): boolean {
  return Object.entries(spec).some(([key, value]) =>
    JSON.stringify(value) !== JSON.stringify(current[key as keyof StreamConfig])
  );
}

/** Settings of a durable consumer that can be changed after creation. */
const UPDATABLE = ["ack_wait", "max_ack_pending", "max_deliver", "description"] as const;
/**
 * Settings of a durable consumer that cannot be changed after creation (on
 * the servers the engine supports) and that the engine's guarantees rest on:
 * which messages it gets, that each is acknowledged, that it starts from the
 * first one.
 */
const FIXED = ["filter_subject", "ack_policy", "deliver_policy", "replay_policy"] as const;

/**
 * An existing durable consumer has settings the engine cannot change and
 * cannot work with (another subject filter: other messages; no explicit acks:
 * a crash loses what was delivered). Nothing is consumed with it.
 */
export class ConsumerMismatchError extends Error {
  /** Creates the error for `consumer` of `stream`, each difference as "setting: is, wanted". */
  constructor(stream: string, consumer: string, differences: string[]) {
    super(
      `JetStream consumer ${consumer} of stream ${stream} cannot be used: ${
        differences.join("; ")
      }. Delete it (nats consumer rm ${stream} ${consumer}) and start again; it is then created ` +
        "as needed, and the messages it had not acknowledged are delivered again",
    );
    this.name = "ConsumerMismatchError";
  }
}

/**
 * Creates the durable consumer `config.durable_name` on `stream` when it is
 * missing, or brings its updatable settings (ack wait, max ack pending, max
 * deliver, description) in line; when that update fails the consumer is used
 * as it is (logged). Throws a {@linkcode ConsumerMismatchError} when the
 * consumer differs in a setting that cannot be updated (subject filter, ack,
 * deliver or replay policy). Returns the consumer's info.
 */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  config: ConsumerConfig,
  log: Logger = nullLogger,
): Promise<ConsumerInfo> {
  const name = config.durable_name ?? "";
  let current: ConsumerInfo | null = null;
  try {
    current = await jsm.consumers.info(stream, name);
  } catch (error) {
    if (!isConsumerNotFound(error)) throw error;
  }
  if (!current) {
    const created = await jsm.consumers.add(stream, config);
    log.info("JetStream consumer created", { stream, consumer: name });
    return created;
  }
  const fixed = FIXED.filter((key) =>
    config[key] !== undefined && config[key] !== current.config[key]
  );
  if (fixed.length > 0) {
    throw new ConsumerMismatchError(
      stream,
      name,
      fixed.map((key) => `${key} is ${current.config[key] ?? "unset"}, wanted ${config[key]}`),
    );
  }
  const changed = UPDATABLE.filter((key) => config[key] !== current.config[key]);
  if (changed.length === 0) return current;
  try {
    const update: Partial<ConsumerConfig> = {};
    for (const key of changed) Object.assign(update, { [key]: config[key] });
    const updated = await jsm.consumers.update(stream, name, update);
    log.info("JetStream consumer updated", { stream, consumer: name, settings: changed });
    return updated;
  } catch (error) {
    log.warn("JetStream consumer could not be updated; using it as it is", {
      stream,
      consumer: name,
      error,
    });
    return current;
  }
}

/** Whether `error` is JetStream's answer that the durable consumer does not exist. */
export function isConsumerNotFound(error: unknown): boolean {
  return error instanceof Error &&
    (error.name === "ConsumerNotFoundError" || /consumer not found/i.test(error.message));
}

/** How often {@linkcode watchConsumer} asks for its consumer while all is well, in ms. */
export const DEFAULT_CONSUMER_CHECK_MS = 5_000;
/** How soon it asks again when JetStream did not answer, in ms. */
export const DEFAULT_CONSUMER_RECHECK_MS = 500;

/** A check of {@linkcode watchConsumer}'s cut short by a reconnect (or its stop). */
const RECHECK = Symbol("recheck");

/** Options of {@linkcode watchConsumer}. */
export interface WatchConsumerOptions {
  /** Ends the watch (it then resolves null). */
  signal: AbortSignal;
  /** @default {DEFAULT_CONSUMER_CHECK_MS} */
  check_ms?: number | undefined;
  /** @default {DEFAULT_CONSUMER_RECHECK_MS} */
  recheck_ms?: number | undefined;
  /** @default {systemClock} */
  clock?: Clock | undefined;
}

/**
 * Watches that the durable consumer `consumer` of `stream` exists, for an
 * actor consuming it: JetStream is asked at once, after every reconnect of
 * `nc` and every `check_ms` — every `recheck_ms` while it does not answer
 * (a timeout, JetStream not ready yet). Resolves with JetStream's error once
 * the consumer or its stream is missing (NATS came back without its store,
 * `nats consumer rm`), or with null when `signal` aborts or `nc` closes;
 * never rejects.
 *
 * nats.js's `consume({ abort_on_missing_resource: true })` makes the same
 * check after a reconnect, but when that check fails for another reason it
 * asks again only 15–45 s later (its `expires`, jittered), and a reconnect
 * while a check is under way checks nothing: meanwhile another actor may
 * create the stream again (the execution actor creates `FILLS`), and the
 * consumer's messages wait for nobody.
 *
 * @example
 * ```ts
 * const messages = await consumer.consume({ callback });
 * void watchConsumer(nc, "FILLS", "position_tracker", { signal })
 *   .then((gone) => gone && messages.stop(gone));
 * ```
 */
export async function watchConsumer(
  nc: NatsConnection,
  stream: string,
  consumer: string,
  options: WatchConsumerOptions,
): Promise<Error | null> {
  const { signal } = options;
  const clock = options.clock ?? systemClock;
  const checkMs = options.check_ms ?? DEFAULT_CONSUMER_CHECK_MS;
  const recheckMs = options.recheck_ms ?? DEFAULT_CONSUMER_RECHECK_MS;
  const wake = new Wakeup();
  let due = true;
  let statuses: (AsyncIterable<Status> & { stop?: () => void }) | null = null;
  let watching: Promise<void> = Promise.resolve();
  const onAbort = () => wake.notify();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const updates = statuses = nc.status() as AsyncIterable<Status> & { stop?: () => void };
    watching = (async () => {
      for await (const status of updates) {
        if (status.type === "reconnect") {
          due = true;
          wake.notify();
        }
      }
    })().catch(() => {});
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    while (!signal.aborted && !nc.isClosed()) {
      let waitMs = checkMs;
      if (due) {
        due = false;
        // A check sent just before a disconnect is answered by nobody: the reconnect starts a
        // new one instead of waiting for its timeout.
        const answer = jsm.consumers.info(stream, consumer).then(() => null, (error) => error);
        const outcome = await Promise.race([answer, wake.wait().then(() => RECHECK)]);
        if (outcome === RECHECK) continue;
        if (isConsumerNotFound(outcome) || isStreamNotFound(outcome)) return outcome as Error;
        if (outcome !== null) {
          waitMs = recheckMs;
          due = true;
        }
        if (signal.aborted) break;
      }
      const timer = new AbortController();
      const slept = clock.sleep(waitMs, timer.signal).then(() => {
        due = true;
      }, () => {});
      await Promise.race([slept, wake.wait()]);
      timer.abort();
    }
    return null;
  } catch {
    return null; // the connection closed under it: its actor learns that on its own
  } finally {
    signal.removeEventListener("abort", onAbort);
    statuses?.stop?.();
    await watching;
  }
}
