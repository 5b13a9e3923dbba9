/**
 * Exactly-once under kills and outages: a REST signal answered 201, the engine SIGKILLed at
 * once, the client retrying the same request (same `id`, or same
 * Idempotency-Key without `id`) on the restarted engine: one order, filled
 * once, and the retry answered 200 with the stored order.
 */

import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import type { EngineProcess } from "./_engine_process.ts";
import { executionRunning, SYMBOL, violations, world } from "./_chaos.ts";

function post(engine: EngineProcess, body: unknown, key?: string): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key !== undefined) headers["idempotency-key"] = key;
  return fetch(`http://127.0.0.1:${engine.port}/api/v1/trading/signal`, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
}

Deno.test({
  name:
    "REST signals answered 201 right before a SIGKILL, retried after the restart: one order each, filled once",
  async fn() {
    await using w = await world();
    const N = 10;
    let engine = await w.start();
    await executionRunning(engine);
    const firstOrders = new Map<string, number>();
    for (let round = 0; round < 3; round++) {
      // Fire N signals (half with id, half with Idempotency-Key only), kill right after the last 201.
      for (let i = 0; i < N; i++) {
        const key = `r${round}-${i}`;
        const body: Record<string, unknown> = {
          symbol: SYMBOL,
          side: i % 2 ? "sell" : "buy",
          qty: "0.01",
        };
        if (i % 2 === 0) body.id = key;
        const res = await post(engine, body, i % 2 === 0 ? undefined : key);
        const answer = await res.json() as { order?: { id: number } };
        assert.equal(res.status, 201, JSON.stringify(answer));
        firstOrders.set(key, answer.order!.id);
      }
      assert.notEqual(await engine.kill("SIGKILL"), 0);
      engine = await w.start();
      await executionRunning(engine);
      for (let i = 0; i < N; i++) {
        const key = `r${round}-${i}`;
        const body: Record<string, unknown> = {
          symbol: SYMBOL,
          side: i % 2 ? "sell" : "buy",
          qty: "0.01",
        };
        if (i % 2 === 0) body.id = key;
        const res = await post(engine, body, i % 2 === 0 ? undefined : key);
        const answer = await res.json() as { order?: { id: number } };
        assert.equal(res.status, 200, `retry of ${key}: ${res.status} ${JSON.stringify(answer)}`);
        assert.equal(answer.order?.id, firstOrders.get(key), `retry of ${key} answered its order`);
      }
    }
    await waitFor(
      async () =>
        await w.count(`select count(*)::int n from orders
          where status in ('pending', 'submitted', 'partially_filled')`) === 0 &&
        await w.count("select count(*)::int n from fills where realized_pnl is null") === 0,
      30_000,
      "every order closed and applied",
    );
    assert.equal(await w.count("select count(*)::int n from orders"), 3 * N);
    assert.equal(
      await w.count("select count(*)::int n from orders where status = 'filled'"),
      3 * N,
    );
    assert.equal(await w.count("select count(*)::int n from fills"), 3 * N);
    assert.deepEqual(await violations(w.sql), []);
  },
});
