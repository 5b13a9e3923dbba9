/**
 * Supervisors and abandoned children (those that overran their shutdown
 * time): a restart waits for an abandoned copy at most `abandonedWaitMs`, so
 * a copy that never exits neither stops supervision of the other children
 * nor keeps a failing root from reporting its failure; and a sibling whose
 * abandoned copy exited while the others stopped is started again.
 */

import assert from "node:assert/strict";
import { Supervisor } from "../actors/supervisor.ts";
import type { ChildSpec } from "../actors/types.ts";
import { deadline, waitFor } from "./_helpers.ts";

/**
 * one_for_one: children are independent. A child whose restart failed and whose
 * failed incarnation is abandoned (it overran its shutdown time) must not stop
 * the supervisor from restarting an unrelated sibling that crashes meanwhile.
 */
Deno.test("one_for_one: a sibling that crashes while another child's abandoned copy is still exiting is restarted", async () => {
  // "flaky": its 2nd start fails (ready rejects) and that incarnation takes long to exit
  // (e.g. a nested supervisor whose start failed while one of its children is stuck).
  let flakyStarts = 0;
  let crashFlaky: (() => void) | null = null;
  const releases: (() => void)[] = [];
  const flaky: ChildSpec = {
    name: "flaky",
    shutdownMs: 30,
    start: (signal) => {
      flakyStarts++;
      const done = Promise.withResolvers<void>();
      const ready = Promise.withResolvers<void>();
      if (flakyStarts === 2) {
        ready.reject(new Error("flaky cannot start"));
        releases.push(() => done.resolve()); // exits only when released
      } else {
        ready.resolve();
        crashFlaky = () => done.reject(new Error("flaky crashed"));
        signal.addEventListener("abort", () => done.resolve(), { once: true });
      }
      ready.promise.catch(() => {});
      return { ready: ready.promise, done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  let otherStarts = 0;
  let crashOther: (() => void) | null = null;
  const other: ChildSpec = {
    name: "other",
    start: (signal) => {
      otherStarts++;
      const done = Promise.withResolvers<void>();
      crashOther = () => done.reject(new Error("other crashed"));
      signal.addEventListener("abort", () => done.resolve(), { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  const sup = new Supervisor({
    name: "root",
    strategy: "one_for_one",
    intensity: 20,
    periodMs: 60_000,
    backoff: { initialMs: 1, maxMs: 5, jitter: 0 },
    abandonedWaitMs: 200,
  }, [flaky, other]);
  try {
    await deadline(sup.ready, 5_000, "start");
    crashFlaky!();
    // Its restart fails, and the failed incarnation is abandoned after 30 ms.
    await waitFor(() => flakyStarts === 2, 5_000, "flaky restarted once");
    await waitFor(
      () => sup.inspect().find((r) => r.name === "root/flaky")?.status !== "starting",
      5_000,
      "flaky's failed start handled",
    );
    await new Promise((resolve) => setTimeout(resolve, 100)); // past flaky's 30 ms shutdown time
    // An unrelated sibling crashes.
    crashOther!();
    const restarted = await waitFor(() => otherStarts === 2, 2_000).then(() => true, () => false);
    const row = sup.inspect().find((r) => r.name === "root/other");
    assert.ok(
      restarted,
      `one_for_one sibling "other" was not restarted within 2 s of its crash (status ${row?.status}): ` +
        `the supervisor is blocked waiting for flaky's abandoned incarnation to exit`,
    );
  } finally {
    let stopped = false;
    const stopping = sup.stop().finally(() => stopped = true);
    const until = Date.now() + 5_000;
    while (!stopped && Date.now() < until) {
      while (releases.length > 0) releases.shift()!();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await deadline(stopping, 5_000, "stop");
  }
});

/**
 * rest_for_one: the siblings after a crashed child are stopped in reverse order and started
 * again. A sibling abandoned after its shutdown time that exits while the supervisor is
 * still stopping the next sibling must be started again too, not left stopped.
 */
Deno.test("rest_for_one: an abandoned sibling that exits while another sibling is still stopping is started again", async () => {
  const starts = new Map<string, number>();
  const crashes = new Map<string, () => void>();
  /** A child that takes `stopMs` after its abort to exit. */
  const child = (name: string, stopMs: number, shutdownMs: number): ChildSpec => ({
    name,
    shutdownMs,
    start: (signal) => {
      starts.set(name, (starts.get(name) ?? 0) + 1);
      const done = Promise.withResolvers<void>();
      crashes.set(name, () => done.reject(new Error(`${name} crashed`)));
      signal.addEventListener("abort", () => {
        setTimeout(() => done.resolve(), stopMs);
      }, { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  });
  const sup = new Supervisor({
    name: "root",
    strategy: "rest_for_one",
    intensity: 20,
    periodMs: 60_000,
    backoff: { initialMs: 1, maxMs: 5, jitter: 0 },
  }, [
    child("a", 0, 1_000),
    // b stops cleanly, but takes 300 ms (well within its 2 s shutdown time).
    child("b", 300, 2_000),
    // c overruns its 30 ms shutdown time (abandoned) and exits 100 ms after its abort,
    // while b is still stopping.
    child("c", 100, 30),
  ]);
  try {
    await deadline(sup.ready, 5_000, "start");
    crashes.get("a")!();
    await waitFor(
      () => (starts.get("a") ?? 0) === 2 && (starts.get("b") ?? 0) === 2,
      5_000,
      "a and b restarted",
    );
    const restarted = await waitFor(() => (starts.get("c") ?? 0) === 2, 2_000).then(
      () => true,
      () => false,
    );
    const row = sup.inspect().find((r) => r.name === "root/c");
    assert.ok(
      restarted,
      `c was not started again after its abandoned copy exited (status ${row?.status}, ` +
        `starts ${starts.get("c")}): rest_for_one left it stopped for good`,
    );
    assert.equal(row?.status, "running");
  } finally {
    await deadline(sup.stop(), 5_000, "stop");
  }
});

/**
 * startRoot's contract: "The caller awaits `done` and exits non-zero when it rejects." The
 * engine does exactly that (engine.closed() waits on the root; main.ts arms its forced-exit
 * timer only when a stop is requested). A root that gives up (restart intensity exceeded)
 * while one of the children it stops is stuck must still report its failure; otherwise the
 * process stays up forever with its tree stopped, and is never restarted by its orchestrator.
 */
Deno.test("a root supervisor that gives up reports its failure even when a child it stopped is stuck", async () => {
  let releaseStuck: (() => void) | null = null;
  const stuck: ChildSpec = {
    name: "stuck",
    shutdownMs: 30,
    start: (signal) => {
      const done = Promise.withResolvers<void>();
      // Ignores its abort (a call that never returns); only the test's cleanup ends it.
      signal.addEventListener("abort", () => releaseStuck = () => done.resolve(), { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  let crash: (() => void) | null = null;
  const crasher: ChildSpec = {
    name: "crasher",
    start: (signal) => {
      const done = Promise.withResolvers<void>();
      crash = () => done.reject(new Error("crasher crashed"));
      signal.addEventListener("abort", () => done.resolve(), { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  const { startRoot } = await import("../actors/supervisor.ts");
  const root = await startRoot({
    name: "root",
    strategy: "one_for_one",
    intensity: 0, // the first crash makes it give up
    periodMs: 60_000,
    backoff: { initialMs: 1, maxMs: 5, jitter: 0 },
    abandonedWaitMs: 200,
  }, [stuck, crasher]);
  let failure: unknown = undefined;
  let settled = false;
  const watched = root.done.then(() => settled = true, (error) => {
    failure = error;
    settled = true;
  });
  try {
    crash!();
    const reported = await waitFor(() => settled, 3_000).then(() => true, () => false);
    const self = root.inspect()[0];
    assert.ok(
      reported,
      `the root gave up but its done has not settled 3 s later (root status ${self?.status}): ` +
        `it waits for the abandoned "stuck" child forever, so the engine never exits`,
    );
    assert.ok(failure instanceof Error, "the root's done rejects with its failure");
  } finally {
    const until = Date.now() + 5_000;
    while (releaseStuck === null && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    (releaseStuck as (() => void) | null)?.();
    await deadline(watched, 5_000, "root finished after the stuck child was released");
  }
});
