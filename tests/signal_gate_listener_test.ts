/**
 * A batch deferred by its gate races the gate against the engine's stop: the
 * stop listener it adds is removed once the gate opens, so deferrals (each
 * batch held after a NATS outage) leave nothing behind on the engine.
 */

import assert from "node:assert/strict";
import { FAST_SUBMIT_RETRIES, scratchEngine } from "./_execution_engine.ts";

/** Live "abort" listeners on AbortSignals not aborted yet, counted through EventTarget's methods. */
function trackAbortListeners() {
  const live = new Map<EventTarget, Set<unknown>>();
  const proto = EventTarget.prototype;
  const add = proto.addEventListener;
  const remove = proto.removeEventListener;
  proto.addEventListener = function (this: EventTarget, type: string, listener: unknown, ...rest) {
    if (type === "abort" && this instanceof AbortSignal && listener) {
      let set = live.get(this);
      if (set === undefined) live.set(this, set = new Set());
      set.add(listener);
    }
    // deno-lint-ignore no-explicit-any
    return (add as any).call(this, type, listener, ...rest);
  } as typeof proto.addEventListener;
  proto.removeEventListener = function (
    this: EventTarget,
    type: string,
    listener: unknown,
    ...rest
  ) {
    if (type === "abort") live.get(this)?.delete(listener);
    // deno-lint-ignore no-explicit-any
    return (remove as any).call(this, type, listener, ...rest);
  } as typeof proto.removeEventListener;
  return {
    count(): number {
      let n = 0;
      for (const [target, set] of live) if (!(target as AbortSignal).aborted) n += set.size;
      return n;
    },
    restore() {
      proto.addEventListener = add;
      proto.removeEventListener = remove;
    },
  };
}

Deno.test("a batch deferred by its gate leaves no abort listener behind once the gate opened", async () => {
  await using h = await scratchEngine({ options: FAST_SUBMIT_RETRIES });
  const { engine } = h;
  const tracker = trackAbortListeners();
  try {
    await engine.start();
    /** Hands in `n` one-signal batches, each deferred once by its gate (which then opens). */
    const run = async (prefix: string, n: number, gated: boolean) => {
      for (let i = 0; i < n; i++) {
        let asked = 0;
        const batch = engine.enqueueSignals(
          [{
            body: { id: `${prefix}-${i}`, symbol: "BTC-USDT", side: "buy", qty: "0.001" },
            strategy: "grid",
            source: "nats",
          }],
          gated
            ? { gate: () => (asked++ === 0 ? new Promise<void>((r) => setTimeout(r, 1)) : null) }
            : {},
        );
        const [outcome] = await batch.outcomes;
        assert.equal(outcome?.status, "accepted");
      }
    };
    await run("warm", 5, false);
    await engine.idle();
    const before = tracker.count();
    await run("plain", 20, false);
    await engine.idle();
    const plainGrowth = tracker.count() - before;
    const mid = tracker.count();
    await run("gated", 20, true);
    await engine.idle();
    const gatedGrowth = tracker.count() - mid;
    assert.ok(
      gatedGrowth - plainGrowth < 5,
      `20 batches deferred once by their gate left ${gatedGrowth} abort listeners behind ` +
        `(${plainGrowth} for 20 ungated batches): the gate race's listener on #stopping is never removed`,
    );
  } finally {
    tracker.restore();
  }
});
