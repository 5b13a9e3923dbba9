import assert from "node:assert/strict";
import {
  restartLimits,
  startRoot,
  Supervisor,
  supervisor,
  SupervisorError,
  type SupervisorOptions,
  SupervisorStartError,
} from "../actors/supervisor.ts";
import type { ActorInfo, ChildSpec, RestartType } from "../actors/types.ts";
import { type Clock, RecordingClock } from "../lib/clock.ts";
import { memoryLogger } from "../lib/log.ts";
import { loadConfig } from "../config/mod.ts";
import { deadline, isSettled, waitFor } from "./_helpers.ts";

interface WorkerOptions {
  restart?: RestartType;
  shutdownMs?: number;
  /** Settles the incarnation's `ready` (default: at once). */
  ready?: (incarnation: number) => Promise<void>;
  /** Throws synchronously from `start` for these incarnations. */
  throwOn?: number[];
  /** Ignores the abort signal: never exits when asked to stop. */
  hang?: boolean;
}

interface Incarnation {
  readonly number: number;
  crash(error: Error): void;
  exit(): void;
}

/** Controllable workers that record `start:name` and `stop:name` events. */
class Probe {
  readonly events: string[] = [];
  readonly #live = new Map<string, Incarnation>();
  readonly #starts = new Map<string, number>();

  worker(name: string, options: WorkerOptions = {}): ChildSpec {
    return {
      name,
      ...(options.restart ? { restart: options.restart } : {}),
      ...(options.shutdownMs !== undefined ? { shutdownMs: options.shutdownMs } : {}),
      start: (signal) => {
        const number = (this.#starts.get(name) ?? 0) + 1;
        this.#starts.set(name, number);
        if (options.throwOn?.includes(number)) throw new Error(`${name} cannot start`);
        this.events.push(`start:${name}`);
        const done = Promise.withResolvers<void>();
        this.#live.set(name, { number, crash: done.reject, exit: () => done.resolve() });
        signal.addEventListener("abort", () => {
          this.events.push(`stop:${name}`);
          if (!options.hang) done.resolve();
        }, { once: true });
        const ready = options.ready?.(number) ?? Promise.resolve();
        ready.catch(done.reject);
        return { ready, done: done.promise, stats: () => ({ kind: "worker" }) };
      },
    };
  }

  starts(name: string): number {
    return this.#starts.get(name) ?? 0;
  }

  crash(name: string, message = `${name} crashed`): void {
    this.#incarnation(name).crash(new Error(message));
  }

  exit(name: string): void {
    this.#incarnation(name).exit();
  }

  #incarnation(name: string): Incarnation {
    const incarnation = this.#live.get(name);
    if (!incarnation) throw new Error(`${name} never started`);
    return incarnation;
  }
}

/** Fast, deterministic options: a recording clock and no jitter. */
function options(overrides: Partial<SupervisorOptions> = {}): SupervisorOptions {
  return {
    name: "root",
    clock: new RecordingClock(),
    backoff: { initialMs: 10, maxMs: 1_000, jitter: 0 },
    ...overrides,
  };
}

function row(root: Supervisor, name: string): ActorInfo {
  const found = root.inspect().find((info) => info.name === name);
  if (!found) throw new Error(`No row ${name}`);
  return found;
}

Deno.test("supervisor starts children in order, each after the previous one is ready", async () => {
  const probe = new Probe();
  const gate = Promise.withResolvers<void>();
  const root = new Supervisor(options(), [
    probe.worker("a", { ready: () => gate.promise }),
    probe.worker("b"),
  ]);
  await waitFor(() => probe.events.length === 1);
  assert.equal(await isSettled(root.ready), false);
  assert.deepEqual(probe.events, ["start:a"]);
  gate.resolve();
  await deadline(root.ready);
  assert.deepEqual(probe.events, ["start:a", "start:b"]);
  assert.deepEqual(root.inspect().map((info) => [info.name, info.status]), [
    ["root", "running"],
    ["root/a", "running"],
    ["root/b", "running"],
  ]);
  await root.stop();
});

Deno.test("supervisor stops children in reverse start order on shutdown", async () => {
  const probe = new Probe();
  const controller = new AbortController();
  const root = await startRoot(
    options(),
    ["a", "b", "c"].map((n) => probe.worker(n)),
    controller.signal,
  );
  controller.abort();
  await deadline(root.done);
  assert.deepEqual(probe.events, ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]);
  assert.equal(root.status, "stopped");
  assert.deepEqual(root.inspect().slice(1).map((info) => info.status), [
    "stopped",
    "stopped",
    "stopped",
  ]);
});

Deno.test("supervisor restarts a crashed child under one_for_one and leaves siblings untouched", async () => {
  const probe = new Probe();
  await using root = await startRoot(
    options({ strategy: "one_for_one", intensity: 5 }),
    ["a", "b", "c"].map((n) => probe.worker(n)),
  );
  probe.crash("b", "feed lost");
  await waitFor(() => probe.starts("b") === 2 && row(root, "root/b").status === "running");
  assert.deepEqual(probe.events, ["start:a", "start:b", "start:c", "start:b"]);
  assert.deepEqual(row(root, "root/b"), {
    name: "root/b",
    kind: "worker",
    status: "running",
    restarts: 1,
    mailbox: null,
    last_error: "feed lost",
  });
  assert.equal(row(root, "root/a").restarts, 0);
  assert.equal(row(root, "root/c").restarts, 0);
});

Deno.test("supervisor restarts a crashing child with growing backoff delays", async () => {
  const probe = new Probe();
  const clock = new RecordingClock();
  await using root = await startRoot(
    options({
      clock,
      intensity: 10,
      periodMs: 60_000,
      backoff: { initialMs: 100, maxMs: 1_000, jitter: 0 },
    }),
    [probe.worker("flaky")],
  );
  for (let crash = 1; crash <= 5; crash++) {
    probe.crash("flaky");
    await waitFor(() =>
      probe.starts("flaky") === crash + 1 && root.inspect()[1]?.status === "running"
    );
  }
  assert.deepEqual(clock.sleeps, [100, 200, 400, 800, 1_000]);
  assert.equal(row(root, "root/flaky").restarts, 5);
});

Deno.test("supervisor applies injected jitter to restart delays", async () => {
  const probe = new Probe();
  const clock = new RecordingClock();
  await using root = await startRoot(
    options({
      clock,
      intensity: 3,
      periodMs: 60_000,
      backoff: { initialMs: 1_000, jitter: 0.5 },
      random: () => 0,
    }),
    [probe.worker("w")],
  );
  probe.crash("w");
  await waitFor(() => probe.starts("w") === 2 && root.inspect()[1]?.status === "running");
  assert.deepEqual(clock.sleeps, [500]);
});

Deno.test("supervisor restarts the later siblings, not the earlier ones, under rest_for_one", async () => {
  const probe = new Probe();
  await using root = await startRoot(
    options({ strategy: "rest_for_one", intensity: 5 }),
    ["a", "b", "c", "d"].map((n) => probe.worker(n)),
  );
  probe.events.length = 0;
  probe.crash("b");
  await waitFor(() => probe.starts("d") === 2 && row(root, "root/d").status === "running");
  assert.deepEqual(probe.events, ["stop:d", "stop:c", "start:b", "start:c", "start:d"]);
  assert.deepEqual(root.inspect().slice(1).map((info) => info.restarts), [0, 1, 1, 1]);
  assert.equal(probe.starts("a"), 1);
});

Deno.test("supervisor restarts every child under one_for_all", async () => {
  const probe = new Probe();
  await using root = await startRoot(
    options({ strategy: "one_for_all", intensity: 5 }),
    ["a", "b", "c"].map((n) => probe.worker(n)),
  );
  probe.events.length = 0;
  probe.crash("b");
  await waitFor(() => probe.starts("c") === 2 && row(root, "root/c").status === "running");
  assert.deepEqual(probe.events, ["stop:c", "stop:a", "start:a", "start:b", "start:c"]);
  assert.deepEqual(root.inspect().slice(1).map((info) => info.restarts), [1, 1, 1]);
});

Deno.test("supervisor handles simultaneous deaths once and ignores stale exits", async () => {
  const probe = new Probe();
  await using root = await startRoot(
    options({ strategy: "one_for_all", intensity: 5 }),
    ["a", "b"].map((n) => probe.worker(n)),
  );
  probe.crash("a");
  probe.crash("b");
  await waitFor(() => probe.starts("b") === 2 && row(root, "root/b").status === "running");
  assert.equal(await isSettled(root.done), false);
  assert.equal(probe.starts("a"), 2);
  assert.equal(probe.starts("b"), 2);
  assert.deepEqual(root.inspect().slice(1).map((info) => info.restarts), [1, 1]);
});

Deno.test("supervisor fails with SupervisorError when restarts exceed its intensity", async () => {
  const probe = new Probe();
  const root = await startRoot(
    options({ intensity: 1, periodMs: 5_000 }),
    ["a", "b"].map((n) => probe.worker(n)),
  );
  probe.crash("b", "first");
  await waitFor(() => probe.starts("b") === 2 && row(root, "root/b").status === "running");
  probe.crash("b", "second");
  const error = await deadline(root.done).catch((e) => e);
  assert.ok(error instanceof SupervisorError);
  assert.equal(error.supervisor, "root");
  assert.equal((error.cause as Error).message, "second");
  assert.deepEqual(probe.events.slice(-1), ["stop:a"]);
  assert.equal(root.status, "failed");
  assert.match(root.inspect()[0]?.last_error ?? "", /exceeded 1 restarts/);
});

Deno.test("nested supervisor exceeding its intensity fails to its parent, which restarts it", async () => {
  const probe = new Probe();
  const inner = supervisor(options({ name: "inner", intensity: 0 }), [probe.worker("w")]);
  await using root = await startRoot(options({ intensity: 3 }), [probe.worker("sibling"), inner]);
  probe.crash("w");
  await waitFor(() => probe.starts("w") === 2 && row(root, "root/inner").status === "running");
  const inspected = root.inspect();
  assert.deepEqual(inspected.map((info) => [info.name, info.kind, info.restarts]), [
    ["root", "supervisor", 0],
    ["root/sibling", "worker", 0],
    ["root/inner", "supervisor", 1],
    ["root/inner/w", "worker", 0],
  ]);
  assert.match(row(root, "root/inner").last_error ?? "", /Supervisor inner exceeded 0 restarts/);
  assert.equal(probe.starts("sibling"), 1);
});

Deno.test("failures escalate up to the root, which fails when its own intensity is exceeded", async () => {
  const probe = new Probe();
  const inner = supervisor(options({ name: "inner", intensity: 0 }), [probe.worker("w")]);
  const root = await startRoot(options({ intensity: 0 }), [probe.worker("sibling"), inner]);
  probe.crash("w");
  const error = await deadline(root.done).catch((e) => e);
  assert.ok(error instanceof SupervisorError);
  assert.equal(error.supervisor, "root");
  assert.ok(error.cause instanceof SupervisorError);
  assert.equal(error.cause.supervisor, "inner");
  assert.deepEqual(probe.events, ["start:sibling", "start:w", "stop:sibling"]);
  assert.ok((await root.closed()) instanceof SupervisorError);
});

Deno.test("transient child is not restarted after a normal exit but is after a crash", async () => {
  const probe = new Probe();
  await using root = await startRoot(options({ intensity: 5 }), [
    probe.worker("t", { restart: "transient" }),
  ]);
  probe.crash("t");
  await waitFor(() => probe.starts("t") === 2 && row(root, "root/t").status === "running");
  probe.exit("t");
  await waitFor(() => row(root, "root/t").status === "exited");
  assert.equal(await isSettled(root.done), false);
  assert.equal(probe.starts("t"), 2);
});

Deno.test("temporary child is never restarted", async () => {
  const probe = new Probe();
  await using root = await startRoot(options({ intensity: 5 }), [
    probe.worker("once", { restart: "temporary" }),
    probe.worker("other", { restart: "temporary" }),
  ]);
  probe.crash("once", "gone");
  probe.exit("other");
  await waitFor(() =>
    row(root, "root/once").status === "failed" && row(root, "root/other").status === "exited"
  );
  assert.equal(row(root, "root/once").last_error, "gone");
  assert.equal(probe.starts("once"), 1);
  assert.equal(probe.starts("other"), 1);
});

Deno.test("supervisor abandons a child that overruns its shutdown time, stops the others, and finishes once it exits", async () => {
  const probe = new Probe();
  const { log, lines } = memoryLogger();
  const root = await startRoot({ name: "root", log }, [
    probe.worker("a"),
    probe.worker("stuck", { hang: true, shutdownMs: 30 }),
  ]);
  const stopping = root.stop();
  // The others are stopped after the stuck one's shutdown time, without waiting for it.
  await waitFor(() => probe.events.includes("stop:a"), 2_000);
  assert.deepEqual(probe.events.slice(-2), ["stop:stuck", "stop:a"]);
  const killed = lines.find((line) => String(line.message).startsWith("child killed"));
  assert.equal(killed?.child, "stuck");
  assert.equal(killed?.supervisor, "root");
  // It still runs: the supervisor has not finished (a parent would otherwise start it again).
  assert.equal(await isSettled(stopping), false);
  assert.equal(row(root, "root/stuck").status, "stopping");
  probe.exit("stuck");
  await deadline(stopping, 2_000);
  assert.equal(row(root, "root/stuck").status, "stopped");
});

Deno.test("supervisor start fails when a child fails to start, stopping the started ones in reverse", async () => {
  const probe = new Probe();
  const root = new Supervisor(options(), [
    probe.worker("a"),
    probe.worker("b"),
    probe.worker("c", { ready: () => Promise.reject(new Error("no database")) }),
    probe.worker("d"),
  ]);
  const error = await deadline(root.ready).catch((e) => e);
  assert.ok(error instanceof SupervisorStartError);
  assert.equal(error.child, "c");
  assert.equal((error.cause as Error).message, "no database");
  await assert.rejects(root.done, SupervisorStartError);
  assert.deepEqual(probe.events, ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]);
  assert.equal(probe.starts("d"), 0);
  assert.equal(row(root, "root/c").status, "failed");
  assert.equal(row(root, "root/c").last_error, "no database");
});

Deno.test("startRoot rejects when a child's start throws synchronously", async () => {
  const probe = new Probe();
  await assert.rejects(
    startRoot(options(), [probe.worker("a"), probe.worker("b", { throwOn: [1] })]),
    (error) => error instanceof SupervisorStartError && error.child === "b",
  );
  assert.deepEqual(probe.events, ["start:a", "stop:a"]);
});

Deno.test("a synchronous throw from start during a restart counts as another abnormal exit", async () => {
  const probe = new Probe();
  const clock = new RecordingClock();
  await using root = await startRoot(
    options({ clock, intensity: 5, periodMs: 60_000, backoff: { initialMs: 100, jitter: 0 } }),
    [probe.worker("w", { throwOn: [2] })],
  );
  probe.crash("w");
  await waitFor(() => probe.starts("w") === 3 && row(root, "root/w").status === "running");
  assert.deepEqual(clock.sleeps, [100, 200]);
  assert.equal(row(root, "root/w").restarts, 2);
  assert.equal(row(root, "root/w").last_error, "w cannot start");
});

Deno.test("supervisor rejects invalid options and duplicate child names", () => {
  const probe = new Probe();
  assert.throws(() => supervisor({ name: "s", intensity: -1 }, []), RangeError);
  assert.throws(() => supervisor({ name: "s", periodMs: 0 }, []), RangeError);
  assert.throws(() => supervisor({ name: "a/b" }, []), TypeError);
  assert.throws(() => supervisor({ name: "s" }, [probe.worker("x"), probe.worker("x")]), TypeError);
});

/** A test clock whose wall time can be stepped while its monotonic time only runs forward. */
class SteppedClock implements Clock {
  wall = 1_700_000_000_000;
  mono = 1_000_000;
  now(): number {
    return this.wall;
  }
  monotonic(): number {
    return this.mono;
  }
  /** Time passes: both clocks move forward. */
  pass(ms: number): void {
    this.wall += ms;
    this.mono += ms;
  }
  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    this.pass(ms);
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (signal?.aborted) throw signal.reason;
  }
}

/** A child that crashes on demand and counts its starts. */
function crashable() {
  let starts = 0;
  let crash: (() => void) | null = null;
  const spec: ChildSpec = {
    name: "worker",
    start: (signal) => {
      starts++;
      const done = Promise.withResolvers<void>();
      crash = () => done.reject(new Error("crashed"));
      signal.addEventListener("abort", () => done.resolve(), { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  return {
    spec,
    starts: () => starts,
    crash: () => crash!(),
  };
}

Deno.test("restart intensity counts restarts within period_ms even after the wall clock is set back", async () => {
  const clock = new SteppedClock();
  const child = crashable();
  const sup = new Supervisor({
    name: "root",
    intensity: 2,
    periodMs: 1_000,
    clock,
    backoff: { initialMs: 10, maxMs: 100, jitter: 0 },
  }, [child.spec]);
  let failure: unknown = null;
  sup.done.catch((error) => failure = error);
  try {
    await deadline(sup.ready, 5_000, "start");
    child.crash();
    await waitFor(() => child.starts() === 2, 5_000, "first restart");
    // NTP (or an operator) sets the wall clock back by an hour.
    clock.wall -= 3_600_000;
    // Three more crashes, each more than period_ms after the previous one: never more than one
    // restart within any period, far below the intensity of 2.
    for (let i = 0; i < 3; i++) {
      clock.pass(5_000);
      const before = child.starts();
      child.crash();
      await waitFor(() => child.starts() > before || failure !== null, 5_000, `restart ${i + 2}`);
      assert.equal(
        failure,
        null,
        `supervisor gave up after crash ${
          i + 2
        }, though each came ${5_000} ms after the previous ` +
          `(period 1000 ms): restarts from before the clock step are still counted`,
      );
    }
    assert.equal(child.starts(), 5);
  } finally {
    await deadline(sup.stop(), 5_000, "stop");
  }
});

Deno.test("a child abandoned after its shutdown time is not started again while its previous incarnation still runs", async () => {
  let live = 0;
  let maxLive = 0;
  let starts = 0;
  const releases: (() => void)[] = [];
  let crashFirst: (() => void) | null = null;
  // `first` crashes; under rest_for_one `second` is stopped and started again with it. `second`
  // takes longer than its shutdown time to stop (a database call that does not see the abort).
  const first: ChildSpec = {
    name: "first",
    start: (signal) => {
      const done = Promise.withResolvers<void>();
      crashFirst = () => done.reject(new Error("first crashed"));
      signal.addEventListener("abort", () => done.resolve(), { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  const second: ChildSpec = {
    name: "second",
    shutdownMs: 50,
    start: (signal) => {
      starts++;
      live++;
      maxLive = Math.max(maxLive, live);
      const done = Promise.withResolvers<void>();
      const exit = () => {
        live--;
        done.resolve();
      };
      // Only exits when released by the test (it ignores its abort for a while).
      signal.addEventListener("abort", () => releases.push(exit), { once: true });
      return { ready: Promise.resolve(), done: done.promise, stats: () => ({ kind: "worker" }) };
    },
  };
  const sup = new Supervisor({
    name: "root",
    strategy: "rest_for_one",
    intensity: 5,
    backoff: { initialMs: 10, maxMs: 100, jitter: 0 },
  }, [first, second]);
  try {
    await deadline(sup.ready, 5_000, "start");
    crashFirst!();
    // The old `second` is abandoned after 50 ms; give the supervisor time to do what it does.
    const startedAgain = await waitFor(() => starts >= 2, 1_000).then(() => true, () => false);
    assert.equal(
      maxLive,
      1,
      `two incarnations of "second" ran at once (started again: ${startedAgain}); ` +
        `the previous one had not exited yet`,
    );
  } finally {
    let stopped = false;
    const stopping = sup.stop().finally(() => stopped = true);
    // Whatever is started meanwhile is released too.
    const until = Date.now() + 5_000;
    while (!stopped && Date.now() < until) {
      while (releases.length > 0) releases.shift()!();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await deadline(stopping, 5_000, "stop");
  }
});

Deno.test("a nested supervisor with an abandoned child is not started again until that child exits", async () => {
  const probe = new Probe();
  const { log, lines } = memoryLogger();
  const root = await startRoot(
    { ...options({ intensity: 5, strategy: "rest_for_one" }), log },
    [
      probe.worker("trigger"),
      supervisor({ name: "trading", log }, [
        probe.worker("execution", { hang: true, shutdownMs: 30 }),
      ]),
    ],
  );
  probe.crash("trigger");
  // The old `execution` is abandoned; `trading` waits for it, and the root for `trading`.
  await waitFor(() =>
    lines.some((line) =>
      line.supervisor === "trading" && String(line.message).startsWith("waiting for abandoned")
    )
  );
  assert.equal(probe.starts("execution"), 1);
  assert.equal(row(root, "root/trading/execution").status, "stopping");
  probe.exit("execution");
  await waitFor(() => probe.starts("execution") === 2);
  assert.equal(row(root, "root/trading/execution").status, "running");
  const stopping = root.stop();
  await waitFor(() => probe.events.filter((e) => e === "stop:execution").length === 2);
  probe.exit("execution");
  await deadline(stopping);
});

Deno.test("restartLimits gives every supervisor the configuration's intensity, period and backoff", async () => {
  const config = await loadConfig({
    args: [],
    env: {
      TRADEWIRE_SUPERVISOR__INTENSITY: "7",
      TRADEWIRE_SUPERVISOR__PERIOD_MS: "12000",
      TRADEWIRE_SUPERVISOR__BACKOFF_INITIAL_MS: "250",
      TRADEWIRE_SUPERVISOR__BACKOFF_MAX_MS: "9000",
      TRADEWIRE_SUPERVISOR__BACKOFF_JITTER: "0.5",
    },
  });
  assert.deepEqual(restartLimits(config.supervisor), {
    intensity: 7,
    periodMs: 12_000,
    backoff: { initialMs: 250, maxMs: 9_000, jitter: 0.5 },
  });
});
