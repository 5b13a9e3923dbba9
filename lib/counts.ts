/**
 * Adding maps of counts, e.g. the figures of a thread's life to those of the
 * threads before it.
 *
 * @module
 */

/**
 * `base` with each count of `more` added (a key only one of them has keeps
 * its count); neither is changed.
 *
 * @example
 * ```ts
 * addCounts({ a: 1, b: 2 }, { b: 3, c: 4 }); // { a: 1, b: 5, c: 4 }
 * ```
 */
export function addCounts<K extends string>(
  base: Partial<Record<K, number>>,
  more: Partial<Record<K, number>>,
): Partial<Record<K, number>> {
  const sum: Partial<Record<K, number>> = { ...base };
  for (const key of Object.keys(more) as K[]) sum[key] = (sum[key] ?? 0) + (more[key] ?? 0);
  return sum;
}
