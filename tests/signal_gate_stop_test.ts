/**
 * The gate of `ExecutionEngine.enqueueSignals` and a stop: a batch deferred
 * by its gate is refused once the engine stops, instead of waiting for the
 * gate (a NATS outage) forever.
 */

import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import { FAST_SUBMIT_RETRIES, scratchEngine, SlowSubmitBroker } from "./_execution_engine.ts";

Deno.test("a batch deferred by its gate is refused once the engine stops (not left pending forever)", async () => {
  await using h = await scratchEngine({
    broker: (paper) => new SlowSubmitBroker(paper),
    options: FAST_SUBMIT_RETRIES,
  });
  await h.engine.start();
  // A NATS batch whose gate stays shut (NATS still down: market data never comes back).
  const shut = new Promise<void>(() => {});
  const held = h.engine.enqueueSignals([{
    body: { id: "g-1", symbol: "BTC-USDT", side: "buy", qty: "1" },
    strategy: "grid",
    source: "nats",
  }], { gate: () => shut });
  let settled: "pending" | "decided" | "refused" = "pending";
  held.decided.then(() => settled = "decided", () => settled = "refused");
  // It was asked (deferred): a REST batch behind it goes on.
  const [rest] = await h.engine.processSignals([{
    body: { id: "r-1", symbol: "BTC-USDT", side: "buy", qty: "1" },
    strategy: "manual",
    source: "rest",
  }]);
  assert.equal(rest?.status, "accepted");
  // The engine stops (SIGTERM while NATS is down). The execution actor's consume loop awaits
  // this batch's `decided` before it can leave its loop and release the outage hold (in its
  // finally), so the batch must settle on its own once the engine stopped.
  await h.engine.stop();
  await waitFor(() => settled !== "pending", 5_000, "the deferred batch to settle after stop")
    .catch(() => {});
  assert.equal(settled, "refused", "the deferred batch's decided is still pending after stop()");
  await assert.rejects(held.outcomes);
});
