/**
 * A bounded FIFO queue between an actor's NATS subscriptions and its handler.
 *
 * @module
 */

import type { MailboxStats } from "./types.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** What {@linkcode Mailbox.put} does when the mailbox is full. */
export type OverflowPolicy =
  /** The producer waits until there is room (back-pressure). */
  | "block"
  /** The oldest message is discarded and counted in `dropped`. */
  | "drop_oldest";

/**
 * What an actor's mailbox does with its messages: a bounded FIFO under an
 * {@linkcode OverflowPolicy}, or `"conflate"` — only the newest message per
 * subject waits ({@linkcode ConflatingMailbox}).
 */
export type MailboxPolicy = OverflowPolicy | "conflate";

/** Default overflow policy of a mailbox. */
export const DEFAULT_OVERFLOW: OverflowPolicy = "block";
/** Default bound on producers blocked at once in {@linkcode Mailbox.put}. */
export const DEFAULT_MAX_BLOCKED_PUTS = 1024;

/** Options for {@linkcode Mailbox}. */
export interface MailboxOptions {
  /** What `put` does when the mailbox is full. @default {DEFAULT_OVERFLOW} */
  overflow?: OverflowPolicy;
  /**
   * Most `put` calls that may wait at once under `"block"`, each holding its
   * one message; one more rejects with {@linkcode MailboxFullError}.
   * @default {DEFAULT_MAX_BLOCKED_PUTS}
   */
  maxBlockedPuts?: number;
}

/** Thrown by `put` on a closed mailbox, and by `take` once it is closed and empty. */
export class MailboxClosedError extends Error {
  /** Creates the error. */
  constructor(message = "Mailbox is closed", options?: ErrorOptions) {
    super(message, options);
    this.name = "MailboxClosedError";
  }
}

/** Thrown by `put` when the mailbox is full and too many producers already wait. */
export class MailboxFullError extends Error {
  /** Creates the error. */
  constructor(
    message = "Mailbox is full and too many producers are blocked",
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "MailboxFullError";
  }
}

interface Taker<T> {
  resolve(message: T): void;
  reject(error: unknown): void;
}

interface BlockedPut<T> {
  message: T;
  resolve(): void;
  reject(error: unknown): void;
}

/**
 * A bounded FIFO queue backed by a ring buffer. Memory is bounded by
 * `capacity` plus one message per blocked producer (at most `maxBlockedPuts`).
 * After {@linkcode Mailbox.close} the messages still queued can be taken.
 *
 * @example
 * ```ts
 * const mailbox = new Mailbox<string>(2, { overflow: "drop_oldest" });
 * await mailbox.put("a");
 * await mailbox.put("b");
 * await mailbox.put("c"); // drops "a"
 * await mailbox.take(); // "b"
 * mailbox.stats(); // { depth: 1, capacity: 2, dropped: 1 }
 * ```
 */
export class Mailbox<T> {
  readonly #buffer: Array<T | undefined>;
  readonly #overflow: OverflowPolicy;
  readonly #maxBlockedPuts: number;
  readonly #takers = new Set<Taker<T>>();
  readonly #blocked = new Set<BlockedPut<T>>();
  #head = 0;
  #size = 0;
  #dropped = 0;
  #closed = false;

  /** Creates an empty mailbox holding at most `capacity` messages. */
  constructor(capacity: number, options: MailboxOptions = {}) {
    assertCapacity(capacity);
    const { overflow = DEFAULT_OVERFLOW, maxBlockedPuts = DEFAULT_MAX_BLOCKED_PUTS } = options;
    if (overflow !== "block" && overflow !== "drop_oldest") {
      throw new TypeError(`Unknown mailbox overflow policy: ${overflow}`);
    }
    if (!(maxBlockedPuts >= 0)) {
      throw new RangeError(`maxBlockedPuts must be >= 0, got ${maxBlockedPuts}`);
    }
    this.#buffer = new Array(capacity);
    this.#overflow = overflow;
    this.#maxBlockedPuts = maxBlockedPuts;
  }

  /** Most messages it holds. */
  get capacity(): number {
    return this.#buffer.length;
  }

  /** Messages waiting to be taken. */
  get size(): number {
    return this.#size;
  }

  /** Producers waiting in `put` for room. */
  get blocked(): number {
    return this.#blocked.size;
  }

  /** Whether {@linkcode Mailbox.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Adds `message`. When full: under `"block"` the returned promise waits
   * until there is room (rejecting with the signal's reason if `signal`
   * aborts first); under `"drop_oldest"` the oldest message is discarded.
   * Rejects with {@linkcode MailboxClosedError} once the mailbox is closed.
   */
  put(message: T, signal?: AbortSignal): Promise<void> {
    if (this.#closed) return Promise.reject(new MailboxClosedError());
    if (signal?.aborted) return Promise.reject(signal.reason);
    const taker = this.#first(this.#takers);
    if (taker) {
      this.#takers.delete(taker);
      taker.resolve(message);
      return Promise.resolve();
    }
    if (this.#size < this.capacity) {
      this.#push(message);
      return Promise.resolve();
    }
    if (this.#overflow === "drop_oldest") {
      this.#shift();
      this.#dropped++;
      this.#push(message);
      return Promise.resolve();
    }
    if (this.#blocked.size >= this.#maxBlockedPuts) {
      return Promise.reject(new MailboxFullError());
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#blocked.delete(entry);
        reject(signal?.reason);
      };
      const entry: BlockedPut<T> = {
        message,
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.#blocked.add(entry);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Resolves with the oldest message, waiting for one if empty. Rejects with
   * {@linkcode MailboxClosedError} when the mailbox is closed and empty, and
   * with the signal's reason when `signal` aborts first.
   */
  take(signal?: AbortSignal): Promise<T> {
    if (this.#size > 0) {
      const message = this.#shift();
      this.#admitBlocked();
      return Promise.resolve(message);
    }
    if (this.#closed) return Promise.reject(new MailboxClosedError());
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#takers.delete(taker);
        reject(signal?.reason);
      };
      const taker: Taker<T> = {
        resolve: (message) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(message);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.#takers.add(taker);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Closes the mailbox: further puts reject, blocked puts reject (their
   * messages are not queued), waiting takers reject. Queued messages can
   * still be taken. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const error = new MailboxClosedError();
    for (const put of this.#blocked) put.reject(error);
    for (const taker of this.#takers) taker.reject(error);
    this.#blocked.clear();
    this.#takers.clear();
  }

  /** Current figures: depth, capacity and messages dropped so far. */
  stats(): MailboxStats {
    return { depth: this.#size, capacity: this.capacity, dropped: this.#dropped };
  }

  /** Yields messages until the mailbox is closed and empty. */
  [Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    return takeUntilClosed(() => this.take());
  }

  #push(message: T): void {
    this.#buffer[(this.#head + this.#size) % this.capacity] = message;
    this.#size++;
  }

  #shift(): T {
    const message = this.#buffer[this.#head] as T;
    this.#buffer[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.capacity;
    this.#size--;
    return message;
  }

  #admitBlocked(): void {
    const put = this.#first(this.#blocked);
    if (!put) return;
    this.#blocked.delete(put);
    this.#push(put.message);
    put.resolve();
  }

  #first<E>(set: Set<E>): E | undefined {
    for (const entry of set) return entry;
    return undefined;
  }
}

/** Options of a {@linkcode ConflatingMailbox}. */
export interface ConflatingMailboxOptions<T> {
  /**
   * Whether the message waiting for a key stays, and the incoming one of the
   * same key is dropped instead (e.g. the waiting one holds a later exchange
   * time: the incoming arrived late). @default {always replace}
   */
  keep?: (waiting: T, incoming: T) => boolean;
}

/**
 * A mailbox that keeps only the newest message per key (market-data
 * "conflation"): a message whose key already waits replaces the waiting one,
 * in its place in the queue, and the replaced one counts as `dropped`. At
 * most `capacity` keys wait; a new key beyond that drops the oldest waiting
 * message (`keep` may decide otherwise). `put` never blocks. For consumers that need only the latest value
 * per subject (a latest-price cache): under bursts they handle one message per
 * subject instead of every message, and what they skip is never decoded.
 *
 * @example
 * ```ts
 * const mailbox = new ConflatingMailbox<{ subject: string; n: number }>(16, (m) => m.subject);
 * mailbox.put({ subject: "a", n: 1 });
 * mailbox.put({ subject: "b", n: 1 });
 * mailbox.put({ subject: "a", n: 2 }); // replaces a/1
 * await mailbox.take(); // { subject: "a", n: 2 }
 * mailbox.stats(); // { depth: 1, capacity: 16, dropped: 1 }
 * ```
 */
export class ConflatingMailbox<T> {
  readonly #waiting = new Map<string, T>();
  readonly #takers = new Set<Taker<T>>();
  readonly #capacity: number;
  readonly #keyOf: (message: T) => string;
  readonly #keep: ((waiting: T, incoming: T) => boolean) | undefined;
  #dropped = 0;
  #closed = false;

  /** Creates an empty mailbox holding at most `capacity` keys. */
  constructor(
    capacity: number,
    keyOf: (message: T) => string,
    options: ConflatingMailboxOptions<T> = {},
  ) {
    assertCapacity(capacity);
    this.#capacity = capacity;
    this.#keyOf = keyOf;
    this.#keep = options.keep;
  }

  /** Most keys it holds. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Messages (one per key) waiting to be taken. */
  get size(): number {
    return this.#waiting.size;
  }

  /** Whether {@linkcode ConflatingMailbox.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Adds `message`, replacing the waiting message of its key. Rejects with
   * {@linkcode MailboxClosedError} once the mailbox is closed.
   */
  put(message: T): Promise<void> {
    if (this.#closed) return Promise.reject(new MailboxClosedError());
    for (const taker of this.#takers) {
      this.#takers.delete(taker);
      taker.resolve(message);
      return Promise.resolve();
    }
    const key = this.#keyOf(message);
    const waiting = this.#waiting.get(key);
    if (waiting !== undefined) {
      this.#dropped++;
      if (this.#keep?.(waiting, message) === true) return Promise.resolve();
    } else if (this.#waiting.size >= this.#capacity) {
      for (const oldest of this.#waiting.keys()) {
        this.#waiting.delete(oldest);
        break;
      }
      this.#dropped++;
    }
    this.#waiting.set(key, message);
    return Promise.resolve();
  }

  /**
   * Resolves with the message that waited longest, waiting for one if empty.
   * Rejects with {@linkcode MailboxClosedError} when closed and empty.
   */
  take(): Promise<T> {
    for (const [key, message] of this.#waiting) {
      this.#waiting.delete(key);
      return Promise.resolve(message);
    }
    if (this.#closed) return Promise.reject(new MailboxClosedError());
    return new Promise((resolve, reject) => this.#takers.add({ resolve, reject }));
  }

  /** Closes the mailbox: further puts and waiting takers reject; waiting messages can still be taken. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const error = new MailboxClosedError();
    for (const taker of this.#takers) taker.reject(error);
    this.#takers.clear();
  }

  /** Current figures: keys waiting, capacity and messages replaced or dropped so far. */
  stats(): MailboxStats {
    return { depth: this.#waiting.size, capacity: this.#capacity, dropped: this.#dropped };
  }

  /** Yields messages until the mailbox is closed and empty. */
  [Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    return takeUntilClosed(() => this.take());
  }
}

function assertCapacity(capacity: number): void {
  assertPositiveInteger(capacity, "Mailbox capacity");
}

/** Yields what `take` resolves with until it rejects with {@linkcode MailboxClosedError}. */
async function* takeUntilClosed<T>(take: () => Promise<T>): AsyncGenerator<T, void, undefined> {
  while (true) {
    try {
      yield await take();
    } catch (error) {
      if (error instanceof MailboxClosedError) return;
      throw error;
    }
  }
}
