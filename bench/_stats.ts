/**
 * Statistics the benchmarks print their figures with.
 *
 * @module
 */

/**
 * The `q` quantile (0 to 1) of ascending `sorted` by nearest rank: the
 * smallest sample with at least `q` of the samples at or below it; NaN when
 * there are none. Throws a `RangeError` when `q` is outside [0, 1].
 *
 * @example
 * ```ts
 * percentile([1, 2, 3, 4], 0.5); // 2
 * percentile([1, 2, 3, 4], 0.99); // 4
 * ```
 */
export function percentile(sorted: readonly number[], q: number): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`Quantile must be within [0, 1], got ${q}`);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? NaN;
}
