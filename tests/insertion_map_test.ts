import assert from "node:assert/strict";
import fc from "fast-check";
import { InsertionOrderedMap, InsertionOrderedSet } from "../lib/insertion_map.ts";

/** What a bare Map does for deleteOldest (the code these structures replace). */
function oldestOf<K, V>(map: Map<K, V>): K | undefined {
  const first = map.keys().next();
  if (first.done) return undefined;
  map.delete(first.value);
  return first.value;
}

type Op =
  | { op: "set"; key: number; value: number }
  | { op: "delete"; key: number }
  | { op: "oldest" }
  | { op: "clear" };

const ops = (keys: number) =>
  fc.array(
    fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          op: fc.constant("set" as const),
          key: fc.nat(keys),
          value: fc.nat(),
        }),
      },
      {
        weight: 3,
        arbitrary: fc.record({ op: fc.constant("delete" as const), key: fc.nat(keys) }),
      },
      { weight: 3, arbitrary: fc.record({ op: fc.constant("oldest" as const) }) },
      { weight: 1, arbitrary: fc.constant({ op: "clear" as const }) },
    ),
    { maxLength: 600, size: "max" },
  );

Deno.test("InsertionOrderedMap does what a Map does, for random sets, deletes and oldest-first deletes", () => {
  for (const keys of [3, 40, 400]) {
    fc.assert(
      fc.property(ops(keys), (script: Op[]) => {
        const model = new Map<number, number>();
        const map = new InsertionOrderedMap<number, number>();
        for (const step of script) {
          if (step.op === "set") {
            assert.equal(map.set(step.key, step.value), map);
            model.set(step.key, step.value);
          } else if (step.op === "delete") {
            assert.equal(map.delete(step.key), model.delete(step.key));
          } else if (step.op === "oldest") {
            assert.equal(map.deleteOldest(), oldestOf(model));
          } else {
            map.clear();
            model.clear();
          }
          assert.equal(map.size, model.size);
        }
        assert.deepEqual([...map], [...model]);
        assert.deepEqual([...map.keys()], [...model.keys()]);
        assert.deepEqual([...map.values()], [...model.values()]);
        for (let key = 0; key <= keys; key++) {
          assert.equal(map.has(key), model.has(key));
          assert.equal(map.get(key), model.get(key));
        }
        // Emptied oldest first, it gives the keys in the order a Map would.
        const drained: number[] = [];
        for (let key = map.deleteOldest(); key !== undefined; key = map.deleteOldest()) {
          drained.push(key);
        }
        assert.deepEqual(drained, [...model.keys()]);
        assert.equal(map.size, 0);
      }),
      { numRuns: 300 },
    );
  }
});

Deno.test("InsertionOrderedSet does what a Set does, and keeps a held key's place on add", () => {
  const set = new InsertionOrderedSet<string>();
  assert.equal(set.deleteOldest(), undefined);
  set.add("a").add("b").add("a");
  assert.deepEqual([...set], ["a", "b"]);
  assert.equal(set.deleteOldest(), "a");
  set.add("a");
  assert.deepEqual([...set.keys()], ["b", "a"]);
  assert.equal(set.delete("b"), true);
  assert.equal(set.delete("b"), false);
  set.add("b");
  assert.deepEqual([...set], ["a", "b"]);
  assert.equal(set.has("a"), true);
  set.clear();
  assert.equal(set.size, 0);
  assert.equal(set.has("a"), false);
});

Deno.test("InsertionOrderedSet used as a bounded memory keeps the newest, with deletes in between", () => {
  // Bounded as the engine bounds its memories: add, and forget the oldest beyond the bound;
  // with deletes of held keys in between (acked fills) that leave stale queue entries behind.
  const bound = 1_000;
  const set = new InsertionOrderedSet<number>();
  const model = new Set<number>();
  for (let i = 0; i < 50_000; i++) {
    set.add(i);
    model.add(i);
    if (i % 3 === 0) {
      set.delete(i - 7);
      model.delete(i - 7);
    }
    if (set.size > bound) {
      const oldest = set.deleteOldest();
      const expected = model.values().next().value;
      assert.equal(oldest, expected);
      model.delete(expected!);
    }
  }
  assert.deepEqual([...set], [...model]);
  assert.ok(set.size <= bound);
});

Deno.test("InsertionOrderedMap held at 100,000 entries forgets them in insertion order", () => {
  // The size at which a bare Map's keys().next() costs ≈50 µs (bench/runtime_bench.ts).
  const map = new InsertionOrderedMap<number, number>();
  for (let i = 0; i < 100_000; i++) map.set(i, i);
  for (let i = 100_000; i < 300_000; i++) {
    map.set(i, i);
    assert.equal(map.deleteOldest(), i - 100_000);
  }
  assert.equal(map.size, 100_000);
  assert.equal(map.get(299_999), 299_999);
  assert.equal(map.has(199_999), false);
});
