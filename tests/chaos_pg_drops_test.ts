/**
 * Exactly-once under kills and outages: PostgreSQL connections dropped (a
 * proxy cut: the server side closes) while the engine writes a stream of
 * signals and fills. A connection drop is a retried database error, not the
 * end of the engine — also when postgres.js's deferred write meets the
 * closed socket (Deno's node:net refuses it with EPIPE, which surfaced as an
 * unhandled rejection that main.ts took for an uncaught error).
 */

import assert from "node:assert/strict";
import { encodeJson } from "../adapters/codec.ts";
import { waitFor } from "./_helpers.ts";
import { executionRunning, SYMBOL, violations, world } from "./_chaos.ts";

Deno.test({
  name:
    "the engine survives PostgreSQL connections dropped while it writes (with NATS going down too)",
  async fn() {
    await using w = await world(undefined, { pgProxy: true });
    const engine = await w.start();
    await executionRunning(engine);
    let exited: Deno.CommandStatus | null = null;
    void engine.status.then((s) => exited = s);
    const PER_CYCLE = 200;
    const CYCLES = 8;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const before = await w.count("select count(*)::int n from signals");
      // Chunks of 20, each stored by JetStream before the next: the engine works as they come.
      for (let start = 0; start < PER_CYCLE; start += 20) {
        const chunk: Promise<unknown>[] = [];
        for (let i = start; i < start + 20; i++) {
          const id = `d${cycle}-${i}`;
          chunk.push(w.js.publish(
            "signals.pgdrop",
            encodeJson({ id, symbol: SYMBOL, side: i % 2 === 0 ? "buy" : "sell", qty: "0.01" }),
            { msgID: id },
          ));
        }
        await Promise.all(chunk);
        await new Promise((r) => setTimeout(r, 10));
      }
      // Drop every connection while the engine works through the burst.
      w.proxy!.cut();
      await w.stopNats();
      await new Promise((r) => setTimeout(r, 300));
      w.proxy!.restore();
      await w.startNats();
      await waitFor(
        async () =>
          exited !== null ||
          (await w.count("select count(*)::int n from signals where status <> 'received'") ===
              before + PER_CYCLE &&
            await w.count(`select count(*)::int n from orders
              where status in ('pending', 'submitted', 'partially_filled')`) === 0),
        90_000,
        `cycle ${cycle}: the burst processed`,
      );
      const uncaught = engine.lines.find((l) => l.message === "uncaught error; engine stopping");
      assert.equal(
        exited,
        null,
        `cycle ${cycle}: the engine exited (${JSON.stringify(exited)}) after ${
          JSON.stringify(uncaught)
        }`,
      );
    }
    assert.deepEqual(await violations(w.sql), []);
  },
});
