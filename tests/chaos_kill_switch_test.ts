/**
 * Exactly-once under kills and outages: the kill switch with `cancel_open` answered, then the
 * engine SIGKILLed at once. The paper broker holds no state, so the next
 * start's reconciliation finds the orders unknown to it: they must stay
 * cancelled (the kill switch asked for it and said so), not be resubmitted
 * and filled while the kill switch is on.
 */

import assert from "node:assert/strict";
import { encodeJson } from "../adapters/codec.ts";
import { waitFor } from "./_helpers.ts";
import { executionRunning, SYMBOL, violations, world } from "./_chaos.ts";

Deno.test({
  name:
    "orders the kill switch cancelled (cancel_open) just before a SIGKILL are not resubmitted and filled after the restart",
  async fn() {
    await using w = await world();
    const N = 200;
    const first = await w.start();
    await executionRunning(first);
    const pubs: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      pubs.push(w.js.publish(
        "signals.ks",
        encodeJson({
          id: `ks-${i}`,
          symbol: SYMBOL,
          side: "buy",
          qty: "0.001",
          type: "limit",
          limit_price: "49000",
          time_in_force: "gtc",
        }),
        { msgID: `ks-${i}` },
      ));
    }
    await Promise.all(pubs);
    await waitFor(
      async () =>
        await w.count("select count(*)::int n from orders where status = 'submitted'") === N,
      60_000,
      "every limit order resting",
    );
    const res = await fetch(`http://127.0.0.1:${first.port}/api/v1/trading/kill-switch`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ active: true, cancel_open: true, reason: "chaos" }),
    });
    const body = await res.json() as { kill_switch: { active: boolean; cancel_requested: number } };
    assert.notEqual(await first.kill("SIGKILL"), 0);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.kill_switch.active, true);
    assert.equal(body.kill_switch.cancel_requested, N);
    const stillOpenAtKill = await w.count(
      "select count(*)::int n from orders where status in ('submitted', 'pending')",
    );

    const second = await w.start();
    await executionRunning(second);
    await waitFor(
      () => Promise.resolve(second.lines.some((l) => l.message === "reconciliation done")),
      30_000,
      "reconciliation done",
    );
    // The market now crosses every limit.
    w.quotes.set("48800", "48900");
    // Give a resubmitted order every chance to fill (the paper broker fills at the next quote).
    await new Promise((r) => setTimeout(r, 2000));
    const fills = await w.count("select count(*)::int n from fills");
    const open = await w.count(
      "select count(*)::int n from orders where status in ('pending', 'submitted', 'partially_filled')",
    );
    assert.equal(
      fills,
      0,
      `the kill switch cancelled all ${N} orders (${stillOpenAtKill} not yet stored cancelled at the kill), yet ${fills} filled after the restart`,
    );
    assert.equal(open, 0, `${open} orders left open after the kill switch cancelled them`);
    assert.deepEqual(await violations(w.sql), []);
  },
});
