/**
 * Taking a batch off a queue without cutting a key's items apart.
 *
 * @module
 */

/**
 * Removes the next batch from `queue` and returns it: the first `max` items,
 * then every later item whose key (`keyOf`) is among theirs, so that no key
 * has items both in the batch and left behind. Items keep their order within
 * a key; the items left in `queue` keep theirs. The batch can therefore hold
 * more than `max` items: at most all the queued items of its keys.
 *
 * The execution engine stores an order's updates this way: an order whose
 * submit and fill land in different batches is written twice (submitted,
 * then filled), and each write of an order row costs an entry in every index
 * of the table.
 *
 * @example
 * ```ts
 * const queue = ["a1", "b1", "a2", "c1", "b2"];
 * const batch = takeKeyedBatch(queue, 2, (item) => item[0]!);
 * // batch: ["a1", "b1", "a2", "b2"]; queue: ["c1"]
 * ```
 */
export function takeKeyedBatch<T>(queue: T[], max: number, keyOf: (item: T) => string): T[] {
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new RangeError(`max must be a positive integer, got ${max}`);
  }
  const batch = queue.splice(0, max);
  if (queue.length === 0) return batch;
  const keys = new Set<string>();
  for (const item of batch) keys.add(keyOf(item));
  let kept = 0;
  for (let i = 0; i < queue.length; i++) {
    const item = queue[i]!;
    if (keys.has(keyOf(item))) batch.push(item);
    else queue[kept++] = item;
  }
  queue.length = kept;
  return batch;
}
