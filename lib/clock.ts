/**
 * Time as a dependency: timers, backoff and watchdogs take a {@linkcode Clock}
 * so tests control time instead of sleeping.
 *
 * @module
 */

/** A source of time and delays. */
export interface Clock {
  /** Milliseconds since the Unix epoch (wall time: NTP or an operator may step it). */
  now(): number;
  /**
   * Milliseconds from an arbitrary origin on a clock that never steps back,
   * for deadlines that must not stretch when the wall clock is set back.
   * Optional: where a clock has none, {@linkcode monotonicOf} derives one from
   * `now()`, so a test clock that only moves forward needs none.
   */
  monotonic?(): number;
  /**
   * Resolves after `ms` milliseconds; rejects with the signal's reason when
   * `signal` aborts first.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * The longest delay one `setTimeout` takes: 2^31 − 1 ms (about 24.8 days).
 * A longer one overflows and fires after 1 ms.
 */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/**
 * The real clock: `Date.now()`, `performance.now()` and `setTimeout`. A sleep
 * longer than {@linkcode MAX_TIMER_DELAY_MS} is made of several timers, so it
 * lasts as asked instead of ending at once; `Infinity` sleeps until `signal`
 * aborts.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      let left = Math.max(0, ms);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const arm = () => {
        const step = Math.min(left, MAX_TIMER_DELAY_MS);
        left -= step;
        timer = setTimeout(() => {
          if (left > 0) return arm();
          signal?.removeEventListener("abort", onAbort);
          resolve();
        }, step);
      };
      arm();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
};

/**
 * A reader of `clock`'s monotonic time, in ms: its `monotonic()` where it has
 * one; else its `now()` with every step back absorbed — time stands still
 * across the step instead of going back — so a deadline kept on it is not
 * stretched by a wall clock set back. (A step forward cannot be told from time
 * passing without a real monotonic source.)
 *
 * @example
 * ```ts
 * const elapsed = monotonicOf(systemClock); // performance.now()
 * const deadline = elapsed() + 30_000;
 * ```
 */
export function monotonicOf(clock: Clock): () => number {
  if (clock.monotonic) return () => clock.monotonic!();
  let last = -Infinity;
  let offset = 0;
  return () => {
    const now = clock.now() + offset;
    if (now < last) {
      offset += last - now;
      return last;
    }
    last = now;
    return now;
  };
}

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
