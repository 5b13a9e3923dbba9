/**
 * The nearest-rank percentile the benchmarks print p50/p99 with
 * (bench/_stats.ts). Review 50: both benches' helpers read one rank high —
 * p99 of 100 samples was their maximum, p50 of two the larger one.
 */
import assert from "node:assert/strict";
import { percentile } from "../bench/_stats.ts";

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

Deno.test("percentile p99 of 100 samples is the 99th, not the maximum", () => {
  assert.equal(percentile(range(100), 0.99), 99);
  assert.equal(percentile(range(1000), 0.99), 990);
});

Deno.test("percentile p50 is the lower middle of an even count and the middle of an odd one", () => {
  assert.equal(percentile([1, 2], 0.5), 1);
  assert.equal(percentile([1, 2, 3], 0.5), 2);
  assert.equal(percentile(range(100), 0.5), 50);
});

Deno.test("percentile of one sample is it at every quantile; of none, NaN", () => {
  assert.equal(percentile([7], 0), 7);
  assert.equal(percentile([7], 0.5), 7);
  assert.equal(percentile([7], 1), 7);
  assert.ok(Number.isNaN(percentile([], 0.5)));
});

Deno.test("percentile 0 is the minimum and 1 the maximum", () => {
  assert.equal(percentile(range(10), 0), 1);
  assert.equal(percentile(range(10), 1), 10);
});

Deno.test("percentile refuses a quantile outside [0, 1]", () => {
  assert.throws(() => percentile([1], 99), RangeError);
  assert.throws(() => percentile([1], -0.1), RangeError);
  assert.throws(() => percentile([1], NaN), RangeError);
});
