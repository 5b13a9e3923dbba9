/**
 * The trading endpoints that take no query parameters refuse one, as the
 * lists do: `POST /signal?dry_run=true` must not place a real order while
 * its client believes it only checked one, nor `GET /portfolio?symbol=AAPL`
 * answer the whole portfolio to a client that believes it filtered it, nor
 * `DELETE /orders/1?reason=…` drop what it was given.
 *
 * @module
 */
import assert from "node:assert/strict";
import { binanceTop } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

Deno.test("trading endpoints without query parameters refuse one with a 400 naming it, before acting", async () => {
  await using api = await startTradingApi({
    prime: (cache) => cache.update([binanceTop("BTC-USDT", "50000", "50002")]),
  });
  const call = api.send;
  const signal = '{"id":"dry-1","symbol":"BTC-USDT","side":"buy","qty":"0.01"}';
  const problems: string[] = [];
  for (
    const [method, path, body, name] of [
      ["POST", "/signal?dry_run=true", signal, "dry_run"],
      ["GET", "/orders/1?symbol=BTC-USDT", undefined, "symbol"],
      ["DELETE", "/orders/1?reason=test", undefined, "reason"],
      ["GET", "/portfolio?symbol=AAPL", undefined, "symbol"],
      ["GET", "/kill-switch?x=1", undefined, "x"],
      ["POST", "/kill-switch?active=true", '{"active":false}', "active"],
    ] as const
  ) {
    const res = await call(method, path, body);
    if (
      res.status !== 400 || res.body.error?.code !== "bad_request" ||
      !String(res.body.error?.message).includes(JSON.stringify(name))
    ) {
      problems.push(`${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    }
  }
  assert.deepEqual(problems, []);
  // Nothing was done: no signal stored, no order made, the switch untouched.
  const signals = await call("GET", "/signals");
  assert.deepEqual(signals.body.signals, []);
  const orders = await call("GET", "/orders");
  assert.deepEqual(orders.body.orders, []);
  assert.equal((await call("GET", "/kill-switch")).body.kill_switch.changed_at, null);
  // Without them, as before.
  assert.equal((await call("POST", "/signal", signal)).status, 201);
});
