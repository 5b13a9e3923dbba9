/**
 * Exactly once with an execution consumer slower than ack_wait: commits held
 * by a table lock under a flood of signals up to max_ack_pending
 * (tests/_nats_world.ts).
 */
import assert from "node:assert/strict";
import { health, natsWorld } from "./_nats_world.ts";

Deno.test({
  name:
    "a consumer slower than ack_wait (commits held 15 s by a lock) under a flood up to max_ack_pending: each signal processed exactly once",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await natsWorld();
    const engine = await w.start();
    const lock = await w.sql.reserve();
    await lock`begin`;
    await lock`lock table signals in share row exclusive mode`;
    const publishing = w.publish("sc-", 0, 2500, 100, 0);
    await new Promise((r) => setTimeout(r, 15_000));
    await lock`commit`;
    lock.release();
    await publishing;
    await w.settled(90_000);
    const bad = await w.check();
    const h = await health(engine);
    if (bad.length > 0 || h.status !== "ok") w.dump(engine);
    assert.deepEqual(bad, []);
    assert.equal(h.status, "ok", JSON.stringify(h));
  },
});
