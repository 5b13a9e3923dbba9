/**
 * The memory of recently accepted trade ids of one (exchange, symbol): the
 * validator's duplicate check. It holds the last `capacity` ids added, in
 * arrival order; adding one more forgets the oldest.
 *
 * Every venue Tradewire speaks numbers its trades with decimal integers, so
 * an id in canonical decimal form (`0`, or up to 15 digits without a leading
 * zero — below 2^53, exact as a double) is kept as a number: in a ring and an
 * open-addressing hash table of `Float64Array`s. Neither holds a JavaScript
 * object, so a window of 100,000 ids costs the garbage collector nothing and
 * a lookup reads one or two cache lines; a `Set` of strings keeps every id
 * string alive (promoted to the old generation) and costs ≈0.7 µs more per
 * trade at that size (`bench/validator_bench.ts`). The first id of another
 * form (`"abc"`, `"007"`) turns the window into a `Set` and a ring of strings,
 * the ids already held converted — canonical decimal text and its number map
 * one to one, so nothing is lost or confused.
 *
 * Both structures grow as ids arrive, up to `capacity`: a thin symbol stays
 * small.
 *
 * @example
 * ```ts
 * import { TradeIdWindow } from "./trade_ids.ts";
 *
 * const seen = new TradeIdWindow(2);
 * seen.add("101");
 * seen.add("102");
 * seen.has("101"); // true
 * seen.add("103"); // forgets 101
 * seen.has("101"); // false
 * ```
 *
 * @module
 */

/** Marks a free slot of the hash table (ids are never negative). */
const EMPTY = -1;
/** Slots of the hash table and the ring when the first id arrives. */
const INITIAL_SLOTS = 64;
/** 2^32, to split an id into two 32-bit halves for hashing. */
const TWO_32 = 4_294_967_296;

/**
 * The number of `id` when it is canonical decimal text of at most 15 digits,
 * otherwise -1.
 */
export function numericTradeId(id: string): number {
  const length = id.length;
  if (length === 0 || length > 15) return -1;
  if (id.charCodeAt(0) === 48) return length === 1 ? 0 : -1; // "0", never "007"
  let value = 0;
  for (let i = 0; i < length; i++) {
    const digit = id.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/** The last `capacity` trade ids added, for duplicate checks. See the module doc. */
export class TradeIdWindow {
  readonly #capacity: number;
  // Numeric form: ids in arrival order (a ring once full) and a hash table of the same ids.
  #ring = new Float64Array(0);
  #head = 0;
  #size = 0;
  #table = new Float64Array(0);
  #mask = 0;
  #shift = 32;
  // String form, once an id that is not canonical decimal text arrived.
  #strings: Set<string> | null = null;
  #stringRing: string[] = [];

  /** Throws a `RangeError` unless `capacity` is a positive integer. */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Trade id window must be a positive integer, got ${capacity}`);
    }
    this.#capacity = capacity;
  }

  /** Ids held (at most `capacity`). */
  get size(): number {
    return this.#strings === null ? this.#size : this.#strings.size;
  }

  /** Whether `id` is among the ids held. */
  has(id: string): boolean {
    if (this.#strings !== null) return this.#strings.has(id);
    const key = numericTradeId(id);
    return key >= 0 && this.#size > 0 && this.#find(key) >= 0;
  }

  /** Adds `id` as the newest, forgetting the oldest when full; an id already held is left as it is. */
  add(id: string): void {
    if (this.#strings === null) {
      const key = numericTradeId(id);
      if (key >= 0) {
        this.#addNumber(key);
        return;
      }
      this.#toStrings();
    }
    this.#addString(id);
  }

  #addNumber(key: number): void {
    if (this.#size > 0 && this.#find(key) >= 0) return;
    if (this.#size === this.#capacity) {
      this.#remove(this.#ring[this.#head]!);
      this.#ring[this.#head] = key;
      this.#head = this.#head + 1 === this.#capacity ? 0 : this.#head + 1;
      this.#insert(key);
      return;
    }
    if (this.#size === this.#ring.length) this.#growRing();
    if (2 * (this.#size + 1) > this.#table.length) this.#growTable();
    this.#ring[this.#size++] = key;
    this.#insert(key);
  }

  #addString(id: string): void {
    const strings = this.#strings!;
    if (strings.has(id)) return;
    const ring = this.#stringRing;
    if (ring.length < this.#capacity) {
      ring.push(id);
    } else {
      strings.delete(ring[this.#head]!);
      ring[this.#head] = id;
      this.#head = this.#head + 1 === this.#capacity ? 0 : this.#head + 1;
    }
    strings.add(id);
  }

  /** Moves to the string form, oldest id first; `#head` keeps its meaning. */
  #toStrings(): void {
    const ring: string[] = [];
    const full = this.#size === this.#capacity;
    for (let i = 0; i < this.#size; i++) {
      ring.push(String(this.#ring[full ? (this.#head + i) % this.#capacity : i]));
    }
    this.#strings = new Set(ring);
    this.#stringRing = ring;
    this.#head = 0;
    this.#ring = new Float64Array(0);
    this.#table = new Float64Array(0);
    this.#size = 0;
  }

  #growRing(): void {
    const ring = new Float64Array(
      Math.min(this.#capacity, Math.max(INITIAL_SLOTS, 2 * this.#size)),
    );
    ring.set(this.#ring);
    this.#ring = ring;
  }

  /** Doubles the table (keeping at most half of it used) and puts the ids held back in. */
  #growTable(): void {
    const slots = Math.max(INITIAL_SLOTS, 2 * this.#table.length);
    this.#table = new Float64Array(slots).fill(EMPTY);
    this.#mask = slots - 1;
    this.#shift = 32 - Math.log2(slots);
    // Before the window is full the ids sit at the start of the ring.
    for (let i = 0; i < this.#size; i++) this.#insert(this.#ring[i]!);
  }

  /** The home slot of `key`: both 32-bit halves mixed, the top bits of a Fibonacci hash. */
  #home(key: number): number {
    const low = key >>> 0;
    const high = (key / TWO_32) >>> 0;
    return Math.imul(low ^ Math.imul(high, 0x85ebca6b), 0x9e3779b1) >>> this.#shift;
  }

  /** The slot holding `key`, or -1. */
  #find(key: number): number {
    const table = this.#table;
    for (let slot = this.#home(key);; slot = (slot + 1) & this.#mask) {
      const held = table[slot]!;
      if (held === key) return slot;
      if (held === EMPTY) return -1;
    }
  }

  #insert(key: number): void {
    const table = this.#table;
    let slot = this.#home(key);
    while (table[slot] !== EMPTY) slot = (slot + 1) & this.#mask;
    table[slot] = key;
  }

  /** Removes `key` (held), shifting back the keys after it so no probe sequence breaks. */
  #remove(key: number): void {
    const table = this.#table;
    const mask = this.#mask;
    let hole = this.#find(key);
    for (let slot = (hole + 1) & mask;; slot = (slot + 1) & mask) {
      const held = table[slot]!;
      if (held === EMPTY) break;
      const home = this.#home(held);
      // `held` may fill the hole unless its home lies cyclically in (hole, slot].
      const stays = hole <= slot ? hole < home && home <= slot : hole < home || home <= slot;
      if (!stays) {
        table[hole] = held;
        hole = slot;
      }
    }
    table[hole] = EMPTY;
  }
}
