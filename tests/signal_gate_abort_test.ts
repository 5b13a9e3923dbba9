/**
 * The gate of `ExecutionEngine.enqueueSignals` and its caller stopping: a
 * batch deferred by its gate (NATS signals held after an outage) is refused
 * with `ExecutionNotReadyError` — nothing recorded, its messages come back —
 * when the caller's signal aborts or the gate rejects, while the engine keeps
 * running. The execution actor stops its consume loop before the engine, so
 * a batch that waited for the engine's own stop could never be refused.
 */

import assert from "node:assert/strict";
import { ExecutionNotReadyError, type SignalInput } from "../trading/execution.ts";
import { FAST_SUBMIT_RETRIES, scratchEngine } from "./_execution_engine.ts";

const shut = () => new Promise<void>(() => {}); // NATS still down: market data never comes back

/** How `promise` settled within `ms`: its error, "resolved", or "pending". */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise.then(() => "resolved", (error: unknown) => error),
      new Promise((resolve) => timer = setTimeout(() => resolve("pending"), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function assertNotReady(outcome: unknown): void {
  assert.ok(
    outcome instanceof ExecutionNotReadyError,
    `the held batch: ${outcome instanceof Error ? `${outcome.name}: ${outcome.message}` : outcome}`,
  );
}

function natsSignal(id: string): SignalInput {
  return {
    body: { id, symbol: "BTC-USDT", side: "buy", qty: "1" },
    strategy: "grid",
    source: "nats",
  };
}

Deno.test("a batch deferred by its gate is refused when its sender's signal aborts, while the engine runs on", async () => {
  await using h = await scratchEngine({ options: FAST_SUBMIT_RETRIES });
  await h.engine.start();
  const stopping = new AbortController();
  const gate = shut();
  const held = h.engine.enqueueSignals([natsSignal("g-1")], {
    gate: () => gate,
    signal: stopping.signal,
  });
  // It was asked (deferred): a REST batch behind it goes on.
  const [rest] = await h.engine.processSignals([{ ...natsSignal("r-1"), source: "rest" }]);
  assert.equal(rest?.status, "accepted");
  stopping.abort(new Error("the execution actor stops"));
  assertNotReady(await settledWithin(held.decided, 5_000));
  assertNotReady(await settledWithin(held.outcomes, 1_000));
  assert.ok(h.engine.running, "the engine is not stopped by its sender's stop");
  const [{ n }] = await h.db.sql<[{ n: number }]>`
    select count(*)::int as n from signals where client_signal_id = 'g-1'`;
  assert.equal(n, 0, "the refused batch recorded nothing");
});

Deno.test("a batch whose sender stopped before its gate was asked is refused, not waited for", async () => {
  await using h = await scratchEngine({ options: FAST_SUBMIT_RETRIES });
  await h.engine.start();
  const stopping = new AbortController();
  stopping.abort(new Error("the execution actor stops"));
  const held = h.engine.enqueueSignals([natsSignal("g-2")], {
    gate: shut,
    signal: stopping.signal,
  });
  assertNotReady(await settledWithin(held.outcomes, 5_000));
});

Deno.test("a batch whose gate rejects (the outage hold closed) is refused with ExecutionNotReadyError and recorded nowhere", async () => {
  await using h = await scratchEngine({ options: FAST_SUBMIT_RETRIES });
  await h.engine.start();
  let close!: (error: Error) => void;
  const gate = new Promise<void>((_, reject) => close = reject);
  gate.catch(() => {});
  const held = h.engine.enqueueSignals([natsSignal("g-3")], { gate: () => gate });
  // It was asked (deferred): a REST batch behind it goes on.
  const [rest] = await h.engine.processSignals([{ ...natsSignal("r-3"), source: "rest" }]);
  assert.equal(rest?.status, "accepted");
  close(new Error("execution stopped while signals waited for market data"));
  assertNotReady(await settledWithin(held.outcomes, 5_000));
  assert.ok(h.engine.running);
  const [{ n }] = await h.db.sql<[{ n: number }]>`
    select count(*)::int as n from signals where client_signal_id = 'g-3'`;
  assert.equal(n, 0, "the refused batch recorded nothing");
});
