/**
 * Replays a capture (made by `deno task record`, or `captures/sample.ndjson`)
 * through the venues' own sessions, publishing exactly as the live feeds do
 * (the same {@linkcode FeedOutput}: coalesced JSON arrays on
 * `md.<kind>.<exchange>.<symbol>`, dead letters on `dlq.md.<exchange>`,
 * figures in {@linkcode MarketStatus}).
 *
 * ## Capture format
 *
 * NDJSON, one record a line ({@linkcode CaptureRecord}):
 *
 * | line | meaning |
 * | --- | --- |
 * | `{"t":1700000000123456,"x":"binance","f":"<frame text>"}` | a WebSocket frame received at `t` (µs since the epoch) |
 * | `{"t":…,"x":"binance","rest":"<url>","f":"<body>"}` | the body of a REST `GET <url>` received at `t` |
 * | `{"t":…,"x":"binance","conn":"close"}` | the venue's connection closed at `t` (not written when the recording stops) |
 * | `{"t":…,"x":"binance","conn":"open"}` | a new connection of the venue opened at `t` (not written for the first, which opens with the capture) |
 * | `{"meta":{…}}` | information about the capture (symbols, provenance, `"connection_lines":true`) |
 *
 * Frames are JSON strings, so their text (number tokens included) is kept
 * byte for byte. Connection lines mark the live feed's reconnects; a capture
 * whose meta line says `"connection_lines":true` has one at every reconnect
 * (`deno task record` writes them), so between them a venue's frames are
 * those of one connection. Captures without them (older recordings, the
 * sample) play as one connection per venue.
 *
 * ## Replay semantics
 *
 * - Each frame goes to the session of its exchange (`session.onFrame`, with
 *   the recorded `t` as `receivedUs`, so `ts_local` is the recorded one).
 *   Lines of exchanges without a session are skipped and counted.
 * - `io.fetchText(url)` answers with the recorded `rest` bodies of that URL,
 *   in order, wherever they are in the file: one read earlier is answered at
 *   once, otherwise the call waits for the next one; at the end of the file
 *   the waiting calls reject with {@linkcode ReplayFetchError}.
 * - `io.send` sends nothing (frames are counted and passed to `onSend`).
 * - Connection lines: at `close` the venue's session gets `onClose` (its
 *   state `"disconnected"`); at `open` it gets `onClose` if still open, then
 *   `onOpen` with a new `io`, counted in `reconnects` — where the live feed
 *   reconnected, so a new connection's frames (sequence numbers starting
 *   over, fresh snapshots) never run into the old one's state. Frames of a
 *   venue between its `close` and `open` lines are skipped and counted.
 * - `io.reconnect` (a session's own request): in a capture whose meta line
 *   says `"connection_lines":true`, it is counted in `resyncs` when asked
 *   and otherwise left to the capture — the live feed's reconnect shows there as `close` and `open`
 *   lines, and the frames until then belong to the recorded connection, so
 *   resetting the session earlier (a request timed differently in a replay)
 *   would only lose them. In any other capture, it runs `onClose` then
 *   `onOpen` again (no socket), after the current frame; it is counted in
 *   `reconnects` (and `resyncs` when asked).
 * - `session.onTick(io, t / 1000)` runs when a venue's recorded time has
 *   advanced a second since its last tick.
 * - Pace: `speed` 0 replays as fast as possible; `speed` 1 keeps the recorded
 *   gaps between lines (waiting on the injected clock), 2 halves them… Gaps
 *   longer than `max_gap_ms` (a pause in a recording, or venues recorded on
 *   different days as in the sample capture) are shortened to it.
 * - Lines that cannot be read (not JSON, unknown exchange, missing fields)
 *   are counted, logged and skipped; when their exchange is known they are
 *   also counted in its `malformed` figure and dead-lettered.
 * - Status: a venue is `"subscribing"` from its connection's opening until
 *   it is ready — its first frame played, or, for a session that tells its
 *   readiness (Alpaca's), once it says `ready` — and `"live"` from then on
 *   (`"disconnected"` between its `close` and `open` lines) and `"stopped"` at the end of the
 *   file (with `loop`, the file starts over instead, each
 *   session going through `onClose`/`onOpen` first).
 * - With `retime`, events carry the time they are replayed instead of the
 *   recorded one: each frame's events move by (now − its recorded `t`), so
 *   `ts_local` is now and `ts_exchange` keeps its recorded distance to it;
 *   events published outside a frame move by (now − the recorded time of
 *   the venue's latest line). Every event is moved once, when the session
 *   hands it over: a Binance snapshot held for its first diff and returned
 *   with it keeps its recorded distance to that diff. A bar's `start` moves
 *   by whole minutes (and its `ts_exchange` with it when the venue stamps
 *   bars with their start, as Alpaca does). Prices then look as fresh as a
 *   live feed's: the paper broker and the risk checks can trade on them
 *   offline.
 * - Limits that guard a live venue do not hold back a replay: a session
 *   with `onReplay` ({@linkcode ReplayAwareSession}) is told before the
 *   first pass, and Binance's then meters no REST snapshot weight.
 * - Events a session builds outside a frame (a Binance book on a REST
 *   snapshot) carry `io.nowUs()`: the recorded time of the venue's latest
 *   line (for that book, its REST body's), with `retime` too (they are moved
 *   when published, see above).
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { startRoot } from "../actors/mod.ts";
 * import { MarketStatus } from "../market/status.ts";
 * import { replayActor } from "./replay.ts";
 * import type { VenueSession } from "./session.ts";
 *
 * declare const sessions: VenueSession[]; // e.g. createSessions(config) from venues/mod.ts
 * const nats = await connect({ servers: "127.0.0.1:4222" });
 * const root = await startRoot({ name: "root" }, [
 *   replayActor("captures/sample.ndjson", sessions, {
 *     nats,
 *     status: new MarketStatus(),
 *     speed: 0,
 *     loop: false,
 *   }),
 * ]);
 * await root.stop();
 * await nats.close();
 * ```
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import {
  type DeadLetterSink,
  DEFAULT_PUBLISH_BATCH_MAX,
  DEFAULT_PUBLISH_BATCH_MS,
  type EventSink,
  FeedOutput,
  safeStatus,
} from "../actors/feed.ts";
import type { ChildSpec, ChildStats, RestartType, Running } from "../actors/types.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import { type Exchange, EXCHANGES, type MarketEvent } from "../market/events.ts";
import type { FeedStatus, MarketStatus } from "../market/status.ts";
import type { SessionIO, VenueSession } from "./session.ts";

/** Version of the capture format, written in the `meta` line. */
export const CAPTURE_FORMAT = 1;
/** Default replay speed: as fast as possible. */
export const DEFAULT_REPLAY_SPEED = 0;
/** Longest wait between two lines at speed 1 (ms); longer recorded gaps are shortened to it. */
export const DEFAULT_REPLAY_MAX_GAP_MS = 10_000;
/** Interval of `session.onTick` in recorded time (µs). */
export const REPLAY_TICK_US = 1_000_000;
/** Bytes read from the capture at a time. */
export const CAPTURE_READ_CHUNK = 256 * 1024;

/** A WebSocket frame in a capture. */
export interface CaptureFrame {
  /** When it was received, µs since the epoch. */
  t: number;
  /** The venue. */
  x: Exchange;
  /** The frame text. */
  f: string;
}

/** A REST response body in a capture. */
export interface CaptureRest {
  /** When it was received, µs since the epoch. */
  t: number;
  /** The venue. */
  x: Exchange;
  /** The URL that was requested with GET. */
  rest: string;
  /** The response body. */
  f: string;
}

/**
 * A venue's connection closed (`"close"`) or a new one opened (`"open"`) at
 * `t`: how `deno task record` marks a reconnect of the live feed.
 */
export interface CaptureConnection {
  /** When, µs since the epoch. */
  t: number;
  /** The venue. */
  x: Exchange;
  /** What happened to the venue's connection. */
  conn: "open" | "close";
}

/**
 * Information about a capture (symbols, provenance); replays read only
 * `connection_lines` (see {@linkcode CaptureMetaFields}).
 */
export interface CaptureMeta {
  /** Free-form; `format` is {@linkcode CAPTURE_FORMAT}. */
  meta: Record<string, unknown>;
}

/** The meta fields a replay reads. */
export interface CaptureMetaFields {
  /**
   * True when the capture marks every reconnect of its venues with
   * {@linkcode CaptureConnection} lines (so a stretch without them is one
   * connection), as `deno task record` does.
   */
  connection_lines?: boolean;
}

/** One line of a capture. */
export type CaptureRecord = CaptureFrame | CaptureRest | CaptureConnection | CaptureMeta;

/**
 * One capture line (without its newline).
 *
 * @example
 * ```ts
 * formatCaptureLine({ t: 1, x: "kraken", f: '{"channel":"heartbeat"}' });
 * // '{"t":1,"x":"kraken","f":"{\"channel\":\"heartbeat\"}"}'
 * ```
 */
export function formatCaptureLine(record: CaptureRecord): string {
  if ("meta" in record) return JSON.stringify({ meta: record.meta });
  if ("conn" in record) return JSON.stringify({ t: record.t, x: record.x, conn: record.conn });
  if ("rest" in record) {
    return JSON.stringify({ t: record.t, x: record.x, rest: record.rest, f: record.f });
  }
  return JSON.stringify({ t: record.t, x: record.x, f: record.f });
}

/** A capture line that cannot be replayed; `exchange` is set when the line named a known one. */
export class CaptureLineError extends Error {
  /** The line's exchange, when it named a known one. */
  readonly exchange: Exchange | null;

  /** Makes the error; pass the JSON error as `cause`. */
  constructor(message: string, exchange: Exchange | null, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CaptureLineError";
    this.exchange = exchange;
  }
}

const KNOWN_EXCHANGES: ReadonlySet<string> = new Set(EXCHANGES);

/**
 * Parses one capture line. Throws {@linkcode CaptureLineError} for a line
 * that is not a capture record.
 */
export function parseCaptureLine(line: string): CaptureRecord {
  let data: unknown;
  try {
    data = JSON.parse(line);
  } catch (error) {
    throw new CaptureLineError("Capture line is not JSON", null, { cause: error });
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new CaptureLineError("Capture line is not a JSON object", null);
  }
  const record = data as Record<string, unknown>;
  if ("meta" in record) {
    const meta = record.meta;
    if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
      throw new CaptureLineError("Capture meta line has no meta object", null);
    }
    return { meta: meta as Record<string, unknown> };
  }
  const { x, t, f, rest, conn } = record;
  if (typeof x !== "string" || !KNOWN_EXCHANGES.has(x)) {
    throw new CaptureLineError(`Capture line names an unknown exchange ${JSON.stringify(x)}`, null);
  }
  const exchange = x as Exchange;
  if (typeof t !== "number" || !Number.isFinite(t)) {
    throw new CaptureLineError("Capture line has no numeric t", exchange);
  }
  if (conn !== undefined) {
    if (conn !== "open" && conn !== "close") {
      throw new CaptureLineError('Capture connection line is neither "open" nor "close"', exchange);
    }
    return { t, x: exchange, conn };
  }
  if (typeof f !== "string") throw new CaptureLineError("Capture line has no f text", exchange);
  if (rest === undefined) return { t, x: exchange, f };
  if (typeof rest !== "string") {
    throw new CaptureLineError("Capture rest line has no URL", exchange);
  }
  return { t, x: exchange, rest, f };
}

/**
 * Reads a text file in chunks and yields its lines (without `\n` or `\r\n`)
 * a chunk's worth at a time. The file is closed when the iteration ends.
 */
export async function* readLineBatches(
  path: string,
  chunkSize: number = CAPTURE_READ_CHUNK,
): AsyncGenerator<string[]> {
  const file = await Deno.open(path, { read: true });
  try {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(chunkSize);
    let carry = "";
    for (;;) {
      const n = await file.read(buffer);
      if (n === null) break;
      carry += decoder.decode(buffer.subarray(0, n), { stream: true });
      const lines: string[] = [];
      let start = 0;
      for (let end = carry.indexOf("\n"); end >= 0; end = carry.indexOf("\n", start)) {
        lines.push(stripCr(carry.slice(start, end)));
        start = end + 1;
      }
      carry = carry.slice(start);
      if (lines.length > 0) yield lines;
    }
    carry += decoder.decode();
    if (carry.length > 0) yield [stripCr(carry)];
  } finally {
    file.close();
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** Thrown by a replay's `io.fetchText` when the capture holds no (further) body for the URL. */
export class ReplayFetchError extends Error {
  /** The URL asked for. */
  readonly url: string;

  /** Makes the error for `url`. */
  constructor(url: string) {
    super(`No recorded response for GET ${url}`);
    this.name = "ReplayFetchError";
    this.url = url;
  }
}

interface Waiter {
  resolve(body: string): void;
  reject(error: unknown): void;
  signal: AbortSignal;
  onAbort(): void;
}

/**
 * The recorded REST bodies of one pass over a capture, answering
 * `fetchText(url)` in recorded order per URL.
 */
export class RecordedRest {
  readonly #bodies = new Map<string, string[]>();
  readonly #waiters = new Map<string, Waiter[]>();
  #finished = false;

  /** Adds a recorded body; returns true when it answered a waiting call. */
  add(url: string, body: string): boolean {
    const waiter = this.#waiters.get(url)?.shift();
    if (waiter) {
      waiter.signal.removeEventListener("abort", waiter.onAbort);
      waiter.resolve(body);
      return true;
    }
    let queue = this.#bodies.get(url);
    if (!queue) this.#bodies.set(url, queue = []);
    queue.push(body);
    return false;
  }

  /** The next recorded body for `url`, now or once it is read; rejects when `signal` aborts. */
  fetch(url: string, signal: AbortSignal): Promise<string> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const queued = this.#bodies.get(url);
    if (queued && queued.length > 0) return Promise.resolve(queued.shift()!);
    if (this.#finished) return Promise.reject(new ReplayFetchError(url));
    return new Promise<string>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const list = this.#waiters.get(url);
          const index = list?.indexOf(waiter) ?? -1;
          if (index >= 0) list!.splice(index, 1);
          reject(signal.reason);
        },
      };
      signal.addEventListener("abort", waiter.onAbort, { once: true });
      let list = this.#waiters.get(url);
      if (!list) this.#waiters.set(url, list = []);
      list.push(waiter);
    });
  }

  /** The file ended: waiting and later calls reject with {@linkcode ReplayFetchError}. */
  finish(): void {
    this.#finished = true;
    for (const [url, list] of this.#waiters) {
      for (const waiter of list) {
        waiter.signal.removeEventListener("abort", waiter.onAbort);
        waiter.reject(new ReplayFetchError(url));
      }
    }
    this.#waiters.clear();
  }
}

/**
 * A session that knows when it plays a capture: the replay calls its
 * `onReplay()` once, before the first pass. Binance's session then spends no
 * REST request weight on its snapshots, which reach no venue.
 */
export interface ReplayAwareSession extends VenueSession {
  /** The session is about to play a capture rather than a live connection. */
  onReplay?(): void;
}

/** What a replay needs. */
export interface ReplayDeps {
  /** NATS connection; required unless both `sink` and `deadLetters` are given. */
  nats?: NatsConnection | undefined;
  /** The shared figures; the replay writes `status.feed(exchange)` for each session. */
  status: MarketStatus;
  /** Logger. @default {nullLogger} */
  log?: Logger | undefined;
  /** Clock for the pace and status times. @default {systemClock} */
  clock?: Clock | undefined;
  /** 1 = recorded pace, 2 = twice as fast, 0 = as fast as possible. @default {DEFAULT_REPLAY_SPEED} */
  speed?: number | undefined;
  /** Start over at the end of the file. @default {false} */
  loop?: boolean | undefined;
  /** Move events to the time they are replayed (see the module doc). @default {false} */
  retime?: boolean | undefined;
  /** Where batches go. @default {NATS, as the live feed} */
  sink?: EventSink | undefined;
  /** Where dead letters go. @default {NATS, as the live feed} */
  deadLetters?: DeadLetterSink | undefined;
  /** Coalescing window (ms). @default {DEFAULT_PUBLISH_BATCH_MS} */
  publish_batch_ms?: number | undefined;
  /** Most events per message. @default {DEFAULT_PUBLISH_BATCH_MAX} */
  publish_batch_max?: number | undefined;
  /** Longest wait between two lines (ms, before dividing by speed). @default {DEFAULT_REPLAY_MAX_GAP_MS} */
  max_gap_ms?: number | undefined;
  /** Sees what sessions send (subscriptions, pings), which goes nowhere. @default {undefined} */
  onSend?: ((exchange: Exchange, text: string) => void) | undefined;
  /** Child name. @default {"replay"} */
  name?: string | undefined;
  /** Restart type; the default lets a finished replay stay finished. @default {"transient"} */
  restart?: RestartType | undefined;
}

/** Figures of a running replay. */
export interface ReplayStats extends ChildStats {
  /** Always `"worker"`. */
  kind: "worker";
  /** Lines read (blank ones excluded), every pass together. */
  lines: number;
  /** Frames handed to sessions. */
  frames: number;
  /** REST bodies read. */
  rest: number;
  /** Meta lines read. */
  meta: number;
  /** Lines that could not be replayed. */
  malformed: number;
  /** Lines of exchanges without a session, and frames of a venue closed by a `close` line. */
  skipped: number;
  /** Texts the sessions sent (to nowhere). */
  sent: number;
  /** Passes started over the file. */
  passes: number;
}

/**
 * The child spec of a replay of `file` through `sessions` (one per
 * exchange). `ready` rejects when the file cannot be read; `done` resolves
 * at the end of the file (never, with `loop`) or when stopped, and rejects
 * when publishing fails.
 */
export function replayActor(file: string, sessions: VenueSession[], deps: ReplayDeps): ChildSpec {
  const name = deps.name ?? "replay";
  if (!name || name.includes("/")) throw new TypeError(`Invalid replay name: "${name}"`);
  if (!deps.nats && (!deps.sink || !deps.deadLetters)) {
    throw new TypeError(`Replay ${name} needs nats unless both sink and deadLetters are given`);
  }
  const speed = deps.speed ?? DEFAULT_REPLAY_SPEED;
  if (!(speed >= 0) || !Number.isFinite(speed)) {
    throw new RangeError(`Replay speed must be >= 0, got ${speed}`);
  }
  const seen = new Set<Exchange>();
  for (const session of sessions) {
    if (seen.has(session.exchange)) {
      throw new TypeError(`Replay ${name} has two sessions for ${session.exchange}`);
    }
    seen.add(session.exchange);
  }
  return {
    name,
    restart: deps.restart ?? "transient",
    start: (signal) => startReplay(file, sessions, deps, name, signal),
  };
}

function startReplay(
  file: string,
  sessions: VenueSession[],
  deps: ReplayDeps,
  name: string,
  signal: AbortSignal,
): Running {
  const stats: ReplayStats = {
    kind: "worker",
    lines: 0,
    frames: 0,
    rest: 0,
    meta: 0,
    malformed: 0,
    skipped: 0,
    sent: 0,
    passes: 0,
  };
  const replay = new Replay(file, sessions, deps, name, signal, stats);
  const ready = Deno.stat(file).then((info) => {
    if (!info.isFile) throw new TypeError(`Replay file ${file} is not a file`);
  });
  const done = ready.then(() => replay.run());
  ready.catch(() => {});
  done.catch(() => {});
  return { ready, done, stats: () => ({ ...stats }) };
}

interface Venue {
  session: VenueSession;
  /** What frames are parsed with: `session`, or with `retime` a wrapper moving its events. */
  parser: VenueSession;
  /** The recorded time (µs) of the venue's latest line: what `io.nowUs()` answers. */
  recordedUs: number;
  /** With `retime`: the last exchange time per kind and symbol ({@linkcode keepOrder}). */
  lastTimes: Map<string, number>;
  status: FeedStatus;
  output: FeedOutput;
  io: SessionIO | null;
  connection: AbortController | null;
  reconnect: string | null;
  lastTickUs: number | null;
}

/** Warnings about unreadable lines before they are logged at debug level only. */
const MALFORMED_LINE_WARNINGS = 10;

class Replay {
  readonly #file: string;
  readonly #signal: AbortSignal;
  readonly #stats: ReplayStats;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #speed: number;
  readonly #loop: boolean;
  readonly #retime: boolean;
  readonly #maxGapUs: number;
  readonly #onSend: ((exchange: Exchange, text: string) => void) | undefined;
  readonly #venues = new Map<Exchange, Venue>();
  readonly #halt = new AbortController();
  readonly #skippedExchanges = new Set<string>();
  #rest = new RecordedRest();
  #reconnects = 0;
  /** The capture marks every reconnect with connection lines (its meta line says so). */
  #connectionLines = false;
  #fatal: { error: unknown } | null = null;

  constructor(
    file: string,
    sessions: VenueSession[],
    deps: ReplayDeps,
    name: string,
    signal: AbortSignal,
    stats: ReplayStats,
  ) {
    this.#file = file;
    this.#signal = signal;
    this.#stats = stats;
    this.#clock = deps.clock ?? systemClock;
    this.#log = (deps.log ?? nullLogger).child({ actor: name });
    this.#speed = deps.speed ?? DEFAULT_REPLAY_SPEED;
    this.#loop = deps.loop ?? false;
    this.#retime = deps.retime ?? false;
    const maxGapMs = deps.max_gap_ms ?? DEFAULT_REPLAY_MAX_GAP_MS;
    if (!(maxGapMs >= 0)) throw new RangeError(`max_gap_ms must be >= 0, got ${maxGapMs}`);
    this.#maxGapUs = maxGapMs * 1000;
    this.#onSend = deps.onSend;
    for (const session of sessions) {
      (session as ReplayAwareSession).onReplay?.();
      const status = deps.status.feed(session.exchange);
      const output = new FeedOutput(session.exchange, status, {
        nats: deps.nats,
        sink: deps.sink,
        deadLetters: deps.deadLetters,
        batchMs: deps.publish_batch_ms ?? DEFAULT_PUBLISH_BATCH_MS,
        batchMax: deps.publish_batch_max ?? DEFAULT_PUBLISH_BATCH_MAX,
        clock: this.#clock,
        log: this.#log,
        onFatal: (error) => this.#fail(error),
      });
      const venue: Venue = {
        session,
        parser: session,
        recordedUs: 0,
        lastTimes: new Map(),
        status,
        output,
        io: null,
        connection: null,
        reconnect: null,
        lastTickUs: null,
      };
      if (this.#retime) {
        venue.parser = retimedParser(session, (events) => this.#retimed(venue, events));
      }
      this.#venues.set(session.exchange, venue);
    }
  }

  /**
   * With `retime`: `events` of `venue` moved by (now − the recorded time of
   * the venue's latest line), in the venue's order ({@linkcode keepOrder}).
   * Sessions stamp events with recorded times only (the frame's, or
   * `io.nowUs()`), so this moves each event exactly once, whether a frame
   * returns it or `io.emit` publishes it.
   */
  #retimed(venue: Venue, events: MarketEvent[]): MarketEvent[] {
    return keepOrder(
      shiftEvents(events, this.#clock.now() * 1000 - venue.recordedUs),
      venue.lastTimes,
    );
  }

  async run(): Promise<void> {
    const stop = () => this.#halt.abort();
    this.#signal.addEventListener("abort", stop, { once: true });
    if (this.#signal.aborted) stop();
    this.#log.info("replay started", { file: this.#file, speed: this.#speed, loop: this.#loop });
    try {
      while (!this.#halt.signal.aborted) {
        this.#stats.passes++;
        this.#rest = new RecordedRest();
        for (const venue of this.#venues.values()) {
          if (venue.connection) this.#close(venue);
          this.#open(venue);
        }
        await this.#pass();
        this.#rest.finish();
        for (const venue of this.#venues.values()) venue.output.flush();
        if (!this.#loop) break;
      }
    } catch (error) {
      this.#fatal ??= { error };
    } finally {
      this.#signal.removeEventListener("abort", stop);
      this.#rest.finish();
      for (const venue of this.#venues.values()) {
        if (venue.connection) this.#close(venue);
        try {
          venue.output.close();
        } catch (error) {
          this.#fatal ??= { error };
        }
        venue.status.state = "stopped";
        venue.status.connected_at = null;
      }
    }
    if (this.#fatal) {
      this.#log.error("replay failed", { error: this.#fatal.error });
      throw this.#fatal.error;
    }
    this.#log.info("replay finished", { ...this.#stats });
  }

  #fail(error: unknown): void {
    this.#fatal ??= { error };
    this.#halt.abort();
  }

  /** One pass over the file. */
  async #pass(): Promise<void> {
    const halt = this.#halt.signal;
    const speed = this.#speed;
    const start = this.#clock.now();
    let previousUs: number | null = null;
    let elapsedUs = 0;
    for await (const lines of readLineBatches(this.#file)) {
      for (const line of lines) {
        if (halt.aborted) return;
        if (this.#reconnects > 0) this.#reconnectRequested();
        if (line.length === 0 || isBlank(line)) continue;
        this.#stats.lines++;
        let record: CaptureRecord;
        try {
          record = parseCaptureLine(line);
        } catch (error) {
          this.#badLine(line, error);
          continue;
        }
        if ("meta" in record) {
          this.#stats.meta++;
          this.#log.debug("capture meta", { meta: record.meta });
          if ((record.meta as CaptureMetaFields).connection_lines === true) {
            this.#connectionLines = true;
          }
          continue;
        }
        if (speed > 0) {
          if (previousUs !== null && record.t > previousUs) {
            elapsedUs += Math.min(record.t - previousUs, this.#maxGapUs);
          }
          if (previousUs === null || record.t > previousUs) previousUs = record.t;
          const waitMs = start + elapsedUs / 1000 / speed - this.#clock.now();
          if (waitMs >= 1) {
            try {
              await this.#clock.sleep(waitMs, halt);
            } catch {
              return;
            }
          }
        }
        if ("rest" in record) {
          this.#stats.rest++;
          const venue = this.#venues.get(record.x);
          if (venue) venue.recordedUs = record.t;
          // Let the session take the answer before the next frame, as a live fetch would.
          if (this.#rest.add(record.rest, record.f)) await nextTurn();
          continue;
        }
        const venue = this.#venues.get(record.x);
        if (!venue) {
          this.#skip(record.x);
          continue;
        }
        if ("conn" in record) {
          this.#connection(venue, record);
          continue;
        }
        if (venue.connection === null) {
          this.#stats.skipped++;
          continue;
        }
        this.#frame(venue, record);
      }
    }
  }

  /** Whether `venue`'s session is ready: it says so, or it does not tell (its first frame came). */
  #ready(venue: Venue): boolean {
    if (venue.session.readiness === undefined) return true;
    try {
      return venue.session.readiness() === "ready";
    } catch (error) {
      this.#log.error("session readiness failed", { exchange: venue.session.exchange, error });
      return false;
    }
  }

  /** A recorded connection line: the venue's connection closes, or a new one opens. */
  #connection(venue: Venue, record: CaptureConnection): void {
    venue.recordedUs = record.t;
    if (venue.connection) this.#close(venue);
    if (record.conn === "close") {
      venue.status.state = "disconnected";
      venue.status.connected_at = null;
      return;
    }
    venue.status.reconnects++;
    this.#open(venue);
  }

  #frame(venue: Venue, record: CaptureFrame): void {
    const io = venue.io!;
    this.#stats.frames++;
    venue.recordedUs = record.t;
    venue.output.frame(venue.parser, record.f, record.t, io);
    if (venue.status.state === "subscribing" && this.#ready(venue)) venue.status.state = "live";
    if (venue.lastTickUs === null) {
      venue.lastTickUs = record.t;
    } else if (record.t - venue.lastTickUs >= REPLAY_TICK_US) {
      venue.lastTickUs = record.t;
      try {
        venue.session.onTick?.(io, record.t / 1000);
      } catch (error) {
        this.#log.error("session onTick failed", { exchange: venue.session.exchange, error });
      }
      venue.status.venue = safeStatus(venue.session, this.#log);
    }
  }

  #open(venue: Venue): void {
    const connection = new AbortController();
    const { session, status, output } = venue;
    const exchange = session.exchange;
    const io: SessionIO = {
      send: (text) => {
        this.#stats.sent++;
        this.#onSend?.(exchange, text);
      },
      reconnect: (reason, options) => {
        if (connection.signal.aborted || venue.reconnect !== null) return;
        if (options?.resync) status.resyncs++;
        venue.reconnect = reason;
        if (this.#connectionLines) {
          // The capture shows where the live feed reconnected: its close and open lines do it.
          this.#log.info("session asked for a reconnect; the capture's connection lines decide", {
            exchange,
            reason,
          });
          return;
        }
        this.#log.info("session asked for a reconnect", { exchange, reason });
        this.#reconnects++;
      },
      emit: (events) => {
        if (connection.signal.aborted) return;
        try {
          output.emit(this.#retime ? this.#retimed(venue, events) : events);
        } catch (error) {
          this.#fail(error);
        }
      },
      resynced: (reason) => output.resynced(reason),
      error: (message) => output.error(message),
      fetchText: (url) => this.#rest.fetch(url, connection.signal),
      nowUs: () => venue.recordedUs,
      signal: connection.signal,
      log: this.#log.child({ exchange }),
    };
    venue.io = io;
    venue.connection = connection;
    venue.reconnect = null;
    venue.lastTickUs = null;
    // As a live feed: subscribing until its venue is ready (on its first frame played, or once
    // a session that tells its readiness, Alpaca's, says so).
    status.state = "subscribing";
    status.connected_at = this.#clock.now();
    const failed = (error: unknown) => {
      const message = error instanceof Error ? error.message : String(error);
      output.error(`Subscribing failed: ${message}`);
    };
    try {
      const result = session.onOpen(io);
      if (result instanceof Promise) result.catch(failed);
    } catch (error) {
      failed(error);
    }
    status.venue = safeStatus(session, this.#log);
  }

  #close(venue: Venue): void {
    venue.connection?.abort();
    venue.connection = null;
    try {
      venue.session.onClose();
    } catch (error) {
      this.#log.error("session onClose failed", { exchange: venue.session.exchange, error });
    }
    venue.status.venue = safeStatus(venue.session, this.#log);
  }

  #reconnectRequested(): void {
    this.#reconnects = 0;
    for (const venue of this.#venues.values()) {
      if (venue.reconnect === null) continue;
      this.#close(venue);
      venue.status.reconnects++;
      this.#open(venue);
    }
  }

  #badLine(line: string, error: unknown): void {
    this.#stats.malformed++;
    const detail = error instanceof Error ? error.message : String(error);
    const exchange = error instanceof CaptureLineError ? error.exchange : null;
    const venue = exchange ? this.#venues.get(exchange) : undefined;
    if (venue) venue.output.malformed(line, detail);
    const fields = { detail, line: line.length > 200 ? `${line.slice(0, 200)}…` : line };
    if (this.#stats.malformed <= MALFORMED_LINE_WARNINGS) {
      this.#log.warn("capture line skipped", fields);
    } else this.#log.debug("capture line skipped", fields);
  }

  #skip(exchange: Exchange): void {
    this.#stats.skipped++;
    if (this.#skippedExchanges.has(exchange)) return;
    this.#skippedExchanges.add(exchange);
    this.#log.info("capture frames of an exchange without a session are skipped", { exchange });
  }
}

/**
 * `session`, parsing each frame into events passed through `retime` (the
 * replay's: moved from the time the frame was received, as recorded, to
 * now, {@linkcode shiftEvents}). Each event keeps its recorded latency, so at
 * a speed other than 1 a frame whose latency was larger than the next one's
 * by more than the squeezed gap between them would land before it: an
 * event's exchange time is never moved before that of the last event of its
 * kind and symbol ({@linkcode keepOrder}), so the venue's order survives
 * retiming.
 */
function retimedParser(
  session: VenueSession,
  retime: (events: MarketEvent[]) => MarketEvent[],
): VenueSession {
  return {
    exchange: session.exchange,
    url: () => session.url(),
    onOpen: (io) => session.onOpen(io),
    onFrame: (frame, receivedUs, io) => retime(session.onFrame(frame, receivedUs, io)),
    onClose: () => session.onClose(),
    status: () => session.status(),
  };
}

/**
 * `events` with no exchange time before the last one `last` holds for its
 * kind and symbol (raised to it, the local time at least as late), updating
 * `last`. Bars, on minute boundaries, are left as they are.
 */
export function keepOrder(events: MarketEvent[], last: Map<string, number>): MarketEvent[] {
  let out: MarketEvent[] | null = null;
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!;
    if (event.kind === "bar") continue;
    const key = `${event.kind}\u0000${event.symbol}`;
    const floor = last.get(key);
    if (floor !== undefined && event.ts_exchange < floor) {
      out ??= [...events];
      out[i] = { ...event, ts_exchange: floor, ts_local: Math.max(event.ts_local, floor) };
      continue;
    }
    last.set(key, event.ts_exchange);
  }
  return out ?? events;
}

const MINUTE_US = 60_000_000;

/**
 * Copies of `events` moved `shiftUs` µs later: `ts_exchange` and `ts_local`
 * by `shiftUs`; a bar's `start` by the whole minutes in it (bars stay on
 * minute boundaries), and its `ts_exchange` with its start when they were
 * equal.
 */
export function shiftEvents(events: MarketEvent[], shiftUs: number): MarketEvent[] {
  if (shiftUs === 0 || events.length === 0) return events;
  const minutesUs = Math.floor(shiftUs / MINUTE_US) * MINUTE_US;
  return events.map((event): MarketEvent => {
    const ts_local = event.ts_local + shiftUs;
    if (event.kind !== "bar") {
      return { ...event, ts_exchange: event.ts_exchange + shiftUs, ts_local };
    }
    const start = event.start + minutesUs;
    const ts_exchange = event.ts_exchange === event.start ? start : event.ts_exchange + shiftUs;
    return { ...event, ts_exchange, ts_local, start };
  });
}

function isBlank(line: string): boolean {
  return line.trim().length === 0;
}

/** Resolves after pending callbacks and one timer turn. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
