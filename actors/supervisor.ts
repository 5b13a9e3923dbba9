/**
 * Erlang/OTP-style supervisors: a supervisor starts its children in order,
 * restarts them by its strategy and their restart types, spaces restarts with
 * backoff, and fails to its parent when restarts exceed its intensity.
 *
 * A child that does not exit within its shutdown time after its signal
 * aborted is abandoned: the supervisor goes on (stopping the next child, say)
 * but, since a promise cannot be killed, the child may still be running — so
 * it shows as `stopping` and is not started again until it has exited, and
 * its supervisor has not finished (`done` unsettled) until then. Two
 * incarnations of one child never run at once: not two execution engines on
 * one durable consumer.
 *
 * A supervisor is itself a {@linkcode ChildSpec} ({@linkcode supervisor}), so
 * trees nest; the root is started with {@linkcode startRoot}.
 *
 * @example
 * ```ts
 * import { startRoot } from "./supervisor.ts";
 * import type { ChildSpec } from "./types.ts";
 *
 * const worker: ChildSpec = {
 *   name: "ticker",
 *   start(signal) {
 *     const done = new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
 *     return { ready: Promise.resolve(), done, stats: () => ({ kind: "worker" }) };
 *   },
 * };
 * await using root = await startRoot({ name: "root", intensity: 3, periodMs: 10_000 }, [worker]);
 * root.inspect(); // rows for "root" and "root/ticker"
 * ```
 *
 * @module
 */

import { backoffDelay } from "../lib/backoff.ts";
import { type Clock, monotonicOf, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import type {
  ActorInfo,
  ChildSpec,
  ChildStats,
  ChildStatus,
  RestartType,
  Running,
  Strategy,
} from "./types.ts";

/** Default restart strategy. */
export const DEFAULT_STRATEGY: Strategy = "one_for_one";
/** Default restart intensity: restarts allowed within {@linkcode DEFAULT_PERIOD_MS} (OTP's 1). */
export const DEFAULT_INTENSITY = 1;
/** Default window of the restart intensity, in milliseconds (OTP's 5 s). */
export const DEFAULT_PERIOD_MS = 5_000;
/** Default restart type of a child. */
export const DEFAULT_RESTART: RestartType = "permanent";
/** Default time a child has to stop after its signal aborts, in milliseconds. */
export const DEFAULT_SHUTDOWN_MS = 5_000;
/**
 * How long, at most, a restart of an abandoned child (or a supervisor that
 * fails) waits for the abandoned copy to exit, in ms: long enough for a slow
 * stop, bounded so that a copy that never exits cannot stop supervision (or
 * the report of a failure to the parent) for good.
 */
export const DEFAULT_ABANDONED_WAIT_MS = 30_000;
/**
 * Default shutdown time of a supervisor as a child: unlimited, as in OTP,
 * since each of its own children is bounded by its own shutdown time.
 */
export const DEFAULT_SUPERVISOR_SHUTDOWN_MS = Infinity;
/** Default backoff between restarts. */
export const DEFAULT_RESTART_BACKOFF: Readonly<Required<RestartBackoff>> = {
  initialMs: 100,
  maxMs: 5_000,
  factor: 2,
  jitter: 0.2,
};

/** Backoff between restarts of a child, growing with its recent restarts. */
export interface RestartBackoff {
  /** Delay before the first restart within the period. @default {100} */
  initialMs?: number;
  /** Longest delay. @default {5000} */
  maxMs?: number;
  /** Growth per recent restart. @default {2} */
  factor?: number;
  /** Fraction 0..1 of random spread. @default {0.2} */
  jitter?: number;
}

/** The configuration's `supervisor` section, as far as {@linkcode restartLimits} reads it. */
export interface SupervisorConfig {
  /** See {@linkcode SupervisorOptions.intensity}. */
  intensity: number;
  /** See {@linkcode SupervisorOptions.periodMs}. */
  period_ms: number;
  /** See {@linkcode RestartBackoff.initialMs}. */
  backoff_initial_ms: number;
  /** See {@linkcode RestartBackoff.maxMs}. */
  backoff_max_ms: number;
  /** See {@linkcode RestartBackoff.jitter}. */
  backoff_jitter: number;
}

/**
 * A supervisor's restart intensity, period and backoff from the
 * configuration's `supervisor` section, for every supervisor of the engine.
 *
 * @example
 * ```ts
 * supervisor({ name: "market", ...restartLimits(config.supervisor) }, children);
 * ```
 */
export function restartLimits(
  config: SupervisorConfig,
): Required<Pick<SupervisorOptions, "intensity" | "periodMs" | "backoff">> {
  return {
    intensity: config.intensity,
    periodMs: config.period_ms,
    backoff: {
      initialMs: config.backoff_initial_ms,
      maxMs: config.backoff_max_ms,
      jitter: config.backoff_jitter,
    },
  };
}

/** Options for {@linkcode supervisor}, {@linkcode Supervisor} and {@linkcode startRoot}. */
export interface SupervisorOptions {
  /** Name, unique among its siblings; the first segment of its rows' paths. */
  name: string;
  /** Which children are restarted when one dies. @default {DEFAULT_STRATEGY} */
  strategy?: Strategy;
  /** Most restarts within `periodMs`; one more fails the supervisor. @default {DEFAULT_INTENSITY} */
  intensity?: number;
  /** Window of `intensity`, in milliseconds. @default {DEFAULT_PERIOD_MS} */
  periodMs?: number;
  /** Backoff between restarts. @default {DEFAULT_RESTART_BACKOFF} */
  backoff?: RestartBackoff;
  /**
   * Clock for backoff delays, shutdown timeouts and the restart-intensity
   * window (kept on its monotonic time: see {@linkcode monotonicOf}). @default {systemClock}
   */
  clock?: Clock;
  /**
   * How long a restart of an abandoned child, or a failing supervisor, waits
   * for the abandoned copy to exit. @default {DEFAULT_ABANDONED_WAIT_MS}
   */
  abandonedWaitMs?: number;
  /** Logger for restarts, failures and kills. @default {nullLogger} */
  log?: Logger;
  /** Uniform [0, 1) source for backoff jitter. @default {Math.random} */
  random?: () => number;
  /** Restart type of this supervisor as a child. @default {DEFAULT_RESTART} */
  restart?: RestartType;
  /** Shutdown time of this supervisor as a child. @default {DEFAULT_SUPERVISOR_SHUTDOWN_MS} */
  shutdownMs?: number;
}

/** A supervisor gave up: its restart intensity was exceeded. `cause` is the last child failure. */
export class SupervisorError extends Error {
  /** Name of the supervisor. */
  readonly supervisor: string;

  /** Creates the error for the supervisor named `supervisor`. */
  constructor(supervisor: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SupervisorError";
    this.supervisor = supervisor;
  }
}

/** A supervisor could not start: one of its children failed to. `cause` is that failure. */
export class SupervisorStartError extends SupervisorError {
  /** Name of the child that failed to start. */
  readonly child: string;

  /** Creates the error for `child` of `supervisor` failing with `cause`. */
  constructor(supervisor: string, child: string, cause: unknown) {
    super(supervisor, `Supervisor ${supervisor} failed to start child ${child}`, { cause });
    this.name = "SupervisorStartError";
    this.child = child;
  }
}

interface Child {
  readonly spec: ChildSpec;
  readonly index: number;
  kind: ActorInfo["kind"];
  status: ChildStatus;
  restarts: number;
  lastError: string | null;
  /** Bumped on every start; exits of older incarnations are stale. */
  incarnation: number;
  running: Running | null;
  controller: AbortController | null;
  /**
   * Settles when the incarnation abandoned after its shutdown time has
   * exited; null when none is left running. The child is not started again
   * before.
   */
  abandoned: Promise<void> | null;
  /** When (monotonic ms) this child was restarted after its own exit, within the period. */
  readonly restartTimes: number[];
}

interface Exit {
  readonly child: Child;
  readonly incarnation: number;
  readonly abnormal: boolean;
  readonly error: unknown;
}

/**
 * A running supervisor. Use {@linkcode supervisor} to nest one in a tree and
 * {@linkcode startRoot} to start the root; `done` rejects with a
 * {@linkcode SupervisorError} when it gives up (and with a
 * {@linkcode SupervisorStartError} when it could not start).
 */
export class Supervisor implements Running, AsyncDisposable {
  /** Its name. */
  readonly name: string;
  /** Resolves once every child is ready; rejects with {@linkcode SupervisorStartError}. */
  readonly ready: Promise<void>;
  /**
   * Resolves after a shutdown; rejects when the supervisor failed. Either
   * way only once every child has exited, abandoned ones included.
   */
  readonly done: Promise<void>;
  readonly #strategy: Strategy;
  readonly #intensity: number;
  readonly #periodMs: number;
  readonly #backoff: Required<RestartBackoff>;
  readonly #clock: Clock;
  readonly #abandonedWaitMs: number;
  /** Monotonic time of the clock: restart times, which a wall clock set back must not keep. */
  readonly #monotonic: () => number;
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #children: readonly Child[];
  readonly #abort = new AbortController();
  readonly #exits: Exit[] = [];
  readonly #restartTimes: number[] = [];
  #wake: (() => void) | null = null;
  #status: ChildStatus = "starting";
  #error: string | null = null;
  #finished = false;

  /** Starts `children` in order; `signal` aborting shuts the supervisor down. */
  constructor(options: SupervisorOptions, children: readonly ChildSpec[], signal?: AbortSignal) {
    validate(options, children);
    this.name = options.name;
    this.#strategy = options.strategy ?? DEFAULT_STRATEGY;
    this.#intensity = options.intensity ?? DEFAULT_INTENSITY;
    this.#periodMs = options.periodMs ?? DEFAULT_PERIOD_MS;
    this.#backoff = { ...DEFAULT_RESTART_BACKOFF, ...options.backoff };
    this.#clock = options.clock ?? systemClock;
    this.#abandonedWaitMs = options.abandonedWaitMs ?? DEFAULT_ABANDONED_WAIT_MS;
    this.#monotonic = monotonicOf(this.#clock);
    this.#log = (options.log ?? nullLogger).child({ supervisor: options.name });
    this.#random = options.random ?? Math.random;
    this.#children = children.map((spec, index) => ({
      spec,
      index,
      kind: "worker",
      status: "stopped",
      restarts: 0,
      lastError: null,
      incarnation: 0,
      running: null,
      controller: null,
      abandoned: null,
      restartTimes: [],
    }));
    const onAbort = () => this.#abort.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
    this.#abort.signal.addEventListener("abort", () => this.#wakeUp(), { once: true });
    const ready = Promise.withResolvers<void>();
    this.ready = ready.promise;
    this.done = this.#run(ready.resolve, ready.reject).finally(() => {
      this.#finished = true;
      signal?.removeEventListener("abort", onAbort);
    });
    this.done.catch(ready.reject);
    this.ready.catch(() => {});
  }

  /** Its own status. */
  get status(): ChildStatus {
    return this.#status;
  }

  /** Its kind and its descendants' rows, names relative to it (`market/validator`). */
  stats(): ChildStats {
    return { kind: "supervisor", children: this.#rows() };
  }

  /** The tree as flat rows, its own first, names as paths (`root/market/validator`). */
  inspect(): ActorInfo[] {
    const self: ActorInfo = {
      name: this.name,
      kind: "supervisor",
      status: this.#status,
      restarts: 0,
      mailbox: null,
      last_error: this.#error,
    };
    return [self, ...this.#rows().map((row) => ({ ...row, name: `${this.name}/${row.name}` }))];
  }

  /** Resolves when it has finished: with the error it failed with, if any. */
  closed(): Promise<Error | undefined> {
    return this.done.then(
      () => undefined,
      (error) => error instanceof Error ? error : new Error(String(error)),
    );
  }

  /** Shuts it down (children in reverse order) and waits until it has finished. */
  async stop(reason?: unknown): Promise<void> {
    this.#abort.abort(reason);
    await this.closed();
  }

  /** Same as {@linkcode Supervisor.stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  async #run(markReady: () => void, failReady: (error: unknown) => void): Promise<void> {
    const signal = this.#abort.signal;
    for (const child of this.#children) {
      const failure = await this.#start(child);
      if (!failure) continue;
      const error = new SupervisorStartError(this.name, child.spec.name, failure.error);
      if (!signal.aborted) this.#log.error("start failed", { child: child.spec.name, error });
      this.#status = "stopping";
      await this.#stopAll();
      failReady(error);
      await this.#abandonedExits(true);
      if (signal.aborted) {
        this.#status = "stopped";
        return;
      }
      this.#status = "failed";
      this.#error = error.message;
      throw error;
    }
    this.#status = "running";
    markReady();
    try {
      for (let exit = await this.#nextExit(); exit; exit = await this.#nextExit()) {
        await this.#handle(exit);
      }
    } catch (error) {
      if (!signal.aborted) {
        this.#log.error("giving up", { error });
        this.#status = "stopping";
        await this.#stopAll();
        await this.#abandonedExits(true);
        this.#status = "failed";
        this.#error = error instanceof Error ? error.message : String(error);
        throw error;
      }
    }
    this.#log.info("shutting down");
    this.#status = "stopping";
    await this.#stopAll();
    await this.#abandonedExits();
    this.#status = "stopped";
  }

  /** Starts one child and waits for it to be ready; returns its failure, if any. */
  async #start(child: Child): Promise<{ error: unknown } | undefined> {
    const incarnation = ++child.incarnation;
    const controller = new AbortController();
    child.controller = controller;
    child.running = null;
    child.status = "starting";
    try {
      const running = child.spec.start(controller.signal);
      child.running = running;
      running.ready.catch(() => {});
      running.done.then(
        () => this.#push({ child, incarnation, abnormal: false, error: undefined }),
        (error) => this.#push({ child, incarnation, abnormal: true, error }),
      );
      const exitedEarly = running.done.then(() => {
        throw new Error(`Child ${child.spec.name} exited before it was ready`);
      });
      await abortable(Promise.race([running.ready, exitedEarly]), this.#abort.signal);
      child.status = "running";
      return undefined;
    } catch (error) {
      await this.#terminate(child);
      if (!this.#abort.signal.aborted) {
        child.status = "failed";
        child.lastError = errorMessage(error);
      }
      return { error };
    }
  }

  /**
   * Aborts a live child and waits up to its shutdown time for it to exit.
   * One that overruns it is abandoned: the supervisor moves on, but the child
   * stays `stopping` (and is not started again) until it exits.
   */
  async #terminate(child: Child): Promise<void> {
    if (child.status !== "running" && child.status !== "starting") return;
    child.status = "stopping";
    child.controller?.abort();
    const shutdownMs = child.spec.shutdownMs ?? DEFAULT_SHUTDOWN_MS;
    const running = child.running;
    if (running && !(await settlesWithin(running.done, shutdownMs, this.#clock))) {
      this.#log.error(
        "child killed: it did not stop within its shutdown time, abandoned; " +
          "it is not started again until it exits",
        { child: child.spec.name, shutdownMs },
      );
      const incarnation = child.incarnation;
      const exited = running.done.then(() => {}, () => {}).then(() => {
        if (child.incarnation === incarnation && child.status === "stopping") {
          child.status = "stopped";
        }
        this.#log.warn("abandoned child exited", { child: child.spec.name });
      });
      // An older abandoned copy may still run too (a restart that gave up waiting for it):
      // both are waited for, and only the latest record is cleared, once all have exited.
      const previous = child.abandoned;
      const all: Promise<void> = previous === null
        ? exited
        : Promise.all([previous, exited]).then(() => {});
      child.abandoned = all;
      void all.then(() => {
        if (child.abandoned === all) child.abandoned = null;
      });
      return;
    }
    child.status = "stopped";
  }

  /**
   * Waits until every abandoned child has exited: until then this supervisor
   * has not finished, so a parent does not start it (and them) again
   * alongside.
   */
  async #abandonedExits(bounded = false): Promise<void> {
    const abandoned = this.#children.filter((child) => child.abandoned !== null);
    if (abandoned.length === 0) return;
    this.#log.error("waiting for abandoned children to exit before finishing", {
      children: abandoned.map((child) => child.spec.name),
    });
    const exited = await exitsWithin(
      abandoned,
      bounded ? this.#abandonedWaitMs : Infinity,
      this.#clock,
    );
    if (!exited) {
      // A failure must reach the parent (the root's: the engine's exit) even so.
      this.#log.error("abandoned children still running; failing anyway", {
        children: abandoned.filter((child) => child.abandoned !== null).map((c) => c.spec.name),
      });
    }
  }

  async #stopAll(): Promise<void> {
    for (const child of this.#children.toReversed()) {
      await this.#terminate(child);
      if (child.status === "restarting") child.status = "stopped";
    }
  }

  async #handle({ child, incarnation, abnormal, error }: Exit): Promise<void> {
    if (incarnation !== child.incarnation || child.status !== "running") return;
    if (abnormal) {
      child.lastError = errorMessage(error);
      this.#log.error("child failed", { child: child.spec.name, error });
    } else {
      this.#log.info("child exited", { child: child.spec.name });
    }
    child.status = abnormal ? "failed" : "exited";
    const restart = child.spec.restart ?? DEFAULT_RESTART;
    if (restart === "temporary" || (restart === "transient" && !abnormal)) return;
    let failure: { child: Child; error: unknown } | undefined = { child, error };
    while (failure) failure = await this.#restart(failure.child, failure.error);
  }

  /**
   * Restarts `child` and, by the strategy, its siblings; returns a child that
   * then failed to start (to be handled as another restart), if any.
   */
  async #restart(
    child: Child,
    cause: unknown,
  ): Promise<{ child: Child; error: unknown } | undefined> {
    // Monotonic: after the wall clock is set back, old restarts must still leave the window.
    const now = this.#monotonic();
    const since = now - this.#periodMs;
    prune(this.#restartTimes, since);
    this.#restartTimes.push(now);
    if (this.#restartTimes.length > this.#intensity) {
      throw new SupervisorError(
        this.name,
        `Supervisor ${this.name} exceeded ${this.#intensity} restarts in ${this.#periodMs} ms`,
        { cause },
      );
    }
    prune(child.restartTimes, since);
    const delayMs = backoffDelay(child.restartTimes.length, {
      ...this.#backoff,
      random: this.#random,
    });
    child.restartTimes.push(now);

    const group = this.#strategy === "one_for_one"
      ? [child]
      : this.#children.slice(this.#strategy === "one_for_all" ? 0 : child.index);
    const members = group.filter((member) =>
      member === child || (member.spec.restart ?? DEFAULT_RESTART) !== "temporary"
    );
    for (const sibling of group.toReversed()) {
      if (sibling === child) continue;
      await this.#terminate(sibling);
      // An abandoned one stays "stopping" until it exits.
      if (members.includes(sibling) && sibling.abandoned === null) sibling.status = "restarting";
    }
    child.status = "restarting";
    this.#log.warn("restarting", {
      child: child.spec.name,
      strategy: this.#strategy,
      children: members.map((c) => c.spec.name),
      delayMs,
    });
    // No two incarnations of one child at once (two execution engines on one consumer): the
    // group starts again once every abandoned member has exited — waiting at most
    // `abandonedWaitMs`, so a copy that never exits cannot stop supervision for good.
    const abandoned = members.filter((member) => member.abandoned !== null);
    if (abandoned.length > 0) {
      this.#log.error("restart waits for abandoned children to exit", {
        children: abandoned.map((member) => member.spec.name),
      });
      const exited = await abortable(
        exitsWithin(abandoned, this.#abandonedWaitMs, this.#clock),
        this.#abort.signal,
      );
      if (!exited) {
        this.#log.error("abandoned children still running; starting them again anyway", {
          children: abandoned.filter((m) => m.abandoned !== null).map((m) => m.spec.name),
        });
      }
    }
    // Every member starts again, also one whose abandoned copy exited while its siblings stopped.
    for (const member of members) member.status = "restarting";
    await this.#clock.sleep(delayMs, this.#abort.signal);

    for (const member of members) {
      if (member.status !== "restarting") continue;
      member.restarts++;
      const failure = await this.#start(member);
      this.#abort.signal.throwIfAborted();
      if (failure) {
        this.#log.error("restart failed", { child: member.spec.name, error: failure.error });
        return { child: member, error: failure.error };
      }
    }
    return undefined;
  }

  #rows(): ActorInfo[] {
    const rows: ActorInfo[] = [];
    for (const child of this.#children) {
      let stats: ChildStats | undefined;
      try {
        stats = child.running?.stats();
      } catch {
        stats = undefined;
      }
      child.kind = stats?.kind ?? child.kind;
      rows.push({
        name: child.spec.name,
        kind: child.kind,
        status: child.status,
        restarts: child.restarts,
        mailbox: stats?.mailbox ?? null,
        last_error: child.lastError,
      });
      for (const row of stats?.children ?? []) {
        rows.push({ ...row, name: `${child.spec.name}/${row.name}` });
      }
    }
    return rows;
  }

  async #nextExit(): Promise<Exit | undefined> {
    while (!this.#abort.signal.aborted) {
      const exit = this.#exits.shift();
      if (exit) return exit;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    return undefined;
  }

  #push(exit: Exit): void {
    if (this.#finished) return;
    this.#exits.push(exit);
    this.#wakeUp();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/**
 * A supervisor as a child of another supervisor: its failure (restart
 * intensity exceeded) is an abnormal exit its parent handles.
 *
 * @example
 * ```ts
 * import { supervisor } from "./supervisor.ts";
 *
 * const market = supervisor({ name: "market", strategy: "rest_for_one" }, []);
 * const root = supervisor({ name: "root" }, [market]);
 * ```
 */
export function supervisor(options: SupervisorOptions, children: readonly ChildSpec[]): ChildSpec {
  validate(options, children);
  return {
    name: options.name,
    restart: options.restart ?? DEFAULT_RESTART,
    shutdownMs: options.shutdownMs ?? DEFAULT_SUPERVISOR_SHUTDOWN_MS,
    start: (signal) => new Supervisor(options, children, signal),
  };
}

/**
 * Starts a root supervisor and waits until all its children are ready;
 * rejects with {@linkcode SupervisorStartError} if one fails to start (the
 * others are stopped by then). The caller awaits `done` and exits non-zero
 * when it rejects.
 *
 * @example
 * ```ts
 * import { startRoot } from "./supervisor.ts";
 *
 * const root = await startRoot({ name: "root" }, []);
 * await root.stop();
 * ```
 */
export async function startRoot(
  options: SupervisorOptions,
  children: readonly ChildSpec[],
  signal?: AbortSignal,
): Promise<Supervisor> {
  const root = new Supervisor(options, children, signal);
  await root.ready;
  return root;
}

function validate(options: SupervisorOptions, children: readonly ChildSpec[]): void {
  const { name, intensity = DEFAULT_INTENSITY, periodMs = DEFAULT_PERIOD_MS } = options;
  if (!name || name.includes("/")) throw new TypeError(`Invalid supervisor name: "${name}"`);
  const strategy = options.strategy ?? DEFAULT_STRATEGY;
  if (!["one_for_one", "one_for_all", "rest_for_one"].includes(strategy)) {
    throw new TypeError(`Unknown supervisor strategy: ${strategy}`);
  }
  if (!Number.isInteger(intensity) || intensity < 0) {
    throw new RangeError(`Supervisor intensity must be a non-negative integer, got ${intensity}`);
  }
  if (!(periodMs > 0)) throw new RangeError(`Supervisor periodMs must be > 0, got ${periodMs}`);
  const names = new Set<string>();
  for (const child of children) {
    if (!child.name || child.name.includes("/")) {
      throw new TypeError(`Invalid child name in supervisor ${name}: "${child.name}"`);
    }
    if (names.has(child.name)) {
      throw new TypeError(`Duplicate child name in supervisor ${name}: "${child.name}"`);
    }
    names.add(child.name);
  }
}

function prune(times: number[], since: number): void {
  while (times.length > 0 && (times[0] as number) <= since) times.shift();
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Whether the abandoned copies of `children` all exit within `ms`. */
function exitsWithin(children: readonly Child[], ms: number, clock: Clock): Promise<boolean> {
  return settlesWithin(Promise.all(children.map((child) => child.abandoned)), ms, clock);
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

async function settlesWithin(
  promise: Promise<unknown>,
  ms: number,
  clock: Clock,
): Promise<boolean> {
  const settled = promise.then(() => true, () => true);
  if (ms === Infinity) return await settled;
  const timer = new AbortController();
  try {
    return await Promise.race([
      settled,
      clock.sleep(ms, timer.signal).then(() => false, () => false),
    ]);
  } finally {
    timer.abort();
  }
}
