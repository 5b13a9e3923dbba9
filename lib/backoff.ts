/**
 * Exponential backoff with jitter, and {@linkcode retry} built on it: the
 * supervisor spaces restarts with {@linkcode backoffDelay}, and adapters wrap
 * their startup connects (NATS, PostgreSQL) in {@linkcode retry}.
 *
 * @example
 * ```ts
 * import { retry } from "./backoff.ts";
 *
 * const value = await retry(() => Promise.resolve(42), { maxAttempts: 5 });
 * ```
 *
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";

/** Delay before the first retry, in milliseconds. */
export const DEFAULT_BACKOFF_INITIAL_MS = 100;
/** Longest delay, in milliseconds. */
export const DEFAULT_BACKOFF_MAX_MS = 30_000;
/** Growth of the delay from one attempt to the next. */
export const DEFAULT_BACKOFF_FACTOR = 2;
/** Fraction of the delay that jitter may add or take away. */
export const DEFAULT_BACKOFF_JITTER = 0.2;

/** Options for {@linkcode backoffDelay}. */
export interface BackoffOptions {
  /** Delay of attempt 0, in milliseconds. @default {DEFAULT_BACKOFF_INITIAL_MS} */
  initialMs?: number;
  /** Longest delay returned, jitter included, in milliseconds. @default {DEFAULT_BACKOFF_MAX_MS} */
  maxMs?: number;
  /** Multiplier from one attempt to the next, at least 1. @default {DEFAULT_BACKOFF_FACTOR} */
  factor?: number;
  /**
   * Fraction 0..1 of the delay by which it is randomly spread both ways: with
   * 0.2, a 1000 ms delay becomes a uniform pick in 800..1200 ms.
   * @default {DEFAULT_BACKOFF_JITTER}
   */
  jitter?: number;
  /** Source of uniform numbers in [0, 1); inject a fixed one in tests. @default {Math.random} */
  random?: () => number;
}

/**
 * The delay before retry number `attempt` (0 for the first retry):
 * `initialMs * factor ** attempt`, capped at `maxMs`, spread by `jitter`,
 * rounded to whole milliseconds and never above `maxMs`.
 *
 * @example
 * ```ts
 * backoffDelay(3, { initialMs: 100, jitter: 0 }); // 800
 * ```
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const {
    initialMs = DEFAULT_BACKOFF_INITIAL_MS,
    maxMs = Math.max(DEFAULT_BACKOFF_MAX_MS, initialMs),
    factor = DEFAULT_BACKOFF_FACTOR,
    jitter = DEFAULT_BACKOFF_JITTER,
    random = Math.random,
  } = options;
  if (!Number.isInteger(attempt) || attempt < 0) {
    throw new RangeError(`Backoff attempt must be a non-negative integer, got ${attempt}`);
  }
  if (!(initialMs >= 0)) throw new RangeError(`Backoff initialMs must be >= 0, got ${initialMs}`);
  if (!(maxMs >= initialMs)) {
    throw new RangeError(`Backoff maxMs must be >= initialMs, got ${maxMs} < ${initialMs}`);
  }
  if (!(factor >= 1)) throw new RangeError(`Backoff factor must be >= 1, got ${factor}`);
  if (!(jitter >= 0 && jitter <= 1)) {
    throw new RangeError(`Backoff jitter must be within 0..1, got ${jitter}`);
  }
  const base = Math.min(maxMs, initialMs * factor ** attempt);
  const spread = base * jitter * (2 * random() - 1);
  return Math.round(Math.min(maxMs, Math.max(0, base + spread)));
}

/** Options for {@linkcode retry}. */
export interface RetryOptions extends BackoffOptions {
  /** Attempts in total, the first one included. @default {Infinity} */
  maxAttempts?: number;
  /** Stops retrying: the pending delay rejects with the signal's reason. @default {undefined} */
  signal?: AbortSignal;
  /** Clock used for the delays. @default {systemClock} */
  clock?: Clock;
  /** Called before each delay with the failure, the failed attempt (from 1) and the delay. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  /** Whether a failure is worth retrying; others are rethrown at once. @default {() => true} */
  shouldRetry?: (error: unknown) => boolean;
}

/** Thrown by {@linkcode retry} when every attempt failed; `cause` is the last failure. */
export class RetryError extends Error {
  /** How many attempts were made. */
  readonly attempts: number;

  /** Creates the error for `attempts` failed attempts, the last failing with `cause`. */
  constructor(attempts: number, cause: unknown) {
    super(`Retrying exceeded the maximum of ${attempts} attempts`, { cause });
    this.name = "RetryError";
    this.attempts = attempts;
  }
}

/**
 * Calls `fn` until it succeeds, sleeping {@linkcode backoffDelay} between
 * attempts. `fn` receives the attempt number, from 1. Throws
 * {@linkcode RetryError} after `maxAttempts` failures, the failure itself when
 * `shouldRetry` rejects it, and the signal's reason when `signal` aborts.
 *
 * @example
 * ```ts
 * import { retry } from "./backoff.ts";
 * import { nullLogger as log } from "./log.ts";
 *
 * const connected = await retry(() => Promise.resolve("connected"), {
 *   initialMs: 250,
 *   maxMs: 10_000,
 *   onRetry: (error, attempt, delayMs) => log.warn("connect failed", { error, attempt, delayMs }),
 * });
 * ```
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T> | T,
  options: RetryOptions = {},
): Promise<T> {
  const {
    maxAttempts = Infinity,
    signal,
    clock = systemClock,
    onRetry,
    shouldRetry = () => true,
  } = options;
  if (!(maxAttempts >= 1)) throw new RangeError(`maxAttempts must be >= 1, got ${maxAttempts}`);
  for (let attempt = 1;; attempt++) {
    signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (error) {
      if (!shouldRetry(error)) throw error;
      if (attempt >= maxAttempts) throw new RetryError(attempt, error);
      const delayMs = backoffDelay(attempt - 1, options);
      onRetry?.(error, attempt, delayMs);
      await clock.sleep(delayMs, signal);
    }
  }
}
