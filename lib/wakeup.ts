/**
 * A one-shot signal between loops: `wait()` resolves at the next `notify()`.
 *
 * @module
 */

/**
 * Resolves every waiter of {@linkcode Wakeup.wait} on {@linkcode Wakeup.notify};
 * a notify with no waiter is not remembered.
 *
 * @example
 * ```ts
 * const wake = new Wakeup();
 * const waiting = wake.wait();
 * wake.notify();
 * await waiting;
 * ```
 */
export class Wakeup {
  #promise: Promise<void> | null = null;
  #resolve: (() => void) | null = null;

  /** Resolves at the next {@linkcode Wakeup.notify}. */
  wait(): Promise<void> {
    return this.#promise ??= new Promise((resolve) => this.#resolve = resolve);
  }

  /** Wakes every waiter. */
  notify(): void {
    const resolve = this.#resolve;
    this.#promise = null;
    this.#resolve = null;
    resolve?.();
  }
}
