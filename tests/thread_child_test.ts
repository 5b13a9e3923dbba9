/**
 * Thread children (actors/thread_child.ts) with real Web Workers: a thread
 * that ignores the stop is terminated after its stop timeout, and one that
 * ends by itself without a word is taken for dead and restarted.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startRoot } from "../actors/supervisor.ts";
import { startThreadChild } from "../actors/thread_child.ts";
import type { ChildSpec } from "../actors/types.ts";
import { nullLogger } from "../lib/log.ts";
import { deadline, waitFor } from "./_helpers.ts";

const THREADS = new URL("./fixtures/threads/", import.meta.url);

Deno.test("a thread that ignores the stop is terminated after its stop timeout, not left running", async () => {
  let beats = 0;
  const child: ChildSpec = {
    name: "thread",
    shutdownMs: 300,
    start: (signal) =>
      startThreadChild<Record<string, never>, { beats: number }>({
        module: new URL("hung_thread.ts", THREADS),
        name: "hung",
        start: {},
        statusIntervalMs: 20,
        onStatus: (status) => beats = status.beats,
        log: nullLogger,
        stopTimeoutMs: 300,
      }, signal),
  };
  const root = await deadline(startRoot({ name: "root" }, [child]), 10_000, "root start");
  await waitFor(() => beats > 0, 10_000, "first status");
  await deadline(root.stop(), 3_000, "root stop");
  // Terminated: no status comes any more (one may still be on its way).
  const atStop = beats;
  const alive = await waitFor(() => beats > atStop + 2, 1_000).then(() => true, () => false);
  assert.equal(alive, false, `status beats went on after the stop: ${atStop} → ${beats}`);
});

for (const how of ["close", "exit"] as const) {
  Deno.test(`a thread that ends by itself (${how}) without a word is taken for dead and restarted`, async () => {
    let starts = 0;
    const child: ChildSpec = {
      name: "thread",
      shutdownMs: 300,
      start: (signal) => {
        starts++;
        return startThreadChild<{ how: typeof how }, Record<string, never>>({
          module: new URL("vanishing_thread.ts", THREADS),
          name: "vanishing",
          start: { how },
          statusIntervalMs: 20,
          onStatus: () => {},
          log: nullLogger,
          silentAfterMs: 300,
        }, signal);
      },
    };
    const root = await deadline(
      startRoot({ name: "root", intensity: 100, backoff: { initialMs: 10, jitter: 0 } }, [child]),
      10_000,
      "root start",
    );
    try {
      await waitFor(() => starts >= 3, 10_000, `restarts (started ${starts} times)`);
      assert.ok((root.inspect().find((row) => row.name === "root/thread")?.restarts ?? 0) >= 2);
    } finally {
      await deadline(root.stop(), 3_000, "root stop");
    }
  });
}

Deno.test("a thread that keeps reporting is not taken for dead while the main thread was busy", async () => {
  let beats = 0;
  const controller = new AbortController();
  const thread = startThreadChild<Record<string, never>, { beats: number }>({
    module: new URL("hung_thread.ts", THREADS),
    name: "busy-main",
    start: {},
    statusIntervalMs: 20,
    onStatus: (status) => beats = status.beats,
    log: nullLogger,
    silentAfterMs: 500,
    stopTimeoutMs: 300,
  }, controller.signal);
  let failure: unknown = null;
  thread.done.catch((error) => failure = error);
  try {
    await waitFor(() => beats > 0, 10_000, "first status");
    // This thread blocked longer than silentAfterMs (a big synchronous job, a GC pause) while
    // the other kept reporting: its statuses wait in the queue behind the watchdog's timer.
    const until = Date.now() + 800;
    while (Date.now() < until) { /* busy */ }
    const before = beats;
    await waitFor(() => beats > before + 3 || failure !== null, 5_000, "statuses after the block");
    assert.equal(failure, null);
  } finally {
    controller.abort();
    await thread.done.catch(() => {});
  }
});
