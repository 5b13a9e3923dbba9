/**
 * Exactly once across nats-server restarts: the real engine, signals published
 * with publish acks and retries while NATS restarts on its store
 * (tests/_nats_world.ts).
 */
import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import { health, natsWorld } from "./_nats_world.ts";

Deno.test({
  name:
    "nats-server restarted three times on its store during a burst of signals: each signal processed exactly once, engine healthy again by itself",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await natsWorld();
    const engine = await w.start();
    const N = 900;
    const publishing = w.publish("rs-", 0, N);
    for (let k = 0; k < 3; k++) {
      await waitFor(
        async () => await w.count("select count(*)::int n from signals") >= (k + 1) * N / 4,
        60_000,
        `${k + 1}/4 recorded`,
      );
      await w.restartNats({ downMs: 1_000 });
    }
    await publishing;
    await w.settled();
    const bad = await w.check();
    const h = await health(engine);
    if (bad.length > 0 || h.status !== "ok") w.dump(engine);
    assert.deepEqual(bad, [], `publish errors ${w.publishErrors}`);
    await waitFor(async () => (await health(engine)).status === "ok", 60_000, "health ok")
      .catch(() => {});
    assert.equal((await health(engine)).status, "ok", JSON.stringify(await health(engine)));
  },
});
