/**
 * An actor that runs in a thread of its own (a Web Worker), as a supervised
 * child of the main thread: the main side ({@linkcode startThreadChild}) and
 * the thread side ({@linkcode serveThread}) of the batch writer's and the
 * validator's threads. The thread opens its own connections from the
 * settings it is sent, so its work never takes time from the main thread.
 *
 * The child's life maps onto the worker's: `ready` when the thread says its
 * actor is ready, `done` when it exits (rejecting when it failed or the worker
 * died), and stopping asks the thread to stop (its actor finishes what it
 * holds) before the worker is terminated — after `stopTimeoutMs` at the
 * latest, so a thread that ignores the stop never outlives its child (two
 * batch writers on one durable consumer). The thread reports its figures
 * (`status`, or `alive` before it has any) every `status_interval_ms` and once
 * more at the end, and its log lines are written by the main thread's logger.
 * A Worker that ends by itself (`close()`, `Deno.exit()`) says nothing, so a
 * thread silent for `silentAfterMs` is taken for dead: terminated, and its
 * child fails (the supervisor restarts it).
 *
 * Messages, main → thread: `start` (once), `stop`, and any the child adds
 * (the writer's `clickhouse_ready`). Thread → main: `ready`, `done`,
 * `failed`, `status`, `log`.
 *
 * @module
 */

import { errorFields, type Fields, type Level, type Logger, loggerOf } from "../lib/log.ts";
import type { ChildSpec, Running } from "./types.ts";

/** Messages from the main thread to a child's thread. */
export type ToThread<Start> =
  | { type: "start"; start: Start; status_interval_ms: number }
  | { type: "stop" }
  | { type: string };

/** Messages from a child's thread to the main thread. */
export type FromThread<Status> =
  | { type: "ready" }
  | { type: "done" }
  | { type: "failed"; error: Record<string, unknown> }
  | { type: "status"; status: Status }
  | { type: "alive" }
  | { type: "log"; level: Level; bindings: Fields; message: string; fields?: Fields };

/** What {@linkcode startThreadChild} needs. */
export interface ThreadChildOptions<Start, Status> {
  /** The thread's module: it calls {@linkcode serveThread}. */
  module: URL;
  /** The worker's name. */
  name: string;
  /** Sent to the thread once, with `start`. */
  start: Start;
  /** How often the thread reports its figures, in ms. */
  statusIntervalMs: number;
  /** Receives the thread's figures. */
  onStatus: (status: Status) => void;
  /** Writes the thread's log lines. */
  log: Logger;
  /**
   * How long a thread asked to stop may take before its worker is
   * terminated, in ms: at most the child's `shutdownMs`.
   * @default {DEFAULT_THREAD_STOP_TIMEOUT_MS}
   */
  stopTimeoutMs?: number;
  /**
   * How long the thread may send nothing (it reports every `statusIntervalMs`)
   * before it is taken for dead, in ms. @default {max(20 × statusIntervalMs, 10 s)}
   */
  silentAfterMs?: number;
}

/** Default of {@linkcode ThreadChildOptions.stopTimeoutMs}, ms: the supervisor's default shutdown time. */
export const DEFAULT_THREAD_STOP_TIMEOUT_MS = 5_000;

/** A running thread child: its {@linkcode Running} and a way to send it messages. */
export interface ThreadChild extends Running {
  /** Sends `message` to the thread (nothing once it has finished). */
  send(message: { type: string }): void;
}

/**
 * Starts `options.module` in a Web Worker and returns the child's `Running`.
 * Aborting `signal` asks the thread to stop.
 */
export function startThreadChild<Start, Status>(
  options: ThreadChildOptions<Start, Status>,
  signal: AbortSignal,
): ThreadChild {
  const { log } = options;
  const worker = new Worker(options.module, { type: "module", name: options.name });
  const ready = Promise.withResolvers<void>();
  const done = Promise.withResolvers<void>();
  let finished = false;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  let lastHeardAt = Date.now();
  let heard = false;
  const silentAfterMs = options.silentAfterMs ?? Math.max(20 * options.statusIntervalMs, 10_000);
  const tickMs = Math.max(options.statusIntervalMs, 100);
  let lastTickAt = Date.now();
  const watchdog = setInterval(() => {
    const now = Date.now();
    const late = now - lastTickAt > 2 * tickMs;
    lastTickAt = now;
    // A late tick means this (main) thread was busy: the thread's messages may be waiting in
    // the queue behind this timer. Judge at the next tick, once they have been read.
    if (late) return;
    const silentMs = now - lastHeardAt;
    // Before its first message the thread may still be loading its modules: longer.
    if (silentMs < (heard ? silentAfterMs : Math.max(silentAfterMs, 30_000))) return;
    log.error("thread silent; taken for dead", { thread: options.name, silent_ms: silentMs });
    finish(new Error(`Thread ${options.name} sent nothing for ${silentMs} ms: taken for dead`));
  }, tickMs);
  const finish = (error?: Error) => {
    if (finished) return;
    finished = true;
    clearInterval(watchdog);
    clearTimeout(killTimer);
    signal.removeEventListener("abort", onAbort);
    worker.terminate();
    if (error) {
      ready.reject(error);
      done.reject(error);
    } else {
      ready.resolve();
      done.resolve();
    }
  };
  const send = (message: ToThread<Start>) => {
    if (!finished) worker.postMessage(message);
  };
  const stopTimeoutMs = options.stopTimeoutMs ?? DEFAULT_THREAD_STOP_TIMEOUT_MS;
  const onAbort = () => {
    send({ type: "stop" });
    killTimer = setTimeout(() => {
      log.warn("thread did not stop in time; terminated", {
        thread: options.name,
        stop_timeout_ms: stopTimeoutMs,
      });
      finish(new Error(`Thread ${options.name} did not stop within ${stopTimeoutMs} ms`));
    }, stopTimeoutMs);
  };

  worker.onmessage = (event: MessageEvent<FromThread<Status>>) => {
    const message = event.data;
    lastHeardAt = Date.now();
    heard = true;
    switch (message.type) {
      case "ready":
        ready.resolve();
        break;
      case "status":
        options.onStatus(message.status);
        break;
      case "log":
        log.child(message.bindings)[message.level](message.message, message.fields);
        break;
      case "done":
        finish();
        break;
      case "failed": {
        const error = new Error(
          String(message.error.message ?? `Thread ${options.name} failed`),
        );
        error.name = String(message.error.name ?? "Error");
        finish(error);
        break;
      }
    }
  };
  worker.onerror = (event: ErrorEvent) => {
    // Handled here: an error in the worker must not take the engine down.
    event.preventDefault();
    finish(new Error(`Thread ${options.name} died: ${event.message}`));
  };
  worker.onmessageerror = () => {
    finish(new Error(`Thread ${options.name} sent a message that could not be read`));
  };

  send({ type: "start", start: options.start, status_interval_ms: options.statusIntervalMs });
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) onAbort();
  ready.promise.catch(() => {});
  done.promise.catch(() => {});
  return {
    ready: ready.promise,
    done: done.promise,
    stats: () => ({ kind: "worker" }),
    send,
  };
}

/** What a thread's `run` gets besides its start settings. */
export interface ThreadContext<Status> {
  /** Writes log lines through the main thread. */
  log: Logger;
  /** Aborted when the main thread asks the thread to stop. */
  signal: AbortSignal;
  /** Sets what `status` reports carry from now on. */
  reportStatus(status: () => Status): void;
  /**
   * Starts `child` with the thread's stop signal, tells the main thread once
   * it is ready, and resolves when it exits (rejects when it fails).
   */
  runChild(child: ChildSpec): Promise<void>;
}

/** The parts of a worker's global scope the thread side uses. */
interface WorkerScope {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
}

/** The worker's global scope (only used inside a thread). */
const scope = globalThis as unknown as WorkerScope;

function post<Status>(message: FromThread<Status>): void {
  scope.postMessage(message);
}

/** A logger whose lines are written by the main thread (errors as plain fields). */
function threadLogger(bindings: Fields): Logger {
  const emit = (level: Level, message: string, fields?: Fields) => {
    let plain: Fields | undefined;
    if (fields) {
      plain = {};
      for (const [key, value] of Object.entries(fields)) {
        plain[key] = value instanceof Error ? errorFields(value) : value;
      }
    }
    try {
      post({ type: "log", level, bindings, message, ...(plain ? { fields: plain } : {}) });
    } catch {
      // A field that cannot be cloned: the line still goes, without its fields.
      post({ type: "log", level, bindings, message });
    }
  };
  return loggerOf(emit, (more) => threadLogger({ ...bindings, ...more }));
}

/**
 * The thread side: waits for `start`, runs `run` until it returns (then
 * reports `done`) or throws (then `failed`), reports the figures given to
 * `reportStatus` every `status_interval_ms` and once at the end, and closes
 * the thread. Other messages than `start` and `stop` go to `onMessage`.
 */
export function serveThread<Start, Status>(
  run: (start: Start, context: ThreadContext<Status>) => Promise<void>,
  onMessage: (message: { type: string }) => void = () => {},
): void {
  const stop = new AbortController();
  let status: (() => Status) | null = null;
  const report = () => {
    if (status) post({ type: "status", status: status() });
    else post({ type: "alive" });
  };
  const serve = async (start: Start, intervalMs: number) => {
    const timer = setInterval(report, intervalMs);
    try {
      await run(start, {
        log: threadLogger({}),
        signal: stop.signal,
        reportStatus: (read) => status = read,
        runChild: async (child) => {
          const running = child.start(stop.signal);
          // When it fails to start, that is what is reported; its `done` must not go unhandled.
          running.done.catch(() => {});
          await running.ready;
          post({ type: "ready" });
          await running.done;
        },
      });
      report();
      post({ type: "done" });
    } catch (error) {
      report();
      post({ type: "failed", error: errorFields(error as Error) });
    } finally {
      clearInterval(timer);
      scope.close();
    }
  };
  scope.onmessage = (event: MessageEvent) => {
    const message = event.data as ToThread<Start>;
    if (message.type === "start" && "start" in message) {
      const { start, status_interval_ms } = message as Extract<ToThread<Start>, { start: Start }>;
      void serve(start, status_interval_ms);
    } else if (message.type === "stop") stop.abort();
    else onMessage(message);
  };
}
