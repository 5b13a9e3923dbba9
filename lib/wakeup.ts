/**
 * One-shot signals between loops: `wait()` resolves at the next `notify()`.
 * {@linkcode Wakeup} forgets a notify nobody waits for; {@linkcode LatchedWakeup}
 * keeps it for the next `wait()`, for a loop that may miss a notify while it
 * is busy between its checks and its wait.
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

/**
 * Like {@linkcode Wakeup} for one waiter, but a notify with no waiter is
 * remembered: the next {@linkcode LatchedWakeup.wait} resolves at once.
 *
 * @example
 * ```ts
 * const wake = new LatchedWakeup();
 * wake.notify();
 * await wake.wait(); // resolves at once
 * ```
 */
export class LatchedWakeup {
  #waiter: (() => void) | null = null;
  #pending = false;

  /** Wakes the waiter, or the next one if none waits. */
  notify(): void {
    this.#pending = true;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.();
  }

  /** Resolves at the next notify, or at once after a notify nobody waited for. */
  wait(): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#waiter = () => {
        this.#pending = false;
        resolve();
      };
    });
  }
}
