import assert from "node:assert/strict";
import { backoffDelay, retry, RetryError } from "../lib/backoff.ts";
import { RecordingClock } from "../lib/clock.ts";

Deno.test("backoffDelay grows by the factor and caps at maxMs", () => {
  const options = { initialMs: 100, maxMs: 1_000, jitter: 0 };
  const delays = [0, 1, 2, 3, 4, 5].map((attempt) => backoffDelay(attempt, options));
  assert.deepEqual(delays, [100, 200, 400, 800, 1_000, 1_000]);
  assert.equal(backoffDelay(2, { initialMs: 10, factor: 3, jitter: 0 }), 90);
});

Deno.test("backoffDelay spreads the delay by the jitter fraction both ways", () => {
  const at = (random: number) =>
    backoffDelay(1, { initialMs: 500, maxMs: 10_000, jitter: 0.2, random: () => random });
  assert.equal(at(0), 800);
  assert.equal(at(0.5), 1_000);
  assert.equal(at(0.999_999), 1_200);
  for (let i = 0; i < 1_000; i++) {
    const delay = backoffDelay(1, { initialMs: 500, jitter: 0.2 });
    assert.ok(delay >= 800 && delay <= 1_200, `delay ${delay} out of 800..1200`);
  }
});

Deno.test("backoffDelay never exceeds maxMs, jitter included", () => {
  assert.equal(backoffDelay(10, { initialMs: 100, maxMs: 1_000, random: () => 0.999 }), 1_000);
});

Deno.test("backoffDelay rejects invalid arguments with RangeError", () => {
  assert.throws(() => backoffDelay(-1), RangeError);
  assert.throws(() => backoffDelay(1.5), RangeError);
  assert.throws(() => backoffDelay(0, { jitter: 1.5 }), RangeError);
  assert.throws(() => backoffDelay(0, { factor: 0.5 }), RangeError);
  assert.throws(() => backoffDelay(0, { initialMs: 100, maxMs: 50 }), RangeError);
});

Deno.test("retry retries failures with growing delays until success", async () => {
  const clock = new RecordingClock();
  const retries: Array<[string, number, number]> = [];
  const result = await retry((attempt) => {
    if (attempt < 4) throw new Error(`fail ${attempt}`);
    return Promise.resolve(`ok after ${attempt}`);
  }, {
    clock,
    initialMs: 50,
    jitter: 0,
    onRetry: (error, attempt, delayMs) =>
      retries.push([(error as Error).message, attempt, delayMs]),
  });
  assert.equal(result, "ok after 4");
  assert.deepEqual(clock.sleeps, [50, 100, 200]);
  assert.deepEqual(retries, [["fail 1", 1, 50], ["fail 2", 2, 100], ["fail 3", 3, 200]]);
});

Deno.test("retry throws RetryError with the last failure after maxAttempts", async () => {
  const clock = new RecordingClock();
  let calls = 0;
  const error = await retry(() => {
    calls++;
    throw new Error(`boom ${calls}`);
  }, { clock, maxAttempts: 3, jitter: 0 }).catch((e) => e);
  assert.ok(error instanceof RetryError);
  assert.equal(error.attempts, 3);
  assert.equal((error.cause as Error).message, "boom 3");
  assert.equal(calls, 3);
  assert.equal(clock.sleeps.length, 2);
});

Deno.test("retry rethrows at once what shouldRetry rejects", async () => {
  const clock = new RecordingClock();
  const fatal = new TypeError("bad credentials");
  await assert.rejects(
    retry(() => Promise.reject(fatal), { clock, shouldRetry: (e) => !(e instanceof TypeError) }),
    (e) => e === fatal,
  );
  assert.deepEqual(clock.sleeps, []);
});

Deno.test("retry stops with the signal's reason when aborted", async () => {
  const controller = new AbortController();
  let calls = 0;
  const attempt = retry(() => {
    calls++;
    throw new Error("down");
  }, { signal: controller.signal, initialMs: 60_000 });
  controller.abort(new Error("shutting down"));
  await assert.rejects(attempt, { message: "shutting down" });
  assert.equal(calls, 1);
});
