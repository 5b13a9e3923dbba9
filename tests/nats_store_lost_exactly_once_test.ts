// deno-lint-ignore-file no-console -- says when the store was lost, for a failure's log
/**
 * Exactly once when nats-server comes back without its JetStream store in the
 * middle of a burst (once, twice, or after being away): signals acknowledged
 * by the lost store are gone with it; every other one is processed once, every
 * fill applied to positions, and the engine healthy again by itself
 * (tests/_nats_world.ts).
 */
import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import { health, natsWorld } from "./_nats_world.ts";

Deno.test({
  name:
    "nats-server back with its JetStream store lost in the middle of a burst: each signal processed exactly once, positions equal the fills, engine healthy by itself",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await natsWorld();
    const engine = await w.start();
    const N = 600;
    const publishing = w.publish("sl-", 0, N);
    await waitFor(
      async () => await w.count("select count(*)::int n from signals") >= N / 3,
      60_000,
      "a third recorded",
    );
    const lostAt = await w.restartNats({ loseStore: true, downMs: 500 });
    console.log("store lost at", new Date(lostAt).toISOString());
    await publishing;
    await w.settled(90_000, { lostBefore: lostAt });
    const bad = await w.check({ lostBefore: lostAt });
    const h = await health(engine);
    if (bad.length > 0 || h.status !== "ok") w.dump(engine);
    assert.deepEqual(
      bad,
      [],
      `publish errors ${w.publishErrors}\n${bad.length > 0 ? await w.diagnosis(engine) : ""}`,
    );
    await waitFor(async () => (await health(engine)).status === "ok", 60_000, "health ok")
      .catch(() => {});
    assert.equal((await health(engine)).status, "ok", JSON.stringify(await health(engine)));
  },
});

Deno.test({
  name:
    "NATS back without its store 1 s after it went away, in a flood of signals: every fill applied to positions, engine healthy by itself",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await natsWorld();
    const engine = await w.start();
    const publishing = w.publish("sf-", 0, 3000, 100, 0);
    await waitFor(
      async () => await w.count("select count(*)::int n from signals") >= 300,
      60_000,
      "300 recorded",
    );
    await w.server.stop();
    await new Promise((r) => setTimeout(r, 1_000));
    const lostAt = await w.restartNats({ loseStore: true });
    await publishing;
    await w.settled(60_000, { lostBefore: lostAt });
    const bad = await w.check({ lostBefore: lostAt });
    await waitFor(async () => (await health(engine)).status === "ok", 60_000, "health ok")
      .catch(() => {});
    const h = await health(engine);
    if (bad.length > 0 || h.status !== "ok") w.dump(engine);
    assert.deepEqual(
      bad,
      [],
      `publish errors ${w.publishErrors}\n${bad.length > 0 ? await w.diagnosis(engine) : ""}`,
    );
    assert.equal(h.status, "ok", JSON.stringify(h));
  },
});

Deno.test({
  name:
    "NATS back without its store twice in a burst of signals: each signal processed exactly once, every fill applied, engine healthy by itself",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await natsWorld();
    const engine = await w.start();
    const N = 900;
    // Slow enough to go on across both losses.
    const publishing = w.publish("s2-", 0, N, 10, 100);
    let lostAt = 0;
    for (const part of [4, 2]) {
      await waitFor(
        async () => await w.count("select count(*)::int n from signals") >= N / part,
        90_000,
        `1/${part} recorded`,
      );
      lostAt = await w.restartNats({ loseStore: true, downMs: 300 });
    }
    await publishing;
    await w.settled(90_000, { lostBefore: lostAt });
    const after = [...w.ackedAt.values()].filter((at) => at >= lostAt).length;
    assert.ok(after > 0, "signals published after the second loss");
    const bad = await w.check({ lostBefore: lostAt });
    await waitFor(async () => (await health(engine)).status === "ok", 60_000, "health ok")
      .catch(() => {});
    const h = await health(engine);
    if (bad.length > 0 || h.status !== "ok") w.dump(engine);
    assert.deepEqual(
      bad,
      [],
      `publish errors ${w.publishErrors}\n${bad.length > 0 ? await w.diagnosis(engine) : ""}`,
    );
    assert.equal(h.status, "ok", JSON.stringify(h));
  },
});
