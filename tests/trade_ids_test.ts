/**
 * Pure tests of the validator's trade id memory (no services): checked against
 * a plain model (an array of the last ids) on numeric, textual and mixed ids.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { numericTradeId, TradeIdWindow } from "../market/trade_ids.ts";

/** The behaviour a window must have: the last `capacity` distinct ids added, oldest first. */
class ModelWindow {
  readonly ids: string[] = [];
  constructor(readonly capacity: number) {}
  has(id: string): boolean {
    return this.ids.includes(id);
  }
  add(id: string): void {
    if (this.has(id)) return;
    this.ids.push(id);
    if (this.ids.length > this.capacity) this.ids.shift();
  }
}

Deno.test("numericTradeId reads canonical decimal ids of up to 15 digits and nothing else", () => {
  assert.equal(numericTradeId("0"), 0);
  assert.equal(numericTradeId("7"), 7);
  assert.equal(numericTradeId("4000000123"), 4_000_000_123);
  assert.equal(numericTradeId("999999999999999"), 999_999_999_999_999);
  for (const id of ["", "007", "00", "-1", "1.5", "1e3", " 1", "12a", "1000000000000000"]) {
    assert.equal(numericTradeId(id), -1, id);
  }
});

Deno.test("trade id window remembers the last ids and forgets the oldest", () => {
  const seen = new TradeIdWindow(3);
  for (const id of ["11", "12", "13"]) seen.add(id);
  assert.deepEqual(["11", "12", "13", "14"].map((id) => seen.has(id)), [true, true, true, false]);
  seen.add("14");
  assert.equal(seen.has("11"), false);
  assert.deepEqual(["12", "13", "14"].map((id) => seen.has(id)), [true, true, true]);
  assert.equal(seen.size, 3);
});

Deno.test("trade id window of one holds only the newest id", () => {
  const seen = new TradeIdWindow(1);
  seen.add("5");
  seen.add("6");
  assert.equal(seen.has("5"), false);
  assert.equal(seen.has("6"), true);
  assert.equal(seen.size, 1);
});

Deno.test("trade id window keeps an id added twice once, in its first place", () => {
  const seen = new TradeIdWindow(2);
  seen.add("1");
  seen.add("1");
  seen.add("2");
  assert.equal(seen.size, 2);
  seen.add("3");
  assert.equal(seen.has("1"), false);
  assert.equal(seen.has("2"), true);
});

Deno.test("trade id window tells 7 from 007 and keeps its order when it turns to strings", () => {
  const seen = new TradeIdWindow(3);
  seen.add("7");
  seen.add("8");
  assert.equal(seen.has("007"), false);
  seen.add("007"); // not canonical: the window now holds strings, 7 and 8 converted
  assert.deepEqual(["7", "8", "007"].map((id) => seen.has(id)), [true, true, true]);
  seen.add("abc"); // full: 7, the oldest, goes
  assert.deepEqual(["7", "8", "007", "abc"].map((id) => seen.has(id)), [false, true, true, true]);
  seen.add("9");
  assert.equal(seen.has("8"), false);
  assert.equal(seen.size, 3);
});

Deno.test("trade id window turns to strings once full and wrapped, oldest first", () => {
  const seen = new TradeIdWindow(3);
  for (const id of ["1", "2", "3", "4", "5"]) seen.add(id); // holds 3, 4, 5; the ring has wrapped
  seen.add("x"); // forgets 3
  assert.deepEqual(["3", "4", "5", "x"].map((id) => seen.has(id)), [false, true, true, true]);
  seen.add("y"); // forgets 4
  assert.deepEqual(["4", "5", "x", "y"].map((id) => seen.has(id)), [false, true, true, true]);
});

Deno.test("trade id window agrees with the model on random numeric ids (collisions, growth, wrap)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.array(fc.oneof(fc.nat({ max: 600 }), fc.maxSafeNat()), { maxLength: 2_000 }),
      (capacity, ids) => {
        const seen = new TradeIdWindow(capacity);
        const model = new ModelWindow(capacity);
        for (const n of ids) {
          const id = String(n % 1e15);
          assert.equal(seen.has(id), model.has(id), `has ${id}`);
          seen.add(id);
          model.add(id);
        }
        for (const id of model.ids) assert.ok(seen.has(id), `holds ${id}`);
        assert.equal(seen.size, model.ids.length);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("trade id window agrees with the model on 20,000 random ids in a window of 1,000", () => {
  // Random ids collide in the hash table, so removals shift back clusters of every shape.
  let seed = 12_345;
  const random = () => (seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0) / 2 ** 32;
  const seen = new TradeIdWindow(1_000);
  const model = new ModelWindow(1_000);
  let mismatches = 0;
  for (let i = 0; i < 20_000; i++) {
    const id = String(Math.floor(random() * 3_000));
    if (seen.has(id) !== model.has(id)) mismatches++;
    seen.add(id);
    model.add(id);
  }
  assert.equal(mismatches, 0);
  assert.equal(seen.size, 1_000);
});

Deno.test("trade id window agrees with the model on mixed numeric and textual ids", () => {
  const anyId = fc.oneof(
    fc.nat({ max: 50 }).map(String),
    fc.constantFrom("007", "0", "00", "a1", "1234567890123456"),
    fc.string({ maxLength: 3 }),
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.array(anyId, { maxLength: 300 }),
      (capacity, ids) => {
        const seen = new TradeIdWindow(capacity);
        const model = new ModelWindow(capacity);
        for (const id of ids) {
          assert.equal(seen.has(id), model.has(id), `has ${JSON.stringify(id)}`);
          seen.add(id);
          model.add(id);
        }
        assert.equal(seen.size, model.ids.length);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("trade id window holds a full window of sequential venue ids exactly", () => {
  const capacity = 100_000;
  const seen = new TradeIdWindow(capacity);
  const first = 4_000_000_000;
  const total = 250_000;
  for (let i = 0; i < total; i++) seen.add(String(first + i));
  assert.equal(seen.size, capacity);
  for (const i of [0, total - capacity - 1]) assert.equal(seen.has(String(first + i)), false);
  for (const i of [total - capacity, total - 1]) assert.equal(seen.has(String(first + i)), true);
  let held = 0;
  for (let i = 0; i < total; i++) if (seen.has(String(first + i))) held++;
  assert.equal(held, capacity);
});

Deno.test("trade id window refuses a capacity that is not a positive integer", () => {
  for (const capacity of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => new TradeIdWindow(capacity), RangeError);
  }
});
