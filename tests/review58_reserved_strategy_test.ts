/**
 * The strategy name `rejected` is reserved (`signals.rejected` carries reject
 * events, so no strategy can publish under it): a signal naming it — REST or
 * a NATS body — is refused naming `strategy`, as the README says, instead of
 * an order filed under a strategy no subject can carry.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseSignal, parseSignalBySchema } from "../trading/signal.ts";
import { REJECTED_TOKEN } from "../trading/signals_stream.ts";
import { binanceTop } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

const BODY = { symbol: "BTC-USDT", side: "buy", qty: "0.01" };

Deno.test("parseSignal refuses the reserved strategy rejected, from the body or the defaults", () => {
  assert.equal(REJECTED_TOKEN, "rejected");
  for (
    const [input, defaults] of [
      [{ ...BODY, strategy: "rejected" }, {}],
      [{ ...BODY, strategy: "rejected" }, { strategy: "momentum" }],
      [BODY, { strategy: "rejected" }],
    ] as const
  ) {
    for (const parse of [parseSignal, parseSignalBySchema]) {
      const result = parse(input, defaults);
      assert.equal(result.ok, false, `${parse.name} ${JSON.stringify([input, defaults])}`);
      if (result.ok) continue;
      assert.deepEqual(result.reasons.map((r) => r.path), ["strategy"]);
      assert.match(result.reasons[0]!.message, /reserved/);
    }
  }
  // Other names holding the word are ordinary strategies.
  for (const strategy of ["Rejected", "rejected2", "not-rejected"]) {
    assert.equal(parseSignal({ ...BODY, strategy }).ok, true, strategy);
    assert.equal(parseSignalBySchema({ ...BODY, strategy }).ok, true, strategy);
  }
});

Deno.test("POST /signal with strategy rejected is a 422 naming strategy, and no order is made", async () => {
  await using api = await startTradingApi({
    prime: (cache) => cache.update([binanceTop("BTC-USDT", "50000", "50002")]),
  });
  const res = await api.app.request("/api/v1/trading/signal", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...BODY, id: "r-1", strategy: "rejected" }),
  });
  const body = await res.json();
  assert.equal(res.status, 422, JSON.stringify(body));
  assert.equal(body.error.code, "signal_rejected");
  assert.deepEqual(body.error.details.map((r: { path?: string }) => r.path), ["strategy"]);
  const orders = await (await api.app.request("/api/v1/trading/orders")).json();
  assert.deepEqual(orders.orders, []);
});
