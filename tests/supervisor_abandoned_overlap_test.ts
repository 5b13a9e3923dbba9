/**
 * A child abandoned twice: once a restart gave up waiting for its first
 * abandoned copy and started it again, the new incarnation can be abandoned
 * too while the first copy still runs. Both copies stay tracked: the first
 * one's exit does not make the supervisor forget the second, so `done` waits
 * for both.
 */

import assert from "node:assert/strict";
import { Supervisor } from "../actors/supervisor.ts";
import type { ChildSpec } from "../actors/types.ts";
import { deadline, isSettled, waitFor } from "./_helpers.ts";

Deno.test("an older abandoned copy exiting does not make the supervisor forget a newer one still running", async () => {
  let stuckStarts = 0;
  const releases = new Map<number, () => void>();
  const alive = new Set<number>();
  // Incarnations 1 and 2 ignore their abort (they exit only when released); later ones stop.
  const stuck: ChildSpec = {
    name: "stuck",
    shutdownMs: 20,
    start: (signal) => {
      const n = ++stuckStarts;
      alive.add(n);
      const done = Promise.withResolvers<void>();
      const exit = () => {
        alive.delete(n);
        done.resolve();
      };
      if (n <= 2) releases.set(n, exit);
      else signal.addEventListener("abort", exit, { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  let triggerStarts = 0;
  let crash: (() => void) | null = null;
  const trigger: ChildSpec = {
    name: "trigger",
    start: (signal) => {
      triggerStarts++;
      const done = Promise.withResolvers<void>();
      crash = () => done.reject(new Error("trigger crashed"));
      signal.addEventListener("abort", () => done.resolve(), { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  const sup = new Supervisor({
    name: "root",
    strategy: "one_for_all",
    intensity: 20,
    periodMs: 60_000,
    backoff: { initialMs: 1, maxMs: 5, jitter: 0 },
    abandonedWaitMs: 50,
  }, [trigger, stuck]);
  let stopping: Promise<void> | null = null;
  try {
    await deadline(sup.ready, 5_000, "start");
    // 1st restart: stuck#1 abandoned, the bounded wait gives up, stuck#2 started.
    crash!();
    await waitFor(() => stuckStarts === 2 && triggerStarts === 2, 5_000, "first group restart");
    await waitFor(
      () => sup.inspect().every((r) => r.status === "running"),
      5_000,
      "running after first restart",
    );
    // 2nd restart: stuck#2 abandoned too, stuck#3 started.
    crash!();
    await waitFor(() => stuckStarts === 3 && triggerStarts === 3, 5_000, "second group restart");
    await waitFor(
      () => sup.inspect().every((r) => r.status === "running"),
      5_000,
      "running after second restart",
    );
    // The first abandoned copy exits; the second is still running.
    releases.get(1)!();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(alive.has(2), "stuck#2 still running");

    stopping = sup.stop();
    // `done` must not settle while stuck#2 (an abandoned copy) is still running.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const settledEarly = await isSettled(sup.done);
    assert.equal(
      settledEarly,
      false,
      `the supervisor finished (done settled) while an abandoned copy (stuck#2) was still ` +
        `running (alive: ${
          [...alive].join(",")
        }): stuck#1's exit cleared stuck#2's abandoned promise`,
    );
  } finally {
    for (const release of releases.values()) release();
    await deadline(stopping ?? sup.stop(), 5_000, "stop");
  }
});
