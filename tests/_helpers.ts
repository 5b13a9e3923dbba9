/**
 * Test helpers: wait on a condition or a promise with a deadline instead of
 * sleeping a fixed time, read the venues' captured messages in
 * `../shared/fixtures/`, and lift the risk limits.
 *
 * @module
 */

import type { Config } from "../config/mod.ts";
import type { TopEvent } from "../market/events.ts";
import type { HealthSource } from "../api/health.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { connectionLossMessage } from "../lib/socket_errors.ts";

/** The non-empty lines of `../shared/fixtures/<venue>/<file>`: one captured message each. */
export function fixtureLines(venue: string, file: string): string[] {
  return Deno.readTextFileSync(new URL(`../../shared/fixtures/${venue}/${file}`, import.meta.url))
    .split("\n")
    .filter((line) => line !== "");
}

/** Default deadline of {@linkcode waitFor} and {@linkcode deadline}, in milliseconds. */
export const DEFAULT_WAIT_MS = 5_000;
/** How often {@linkcode waitFor} polls, in milliseconds. */
export const POLL_INTERVAL_MS = 5;

/** Thrown when a condition or a promise misses its deadline. */
export class DeadlineError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "DeadlineError";
  }
}

/**
 * Polls `condition` until it returns true; throws {@linkcode DeadlineError}
 * after `timeoutMs`.
 *
 * @example
 * ```ts
 * const seen: number[] = [];
 * setTimeout(() => seen.push(1), 10);
 * await waitFor(() => seen.length === 1, 1_000);
 * ```
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number = DEFAULT_WAIT_MS,
  what = "Condition",
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() >= until) throw new DeadlineError(`${what} not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

/**
 * Resolves or rejects like `promise`, or rejects with
 * {@linkcode DeadlineError} when it has not settled after `ms`. Clears its
 * timer either way.
 *
 * @example
 * ```ts
 * await deadline(Promise.resolve(1), 1_000); // 1
 * ```
 */
export async function deadline<T>(
  promise: Promise<T>,
  ms: number = DEFAULT_WAIT_MS,
  what = "Promise",
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new DeadlineError(`${what} did not settle within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `promise` has settled, checked after pending callbacks and one timer turn. */
export async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(() => settled = true, () => settled = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return settled;
}

/** A clock that reads as if started at some instant and runs (and sleeps) in real time. */
export interface ShiftedClock extends Clock {
  /** From now on, read as if it is `iso` now. */
  jump(iso: string): void;
}

/**
 * A real-time clock that reads `iso` when made: for code that asks the time of
 * day (market hours) under tests that also need real timers.
 */
export function clockAt(iso: string): ShiftedClock {
  let offset = 0;
  const clock: ShiftedClock = {
    now: () => Date.now() + offset,
    sleep: (ms, signal) => systemClock.sleep(ms, signal),
    jump(at) {
      const target = Date.parse(at);
      if (!Number.isFinite(target)) throw new RangeError(`Not an instant: ${at}`);
      offset = target - Date.now();
    },
  };
  clock.jump(iso);
  return clock;
}

/** `config`'s risk section with every limit off and any market hours: tests of other rules. */
export function noRiskLimits(config: Config): Config["risk"] {
  return {
    ...config.risk,
    max_order_qty: null,
    max_order_notional: null,
    max_position_qty: null,
    max_gross_exposure: null,
    max_open_orders: null,
    price_collar_pct: null,
    daily_loss_limit: null,
    market_hours: "always",
    exchanges: {},
    symbols: {},
  };
}

/**
 * Collects uncaught errors and unhandled rejections until disposed (they no
 * longer fail the test file). A test ending a PostgreSQL backend under an
 * in-process pool needs it: postgres.js 3.4.9 may then flush a write to the
 * closed connection from a `setImmediate`, a TypeError nothing can catch,
 * which `main.ts` lets pass (`connectionLossMessage`) — the test then asserts that
 * nothing else was uncaught.
 *
 * @example
 * ```ts
 * using uncaught = collectUncaught();
 * // … end backends …
 * assert.deepEqual(notPeerGone(uncaught), []);
 * ```
 */
export function collectUncaught(): unknown[] & Disposable {
  const uncaught: unknown[] = [];
  const onError = (event: ErrorEvent) => {
    event.preventDefault();
    uncaught.push(event.error);
  };
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    uncaught.push(event.reason);
  };
  globalThis.addEventListener("error", onError);
  globalThis.addEventListener("unhandledrejection", onRejection);
  return Object.assign(uncaught, {
    [Symbol.dispose]() {
      globalThis.removeEventListener("error", onError);
      globalThis.removeEventListener("unhandledrejection", onRejection);
    },
  });
}

/** What of `uncaught` ({@linkcode collectUncaught}) `main.ts` would stop the engine for, as text. */
export function notPeerGone(uncaught: readonly unknown[]): string[] {
  return uncaught.filter((error) => connectionLossMessage(error) === null).map(String);
}

/** A seeded pseudo-random generator (mulberry32) of numbers in [0, 1), so a fuzz failure replays. */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What a parser fuzz inserts or writes over ({@linkcode mutateFrame}): JSON's punctuation and the like. */
export const FUZZ_PIECES: readonly string[] = [
  '"',
  "{",
  "}",
  "[",
  "]",
  ",",
  ":",
  "-",
  "1",
  ".",
  "e",
  "null",
  " ",
  "\\",
  "\u0000",
];

/**
 * A random change of `frame` for a parser fuzz, drawn from `random`: a
 * truncation, a deletion of 1-4 characters, one of `pieces` inserted or
 * written over a character, or two parts swapped.
 *
 * @example
 * ```ts
 * const random = prng(1);
 * mutateFrame('{"a":1}', random); // e.g. '{"a":1' or '{"a"null:1}'
 * ```
 */
export function mutateFrame(
  frame: string,
  random: () => number,
  pieces: readonly string[] = FUZZ_PIECES,
): string {
  const at = Math.floor(random() * frame.length);
  switch (Math.floor(random() * 5)) {
    case 0:
      return frame.slice(0, at);
    case 1:
      return frame.slice(0, at) + frame.slice(at + 1 + Math.floor(random() * 4));
    case 2:
      return frame.slice(0, at) + pieces[Math.floor(random() * pieces.length)] + frame.slice(at);
    case 3:
      return frame.slice(0, at) + pieces[Math.floor(random() * pieces.length)] +
        frame.slice(at + 1);
    default: {
      const other = Math.floor(random() * frame.length);
      return frame.slice(0, Math.min(at, other)) + frame.slice(Math.max(at, other)) +
        frame.slice(Math.min(at, other), Math.max(at, other));
    }
  }
}

/** What {@linkcode binanceTop} quotes besides its prices. */
export interface BinanceTopOptions {
  /** Size at the bid and at the ask (decimal text). @default {"10"} */
  qty?: string;
  /** How old the quote is, in ms. @default {0} */
  agoMs?: number;
}

/**
 * A Binance top of book of the canonical `symbol` (its venue symbol without
 * the dash), taken now (or `agoMs` ago), for a market-data cache.
 *
 * @example
 * ```ts
 * cache.update([binanceTop("BTC-USDT", "50000", "50002")]);
 * ```
 */
export function binanceTop(
  symbol: string,
  bid: string,
  ask: string,
  options: BinanceTopOptions = {},
): TopEvent {
  const us = (Date.now() - (options.agoMs ?? 0)) * 1000;
  const qty = options.qty ?? "10";
  return {
    kind: "top",
    exchange: "binance",
    symbol,
    venue_symbol: symbol.replace("-", ""),
    ts_exchange: us,
    ts_local: us,
    bid_price: bid,
    bid_qty: qty,
    ask_price: ask,
    ask_qty: qty,
  };
}

/** A health source whose services all answer at once: for tests of the HTTP app without them. */
export function healthyServices(): HealthSource {
  const up = () => Promise.resolve(1);
  return {
    version: "9.9.9",
    startedAt: Date.now(),
    probes: { postgres: up, nats: up, clickhouse: up },
    actors: () => [],
    probeTimeoutMs: 200,
  };
}
