/**
 * Time as a dependency: timers, backoff and watchdogs take a {@linkcode Clock}
 * so tests control time instead of sleeping.
 *
 * @module
 */

/** A source of time and delays. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /**
   * Resolves after `ms` milliseconds; rejects with the signal's reason when
   * `signal` aborts first.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock: `Date.now()` and `setTimeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, Math.max(0, ms));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
};

/**
 * A clock for tests: `sleep` records the requested delay, advances the clock
 * by it and resolves at once, so backoff schedules can be asserted without
 * waiting for them.
 *
 * @example
 * ```ts
 * const clock = new RecordingClock();
 * await clock.sleep(250);
 * clock.sleeps; // [250]
 * ```
 */
export class RecordingClock implements Clock {
  /** Every delay passed to `sleep`, in call order. */
  readonly sleeps: number[] = [];
  #now: number;

  /** Starts the clock at `start` (milliseconds since the epoch). */
  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  /** The current fake time. */
  now(): number {
    return this.#now;
  }

  /** Moves the fake time forward by `ms`. */
  advance(ms: number): void {
    this.#now += ms;
  }

  /** Records `ms`, advances the clock by it and yields to the event loop. */
  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    this.sleeps.push(ms);
    this.#now += ms;
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (signal?.aborted) throw signal.reason;
  }
}
