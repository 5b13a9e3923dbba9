/**
 * An order id written with leading zeros (`/orders/07`) is the integer it
 * spells, as the README's "an integer from 1 to 2^63−1" reads: DELETE cancels
 * that open order, instead of a 409 "not tracked yet; try again" that no
 * retry ends (the engine tracks open orders by their id as PostgreSQL writes
 * it, `7`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { binanceTop, waitFor } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

Deno.test("DELETE /orders/0<id> cancels the open order <id>; GET and the messages name it without the zeros", async () => {
  await using api = await startTradingApi({
    prime: (cache) => cache.update([binanceTop("BTC-USDT", "50000", "50002")]),
  });
  const call = api.send;
  // A resting buy well under the market (inside the price collar): it stays open.
  const created = await call("POST", "/signal", {
    id: "rest-1",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.01",
    type: "limit",
    limit_price: "46000",
    time_in_force: "gtc",
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id: string = created.body.order.id;
  await waitFor(
    async () => (await call("GET", `/orders/${id}`)).body.order.status === "submitted",
    10_000,
    "order submitted",
  );

  const got = await call("GET", `/orders/00${id}`);
  assert.equal(got.status, 200, JSON.stringify(got.body));
  assert.equal(got.body.order.id, id);

  const cancelled = await call("DELETE", `/orders/0${id}`);
  assert.equal(cancelled.status, 202, JSON.stringify(cancelled.body));
  assert.equal(cancelled.body.order.id, id);
  await waitFor(
    async () => (await call("GET", `/orders/${id}`)).body.order.status === "cancelled",
    10_000,
    "order cancelled",
  );
  const again = await call("DELETE", `/orders/0${id}`);
  assert.equal(again.status, 409, JSON.stringify(again.body));
  assert.equal(again.body.error.message, `Order ${id} is cancelled: it cannot be cancelled`);
  const unknown = await call("GET", "/orders/0999");
  assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
  assert.doesNotMatch(unknown.body.error.message, /0999/);
});

Deno.test("a limit, cursor or order id is an integer however many leading zeros it has", async () => {
  await using api = await startTradingApi();
  const call = async (path: string) => {
    const res = await api.app.request(`/api/v1/trading${path}`);
    return { status: res.status, body: await res.json() };
  };
  const zeros = "0".repeat(25);
  for (const path of ["/orders", "/signals", "/portfolio/history"]) {
    for (const query of ["limit=01000", `limit=${zeros}5`, `cursor=${zeros}7`]) {
      const res = await call(`${path}?${query}`);
      assert.equal(res.status, 200, `${path}?${query}: ${JSON.stringify(res.body)}`);
    }
    for (
      const query of ["limit=0000", "limit=01001", `cursor=${zeros}`, "cursor=09223372036854775808"]
    ) {
      const res = await call(`${path}?${query}`);
      assert.equal(res.status, 400, `${path}?${query}: ${JSON.stringify(res.body)}`);
    }
  }
  const unknown = await call(`/orders/${zeros}12`);
  assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
  assert.equal(unknown.body.error.message, "No order 12");
});
