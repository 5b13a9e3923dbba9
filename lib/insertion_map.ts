/**
 * A `Map` (and a `Set`) that can forget its oldest entry in constant time.
 *
 * The bounded memories of a long-running engine — orders closed lately, fill
 * ids handed over, a broker's closed orders — add at one end and forget at
 * the other. Done on a bare `Map` with `map.delete(map.keys().next().value)`,
 * forgetting is not O(1) in V8: a deleted entry stays in the table as a hole
 * until the table is rehashed, and an iterator started at the front walks
 * over every hole left by the deletes before it. At a steady size of 100,000
 * that walk costs ≈50 µs per forgotten entry, 7 µs at 10,000 (measured on
 * this repository's 2-core machine; `deno bench -A bench/runtime_bench.ts
 * --filter oldest`). Here the order of insertion is kept in a queue of its
 * own beside the map, so the oldest entry is found at the queue's head.
 *
 * Iteration and the re-insertion rules are those of `Map` and `Set`: setting
 * a key that is present keeps its place; a key deleted and set again goes to
 * the back.
 *
 * @example
 * ```ts
 * import { InsertionOrderedSet } from "./insertion_map.ts";
 *
 * const recent = new InsertionOrderedSet<string>();
 * recent.add("a");
 * recent.add("b");
 * recent.add("a"); // still the oldest
 * recent.deleteOldest(); // "a"
 * recent.has("a"); // false
 * ```
 *
 * @module
 */

/** Queue entries left behind by deletes, beyond twice the size, that trigger a compaction. */
const SLACK = 64;

interface Entry<V> {
  value: V;
  /** Position of the key's live queue entry. */
  seq: number;
}

/**
 * A `Map` keeping insertion order with an O(1) (amortized)
 * {@linkcode InsertionOrderedMap.deleteOldest}. See the module doc.
 */
export class InsertionOrderedMap<K, V> {
  readonly #map = new Map<K, Entry<V>>();
  // The queue: keys in insertion order, each with the sequence number it was queued with; an
  // entry whose key was deleted (or deleted and set again) since is stale and skipped.
  #keys: K[] = [];
  #seqs: number[] = [];
  #head = 0;
  #next = 0;

  /** Entries held. */
  get size(): number {
    return this.#map.size;
  }

  /** Whether `key` is held. */
  has(key: K): boolean {
    return this.#map.has(key);
  }

  /** The value of `key`, or undefined. */
  get(key: K): V | undefined {
    return this.#map.get(key)?.value;
  }

  /** Sets `key` to `value`: a new key goes to the back, a held one keeps its place. */
  set(key: K, value: V): this {
    const entry = this.#map.get(key);
    if (entry !== undefined) {
      entry.value = value;
      return this;
    }
    const seq = this.#next++;
    this.#map.set(key, { value, seq });
    this.#keys.push(key);
    this.#seqs.push(seq);
    return this;
  }

  /** Forgets `key`; true when it was held. */
  delete(key: K): boolean {
    if (!this.#map.delete(key)) return false;
    if (this.#map.size === 0) this.#reset();
    else if (this.#keys.length - this.#head > 2 * this.#map.size + SLACK) this.#compact();
    return true;
  }

  /** Forgets the oldest entry and returns its key; undefined when empty. */
  deleteOldest(): K | undefined {
    const keys = this.#keys;
    const seqs = this.#seqs;
    while (this.#head < keys.length) {
      const i = this.#head++;
      const key = keys[i]!;
      const entry = this.#map.get(key);
      if (entry === undefined || entry.seq !== seqs[i]) continue;
      this.#map.delete(key);
      if (this.#map.size === 0) this.#reset();
      else if (this.#head > SLACK && this.#head * 2 > keys.length) this.#compact();
      return key;
    }
    return undefined;
  }

  /** Forgets everything. */
  clear(): void {
    this.#map.clear();
    this.#reset();
  }

  /** The keys, oldest first. */
  *keys(): IterableIterator<K> {
    for (const [key] of this.entries()) yield key;
  }

  /** The values, oldest first. */
  *values(): IterableIterator<V> {
    for (const [, value] of this.entries()) yield value;
  }

  /** `[key, value]` pairs, oldest first. */
  *entries(): IterableIterator<[K, V]> {
    // The map's own order is the insertion order as `Map` defines it.
    for (const [key, entry] of this.#map) yield [key, entry.value];
  }

  /** `[key, value]` pairs, oldest first. */
  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries();
  }

  #reset(): void {
    this.#keys = [];
    this.#seqs = [];
    this.#head = 0;
  }

  /** Rebuilds the queue from the live entries, dropping the stale ones and the consumed head. */
  #compact(): void {
    const keys: K[] = [];
    const seqs: number[] = [];
    for (const [key, entry] of this.#map) {
      keys.push(key);
      seqs.push(entry.seq);
    }
    this.#keys = keys;
    this.#seqs = seqs;
    this.#head = 0;
  }
}

/**
 * A `Set` keeping insertion order with an O(1) (amortized)
 * {@linkcode InsertionOrderedSet.deleteOldest}. See the module doc.
 */
export class InsertionOrderedSet<K> {
  readonly #map = new InsertionOrderedMap<K, true>();

  /** Keys held. */
  get size(): number {
    return this.#map.size;
  }

  /** Whether `key` is held. */
  has(key: K): boolean {
    return this.#map.has(key);
  }

  /** Adds `key` at the back; a held key keeps its place. */
  add(key: K): this {
    this.#map.set(key, true);
    return this;
  }

  /** Forgets `key`; true when it was held. */
  delete(key: K): boolean {
    return this.#map.delete(key);
  }

  /** Forgets the oldest key and returns it; undefined when empty. */
  deleteOldest(): K | undefined {
    return this.#map.deleteOldest();
  }

  /** Forgets everything. */
  clear(): void {
    this.#map.clear();
  }

  /** The keys, oldest first. */
  keys(): IterableIterator<K> {
    return this.#map.keys();
  }

  /** The keys, oldest first. */
  [Symbol.iterator](): IterableIterator<K> {
    return this.#map.keys();
  }
}
