import assert from "node:assert/strict";
import fc from "fast-check";
import { takeKeyedBatch } from "../lib/keyed_batch.ts";

const keyOf = (item: string) => item[0]!;

Deno.test("takeKeyedBatch takes the first max items and every later item of their keys", () => {
  const queue = ["a1", "b1", "a2", "c1", "b2", "c2", "a3"];
  const batch = takeKeyedBatch(queue, 2, keyOf);
  assert.deepEqual(batch, ["a1", "b1", "a2", "b2", "a3"]);
  assert.deepEqual(queue, ["c1", "c2"]);
});

Deno.test("takeKeyedBatch takes everything from a queue no longer than max", () => {
  const queue = ["a1", "b1"];
  assert.deepEqual(takeKeyedBatch(queue, 5, keyOf), ["a1", "b1"]);
  assert.deepEqual(queue, []);
  assert.deepEqual(takeKeyedBatch([], 1, keyOf), []);
});

Deno.test("takeKeyedBatch refuses a max that is not a positive integer", () => {
  for (const max of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => takeKeyedBatch(["a1"], max, keyOf), RangeError);
  }
});

Deno.test("takeKeyedBatch never leaves a key of the batch behind and keeps every order", () => {
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom("a", "b", "c", "d", "e"), { maxLength: 60 }),
      fc.integer({ min: 1, max: 70 }),
      (keys, max) => {
        const queue = keys.map((key, i) => `${key}${i}`);
        const original = [...queue];
        const batch = takeKeyedBatch(queue, max, keyOf);
        // The batch starts with the first max items, in order.
        assert.deepEqual(batch.slice(0, max), original.slice(0, max));
        // Nothing is lost or taken twice, and no key is split between batch and queue.
        assert.deepEqual([...batch, ...queue].sort(), [...original].sort());
        const left = new Set(queue.map(keyOf));
        assert.ok(batch.every((item) => !left.has(keyOf(item))));
        // Each side keeps the queue's order.
        const position = new Map(original.map((item, i) => [item, i]));
        const ascending = (items: string[]) =>
          items.every((item, i) => i === 0 || position.get(items[i - 1]!)! < position.get(item)!);
        assert.ok(ascending(batch.slice(max)), "items pulled forward keep their order");
        assert.ok(ascending(queue), "items left keep their order");
      },
    ),
  );
});
