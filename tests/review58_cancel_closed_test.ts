/**
 * DELETE of an order that is no longer open is a 409 carrying the order in
 * `details` — as the 409 of a cancel the broker refused and the 503 of one it
 * could not be asked do — so a client learns it was filled (and at what) or
 * cancelled without a second request.
 *
 * @module
 */
import assert from "node:assert/strict";
import { binanceTop, waitFor } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

Deno.test("DELETE of a filled order is a 409 with the filled order in details", async () => {
  await using api = await startTradingApi({
    prime: (cache) => cache.update([binanceTop("BTC-USDT", "50000", "50002")]),
  });
  const call = api.send;
  const created = await call("POST", "/signal", {
    id: "fill-1",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.01",
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id: string = created.body.order.id;
  await waitFor(
    async () => (await call("GET", `/orders/${id}`)).body.order.status === "filled",
    10_000,
    "order filled",
  );
  for (let i = 0; i < 2; i++) {
    const res = await call("DELETE", `/orders/${id}`);
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.equal(res.body.error.code, "conflict");
    assert.equal(res.body.error.message, `Order ${id} is filled: it cannot be cancelled`);
    const order = res.body.error.details?.order;
    assert.ok(order !== undefined, JSON.stringify(res.body));
    assert.equal(order.id, id);
    assert.equal(order.status, "filled");
    assert.equal(order.filled_qty, "0.01");
    assert.equal(order.avg_fill_price, "50002");
  }
});
