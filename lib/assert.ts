/**
 * Argument checks shared by settings and options across the engine.
 *
 * @module
 */

/**
 * Throws a `RangeError` naming `name` unless `value` is a safe integer ≥ 1.
 *
 * @example
 * ```ts
 * assertPositiveInteger(options.batch_max, "batch_max"); // "batch_max must be a positive integer, got 0"
 * ```
 */
export function assertPositiveInteger(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}
