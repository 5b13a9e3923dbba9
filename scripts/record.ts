// deno-lint-ignore-file no-console -- a command-line tool prints its results
/**
 * Records the raw frames of the enabled venues into a capture that
 * `venues/replay.ts` plays back (format: see there):
 *
 * ```sh
 * deno task record [--seconds N] [--out FILE] [config flags]
 * ```
 *
 * It runs the same feed runtime as the engine (connection, subscriptions,
 * reconnects, REST snapshots) but publishes nothing: every frame received is
 * written as `{"t":<µs>,"x":"<exchange>","f":"<frame>"}` and every REST body
 * the sessions fetch as `{"t":…,"x":…,"rest":"<url>","f":"<body>"}` (unless
 * its connection closed first: the session drops it); a reconnect as
 * `{"t":…,"x":…,"conn":"close"}` when the connection ends and
 * `{"t":…,"x":…,"conn":"open"}` when the next one opens, so a replay plays
 * each connection's frames into a fresh session state as the live feed did
 * (the meta line says `"connection_lines":true`); all after a
 * first `{"meta":{…}}` line naming the venues, their URLs and symbols (a
 * venue whose URL cannot be made — Alpaca without credentials — is named
 * with the error instead; its feed retries as the engine's does, and the
 * other venues record).
 *
 * It stops after N seconds, on Ctrl-C (SIGINT) or on SIGTERM (`docker stop`,
 * systemd, `timeout`), flushes the file, and prints how many frames it wrote.
 * Config flags are those of the engine (`--config PATH`,
 * `--exchanges.kraken.enabled=false`, …).
 *
 * Exits 0 on success, 1 on failure, 2 on a usage or configuration error. A
 * recording that fails or ends without a frame removes its file, which
 * would hold nothing to replay.
 *
 * @module
 */

import { dirname } from "node:path";
import {
  feedActor,
  type FeedOptions,
  type FetchText,
  fetchText as httpFetchText,
  wallClockUs,
  type WebSocketFactory,
} from "../actors/feed.ts";
import { type Config, ConfigError, loadConfig } from "../config/mod.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { createLogger, type Logger, nullLogger } from "../lib/log.ts";
import type { Exchange } from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import { createSessions } from "../venues/mod.ts";
import {
  CAPTURE_FORMAT,
  type CaptureConnection,
  type CaptureRecord,
  formatCaptureLine,
} from "../venues/replay.ts";
import type { VenueSession } from "../venues/session.ts";

/** The usage text printed for `--help` and usage errors. */
export const USAGE = `Usage: deno task record [--seconds N] [--out FILE] [config flags]

Records the raw frames of the enabled venues into an NDJSON capture for replay.

Options:
  --seconds N   stop after N seconds (default: run until Ctrl-C or SIGTERM)
  --out FILE    capture file (default: captures/capture_<UTC time>.ndjson)
  -h, --help    show this help

Config flags (as for the engine): --config PATH, --section.key=value`;

/** Directory of captures written without `--out`. */
export const DEFAULT_CAPTURE_DIR = "captures";
/** Characters buffered before the capture is written to disk. */
export const DEFAULT_WRITE_BUFFER_CHARS = 1 << 20;
/** How often buffered lines are written even when the buffer is not full (ms). */
export const DEFAULT_FLUSH_INTERVAL_MS = 1_000;

/**
 * The signals that stop a recording gracefully (the file flushed, exit 0):
 * Ctrl-C, and SIGTERM where the platform has it (`docker stop`, systemd,
 * `timeout`), which would otherwise kill the recorder with up to
 * {@linkcode DEFAULT_FLUSH_INTERVAL_MS} of frames unwritten.
 */
export const STOP_SIGNALS: readonly Deno.Signal[] = Deno.build.os === "windows"
  ? ["SIGINT", "SIGBREAK"]
  : ["SIGINT", "SIGTERM"];

/** A usage error on the command line. */
export class UsageError extends Error {
  /** Makes the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A parsed command line. */
export interface RecordArgs {
  /** Seconds to record; 0 records until stopped. */
  seconds: number;
  /** `--out`, or null for the default. */
  out: string | null;
  /** `--help` was given. */
  help: boolean;
  /** The arguments left for `loadConfig`. */
  configArgs: string[];
}

/**
 * Takes `--seconds N`, `--out FILE` (also `--flag=value`) and `--help` off
 * the command line; the rest is left for `loadConfig`. Throws
 * {@linkcode UsageError}.
 *
 * @example
 * ```ts
 * parseRecordArgs(["--seconds", "10", "--exchanges.alpaca.enabled=false"]);
 * // { seconds: 10, out: null, help: false, configArgs: ["--exchanges.alpaca.enabled=false"] }
 * ```
 */
export function parseRecordArgs(args: readonly string[]): RecordArgs {
  const result: RecordArgs = { seconds: 0, out: null, help: false, configArgs: [] };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "-h" || arg === "--help") {
      result.help = true;
      continue;
    }
    const match = /^--(seconds|out)(?:=(.*))?$/.exec(arg);
    if (!match) {
      result.configArgs.push(arg);
      continue;
    }
    let value = match[2];
    if (value === undefined) {
      value = args[++i];
      if (value === undefined) throw new UsageError(`--${match[1]} needs a value`);
    }
    if (match[1] === "seconds") {
      const seconds = Number(value);
      if (value.trim() === "" || !Number.isFinite(seconds) || seconds < 0) {
        throw new UsageError(`--seconds expects a number >= 0, got ${JSON.stringify(value)}`);
      }
      result.seconds = seconds;
    } else {
      if (value === "") throw new UsageError("--out expects a file name");
      result.out = value;
    }
  }
  return result;
}

/** The default capture path for a recording started at `now` (ms since the epoch). */
export function defaultCapturePath(now: number): string {
  const stamp = new Date(now).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${DEFAULT_CAPTURE_DIR}/capture_${stamp}.ndjson`;
}

const encoder = new TextEncoder();

/**
 * Writes capture lines to a file through a buffer: lines are written when
 * the buffer holds `bufferChars` characters, on {@linkcode CaptureWriter.flush}
 * and on {@linkcode CaptureWriter.close}.
 */
export class CaptureWriter {
  /** The file's path. */
  readonly path: string;
  readonly #file: Deno.FsFile;
  readonly #bufferChars: number;
  #buffer = "";
  #lines = 0;
  #closed = false;

  /** Wraps an open file; see {@linkcode CaptureWriter.create}. */
  constructor(path: string, file: Deno.FsFile, bufferChars = DEFAULT_WRITE_BUFFER_CHARS) {
    this.path = path;
    this.#file = file;
    this.#bufferChars = bufferChars;
  }

  /** Creates (or truncates) `path`, making its directory when needed. */
  static async create(path: string, bufferChars?: number): Promise<CaptureWriter> {
    await Deno.mkdir(dirname(path), { recursive: true });
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    return new CaptureWriter(path, file, bufferChars);
  }

  /** Lines written or buffered so far. */
  get lines(): number {
    return this.#lines;
  }

  /** Appends one record. */
  write(record: CaptureRecord): void {
    if (this.#closed) throw new TypeError(`Capture ${this.path} is closed`);
    this.#buffer += formatCaptureLine(record) + "\n";
    this.#lines++;
    if (this.#buffer.length >= this.#bufferChars) this.flush();
  }

  /** Writes the buffered lines to the file. */
  flush(): void {
    if (this.#buffer.length === 0) return;
    let data = encoder.encode(this.#buffer);
    this.#buffer = "";
    while (data.length > 0) data = data.subarray(this.#file.writeSync(data));
  }

  /** Flushes and closes the file. */
  close(): void {
    if (this.#closed) return;
    try {
      this.flush();
    } finally {
      this.#closed = true;
      this.#file.close();
    }
  }
}

/** Options of {@linkcode recordCapture}. */
export interface RecordOptions {
  /** The capture file. */
  out: string;
  /** Seconds to record; 0 records until `signal` aborts. @default {0} */
  seconds?: number | undefined;
  /** Stops the recording. @default {undefined} */
  signal?: AbortSignal | undefined;
  /** Feed timing per exchange (stale_after_ms, reconnect delays). @default {{}} */
  feedOptions?: Partial<Record<Exchange, FeedOptions>> | undefined;
  /** Extra fields of the meta line. @default {{}} */
  meta?: Record<string, unknown> | undefined;
  /** Figures of the feeds (frames per exchange…). @default {a new MarketStatus} */
  status?: MarketStatus | undefined;
  /** Opens the sockets. @default {(url) => new WebSocket(url)} */
  webSocket?: WebSocketFactory | undefined;
  /** Fetches REST bodies. @default {fetchText from actors/feed.ts} */
  fetchText?: FetchText | undefined;
  /** Logger. @default {nullLogger} */
  log?: Logger | undefined;
  /** Clock for the duration and the periodic flush. @default {systemClock} */
  clock?: Clock | undefined;
  /** µs clock stamping frames and bodies. @default {wallClockUs} */
  nowUs?: (() => number) | undefined;
  /** Interval of the periodic flush (ms). @default {DEFAULT_FLUSH_INTERVAL_MS} */
  flushIntervalMs?: number | undefined;
}

/** What a recording wrote. */
export interface RecordResult {
  /** The capture file. */
  file: string;
  /** Frames written. */
  frames: number;
  /** REST bodies written. */
  rest: number;
  /** Frames written per exchange. */
  framesByExchange: Partial<Record<Exchange, number>>;
}

/**
 * Records `sessions` into `options.out` until `seconds` have passed or
 * `signal` aborts, then stops the feeds, flushes and closes the file.
 * Rejects when a feed fails, after closing the file — and removing it when
 * no frame was written. A session whose `url()` throws does not stop the
 * others: the meta line names its error and its feed retries as the
 * engine's would.
 */
export async function recordCapture(
  sessions: readonly VenueSession[],
  options: RecordOptions,
): Promise<RecordResult> {
  const clock = options.clock ?? systemClock;
  const nowUs = options.nowUs ?? wallClockUs;
  const log = options.log ?? nullLogger;
  const status = options.status ?? new MarketStatus();
  const fetchBody = options.fetchText ?? httpFetchText;
  const seconds = options.seconds ?? 0;
  const flushMs = options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS;
  const writer = await CaptureWriter.create(options.out);
  const result: RecordResult = { file: options.out, frames: 0, rest: 0, framesByExchange: {} };
  const controller = new AbortController();
  const stop = () => controller.abort();
  options.signal?.addEventListener("abort", stop, { once: true });
  if (options.signal?.aborted) stop();
  let failure: { error: unknown } | null = null;
  try {
    writer.write({
      meta: {
        format: CAPTURE_FORMAT,
        source: "deno task record",
        connection_lines: true,
        recorded_at: new Date(clock.now()).toISOString(),
        venues: Object.fromEntries(
          sessions.map((session) => [session.exchange, venueMeta(session)]),
        ),
        ...options.meta,
      },
    });
    const runs = sessions.map((session) => {
      const exchange = session.exchange;
      const marked = markReconnects(session, controller.signal, (conn) => {
        writer.write({ t: nowUs(), x: exchange, conn });
      });
      const spec = feedActor(marked, {
        status,
        log,
        clock,
        nowUs,
        options: options.feedOptions?.[exchange],
        sink: () => {},
        deadLetters: () => {},
        ...(options.webSocket ? { webSocket: options.webSocket } : {}),
        fetchText: async (url, signal) => {
          const body = await fetchBody(url, signal);
          // Its connection is gone (a close line written): the session ignores the body.
          if (signal.aborted) return body;
          writer.write({ t: nowUs(), x: exchange, rest: url, f: body });
          result.rest++;
          return body;
        },
        onRawFrame: (x, f, t) => {
          writer.write({ t, x, f });
          result.frames++;
          result.framesByExchange[x] = (result.framesByExchange[x] ?? 0) + 1;
        },
      });
      const running = spec.start(controller.signal);
      running.done.catch((error) => {
        failure ??= { error };
        log.error("recording feed failed", { exchange, error });
        stop();
      });
      return running;
    });
    const until = seconds > 0 ? clock.now() + seconds * 1000 : Infinity;
    while (!controller.signal.aborted) {
      const remaining = until - clock.now();
      if (remaining <= 0) break;
      try {
        await clock.sleep(Math.min(flushMs, remaining), controller.signal);
      } catch {
        break;
      }
      writer.flush();
    }
    stop();
    await Promise.allSettled(runs.map((running) => running.done));
  } catch (error) {
    failure ??= { error };
  } finally {
    options.signal?.removeEventListener("abort", stop);
    writer.close();
  }
  if (failure !== null) {
    // Nothing to replay in it (REST bodies alone cannot be replayed): not left to be taken for one.
    if (result.frames === 0) await Deno.remove(options.out).catch(() => {});
    throw (failure as { error: unknown }).error;
  }
  return result;
}

/**
 * `session`, telling `mark` of its reconnects: `"close"` when a connection
 * ends — unless `stopping` has aborted (the recording's own stop: the end of
 * the file says it) — and `"open"` when a connection after the first opens
 * (the first opens with the file). Between them, a venue's frames in the
 * capture are those of one connection.
 */
function markReconnects(
  session: VenueSession,
  stopping: AbortSignal,
  mark: (conn: CaptureConnection["conn"]) => void,
): VenueSession {
  let opened = false;
  const marked: VenueSession = {
    exchange: session.exchange,
    url: () => session.url(),
    onOpen: (io) => {
      if (opened) mark("open");
      opened = true;
      return session.onOpen(io);
    },
    onFrame: (frame, receivedUs, io) => session.onFrame(frame, receivedUs, io),
    onClose: () => {
      if (!stopping.aborted) mark("close");
      session.onClose();
    },
    status: () => session.status(),
  };
  if (session.onTick) marked.onTick = (io, nowMs) => session.onTick!(io, nowMs);
  if (session.quiet) marked.quiet = (nowMs) => session.quiet!(nowMs);
  return marked;
}

/**
 * A venue's entry in the meta line: its URL, or the error its `url()` throws
 * (Alpaca without credentials). Such a venue is recorded as the engine runs
 * it: its feed reports the error and retries, and the other venues record.
 */
function venueMeta(session: VenueSession): { url: string } | { error: string } {
  try {
    return { url: session.url() };
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

/** Feed timing of each exchange from the configuration. */
export function feedOptionsOf(config: Config): Partial<Record<Exchange, FeedOptions>> {
  const options: Partial<Record<Exchange, FeedOptions>> = {};
  for (const [exchange, section] of Object.entries(config.exchanges)) {
    options[exchange as Exchange] = {
      stale_after_ms: section.stale_after_ms,
      reconnect_initial_ms: section.reconnect_initial_ms,
      reconnect_max_ms: section.reconnect_max_ms,
    };
  }
  return options;
}

/**
 * `deno task record`: records the configured venues' frames to a capture;
 * returns the exit code (1 when the arguments are wrong, the recording
 * failed, or no venue sent a frame).
 */
export async function main(args: readonly string[]): Promise<number> {
  let parsed: RecordArgs;
  let config: Config;
  try {
    parsed = parseRecordArgs(args);
    if (parsed.help) {
      console.log(USAGE);
      return 0;
    }
    config = await loadConfig({ args: parsed.configArgs });
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n\n${USAGE}`);
      return 2;
    }
    if (error instanceof ConfigError) {
      console.error(error.message);
      return 2;
    }
    throw error;
  }
  const sessions = createSessions(config);
  if (sessions.length === 0) {
    console.error("No exchange is enabled: nothing to record");
    return 2;
  }
  const log = createLogger({ level: config.log.level, write: (line) => console.error(line) });
  const out = parsed.out ?? defaultCapturePath(Date.now());
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  for (const signal of STOP_SIGNALS) Deno.addSignalListener(signal, onSignal);
  try {
    const symbols = Object.fromEntries(
      sessions.map((session) => [session.exchange, config.exchanges[session.exchange].symbols]),
    );
    console.error(
      `Recording ${sessions.map((session) => session.exchange).join(", ")} to ${out}` +
        (parsed.seconds > 0 ? ` for ${parsed.seconds} s` : " until Ctrl-C"),
    );
    const result = await recordCapture(sessions, {
      out,
      seconds: parsed.seconds,
      signal: controller.signal,
      feedOptions: feedOptionsOf(config),
      meta: { symbols },
      log,
    });
    const parts = Object.entries(result.framesByExchange).map(([x, n]) => `${x} ${n}`);
    console.log(
      `Recorded ${result.frames} frames and ${result.rest} REST bodies to ${result.file}` +
        (parts.length > 0 ? ` (${parts.join(", ")})` : ""),
    );
    if (result.frames === 0) {
      // No venue answered (no network, a wrong URL): the capture holds nothing to replay, so it
      // is not left behind to be mistaken for one (REST bodies alone cannot be replayed either).
      await Deno.remove(result.file).catch(() => {});
      console.error(
        `Recording failed: no venue sent a frame (see the feed lines above); ${result.file} removed`,
      );
      return 1;
    }
    return 0;
  } catch (error) {
    const removed = await Deno.stat(out).then(() => false, () => true);
    console.error(
      `Recording failed: ${error instanceof Error ? error.message : String(error)}` +
        (removed ? `; no frame was recorded, ${out} removed` : ""),
    );
    return 1;
  } finally {
    for (const signal of STOP_SIGNALS) Deno.removeSignalListener(signal, onSignal);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
