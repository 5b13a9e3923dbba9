/**
 * Exactly once across a partition between the engine and NATS longer than the
 * consumer's ack_wait: the engine's connection goes through a TCP proxy that
 * stops forwarding (tests/_nats_world.ts).
 */
import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import { health, natsWorld } from "./_nats_world.ts";

for (const stallMs of [15_000, 40_000]) {
  Deno.test({
    name: `a ${
      stallMs / 1000
    } s partition between engine and NATS (longer than ack_wait) in the middle of a burst: each signal processed exactly once, engine healthy by itself`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      await using w = await natsWorld({ proxy: true });
      const engine = await w.start();
      const N = 600;
      const publishing = w.publish("pt-", 0, N, 20, 20);
      await waitFor(
        async () => await w.count("select count(*)::int n from signals") >= N / 4,
        60_000,
        "a quarter recorded",
      );
      w.proxy!.stall();
      await new Promise((r) => setTimeout(r, stallMs));
      w.proxy!.restore();
      await publishing;
      await w.settled(120_000);
      const bad = await w.check();
      const h = await health(engine);
      if (bad.length > 0 || h.status !== "ok") w.dump(engine);
      assert.deepEqual(bad, [], `publish errors ${w.publishErrors}`);
      await waitFor(async () => (await health(engine)).status === "ok", 60_000, "health ok")
        .catch(() => {});
      assert.equal((await health(engine)).status, "ok", JSON.stringify(await health(engine)));
    },
  });
}
