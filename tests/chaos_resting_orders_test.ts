/**
 * Exactly-once under kills and outages: resting limit orders at the paper broker across
 * repeated SIGKILLs of the real engine (one during the startup
 * reconciliation) fill exactly once when the market crosses them.
 */

import assert from "node:assert/strict";
import { encodeJson } from "../adapters/codec.ts";
import { waitFor } from "./_helpers.ts";
import { executionRunning, SYMBOL, violations, world } from "./_chaos.ts";

Deno.test({
  name:
    "resting gtc limit orders survive two SIGKILLs (one during startup reconciliation) and fill exactly once",
  async fn() {
    await using w = await world();
    const N = 20;
    const first = await w.start();
    await executionRunning(first);
    for (let i = 0; i < N; i++) {
      await w.js.publish(
        "signals.rest",
        encodeJson({
          id: `l-${i}`,
          symbol: SYMBOL,
          side: "buy",
          qty: "0.01",
          type: "limit",
          limit_price: "49000",
          time_in_force: "gtc",
        }),
        { msgID: `l-${i}` },
      );
    }
    await waitFor(
      async () =>
        await w.count("select count(*)::int n from orders where status = 'submitted'") === N,
      30_000,
      "every limit order resting",
    );
    assert.notEqual(await first.kill("SIGKILL"), 0);

    // Second engine: killed as soon as execution runs (its startup reconciliation in progress).
    const second = await w.start();
    await executionRunning(second);
    assert.notEqual(await second.kill("SIGKILL"), 0);

    const third = await w.start();
    await executionRunning(third);
    // Let the reconciliation resubmit, then cross the market.
    await waitFor(
      async () => {
        const res = await third.get("/api/health/detailed");
        await res.body?.cancel();
        return third.lines.some((l) => l.message === "reconciliation done");
      },
      30_000,
      "reconciliation done",
    );
    w.quotes.set("48800", "48900");
    await waitFor(
      async () =>
        await w.count("select count(*)::int n from orders where status = 'filled'") === N &&
        await w.count("select count(*)::int n from fills where realized_pnl is null") === 0,
      30_000,
      "every limit order filled",
    );
    // And nothing more happens afterwards.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await w.count("select count(*)::int n from orders"), N);
    assert.equal(await w.count("select count(*)::int n from fills"), N);
    assert.deepEqual(await violations(w.sql), []);
  },
});
