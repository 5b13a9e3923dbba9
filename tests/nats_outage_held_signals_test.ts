// deno-lint-ignore-file no-console -- prints what was refused, for a failure's log
/**
 * A batch of signals held through a NATS outage — handed to the engine before
 * the disconnect, it waits at its turn until market data is back
 * (actors/execution.ts `holdAfterOutage`, the gate of trading/execution.ts
 * `enqueueSignals`) — and the execution actor stopping meanwhile: a SIGTERM
 * during the outage, or the restart of the trading subtree that NATS back
 * without its store causes. The actor's stop refuses the held batch (its
 * messages come back) instead of waiting for it, and never lets it be decided
 * on the prices of before the outage: the next start decides it after its own
 * warm-up.
 */
import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import { health, natsWorld } from "./_nats_world.ts";

/** Longer than execution.max_price_age_ms (5 s): the prices of before the outage are stale. */
const STALE_AFTER_MS = 6_000;

/** Engine, a flood of signals, NATS stopped while the engine decides them (a batch held). */
async function heldBatch() {
  const w = await natsWorld();
  const engine = await w.start();
  // A flood keeps the engine busy: a batch handed in waits for its turn when NATS goes away.
  const publishing = w.publish("hs-", 0, 3000, 100, 0);
  await waitFor(
    async () => await w.count("select count(*)::int n from signals") >= 300,
    60_000,
    "300 recorded",
  );
  await w.server.stop();
  w.haltPublishing();
  await publishing;
  await waitFor(
    () => engine.lines.some((l) => String(l.message).startsWith("NATS disconnected: signals wait")),
    30_000,
    "the execution actor holding signals for the NATS outage",
  );
  return { w, engine };
}

/** The signals refused so far: how many, and one reason. */
async function refused(w: Awaited<ReturnType<typeof natsWorld>>) {
  const rows = await w.sql<{ n: number; reason: string | null }[]>`
    select count(*)::int as n, min(reasons->0->>'message') as reason from signals
    where status = 'rejected'`;
  return rows[0] ?? { n: 0, reason: null };
}

Deno.test({
  name:
    "SIGTERM during a NATS outage while a batch of signals is held for market data stops gracefully with exit 0",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { w, engine } = await heldBatch();
    await using _w = w;
    const stopAt = Date.now();
    const code = await engine.kill("SIGTERM");
    const tookMs = Date.now() - stopAt;
    const errors = engine.lines.filter((l) => l.level === "error").map((l) => l.message);
    assert.equal(
      code,
      0,
      `SIGTERM during the outage: exit ${code} after ${tookMs} ms (errors: ${
        JSON.stringify(errors)
      })`,
    );
    assert.deepEqual(await refused(w), { n: 0, reason: null });
  },
});

Deno.test({
  name:
    "signals held through a NATS outage are not refused as no_market_price when NATS comes back while the engine stops, and the next start accepts them",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { w, engine } = await heldBatch();
    await using _w = w;
    await new Promise((r) => setTimeout(r, STALE_AFTER_MS));
    const stopping = engine.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 500));
    await w.restartNats(); // back on its store while the engine stops
    const code = await stopping;
    const refusedOnStop = await refused(w);
    console.log("exit code", code, "refused", JSON.stringify(refusedOnStop));
    assert.equal(
      refusedOnStop.n,
      0,
      `valid signals refused for the prices of before the outage: ${JSON.stringify(refusedOnStop)}`,
    );
    assert.equal(code, 0);
    // What was held is redelivered to the next start, which decides it on fresh prices.
    const next = await w.start();
    await w.settled(120_000);
    const bad = await w.check();
    if (bad.length > 0) w.dump(next);
    assert.deepEqual(bad, [], bad.length > 0 ? await w.diagnosis(next) : "");
  },
});

Deno.test({
  name:
    "signals held through a NATS outage are not refused as no_market_price when NATS comes back without its store (the trading subtree restarts)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { w, engine } = await heldBatch();
    await using _w = w;
    // Away past max_price_age_ms, then back with its JetStream store lost: the position tracker
    // fails on the missing FILLS and rest_for_one stops the execution actor with it.
    await new Promise((r) => setTimeout(r, STALE_AFTER_MS));
    await w.restartNats({ loseStore: true });
    await waitFor(async () => (await health(engine)).status === "ok", 60_000, "health ok again");
    const refusedAfter = await refused(w);
    console.log("refused", JSON.stringify(refusedAfter));
    assert.equal(
      refusedAfter.n,
      0,
      `valid signals refused for the prices of before the outage: ${JSON.stringify(refusedAfter)}`,
    );
  },
});

Deno.test({
  name:
    "a batch still waiting behind commits when the engine stops during a NATS outage is not decided on the prices of before the outage",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await natsWorld();
    const engine = await w.start();
    // The symbol stored first: a batch creating it would be decided inside its own transaction.
    await w.publish("bw-", 0, 10);
    await waitFor(
      async () => await w.count("select count(*)::int n from signals") >= 10,
      30_000,
      "the first signals recorded",
    );
    // Commits held by a lock: the batches handed in wait behind them, before their gate is asked.
    const lock = await w.sql.reserve();
    let locked = true;
    try {
      await lock`begin`;
      await lock`lock table signals in share row exclusive mode`;
      await w.publish("bc-", 0, 1000, 100, 0);
      await waitFor(
        async () =>
          await w.count(`select count(*)::int as n from pg_stat_activity
            where wait_event_type = 'Lock' and datname = current_database()`) > 0,
        30_000,
        "a signal batch's commit waiting for the lock",
      );
      await w.server.stop();
      await waitFor(
        () =>
          engine.lines.some((l) => String(l.message).startsWith("NATS disconnected: signals wait")),
        30_000,
        "the execution actor holding signals for the NATS outage",
      );
      await new Promise((r) => setTimeout(r, STALE_AFTER_MS));
      const stopping = engine.kill("SIGTERM");
      await waitFor(
        () => engine.lines.some((l) => l.message === "shutting down"),
        10_000,
        "the engine shutting down",
      );
      // The consume loop stops and closes its outage hold at once; the commits then go on.
      await new Promise((r) => setTimeout(r, 1_000));
      await lock`commit`;
      locked = false;
      const code = await stopping;
      const refusedOnStop = await refused(w);
      assert.equal(
        refusedOnStop.n,
        0,
        `valid signals refused for the prices of before the outage: ${
          JSON.stringify(refusedOnStop)
        }`,
      );
      assert.equal(code, 0);
    } finally {
      if (locked) await lock`rollback`.catch(() => {});
      lock.release();
    }
  },
});
